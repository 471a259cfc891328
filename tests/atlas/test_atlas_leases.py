"""The Atlas lease life cycle over real HTTP against the local Admin API server: issue, wait, renew, revoke, expire.

Each test asserts what an operator would see in Atlas (the user, its roles, scopes, labels and
deleteAfterDate, whether the clusters have applied the change) and in the portal (lease state, errors in words).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from access.models import AuditEvent, Lease
from access.models.leases import LeaseState
from access.services.leases import ConnectorCache, LeaseError, lease_issue, lease_renew, lease_revoke, leases_revoke_due
from access.services.reconcile import users_reconcile
from connectors import connector_for
from tests.factories import DynamicRoleFactory, UserFactory
from tests.helpers import audit_text
from tests.helpers import iso_time as parse

pytestmark = pytest.mark.usefixtures("fast_atlas")

ROLES = [
    {"roleName": "readWrite", "databaseName": "orders", "collectionName": "invoices"},
    {"roleName": "read", "databaseName": "reports"},
]


@pytest.fixture
def atlas_role(atlas_resource):
    return DynamicRoleFactory(resource=atlas_resource, name="orders-rw", db="admin", roles=ROLES, scopes=[])


def test_issue_returns_credentials_only_once_every_cluster_applied_the_user(atlas_api, atlas_role):
    atlas_api.state.pending_polls = 3
    lease, password = lease_issue(role=atlas_role, holder=UserFactory(), ttl=timedelta(hours=2))

    assert atlas_api.is_applied(), "credentials were handed out while a cluster still said PENDING"
    for cluster in atlas_api.state.clusters:
        assert atlas_api.count("GET", f"/clusters/{cluster}/status") >= 4  # 3 x PENDING, then APPLIED
    user = atlas_api.user(lease.username)
    assert user["password"] == password
    assert user["databaseName"] == "admin" and lease.db == "admin"
    assert user["roles"] == ROLES
    assert "scopes" not in user or user["scopes"] == []
    assert {"key": "pam-lease", "value": lease.lease_id} in user["labels"]
    assert {"key": "pam-system", "value": "mongo-pam"} in user["labels"]
    assert user["description"].startswith("pam:mongo-pam ")
    assert abs(parse(user["deleteAfterDate"]) - lease.expires_at) < timedelta(seconds=2)
    assert lease.state == LeaseState.ACTIVE
    assert AuditEvent.objects.filter(action="lease.issue", target_id=str(lease.pk)).exists()


def test_scoped_role_waits_only_for_its_clusters(atlas_api, atlas_resource):
    role = DynamicRoleFactory(
        resource=atlas_resource, db="admin", roles=ROLES, scopes=[{"name": "Cluster1", "type": "CLUSTER"}]
    )
    lease, _ = lease_issue(role=role, holder=UserFactory())

    assert atlas_api.user(lease.username)["scopes"] == [{"name": "Cluster1", "type": "CLUSTER"}]
    assert atlas_api.count("GET", "/clusters/Cluster1/status") >= 3
    assert atlas_api.count("GET", "/clusters/Cluster0/status") == 0


def test_a_lease_never_outlives_the_week_atlas_allows_for_delete_after_date(atlas_api, atlas_resource):
    atlas_resource.max_ttl = timedelta(days=30)
    atlas_resource.save()
    role = DynamicRoleFactory(resource=atlas_resource, db="admin", roles=ROLES, default_ttl=timedelta(days=10))
    lease, _ = lease_issue(role=role, holder=UserFactory())

    delete_after = parse(atlas_api.user(lease.username)["deleteAfterDate"])
    assert delete_after <= datetime.now(UTC) + timedelta(days=7)
    assert lease.expires_at - timezone.now() <= timedelta(days=7)
    assert abs(delete_after - lease.expires_at) < timedelta(seconds=2)


def test_renew_moves_delete_after_date(atlas_api, atlas_role):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory(), ttl=timedelta(minutes=10))
    before = parse(atlas_api.user(lease.username)["deleteAfterDate"])

    renewed = lease_renew(lease=lease, increment=timedelta(hours=3))

    after = parse(atlas_api.user(lease.username)["deleteAfterDate"])
    assert after - before > timedelta(hours=2)
    assert abs(after - renewed.expires_at) < timedelta(seconds=2)
    assert atlas_api.count("PATCH", f"/databaseUsers/admin/{lease.username}", 200) == 1


def test_renew_of_a_user_atlas_already_deleted_is_refused_in_words(atlas_api, atlas_role):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory())
    atlas_api.remove_user(lease.username)

    with pytest.raises(LeaseError) as caught:
        lease_renew(lease=lease, increment=timedelta(hours=1))

    assert "USERNAME_NOT_FOUND" in caught.value.message
    assert Lease.objects.get(pk=lease.pk).expires_at == lease.expires_at


def test_revoke_deletes_the_user_and_waits_for_the_clusters(atlas_api, atlas_role):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory())
    atlas_api.state.pending_polls = 4

    revoked = lease_revoke(lease=lease, actor="test")

    assert revoked.state == LeaseState.REVOKED
    assert atlas_api.user(lease.username) is None
    assert atlas_api.is_applied(), "the revocation was recorded before the clusters applied the deletion"
    assert AuditEvent.objects.filter(action="lease.revoke", target_id=str(lease.pk)).exists()


def test_revoke_of_a_user_already_gone_counts_as_done(atlas_api, atlas_role):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory())
    atlas_api.remove_user(lease.username)

    revoked = lease_revoke(lease=lease, actor="test")

    assert revoked.state == LeaseState.REVOKED
    assert revoked.last_error == ""
    assert atlas_api.count("DELETE", f"/databaseUsers/admin/{lease.username}", 404) == 1


def test_throttled_creation_waits_retry_after_then_succeeds(atlas_api, atlas_role):
    atlas_api.fail_next("POST", "/databaseUsers", status=429, retry_after="1", times=1)
    started = time.monotonic()

    lease, _ = lease_issue(role=atlas_role, holder=UserFactory())

    assert time.monotonic() - started >= 1.0, "Retry-After was not honoured"
    assert atlas_api.count("POST", "/databaseUsers", 429) == 1
    assert atlas_api.count("POST", "/databaseUsers", 201) == 1
    assert atlas_api.user(lease.username) is not None


def test_a_creation_whose_answer_was_lost_is_not_taken_for_a_conflict_on_retry(atlas_api, atlas_role):
    """Atlas created the user but the client saw a 500: the retry's 409 names our own lease, so it is done."""
    atlas_api.fail_next("POST", "/databaseUsers", status=500, carry_out=True)

    lease, _ = lease_issue(role=atlas_role, holder=UserFactory())

    assert atlas_api.count("POST", "/databaseUsers", 500) == 1
    assert atlas_api.count("POST", "/databaseUsers", 409) == 1
    assert lease.state == LeaseState.ACTIVE
    assert {"key": "pam-lease", "value": lease.lease_id} in atlas_api.user(lease.username)["labels"]


def test_server_errors_are_retried_with_backoff(atlas_api, atlas_role):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory())
    atlas_api.fail_next("DELETE", "/databaseUsers/", status=500, times=2)
    atlas_api.fail_next("GET", "/status", status=503, times=1, retry_after="0")

    revoked = lease_revoke(lease=lease, actor="test")

    assert revoked.state == LeaseState.REVOKED
    assert atlas_api.count("DELETE", "/databaseUsers/", 500) == 2


def test_persistent_throttling_fails_the_revocation_in_words_and_schedules_a_retry(atlas_api, atlas_role, settings):
    settings.PAM_ATLAS_MAX_RETRIES = 2
    lease, password = lease_issue(role=atlas_role, holder=UserFactory())
    atlas_api.fail_next("DELETE", "/databaseUsers/", status=429, times=3, retry_after="0")

    failed = lease_revoke(lease=lease, actor="test")

    assert failed.state == LeaseState.REVOKE_FAILED
    assert "RATE_LIMITED" in failed.last_error and "gave up after 3 attempts" in failed.last_error
    assert failed.next_attempt_at is not None
    assert password not in failed.last_error
    # The next attempt (the sweeper's) succeeds.
    Lease.objects.filter(pk=lease.pk).update(next_attempt_at=timezone.now())
    with ConnectorCache() as connectors:
        assert leases_revoke_due(connectors=connectors) == 1
    assert Lease.objects.get(pk=lease.pk).state == LeaseState.REVOKED
    assert atlas_api.user(lease.username) is None


def test_clusters_that_never_apply_time_out_with_a_clear_error_and_no_credentials(atlas_api, atlas_role, settings):
    settings.PAM_ATLAS_APPLY_TIMEOUT = 0.3
    atlas_api.state.pending_polls = 1000

    with pytest.raises(LeaseError) as caught:
        lease_issue(role=atlas_role, holder=UserFactory())

    assert "has not applied the user change on cluster(s) Cluster0, Cluster1" in caught.value.message
    lease = Lease.objects.get()
    assert lease.state == LeaseState.REVOKE_FAILED and lease.revoke_reason == "issue_failed"
    # The sweeper removes the half-created user once Atlas catches up.
    atlas_api.state.pending = {}
    atlas_api.state.pending_polls = 1
    settings.PAM_ATLAS_APPLY_TIMEOUT = 10.0
    with ConnectorCache() as connectors:
        assert leases_revoke_due(connectors=connectors) == 1
    assert atlas_api.user(lease.username) is None
    # Cleaned up, it stays what it was to its holder: a failed attempt, not a revoked lease.
    assert Lease.objects.get(pk=lease.pk).state == LeaseState.FAILED


def test_expired_leases_are_revoked_by_the_sweeper(atlas_api, atlas_role):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory(), ttl=timedelta(minutes=5))
    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk=lease.pk).update(issued_at=past - timedelta(minutes=5), expires_at=past)

    with ConnectorCache() as connectors:
        handled = leases_revoke_due(connectors=connectors)

    assert handled == 1
    expired = Lease.objects.get(pk=lease.pk)
    assert expired.state == LeaseState.EXPIRED
    assert atlas_api.user(lease.username) is None


def test_the_sweeper_loop_revokes_expired_atlas_leases_within_seconds(atlas_api, atlas_role):
    from access.services.sweeper import lease_sweeper_run

    leases = [lease_issue(role=atlas_role, holder=UserFactory(), ttl=timedelta(minutes=5))[0] for _ in range(3)]
    # Expire them in the portal only: Atlas's own deleteAfterDate (5 min) must not be what removes them.
    Lease.objects.filter(pk__in=[lease.pk for lease in leases]).update(
        expires_at=timezone.now() + timedelta(milliseconds=500)
    )

    report = lease_sweeper_run(run_for=2.5, interval=0.2)

    assert report.acquired and report.completed and report.handled == 3
    for lease in leases:
        lease.refresh_from_db()
        assert lease.state == LeaseState.EXPIRED and lease.revoke_reason == "expired"
        assert lease.revoked_at - lease.expires_at < timedelta(seconds=2.5)
        assert atlas_api.user(lease.username) is None
    assert atlas_api.is_applied()


def test_atlas_deletes_the_user_itself_at_delete_after_date_and_the_sweeper_accepts_it(atlas_api, atlas_role):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory(), ttl=timedelta(seconds=2))
    time.sleep(2.2)
    assert atlas_api.user(lease.username) is None  # Atlas's safety net

    with ConnectorCache() as connectors:
        leases_revoke_due(connectors=connectors)

    assert Lease.objects.get(pk=lease.pk).state == LeaseState.EXPIRED


def test_reconcile_drops_tagged_atlas_users_no_live_lease_explains(atlas_api, atlas_role, atlas_resource):
    kept, _ = lease_issue(role=atlas_role, holder=UserFactory())
    gone, _ = lease_issue(role=atlas_role, holder=UserFactory())
    Lease.objects.filter(pk=gone.pk).update(state=LeaseState.REVOKED)  # recorded as revoked, user left behind
    atlas_api.add_user({"username": "by-hand", "labels": [], "roles": ROLES})
    atlas_api.add_user({"username": "other-portal", "labels": [{"key": "pam-system", "value": "another-portal"}]})
    atlas_api.add_user({"username": "label-less", "description": "pam:mongo-pam creds/orders-rw/123"})
    atlas_api.add_user({"username": kept.username + "-twin", "description": "pam:mongo-pam x"})

    dry = users_reconcile(resource=atlas_resource, dry_run=True)
    assert sorted(o.username for o in dry.found) == sorted([gone.username, "label-less", kept.username + "-twin"])
    assert atlas_api.user(gone.username) is not None

    report = users_reconcile(dry_run=False)

    assert report.errors == {}
    assert sorted(o.username for o in report.dropped) == sorted([gone.username, "label-less", kept.username + "-twin"])
    for name in (gone.username, "label-less"):
        assert atlas_api.user(name) is None
    for name in (kept.username, "by-hand", "other-portal"):
        assert atlas_api.user(name) is not None
    assert AuditEvent.objects.filter(action="reconcile.drop_user").count() == 3


def test_a_user_atlas_keeps_only_by_description_is_explained_by_its_live_lease(atlas_api, atlas_role, atlas_resource):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory())
    user = atlas_api.user(lease.username)
    user["labels"] = []  # someone removed the labels in the Atlas UI
    atlas_api.add_user(user)

    report = users_reconcile(resource=atlas_resource, dry_run=True)

    assert report.found == []


def test_a_name_taken_in_atlas_is_a_readable_conflict(atlas_api, atlas_role, monkeypatch):
    from access.services import leases

    monkeypatch.setattr(leases, "username_render", lambda **kwargs: "taken-name")
    atlas_api.add_user({"username": "taken-name", "roles": ROLES})

    with pytest.raises(LeaseError) as caught:
        lease_issue(role=atlas_role, holder=UserFactory())

    assert "conflict error: Atlas refused creating database user taken-name" in caught.value.message
    assert "already exists" in caught.value.message
    assert atlas_api.user("taken-name") is not None  # never dropped: it is not ours


def test_a_wrong_private_key_is_an_authentication_error_that_names_the_key_but_not_the_secret(
    atlas_api, atlas_role, atlas_resource
):
    wrong = "9f2c1e4a-77aa-4c1e-b0b0-5d5d5d5d5d5d"
    atlas_resource.atlas_private_key = wrong
    atlas_resource.save()

    with pytest.raises(LeaseError) as caught:
        lease_issue(role=atlas_role, holder=UserFactory())

    message = caught.value.message
    assert "authentication error" in message
    assert f"the API key {atlas_api.state.public_key} was not accepted" in message
    assert "HTTP 401" in message
    assert wrong not in message and atlas_api.state.private_key not in message
    assert atlas_api.count("POST", "/databaseUsers", 401) == 2  # challenge, then the refused answer
    assert Lease.objects.get().last_error.startswith("Issue failed: authentication error")


def test_stale_nonces_are_renegotiated_without_failing(atlas_api, atlas_role):
    lease, _ = lease_issue(role=atlas_role, holder=UserFactory())
    challenges = atlas_api.state.unauthorized
    atlas_api.expire_nonces()

    lease_revoke(lease=lease, actor="test")

    assert Lease.objects.get(pk=lease.pk).state == LeaseState.REVOKED
    assert atlas_api.state.unauthorized > challenges


def test_sha256_digest_challenges_work(db):
    from tests.atlas.server import AtlasApiServer

    server = AtlasApiServer(algorithm="SHA-256").start()
    try:
        from access.models import Resource

        resource = Resource.objects.create(
            name="atlas-sha",
            kind="atlas",
            atlas_group_id=server.state.group_id,
            atlas_public_key=server.state.public_key,
            atlas_private_key=server.state.private_key,
            atlas_base_url=server.base_url,
        )
        with connector_for(resource) as connector:
            connector.verify_connection()
            assert connector.list_users() == []
    finally:
        server.stop()


def test_secrets_never_reach_logs_audit_or_lease_errors(atlas_api, atlas_role, caplog):
    caplog.set_level(logging.DEBUG)
    atlas_api.fail_next("POST", "/databaseUsers", status=429, retry_after="0")
    lease, password = lease_issue(role=atlas_role, holder=UserFactory())
    lease_renew(lease=lease, increment=timedelta(hours=1))
    atlas_api.fail_next("DELETE", "/databaseUsers/", status=500, times=1)
    lease_revoke(lease=lease, actor="test")

    logged = caplog.text + audit_text() + " ".join(Lease.objects.values_list("last_error", flat=True))
    assert "retrying" in caplog.text  # the throttling was logged ...
    assert password not in logged  # ... without the lease's password
    assert atlas_api.state.private_key not in logged
