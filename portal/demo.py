"""The demo that `make run` starts: three people with TOTP (a security-team superuser, an engineer without staff
rights and an approver), a MongoDB-compatible server registered as a resource with an account and a dynamic role,
policies that show the approval flow, and the processes that make up the system.

Everything here goes through the same services the admin and the API use, so the demo is audited like any other
change; passwords come from access.generators and are printed once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import transaction

from access.generators import new_token
from access.models import AccessPolicy, Account, AuditAction, DynamicRole, Gateway, Resource
from access.otp import totp_device_create
from access.services.audit import audit_record
from access.services.policies import access_policy_create
from access.services.resources import account_create, account_update, resource_create, resource_update
from access.services.roles import dynamic_role_save
from tests.mongo.paths import die_with_parent

DEMO_USERNAME = "admin"
ENGINEER_USERNAME = "engineer"
APPROVER_USERNAME = "approver"
DEMO_RESOURCE = "demo"
DEMO_ACCOUNT = "demo-app"
DEMO_ROLE = "readwrite"
DEMO_DATABASE = "demo"
FERRETDB_ROLE_NOTE = (
    "Demo on FerretDB, which has no authorization: the users this role creates get no MongoDB roles there "
    "(every user may do everything). On a real MongoDB server the role grants readWrite on demo."
)
MONGODB_ROLE_NOTE = "A short-lived user with readWrite on the demo database."


@dataclass
class DemoUser:
    username: str
    password: str | None = field(default=None, repr=False)  # only when created now: printed once
    otpauth_uri: str | None = field(default=None, repr=False)
    what: str = ""


@dataclass
class AdminTarget:
    """Where the demo MongoDB-compatible server is, split into a credential-free URI and its admin account."""

    uri: str
    auth_database: str
    username: str
    password: str = field(repr=False)


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


def _user_ensure(username: str, *, what: str, superuser: bool = False, approver: bool = False) -> DemoUser:
    """Create one demo person with a TOTP device, once; later runs reuse it (its password is not shown again)."""
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        return DemoUser(username, what=what)
    password = new_token(nbytes=12)
    with transaction.atomic():
        if superuser:
            user = User.objects.create_superuser(username, f"{username}@localhost", password)
        else:
            user = User.objects.create_user(username, f"{username}@localhost", password)
        if approver:
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label="access", codename="approve_accessrequest")
            )
        device = totp_device_create(user=user, name="demo")
        audit_record(action=AuditAction.DEMO_USER_CREATE, actor="make run", target=user, data={"role": what})
    return DemoUser(username, password, device.config_url, what)


def demo_user_ensure() -> DemoUser:
    """The demo security-team superuser with a TOTP device (created once; later runs reuse it)."""
    return _user_ensure(DEMO_USERNAME, what="security team, superuser: the admin", superuser=True)


def demo_people_ensure() -> list[DemoUser]:
    """The superuser, an engineer (no staff rights: the portal only) and an approver (decides requests)."""
    return [
        demo_user_ensure(),
        _user_ensure(ENGINEER_USERNAME, what="engineer, no staff rights: requests access in the portal"),
        _user_ensure(APPROVER_USERNAME, what="approver: approves or denies requests in the portal", approver=True),
    ]


def demo_resource_ensure(target: AdminTarget, *, tls: bool) -> Resource:
    """Register (or point again at) the demo server as the `demo` resource, with the local gateway.

    Each `make run` starts the demo server on a new port: the new settings are verified by logging in (the server
    is up), otherwise the stored credentials would be held back and every session refused at the gateway.
    """
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
        return resource_create(actor="make run", name=DEMO_RESOURCE, verify=True, **fields)
    return resource_update(actor="make run", resource=resource, verify=True, **fields)


def demo_account_ensure(resource: Resource, user) -> Account:
    """A stored account on the demo server (created there now with a fresh password), a dynamic role, and the
    policies: the superuser's standing access, and the engineer's access that needs an approver's yes."""
    from pymongo import MongoClient

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
        ferretdb = "ferretdbVersion" in admin.command("buildInfo")
        # FerretDB has no roles (every user may do everything); a real server gets the account's real role.
        roles = [] if ferretdb else [{"role": "readWrite", "db": DEMO_DATABASE}]
        if admin.command("usersInfo", username)["users"]:
            admin.command("updateUser", username, pwd=password)
        else:
            admin.command("createUser", username, pwd=password, roles=roles)
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
    role = demo_role_ensure(resource, ferretdb=ferretdb)
    demo_policies_ensure(account=account, role=role, admin=user)
    return account


def demo_role_ensure(resource: Resource, *, ferretdb: bool) -> DynamicRole:
    """The demo's dynamic role: readWrite on `demo` on a real server; on FerretDB, which has no authorization (its
    createUser refuses roles), a role without MongoDB roles, labelled as such in its description."""
    roles, note = ([], FERRETDB_ROLE_NOTE) if ferretdb else (["readWrite"], MONGODB_ROLE_NOTE)
    role, _created = dynamic_role_save(
        actor="make run",
        resource=resource,
        name=DEMO_ROLE,
        db=DEMO_DATABASE,
        roles=roles,
        description=note,
        default_ttl=timedelta(minutes=30),
        max_ttl=timedelta(hours=2),
    )
    return role


def demo_policies_ensure(*, account: Account, role: DynamicRole, admin) -> None:
    """The superuser may use both at once (standing policies); the engineer asks and an approver decides."""
    User = get_user_model()
    engineer = User.objects.filter(username=ENGINEER_USERNAME).first()
    wanted = [
        (admin, account, f"{admin.username}: standing access to {account}", False, timedelta(hours=8)),
        (admin, role, f"{admin.username}: standing access to {role}", False, timedelta(hours=2)),
    ]
    if engineer is not None:
        wanted += [
            (engineer, account, f"{engineer.username}: {account} after approval", True, timedelta(hours=2)),
            (engineer, role, f"{engineer.username}: {role} after approval", True, timedelta(hours=1)),
        ]
    for subject, target, name, approval, longest in wanted:
        kind = "account" if isinstance(target, Account) else "role"
        if AccessPolicy.objects.filter(user=subject, **{kind: target}).exists():
            continue
        access_policy_create(
            actor="make run",
            name=name,
            user=subject,
            approval_required=approval,
            max_duration=longest,
            **{kind: target},
        )


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
