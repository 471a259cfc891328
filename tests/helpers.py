"""The tests' shared helpers, one of each: unique names and passwords, API times, the audit trail as text, TOTP
codes, clients past the second factor (browser, API token, websocket), approvers, a cut MongoDB connection, a
fresh database with documents, a scoped-access envelope with its requester and approver, and starting and stopping
the servers a browser test runs (daphne, the OIDC provider).

Fixtures live in tests/conftest.py and the plugins it lists; the MongoDB test servers and logging in as a database
user in tests/mongo/; Resource rows on a test server in `tests.factories.resource_on`.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


# -- names and passwords -----------------------------------------------------------------------------------------
def unique_name(prefix: str = "u") -> str:
    """A name no other test uses (users, databases, collections): `prefix_` and 10 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def unique_password() -> str:
    """A password for a database user a test makes itself (not one the portal generates)."""
    return f"Pw-{secrets.token_urlsafe(18)}"


def iso_time(value: str) -> datetime:
    """A time as the API and the Atlas Admin API write it (ISO 8601, `Z` for UTC)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- the audit trail ---------------------------------------------------------------------------------------------
def audit_text() -> str:
    """Every audit row and connector-action record, all columns, as one text to search for secrets."""
    from access.models import AuditEvent, ConnectorAction

    return json.dumps([list(AuditEvent.objects.values()), list(ConnectorAction.objects.values())], default=str)


# -- the second factor -------------------------------------------------------------------------------------------
def totp_code(source, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or `steps_ahead` 30-second steps later) for `source`: a TOTP device,
    its raw key (bytes), its base32 secret or an `otpauth://` URI."""
    from django_otp.oath import TOTP

    step, t0, digits, drift = 30, 0, 6, 0
    if hasattr(source, "bin_key"):
        key, step, t0, digits, drift = source.bin_key, source.step, source.t0, source.digits, source.drift
    elif isinstance(source, bytes):
        key = source
    else:
        secret = parse_qs(urlsplit(source).query)["secret"][0] if source.startswith("otpauth://") else source
        key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    generator = TOTP(key, step, t0, digits, drift)
    generator.time = time.time() + steps_ahead * step
    return f"{generator.token():0{digits}d}"


def otp_login(client, user, *, mfa_verified_at: float | None = None):
    """Log the Django test `client` in as `user` past the second factor: a new confirmed TOTP device, verified in
    the browser session (and the portal's step-up time when `mfa_verified_at` is given). Returns the device."""
    from django_otp import DEVICE_ID_SESSION_KEY

    from access.otp import totp_device_create
    from portal.guards import MFA_VERIFIED_AT

    device = totp_device_create(user=user)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    if mfa_verified_at is not None:
        session[MFA_VERIFIED_AT] = mfa_verified_at
    session.save()
    return device


def verified_client(user, *, verified_at: float | None = None):
    """A test client signed in as `user` with a confirmed TOTP device verified `verified_at` (default now)."""
    from django.test import Client

    client = Client()
    client.device = otp_login(client, user, mfa_verified_at=time.time() if verified_at is None else verified_at)
    return client


def session_cookie(user, *, otp: bool = True) -> str:
    """The `Cookie` header of a browser session logged in as `user`, past the second factor unless `otp=False`."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    if otp:
        otp_login(client, user)
    else:
        client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def otp_browser_session(user) -> dict:
    """A browser session's content after `user` verified a (new) TOTP device; call it outside async code."""
    from django_otp import DEVICE_ID_SESSION_KEY

    from access.otp import totp_device_create

    return {DEVICE_ID_SESSION_KEY: totp_device_create(user=user).persistent_id}


def session_socket(session, user, browser_session: dict):
    """A communicator on ws/sessions/<public_id>/ for `user` with `browser_session`."""
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from portal.routing import websocket_urlpatterns

    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/sessions/{session.public_id}/")
    communicator.scope["user"] = user
    communicator.scope["session"] = browser_session
    return communicator


def token_client(user):
    """A DRF client authenticated with a real bearer token of `user` (the raw token in `.raw_token`)."""
    from rest_framework.test import APIClient

    from access.services.tokens import api_token_create

    _token, raw = api_token_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.raw_token = raw
    return client


def make_approver(user, *, through_group: bool = True):
    """Give `user` the `access.approve_accessrequest` permission (through an "approvers" group by default)."""
    from django.contrib.auth.models import Group, Permission

    permission = Permission.objects.get(codename="approve_accessrequest", content_type__app_label="access")
    if through_group:
        group, _ = Group.objects.get_or_create(name="approvers")
        group.permissions.add(permission)
        user.groups.add(group)
    else:
        user.user_permissions.add(permission)
    return user


# -- MongoDB connections and data ---------------------------------------------------------------------------------
@contextmanager
def database_on(uri: str, prefix: str = "shop", **collections: list[dict]) -> Iterator[str]:
    """A fresh database (`unique_name(prefix)`) on the server at `uri` holding `collections` (name=documents);
    yields its name and drops it afterwards."""
    import pymongo

    name = unique_name(prefix)
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as admin:
        for collection, documents in collections.items():
            admin[name][collection].insert_many(documents)
        yield name
        admin.drop_database(name)


def scoped_envelope(server, databases: list[str], *, requester: str, approver: str, **policy_fields) -> dict:
    """A scoped-access envelope on the test MongoDB `server`: a fresh Resource, a requester and an approver (users
    named `unique_name(requester)`, `unique_name(approver)`), and the requester's policy to ask inside `databases`
    for read or readWrite, approval required (`policy_fields` add or override). Clears the cache first: the
    databases a server lists are cached. Returns {"resource", "requester", "approver", "policy"}."""
    from django.core.cache import cache

    from access.services.policies import access_policy_create
    from tests.factories import UserFactory, resource_on

    cache.clear()
    resource = resource_on(server, name=unique_name("res"))
    requester_user = UserFactory(username=unique_name(requester))
    approver_user = make_approver(UserFactory(username=unique_name(approver)))
    policy = access_policy_create(
        actor="test",
        user=requester_user,
        scope_resource=resource,
        scope_databases=list(databases),
        **{"scope_levels": ["read", "readWrite"], "approval_required": True, **policy_fields},
    )
    return {"resource": resource, "requester": requester_user, "approver": approver_user, "policy": policy}


def assert_connection_cut(client) -> None:
    """The pymongo `client`'s open connection is gone: its next command fails (and reconnecting fails too)."""
    import pytest
    from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

    with pytest.raises(PyMongoError) as caught:
        client.app.command("ping")
    assert isinstance(caught.value, ConnectionFailure | OperationFailure)


# -- servers a test starts ---------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent


def http_answers(url: str, timeout: float = 2.0) -> bool:
    """Whether `url` answers 200 now (a refused or slow connection is a no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def process_wait_ready(
    process: subprocess.Popen,
    ready: Callable[[], bool],
    *,
    name: str,
    timeout: float,
    log_text: Callable[[], str],
    poll: float = 0.2,
) -> None:
    """Wait until `ready()` while `process` runs; if it exits or `timeout` passes, stop it and raise with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_text()[-3000:]}")
        if ready():
            return
        time.sleep(poll)
    process_stop(process)
    raise RuntimeError(f"{name} did not answer in {timeout}s:\n{log_text()[-3000:]}")


def process_stop(process: subprocess.Popen | None) -> None:
    """Terminate a server a test started (killed after 10 s) and reap it; nothing when it is already gone."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def daphne_start(*, port: int, env: dict, log_path: Path, timeout: float = 30.0) -> subprocess.Popen:
    """daphne serving the portal on 127.0.0.1:`port` with `env`, once /healthz answers; output to `log_path`."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    process_wait_ready(
        process,
        lambda: http_answers(f"http://127.0.0.1:{port}/healthz"),
        name="daphne",
        timeout=timeout,
        log_text=lambda: log_path.read_text(errors="replace") if log_path.exists() else "",
    )
    return process
