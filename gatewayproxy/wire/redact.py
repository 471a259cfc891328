"""What the command log keeps of a command: its shape, never its secrets, and its values only if allowed.

Following the command-logging spec's security rule, the authentication commands (``saslStart``,
``authenticate``, ``createUser``, ...) are logged as ``{}``; ``pwd``, SCRAM payloads, ``lsid`` and the
signed ``$clusterTime`` are always dropped. Unless the resource allows full logging, document values
are replaced by ``"?"`` while the shape stays: a filter keeps its keys and operators, an insert keeps
the count of its documents, an update keeps its operators and the fields they touch, a pipeline keeps
its stages. Error messages lose what servers quote from documents (``dup key: { ... }``).

:func:`reply_outcome` reads ``ok``/``n``/``code`` from a reply by walking its top-level elements and
skipping large values unread, so a 16 MB batch costs little; :func:`summarize_request` decodes a
request fully only when it is small.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import bson
from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from gatewayproxy.wire import codec

try:
    from gatewayproxy.wire import _speedups
except ImportError:  # built by `pip install -e .`; the pure-Python readers below are the reference
    _speedups = None

#: Commands whose body and reply are never logged (the spec's list).
SENSITIVE_COMMANDS = frozenset(
    {
        "authenticate",
        "saslStart",
        "saslContinue",
        "getnonce",
        "createUser",
        "updateUser",
        "copydbgetnonce",
        "copydbsaslstart",
        "copydb",
    }
)
#: Fields dropped from every logged command.
DROPPED_FIELDS = frozenset(
    {"pwd", "payload", "lsid", "$clusterTime", "speculativeAuthenticate", "$db", "digestPassword"}
)
#: Top-level fields whose values are options, not data: kept even when values are redacted.
OPTION_FIELDS = frozenset(
    {
        "limit",
        "skip",
        "batchSize",
        "ordered",
        "singleBatch",
        "maxTimeMS",
        "sort",
        "projection",
        "hint",
        "readConcern",
        "writeConcern",
        "allowDiskUse",
        "nameOnly",
        "authorizedDatabases",
        "new",
        "upsert",
        "multi",
        "bypassDocumentValidation",
        "startTransaction",
        "autocommit",
        "txnNumber",
        "getMore",
        "collection",
        "cursor",
        "$readPreference",
        "key",
        "indexes",
        "verbosity",
        "fields",
        "remove",
        "stmtId",
    }
)
#: Fields holding whole documents: logged as a count when values are redacted.
DOCUMENT_LIST_FIELDS = frozenset({"documents"})
#: Requests above this size are summarised without decoding their large values.
FULL_DECODE_LIMIT = 256 * 1024
#: Logged summaries are cut at this many characters of JSON.
MAX_SUMMARY_CHARS = 32 * 1024
_LIST_ITEMS = 20
_REDACTED = "?"
_JSON = JSONOptions(json_mode=JSONMode.RELAXED)
_QUOTED_VALUES = re.compile(r"(dup key:|key:)?\s*\{.*\}", re.DOTALL)


@dataclass(slots=True)
class Outcome:
    """How a command ended: ``ok``, the count ``n`` when the reply has one, and the error."""

    ok: bool = True
    n: int | None = None
    error_code: int | None = None
    error_message: str = ""
    cursor_id: int | None = None  # the reply's cursor.id: the gateway lets a session getMore only its own cursors


# --------------------------------------------------------------------------------------------------------
# Replies.
# --------------------------------------------------------------------------------------------------------


def _scalar(data: bytes, type_byte: int, at: int) -> Any:
    if type_byte == 0x01:
        return struct.unpack_from("<d", data, at)[0]
    if type_byte == 0x10:
        return codec.INT32.unpack_from(data, at)[0]
    if type_byte == 0x12:
        return struct.unpack_from("<q", data, at)[0]
    if type_byte == 0x08:
        return data[at] != 0
    if type_byte == 0x02:
        size = codec.INT32.unpack_from(data, at)[0]
        return data[at + 4 : at + 3 + size].decode("utf-8", "replace")
    return None


def _count(data: bytes, start: int, stop: int) -> int:
    return sum(1 for _ in codec.elements(data, start, stop))


def _outcome_of_body(data: bytes, start: int, stop: int) -> Outcome:
    outcome = Outcome()
    write_failed = False
    for type_byte, name, at, end in codec.elements(data, start, stop):
        if name == "ok":
            outcome.ok = bool(_scalar(data, type_byte, at))
        elif name == "n" and type_byte in (0x01, 0x10, 0x12):
            outcome.n = int(_scalar(data, type_byte, at))
        elif name == "code" and type_byte in (0x01, 0x10, 0x12):
            outcome.error_code = int(_scalar(data, type_byte, at))
        elif name == "errmsg" and type_byte == 0x02:
            outcome.error_message = _scalar(data, type_byte, at)
        elif name == "cursor" and type_byte == 0x03:
            for inner_type, inner_name, inner_at, inner_end in codec.elements(data, at, end):
                if inner_name in ("firstBatch", "nextBatch") and inner_type == 0x04:
                    outcome.n = _count(data, inner_at, inner_end)
                elif inner_name == "id" and inner_type in (0x10, 0x12):
                    outcome.cursor_id = int(_scalar(data, inner_type, inner_at))
        elif name == "writeErrors" and type_byte == 0x04:
            write_failed = True
            for _t, _n, error_at, error_end in codec.elements(data, at, end):
                for field_type, field_name, field_at, _e in codec.elements(data, error_at, error_end):
                    if field_name == "code" and outcome.error_code is None:
                        outcome.error_code = int(_scalar(data, field_type, field_at) or 0)
                    elif field_name == "errmsg" and not outcome.error_message:
                        outcome.error_message = _scalar(data, field_type, field_at) or ""
                break
        elif name == "writeConcernError" and type_byte == 0x03:
            write_failed = True
    if write_failed:
        outcome.ok = False
    return outcome


def reply_outcome(message: bytes) -> Outcome:
    """Read the outcome of a reply (OP_MSG or OP_REPLY) without decoding its documents."""
    try:
        op_code = codec.INT32.unpack_from(message, 12)[0]
        if op_code == codec.OP_MSG:
            pos = codec.HEADER_SIZE + 4
            while pos < len(message):
                kind = message[pos]
                if kind == 0:
                    size = codec.INT32.unpack_from(message, pos + 1)[0]
                    return _outcome_of_body(message, pos + 1, pos + 1 + size)
                pos += 1 + codec.INT32.unpack_from(message, pos + 1)[0]
        elif op_code == codec.OP_REPLY:
            flags = codec.INT32.unpack_from(message, codec.HEADER_SIZE)[0]
            start = codec.HEADER_SIZE + 20
            size = codec.INT32.unpack_from(message, start)[0]
            outcome = _outcome_of_body(message, start, start + size)
            if flags & codec.QUERY_FAILURE:
                outcome.ok = False
            return outcome
    except (codec.WireError, struct.error, IndexError, UnicodeDecodeError):
        pass
    return Outcome(ok=False, error_message="unreadable reply")


_OUTCOME_FIELDS = len(fields(Outcome))


def reply_outcome_of(chunks: Sequence[bytes | bytearray | memoryview]) -> Outcome:
    """:func:`reply_outcome` of a reply given as the chunks it arrived in, read where they lie.

    The C reader (``_speedups``, when built) walks the chunks without joining them and answers exactly as
    :func:`reply_outcome` does; it leaves the odd cases to it (then the chunks are joined).
    """
    if _speedups is not None:
        found = _speedups.reply_outcome(chunks)  # (ok, n, code, errmsg, cursor id)
        if found is not None:
            return Outcome(*found[:_OUTCOME_FIELDS])
    return reply_outcome(chunks[0] if len(chunks) == 1 and type(chunks[0]) is bytes else b"".join(chunks))


# --------------------------------------------------------------------------------------------------------
# Requests.
# --------------------------------------------------------------------------------------------------------


def is_sensitive(command: str) -> bool:
    """Whether a command's body and reply are never logged (the spec's list, in any letter case)."""
    return command in SENSITIVE_COMMANDS or command.lower() in SENSITIVE_COMMANDS


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (ObjectId, dates, binary... in relaxed Extended JSON)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return json.loads(json_util.dumps(value, json_options=_JSON))


def _shape(value: Any) -> Any:
    """Keys and operators kept, values replaced by ``"?"``."""
    if isinstance(value, Mapping):
        return {str(key): _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        shaped = [_shape(item) for item in value[:_LIST_ITEMS]]
        if len(value) > _LIST_ITEMS:
            shaped.append(f"... {len(value) - _LIST_ITEMS} more")
        return shaped
    return _REDACTED


def _update_shape(update: Any) -> Any:
    if isinstance(update, Mapping):
        operators = [key for key in update if str(key).startswith("$")]
        if operators:  # {$set: {a: 1}} keeps the operator and the fields it touches
            return {
                op: sorted(map(str, update[op])) if isinstance(update[op], Mapping) else _REDACTED for op in operators
            }
        return {"replacement": len(update)}
    if isinstance(update, list):  # an update pipeline
        return [_shape(stage) for stage in update[:_LIST_ITEMS]]
    return _REDACTED


def _redacted_field(key: str, value: Any) -> Any:
    if key in OPTION_FIELDS:
        return _json_safe(value)
    if key in DOCUMENT_LIST_FIELDS and isinstance(value, list | int):
        return {"count": value if isinstance(value, int) else len(value)}
    if key == "updates" and isinstance(value, list):
        return [
            {
                "q": _shape(item.get("q")) if isinstance(item, Mapping) else _REDACTED,
                "u": _update_shape(item.get("u")) if isinstance(item, Mapping) else _REDACTED,
                **{k: _json_safe(item[k]) for k in ("multi", "upsert") if isinstance(item, Mapping) and k in item},
            }
            for item in value[:_LIST_ITEMS]
        ] + ([f"... {len(value) - _LIST_ITEMS} more"] if len(value) > _LIST_ITEMS else [])
    if key == "update" and isinstance(value, Mapping | list):
        return _update_shape(value)
    if key == "deletes" and isinstance(value, list):
        return [
            {"q": _shape(item.get("q")) if isinstance(item, Mapping) else _REDACTED} for item in value[:_LIST_ITEMS]
        ]
    return _shape(value)


def summarize(command: str, body: Mapping[str, Any], *, full: bool) -> dict[str, Any]:
    """The logged summary of a decoded command (sequences already folded into ``body``)."""
    if is_sensitive(command):
        return {}
    summary: dict[str, Any] = {}
    for index, (key, value) in enumerate(body.items()):
        if key in DROPPED_FIELDS:
            continue
        if index == 0:
            summary[key] = value if isinstance(value, str) else _json_safe(value) if full else _REDACTED
            if isinstance(value, int | float) and not isinstance(value, bool):
                summary[key] = value
            continue
        summary[key] = _json_safe(value) if full else _redacted_field(key, value)
    text = json.dumps(summary, default=str)
    if len(text) > MAX_SUMMARY_CHARS:
        return {"truncated": True, "fields": list(summary), "size": len(text)}
    return summary


def _shallow_body(data: bytes, start: int, stop: int) -> dict[str, Any]:
    """Decode small top-level values; large arrays become their length, other large values a size note."""
    body: dict[str, Any] = {}
    for type_byte, name, at, end in codec.elements(data, start, stop):
        size = end - at
        if size <= 4096:
            element = data[at - len(name.encode()) - 2 : end]
            document = codec.INT32.pack(len(element) + 5) + element + b"\x00"
            body.update(bson.decode(document, codec_options=codec.CODEC_OPTIONS))
        elif type_byte == 0x04:
            body[name] = _count(data, at, end)
        else:
            body[name] = f"<{size} bytes>"
    return body


def summarize_request(request: codec.Request | bytes, *, full: bool) -> tuple[str, str, str, dict[str, Any]]:
    """(command, database, collection, summary) of a request (OP_MSG or OP_QUERY); bytes are read first.

    The command, database and collection are the ones :meth:`codec.Request.read` found; the body is decoded
    now unless it already was (a policy may have needed it). A request larger than ``FULL_DECODE_LIMIT`` is
    summarised from its top-level elements, its documents counted, not decoded.
    """
    if not isinstance(request, codec.Request):
        request = codec.Request.read(request)
    command, database, collection = request.command, request.database, request.collection
    if request.op_code not in (codec.OP_MSG, codec.OP_QUERY):
        return "", "", "", {}
    if request.op_code == codec.OP_MSG and len(request.raw) > FULL_DECODE_LIMIT:
        return command, database, collection, _summarize_large_msg(request.raw, command, full=full)
    message = request.message
    body = dict(request.body)
    if isinstance(message, codec.OpMsg):
        for identifier, documents in message.sequences:
            body[identifier] = documents
    return command, database, collection, summarize(command, body, full=full)


def _summarize_large_msg(message: bytes, command: str, *, full: bool) -> dict[str, Any]:
    flags = codec.UINT32.unpack_from(message, codec.HEADER_SIZE)[0]
    end = len(message) - (4 if flags & codec.CHECKSUM_PRESENT else 0)
    body: dict[str, Any] = {}
    counts: dict[str, int] = {}
    pos = codec.HEADER_SIZE + 4
    while pos < end:
        kind = message[pos]
        size = codec.INT32.unpack_from(message, pos + 1)[0]
        if kind == 0:
            body = _shallow_body(message, pos + 1, pos + 1 + size)
            pos += 1 + size
            continue
        identifier, docs_at = codec.read_cstring(message, pos + 5, pos + 1 + size, "a sequence identifier")
        docs, at = 0, docs_at
        while at < pos + 1 + size:
            at += codec.INT32.unpack_from(message, at)[0]
            docs += 1
        counts[identifier] = docs
        pos += 1 + size
    for identifier, docs in counts.items():
        body[identifier] = docs
    summary = summarize(command, body, full=False)
    if full:
        summary["truncated"] = True  # too large to log whole
    return summary


def redact_error_message(message: str, *, full: bool) -> str:
    """An upstream error message without the document values it quotes, unless ``full`` (idempotent)."""
    if not full:
        message = _QUOTED_VALUES.sub(" { ... }", message)
    return message
