"""Server-side cursors: results materialised once, handed out in batches by find/getMore.

mongod's rules kept here: the first batch defaults to 101 documents, every batch stops at
16 MiB, a cursor id of 0 means exhausted, and only the user who opened a cursor may read it.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

import bson

MAX_BATCH_BYTES = 16 * 1024 * 1024
DEFAULT_FIRST_BATCH = 101


@dataclass
class Cursor:
    """Remaining documents of one query."""

    cursor_id: int
    ns: str
    docs: list[dict]
    owners: frozenset[tuple[str, str]]
    connection_id: int
    position: int = 0
    single_batch: bool = False
    meta: dict = field(default_factory=dict)


class CursorStore:
    """All open cursors of the server, by id."""

    def __init__(self) -> None:
        self._cursors: dict[int, Cursor] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cursors)

    def open(
        self,
        ns: str,
        docs: list[dict],
        *,
        owners: frozenset[tuple[str, str]],
        connection_id: int,
        batch_size: int | None,
        single_batch: bool = False,
        field_name: str = "firstBatch",
    ) -> dict:
        """Register the results and return the ``cursor`` sub-document with the first batch."""
        cursor = Cursor(
            cursor_id=0,
            ns=ns,
            docs=docs,
            owners=owners,
            connection_id=connection_id,
            single_batch=single_batch,
        )
        batch = self._take(cursor, DEFAULT_FIRST_BATCH if batch_size is None else batch_size)
        if cursor.position < len(cursor.docs) and not single_batch:
            with self._lock:
                cursor.cursor_id = self._new_id()
                self._cursors[cursor.cursor_id] = cursor
        return {"id": bson.Int64(cursor.cursor_id), "ns": ns, field_name: batch}

    def _new_id(self) -> int:
        while True:
            cid = secrets.randbits(62) + 1
            if cid not in self._cursors:
                return cid

    @staticmethod
    def _take(cursor: Cursor, batch_size: int) -> list[dict]:
        limit = batch_size if batch_size > 0 else None
        batch: list[dict] = []
        size = 0
        while cursor.position < len(cursor.docs) and (limit is None or len(batch) < limit):
            doc = cursor.docs[cursor.position]
            doc_size = len(bson.encode(doc))
            if batch and size + doc_size > MAX_BATCH_BYTES:
                break
            batch.append(doc)
            size += doc_size
            cursor.position += 1
        return batch

    def get(self, cursor_id: int) -> Cursor | None:
        with self._lock:
            return self._cursors.get(cursor_id)

    def next_batch(self, cursor: Cursor, batch_size: int | None) -> dict:
        """The ``cursor`` sub-document of a getMore reply; closes the cursor when drained."""
        batch = self._take(cursor, batch_size or 0)
        cursor_id = cursor.cursor_id
        if cursor.position >= len(cursor.docs):
            self.kill(cursor_id)
            cursor_id = 0
        return {"id": bson.Int64(cursor_id), "ns": cursor.ns, "nextBatch": batch}

    def kill(self, cursor_id: int) -> bool:
        with self._lock:
            return self._cursors.pop(cursor_id, None) is not None
