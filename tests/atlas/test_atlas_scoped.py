"""Scoped access on Atlas, over real HTTP against the local Admin API server: built-in roles with a collection where
the level is one, a custom database role only when needed (reused when identical, deleted with its last holder,
refused near the project's limit), and the same life cycle as leases (credentials only once applied, expiry,
revocation, the reconciler)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import timezone

from access.models import AuditEvent, Lease
from access.models.leases import LeaseState
from access.models.policies import RequestState
from access.services.leases import ConnectorCache, leases_revoke_due
from access.services.policies import access_policy_create
from access.services.reconcile import users_reconcile
from access.services.requests import access_request_approve, access_request_create
from access.services.scoped import permission_level_create, role_prefix, scoped_lease_of
from access.services.usage import access_lease_revoke, access_scoped_reveal
from connectors import ConnectorError, connector_for
from connectors.atlas import CUSTOM_ROLES_LIMIT_NAME, ProjectLimit
from tests.factories import UserFactory
from tests.helpers import make_approver, token_client, verified_client
from tests.helpers import unique_name as _name

pytestmark = pytest.mark.usefixtures("fast_atlas")

AUDITOR = ["collStats", "find", "listIndexes"]
AUDITOR_ATLAS = [
    {"action": name, "resources": [{"db": "shop", "collection": "orders"}]}
    for name in ("COLL_STATS", "FIND", "LIST_INDEXES")
]


@pytest.fixture
def people(db):
    return UserFactory(username=_name("alice")), make_approver(UserFactory(username=_name("bob")))


@pytest.fixture
def auditor(db):
    return permission_level_create(actor="test", name="auditor", actions=AUDITOR)


def _policy(resource, user, *, levels=("read", "readWrite", "dbAdmin"), approval_required=False):
    return access_policy_create(
        actor="test",
        name=_name("atlas-scoped"),
        user=user,
        scope_resource=resource,
        scope_databases=["shop", "reports_*"],
        scope_levels=list(levels),
        max_duration=timedelta(hours=4),
        approval_required=approval_required,
    )


def _ask(policy, user, resources, level="read"):
    return access_request_create(
        requester=user,
        policy=policy,
        reason="check the orders",
        duration=timedelta(hours=1),
        scope={"resources": resources, "level": level},
    )


def _fill_custom_roles(atlas_api, count: int) -> None:
    for n in range(count):
        atlas_api.add_custom_role(
            {
                "roleName": f"team-role-{n}",
                "actions": [{"action": "FIND", "resources": [{"db": f"t{n}", "collection": ""}]}],
            }
        )


def test_read_on_a_collection_is_the_builtin_role_with_its_collection_and_credentials_wait_for_every_cluster(
    atlas_api, atlas_resource, people
):
    requester, approver = people
    atlas_api.state.pending_polls = 3
    policy = _policy(atlas_resource, requester, approval_required=True)
    request = _ask(policy, requester, ["shop.orders", "reports_2024"])
    assert request.state == RequestState.PENDING
    approved = access_request_approve(request=request, approver=approver)
    lease = scoped_lease_of(approved)

    assert lease.state == LeaseState.ACTIVE
    assert atlas_api.is_applied(), "credentials were ready while a cluster still said PENDING"
    user = atlas_api.user(lease.username)
    assert user["roles"] == [
        {"roleName": "read", "databaseName": "shop", "collectionName": "orders"},
        {"roleName": "read", "databaseName": "reports_2024"},
    ]
    assert {"key": "pam-lease", "value": lease.lease_id} in user["labels"]
    assert atlas_api.state.custom_roles == {} and lease.server_role == ""
    assert access_scoped_reveal(user=requester, lease=lease) == user["password"]

    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk=lease.pk).update(issued_at=past - timedelta(hours=1), expires_at=past)
    with ConnectorCache() as connectors:
        assert leases_revoke_due(connectors=connectors) == 1
    lease.refresh_from_db()
    assert lease.state == LeaseState.EXPIRED and atlas_api.user(lease.username) is None
    assert atlas_api.is_applied()


def test_db_admin_on_a_whole_database_is_builtin_but_on_a_collection_needs_a_custom_role(
    atlas_api, atlas_resource, people
):
    requester, _approver = people
    policy = _policy(atlas_resource, requester)
    whole = scoped_lease_of(_ask(policy, requester, ["shop"], level="dbAdmin"))
    assert atlas_api.user(whole.username)["roles"] == [{"roleName": "dbAdmin", "databaseName": "shop"}]
    assert atlas_api.state.custom_roles == {}
    one = scoped_lease_of(_ask(policy, requester, ["shop.orders"], level="dbAdmin"))
    assert one.server_role.startswith(role_prefix())
    role = atlas_api.custom_role(one.server_role)
    assert {item["action"] for item in role["actions"]} >= {"COLL_MOD", "DROP_COLLECTION", "CREATE_INDEX"}
    assert all(item["resources"] == [{"db": "shop", "collection": "orders"}] for item in role["actions"])
    assert atlas_api.user(one.username)["roles"] == [{"roleName": one.server_role, "databaseName": "admin"}]
    for lease in (whole, one):
        access_lease_revoke(user=requester, lease=lease)
    assert atlas_api.state.custom_roles == {}


def test_a_custom_level_makes_one_custom_role_shared_by_identical_grants_and_deleted_with_its_last_holder(
    atlas_api, atlas_resource, people, auditor
):
    requester, _approver = people
    colleague = UserFactory(username=_name("carol"))
    policy = _policy(atlas_resource, requester, levels=["read", "auditor"])
    colleague_policy = _policy(atlas_resource, colleague, levels=["auditor"])
    first = scoped_lease_of(_ask(policy, requester, ["shop.orders"], level="auditor"))
    second = scoped_lease_of(_ask(colleague_policy, colleague, ["shop.orders"], level="auditor"))

    assert first.state == second.state == LeaseState.ACTIVE
    assert first.server_role == second.server_role and first.server_role.startswith(role_prefix())
    assert list(atlas_api.state.custom_roles) == [first.server_role]  # one role, reused
    role = atlas_api.custom_role(first.server_role)
    assert sorted(role["actions"], key=lambda a: a["action"]) == AUDITOR_ATLAS
    for lease in (first, second):
        assert atlas_api.user(lease.username)["roles"] == [{"roleName": first.server_role, "databaseName": "admin"}]

    access_lease_revoke(user=requester, lease=first)
    first.refresh_from_db()
    assert first.state == LeaseState.REVOKED and atlas_api.user(first.username) is None
    assert atlas_api.custom_role(first.server_role) is not None  # still held by the colleague's user
    kept = AuditEvent.objects.get(action="lease.revoke", target_id=str(first.pk))
    assert kept.data["role"] == f"kept {first.server_role} (still held by 1 other user)"

    access_lease_revoke(user=colleague, lease=second)
    assert atlas_api.custom_role(first.server_role) is None
    assert atlas_api.is_applied()
    deleted = AuditEvent.objects.get(action="lease.revoke", target_id=str(second.pk))
    assert deleted.data["role"] == f"deleted {first.server_role}"


def test_an_identical_role_an_administrator_made_is_reused_and_never_deleted(
    atlas_api, atlas_resource, people, auditor
):
    requester, _approver = people
    atlas_api.add_custom_role({"roleName": "ops-auditor", "actions": list(reversed(AUDITOR_ATLAS))})
    policy = _policy(atlas_resource, requester, levels=["auditor"])
    lease = scoped_lease_of(_ask(policy, requester, ["shop.orders"], level="auditor"))
    assert lease.server_role == "ops-auditor"
    assert atlas_api.user(lease.username)["roles"] == [{"roleName": "ops-auditor", "databaseName": "admin"}]
    assert list(atlas_api.state.custom_roles) == ["ops-auditor"]
    access_lease_revoke(user=requester, lease=lease)
    assert atlas_api.custom_role("ops-auditor") is not None


def test_near_the_custom_role_limit_requests_are_refused_in_words_and_built_in_levels_still_work(
    atlas_api, atlas_resource, people, auditor, settings
):
    requester, approver = people
    settings.PAM_ATLAS_CUSTOM_ROLE_LIMIT, settings.PAM_ATLAS_CUSTOM_ROLE_HEADROOM = 100, 5
    _fill_custom_roles(atlas_api, 95)
    policy = _policy(atlas_resource, requester, levels=["read", "auditor"], approval_required=True)
    with pytest.raises(ValidationError) as refused:
        _ask(policy, requester, ["shop.orders"], level="auditor")
    message = " ".join(refused.value.message_dict["level"])
    assert "already has 95 custom roles" in message and "allows 100 per project" in message
    assert "keeps 5 of them free" in message
    assert len(atlas_api.state.custom_roles) == 95

    built_in = access_request_approve(request=_ask(policy, requester, ["shop.orders"]), approver=approver)
    assert scoped_lease_of(built_in).state == LeaseState.ACTIVE

    # Room when asked, none by the time it is approved: the grant fails in words, audited, and makes nothing.
    atlas_api.state.custom_roles.pop("team-role-0")
    pending = _ask(policy, requester, ["shop.orders"], level="auditor")
    _fill_custom_roles(atlas_api, 1)
    approved = access_request_approve(request=pending, approver=approver)
    failed = scoped_lease_of(approved)
    assert failed.display_state == LeaseState.FAILED and "already has 95 custom roles" in failed.last_error
    assert atlas_api.user(failed.username) is None and len(atlas_api.state.custom_roles) == 95
    event = AuditEvent.objects.get(action="scoped.grant_failed", target_id=str(failed.pk))
    assert "custom roles" in event.data["error"]


def test_the_limit_and_usage_come_from_the_projects_limits_and_an_identical_role_is_reused_at_the_limit(
    atlas_api, atlas_resource, people, auditor, settings
):
    requester, _approver = people
    # The setting says 100; the project's own limit, as Atlas reports it, is 10 and wins.
    settings.PAM_ATLAS_CUSTOM_ROLE_LIMIT, settings.PAM_ATLAS_CUSTOM_ROLE_HEADROOM = 100, 1
    atlas_api.state.custom_role_limit = 10
    _fill_custom_roles(atlas_api, 8)
    with connector_for(atlas_resource) as connector:
        assert connector.custom_role_limit() == ProjectLimit(CUSTOM_ROLES_LIMIT_NAME, 10, 8, "atlas")
    assert atlas_api.count("GET", f"/limits/{CUSTOM_ROLES_LIMIT_NAME}", 200) == 1
    policy = _policy(atlas_resource, requester, levels=["auditor"])
    first = scoped_lease_of(_ask(policy, requester, ["shop.orders"], level="auditor"))
    assert first.state == LeaseState.ACTIVE and len(atlas_api.state.custom_roles) == 9

    # 9 of 10 with one kept free: refused in words, before anyone approves, naming Atlas's limit.
    with pytest.raises(ValidationError) as refused:
        _ask(policy, requester, ["shop.customers"], level="auditor")
    message = " ".join(refused.value.message_dict["level"])
    assert "already has 9 custom roles" in message and "Atlas allows 10 per project" in message
    assert CUSTOM_ROLES_LIMIT_NAME in message and "keeps 1 of them free" in message
    assert "PAM_ATLAS_CUSTOM_ROLE_LIMIT" not in message

    # Nothing kept free: the tenth role is made, and at 10 of 10 the portal refuses before Atlas would (no POST).
    settings.PAM_ATLAS_CUSTOM_ROLE_HEADROOM = 0
    tenth = scoped_lease_of(_ask(policy, requester, ["shop.customers"], level="auditor"))
    assert tenth.state == LeaseState.ACTIVE and len(atlas_api.state.custom_roles) == 10
    posts = atlas_api.count("POST", "/customDBRoles/roles")
    with pytest.raises(ValidationError) as full:
        _ask(policy, requester, ["shop.invoices"], level="auditor")
    message = " ".join(full.value.message_dict["level"])
    assert "already has 10 custom roles" in message and "Atlas allows 10 per project" in message
    assert "keeps" not in message
    assert atlas_api.count("POST", "/customDBRoles/roles") == posts
    assert atlas_api.count("POST", "/customDBRoles/roles", 400) == 0

    # At the limit, a grant identical to an existing role reuses it and counts nothing more.
    again = scoped_lease_of(_ask(policy, requester, ["shop.orders"], level="auditor"))
    assert again.state == LeaseState.ACTIVE and again.server_role == first.server_role
    assert len(atlas_api.state.custom_roles) == 10 and atlas_api.count("POST", "/customDBRoles/roles") == posts
    assert atlas_api.user(again.username)["roles"] == [{"roleName": first.server_role, "databaseName": "admin"}]


def test_where_atlas_reports_no_project_limits_the_setting_is_the_limit(
    atlas_api, atlas_resource, people, auditor, settings
):
    requester, _approver = people
    atlas_api.state.project_limits = False  # an Atlas-compatible API without the limits endpoint: 404
    settings.PAM_ATLAS_CUSTOM_ROLE_LIMIT, settings.PAM_ATLAS_CUSTOM_ROLE_HEADROOM = 12, 2
    _fill_custom_roles(atlas_api, 10)
    with connector_for(atlas_resource) as connector:
        assert connector.custom_role_limit() == ProjectLimit(CUSTOM_ROLES_LIMIT_NAME, 12, None, "setting")
    policy = _policy(atlas_resource, requester, levels=["auditor"])
    with pytest.raises(ValidationError) as refused:
        _ask(policy, requester, ["shop.orders"], level="auditor")
    message = " ".join(refused.value.message_dict["level"])
    assert "already has 10 custom roles" in message and "allows 12 per project" in message
    assert "PAM_ATLAS_CUSTOM_ROLE_LIMIT" in message and "does not report its project limits" in message
    assert atlas_api.count("GET", "/limits/", 404) >= 1 and len(atlas_api.state.custom_roles) == 10


def test_other_failures_of_the_limits_endpoint_are_not_taken_for_the_setting(atlas_api, atlas_resource, settings):
    settings.PAM_ATLAS_CUSTOM_ROLE_LIMIT = 1000
    atlas_api.fail_next("GET", "/limits/", status=403, error_code="USER_UNAUTHORIZED")
    with connector_for(atlas_resource) as connector, pytest.raises(ConnectorError) as refused:
        connector.custom_role_limit()
    assert refused.value.kind == "permission" and "USER_UNAUTHORIZED" in str(refused.value)
    with connector_for(atlas_resource) as connector:
        users_limit = connector.project_limit("atlas.project.security.databaseAccess.users")
    assert users_limit == {
        "name": "atlas.project.security.databaseAccess.users",
        "value": 100,
        "currentUsage": 0,
        "defaultLimit": 100,
        "maximumLimit": 900,
    }


def test_the_local_admin_api_enforces_the_project_limit_itself(atlas_api, atlas_resource, fast_atlas):
    atlas_api.state.custom_role_limit = 3
    _fill_custom_roles(atlas_api, 3)
    with connector_for(atlas_resource) as connector, pytest.raises(ConnectorError) as refused:
        connector.create_custom_role(name="one-too-many", actions=AUDITOR_ATLAS)
    assert "CUSTOM_ROLE_LIMIT_EXCEEDED" in str(refused.value) and refused.value.kind == "config"
    with connector_for(atlas_resource) as connector, pytest.raises(ConnectorError) as unknown:
        connector.create_custom_role(name="x", actions=[{"action": "FIND_EVERYTHING", "resources": []}])
    assert "FIND_EVERYTHING" in str(unknown.value)


def test_an_action_atlas_custom_roles_lack_is_refused_before_anyone_approves(atlas_api, atlas_resource, people):
    requester, _approver = people
    permission_level_create(actor="test", name="cursor-killer", actions=["find", "killAnyCursor"])
    policy = _policy(atlas_resource, requester, levels=["cursor-killer"])
    with pytest.raises(ValidationError) as refused:
        _ask(policy, requester, ["shop.orders"], level="cursor-killer")
    assert "Atlas custom roles do not offer killAnyCursor" in " ".join(refused.value.message_dict["level"])


def test_the_reconciler_deletes_orphaned_request_roles_on_atlas(atlas_api, atlas_resource, people, auditor):
    requester, _approver = people
    policy = _policy(atlas_resource, requester, levels=["auditor"])
    live = scoped_lease_of(_ask(policy, requester, ["shop.orders"], level="auditor"))
    orphan = f"{role_prefix()}leftover"
    atlas_api.add_custom_role(
        {"roleName": orphan, "actions": [{"action": "FIND", "resources": [{"db": "x", "collection": ""}]}]}
    )
    atlas_api.add_custom_role({"roleName": "team-role", "actions": []})
    report = users_reconcile(resource=atlas_resource)
    assert [r.name for r in report.roles_dropped] == [orphan]
    assert set(atlas_api.state.custom_roles) == {live.server_role, "team-role"}
    assert AuditEvent.objects.filter(action="reconcile.drop_role", data__role=orphan).exists()


# -- what a requester may pick: the databases Atlas's Admin API lists ------------------------------------------------
def _envelope(resource, user, databases, collections=()):
    cache.clear()  # the databases a resource lists are cached
    return access_policy_create(
        actor="test",
        name=_name("atlas-envelope"),
        user=user,
        scope_resource=resource,
        scope_databases=list(databases),
        scope_collections=list(collections),
        scope_levels=["read"],
        max_duration=timedelta(hours=4),
    )


def _databases_asked(atlas_api) -> set[str]:
    with atlas_api.state.lock:
        seen = list(atlas_api.state.requests_seen)
    return {m.group(1) for _, path, _ in seen if (m := re.search(r"/processes/([^/]+)/databases$", path))}


def test_an_atlas_envelope_offers_the_databases_its_clusters_hold_read_from_the_admin_api_and_cached(
    atlas_api, atlas_resource, people, monkeypatch
):
    requester, _approver = people
    monkeypatch.setattr("connectors.atlas.PAGE_SIZE", 2)  # several pages of processes and of databases
    atlas_api.set_databases("Cluster0", ["shop", "billing"])
    atlas_api.set_databases("Cluster1", ["shop_eu", "reports"])
    policy = _envelope(atlas_resource, requester, ["shop*"])
    alice = token_client(requester)

    choices = alice.get(f"/api/v1/scoped/envelopes/{policy.pk}/choices").json()
    assert choices["listed_from_server"] is True and choices["error"] == ""
    assert choices["databases"] == [
        {"name": "shop", "whole_database": True, "collections": []},
        {"name": "shop_eu", "whole_database": True, "collections": []},
    ]
    assert choices["collections_listed_from_server"] is False
    assert "lists databases but not collections" in choices["note"]
    primaries = {p["id"] for p in atlas_api.processes() if p["typeName"] == "REPLICA_PRIMARY"}
    assert len(primaries) == 2 and _databases_asked(atlas_api) == primaries  # one mongod per cluster, its primary
    asked = (atlas_api.count("GET", "/processes"), atlas_api.count("GET", "/databases"))
    assert asked[1] == 2 * 3  # 5 databases per cluster (admin, config, local and 2), 2 a page

    atlas_api.set_databases("Cluster0", ["shop", "billing", "shop_archive"])
    assert alice.get(f"/api/v1/scoped/envelopes/{policy.pk}/choices").json() == choices  # cached: Atlas not asked
    assert (atlas_api.count("GET", "/processes"), atlas_api.count("GET", "/databases")) == asked
    fresh = alice.get(f"/api/v1/scoped/envelopes/{policy.pk}/choices?refresh=1").json()
    assert [d["name"] for d in fresh["databases"]] == ["shop", "shop_archive", "shop_eu"]

    page = verified_client(requester).get(f"/requests/scoped/{policy.pk}/").content.decode()
    assert 'value="shop_eu"' in page and 'value="billing"' not in page
    assert 'id="collections-note"' in page and "lists databases but not collections" in page


def test_on_atlas_the_collections_offered_are_the_ones_the_envelope_names(atlas_api, atlas_resource, people):
    requester, _approver = people
    atlas_api.set_databases("Cluster0", ["shop", "shop_eu", "billing"])
    policy = _envelope(
        atlas_resource, requester, ["shop*", "billing"], ["shop.orders", "shop_eu.inv*", "*.audit", "billing.ledger"]
    )
    choices = token_client(requester).get(f"/api/v1/scoped/envelopes/{policy.pk}/choices").json()
    assert choices["listed_from_server"] is True
    assert choices["databases"] == [
        {"name": "billing", "whole_database": False, "collections": ["audit", "ledger"]},
        {"name": "shop", "whole_database": False, "collections": ["audit", "orders"]},
        {"name": "shop_eu", "whole_database": False, "collections": ["audit"]},  # inv* is typed, not listed
    ]


def test_an_admin_api_error_is_said_in_words_and_the_envelopes_literal_names_are_offered(
    atlas_api, atlas_resource, people
):
    requester, _approver = people
    atlas_api.set_databases("Cluster0", ["shop", "shop_eu", "billing"])
    policy = _envelope(atlas_resource, requester, ["shop", "shop_*"])
    atlas_api.fail_next("GET", "/processes", status=403, error_code="IP_ADDRESS_NOT_ON_ACCESS_LIST")
    alice = token_client(requester)

    refused = alice.get(f"/api/v1/scoped/envelopes/{policy.pk}/choices").json()
    assert refused["listed_from_server"] is False
    assert refused["error"].startswith("The databases could not be read from atlas-proj: Atlas refused listing")
    assert "IP_ADDRESS_NOT_ON_ACCESS_LIST" in refused["error"] and "HTTP 403" in refused["error"]
    assert refused["databases"] == [{"name": "shop", "whole_database": True, "collections": []}]
    assert atlas_api.state.private_key not in refused["error"]

    again = alice.get(f"/api/v1/scoped/envelopes/{policy.pk}/choices").json()  # a failure is not cached
    assert again["listed_from_server"] is True and [d["name"] for d in again["databases"]] == ["shop", "shop_eu"]


def test_the_local_admin_api_checks_the_version_and_the_page_of_its_process_lists(atlas_api):
    auth = requests.auth.HTTPDigestAuth(atlas_api.state.public_key, atlas_api.state.private_key)
    base = f"{atlas_api.base_url}/api/atlas/v2/groups/{atlas_api.state.group_id}/processes"
    versioned = {"Accept": "application/vnd.atlas.2023-01-01+json"}
    with requests.Session() as http:
        http.auth = auth
        unversioned = http.get(base, headers={"Accept": "application/json"}, timeout=5)
        assert unversioned.status_code == 406 and unversioned.json()["errorCode"] == "INVALID_VERSION_DATE"
        assert http.get(base, headers=versioned, params={"itemsPerPage": 501}, timeout=5).status_code == 400
        listed = http.get(base, headers=versioned, params={"itemsPerPage": 500}, timeout=5).json()
        assert listed["totalCount"] == 6 and {p["typeName"] for p in listed["results"]} == {
            "REPLICA_PRIMARY",
            "REPLICA_SECONDARY",
        }
        one = listed["results"][0]["id"]
        databases = http.get(f"{base}/{one}/databases", headers=versioned, timeout=5).json()
        assert [d["databaseName"] for d in databases["results"]] == ["admin", "config", "local"]
        assert http.get(f"{base}/nowhere:27017/databases", headers=versioned, timeout=5).status_code == 404
