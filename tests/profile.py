"""Which deployment profile the suite runs in, and how a subprocess reaches the test's database and Redis.

The suite runs twice on CI: in the embedded default (SQLite, the ORM broker, the in-memory channel layer) and in
the production profile (`DATABASE_URL=postgres://…`, `REDIS_URL=redis://…`, started by
`tests/services/production.sh`). pytest-django creates its test database (`test_<name>`) in either; a subprocess
the tests start (runproxy, daphne, qcluster) must use that test database, never the configured one, and the same
Redis. `.ci/run` sets `PAM_PROFILE=production` for the second run: then a production-only test that cannot run
is a failure, not a skip.
"""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest


def database_url_for(database: dict) -> str:
    """A `DATABASE_URL` for a Django DATABASES entry (as pytest-django left it: NAME is the test database)."""
    engine = database["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{database['NAME']}"
    if engine.endswith("postgresql"):
        credentials = ""
        if database.get("USER"):
            credentials = quote(database["USER"], safe="")
            if database.get("PASSWORD"):
                credentials += ":" + quote(database["PASSWORD"], safe="")
            credentials += "@"
        host = database.get("HOST") or "127.0.0.1"
        port = f":{database['PORT']}" if database.get("PORT") else ""
        return f"postgres://{credentials}{host}{port}/{database['NAME']}"
    raise ValueError(f"no DATABASE_URL form for {engine}")


def current_database_url() -> str:
    """The `DATABASE_URL` of the database the tests use right now (call once pytest-django set it up)."""
    from django.conf import settings

    return database_url_for(settings.DATABASES["default"])


def uses_postgresql() -> bool:
    from django.conf import settings

    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def redis_url() -> str:
    from django.conf import settings

    return getattr(settings, "REDIS_URL", "") or ""


def is_production_profile() -> bool:
    """PostgreSQL and Redis are configured (the settings switch on both)."""
    return uses_postgresql() and bool(redis_url())


def production_run_declared() -> bool:
    """`.ci/run`'s second run: here the production profile's tests must run."""
    return os.environ.get("PAM_PROFILE", "") == "production"


def require_production_profile() -> None:
    """Skip (with the reason) unless PostgreSQL and Redis are configured; fail instead in a declared production run."""
    if is_production_profile():
        return
    reason = (
        "needs the production profile: DATABASE_URL=postgres://… and REDIS_URL=redis://… "
        '(eval "$(tests/services/production.sh start)")'
    )
    if production_run_declared():
        pytest.fail("PAM_PROFILE=production but " + reason)
    pytest.skip(reason)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a portal subprocess (runproxy, daphne, qcluster, manage.py) on the test database.

    The secrets are this process's (so encrypted columns read back) and Redis is this process's `REDIS_URL`
    when set (the embedded profile has none, and the subprocess then uses the ORM broker and no channel layer
    across processes).
    """
    from django.conf import settings

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["DATABASE_URL"] = current_database_url()
    env["PAM_ENCRYPTION_KEYS"] = ",".join(settings.PAM_ENCRYPTION_KEYS)
    env["DJANGO_SECRET_KEY"] = settings.SECRET_KEY
    if redis_url():
        env["REDIS_URL"] = redis_url()
    else:
        env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def embedded_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) without the production profile's variables and the test run's switches
    (`tests/settings.py`): what a fresh shell has before `make run` adds its own."""
    from tests.settings import TEST_RUN_ENVIRONMENT

    env = dict(os.environ if env is None else env)
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", *TEST_RUN_ENVIRONMENT):
        env.pop(name, None)
    return env


class ScratchDatabase:
    """A database of its own for a test that runs the portal only in subprocesses (`migrate` included).

    SQLite: a file under the test's tmp directory. PostgreSQL: a new database on the test server, dropped at
    the end (`WITH (FORCE)`, so a killed subprocess's connection does not block it). `rows(sql)` reads it
    directly; use `%s` placeholders with PostgreSQL and `?` with SQLite, or none.
    """

    def __init__(self, tmp_path) -> None:
        import uuid

        from django.conf import settings

        self._base = dict(settings.DATABASES["default"])
        self.postgresql = self._base["ENGINE"].endswith("postgresql")
        if self.postgresql:
            self.name = f"pam_scratch_{uuid.uuid4().hex[:12]}"
            self.url = database_url_for({**self._base, "NAME": self.name})
        else:
            self.name = str(tmp_path / "portal.sqlite3")
            self.url = f"sqlite:///{self.name}"

    def _connection(self, dbname: str, **options):
        import psycopg

        base = self._base
        return psycopg.connect(
            host=base.get("HOST") or "127.0.0.1",
            port=base.get("PORT") or 5432,
            user=base.get("USER"),
            password=base.get("PASSWORD"),
            dbname=dbname,
            **options,
        )

    def _server_connection(self):
        return self._connection("postgres", autocommit=True)

    def __enter__(self) -> ScratchDatabase:
        if self.postgresql:
            with self._server_connection() as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc_info) -> None:
        if self.postgresql:
            with self._server_connection() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def rows(self, query: str, params=()) -> list[tuple]:
        if self.postgresql:
            with self._connection(self.name) as conn:
                return conn.execute(query.replace("?", "%s"), params).fetchall()
        import sqlite3

        with sqlite3.connect(self.name, timeout=10) as conn:
            return conn.execute(query, params).fetchall()


def scratch_redis_url(index: int = 9) -> str:
    """This run's Redis with another database number, emptied first: a qcluster there sees no task queued by
    other tests (django-q2's Redis broker keeps its queue under a fixed key). Empty without Redis."""
    url = redis_url()
    if not url:
        return ""
    from urllib.parse import urlsplit, urlunsplit

    import redis

    parts = urlsplit(url)
    scratch = urlunsplit((parts.scheme, parts.netloc, f"/{index}", parts.query, ""))
    client = redis.Redis.from_url(scratch)
    try:
        client.flushdb()
    finally:
        client.close()
    return scratch
