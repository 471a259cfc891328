"""pytest plugin that gives tests a MongoDB server to talk to, and the real JS clients.

Loaded from ``tests/conftest.py`` (``pytest_plugins``). Fixtures:

- ``mongo_admin_uri`` (session): an admin connection string. ``MONGODB_URI`` when set; else a
  MongoDB container through testcontainers when a Docker engine answers; else FerretDB.
- ``mongo_server_kind`` (session): ``"mongodb"`` or ``"ferretdb"`` for that server, so a test can skip
  what FerretDB lacks (roles, authorization) with a reason: see :func:`skip_on_ferretdb`.
- ``ferretdb_uri`` (session): always FerretDB, for tests that want the independent server.
- ``ferretdb_server`` (session): the :class:`~tests.mongo.ferretdb.FerretDB` behind ``ferretdb_uri``.
- ``mongosh`` / ``node_driver``: :func:`~tests.mongo.clients.mongosh_eval` and
  :func:`~tests.mongo.clients.node_run`, after npm installed the clients.
- ``admin``: a pymongo client as the admin of ``target``, for a module that defines a ``target`` fixture (a
  :class:`MongoServer`, usually parametrized over the servers the module runs against).

A server or client that cannot be had skips the test with the reason, except with ``CI=true`` in the
environment, where it fails the run: CI must never pass by skipping everything.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.mongo.clients import JsClientsUnavailable, ensure_js_clients, mongosh_eval, node_run
from tests.mongo.ferretdb import FerretDB, FerretDBUnavailable

MONGODB_IMAGE = os.environ.get("MONGODB_IMAGE", "mongo:8.0")
DOCKER_SOCKETS = ("/var/run/docker.sock", "~/.docker/run/docker.sock")


@dataclass(frozen=True)
class MongoServer:
    """A server the tests may use: its admin connection string and what it is."""

    uri: str
    kind: str  # "mongodb" | "ferretdb" | "wireserver"

    def __repr__(self) -> str:
        return f"MongoServer(kind={self.kind!r})"  # the URI carries a password

    def uri_for(self, user: str, password: str, auth_source: str) -> str:
        """The admin connection string with `user` and `password` of `auth_source` in place of the admin's."""
        from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

        parts = urlsplit(self.uri)
        host = parts.netloc.rpartition("@")[2]
        query = dict(parse_qsl(parts.query))
        query["authSource"] = auth_source
        netloc = f"{quote_plus(user)}:{quote_plus(password)}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", urlencode(query), ""))

    def client(self, uri: str | None = None, **options):
        """A pymongo client on `uri` (default: the admin's), 5 s to find the server unless told."""
        import pymongo

        options.setdefault("serverSelectionTimeoutMS", 5000)
        return pymongo.MongoClient(uri or self.uri, **options)


def running_in_ci() -> bool:
    """Whether ``CI`` is set to a true value, as GitHub Actions and most CI systems do."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it under CI where a missing server is a broken setup."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI=true: missing test servers fail the run)", pytrace=False)
    pytest.skip(reason)


def skip_on_ferretdb(kind: str, what: str) -> None:
    """Skip the current test when ``kind`` is FerretDB, which lacks ``what`` (e.g. "roles")."""
    if kind == "ferretdb":
        pytest.skip(f"FerretDB v1.24 does not support {what}")


def docker_engine_answers() -> bool:
    """Whether a Docker engine is reachable, checked in about a second at most."""
    has_socket = any(Path(path).expanduser().exists() for path in DOCKER_SOCKETS)
    if not (os.environ.get("DOCKER_HOST") or has_socket):
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means "no usable engine"
        return False


def server_kind(uri: str) -> str:
    """Ask the server at ``uri`` what it is: FerretDB adds ``ferretdbVersion`` to buildInfo."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        try:
            build_info = client.admin.command("buildInfo")
        except PyMongoError as exc:
            unavailable(f"the MongoDB server in MONGODB_URI does not answer: {type(exc).__name__}")
    return "ferretdb" if "ferretdbVersion" in build_info else "mongodb"


def _docker_mongodb() -> Iterator[MongoServer]:
    from testcontainers.community.mongodb import MongoDbContainer

    password = secrets.token_urlsafe(18)
    container = MongoDbContainer(MONGODB_IMAGE, username="pam-admin", password=password)
    try:
        container.start()
    except Exception as exc:
        unavailable(f"could not start {MONGODB_IMAGE} through Docker: {type(exc).__name__}: {exc}")
    try:
        host, port = container.get_container_host_ip(), container.get_exposed_port(27017)
        yield MongoServer(f"mongodb://pam-admin:{password}@{host}:{port}/?authSource=admin", "mongodb")
    finally:
        container.stop()


@pytest.fixture(scope="session")
def ferretdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    """One FerretDB for the whole session, with its data under pytest's temporary directory."""
    server = FerretDB(tmp_path_factory.mktemp("ferretdb"))
    try:
        server.start()
    except FerretDBUnavailable as exc:
        unavailable(f"FerretDB is unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ferretdb_uri(ferretdb_server: FerretDB) -> str:
    """Admin connection string of the session's FerretDB (``...?authSource=admin``)."""
    return ferretdb_server.uri


@pytest.fixture(scope="session")
def mongo_server(request: pytest.FixtureRequest) -> Iterator[MongoServer]:
    """The session's server: ``MONGODB_URI``, else Docker MongoDB, else FerretDB."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield MongoServer(uri, server_kind(uri))
    elif docker_engine_answers():
        yield from _docker_mongodb()
    else:
        yield MongoServer(request.getfixturevalue("ferretdb_uri"), "ferretdb")


@pytest.fixture(scope="session")
def mongo_admin_uri(mongo_server: MongoServer) -> str:
    """An admin connection string for the session's server."""
    return mongo_server.uri


@pytest.fixture(scope="session")
def mongo_server_kind(mongo_server: MongoServer) -> str:
    """``"mongodb"`` or ``"ferretdb"``: what ``mongo_admin_uri`` points at."""
    return mongo_server.kind


@pytest.fixture(scope="session")
def js_clients() -> None:
    """Make sure npm installed mongosh and the Node driver into tests/js/node_modules."""
    try:
        ensure_js_clients()
    except JsClientsUnavailable as exc:
        unavailable(f"the JS clients are unavailable: {exc}")


@pytest.fixture
def admin(target: MongoServer) -> Iterator:
    client = target.client()
    yield client
    client.close()


@pytest.fixture
def mongosh(js_clients: None):
    """``mongosh(uri, script, timeout=60) -> CompletedProcess``: run a script in the real mongosh."""
    return mongosh_eval


@pytest.fixture
def node_driver(js_clients: None):
    """``node_driver(script_or_path, env=None, timeout=60) -> CompletedProcess``; ``mongodb`` resolves."""
    return node_run
