"""Leases at scale: the admin's client and the login checks are reused, batches keep every guarantee.

What a user of the portal would observe: issuing and revoking leases one after another through the API logs the
admin account in once (not once per lease) and verifies every revocation's login refusal on a kept connection;
a resource whose settings change is never served by a connector made for the old ones (an unverified host gets no
credential); a batch of revocations writes one audit row per lease on an unbroken chain, and editing a row of that
batch is still named by `verify_audit`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

import connectors.mongodb as mongodb
from access.models import AuditEvent, Lease
from access.models.leases import LeaseState
from access.services import leases as lease_services
from access.services.leases import ConnectorCache, lease_issue, lease_revoke, leases_revoke_due
from tests.factories import DynamicRoleFactory, UserFactory
from tests.helpers import unique_password as password_new
from tests.mongo.logins import logs_in
from tests.test_audit import verify_audit


@pytest.fixture
def clients_made(monkeypatch):
    """Every MongoClient the connectors make, with the user it logs in as (None: no credentials)."""
    made: list[str | None] = []

    class Counted(mongodb.MongoClient):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("username"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mongodb, "MongoClient", Counted)
    return made


@pytest.fixture
def wire_role(wire_resource):
    return DynamicRoleFactory(resource=wire_resource, name="app-rw", db="app", roles=["readWrite"])


@pytest.mark.wireserver
def test_refused_logins_are_tried_on_one_kept_client_and_a_successful_one_is_not_reused(wire_resource, clients_made):
    with mongodb.MongoDBConnector(wire_resource) as connector:
        password = password_new()
        connector.create_user(db="app", username="scale-probe", password=password, roles=["read"])
        assert [connector.can_login(db="app", username="scale-probe", password=password_new()) for _ in range(5)] == [
            False
        ] * 5
        assert clients_made == [wire_resource.admin_username, None]  # the admin's client and one login-check client

        assert connector.can_login(db="app", username="scale-probe", password=password) is True
        assert connector.can_login(db="app", username="scale-probe", password=password) is True
        # A client that logged in as the user is closed, never lent to the next check: each success needs a new one.
        assert clients_made == [wire_resource.admin_username, None, None]
        connector.drop_user(db="app", username="scale-probe")
        assert connector.can_login(db="app", username="scale-probe", password=password) is False


@pytest.mark.wireserver
@pytest.mark.parametrize("mechanisms", [["SCRAM-SHA-1"], ["SCRAM-SHA-256"], ["SCRAM-SHA-1", "SCRAM-SHA-256"]])
def test_the_login_check_uses_the_mechanism_the_user_holds(wire_resource, mechanisms):
    with mongodb.MongoDBConnector(wire_resource) as connector:
        password = password_new()
        connector.create_user(db="app", username="scale-mech", password=password, roles=["read"], mechanisms=mechanisms)
        try:
            assert connector.can_login(db="app", username="scale-mech", password=password) is True
            assert connector.can_login(db="app", username="scale-mech", password=password_new()) is False
        finally:
            connector.drop_user(db="app", username="scale-mech")
        assert connector.can_login(db="app", username="scale-mech", password=password) is False


@pytest.mark.wireserver
def test_concurrent_lookups_and_kills_share_their_commands_and_each_caller_gets_its_own_answer(
    wire_resource, monkeypatch
):
    import threading

    from pymongo import monitoring

    seen: list[str] = []

    class Seen(monitoring.CommandListener):
        def started(self, event):
            seen.append(event.command_name)

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    class Listened(mongodb.MongoClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, event_listeners=[Seen()], **kwargs)

    monkeypatch.setattr(mongodb, "MongoClient", Listened)
    names = [f"scale-share-{index}" for index in range(12)]
    with mongodb.MongoDBConnector(wire_resource) as connector:
        for name in names[::2]:
            connector.create_user(db="app", username=name, password=password_new(), roles=["read"])
        gate = threading.Barrier(len(names))
        answers: dict[str, tuple] = {}

        def one(name: str) -> None:
            gate.wait()
            answers[name] = (
                connector.get_user(db="app", username=name) is not None,
                connector.kill_user_connections(db="app", username=name),
            )

        threads = [threading.Thread(target=one, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name in names[::2]:
            connector.drop_user(db="app", username=name)
    assert answers == {name: (index % 2 == 0, 0) for index, name in enumerate(names)}
    assert seen.count("usersInfo") < len(names)  # some calls shared a command
    assert seen.count("killAllSessions") < len(names)


@pytest.mark.wireserver
def test_api_leases_in_a_row_log_the_admin_in_once_and_every_revocation_is_still_verified(
    wire_server, wire_role, clients_made, monkeypatch
):
    holder = UserFactory(username="scale-holder")
    checks: list[bool] = []
    original = mongodb.MongoDBConnector.can_login

    def counted(self, **kwargs):
        checks.append(original(self, **kwargs))
        return checks[-1]

    monkeypatch.setattr(mongodb.MongoDBConnector, "can_login", counted)
    issued = [lease_issue(role=wire_role, holder=holder) for _ in range(4)]
    assert all(logs_in(wire_server.host_port, lease.db, lease.username, password) for lease, password in issued)
    revoked = [lease_revoke(lease=lease, actor=holder) for lease, _ in issued]

    assert [lease.state for lease in revoked] == [LeaseState.REVOKED] * 4
    assert checks == [False] * 4  # every revocation tried the leased password, and it was refused
    assert not any(logs_in(wire_server.host_port, lease.db, lease.username, password) for lease, password in issued)
    assert clients_made == [wire_role.resource.admin_username, None]
    assert AuditEvent.objects.filter(action="lease.revoke").count() == 4


@pytest.mark.wireserver
def test_a_changed_resource_gets_a_new_connector_and_unverified_settings_get_no_credentials(wire_role, clients_made):
    holder = UserFactory(username="scale-change")
    first, _ = lease_issue(role=wire_role, holder=holder)
    resource = wire_role.resource
    resource.uri = resource.uri.replace("directConnection=true", "directConnection=true&appName=moved")
    resource.save()  # a changed URI, not verified since
    wire_role.refresh_from_db()
    with pytest.raises(lease_services.LeaseError) as caught:
        lease_issue(role=wire_role, holder=holder)
    assert "verify the connection first" in caught.value.message
    assert clients_made == [resource.admin_username]  # the cached client was not used for the new settings
    assert Lease.objects.filter(holder=holder, state=LeaseState.FAILED).count() == 1
    assert Lease.objects.get(pk=first.pk).state == LeaseState.ACTIVE


def test_the_connector_cache_follows_every_setting_and_credential():
    made = []

    def factory(resource):
        made.append(resource)
        return type("Fake", (), {"close": lambda self: None})()

    from access.models import Resource

    resource = Resource(
        pk=1, name="r", uri="mongodb://db1:27017", admin_username="admin", admin_password="Pw-0123456789-abc"
    )
    resource.verified_fingerprint = resource.connection_fingerprint()
    resource.updated_at = timezone.now()
    cache = ConnectorCache(factory)
    first = cache.for_resource(resource)
    assert cache.for_resource(resource) is first and len(made) == 1
    for change in (
        {"admin_password": "Pw-9876543210-xyz"},
        {"admin_username": "root"},
        {"uri": "mongodb://db2:27017"},
        {"verified_fingerprint": "0" * 64},
        {"tls_verify": False},
        {"updated_at": timezone.now() + timedelta(seconds=1)},
    ):
        for name, value in change.items():
            setattr(resource, name, value)
        cache.for_resource(resource)
    assert len(made) == 7


@pytest.mark.wireserver
@pytest.mark.django_db(transaction=True)
def test_a_batch_of_revocations_writes_one_audit_row_each_on_an_unbroken_chain_and_an_edit_is_named(wire_role):
    holder = UserFactory(username="scale-batch")
    leases = [lease_issue(role=wire_role, holder=holder, ttl=timedelta(seconds=60))[0] for _ in range(12)]
    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk__in=[lease.pk for lease in leases]).update(
        issued_at=past - timedelta(seconds=1), expires_at=past
    )
    with ConnectorCache() as connectors:
        assert leases_revoke_due(limit=50, connectors=connectors) == 12
    assert set(Lease.objects.filter(pk__in=[lease.pk for lease in leases]).values_list("state", flat=True)) == {
        LeaseState.EXPIRED
    }
    rows = list(AuditEvent.objects.filter(action="lease.revoke").order_by("seq"))
    assert sorted(row.target_id for row in rows) == sorted(str(lease.pk) for lease in leases)
    assert all(row.data["state"] == "expired" and row.data["attempt"] == 1 for row in rows)
    code, out = verify_audit()
    assert code == 0, out

    middle = rows[len(rows) // 2]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE access_auditevent SET data = %s WHERE seq = %s", ['{"state": "revoked"}', middle.seq])
    code, err = verify_audit()
    assert code == 1
    assert f"event #{middle.seq} (lease.revoke) was altered" in err


@pytest.mark.wireserver
def test_a_claim_taken_over_meanwhile_keeps_the_other_workers_outcome(wire_role):
    holder = UserFactory(username="scale-claim")
    leases = [lease_issue(role=wire_role, holder=holder)[0] for _ in range(3)]
    now = timezone.now()
    claimed = lease_services._claim(
        Lease.objects.filter(pk__in=[lease.pk for lease in leases]), reason="revoked", now=now
    )
    taken = claimed[1]
    # Another worker took this one over after the claim's deadline and revoked it.
    Lease.objects.filter(pk=taken.pk).update(state=LeaseState.REVOKED, next_attempt_at=None, revoked_at=now)
    outcomes = [lease_services.RevokeOutcome(lease, None) for lease in claimed]
    recorded = lease_services._record_outcomes(outcomes, actor="worker-a")
    assert sorted(lease.pk for lease in recorded) == sorted(lease.pk for lease in claimed if lease.pk != taken.pk)
    assert AuditEvent.objects.filter(action="lease.revoke", target_id=str(taken.pk)).count() == 0
    assert Lease.objects.get(pk=taken.pk).attempts == 0
