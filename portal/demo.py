"""The demo that `make run` starts: a security-team user with TOTP, a MongoDB-compatible server registered
as a resource with an account and a dynamic role, and the processes that make up the system.

Everything here goes through the same services the admin and the API use, so the demo is audited
like any other change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from access.generators import new_token
from access.models import AccessPolicy, Account, AuditAction, DynamicRole, Gateway, Resource
from access.otp import totp_device_create
from access.services.audit import audit_record
from access.services.resources import account_create, account_update, resource_create, resource_update
from tests.mongo.paths import die_with_parent

DEMO_USERNAME = "admin"
DEMO_RESOURCE = "demo"
DEMO_ACCOUNT = "demo-app"
DEMO_ROLE = "readwrite"
DEMO_DATABASE = "demo"


@dataclass
class DemoUser:
    username: str
    password: str | None  # only when created now: printed once
    otpauth_uri: str | None


@dataclass
class AdminTarget:
    """Where the demo MongoDB-compatible server is, split into a credential-free URI and its admin account."""

    uri: str
    auth_database: str
    username: str
    password: str


def split_admin_uri(admin_uri: str) -> AdminTarget:
    """Take `mongodb://user:pw@host:port/?authSource=admin` apart: credentials go to the resource's admin account."""
    parts = urlsplit(admin_uri)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{host}:{parts.port}" if parts.port else host
    auth_db = "admin"
    for option in parts.query.split("&"):
        key, _, value = option.partition("=")
        if key == "authSource" and value:
            auth_db = value
    query = "&".join(o for o in parts.query.split("&") if o and not o.startswith("authSource="))
    uri = f"{parts.scheme}://{netloc}" + (f"/?{query}" if query else "")
    return AdminTarget(uri, auth_db, unquote(parts.username or ""), unquote(parts.password or ""))


def demo_user_ensure() -> DemoUser:
    """Create the demo security-team superuser with a TOTP device, once; later runs reuse it."""
    User = get_user_model()
    user = User.objects.filter(username=DEMO_USERNAME).first()
    if user is not None:
        return DemoUser(DEMO_USERNAME, None, None)
    password = new_token(nbytes=12)
    with transaction.atomic():
        user = User.objects.create_superuser(DEMO_USERNAME, "admin@localhost", password)
        device = totp_device_create(user=user, name="demo")
        audit_record(action=AuditAction.DEMO_USER_CREATE, actor="make run", target=user)
    return DemoUser(DEMO_USERNAME, password, device.config_url)


def demo_resource_ensure(target: AdminTarget, *, tls: bool) -> Resource:
    """Register (or point again at) the demo server as the `demo` resource, with the local gateway."""
    gateway, _ = Gateway.objects.get_or_create(
        name="local", defaults={"public_host": "127.0.0.1", "public_port": 27018}
    )
    fields = {
        "uri": target.uri,
        "auth_database": target.auth_database,
        "tls": tls,
        "admin_username": target.username,
        "admin_password": target.password,
        "gateway": gateway,
        "description": "The demo server started by `make run`.",
    }
    resource = Resource.objects.filter(name=DEMO_RESOURCE).first()
    if resource is None:
        return resource_create(actor="make run", name=DEMO_RESOURCE, **fields)
    return resource_update(actor="make run", resource=resource, **fields)


def demo_account_ensure(resource: Resource, user) -> Account:
    """A stored account on the demo server (created there now with a fresh password) and a standing policy."""
    from pymongo import MongoClient
    from pymongo.errors import OperationFailure

    password = new_token(nbytes=24)
    username = "demo_app"
    with MongoClient(
        resource.uri,
        username=resource.admin_username,
        password=resource.admin_password.reveal(),
        authSource=resource.auth_database,
        tls=resource.tls,
        serverSelectionTimeoutMS=10000,
    ) as client:
        admin = client[resource.auth_database]
        if admin.command("usersInfo", username)["users"]:
            admin.command("updateUser", username, pwd=password)
        else:
            try:
                admin.command("createUser", username, pwd=password, roles=[{"role": "readWrite", "db": DEMO_DATABASE}])
            except OperationFailure as exc:
                if exc.code != 238:  # NotImplemented: FerretDB has no roles, every user may do everything
                    raise
                admin.command("createUser", username, pwd=password, roles=[])
    account = Account.objects.filter(resource=resource, name=DEMO_ACCOUNT).first()
    if account is None:
        account = account_create(
            actor="make run",
            resource=resource,
            name=DEMO_ACCOUNT,
            username=username,
            password=password,
            description="An application account on the demo server; reach it through a gateway session.",
        )
    else:
        account = account_update(actor="make run", account=account, password=password)
    role, _ = DynamicRole.objects.get_or_create(
        resource=resource, name=DEMO_ROLE, defaults={"db": DEMO_DATABASE, "roles": ["readWrite"]}
    )
    for target in ({"account": account}, {"role": role}):
        AccessPolicy.objects.get_or_create(
            user=user,
            **target,
            defaults={
                "name": f"{user.username} → {account if 'account' in target else role}",
                "approval_required": False,
            },
        )
    return account


def spawn(args: list[str], *, name: str, log_dir: Path) -> subprocess.Popen:
    """Start one part of the system with its output in var/log/NAME.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
    return subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=settings.BASE_DIR,
        env=os.environ.copy(),
        start_new_session=True,
        preexec_fn=die_with_parent,  # no orphans even if the demo itself is SIGKILLed
    )


def manage(*args: str) -> list[str]:
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]
