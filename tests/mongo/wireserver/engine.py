"""Data commands (CRUD, cursors, collections, databases, indexes) over an in-memory mongomock.

mongomock does the query and update work; this module only translates wire commands into its
calls and its results and exceptions into mongod's reply shapes: ``{n, writeErrors}`` for writes
(duplicate keys as code 11000, ordered writes stopping at the first error), cursors for find,
aggregate, listCollections and listIndexes, and the ``NamespaceNotFound``/``BadValue`` codes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bson
import mongomock
import pymongo.errors
from mongomock.filtering import filter_applies

from .cursors import CursorStore
from .errors import CommandError, bad_value, type_mismatch


@dataclass(frozen=True)
class Caller:
    """Who runs a command: used for cursor ownership and filtered listings."""

    connection_id: int
    users: frozenset[tuple[str, str]]
    readable_dbs: frozenset[str] | None = None  # None: every database
    visible_collection: Callable[[str], bool] | None = None  # listCollections filter; None: every collection


def _collection_name(cmd: Mapping, name: str) -> str:
    value = cmd.get(name)
    if not isinstance(value, str):
        raise CommandError(73, f"collection name has invalid type {type(value).__name__}")
    if not value or "$" in value or "\0" in value:
        raise CommandError(73, f"Invalid namespace specified '{value}'")
    return value


def _sort_spec(sort: Any) -> list[tuple[str, Any]] | None:
    if sort is None or sort == {}:
        return None
    if not isinstance(sort, Mapping):
        raise type_mismatch("Expected field sortto be of type object")
    return list(sort.items())


def _int(cmd: Mapping, name: str, default: int | None = None) -> int | None:
    value = cmd.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise type_mismatch(f"Field '{name}' should be a number")
    return int(value)


def _write_error(index: int, exc: Exception) -> dict:
    if isinstance(exc, pymongo.errors.DuplicateKeyError):
        return {"index": index, "code": 11000, "errmsg": f"E11000 duplicate key error: {exc}"}
    if isinstance(exc, CommandError):
        return {"index": index, "code": exc.code, "errmsg": exc.errmsg}
    code = getattr(exc, "code", None) or 2
    return {"index": index, "code": int(code), "errmsg": str(exc)}


def _is_operator_update(update: Any) -> bool:
    return isinstance(update, Mapping) and bool(update) and all(k.startswith("$") for k in update)


class Engine:
    """All databases of one server, with its cursors."""

    def __init__(self) -> None:
        self.client = mongomock.MongoClient()
        self.cursors = CursorStore()
        self.handlers: dict[str, Callable[[str, dict, Caller], dict]] = {
            "insert": self.insert,
            "find": self.find,
            "getMore": self.get_more,
            "killCursors": self.kill_cursors,
            "update": self.update,
            "delete": self.delete,
            "findAndModify": self.find_and_modify,
            "count": self.count,
            "distinct": self.distinct,
            "aggregate": self.aggregate,
            "create": self.create,
            "drop": self.drop,
            "dropDatabase": self.drop_database,
            "listDatabases": self.list_databases,
            "listCollections": self.list_collections,
            "listIndexes": self.list_indexes,
            "createIndexes": self.create_indexes,
            "dropIndexes": self.drop_indexes,
            "dbStats": self.db_stats,
        }

    def _coll(self, db: str, name: str):
        return self.client[db][name]

    def _exists(self, db: str, name: str) -> bool:
        return name in self.client[db].list_collection_names()

    # -- writes ------------------------------------------------------------------------------
    def insert(self, db: str, cmd: dict, caller: Caller) -> dict:
        coll = self._coll(db, _collection_name(cmd, "insert"))
        docs = cmd.get("documents")
        if not isinstance(docs, list):
            raise type_mismatch("BSON field 'insert.documents' is missing but a required field")
        ordered = cmd.get("ordered", True)
        n, errors = 0, []
        for index, doc in enumerate(docs):
            if not isinstance(doc, Mapping):
                errors.append({"index": index, "code": 14, "errmsg": "document must be an object"})
            else:
                try:
                    coll.insert_one(dict(doc))
                    n += 1
                    continue
                except Exception as exc:  # mongomock reports bad documents in many ways
                    errors.append(_write_error(index, exc))
            if ordered:
                break
        return self._write_reply(n, errors)

    @staticmethod
    def _write_reply(n: int, errors: list[dict], **extra: Any) -> dict:
        reply: dict[str, Any] = {"n": n, **extra}
        if errors:
            reply["writeErrors"] = errors
        reply["ok"] = 1.0
        return reply

    def update(self, db: str, cmd: dict, caller: Caller) -> dict:
        coll = self._coll(db, _collection_name(cmd, "update"))
        specs = cmd.get("updates")
        if not isinstance(specs, list):
            raise type_mismatch("BSON field 'update.updates' is missing but a required field")
        ordered = cmd.get("ordered", True)
        n = modified = 0
        errors: list[dict] = []
        upserted: list[dict] = []
        for index, spec in enumerate(specs):
            try:
                result = self._update_one_spec(coll, spec)
            except Exception as exc:
                errors.append(_write_error(index, exc))
                if ordered:
                    break
                continue
            n += result.matched_count
            modified += result.modified_count
            if result.upserted_id is not None:
                n += 1
                upserted.append({"index": index, "_id": result.upserted_id})
        extra: dict[str, Any] = {"nModified": modified}
        if upserted:
            extra["upserted"] = upserted
        return self._write_reply(n, errors, **extra)

    @staticmethod
    def _update_one_spec(coll, spec: Any):
        if not isinstance(spec, Mapping) or "q" not in spec or "u" not in spec:
            raise CommandError(9, "update statement must have 'q' and 'u'", "FailedToParse")
        query, update = spec["q"], spec["u"]
        upsert = bool(spec.get("upsert", False))
        multi = bool(spec.get("multi", False))
        kwargs = {}
        if spec.get("arrayFilters") is not None:
            kwargs["array_filters"] = spec["arrayFilters"]
        if isinstance(update, list) or _is_operator_update(update):
            method = coll.update_many if multi else coll.update_one
            return method(query, update, upsert=upsert, **kwargs)
        if not isinstance(update, Mapping):
            raise type_mismatch("Update argument must be either an object or an array")
        if multi:
            raise CommandError(9, "multi update is not supported for replacement-style update", "FailedToParse")
        return coll.replace_one(query, update, upsert=upsert)

    def delete(self, db: str, cmd: dict, caller: Caller) -> dict:
        coll = self._coll(db, _collection_name(cmd, "delete"))
        specs = cmd.get("deletes")
        if not isinstance(specs, list):
            raise type_mismatch("BSON field 'delete.deletes' is missing but a required field")
        ordered = cmd.get("ordered", True)
        n, errors = 0, []
        for index, spec in enumerate(specs):
            try:
                if not isinstance(spec, Mapping) or "q" not in spec or "limit" not in spec:
                    raise CommandError(9, "delete statement must have 'q' and 'limit'", "FailedToParse")
                method = coll.delete_one if spec["limit"] == 1 else coll.delete_many
                n += method(spec["q"]).deleted_count
            except Exception as exc:
                errors.append(_write_error(index, exc))
                if ordered:
                    break
        return self._write_reply(n, errors)

    def find_and_modify(self, db: str, cmd: dict, caller: Caller) -> dict:
        coll = self._coll(db, _collection_name(cmd, "findAndModify"))
        query = cmd.get("query") or {}
        sort = _sort_spec(cmd.get("sort"))
        projection = cmd.get("fields")
        before = coll.find_one(query, sort=sort)
        if cmd.get("remove"):
            if before is not None:
                coll.delete_one({"_id": before["_id"]})
            return {"lastErrorObject": {"n": int(before is not None)}, "value": before, "ok": 1.0}
        update = cmd.get("update")
        if update is None:
            raise bad_value("Either an update or remove=true must be specified")
        return_new = bool(cmd.get("new", False))
        upsert = bool(cmd.get("upsert", False))
        doc_return = pymongo.ReturnDocument.AFTER if return_new else pymongo.ReturnDocument.BEFORE
        if isinstance(update, list) or _is_operator_update(update):
            value = coll.find_one_and_update(
                query, update, projection=projection, sort=sort, upsert=upsert, return_document=doc_return
            )
        else:
            value = coll.find_one_and_replace(
                query, update, projection=projection, sort=sort, upsert=upsert, return_document=doc_return
            )
        last_error: dict[str, Any] = {
            "n": 1 if (before is not None or upsert) else 0,
            "updatedExisting": before is not None,
        }
        if before is None and upsert:
            upserted = coll.find_one(query, sort=sort)
            if upserted is not None:
                last_error["upserted"] = upserted["_id"]
        return {"lastErrorObject": last_error, "value": value, "ok": 1.0}

    # -- reads -------------------------------------------------------------------------------
    def find(self, db: str, cmd: dict, caller: Caller) -> dict:
        name = _collection_name(cmd, "find")
        filter_ = cmd.get("filter") or {}
        if not isinstance(filter_, Mapping):
            raise type_mismatch("BSON field 'find.filter' is the wrong type, expected type 'object'")
        cursor = self._coll(db, name).find(filter_, cmd.get("projection") or None)
        sort = _sort_spec(cmd.get("sort"))
        if sort:
            cursor = cursor.sort(sort)
        skip = _int(cmd, "skip", 0) or 0
        limit = _int(cmd, "limit", 0) or 0
        if skip < 0 or limit < 0:
            raise bad_value("skip and limit must be non-negative")
        docs = list(cursor)[skip:]
        if limit:
            docs = docs[:limit]
        batch_size = _int(cmd, "batchSize")
        return {
            "cursor": self.cursors.open(
                f"{db}.{name}",
                docs,
                owners=caller.users,
                connection_id=caller.connection_id,
                batch_size=batch_size,
                single_batch=bool(cmd.get("singleBatch")),
            ),
            "ok": 1.0,
        }

    def get_more(self, db: str, cmd: dict, caller: Caller) -> dict:
        cursor_id = cmd.get("getMore")
        if isinstance(cursor_id, bool) or not isinstance(cursor_id, int):
            raise type_mismatch("BSON field 'getMore.getMore' is the wrong type, expected type 'long'")
        cursor = self.cursors.get(int(cursor_id))
        if cursor is None:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        if not cursor.owners & caller.users and cursor.owners:
            raise CommandError(13, f"cursor id {cursor_id} was not created by the authenticated user")
        return {"cursor": self.cursors.next_batch(cursor, _int(cmd, "batchSize")), "ok": 1.0}

    def kill_cursors(self, db: str, cmd: dict, caller: Caller) -> dict:
        ids = cmd.get("cursors")
        if not isinstance(ids, list):
            raise type_mismatch("BSON field 'killCursors.cursors' is missing but a required field")
        if not all(isinstance(cid, int) and not isinstance(cid, bool) for cid in ids):
            raise type_mismatch("BSON field 'killCursors.cursors' must hold cursor ids (long)")
        killed, missing = [], []
        for cid in ids:
            (killed if self.cursors.kill(int(cid)) else missing).append(bson.Int64(cid))
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": missing,
            "cursorsAlive": [],
            "cursorsUnknown": [],
            "ok": 1.0,
        }

    def count(self, db: str, cmd: dict, caller: Caller) -> dict:
        coll = self._coll(db, _collection_name(cmd, "count"))
        kwargs = {}
        if _int(cmd, "skip"):
            kwargs["skip"] = _int(cmd, "skip")
        if _int(cmd, "limit"):
            kwargs["limit"] = abs(_int(cmd, "limit") or 0)
        return {"n": coll.count_documents(cmd.get("query") or {}, **kwargs), "ok": 1.0}

    def distinct(self, db: str, cmd: dict, caller: Caller) -> dict:
        coll = self._coll(db, _collection_name(cmd, "distinct"))
        key = cmd.get("key")
        if not isinstance(key, str):
            raise type_mismatch("BSON field 'distinct.key' is the wrong type, expected type 'string'")
        return {"values": coll.distinct(key, cmd.get("query") or {}), "ok": 1.0}

    def aggregate(self, db: str, cmd: dict, caller: Caller) -> dict:
        pipeline = cmd.get("pipeline")
        if not isinstance(pipeline, list):
            raise type_mismatch("'pipeline' option must be specified as an array")
        for stage in pipeline:
            if not isinstance(stage, Mapping) or len(stage) != 1:
                raise CommandError(
                    40323, "A pipeline stage specification object must contain exactly one field.", "Location40323"
                )
        if not isinstance(cmd.get("aggregate"), str):
            raise CommandError(73, "{aggregate: 1} is not supported by the wire server except $currentOp")
        name = _collection_name(cmd, "aggregate")
        docs = list(self._coll(db, name).aggregate(pipeline))
        return self.cursor_reply(f"{db}.{name}", docs, cmd, caller)

    def cursor_reply(self, ns: str, docs: list[dict], cmd: Mapping, caller: Caller) -> dict:
        """A ``{cursor: {...}, ok: 1}`` reply honouring ``cursor.batchSize``."""
        options = cmd.get("cursor") or {}
        batch_size = options.get("batchSize") if isinstance(options, Mapping) else None
        return {
            "cursor": self.cursors.open(
                ns, docs, owners=caller.users, connection_id=caller.connection_id, batch_size=batch_size
            ),
            "ok": 1.0,
        }

    # -- namespaces --------------------------------------------------------------------------
    def create(self, db: str, cmd: dict, caller: Caller) -> dict:
        name = _collection_name(cmd, "create")
        if not self._exists(db, name):
            self.client[db].create_collection(name)
        return {"ok": 1.0}

    def drop(self, db: str, cmd: dict, caller: Caller) -> dict:
        name = _collection_name(cmd, "drop")
        if not self._exists(db, name):
            raise CommandError(26, "ns not found")
        indexes = len(self._coll(db, name).index_information())
        self.client[db].drop_collection(name)
        return {"nIndexesWas": indexes, "ns": f"{db}.{name}", "ok": 1.0}

    def drop_database(self, db: str, cmd: dict, caller: Caller) -> dict:
        self.client.drop_database(db)
        return {"dropped": db, "ok": 1.0}

    def list_databases(self, db: str, cmd: dict, caller: Caller) -> dict:
        names = self.client.list_database_names()
        if caller.readable_dbs is not None:
            names = [n for n in names if n in caller.readable_dbs]
        entries = [{"name": n, "sizeOnDisk": bson.Int64(8192), "empty": False} for n in sorted(names)]
        filter_ = cmd.get("filter")
        if filter_:
            entries = [e for e in entries if filter_applies(filter_, e)]
        if cmd.get("nameOnly"):
            return {"databases": [{"name": e["name"]} for e in entries], "ok": 1.0}
        total = bson.Int64(8192 * len(entries))
        return {"databases": entries, "totalSize": total, "totalSizeMb": bson.Int64(0), "ok": 1.0}

    def list_collections(self, db: str, cmd: dict, caller: Caller) -> dict:
        entries = []
        for name in sorted(self.client[db].list_collection_names()):
            if caller.visible_collection is not None and not caller.visible_collection(name):
                continue
            coll_uuid = bson.Binary.from_uuid(uuid.uuid5(uuid.NAMESPACE_URL, f"{db}.{name}"))
            entries.append(
                {
                    "name": name,
                    "type": "collection",
                    "options": {},
                    "info": {"readOnly": False, "uuid": coll_uuid},
                    "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
                }
            )
        filter_ = cmd.get("filter")
        if filter_:
            entries = [e for e in entries if filter_applies(filter_, e)]
        if cmd.get("nameOnly"):
            entries = [{"name": e["name"], "type": e["type"]} for e in entries]
        return self.cursor_reply(f"{db}.$cmd.listCollections", entries, cmd, caller)

    def list_indexes(self, db: str, cmd: dict, caller: Caller) -> dict:
        name = _collection_name(cmd, "listIndexes")
        if not self._exists(db, name):
            raise CommandError(26, f"ns does not exist: {db}.{name}")
        entries = []
        for index_name, info in self._coll(db, name).index_information().items():
            entry = {"v": info.get("v", 2), "key": dict(info["key"]), "name": index_name}
            entry.update({k: v for k, v in info.items() if k not in ("v", "key")})
            entries.append(entry)
        return self.cursor_reply(f"{db}.{name}", entries, cmd, caller)

    def create_indexes(self, db: str, cmd: dict, caller: Caller) -> dict:
        name = _collection_name(cmd, "createIndexes")
        specs = cmd.get("indexes")
        if not isinstance(specs, list) or not specs:
            raise bad_value("Must specify at least one index")
        created_collection = not self._exists(db, name)
        coll = self._coll(db, name)
        before = len(coll.index_information()) if not created_collection else 1
        for spec in specs:
            if not isinstance(spec, Mapping) or not isinstance(spec.get("key"), Mapping):
                raise bad_value("index specification must have a 'key' document")
            options = {k: v for k, v in spec.items() if k not in ("key", "v")}
            coll.create_index(list(spec["key"].items()), **options)
        return {
            "numIndexesBefore": before,
            "numIndexesAfter": len(coll.index_information()),
            "createdCollectionAutomatically": created_collection,
            "ok": 1.0,
        }

    def drop_indexes(self, db: str, cmd: dict, caller: Caller) -> dict:
        name = _collection_name(cmd, "dropIndexes")
        if not self._exists(db, name):
            raise CommandError(26, f"ns not found {db}.{name}")
        coll = self._coll(db, name)
        before = len(coll.index_information())
        index = cmd.get("index")
        if index == "*":
            coll.drop_indexes()
        elif isinstance(index, str):
            if index not in coll.index_information():
                raise CommandError(27, f"index not found with name [{index}]", "IndexNotFound")
            coll.drop_index(index)
        elif isinstance(index, Mapping):
            coll.drop_index(list(index.items()))
        else:
            raise type_mismatch("index must be a string or a document")
        return {"nIndexesWas": before, "ok": 1.0}

    def db_stats(self, db: str, cmd: dict, caller: Caller) -> dict:
        names = self.client[db].list_collection_names()
        objects = sum(self._coll(db, n).estimated_document_count() for n in names)
        return {
            "db": db,
            "collections": len(names),
            "views": 0,
            "objects": objects,
            "dataSize": 0.0,
            "storageSize": 0.0,
            "indexes": len(names),
            "ok": 1.0,
        }
