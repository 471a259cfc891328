"""Scoped just-in-time access on MongoDB: the envelope, the request inside it, the approver's narrowing, and the user
and role made for the request, checked against servers that enforce them.

Each server test runs against the in-repo wire server (user-defined roles, authorization by privilege actions)
and, when ``MONGODB_URI`` points at a real MongoDB (or Docker can start one), against that server too. What is
asserted is what a person would see: the scoped user reads ``shop.orders`` and nothing else, cannot write, and
after expiry neither it nor its role exists and its password no longer logs in.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pymongo
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone
from pymongo.errors import OperationFailure

from access.models import AccessPolicy, AuditEvent, Lease, PermissionLevel
from access.models.leases import LeaseState
from access.models.policies import RequestState
from access.models.sessions import SessionEndReason
from access.mongodb_actions import READ, READ_WRITE
from access.services.gateway import session_login_lookup
from access.services.leases import ConnectorCache, leases_revoke_due
from access.services.offboarding import user_access_end
from access.services.policies import access_policy_create, access_policy_update
from access.services.reconcile import users_reconcile
from access.services.requests import access_request_approve, access_request_cancel, access_request_create
from access.services.roles import connection_settings_from_uri
from access.services.scoped import (
    permission_level_create,
    permission_level_delete,
    role_prefix,
    scoped_lease_of,
)
from access.services.usage import (
    access_lease_renew,
    access_lease_revoke,
    access_scoped_reveal,
    access_scoped_session_open,
)
from tests.factories import ResourceFactory, UserFactory
from tests.helpers import make_approver
from tests.helpers import unique_name as _name
from tests.mongo.fixtures import MongoServer as Target
from tests.mongo.fixtures import server_kind

pytestmark = pytest.mark.wireserver


# -- servers ---------------------------------------------------------------------------------------------
@pytest.fixture(params=["wireserver", "mongodb"])
def server(request, db):
    """(resource, target) on the wire server, or on a real MongoDB when ``MONGODB_URI`` names one."""
    if request.param == "wireserver":
        target = Target(request.getfixturevalue("wire_server").uri, "wireserver")
    else:
        uri = os.environ.get("MONGODB_URI")
        if not uri or server_kind(uri) != "mongodb":
            pytest.skip("no real MongoDB: MONGODB_URI is not set (or is FerretDB, which has no roles)")
        target = Target(uri, "mongodb")
    return ResourceFactory(name=_name("res"), **connection_settings_from_uri(target.uri)), target


@pytest.fixture
def admin(server):
    client = server[1].client()
    yield client
    client.close()


@pytest.fixture
def shop(admin):
    """A fresh "shop" database with orders and customers, dropped afterwards."""
    name = _name("shop")
    admin[name].orders.insert_many([{"_id": 1, "item": "book"}, {"_id": 2, "item": "pen"}])
    admin[name].customers.insert_one({"_id": 1, "name": "Ada"})
    yield name
    admin.drop_database(name)


@pytest.fixture
def people(db):
    requester = UserFactory(username=_name("alice"))
    approver = make_approver(UserFactory(username=_name("bob")))
    return requester, approver


def _policy(resource, user, *, databases, collections=(), levels=("read", "readWrite"), **terms) -> AccessPolicy:
    return access_policy_create(
        actor="test",
        name=_name("scoped"),
        user=user,
        scope_resource=resource,
        scope_databases=list(databases),
        scope_collections=list(collections),
        scope_levels=list(levels),
        **{"max_duration": timedelta(hours=2), "approval_required": True, **terms},
    )


def _client(server, username: str, password: str) -> pymongo.MongoClient:
    target = server[1]
    return target.client(target.uri_for(username, password, "admin"), serverSelectionTimeoutMS=3000)


def _refused(call) -> OperationFailure:
    with pytest.raises(OperationFailure) as caught:
        call()
    return caught.value


def _logs_in(server, username: str, password: str) -> bool:
    with _client(server, username, password) as client:
        try:
            client.admin.command("ping")
            return True
        except OperationFailure:
            return False


def _ask(policy, requester, *, resources, level="read", duration=timedelta(hours=1)):
    return access_request_create(
        requester=requester,
        policy=policy,
        reason="investigate an order",
        duration=duration,
        scope={"resources": resources, "level": level},
    )


# -- the grant, on the server ---------------------------------------------------------------------------
def test_scoped_user_reads_orders_not_customers_cannot_write_and_is_gone_with_its_role_after_expiry(
    server, admin, shop, people
):
    resource = server[0]
    requester, approver = people
    policy = _policy(resource, requester, databases=[shop])
    request = _ask(policy, requester, resources=[f"{shop}.orders"])
    assert request.state == RequestState.PENDING and scoped_lease_of(request) is None

    approved = access_request_approve(request=request, approver=approver, comment="ok")
    lease = scoped_lease_of(approved)
    assert lease.state == LeaseState.ACTIVE and lease.is_scoped and lease.expires_at == approved.expires_at

    # The role grants the level's actions on exactly shop.orders; the user holds only that role, tagged.
    role = admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"}, showPrivileges=True)["roles"][0]
    assert lease.server_role.startswith(role_prefix())
    assert [(p["resource"], sorted(p["actions"])) for p in role["privileges"]] == [
        ({"db": shop, "collection": "orders"}, sorted(READ))
    ]
    user = admin.admin.command("usersInfo", {"user": lease.username, "db": "admin"})["users"][0]
    assert user["roles"] == [{"role": lease.server_role, "db": "admin"}]
    assert user["customData"]["pam"]["lease_id"] == lease.lease_id
    assert user["customData"]["pam"]["request"] == approved.pk

    password = access_scoped_reveal(user=requester, lease=lease, mfa_verified=True)
    assert access_scoped_reveal(user=requester, lease=lease, mfa_verified=True) is None  # once
    with _client(server, lease.username, password) as client:
        assert [d["item"] for d in client[shop].orders.find({}, sort=[("_id", 1)])] == ["book", "pen"]
        assert _refused(lambda: client[shop].customers.find_one()).code == 13
        assert _refused(lambda: client[shop].orders.insert_one({"_id": 3})).code == 13
        assert _refused(lambda: client[shop].orders.delete_one({"_id": 1})).code == 13
        assert _refused(lambda: client["other"].things.find_one()).code == 13

    # Expiry: the sweeper's tick drops the user and the role, and checks both are gone.
    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk=lease.pk).update(issued_at=past - timedelta(hours=1), expires_at=past)
    with ConnectorCache() as connectors:
        assert leases_revoke_due(connectors=connectors) == 1
    lease.refresh_from_db()
    assert lease.state == LeaseState.EXPIRED
    assert admin.admin.command("usersInfo", {"user": lease.username, "db": "admin"})["users"] == []
    assert admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"})["roles"] == []
    assert not _logs_in(server, lease.username, password)
    revoked = AuditEvent.objects.filter(action="lease.revoke", target_id=str(lease.pk)).get()
    assert revoked.data["role"] == f"dropped {lease.server_role}"
    grant = AuditEvent.objects.get(action="scoped.grant", target_id=str(lease.pk))
    assert grant.data["granted"]["resources"] == [{"db": shop, "collection": "orders"}]
    assert grant.data["envelope"]["databases"] == [shop]
    assert grant.data["requested"]["level"] == "read"


def test_approver_narrows_the_scope_and_widening_is_refused(server, admin, shop, people):
    resource = server[0]
    requester, approver = people
    policy = _policy(resource, requester, databases=[shop], levels=["read", "readWrite", "dbAdmin"])
    request = _ask(
        policy,
        requester,
        resources=[f"{shop}.orders", f"{shop}.customers"],
        level="readWrite",
        duration=timedelta(hours=1),
    )
    for wider, field in (
        ({"resources": [f"{shop}.orders", f"{shop}.invoices"]}, "resources"),
        ({"resources": [shop]}, "resources"),
        ({"level": "dbAdmin"}, "level"),
        ({"duration": timedelta(hours=2)}, "duration"),
    ):
        with pytest.raises(ValidationError) as refused:
            access_request_approve(request=request, approver=approver, **wider)
        assert field in refused.value.message_dict
        assert "only narrow" in str(refused.value) or "never lengthen" in str(refused.value)
    request.refresh_from_db()
    assert request.state == RequestState.PENDING and scoped_lease_of(request) is None

    approved = access_request_approve(
        request=request, approver=approver, resources=[f"{shop}.orders"], level="read", duration=timedelta(minutes=30)
    )
    assert approved.scope["resources"] == [{"db": shop, "collection": "orders"}]
    assert approved.scope["level"] == "read" and approved.duration == timedelta(minutes=30)
    assert approved.scope_requested["level"] == "readWrite" and approved.scope_narrowed
    assert approved.expires_at - approved.decided_at == timedelta(minutes=30)
    lease = scoped_lease_of(approved)
    role = admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"}, showPrivileges=True)["roles"][0]
    assert [(p["resource"], sorted(p["actions"])) for p in role["privileges"]] == [
        ({"db": shop, "collection": "orders"}, sorted(READ))
    ]
    password = access_scoped_reveal(user=requester, lease=lease, mfa_verified=True)
    with _client(server, lease.username, password) as client:
        assert client[shop].orders.count_documents({}) == 2
        assert _refused(lambda: client[shop].orders.insert_one({"_id": 9})).code == 13
        assert _refused(lambda: client[shop].customers.find_one()).code == 13
    approval = AuditEvent.objects.get(action="request.approve", target_id=str(approved.pk))
    assert approval.data["narrowed"] is True
    assert approval.data["requested"]["resources"] == [
        {"db": shop, "collection": "orders"},
        {"db": shop, "collection": "customers"},
    ]
    assert approval.data["granted"]["level"] == "read"
    access_lease_revoke(user=requester, lease=lease)
    assert admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"})["roles"] == []


def test_a_whole_database_read_write_grant_writes_there_only(
    server, admin, shop, people, django_capture_on_commit_callbacks
):
    resource = server[0]
    requester, _approver = people
    policy = _policy(resource, requester, databases=[shop, "reports_*"], approval_required=False)
    request = _ask(policy, requester, resources=[shop], level="readWrite")
    assert request.state == RequestState.APPROVED and request.approver is None  # no approval needed: at once
    lease = scoped_lease_of(request)
    role = admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"}, showPrivileges=True)["roles"][0]
    assert [(p["resource"], sorted(p["actions"])) for p in role["privileges"]] == [
        ({"db": shop, "collection": ""}, sorted(READ_WRITE))
    ]
    password = access_scoped_reveal(user=requester, lease=lease, mfa_verified=True)
    with _client(server, lease.username, password) as client:
        client[shop].orders.insert_one({"_id": 3, "item": "ink"})
        assert client[shop].customers.count_documents({}) == 1
        assert _refused(lambda: client["elsewhere"].x.insert_one({})).code == 13
    with django_capture_on_commit_callbacks(execute=True):
        access_request_cancel(request=request, user=requester)  # giving it up drops the user and the role now
    lease.refresh_from_db()
    assert lease.state == LeaseState.REVOKED
    assert admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"})["roles"] == []
    assert not _logs_in(server, lease.username, password)


def test_offboarding_and_a_removed_policy_drop_the_scoped_user_and_role(
    server, admin, shop, people, django_capture_on_commit_callbacks
):
    resource = server[0]
    requester, _approver = people
    orders_policy = _policy(resource, requester, databases=[shop], approval_required=False)
    customers_policy = _policy(resource, requester, databases=[shop], approval_required=False)
    first = scoped_lease_of(_ask(orders_policy, requester, resources=[f"{shop}.orders"]))
    second = scoped_lease_of(_ask(customers_policy, requester, resources=[f"{shop}.customers"]))
    assert first.state == second.state == LeaseState.ACTIVE

    with django_capture_on_commit_callbacks(execute=True):  # the grant no longer stands: reconciled at once
        access_policy_update(actor="test", policy=orders_policy, is_enabled=False)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, first.revoke_reason) == (LeaseState.REVOKED, SessionEndReason.GRANT_REMOVED)
    assert second.state == LeaseState.ACTIVE
    assert admin.admin.command("rolesInfo", {"role": first.server_role, "db": "admin"})["roles"] == []

    with django_capture_on_commit_callbacks(execute=True):
        user_access_end(user=requester, reason=SessionEndReason.USER_DEACTIVATED, actor="test")
    second.refresh_from_db()
    assert (second.state, second.revoke_reason) == (LeaseState.REVOKED, SessionEndReason.USER_DEACTIVATED)
    assert admin.admin.command("usersInfo", {"user": second.username, "db": "admin"})["users"] == []
    assert admin.admin.command("rolesInfo", {"role": second.server_role, "db": "admin"})["roles"] == []


def test_the_reconciler_drops_orphaned_request_roles_and_keeps_live_ones(server, admin, shop, people):
    resource = server[0]
    requester, _approver = people
    policy = _policy(resource, requester, databases=[shop], approval_required=False)
    live = scoped_lease_of(_ask(policy, requester, resources=[f"{shop}.orders"]))
    orphan = f"{role_prefix()}{_name('left')}"
    admin.admin.command("createRole", orphan, privileges=[], roles=[])
    foreign = _name("someone-elses")
    admin.admin.command("createRole", foreign, privileges=[], roles=[])
    try:
        found = users_reconcile(resource=resource, dry_run=True)
        assert [r.name for r in found.roles_found] == [orphan]
        report = users_reconcile(resource=resource)
        assert [r.name for r in report.roles_dropped] == [orphan]
        names = {r["role"] for r in admin.admin.command("rolesInfo", 1)["roles"]}
        assert orphan not in names and live.server_role in names and foreign in names
        assert AuditEvent.objects.filter(action="reconcile.drop_role", data__role=orphan).exists()
    finally:
        admin.admin.command("dropRole", foreign)
        access_lease_revoke(user=requester, lease=live)


def test_a_scoped_lease_cannot_be_renewed_past_its_window(server, shop, people):
    resource = server[0]
    requester, _approver = people
    policy = _policy(resource, requester, databases=[shop], approval_required=False)
    lease = scoped_lease_of(_ask(policy, requester, resources=[f"{shop}.orders"]))
    from access.services.leases import LeaseError

    with pytest.raises(LeaseError, match="lasts its approved window"):
        access_lease_renew(user=requester, lease=lease)
    access_lease_revoke(user=requester, lease=lease)


def test_a_gateway_session_through_the_scoped_user_is_kept_to_its_databases(server, shop, people):
    resource = server[0]
    requester, other = people
    policy = _policy(resource, requester, databases=[shop], approval_required=False, mfa_required=True)
    lease = scoped_lease_of(_ask(policy, requester, resources=[f"{shop}.orders"]))
    with pytest.raises(PermissionDenied, match="MFA"):
        access_scoped_session_open(user=requester, lease=lease, mfa_verified=False)
    with pytest.raises(PermissionDenied):
        access_scoped_session_open(user=other, lease=lease, mfa_verified=True)
    opened = access_scoped_session_open(user=requester, lease=lease, duration=timedelta(days=1), mfa_verified=True)
    assert opened.session.expires_at == lease.expires_at and opened.warnings  # capped at the grant, said so
    assert opened.session.database_allow_list == [shop]
    login = session_login_lookup(username=opened.session.username)
    assert login.upstream.username == lease.username and login.upstream.auth_database == "admin"
    access_lease_revoke(user=requester, lease=lease)
    opened.session.refresh_from_db()
    assert opened.session.state == "ended"


# -- the envelope (no server needed) ---------------------------------------------------------------------
@pytest.fixture
def plain_resource(db):
    return ResourceFactory(name=_name("res"))


def test_the_envelope_refuses_requests_outside_it(plain_resource, people):
    requester, _approver = people
    policy = _policy(
        plain_resource,
        requester,
        databases=["shop", "reports_*"],
        collections=["shop.orders", "reports_*.daily"],
        levels=["read"],
    )
    cases = [
        ({"resources": ["billing.invoices"]}, "resources", "outside the policy's databases"),
        ({"resources": ["shop"]}, "resources", "name collections"),
        ({"resources": ["shop.customers"]}, "resources", "outside the policy's collections"),
        ({"resources": ["shop.system.users"]}, "resources", "system collections"),
        ({"resources": ["admin.orders"]}, "resources", "outside the policy's databases"),
        ({"resources": ["shop.orders"], "level": "readWrite"}, "level", "offers read, not readWrite"),
        ({"resources": ["shop.orders"], "level": ""}, "level", "Choose a permission level"),
        ({"resources": []}, "resources", "at least one"),
    ]
    for scope, field, words in cases:
        scope.setdefault("level", "read")
        with pytest.raises(ValidationError) as refused:
            access_request_create(
                requester=requester, policy=policy, reason="x", duration=timedelta(hours=1), scope=scope
            )
        assert field in refused.value.message_dict, scope
        assert words in " ".join(refused.value.message_dict[field]), (scope, refused.value.message_dict)
    with pytest.raises(ValidationError) as too_long:
        access_request_create(
            requester=requester,
            policy=policy,
            reason="x",
            duration=timedelta(hours=3),
            scope={"resources": ["shop.orders"], "level": "read"},
        )
    assert "At most 2h" in " ".join(too_long.value.message_dict["duration"])
    with pytest.raises(ValidationError) as no_scope:
        access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(hours=1))
    assert "scope" in no_scope.value.message_dict
    fine = access_request_create(
        requester=requester,
        policy=policy,
        reason="x",
        duration=timedelta(hours=1),
        scope={"resources": ["shop.orders", "reports_2024.daily"], "level": "read"},
    )
    assert fine.state == RequestState.PENDING
    assert fine.scope["resources"] == [
        {"db": "shop", "collection": "orders"},
        {"db": "reports_2024", "collection": "daily"},
    ]
    event = AuditEvent.objects.get(action="request.create", target_id=str(fine.pk))
    assert event.data["envelope"]["collections"] == ["shop.orders", "reports_*.daily"]
    assert event.data["scope"]["level"] == "read"
    stranger = UserFactory(username=_name("mallory"))
    with pytest.raises(PermissionDenied):
        access_request_create(
            requester=stranger,
            policy=policy,
            reason="x",
            duration=timedelta(hours=1),
            scope={"resources": ["shop.orders"], "level": "read"},
        )


def test_custom_levels_are_validated_against_mongodb_privilege_actions(plain_resource, people):
    requester, _approver = people
    with pytest.raises(ValidationError) as unknown:
        permission_level_create(actor="test", name="auditor", actions=["find", "findAndModifyEverything"])
    assert "actions" in unknown.value.message_dict
    assert "findAndModifyEverything" in unknown.value.message_dict["actions"][0]
    with pytest.raises(ValidationError) as escalating:
        permission_level_create(actor="test", name="sneaky", actions=["find", "grantRole"])
    assert "grantRole" in escalating.value.message_dict["actions"][0]
    with pytest.raises(ValidationError) as builtin:
        permission_level_create(actor="test", name="read", actions=["find"])
    assert "name" in builtin.value.message_dict
    level = permission_level_create(actor="test", name="auditor", actions=["find", "listIndexes", "collStats"])
    assert AuditEvent.objects.filter(action="permissionlevel.create", target_id=str(level.pk)).exists()

    with pytest.raises(ValidationError) as unknown_level:
        _policy(plain_resource, requester, databases=["shop"], levels=["read", "nosuchlevel"])
    assert "scope_levels" in unknown_level.value.message_dict
    with pytest.raises(ValidationError) as bad_pattern:
        _policy(plain_resource, requester, databases=["shop/x"], levels=["read"])
    assert "scope_databases" in bad_pattern.value.message_dict
    with pytest.raises(ValidationError) as bad_collection:
        _policy(plain_resource, requester, databases=["shop"], collections=["orders"], levels=["read"])
    assert "scope_collections" in bad_collection.value.message_dict

    policy = _policy(plain_resource, requester, databases=["shop"], levels=["auditor"])
    with pytest.raises(ValidationError, match="offered by"):
        permission_level_delete(actor="test", level=level)
    request = _ask(policy, requester, resources=["shop.orders"], level="auditor")
    assert request.scope["actions"] == ["collStats", "find", "listIndexes"]
    assert PermissionLevel.objects.filter(name="auditor").exists()


def test_patterns_never_reach_the_servers_own_databases_or_system_collections():
    from access.scopes import ScopeResource, collection_allowed, database_allowed, parse_resources

    assert database_allowed(["*"], "shop") and database_allowed(["rep?rts_*"], "reports_2024")
    assert not any(database_allowed(["*"], name) for name in ("admin", "local", "config"))
    assert database_allowed(["admin"], "admin")  # named literally, it is allowed
    assert collection_allowed(["*.orders*"], "shop", "orders_2024")
    assert not collection_allowed(["*.*"], "shop", "system.users")
    assert parse_resources(["shop.orders", "shop", {"db": "shop", "collection": "x"}, "shop"]) == [
        ScopeResource("shop")
    ]
    assert parse_resources(["shop.orders.archive"]) == [ScopeResource("shop", "orders.archive")]


def test_an_approver_may_narrow_a_whole_database_to_one_of_its_collections(plain_resource, people):
    requester, _approver = people
    policy = _policy(plain_resource, requester, databases=["shop"], levels=["read", "readWrite"])
    request = _ask(policy, requester, resources=["shop"], level="readWrite")
    from access.services.scoped import scope_narrow

    narrowed = scope_narrow(request=request, resources=["shop.orders"], level="read")
    assert narrowed["scope"]["resources"] == [{"db": "shop", "collection": "orders"}]
    assert narrowed["scope"]["actions"] == sorted(READ)
    with pytest.raises(ValidationError) as other_db:
        scope_narrow(request=request, resources=["shopping.orders"])
    assert "was not asked for" in other_db.value.message_dict["resources"][0]
