"""MongoDB wire-protocol codec: pure functions over bytes.

The gateway relays MongoDB messages between clients and servers and needs to read, check and sometimes
write them. This module parses and builds the messages a modern deployment uses (OP_MSG, the legacy
OP_QUERY/OP_REPLY pair still used for the first ``hello``, and the OP_COMPRESSED envelope), checks the
framing against a size limit, verifies OP_MSG's CRC-32C trailer, and makes the error and success
replies the proxy sends itself.

Every malformed input raises :class:`WireError` (a ``ValueError``) naming what was wrong and the byte
offset where it was found; nothing else escapes the parsers. (Passing something other than ``bytes``
is a programming error and raises ``TypeError``.) Nothing here does I/O except
:func:`read_message`, which only reads one framed message from an ``asyncio.StreamReader``.

BSON goes through pymongo's ``bson`` with codec options that keep field order and types (``Int64``
stays ``Int64``, out-of-range dates stay ``DatetimeMS``), so re-encoding an ordinary decoded document
gives the same bytes. Cost (benchmarks/wire_codec.py): a 1 MB OP_MSG parses at roughly ``bson.decode``
speed (document sequences go through one ``bson.decode_all`` call) and builds at about 0.8x
``bson.encode``; small messages pay a fixed ~2-3 µs. :meth:`Request.read` reads only the command name,
``$db`` and collection without decoding (microseconds at any size), for the hot path of a relay, and
decodes the rest on demand. The CRC-32C is
pure Python (~20 MB/s), so only messages that carry a checksum pay for it.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import bson
import crc32c as _crc32c
from bson.codec_options import CodecOptions, DatetimeConversion

try:
    from gatewayproxy.wire import _speedups
except ImportError:  # built by `pip install -e .`; the pure-Python readers here are the reference
    _speedups = None

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013
HEADER_SIZE = 16
DEFAULT_MAX_MESSAGE_SIZE = 48_000_000

# OP_MSG flag bits.
CHECKSUM_PRESENT = 1
MORE_TO_COME = 2
EXHAUST_ALLOWED = 1 << 16
_KNOWN_REQUIRED_BITS = CHECKSUM_PRESENT | MORE_TO_COME

# OP_REPLY response flag: the query failed and the one document is the error.
QUERY_FAILURE = 2

COMPRESSOR_IDS = {"noop": 0, "snappy": 1, "zlib": 2, "zstd": 3}
_COMPRESSOR_NAMES = {v: k for k, v in COMPRESSOR_IDS.items()}

CODEC_OPTIONS = CodecOptions(document_class=dict, datetime_conversion=DatetimeConversion.DATETIME_AUTO)

#: The standard message header (length, requestID, responseTo, opCode): the one struct every module uses.
HEADER = struct.Struct("<iiii")
INT32 = struct.Struct("<i")
INT64 = struct.Struct("<q")
#: OP_MSG's flag bits (right after the header) and its CRC-32C trailer.
UINT32 = struct.Struct("<I")
_REPLY_FIXED = struct.Struct("<iqii")
_COMPRESSED_FIXED = struct.Struct("<iiB")


class WireError(ValueError):
    """A message is malformed, too large, or cannot be built; ``offset`` is the byte where it went wrong.

    ``offset`` is ``None`` when the problem is not tied to a position (e.g. an unknown compressor name).
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at byte {offset})")


# --------------------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), OP_MSG's checksum.
# --------------------------------------------------------------------------------------------------------


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Return the CRC-32C of ``data`` (continuing from ``crc``), as OP_MSG's checksum uses it.

    The `crc32c` package computes it in C (SSE4.2 where the CPU has it), at memory speed.
    """
    return _crc32c.crc32c(data, crc)


# --------------------------------------------------------------------------------------------------------
# Message types.
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The 16-byte standard message header."""

    length: int
    request_id: int
    response_to: int
    op_code: int


@dataclass
class OpMsg:
    """An OP_MSG: flag bits, the kind-0 body and the kind-1 document sequences (identifier, documents)."""

    op_code: ClassVar[int] = OP_MSG
    flags: int
    body: dict
    sequences: list[tuple[str, list[dict]]] = field(default_factory=list)
    request_id: int = 0
    response_to: int = 0

    @property
    def command_name(self) -> str:
        """The command: the first key of the body ("" for an empty body)."""
        return next(iter(self.body), "")

    @property
    def database(self) -> str | None:
        """The target database, from the body's ``$db`` field."""
        return self.body.get("$db")

    @property
    def more_to_come(self) -> bool:
        """True when the sender will not wait for (request) or will send more (reply) messages."""
        return bool(self.flags & MORE_TO_COME)

    @property
    def exhaust_allowed(self) -> bool:
        """True when the client accepts exhaust (streamed) replies."""
        return bool(self.flags & EXHAUST_ALLOWED)

    @property
    def checksum_present(self) -> bool:
        """True when the message carried (or will carry) a CRC-32C trailer."""
        return bool(self.flags & CHECKSUM_PRESENT)

    def to_bytes(self) -> bytes:
        """Encode this message again, recomputing the checksum when the flag asks for one."""
        return build_op_msg(
            self.body,
            sequences=self.sequences,
            flags=self.flags,
            request_id=self.request_id,
            response_to=self.response_to,
            checksum=self.checksum_present,
        )


@dataclass
class OpQuery:
    """A legacy OP_QUERY (today only the first ``hello``/``isMaster`` on ``admin.$cmd``)."""

    op_code: ClassVar[int] = OP_QUERY
    flags: int
    full_collection_name: str
    number_to_skip: int
    number_to_return: int
    query: dict
    return_fields_selector: dict | None = None
    request_id: int = 0
    response_to: int = 0

    @property
    def database(self) -> str:
        """The database part of ``full_collection_name``."""
        return self.full_collection_name.partition(".")[0]

    @property
    def collection(self) -> str:
        """The collection part of ``full_collection_name`` (``$cmd`` for commands)."""
        return self.full_collection_name.partition(".")[2]

    @property
    def command_name(self) -> str:
        """The first key of the query, unwrapping a ``$query``/``query`` envelope."""
        return _first_key(unwrap_query(self.query))

    def to_bytes(self) -> bytes:
        """Encode this message again."""
        return build_op_query(
            self.full_collection_name,
            self.query,
            flags=self.flags,
            number_to_skip=self.number_to_skip,
            number_to_return=self.number_to_return,
            return_fields_selector=self.return_fields_selector,
            request_id=self.request_id,
            response_to=self.response_to,
        )


@dataclass
class OpReply:
    """A legacy OP_REPLY: the answer to an OP_QUERY."""

    op_code: ClassVar[int] = OP_REPLY
    response_flags: int
    cursor_id: int
    starting_from: int
    documents: list[dict]
    request_id: int = 0
    response_to: int = 0

    def to_bytes(self) -> bytes:
        """Encode this message again."""
        return build_op_reply(
            self.documents,
            response_flags=self.response_flags,
            cursor_id=self.cursor_id,
            starting_from=self.starting_from,
            request_id=self.request_id,
            response_to=self.response_to,
        )


Message = OpMsg | OpQuery | OpReply


# --------------------------------------------------------------------------------------------------------
# Low-level readers. Each checks bounds itself so that no struct.error or IndexError escapes.
# --------------------------------------------------------------------------------------------------------


def _int32(data: bytes, offset: int, end: int, what: str) -> int:
    if offset + 4 > end:
        raise WireError(f"message ends inside {what}", offset)
    return INT32.unpack_from(data, offset)[0]


def read_cstring(data: bytes, offset: int, end: int, what: str) -> tuple[str, int]:
    """Read a NUL-terminated UTF-8 string at ``offset`` (before ``end``); return it and the offset past the NUL.

    ``what`` names the string in the :class:`WireError` raised when it is unterminated or not UTF-8.
    """
    nul = data.find(b"\x00", offset, end)
    if nul < 0:
        raise WireError(f"{what} is not NUL-terminated", offset)
    try:
        return data[offset:nul].decode("utf-8"), nul + 1
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} is not valid UTF-8", offset) from exc


def _doc_span(data: bytes, offset: int, end: int, what: str) -> int:
    """Check the BSON length prefix at ``offset`` against ``end``; return the document's end offset."""
    size = _int32(data, offset, end, f"the length of {what}")
    if size < 5:
        raise WireError(f"{what} declares length {size}, less than 5", offset)
    if offset + size > end:
        raise WireError(f"{what} declares length {size}, running past the end of its section", offset)
    if data[offset + size - 1] != 0:
        raise WireError(f"{what} does not end with a NUL byte", offset + size - 1)
    return offset + size


def _read_doc(data: bytes, offset: int, end: int, what: str) -> tuple[dict, int]:
    """Decode one BSON document at ``offset``; return it and the offset just past it."""
    stop = _doc_span(data, offset, end, what)
    try:
        doc = bson.decode(data[offset:stop], codec_options=CODEC_OPTIONS)
    except Exception as exc:  # bson raises InvalidBSON, but also ValueError/OverflowError/... on odd input
        raise WireError(f"{what} is not valid BSON: {exc}", offset) from exc
    return doc, stop


def _read_docs(data: bytes, start: int, end: int, what: str) -> list[dict]:
    """Decode the BSON documents that exactly fill ``data[start:end]``.

    Lengths are checked in Python first (so a lie is reported at its byte), then the whole run is decoded
    by one ``bson.decode_all`` call, which is much cheaper than a call per document.
    """
    pos, count = start, 0
    while pos < end:
        pos = _doc_span(data, pos, end, f"{what}, document {count},")
        count += 1
    if not count:
        return []
    try:
        return bson.decode_all(data[start:end], codec_options=CODEC_OPTIONS)
    except Exception as exc:
        raise WireError(f"{what} holds invalid BSON: {exc}", start) from exc


def _encode(doc: Mapping[str, Any] | bytes, what: str) -> bytes:
    """Encode a document; already-encoded BSON (bytes) passes through unchanged."""
    if isinstance(doc, bytes | bytearray | memoryview):
        return bytes(doc)
    try:
        return bson.encode(doc, codec_options=CODEC_OPTIONS)
    except Exception as exc:
        raise WireError(f"cannot encode {what} as BSON: {exc}") from exc


def _pack_header(length: int, request_id: int, response_to: int, op_code: int) -> bytes:
    try:
        return HEADER.pack(length, request_id, response_to, op_code)
    except struct.error as exc:
        raise WireError(f"header field out of range: {exc}") from exc


def _first_key(doc: Mapping[str, Any]) -> str:
    return next(iter(doc), "")


def unwrap_query(query: Mapping[str, Any]) -> Mapping[str, Any]:
    """The command inside an OP_QUERY's query document: unwraps a ``$query``/``query`` envelope."""
    first = _first_key(query)
    inner = query[first] if first in ("$query", "query") else None
    return inner if isinstance(inner, Mapping) else query


# --------------------------------------------------------------------------------------------------------
# Header and framing.
# --------------------------------------------------------------------------------------------------------


def parse_header(data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Header:
    """Parse the first 16 bytes of ``data`` and check the declared length is within 16..max_size."""
    if len(data) < HEADER_SIZE:
        raise WireError(f"header needs {HEADER_SIZE} bytes, got {len(data)}", len(data))
    header = Header(*HEADER.unpack_from(data, 0))
    if header.length < HEADER_SIZE:
        raise WireError(f"declared message length {header.length} is less than {HEADER_SIZE}", 0)
    if header.length > max_size:
        raise WireError(f"declared message length {header.length} exceeds the limit of {max_size}", 0)
    return header


def _whole_header(message: bytes, op_code: int | None, max_size: int) -> Header:
    """Parse the header and check it describes exactly ``message`` (and the expected opcode)."""
    if not isinstance(message, bytes):
        raise TypeError(f"messages are bytes, not {type(message).__name__}; convert with bytes()")
    header = parse_header(message, max_size=max_size)
    if header.length != len(message):
        raise WireError(f"declared message length {header.length} but {len(message)} bytes given", 0)
    if op_code is not None and header.op_code != op_code:
        raise WireError(f"expected opcode {op_code}, got {header.op_code}", 12)
    return header


async def read_message(reader: asyncio.StreamReader, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """Read one whole message (header and body) from ``reader``.

    The declared length is checked against ``max_size`` before the body is read. A clean end of stream
    before the first byte raises ``EOFError``; a stream that ends inside a message raises
    :class:`WireError`.
    """
    try:
        head = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("connection closed between messages") from None
        raise WireError(f"connection closed inside a header after {len(exc.partial)} bytes", 0) from None
    header = parse_header(head, max_size=max_size)
    try:
        body = await reader.readexactly(header.length - HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        got = HEADER_SIZE + len(exc.partial)
        raise WireError(f"connection closed after {got} of {header.length} bytes", got) from None
    return head + body


# --------------------------------------------------------------------------------------------------------
# OP_MSG.
# --------------------------------------------------------------------------------------------------------


def _msg_flags_and_end(message: bytes, header: Header, verify_checksum: bool) -> tuple[int, int]:
    """Return the OP_MSG flags and where its sections end, checking flags and (optionally) the checksum."""
    if header.length < HEADER_SIZE + 4:
        raise WireError("OP_MSG too short for its flag bits", HEADER_SIZE)
    flags = UINT32.unpack_from(message, HEADER_SIZE)[0]
    unknown = flags & 0xFFFF & ~_KNOWN_REQUIRED_BITS
    if unknown:
        raise WireError(f"OP_MSG has unknown required flag bits {unknown:#x}", HEADER_SIZE)
    end = header.length
    if flags & CHECKSUM_PRESENT:
        end -= 4
        if end < HEADER_SIZE + 4:
            raise WireError("OP_MSG too short for its checksum", HEADER_SIZE + 4)
        expected = UINT32.unpack_from(message, end)[0]
        actual = crc32c(memoryview(message)[:end]) if verify_checksum else expected
        if actual != expected:
            raise WireError(f"OP_MSG checksum mismatch: trailer {expected:#010x}, computed {actual:#010x}", end)
    return flags, end


def _read_sequence(message: bytes, offset: int, end: int) -> tuple[tuple[str, list[dict]], int]:
    """Read a kind-1 section (after its kind byte); return (identifier, documents) and the next offset."""
    size = _int32(message, offset, end, "a document sequence's size")
    stop = offset + size
    if size < 5 or stop > end:
        raise WireError(f"document sequence declares size {size}, which does not fit the message", offset)
    identifier, pos = read_cstring(message, offset + 4, stop, "document sequence identifier")
    return (identifier, _read_docs(message, pos, stop, f"sequence {identifier!r}")), stop


def parse_op_msg(message: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, verify_checksum: bool = True) -> OpMsg:
    """Parse a whole OP_MSG (header included), verifying its checksum when one is present.

    The pure-Python CRC-32C runs at about 20 MB/s; a relay that forwards the original bytes to a server
    (which verifies the checksum itself) may pass ``verify_checksum=False`` so that a client cannot
    stall the event loop with large checksummed messages.
    """
    header = _whole_header(message, OP_MSG, max_size)
    flags, end = _msg_flags_and_end(message, header, verify_checksum)
    body: dict | None = None
    sequences: list[tuple[str, list[dict]]] = []
    pos = HEADER_SIZE + 4
    while pos < end:
        kind = message[pos]
        if kind == 0:
            if body is not None:
                raise WireError("OP_MSG has a second kind-0 body section", pos)
            body, pos = _read_doc(message, pos + 1, end, "the OP_MSG body")
        elif kind == 1:
            sequence, pos = _read_sequence(message, pos + 1, end)
            sequences.append(sequence)
        else:
            raise WireError(f"OP_MSG has unknown section kind {kind}", pos)
    if body is None:
        raise WireError("OP_MSG has no kind-0 body section", HEADER_SIZE + 4)
    return OpMsg(flags, body, sequences, header.request_id, header.response_to)


def _sequence_parts(identifier: str, documents: Iterable[Mapping[str, Any] | bytes]) -> list[bytes]:
    """The pieces of one kind-1 section, unjoined so the message is copied only once."""
    if "\x00" in identifier:
        raise WireError("document sequence identifier contains a NUL character")
    name = identifier.encode("utf-8") + b"\x00"
    docs = [_encode(doc, f"a document of sequence {identifier!r}") for doc in documents]
    size = 4 + len(name) + sum(map(len, docs))
    return [b"\x01", INT32.pack(size), name, *docs]


def build_op_msg(
    body: Mapping[str, Any] | bytes,
    *,
    sequences: Iterable[tuple[str, Iterable[Mapping[str, Any] | bytes]]] = (),
    flags: int = 0,
    request_id: int = 0,
    response_to: int = 0,
    checksum: bool = False,
) -> bytes:
    """Build an OP_MSG. ``body`` and sequence documents may be dicts or already-encoded BSON bytes.

    The checksumPresent flag is set and the CRC-32C trailer appended when ``checksum`` is true, and
    the flag is cleared otherwise, whatever ``flags`` says.
    """
    flags = (flags & ~CHECKSUM_PRESENT) | (CHECKSUM_PRESENT if checksum else 0)
    if not 0 <= flags <= 0xFFFFFFFF:
        raise WireError(f"OP_MSG flags {flags:#x} do not fit in 32 bits")
    parts = [b"", UINT32.pack(flags), b"\x00", _encode(body, "the OP_MSG body")]
    for identifier, docs in sequences:
        parts += _sequence_parts(identifier, docs)
    length = sum(map(len, parts)) + HEADER_SIZE + (4 if checksum else 0)
    parts[0] = _pack_header(length, request_id, response_to, OP_MSG)
    message = b"".join(parts)
    if checksum:
        message += UINT32.pack(crc32c(message))
    return message


# --------------------------------------------------------------------------------------------------------
# OP_QUERY and OP_REPLY.
# --------------------------------------------------------------------------------------------------------


def parse_op_query(message: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> OpQuery:
    """Parse a whole OP_QUERY (header included)."""
    header = _whole_header(message, OP_QUERY, max_size)
    end = header.length
    flags = _int32(message, HEADER_SIZE, end, "OP_QUERY flags")
    name, pos = read_cstring(message, HEADER_SIZE + 4, end, "fullCollectionName")
    skip = _int32(message, pos, end, "numberToSkip")
    limit = _int32(message, pos + 4, end, "numberToReturn")
    query, pos = _read_doc(message, pos + 8, end, "the query document")
    selector = None
    if pos < end:
        selector, pos = _read_doc(message, pos, end, "returnFieldsSelector")
    if pos != end:
        raise WireError(f"{end - pos} unexpected bytes after returnFieldsSelector", pos)
    return OpQuery(flags, name, skip, limit, query, selector, header.request_id, header.response_to)


def build_op_query(
    full_collection_name: str,
    query: Mapping[str, Any] | bytes,
    *,
    flags: int = 0,
    number_to_skip: int = 0,
    number_to_return: int = -1,
    return_fields_selector: Mapping[str, Any] | bytes | None = None,
    request_id: int = 0,
    response_to: int = 0,
) -> bytes:
    """Build an OP_QUERY (``number_to_return=-1`` is what drivers send for commands)."""
    if "\x00" in full_collection_name:
        raise WireError("fullCollectionName contains a NUL character")
    try:
        fixed = INT32.pack(flags), INT32.pack(number_to_skip), INT32.pack(number_to_return)
    except struct.error as exc:
        raise WireError(f"OP_QUERY field out of range: {exc}") from exc
    parts = [fixed[0], full_collection_name.encode("utf-8"), b"\x00", fixed[1], fixed[2]]
    parts.append(_encode(query, "the query document"))
    if return_fields_selector is not None:
        parts.append(_encode(return_fields_selector, "returnFieldsSelector"))
    payload = b"".join(parts)
    return _pack_header(HEADER_SIZE + len(payload), request_id, response_to, OP_QUERY) + payload


def parse_op_reply(message: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> OpReply:
    """Parse a whole OP_REPLY (header included); numberReturned must match the documents present."""
    header = _whole_header(message, OP_REPLY, max_size)
    end = header.length
    if end < HEADER_SIZE + _REPLY_FIXED.size:
        raise WireError("OP_REPLY too short for its fixed fields", HEADER_SIZE)
    flags, cursor_id, starting_from, count = _REPLY_FIXED.unpack_from(message, HEADER_SIZE)
    if count < 0:
        raise WireError(f"OP_REPLY numberReturned is negative ({count})", HEADER_SIZE + 16)
    docs = _read_docs(message, HEADER_SIZE + _REPLY_FIXED.size, end, "OP_REPLY")
    if len(docs) != count:
        raise WireError(f"OP_REPLY numberReturned is {count} but {len(docs)} documents follow", HEADER_SIZE + 16)
    return OpReply(flags, cursor_id, starting_from, docs, header.request_id, header.response_to)


def build_op_reply(
    documents: Iterable[Mapping[str, Any] | bytes],
    *,
    response_flags: int = 0,
    cursor_id: int = 0,
    starting_from: int = 0,
    request_id: int = 0,
    response_to: int = 0,
) -> bytes:
    """Build an OP_REPLY carrying ``documents``."""
    encoded = [_encode(doc, "a reply document") for doc in documents]
    try:
        fixed = _REPLY_FIXED.pack(response_flags, cursor_id, starting_from, len(encoded))
    except struct.error as exc:
        raise WireError(f"OP_REPLY field out of range: {exc}") from exc
    payload = fixed + b"".join(encoded)
    return _pack_header(HEADER_SIZE + len(payload), request_id, response_to, OP_REPLY) + payload


# --------------------------------------------------------------------------------------------------------
# OP_COMPRESSED.
# --------------------------------------------------------------------------------------------------------


def _snappy_module():
    try:
        import snappy
    except ImportError as exc:
        raise WireError("snappy compression needs the python-snappy package, which is not installed") from exc
    return snappy


def _zstd_module():
    try:
        import zstandard
    except ImportError as exc:
        raise WireError("zstd compression needs the zstandard package, which is not installed") from exc
    return zstandard


def available_compressors() -> tuple[str, ...]:
    """The compressor names this process can both compress and decompress with."""
    names = ["noop", "zlib"]
    for name, probe in (("snappy", _snappy_module), ("zstd", _zstd_module)):
        try:
            probe()
        except WireError:
            continue
        names.append(name)
    return tuple(names)


def _compress(name: str, data: bytes) -> bytes:
    if name == "noop":
        return data
    if name == "zlib":
        return zlib.compress(data)
    if name == "snappy":
        return _snappy_module().compress(data)
    return _zstd_module().ZstdCompressor().compress(data)


def _snappy_declared_length(data: bytes) -> int:
    """Read the varint uncompressed length that starts a raw snappy block."""
    value = 0
    for index, byte in enumerate(data[:5]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value
    raise WireError("snappy data has no valid length prefix", HEADER_SIZE + 9)


def _decompress(name: str, data: bytes, size: int) -> bytes:
    """Decompress ``data``, never producing more than ``size`` + 1 bytes (a decompression bomb stops)."""
    if name == "noop":
        return data
    if name == "zlib":
        return zlib.decompressobj().decompress(data, size + 1)
    if name == "snappy":
        if _snappy_declared_length(data) != size:
            raise WireError("snappy length prefix disagrees with uncompressedSize", HEADER_SIZE + 9)
        return _snappy_module().uncompress(data)
    zstandard = _zstd_module()
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        return reader.read(size + 1)


def decompress_message(message: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """Unwrap an OP_COMPRESSED message: return the original message with its original opcode."""
    header = _whole_header(message, OP_COMPRESSED, max_size)
    if header.length < HEADER_SIZE + _COMPRESSED_FIXED.size:
        raise WireError("OP_COMPRESSED too short for its fixed fields", HEADER_SIZE)
    original_op, size, compressor_id = _COMPRESSED_FIXED.unpack_from(message, HEADER_SIZE)
    if original_op == OP_COMPRESSED:
        raise WireError("OP_COMPRESSED wraps another OP_COMPRESSED", HEADER_SIZE)
    if size < 0 or size > max_size - HEADER_SIZE:
        raise WireError(f"uncompressedSize {size} is outside 0..{max_size - HEADER_SIZE}", HEADER_SIZE + 4)
    name = _COMPRESSOR_NAMES.get(compressor_id)
    if name is None:
        raise WireError(f"unknown compressor id {compressor_id}", HEADER_SIZE + 8)
    data = message[HEADER_SIZE + _COMPRESSED_FIXED.size :]
    try:
        original = _decompress(name, data, size)
    except WireError:
        raise
    except Exception as exc:  # zlib.error, snappy.UncompressError, zstandard.ZstdError, ...
        raise WireError(f"{name} data does not decompress: {exc}", HEADER_SIZE + 9) from exc
    if len(original) != size:
        raise WireError(f"uncompressedSize is {size} but {name} data gives {len(original)}", HEADER_SIZE + 4)
    head = _pack_header(HEADER_SIZE + size, header.request_id, header.response_to, original_op)
    return head + original


def compress_message(message: bytes, compressor: str) -> bytes:
    """Wrap a whole message in OP_COMPRESSED with ``compressor`` ("noop", "zlib", "snappy", "zstd")."""
    if compressor not in COMPRESSOR_IDS:
        raise WireError(f"unknown compressor {compressor!r}; expected one of {', '.join(COMPRESSOR_IDS)}")
    header = _whole_header(message, None, max(DEFAULT_MAX_MESSAGE_SIZE, len(message)))
    if header.op_code == OP_COMPRESSED:
        raise WireError("message is already OP_COMPRESSED", 12)
    body = message[HEADER_SIZE:]
    fixed = _COMPRESSED_FIXED.pack(header.op_code, len(body), COMPRESSOR_IDS[compressor])
    payload = fixed + _compress(compressor, body)
    return _pack_header(HEADER_SIZE + len(payload), header.request_id, header.response_to, OP_COMPRESSED) + payload


# --------------------------------------------------------------------------------------------------------
# Dispatch, peeking and replies.
# --------------------------------------------------------------------------------------------------------

#: MongoDB's names for the error codes a proxy typically returns itself.
CODE_NAMES = {
    2: "BadValue",
    8: "UnknownError",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    17: "ProtocolError",
    18: "AuthenticationFailed",
    20: "IllegalOperation",
    59: "CommandNotFound",
    115: "CommandNotSupported",
    334: "MechanismUnavailable",
}

_PARSERS = {OP_MSG: parse_op_msg, OP_QUERY: parse_op_query, OP_REPLY: parse_op_reply}


def parse_message(message: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, verify_checksum: bool = True) -> Message:
    """Parse any supported message, unwrapping OP_COMPRESSED first; unknown opcodes raise WireError."""
    header = _whole_header(message, None, max_size)
    if header.op_code == OP_COMPRESSED:
        message = decompress_message(message, max_size=max_size)
        header = parse_header(message, max_size=max_size)
    parser = _PARSERS.get(header.op_code)
    if parser is None:
        raise WireError(f"unsupported opcode {header.op_code}", 12)
    if parser is parse_op_msg:
        return parse_op_msg(message, max_size=max_size, verify_checksum=verify_checksum)
    return parser(message, max_size=max_size)


# Fixed value sizes of BSON element types, for skipping elements without decoding them.
_FIXED_SIZES = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
_FIXED_SIZES.update({0xFF: 0, 0x7F: 0})


# Length-prefixed types: (bytes before the payload counted outside the prefix, smallest valid prefix).
_PREFIXED = {0x02: (4, 1), 0x0D: (4, 1), 0x0E: (4, 1), 0x03: (0, 5), 0x04: (0, 5), 0x0F: (0, 14)}
_PREFIXED.update({0x05: (5, 0), 0x0C: (16, 1)})


def skip_value(doc: bytes, type_byte: int, pos: int, end: int) -> int:
    """Return the offset just past a BSON value of ``type_byte`` starting at ``pos``."""
    if type_byte in _FIXED_SIZES:
        return pos + _FIXED_SIZES[type_byte]
    if type_byte in _PREFIXED:
        extra, smallest = _PREFIXED[type_byte]
        size = _int32(doc, pos, end, "a value length")
        if size < smallest:
            raise WireError(f"BSON value length {size} is invalid", pos)
        return pos + extra + size
    if type_byte == 0x0B:
        pos = read_cstring(doc, pos, end, "a regex pattern")[1]
        return read_cstring(doc, pos, end, "regex options")[1]
    raise WireError(f"unknown BSON element type {type_byte:#04x}", pos - 1)


def elements(data: bytes, start: int, end: int) -> Iterator[tuple[int, str, int, int]]:
    """Walk the top-level elements of the BSON document at ``start`` without decoding their values.

    Yields ``(type byte, name, value offset, value end)`` per element; ``end`` bounds the document's
    section. Lengths are checked, so a lie raises :class:`WireError` instead of reading past the end.
    """
    stop = _doc_span(data, start, end, "a BSON document") - 1
    pos = start + 4
    while pos < stop:
        type_byte = data[pos]
        name, value_at = read_cstring(data, pos + 1, stop, "an element name")
        pos = skip_value(data, type_byte, value_at, stop)
        if pos > stop:
            raise WireError("a BSON element runs past the end of its document", pos)
        yield type_byte, name, value_at, pos


def read_string(data: bytes, offset: int, end: int, what: str) -> str:
    """Read a BSON string value (int32 length, UTF-8 bytes, NUL) at ``offset``; bad UTF-8 is replaced."""
    size = _int32(data, offset, end, f"the length of {what}")
    if size < 1 or offset + 4 + size > end:
        raise WireError(f"the length of {what} is invalid", offset)
    return data[offset + 4 : offset + 3 + size].decode("utf-8", "replace")


def collection_name(command: str, body: Mapping[str, Any]) -> str:
    """The collection a decoded command names: its first value, or ``collection`` for ``getMore``; else ""."""
    value = body.get("collection") if command == "getMore" else body.get(command)
    return value if isinstance(value, str) else ""


def _scan_body(data: bytes, start: int, end: int) -> tuple[str, str, str, str, list[bytes], int]:
    """Walk every top-level element of the command document at ``start`` without decoding the values.

    Returns the command name, ``$db``, the collection (:func:`collection_name`'s rule), why the document reads
    two ways ("" when it does not: a field given twice, so a server reading the last value would read another
    message than a proxy reading the first), the field names, and the offset past the document. Names other
    than the first are compared as bytes: this runs for every message a relay forwards.
    """
    stop = _doc_span(data, start, end, "the command document") - 1
    pos, command, database, collection, wanted, names = start + 4, None, "", "", b"", []
    find, fixed_sizes, documents = data.find, _FIXED_SIZES, (0x03, 0x04)
    while pos < stop:
        type_byte = data[pos]
        nul = find(b"\x00", pos + 1, stop)
        if nul < 0:
            raise WireError("an element name is not NUL-terminated", pos + 1)
        name = data[pos + 1 : nul]
        names.append(name)
        if command is None:
            command = read_cstring(data, pos + 1, stop, "the command name")[0]
            wanted = b"collection" if command == "getMore" else name
        # The common value types inline (skip_value's rules): this loop runs for every relayed message.
        if type_byte in fixed_sizes:
            value_end = nul + 1 + fixed_sizes[type_byte]
        elif type_byte in documents and nul + 5 <= stop:
            value_end = nul + 1 + INT32.unpack_from(data, nul + 1)[0]
            if value_end < nul + 6:
                raise WireError("BSON value length is invalid", nul + 1)
        else:
            value_end = skip_value(data, type_byte, nul + 1, stop)
        if value_end > stop:
            raise WireError("a BSON element runs past the end of its document", value_end)
        if type_byte == 0x02:
            if name == wanted and not collection:
                collection = read_string(data, nul + 1, value_end, "the collection name")
            if name == b"$db" and not database:
                database = read_string(data, nul + 1, value_end, "the $db string")
        pos = value_end
    ambiguity = ""
    if len(set(names)) != len(names):
        twice = next(name for index, name in enumerate(names) if name in names[:index])
        what = "the command name" if twice == names[0] else "the field"
        ambiguity = f"{what} {twice.decode('utf-8', 'replace')!r} appears twice in the command document"
    return command or "", database, collection, ambiguity, names, stop + 1


def _scan_op_msg(message: bytes, end: int) -> tuple[str, str, str, str, tuple[str, ...], int]:
    """One pass over every section of an OP_MSG: (command, ``$db``, collection, ambiguity, the document
    sequences' identifiers, where the command document starts); see :meth:`Request.read`.

    The C scan (``_speedups``, when built) answers the ordinary messages; whatever is odd (a field given
    twice, a structural problem) it leaves to this function.
    """
    if _speedups is not None and (found := _speedups.scan_op_msg(message, end)) is not None:
        return found
    pos = HEADER_SIZE + 4
    if pos < end and message[pos] == 0:  # the usual layout: the body first, often alone
        command, database, collection, ambiguity, names, pos = _scan_body(message, pos + 1, end)
        if pos == end:
            return command, database, collection, ambiguity, (), HEADER_SIZE + 5
        body_at = HEADER_SIZE + 5
    else:
        names, body_at, ambiguity = None, 0, ""
    sequences = []
    while pos < end:
        kind = message[pos]
        if kind == 0:
            if names is not None:
                ambiguity = ambiguity or "the message has a second command document"
                pos = _doc_span(message, pos + 1, end, "a second command document")
                continue
            body_at = pos + 1
            command, database, collection, found, names, pos = _scan_body(message, pos + 1, end)
            ambiguity = ambiguity or found
            continue
        if kind != 1:
            raise WireError(f"OP_MSG has unknown section kind {kind}", pos)
        size = _int32(message, pos + 1, end, "a document sequence's size")
        if size < 5 or pos + 1 + size > end:
            raise WireError(f"document sequence declares size {size}", pos + 1)
        sequences.append(read_cstring(message, pos + 5, pos + 1 + size, "document sequence identifier")[0])
        pos += 1 + size
    if names is None:
        raise WireError("OP_MSG has no kind-0 body section", HEADER_SIZE + 4)
    for index, identifier in enumerate(sequences):
        if ambiguity:
            break
        if identifier.encode("utf-8") in names or identifier in sequences[:index]:
            ambiguity = f"the document sequence {identifier!r} repeats a field of the command"
    return command, database, collection, ambiguity, tuple(sequences), body_at


def _msg_flags_and_sections_end(message: bytes, header: Header) -> tuple[int, int]:
    """An OP_MSG's flag bits and where its sections end, without checking either (see :func:`parse_op_msg`)."""
    if header.length < HEADER_SIZE + 4:
        raise WireError("OP_MSG too short for its flag bits", HEADER_SIZE)
    flags = UINT32.unpack_from(message, HEADER_SIZE)[0]
    return flags, header.length - (4 if flags & CHECKSUM_PRESENT else 0)


@dataclass(slots=True, eq=False)
class Request:
    """A client's request as a proxy reads it, once, for every later step: policy, forwarding, logging.

    :meth:`read` costs what a peek costs: for OP_MSG it reads the flag bits and walks the body's element
    headers only (the command name, ``$db`` and the collection the command names, see
    :func:`collection_name`), without decoding BSON or verifying the checksum, so it takes microseconds even
    for a 16 MB insert; OP_QUERY, which only carries small handshake commands, is decoded at once. The whole
    message is decoded on first use of :attr:`message` or :attr:`body` and then kept. ``raw`` is the message
    as it arrived, for forwarding unchanged.

    OP_COMPRESSED and OP_REPLY are reported with their opcode and an empty command, not opened: a reader that
    accepts compression unwraps with :func:`decompress_message` first.

    The same pass notes what a server could read differently from the proxy (:attr:`ambiguity`): a field of
    the command document given twice (a second ``$db``, the command name repeated), a second command document,
    a document sequence named like a field of the command or like another sequence. It also lists the document
    sequences' identifiers (:attr:`sequences`). A policy that must look inside the command reads
    :meth:`checked_body` (and :meth:`sequence`), which refuse a field given twice at any depth.
    """

    raw: bytes
    op_code: int
    request_id: int
    flags: int = 0
    command: str = ""
    database: str = ""
    collection: str = ""
    _message: OpMsg | OpQuery | None = field(default=None, repr=False)
    ambiguity: str = ""
    sequences: tuple[str, ...] = ()
    _body_at: int = field(default=0, repr=False)
    _checked: dict | None = field(default=None, repr=False)

    @classmethod
    def read(cls, raw: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Request:
        """Read the header and the command of ``raw`` (a whole message); structural problems raise WireError."""
        if _speedups is not None and (found := _speedups.read_op_msg(raw, max_size)) is not None:
            return cls(raw, OP_MSG, *found[:5], None, *found[5:])  # an ordinary OP_MSG, read in C
        header = _whole_header(raw, None, max_size)
        if header.op_code == OP_MSG:
            flags, end = _msg_flags_and_sections_end(raw, header)
            command, database, collection, ambiguity, sequences, at = _scan_op_msg(raw, end)
            return cls(
                raw, OP_MSG, header.request_id, flags, command, database, collection, None, ambiguity, sequences, at
            )
        if header.op_code == OP_QUERY:
            query = parse_op_query(raw, max_size=max_size)
            command = dict(unwrap_query(query.query))
            name = _first_key(command)
            collection = collection_name(name, command)
            return cls(raw, OP_QUERY, header.request_id, query.flags, name, query.database, collection, query)
        if header.op_code in (OP_COMPRESSED, OP_REPLY):
            return cls(raw, header.op_code, header.request_id)
        raise WireError(f"unsupported opcode {header.op_code}", 12)

    @property
    def more_to_come(self) -> bool:
        """True for an OP_MSG whose sender waits for no reply."""
        return self.op_code == OP_MSG and bool(self.flags & MORE_TO_COME)

    @property
    def message(self) -> OpMsg | OpQuery:
        """The whole message, decoded (and its checksum verified) on first use."""
        if self._message is None:
            if self.op_code != OP_MSG:
                raise WireError(f"a request with opcode {self.op_code} carries no command", 12)
            self._message = parse_op_msg(self.raw, max_size=len(self.raw))
        return self._message

    @property
    def body(self) -> dict[str, Any]:
        """The command document: OP_MSG's body, or OP_QUERY's query without its ``$query`` envelope."""
        message = self.message
        if isinstance(message, OpQuery):
            return dict(unwrap_query(message.query))
        return message.body

    def checked_body(self) -> dict[str, Any]:
        """The command document decoded for a policy decision; a field given twice at any depth raises WireError.

        A server's parser may take the first of two equal names where ``bson`` keeps the last, so a policy must
        not decide on a document with one: the gateway refuses it instead. Decoded once, then kept; sequences are
        not decoded (see :meth:`sequence`).
        """
        if self._checked is None:
            if self.op_code != OP_MSG:
                return self.body
            stop = _doc_span(self.raw, self._body_at, len(self.raw), "the command document")
            self._checked = _decode_unique(self.raw[self._body_at : stop], "the command document")
        return self._checked

    def cursor_id(self) -> int | None:
        """``getMore``'s cursor id (the command's first value, an integer), read without decoding; else None."""
        if self.op_code != OP_MSG or not self._body_at:
            return None
        at = self._body_at + 4
        type_byte = self.raw[at]
        value_at = self.raw.find(b"\x00", at + 1) + 1
        if type_byte == 0x12 and value_at + 8 <= len(self.raw):
            return INT64.unpack_from(self.raw, value_at)[0]
        if type_byte == 0x10 and value_at + 4 <= len(self.raw):
            return INT32.unpack_from(self.raw, value_at)[0]
        return None

    def sequence(self, identifier: str) -> list[dict[str, Any]] | None:
        """The documents of the kind-1 section ``identifier`` (checked like :meth:`checked_body`), or None."""
        if identifier not in self.sequences:
            return None
        _flags, end = _msg_flags_and_sections_end(self.raw, _whole_header(self.raw, OP_MSG, len(self.raw)))
        pos = HEADER_SIZE + 4
        while pos < end:
            if self.raw[pos] == 0:
                pos = _doc_span(self.raw, pos + 1, end, "the command document")
                continue
            size = _int32(self.raw, pos + 1, end, "a document sequence's size")
            stop = pos + 1 + size
            name, at = read_cstring(self.raw, pos + 5, stop, "document sequence identifier")
            if name == identifier:
                docs, position = [], at
                while position < stop:
                    after = _doc_span(self.raw, position, stop, f"a document of sequence {identifier!r}")
                    docs.append(_decode_unique(self.raw[position:after], f"sequence {identifier!r}"))
                    position = after
                return docs
            pos = stop
        return None


class _UniqueKeys(dict):
    """A decoded document that refuses a field name it already holds (see :meth:`Request.checked_body`)."""

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            raise WireError(f"the field {key!r} appears twice in one document")
        super().__setitem__(key, value)


_UNIQUE_OPTIONS = CODEC_OPTIONS.with_options(document_class=_UniqueKeys)


def _decode_unique(data: bytes, what: str) -> dict[str, Any]:
    try:
        return bson.decode(data, codec_options=_UNIQUE_OPTIONS)
    except WireError:
        raise
    except Exception as exc:  # bson wraps our error or raises its own on odd input
        cause = exc.__cause__ if isinstance(exc.__cause__, WireError) else exc
        raise WireError(f"{what} cannot be read: {cause}") from exc


def peek_command(message: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> tuple[int, str, str]:
    """Return (opcode, command name, database) of a request cheaply (see :meth:`Request.read`).

    OP_COMPRESSED is decompressed first and reports the inner opcode; OP_REPLY gives empty name and
    database. Structural problems it meets still raise :class:`WireError`; full validation is
    :func:`parse_message`'s job.
    """
    header = _whole_header(message, None, max_size)
    if header.op_code == OP_COMPRESSED:
        message = decompress_message(message, max_size=max_size)
    request = Request.read(message, max_size=max_size)
    return request.op_code, request.command, request.database


#: What a reply is made for: a parsed request or a :class:`Request` (its opcode and requestID are used).
Answerable = OpMsg | OpQuery | Request


def error_reply(request: Answerable, *, code: int, errmsg: str, code_name: str = "", request_id: int = 0) -> bytes:
    """Build the error reply a MongoDB server would send to ``request``, in the request's opcode.

    OP_MSG gets ``{ok: 0, errmsg, code, codeName}``; OP_QUERY gets an OP_REPLY with the QueryFailure
    flag and ``{$err, code, ok: 0}``. ``responseTo`` is the request's requestID. Without ``code_name``
    the server's name for a common code is used (18 gives "AuthenticationFailed").
    """
    code_name = code_name or CODE_NAMES.get(code, "")
    if request.op_code == OP_QUERY:
        doc = {"$err": errmsg, "code": code, "ok": 0.0}
        if code_name:
            doc["codeName"] = code_name
        return build_op_reply(
            [doc], response_flags=QUERY_FAILURE, request_id=request_id, response_to=request.request_id
        )
    doc = {"ok": 0.0, "errmsg": errmsg, "code": code, "codeName": code_name}
    return build_op_msg(doc, request_id=request_id, response_to=request.request_id)


def reply_for(request: Answerable, document: Mapping[str, Any] | bytes, *, request_id: int = 0) -> bytes:
    """Build a success reply to ``request`` in its opcode: OP_MSG, or OP_REPLY with one document."""
    if request.op_code == OP_QUERY:
        return build_op_reply([document], request_id=request_id, response_to=request.request_id)
    return build_op_msg(document, request_id=request_id, response_to=request.request_id)
