"""Logging in as a database user from a test: a client for that user, and whether the login is accepted."""

from __future__ import annotations

import pymongo
from pymongo.errors import OperationFailure

AUTHENTICATION_FAILED = 18


def user_client(host_port: str, db: str, username: str, password: str, *, timeout_ms: int = 3000):
    """A pymongo client for one user on one server (no discovery), with short timeouts."""
    return pymongo.MongoClient(
        f"mongodb://{host_port}/?directConnection=true",
        username=username,
        password=password,
        authSource=db,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms,
    )


def logs_in(host_port: str, db: str, username: str, password: str) -> bool:
    """True when the server accepts the login; False when it refuses it as AuthenticationFailed (code 18).

    Any other error is raised: a server that is down is not a refused login.
    """
    with user_client(host_port, db, username, password) as client:
        try:
            client[db].command("ping")
        except OperationFailure as exc:
            if exc.code != AUTHENTICATION_FAILED:
                raise
            return False
    return True
