"""Real receivers for the sink and notification tests: Debian's rsyslogd with TLS, and an HTTP server in a thread.

- `make_pki(directory)`: a throw-away CA and a server certificate for 127.0.0.1/localhost, made with `cryptography`.
- `Rsyslog`: rsyslogd in the foreground (`-n`) with a config file in the test's tmp directory, writing each message's
  raw text to a file: imtcp with the GnuTLS driver (RFC 5425), or with `protocol="relp"` imrelp over TLS (rsyslog's
  RELP input, which acknowledges each message once the direct queue has written it); `stop()` (SIGTERM, as a service
  restart does, or SIGKILL for a crash) and `start()` again on the same port. Skips the test when rsyslogd, its TLS
  driver or imrelp is not installed (tests/install-rsyslog.sh installs them; `make test` runs it).
- `RelpRefuser`: a TLS server in a thread that opens RELP sessions like imrelp and then answers every message with
  `500`, as a RELP receiver refusing messages does (rsyslog cannot be told to refuse).
- `HttpReceiver`: http.server in a thread that checks what a real receiver would (the Splunk token, the webhook's
  HMAC signature and timestamp), records every accepted record id in arrival order, can answer errors for a while,
  and can be stopped and started again on the same port.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# -- certificates ---------------------------------------------------------------------------------------------------
def make_pki(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate (SAN 127.0.0.1 and localhost) signed by it, as PEM files in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pam sink test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


# -- rsyslog --------------------------------------------------------------------------------------------------------
def rsyslogd_path(*, relp: bool = False) -> str:
    """rsyslogd with its GnuTLS network driver (and imrelp), or skip (tests/install-rsyslog.sh installs them)."""
    path = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
    drivers = list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"))
    if not path or not drivers:
        pytest.skip("rsyslogd with rsyslog-gnutls is not installed (tests/install-rsyslog.sh)")
    if relp and not list(Path("/usr/lib").glob("*/rsyslog/imrelp.so")):
        pytest.skip("rsyslog's RELP input (rsyslog-relp) is not installed (tests/install-rsyslog.sh)")
    return path


class Rsyslog:
    """rsyslogd listening with TLS on 127.0.0.1 (syslog, or RELP), writing each received message's raw text to `output`.

    Queues are direct, so a message is in the output file before rsyslogd reads the next bytes of its connection, and
    (RELP) before imrelp answers `200 OK` for it. imrelp uses librelp's OpenSSL driver: its GnuTLS one insists on a
    client certificate once the server has one.
    """

    def __init__(self, directory: Path, pki: dict[str, Path], *, protocol: str = "tls"):
        self.protocol = protocol
        self.binary = rsyslogd_path(relp=protocol == "relp")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        (directory / "work").mkdir(exist_ok=True)
        self.port = free_port()
        self.output = directory / "received.log"
        self.config = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.log = directory / "rsyslogd.log"
        if protocol == "relp":
            listener = f"""
module(load="imrelp" tls.tlslib="openssl")
input(type="imrelp" port="{self.port}" address="127.0.0.1" ruleset="pam" tls="on"
      tls.caCert="{pki["ca"]}" tls.myCert="{pki["cert"]}" tls.myPrivKey="{pki["key"]}")
"""
        else:
            listener = f"""
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"
       MaxSessions="50")
input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="pam")
"""
        self.config.write_text(
            f"""
global(workDirectory="{directory / "work"}"
       maxMessageSize="256k"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{pki["ca"]}"
       DefaultNetstreamDriverCertFile="{pki["cert"]}"
       DefaultNetstreamDriverKeyFile="{pki["key"]}")
main_queue(queue.type="Direct")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="pam" queue.type="Direct") {{
  action(type="omfile" file="{self.output}" template="raw" flushOnTXEnd="on" asyncWriting="off")
}}
{listener}"""
        )
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Rsyslog:
        self.pidfile.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-n", "-f", str(self.config), "-i", str(self.pidfile)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

        def listening() -> bool:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        assert wait_for(listening, timeout=15), self.log.read_text(errors="replace")[-2000:]
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def messages(self) -> list[str]:
        if not self.output.exists():
            return []
        return [line for line in self.output.read_text(errors="replace").splitlines() if line.strip()]

    def ids(self) -> list[str]:
        """The record ids received, in arrival order (from each message's JSON body)."""
        found = []
        for line in self.messages():
            body = line[line.index("{") :]
            found.append(json.loads(body)["id"])
        return found


class RelpRefuser:
    """A RELP-over-TLS receiver on 127.0.0.1 that opens sessions as imrelp does and answers every message `500`.

    `refused` counts the messages it answered so; rsyslog itself acknowledges whatever its input takes, so a
    receiver refusing messages (full, shutting down, a relay whose upstream is gone) is played by this one.
    """

    REASON = "refused by the test receiver"

    def __init__(self, pki: dict[str, Path]):
        import ssl

        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki["cert"], pki["key"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> RelpRefuser:
        self.thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not, on Linux)
        self.listener.close()
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # stopped
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls, tls.makefile("rwb") as stream:
                    self._session(stream)
            except (OSError, ValueError):
                pass  # the client went away

    def _session(self, stream) -> None:
        while True:
            header = b""
            while header.count(b" ") < 2:
                byte = stream.read(1)
                if not byte:
                    return
                header += byte
            txnr, command = header.decode().split(" ")[:2]
            length = b""
            while (byte := stream.read(1)) not in (b" ", b"\n", b""):
                length += byte
            if byte == b" ":
                stream.read(int(length) + 1)  # the data and the trailing LF
            if command == "open":
                answer = b"200 OK\nrelp_version=0\nrelp_software=test-refuser\ncommands=syslog"
            elif command == "syslog":
                self.refused += 1
                answer = f"500 {self.REASON}".encode()
            else:  # close
                stream.write(f"{txnr} rsp 0\n".encode())
                stream.flush()
                return
            stream.write(f"{txnr} rsp {len(answer)} ".encode() + answer + b"\n")
            stream.flush()


# -- HTTP -----------------------------------------------------------------------------------------------------------
class HttpReceiver:
    """A real HTTP server on 127.0.0.1 for HEC, webhooks and chat notifications.

    `hec_token`: requests must carry `Authorization: Splunk <token>`; `hmac_key`: X-PAM-Signature must verify over
    X-PAM-Timestamp and the body. `fail_with` makes it answer that status (after reading the body) until cleared.
    `ids` is every record id accepted, in order; `requests` every request as (path, headers, parsed JSON).
    """

    def __init__(self, *, hec_token: str | None = None, hmac_key: str | None = None, delay: float = 0.0):
        self.hec_token, self.hmac_key, self.delay = hec_token, hmac_key, delay
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ids: list[str] = []
        self.requests: list[tuple[str, dict, object]] = []
        self.rejected: list[str] = []
        self.fail_with: int | None = None
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status, reason = receiver._check(self.headers, body)
                if status == 200 and receiver.fail_with:
                    status, reason = receiver.fail_with, "told to fail"
                if status != 200:
                    with receiver.lock:
                        receiver.rejected.append(reason)
                    self._answer(status, {"text": reason, "code": 99})
                    return
                receiver._accept(self.path, dict(self.headers), body)
                self._answer(200, {"text": "Success", "code": 0})

            def do_GET(self):  # the counts, for a receiver run in a process of its own (benchmarks/sinks.py)
                with receiver.lock:
                    counts = {
                        "ids": len(receiver.ids),
                        "unique": len(set(receiver.ids)),
                        "rejected": len(receiver.rejected),
                    }
                self._answer(200, counts)

            def _answer(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _check(self, headers, body: bytes) -> tuple[int, str]:
        if self.hec_token is not None:
            given = headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Splunk {self.hec_token}".encode()):
                return 401, "bad HEC token"
        if self.hmac_key is not None:
            timestamp = headers.get("X-PAM-Timestamp", "")
            expected = (
                "sha256="
                + hmac.new(self.hmac_key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            )
            if not hmac.compare_digest(headers.get("X-PAM-Signature", "").encode(), expected.encode()):
                return 401, "bad signature"
            if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
                return 401, "stale timestamp"
        return 200, ""

    def _accept(self, path: str, headers: dict, body: bytes) -> None:
        text = body.decode()
        if self.hec_token is not None:  # HEC: concatenated event objects
            decoder, index, events = json.JSONDecoder(), 0, []
            while index < len(text):
                while index < len(text) and text[index].isspace():
                    index += 1
                if index >= len(text):
                    break
                event, index = decoder.raw_decode(text, index)
                events.append(event)
            ids = [event["fields"]["pam_id"] for event in events]
            parsed: object = events
        else:
            parsed = json.loads(text)
            ids = [record["id"] for record in parsed.get("records", [])] if isinstance(parsed, dict) else []
        with self.lock:
            self.requests.append((path, headers, parsed))
            self.ids.extend(ids)

    def start(self) -> HttpReceiver:
        for _ in range(50):  # the port may linger a moment after a stop
            try:
                self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"port {self.port} stayed busy")
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)
        self.server = None


def first_seen_order(ids: list[str]) -> list[int]:
    """The positions of `ids` (`audit:12` -> 12) in the order each id was first received."""
    seen, order = set(), []
    for record_id in ids:
        if record_id not in seen:
            seen.add(record_id)
            order.append(int(record_id.rsplit(":", 1)[1]))
    return order
