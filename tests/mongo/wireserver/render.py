"""Render a command document the way mongod prints it in error messages: ``{ insert: "c", ... }``."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any

import bson

MAX_LENGTH = 1024
_REDACTED_COMMANDS = frozenset({"saslStart", "saslContinue", "createUser", "updateUser", "authenticate"})


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        return render(value, limit=None)
    if isinstance(value, list | tuple):
        return "[ " + ", ".join(_value(v) for v in value) + " ]" if value else "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bson.ObjectId):
        return f"ObjectId('{value}')"
    if isinstance(value, bson.Binary) and value.subtype == 4:
        return f'UUID("{uuid.UUID(bytes=bytes(value))}")'
    if isinstance(value, bytes | bson.Binary):
        return f"BinData({getattr(value, 'subtype', 0)}, ...)"
    if isinstance(value, datetime.datetime):
        return f"new Date({int(value.timestamp() * 1000)})"
    if isinstance(value, bson.Timestamp):
        return f"Timestamp({value.time}, {value.inc})"
    if value is None:
        return "null"
    return str(value)


def render(doc: Mapping[str, Any], *, limit: int | None = MAX_LENGTH) -> str:
    """One-line rendering; credentials-bearing commands show only their name, long output is cut."""
    if doc and next(iter(doc)) in _REDACTED_COMMANDS:
        return "{ " + next(iter(doc)) + ": ... }"
    if not doc:
        return "{}"
    text = "{ " + ", ".join(f"{k}: {_value(v)}" for k, v in doc.items()) + " }"
    if limit is not None and len(text) > limit:
        text = text[: limit - 4] + " ..."
    return text
