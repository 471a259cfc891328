"""Tests for gatewayproxy.wire.codec: round trips, known CRC-32C vectors, framing, and malformed input.

No Django: run with ``python -m pytest -p no:django tests/test_wire_codec.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import struct
import sys
import zlib

import bson
import pytest
from bson import Int64, ObjectId
from bson.datetime_ms import DatetimeMS
from bson.regex import Regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayproxy.wire import codec as wire
from gatewayproxy.wire.codec import (
    CHECKSUM_PRESENT,
    EXHAUST_ALLOWED,
    MORE_TO_COME,
    OP_COMPRESSED,
    OP_MSG,
    OP_QUERY,
    OP_REPLY,
    QUERY_FAILURE,
    Header,
    OpMsg,
    OpQuery,
    OpReply,
    WireError,
)

# WIRE_FUZZ_EXAMPLES=5000 runs the malformed-input properties harder than the default budget.
FUZZ = settings(
    max_examples=int(os.environ.get("WIRE_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COMPRESSORS = wire.available_compressors()

# --------------------------------------------------------------------------------------------------------
# Strategies.
# --------------------------------------------------------------------------------------------------------

keys = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.binary(max_size=20),
    st.builds(ObjectId, st.binary(min_size=12, max_size=12)),
    st.datetimes().map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
    st.integers(253_402_300_800_000, 2**62).map(DatetimeMS),  # beyond datetime's range: stays DatetimeMS
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=6)
int32s = st.integers(-(2**31), 2**31 - 1)
identifiers = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
sequences = st.lists(st.tuples(identifiers, st.lists(documents, max_size=3)), max_size=3)
optional_flags = st.sampled_from([0, MORE_TO_COME, EXHAUST_ALLOWED, EXHAUST_ALLOWED | 1 << 20])


@st.composite
def op_msgs(draw):
    """A valid OP_MSG as bytes."""
    body = draw(documents)
    return wire.build_op_msg(
        body,
        sequences=draw(sequences),
        flags=draw(optional_flags),
        request_id=draw(int32s),
        response_to=draw(int32s),
        checksum=draw(st.booleans()),
    )


@st.composite
def any_messages(draw):
    """A valid message of any supported kind, possibly compressed."""
    kind = draw(st.sampled_from(["msg", "query", "reply"]))
    if kind == "msg":
        message = draw(op_msgs())
    elif kind == "query":
        message = wire.build_op_query("admin.$cmd", draw(documents), request_id=draw(int32s))
    else:
        message = wire.build_op_reply(draw(st.lists(documents, max_size=3)), cursor_id=draw(st.integers(0, 99)))
    if draw(st.booleans()):
        message = wire.compress_message(message, draw(st.sampled_from(COMPRESSORS)))
    return message


def _parses_or_wire_error(message: bytes) -> None:
    for function in (wire.parse_message, wire.peek_command):
        with contextlib.suppress(WireError):
            function(message)


def _reference_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------------------------------------
# CRC-32C.
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_matches_known_vectors(data, expected):
    assert wire.crc32c(data) == expected


@FAST
@given(st.binary(max_size=100), st.integers(0, 100))
def test_crc32c_matches_bitwise_reference_and_continues(data, split):
    assert wire.crc32c(data) == _reference_crc32c(data)
    assert wire.crc32c(data[split:], wire.crc32c(data[:split])) == wire.crc32c(data)


# --------------------------------------------------------------------------------------------------------
# Round trips.
# --------------------------------------------------------------------------------------------------------


@FAST
@given(documents, sequences, optional_flags, int32s, int32s, st.booleans())
def test_op_msg_round_trips(body, seqs, flags, request_id, response_to, checksum):
    message = wire.build_op_msg(
        body, sequences=seqs, flags=flags, request_id=request_id, response_to=response_to, checksum=checksum
    )
    parsed = wire.parse_op_msg(message)
    expected_flags = flags | (CHECKSUM_PRESENT if checksum else 0)
    assert parsed == OpMsg(expected_flags, body, [(i, list(d)) for i, d in seqs], request_id, response_to)
    assert parsed.to_bytes() == message
    assert wire.parse_message(message) == parsed


@FAST
@given(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20))
def test_op_query_round_trips(name):
    query, selector = {"find": "x", "n": Int64(3)}, {"a": 1}
    message = wire.build_op_query(
        name,
        query,
        flags=4,
        number_to_skip=2,
        number_to_return=-1,
        return_fields_selector=selector,
        request_id=9,
    )
    parsed = wire.parse_op_query(message)
    assert parsed == OpQuery(4, name, 2, -1, query, selector, 9, 0)
    assert parsed.to_bytes() == message
    assert wire.parse_message(message) == parsed


@FAST
@given(documents)
def test_op_query_without_selector_round_trips(query):
    parsed = wire.parse_message(wire.build_op_query("db.coll", query, request_id=1))
    assert (parsed.query, parsed.return_fields_selector, parsed.database, parsed.collection) == (
        query,
        None,
        "db",
        "coll",
    )


@FAST
@given(st.lists(documents, max_size=4), st.integers(-(2**63), 2**63 - 1), int32s, int32s)
def test_op_reply_round_trips(docs, cursor_id, starting_from, response_to):
    message = wire.build_op_reply(
        docs, response_flags=8, cursor_id=cursor_id, starting_from=starting_from, response_to=response_to
    )
    parsed = wire.parse_op_reply(message)
    assert parsed == OpReply(8, cursor_id, starting_from, docs, 0, response_to)
    assert parsed.to_bytes() == message


@FAST
@given(any_messages())
def test_op_compressed_round_trips_with_every_available_compressor(message):
    original = wire.decompress_message(message) if wire.parse_header(message).op_code == OP_COMPRESSED else message
    for compressor in COMPRESSORS:
        compressed = wire.compress_message(original, compressor)
        assert wire.parse_header(compressed).op_code == OP_COMPRESSED
        assert wire.decompress_message(compressed) == original
        assert wire.parse_message(compressed) == wire.parse_message(original)


def test_every_compressor_is_available_in_this_environment():
    assert set(COMPRESSORS) == {"noop", "zlib", "snappy", "zstd"}


def test_reencoding_a_parsed_message_preserves_bytes_of_awkward_types():
    body = {
        "insert": "c",
        "small64": Int64(1),
        "when": datetime.datetime(2020, 1, 2, 3, 4, 5, 6000),
        "far": DatetimeMS(2**62),
        "re": Regex("^a", "im"),
        "bin": bson.Binary(b"\x00\x01", 4),
        "ts": bson.Timestamp(5, 6),
        "dec": bson.Decimal128("1.10"),
        "neg0": -0.0,
        "$db": "test",
    }
    message = wire.build_op_msg(body, sequences=[("documents", [{"_id": ObjectId()}])])
    assert wire.parse_op_msg(message).to_bytes() == message


def test_build_accepts_already_encoded_documents():
    raw = bson.encode({"ping": 1, "$db": "admin"})
    assert wire.build_op_msg(raw) == wire.build_op_msg({"ping": 1, "$db": "admin"})
    assert wire.parse_op_reply(wire.build_op_reply([raw])).documents == [{"ping": 1, "$db": "admin"}]


def test_checksum_flag_follows_the_checksum_argument():
    message = wire.build_op_msg({"ping": 1}, flags=CHECKSUM_PRESENT, checksum=False)
    assert not wire.parse_op_msg(message).checksum_present
    assert len(message) == 16 + 4 + 1 + len(bson.encode({"ping": 1}))
    with_sum = wire.build_op_msg({"ping": 1}, checksum=True)
    assert wire.parse_op_msg(with_sum).checksum_present
    assert struct.unpack("<I", with_sum[-4:])[0] == wire.crc32c(with_sum[:-4])


def test_op_msg_helpers():
    msg = wire.parse_op_msg(
        wire.build_op_msg({"find": "c", "$db": "shop"}, flags=MORE_TO_COME | EXHAUST_ALLOWED, request_id=3)
    )
    assert (msg.command_name, msg.database, msg.more_to_come, msg.exhaust_allowed, msg.checksum_present) == (
        "find",
        "shop",
        True,
        True,
        False,
    )
    assert msg.request_id == 3


def test_sequences_may_come_before_and_after_the_body():
    body = bson.encode({"insert": "c", "$db": "d"})
    seq = wire.build_op_msg(b"\x05\x00\x00\x00\x00", sequences=[("documents", [{"a": 1}])])[16 + 4 + 1 + 5 :]
    payload = struct.pack("<I", 0) + seq + b"\x00" + body + seq
    message = struct.pack("<iiii", 16 + len(payload), 1, 0, OP_MSG) + payload
    parsed = wire.parse_op_msg(message)
    assert parsed.body == {"insert": "c", "$db": "d"}
    assert parsed.sequences == [("documents", [{"a": 1}]), ("documents", [{"a": 1}])]
    assert wire.peek_command(message) == (OP_MSG, "insert", "d")


# --------------------------------------------------------------------------------------------------------
# Header and OP_MSG edge cases.
# --------------------------------------------------------------------------------------------------------


def _msg(payload: bytes, *, length: int | None = None, op_code: int = OP_MSG) -> bytes:
    return struct.pack("<iiii", 16 + len(payload) if length is None else length, 1, 0, op_code) + payload


PING = bson.encode({"ping": 1, "$db": "admin"})


def test_parse_header_reads_the_four_fields():
    assert wire.parse_header(struct.pack("<iiii", 21, 7, -3, OP_MSG) + b"x" * 5) == Header(21, 7, -3, OP_MSG)


@pytest.mark.parametrize("length", [-1, 0, 15])
def test_length_below_header_size_is_rejected(length):
    with pytest.raises(WireError, match="less than 16") as info:
        wire.parse_header(struct.pack("<iiii", length, 0, 0, OP_MSG))
    assert info.value.offset == 0


def test_length_above_max_size_is_rejected():
    with pytest.raises(WireError, match="exceeds the limit of 1000"):
        wire.parse_header(struct.pack("<iiii", 1001, 0, 0, OP_MSG), max_size=1000)
    message = wire.build_op_msg({"x": "y" * 2000})
    with pytest.raises(WireError, match="exceeds"):
        wire.parse_message(message, max_size=1000)


def test_short_header_is_rejected():
    with pytest.raises(WireError, match="header needs 16 bytes, got 3"):
        wire.parse_header(b"abc")


def test_declared_length_must_match_the_bytes_given():
    message = wire.build_op_msg({"ping": 1})
    with pytest.raises(WireError, match="declared message length"):
        wire.parse_message(message + b"\x00")


def test_checksum_mismatch_is_rejected():
    message = bytearray(wire.build_op_msg({"ping": 1}, checksum=True))
    message[-6] ^= 0x01
    with pytest.raises(WireError, match="checksum mismatch") as info:
        wire.parse_op_msg(bytes(message))
    assert info.value.offset == len(message) - 4


def test_checksum_verification_can_be_skipped_by_a_relay():
    message = bytearray(wire.build_op_msg({"ping": 1}, checksum=True))
    message[-1] ^= 0xFF
    assert wire.parse_message(bytes(message), verify_checksum=False).body == {"ping": 1}
    assert wire.parse_op_msg(bytes(message), verify_checksum=False).checksum_present


def test_two_body_sections_are_rejected():
    with pytest.raises(WireError, match="second kind-0") as info:
        wire.parse_op_msg(_msg(b"\x00\x00\x00\x00" + b"\x00" + PING + b"\x00" + PING))
    assert info.value.offset == 20 + 1 + len(PING)


def test_missing_body_section_is_rejected():
    with pytest.raises(WireError, match="no kind-0"):
        wire.parse_op_msg(_msg(b"\x00\x00\x00\x00"))
    seq_only = b"\x01" + struct.pack("<i", 6) + b"d\x00"
    with pytest.raises(WireError, match="no kind-0"):
        wire.parse_op_msg(_msg(b"\x00\x00\x00\x00" + seq_only))


def test_unknown_section_kind_is_rejected():
    with pytest.raises(WireError, match="unknown section kind 2") as info:
        wire.parse_op_msg(_msg(b"\x00\x00\x00\x00" + b"\x00" + PING + b"\x02" + PING))
    assert info.value.offset == 21 + len(PING)


@pytest.mark.parametrize("bit", range(2, 16))
def test_unknown_required_flag_bits_are_rejected(bit):
    with pytest.raises(WireError, match="unknown required flag bits") as info:
        wire.parse_op_msg(_msg(struct.pack("<I", 1 << bit) + b"\x00" + PING))
    assert info.value.offset == 16


@pytest.mark.parametrize("bit", range(16, 32))
def test_unknown_optional_flag_bits_are_accepted(bit):
    assert wire.parse_op_msg(_msg(struct.pack("<I", 1 << bit) + b"\x00" + PING)).flags == 1 << bit


def test_sequence_running_past_the_end_is_rejected():
    seq = b"\x01" + struct.pack("<i", 500) + b"documents\x00" + PING
    with pytest.raises(WireError, match="document sequence declares size 500"):
        wire.parse_op_msg(_msg(b"\x00\x00\x00\x00" + b"\x00" + PING + seq))


def test_sequence_identifier_must_be_terminated():
    seq = b"\x01" + struct.pack("<i", 9) + b"docs\x01"
    with pytest.raises(WireError, match="identifier is not NUL-terminated"):
        wire.parse_op_msg(_msg(b"\x00\x00\x00\x00" + b"\x00" + PING + seq))


@pytest.mark.parametrize("lie", [4, len(PING) - 1, len(PING) + 1, 10_000, -5])
def test_bson_length_lies_are_rejected(lie):
    doc = struct.pack("<i", lie) + PING[4:]
    with pytest.raises(WireError, match="body"):
        wire.parse_op_msg(_msg(b"\x00\x00\x00\x00" + b"\x00" + doc))


def test_invalid_bson_inside_a_well_framed_document_is_a_wire_error():
    bad = bytearray(PING)
    bad[4] = 0x42  # an element type that does not exist
    with pytest.raises(WireError, match="not valid BSON") as info:
        wire.parse_op_msg(_msg(b"\x00\x00\x00\x00" + b"\x00" + bytes(bad)))
    assert info.value.offset == 21


def test_wrong_opcode_for_specific_parser_is_rejected():
    with pytest.raises(WireError, match="expected opcode 2013, got 1"):
        wire.parse_op_msg(wire.build_op_reply([]))


def test_unknown_opcode_is_rejected():
    with pytest.raises(WireError, match="unsupported opcode 2010"):
        wire.parse_message(_msg(b"\x00" * 8, op_code=2010))
    with pytest.raises(WireError, match="unsupported opcode 2010"):
        wire.peek_command(_msg(b"\x00" * 8, op_code=2010))


def test_op_reply_count_must_match_documents():
    message = bytearray(wire.build_op_reply([{"a": 1}]))
    message[32:36] = struct.pack("<i", 2)
    with pytest.raises(WireError, match="numberReturned is 2 but 1 documents follow"):
        wire.parse_op_reply(bytes(message))


def test_op_query_trailing_bytes_are_rejected():
    message = wire.build_op_query("a.b", {"q": 1}, return_fields_selector={"x": 1})
    message = struct.pack("<i", len(message) + 1) + message[4:] + b"\x00"
    with pytest.raises(WireError):
        wire.parse_op_query(message)


def test_build_errors_are_wire_errors():
    with pytest.raises(WireError, match="cannot encode the OP_MSG body"):
        wire.build_op_msg({"x": object()})
    with pytest.raises(WireError, match="NUL"):
        wire.build_op_msg({}, sequences=[("a\x00b", [])])
    with pytest.raises(WireError, match="out of range"):
        wire.build_op_msg({}, request_id=2**31)


# --------------------------------------------------------------------------------------------------------
# OP_COMPRESSED edge cases.
# --------------------------------------------------------------------------------------------------------


def _compressed(original_op: int, size: int, compressor_id: int, data: bytes) -> bytes:
    return _msg(struct.pack("<iiB", original_op, size, compressor_id) + data, op_code=OP_COMPRESSED)


def test_decompression_bomb_stops_at_the_declared_size():
    bomb = zlib.compress(b"\x00" * 10_000_000)
    with pytest.raises(WireError, match="uncompressedSize is 100 but zlib data gives 101"):
        wire.decompress_message(_compressed(OP_MSG, 100, 2, bomb))


def test_uncompressed_size_above_limit_is_rejected():
    with pytest.raises(WireError, match="uncompressedSize"):
        wire.decompress_message(_compressed(OP_MSG, 2**31 - 1, 2, b""))


def test_unknown_compressor_id_is_rejected():
    with pytest.raises(WireError, match="unknown compressor id 9") as info:
        wire.decompress_message(_compressed(OP_MSG, 1, 9, b"x"))
    assert info.value.offset == 24


def test_corrupt_compressed_data_is_a_wire_error():
    for compressor_id in (1, 2, 3):
        with pytest.raises(WireError):
            wire.decompress_message(_compressed(OP_MSG, 10, compressor_id, b"\x0agarbage!!"))


def test_nested_op_compressed_is_rejected():
    with pytest.raises(WireError, match="wraps another"):
        wire.decompress_message(_compressed(OP_COMPRESSED, 0, 0, b""))
    with pytest.raises(WireError, match="already"):
        wire.compress_message(wire.compress_message(wire.build_op_msg({}), "noop"), "zlib")


def test_unknown_compressor_name_is_rejected():
    with pytest.raises(WireError, match="unknown compressor 'lz4'"):
        wire.compress_message(wire.build_op_msg({}), "lz4")


@pytest.mark.parametrize(
    ("name", "module", "package"), [("snappy", "snappy", "python-snappy"), ("zstd", "zstandard", "zstandard")]
)
def test_missing_compression_library_names_the_package(monkeypatch, name, module, package):
    message = wire.compress_message(wire.build_op_msg({"ping": 1}), name)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(WireError, match=package):
        wire.compress_message(wire.build_op_msg({"ping": 1}), name)
    with pytest.raises(WireError, match=package):
        wire.decompress_message(message)
    assert name not in wire.available_compressors()


# --------------------------------------------------------------------------------------------------------
# Malformed input only ever raises WireError.
# --------------------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_wire_error(data):
    _parses_or_wire_error(data)


@FUZZ
@given(st.sampled_from([OP_MSG, OP_QUERY, OP_REPLY, OP_COMPRESSED]), st.binary(max_size=80))
def test_random_bodies_behind_a_valid_header_only_raise_wire_error(op_code, body):
    _parses_or_wire_error(_msg(body, op_code=op_code))


@FUZZ
@given(any_messages(), st.data())
def test_mutated_messages_only_raise_wire_error(message, data):
    mutation = data.draw(st.sampled_from(["flip", "truncate", "length", "byte"]))
    mutated = bytearray(message)
    if mutation == "flip":
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] ^= 1 << data.draw(st.integers(0, 7))
    elif mutation == "byte":
        index = data.draw(st.integers(16, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    elif mutation == "truncate":
        mutated = mutated[: data.draw(st.integers(0, len(mutated) - 1))]
    else:
        mutated[0:4] = struct.pack("<i", data.draw(st.integers(-(2**31), 2**31 - 1)))
    _parses_or_wire_error(bytes(mutated))


@FAST
@given(any_messages(), st.data())
def test_inner_length_lies_only_raise_wire_error(message, data):
    """Overwrite an aligned int32 somewhere past the header (a section, document or sequence length)."""
    mutated = bytearray(message)
    index = data.draw(st.integers(16, max(16, len(mutated) - 4)))
    mutated[index : index + 4] = struct.pack("<i", data.draw(st.integers(-(2**31), 2**31 - 1)))
    _parses_or_wire_error(bytes(mutated[: len(message)]))


# --------------------------------------------------------------------------------------------------------
# peek_command.
# --------------------------------------------------------------------------------------------------------


def test_peek_reads_command_and_db_without_decoding():
    body = {"insert": "c", "ordered": True, "lsid": {"id": bson.Binary(b"\x00" * 16, 4)}, "$db": "shop"}
    message = wire.build_op_msg(body, sequences=[("documents", [{"a": 1}] * 3)], checksum=True)
    assert wire.peek_command(message) == (OP_MSG, "insert", "shop")
    assert wire.peek_command(wire.compress_message(message, "zlib")) == (OP_MSG, "insert", "shop")


@FAST
@given(documents, st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=10))
def test_peek_agrees_with_full_parse(body, database):
    body = {**body, "$db": database}
    message = wire.build_op_msg(body)
    parsed = wire.parse_op_msg(message)
    assert wire.peek_command(message) == (OP_MSG, parsed.command_name, parsed.database)


def test_peek_on_legacy_messages():
    query = wire.build_op_query("admin.$cmd", {"$query": {"isMaster": 1}, "$readPreference": {"mode": "primary"}})
    assert wire.peek_command(query) == (OP_QUERY, "isMaster", "admin")
    assert wire.peek_command(wire.build_op_reply([{"ok": 1}])) == (OP_REPLY, "", "")


def test_peek_without_db_gives_empty_database():
    assert wire.peek_command(wire.build_op_msg({"ping": 1})) == (OP_MSG, "ping", "")


# --------------------------------------------------------------------------------------------------------
# Request: read once, decoded on demand.
# --------------------------------------------------------------------------------------------------------


@FAST
@given(documents, st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=10))
def test_request_read_agrees_with_full_parse(body, database):
    message = wire.build_op_msg({**body, "$db": database}, request_id=9)
    parsed = wire.parse_op_msg(message)
    request = wire.Request.read(message)
    assert (request.op_code, request.request_id, request.command, request.database) == (
        OP_MSG,
        9,
        parsed.command_name,
        parsed.database,
    )
    assert request.collection == wire.collection_name(parsed.command_name, parsed.body)
    assert request.body == parsed.body


def test_request_names_the_collection_of_crud_commands_and_get_more():
    find = wire.Request.read(wire.build_op_msg({"find": "orders", "filter": {}, "$db": "shop"}))
    assert (find.command, find.database, find.collection) == ("find", "shop", "orders")
    more = wire.Request.read(wire.build_op_msg({"getMore": Int64(5), "$db": "shop", "collection": "orders"}))
    assert (more.command, more.database, more.collection) == ("getMore", "shop", "orders")
    listing = wire.Request.read(wire.build_op_msg({"listCollections": 1, "$db": "shop"}))
    assert (listing.command, listing.collection) == ("listCollections", "")


def test_request_body_is_decoded_on_first_use_and_kept():
    request = wire.Request.read(wire.build_op_msg({"insert": "c", "$db": "d"}, sequences=[("documents", [{"a": 1}])]))
    assert request._message is None
    assert request.message.sequences == [("documents", [{"a": 1}])]
    assert request.message is request.message
    assert request.body == {"insert": "c", "$db": "d"}


def test_request_flags_and_legacy_opcodes():
    quiet = wire.Request.read(wire.build_op_msg({"insert": "c", "$db": "d"}, flags=MORE_TO_COME))
    assert quiet.more_to_come and not wire.Request.read(wire.build_op_msg({"ping": 1})).more_to_come
    query = wire.build_op_query("admin.$cmd", {"$query": {"isMaster": 1}}, request_id=4)
    legacy = wire.Request.read(query)
    assert (legacy.op_code, legacy.request_id, legacy.command, legacy.database) == (OP_QUERY, 4, "isMaster", "admin")
    assert legacy.body == {"isMaster": 1} and not legacy.more_to_come
    compressed = wire.Request.read(wire.compress_message(wire.build_op_msg({"ping": 1}), "zlib"))
    assert (compressed.op_code, compressed.command) == (OP_COMPRESSED, "")
    reply = wire.Request.read(wire.build_op_reply([{"ok": 1}]))
    assert (reply.op_code, reply.command) == (OP_REPLY, "")
    with pytest.raises(WireError):
        _ = reply.body


def test_replies_to_a_request_use_its_opcode_and_request_id():
    msg = wire.Request.read(wire.build_op_msg({"ping": 1}, request_id=31))
    query = wire.Request.read(wire.build_op_query("admin.$cmd", {"isMaster": 1}, request_id=32))
    assert wire.parse_message(wire.reply_for(msg, {"ok": 1.0})).response_to == 31
    failure = wire.parse_message(wire.error_reply(query, code=13, errmsg="no"))
    assert isinstance(failure, OpReply) and failure.response_to == 32 and failure.response_flags & QUERY_FAILURE


# --------------------------------------------------------------------------------------------------------
# Replies made by the proxy.
# --------------------------------------------------------------------------------------------------------


def test_error_reply_to_op_msg_is_op_msg_responding_to_the_request():
    request = wire.parse_op_msg(wire.build_op_msg({"find": "c", "$db": "d"}, request_id=41))
    reply = wire.parse_message(
        wire.error_reply(request, code=13, errmsg="not authorized", code_name="Unauthorized", request_id=7)
    )
    assert isinstance(reply, OpMsg)
    assert (reply.request_id, reply.response_to) == (7, 41)
    assert reply.body == {"ok": 0.0, "errmsg": "not authorized", "code": 13, "codeName": "Unauthorized"}


def test_error_reply_to_op_query_is_op_reply_with_query_failure():
    request = wire.parse_op_query(wire.build_op_query("admin.$cmd", {"isMaster": 1}, request_id=5))
    reply = wire.parse_message(wire.error_reply(request, code=18, errmsg="Authentication failed."))
    assert isinstance(reply, OpReply)
    assert reply.response_flags & QUERY_FAILURE
    assert reply.response_to == 5
    assert reply.documents == [
        {"$err": "Authentication failed.", "code": 18, "ok": 0.0, "codeName": "AuthenticationFailed"}
    ]


def test_reply_for_uses_the_request_opcode():
    msg_request = wire.parse_op_msg(wire.build_op_msg({"hello": 1, "$db": "admin"}, request_id=2))
    query_request = wire.parse_op_query(wire.build_op_query("admin.$cmd", {"isMaster": 1}, request_id=3))
    msg_reply = wire.parse_message(wire.reply_for(msg_request, {"ok": 1.0}, request_id=10))
    query_reply = wire.parse_message(wire.reply_for(query_request, {"ok": 1.0}))
    assert isinstance(msg_reply, OpMsg) and msg_reply.body == {"ok": 1.0} and msg_reply.response_to == 2
    assert isinstance(query_reply, OpReply) and query_reply.documents == [{"ok": 1.0}]
    assert query_reply.response_flags == 0 and query_reply.response_to == 3


# --------------------------------------------------------------------------------------------------------
# read_message.
# --------------------------------------------------------------------------------------------------------


async def _read(data: bytes, *, eof: bool = True, count: int = 1, **kwargs) -> list[bytes]:
    """Feed ``data`` to a fresh StreamReader and read ``count`` messages from it."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return [await wire.read_message(reader, **kwargs) for _ in range(count)]


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=2))


def test_read_message_reads_exactly_one_message():
    first, second = wire.build_op_msg({"a": 1}), wire.build_op_msg({"b": 2})
    assert _run(_read(first + second, count=2)) == [first, second]


def test_read_message_clean_eof_raises_eof_error():
    with pytest.raises(EOFError):
        _run(_read(b""))


@pytest.mark.parametrize("cut", [1, 15, 16, 20])
def test_read_message_truncated_raises_wire_error(cut):
    message = wire.build_op_msg({"ping": 1})
    with pytest.raises(WireError, match="connection closed"):
        _run(_read(message[:cut]))


def test_read_message_checks_length_before_reading_the_body():
    # No EOF and no body: a reader that waited for the body would time out instead.
    header = struct.pack("<iiii", 50_000_000, 1, 0, OP_MSG)
    with pytest.raises(WireError, match="exceeds the limit"):
        _run(_read(header, eof=False))
    with pytest.raises(WireError, match="exceeds the limit of 100"):
        _run(_read(wire.build_op_msg({"x": "y" * 100}), eof=False, max_size=100))
