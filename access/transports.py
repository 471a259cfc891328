"""Wire formats and transports of the sinks and notifications: syslog over TLS, Splunk HEC, signed webhooks, files.

No database access here: a transport takes a batch of `SinkRecord`s and either returns (the destination accepted
every one of them) or raises `DeliveryError` with a message fit for the admin (never a secret, never a URL path,
which for chat webhooks is the secret). The delivery worker (access.services.sinks) decides what to send and when.
Of the protocols below, RELP, HEC, the webhook and the file acknowledge each batch end to end (the receiver says
it took it, or the fsync returned); plain syslog over TLS cannot, so a receiver crash can lose part of a batch.

- Syslog over TLS (the sink's `syslog_protocol` "tls", RFC 5425): RFC 5424 messages framed by octet counting
  (RFC 6587 §3.4.1), one TLS connection per batch. This protocol has no acknowledgement, so a batch counts as
  delivered once the receiver has read it up to our TLS close_notify and closed the connection in answer (RFC 5425
  §4.4): a receiver that stops with the batch unread resets the connection instead, and the batch is sent again. Its
  blind spot: a receiver killed after reading a batch but before writing it closes cleanly all the same (the kernel
  sends the FIN), and the rest of that batch is lost.
- RELP over TLS (`syslog_protocol` "relp", rsyslog's Reliable Event Logging Protocol, imrelp): the same RFC 5424
  messages, each in a RELP frame `<txnr> syslog <len> <message>\\n` after the `open` handshake (relp_version=0,
  commands=syslog), pipelined up to `RELP_WINDOW` frames ahead. The receiver answers `<txnr> rsp 6 200 OK` for
  each message once it has taken it; the batch counts as delivered only when every message of it was answered so,
  and anything else (a refusal, `serverclose`, a closed or reset connection, a timeout) fails the whole batch, which
  is sent again. This is the syslog choice that survives a receiver crash.
- Splunk HEC: the batch as concatenated event objects, `Authorization: Splunk <token>`, accepted on HTTP 200 with
  `{"code": 0}`.
- Webhook: `{"system", "stream", "records": [...]}` with `X-PAM-Timestamp` and `X-PAM-Signature: sha256=<hex>`, the
  HMAC-SHA256 of `<timestamp>.<body>` under the shared key (the receiver recomputes it and rejects stale
  timestamps); accepted on any 2xx.
- File: one JSON object per line, appended and fsync'ed before the batch counts as delivered.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from django.core.serializers.json import DjangoJSONEncoder

SD_ID = "pam@32473"  # RFC 5424 SD-ID: a name@<private enterprise number>; 32473 is the one RFC 5612 sets aside
SIGNATURE_HEADER = "X-PAM-Signature"
TIMESTAMP_HEADER = "X-PAM-Timestamp"
USER_AGENT = "mongo-pam-sink/1"


class DeliveryError(Exception):
    """The destination did not accept the batch; the message names what failed, without any secret."""


@dataclass(frozen=True)
class SinkRecord:
    """One record of a stream, ready to send: its position in the stream, its stable id and its JSON body."""

    stream: str
    position: int
    id: str
    time: datetime
    body: dict[str, Any]
    severity: int = 6  # RFC 5424: 5 notice, 6 informational, 4 warning


class Transport(Protocol):
    def send(self, records: list[SinkRecord]) -> None: ...

    def close(self) -> None: ...


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False).encode()


def hmac_signature(*, key: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`: what a webhook receiver recomputes and compares."""
    digest = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(*, key: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: hmac_signature(key=key, timestamp=timestamp, body=body)}


def peer_of(url: str) -> str:
    """`host:port` of a URL, for error messages: the path and query of a webhook URL may be its secret."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def network_error(exc: BaseException, where: str) -> DeliveryError:
    """A transport failure in words: the kind of failure and the peer, never the exception's own text."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(f"TLS certificate of {where} not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"TLS error with {where}: {exc.reason or type(exc).__name__}")
    if isinstance(exc, ConnectionRefusedError):
        return DeliveryError(f"connection refused by {where}")
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return DeliveryError(f"connection reset by {where} before the batch was confirmed")
    if isinstance(exc, socket.timeout | TimeoutError):
        return DeliveryError(f"timed out talking to {where}")
    if isinstance(exc, socket.gaierror):
        return DeliveryError(f"cannot resolve {where}")
    if isinstance(exc, requests.exceptions.SSLError):
        return DeliveryError(f"TLS error with {where}")
    if isinstance(exc, requests.exceptions.Timeout):
        return DeliveryError(f"timed out talking to {where}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return DeliveryError(f"cannot connect to {where}")
    return DeliveryError(f"{type(exc).__name__} talking to {where}")


def tls_context(*, ca_certificate: str = "", verify: bool = True) -> ssl.SSLContext:
    """A client TLS context trusting `ca_certificate` (PEM) or the system CAs; no verification when told so."""
    context = (
        ssl.create_default_context(cadata=ca_certificate or None) if ca_certificate else (ssl.create_default_context())
    )
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# -- syslog -------------------------------------------------------------------------------------------------------
def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(value: str, limit: int) -> str:
    """RFC 5424 header fields are printable US-ASCII without spaces; '-' stands for none."""
    cleaned = "".join(ch for ch in value if 33 <= ord(ch) <= 126)[:limit]
    return cleaned or "-"


def syslog_message(record: SinkRecord, *, facility: int, hostname: str, app_name: str, system: str) -> bytes:
    """One RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP - MSGID [SD] JSON`."""
    pri = facility * 8 + record.severity
    timestamp = record.time.isoformat().replace("+00:00", "Z")
    msgid = "audit" if record.stream == "audit" else "command"
    sd = f'[{SD_ID} id="{_sd_escape(record.id)}" system="{_sd_escape(system)}"]'
    header = f"<{pri}>1 {timestamp} {_printable(hostname, 255)} {_printable(app_name, 48)} - {msgid} {sd} "
    return header.encode() + json_bytes(record.body)


def syslog_frame(record: SinkRecord, *, facility: int, hostname: str, app_name: str, system: str) -> bytes:
    """One RFC 5424 message with its octet count (RFC 6587 §3.4.1): `<len> <message>`."""
    return octet_counted(syslog_message(record, facility=facility, hostname=hostname, app_name=app_name, system=system))


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 framing: `<len> <message>`."""
    return str(len(message)).encode() + b" " + message


class _SyslogOverTls:
    """What both syslog transports share: the sink's settings, RFC 5424 messages, and one TLS connection per batch
    whose network errors become a DeliveryError naming the receiver. Subclasses say how a batch is sent over it."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ca_certificate: str = "",
        tls_verify: bool = True,
        facility: int = 13,
        app_name: str = "mongo-pam",
        system: str = "mongo-pam",
        timeout: float = 10.0,
    ):
        self.host, self.port, self.timeout = host, port, timeout
        self.facility, self.app_name, self.system = facility, app_name, system
        self.hostname = socket.gethostname()
        self.context = tls_context(ca_certificate=ca_certificate, verify=tls_verify)
        self.where = f"{host}:{port}"

    def messages(self, records: list[SinkRecord]) -> list[bytes]:
        return [
            syslog_message(
                record, facility=self.facility, hostname=self.hostname, app_name=self.app_name, system=self.system
            )
            for record in records
        ]

    def send(self, records: list[SinkRecord]) -> None:
        messages = self.messages(records)
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as raw:
                tls = self.context.wrap_socket(raw, server_hostname=self.host)
                try:
                    self.send_over(tls, messages)
                finally:
                    tls.close()
        except DeliveryError:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise network_error(exc, self.where) from None

    def send_over(self, tls: ssl.SSLSocket, messages: list[bytes]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SyslogTlsTransport(_SyslogOverTls):
    """RFC 5425: one TLS connection per batch, confirmed by the receiver closing in answer to our close_notify."""

    def send_over(self, tls: ssl.SSLSocket, messages: list[bytes]) -> None:
        tls.sendall(b"".join(octet_counted(message) for message in messages))
        self._confirm(tls)

    def _confirm(self, tls: ssl.SSLSocket) -> None:
        """Send close_notify and wait until the receiver closes: it has then read everything before it."""
        try:
            tls.unwrap()  # returns if the receiver answers with its own close_notify
        except ssl.SSLEOFError:
            pass  # rsyslog closes the TCP connection without a close_notify: a clean close all the same
        except ssl.SSLZeroReturnError:
            pass


RELP_WINDOW = 128
"""How many syslog frames a RELP session sends ahead of their answers (librelp's own client uses the same)."""
RELP_MAX_FRAME = 128 * 1024
"""The longest answer frame accepted from a RELP receiver (its answers are a few bytes; the open offer a line or so)."""


class _RelpSession:
    """One RELP session on a connected TLS socket: frames out, answer frames in (`txnr command datalen [data]\\n`)."""

    def __init__(self, tls: ssl.SSLSocket, where: str):
        self.tls, self.where, self.buffer = tls, where, b""

    def send(self, txnr: int, command: str, data: bytes = b"") -> None:
        self.tls.sendall(relp_frame(txnr, command, data))

    def _fill(self) -> None:
        chunk = self.tls.recv(65536)
        if not chunk:
            raise DeliveryError(f"RELP receiver at {self.where} closed the connection before the batch was confirmed")
        self.buffer += chunk

    def _token(self, limit: int) -> tuple[bytes, bytes]:
        """The next header token and the separator that ended it (a space, or LF after a zero length)."""
        while True:
            for index, byte in enumerate(self.buffer[: limit + 1]):
                if byte in (0x20, 0x0A):
                    token, separator = self.buffer[:index], self.buffer[index : index + 1]
                    self.buffer = self.buffer[index + 1 :]
                    return token, separator
            if len(self.buffer) > limit:
                raise self._garbled()
            self._fill()

    def _garbled(self) -> DeliveryError:
        return DeliveryError(f"RELP receiver at {self.where} sent a frame that is not RELP")

    def receive(self) -> tuple[int, str, bytes]:
        """The next frame from the receiver: (txnr, command, data)."""
        txnr, separator = self._token(9)
        command, separator2 = self._token(32)
        length, end = self._token(9)
        if separator != b" " or separator2 != b" " or not txnr.isdigit() or not length.isdigit():
            raise self._garbled()
        size = int(length)
        if size > RELP_MAX_FRAME or (size == 0) != (end == b"\n"):
            raise self._garbled()
        if size:
            while len(self.buffer) < size + 1:
                self._fill()
            data, trailer = self.buffer[:size], self.buffer[size : size + 1]
            self.buffer = self.buffer[size + 1 :]
            if trailer != b"\n":
                raise self._garbled()
        else:
            data = b""
        return int(txnr), command.decode("ascii", "replace"), data

    def answer(self, expected: set[int]) -> tuple[int, bytes]:
        """The next `rsp` frame for one of `expected` txnrs: (txnr, its data); anything else fails the batch."""
        txnr, command, data = self.receive()
        if command == "serverclose":
            raise DeliveryError(f"RELP receiver at {self.where} closed the session before the batch was confirmed")
        if command != "rsp" or txnr not in expected:
            raise DeliveryError(f"RELP receiver at {self.where} answered out of turn ({_printable(command, 32)})")
        return txnr, data


def relp_frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    """A RELP frame: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`."""
    head = f"{txnr} {command} {len(data)}".encode()
    return head + (b" " + data if data else b"") + b"\n"


def _relp_status(data: bytes) -> tuple[int, str]:
    """The status code and text of an `rsp` frame's data (`200 OK`, `500 reason`, then maybe more lines)."""
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    code, _, text = first.partition(" ")
    return (int(code) if code.isdigit() else 0), "".join(ch for ch in text if ch.isprintable())[:120]


class RelpTlsTransport(_SyslogOverTls):
    """RELP over TLS: one session per batch; delivered once the receiver answered `200 OK` to every message of it."""

    def send_over(self, tls: ssl.SSLSocket, messages: list[bytes]) -> None:
        session = _RelpSession(tls, self.where)
        self._open(session)
        self._deliver(session, messages)
        self._close(session, len(messages) + 2)

    def _open(self, session: _RelpSession) -> None:
        session.send(1, "open", f"relp_version=0\nrelp_software={USER_AGENT}\ncommands=syslog".encode())
        _, data = session.answer({1})
        code, text = _relp_status(data)
        if code != 200:
            raise DeliveryError(f"RELP receiver at {self.where} refused the session: {code} {text}".rstrip())
        offers = dict(line.partition("=")[::2] for line in data.decode("utf-8", "replace").split("\n")[1:])
        if "syslog" not in offers.get("commands", "").split(","):
            raise DeliveryError(f"RELP receiver at {self.where} does not take syslog messages")

    def _deliver(self, session: _RelpSession, messages: list[bytes]) -> None:
        """Send every message (txnr 2, 3, …) at most `RELP_WINDOW` ahead of the answers; all must be `200 OK`."""
        waiting: set[int] = set()
        for txnr, message in enumerate(messages, start=2):
            while len(waiting) >= RELP_WINDOW:
                self._acknowledged(session, waiting)
            session.send(txnr, "syslog", message)
            waiting.add(txnr)
        while waiting:
            self._acknowledged(session, waiting)

    def _acknowledged(self, session: _RelpSession, waiting: set[int]) -> None:
        txnr, data = session.answer(waiting)
        code, text = _relp_status(data)
        if code != 200:
            raise DeliveryError(f"RELP receiver at {self.where} refused a message: {code} {text}".rstrip())
        waiting.discard(txnr)

    def _close(self, session: _RelpSession, txnr: int) -> None:
        """End the session politely; every message is confirmed already, so a receiver that just hangs up is fine."""
        with contextlib.suppress(DeliveryError, OSError, ssl.SSLError):
            session.send(txnr, "close")
            session.answer({txnr})


# -- HTTP: Splunk HEC and signed webhooks ------------------------------------------------------------------------
class _HttpTransport:
    def __init__(self, *, url: str, ca_certificate: str = "", tls_verify: bool = True, timeout: float = 10.0):
        self.url, self.timeout, self.where = url, timeout, peer_of(url)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self._ca_file = None
        if ca_certificate and tls_verify:
            with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:  # requests wants a path
                handle.write(ca_certificate)
            self._ca_file = handle.name
        self.verify: bool | str = self._ca_file or tls_verify

    def post(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        try:
            return self.session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise network_error(exc, self.where) from None

    def close(self) -> None:
        self.session.close()
        if self._ca_file:
            Path(self._ca_file).unlink(missing_ok=True)
            self._ca_file = None


class HecTransport(_HttpTransport):
    """Splunk's HTTP Event Collector: events batched in one POST, `Authorization: Splunk <token>`."""

    def __init__(self, *, token: str, index: str = "", sourcetype: str = "", system: str = "mongo-pam", **kwargs):
        super().__init__(**kwargs)
        self._token, self.index, self.sourcetype, self.system = token, index, sourcetype, system
        self.hostname = socket.gethostname()

    def event(self, record: SinkRecord) -> dict[str, Any]:
        event = {
            "time": round(record.time.timestamp(), 6),
            "host": self.hostname,
            "source": self.system,
            "sourcetype": self.sourcetype or f"pam:{record.stream}",
            "event": record.body,
            "fields": {"pam_id": record.id, "pam_system": self.system},
        }
        if self.index:
            event["index"] = self.index
        return event

    def send(self, records: list[SinkRecord]) -> None:
        body = b"\n".join(json_bytes(self.event(record)) for record in records)
        response = self.post(body, {"Authorization": f"Splunk {self._token}"})
        code = None
        with contextlib.suppress(ValueError):
            code = response.json().get("code")
        if response.status_code != 200 or code not in (0, None):
            raise DeliveryError(f"HEC at {self.where} answered HTTP {response.status_code} (code {code})")


class WebhookTransport(_HttpTransport):
    """A JSON POST of the batch, signed with HMAC-SHA256 under the shared key."""

    def __init__(self, *, hmac_key: str, system: str = "mongo-pam", **kwargs):
        super().__init__(**kwargs)
        self._key, self.system = hmac_key, system

    def send(self, records: list[SinkRecord]) -> None:
        body = json_bytes(
            {"system": self.system, "stream": records[0].stream, "records": [record.body for record in records]}
        )
        response = self.post(body, signed_headers(key=self._key, body=body))
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"webhook at {self.where} answered HTTP {response.status_code}")


# -- JSON lines --------------------------------------------------------------------------------------------------
class FileTransport:
    """Appends one JSON object per line and fsyncs before the batch counts as delivered."""

    def __init__(self, *, path: Path):
        self.path = path

    def send(self, records: list[SinkRecord]) -> None:
        data = b"".join(json_bytes(record.body) + b"\n" for record in records)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise DeliveryError(f"cannot append to {self.path.name}: {exc.strerror or type(exc).__name__}") from None

    def close(self) -> None:
        pass
