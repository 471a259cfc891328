"""The audit trail: append-only, written in the same transaction as the change, and tamper-evident."""

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from access.models import AuditAction, AuditEvent
from access.models.audit import AuditEventIsAppendOnly
from access.services.audit import audit_record
from access.services.resources import resource_create
from tests.factories import UserFactory


def verify_audit():
    """Run verify_audit; return (exit code, output)."""
    from io import StringIO

    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", stdout=out, stderr=err)
        return 0, out.getvalue()
    except SystemExit as exc:
        return exc.code, err.getvalue()


@pytest.fixture
def chain(db):
    actor = UserFactory(username="alice")
    for n in range(5):
        audit_record(action=AuditAction.SCHEDULES_SETUP, actor=actor, data={"n": n})
    return list(AuditEvent.objects.order_by("seq"))


def test_service_writes_its_audit_event_with_actor_and_target(db):
    actor = UserFactory(username="bob")
    resource = resource_create(actor=actor, name="orders", uri="mongodb://db1:27017", admin_password="Xyz-Secret-99")
    event = AuditEvent.objects.get(action="resource.create")
    assert event.actor == actor and event.actor_name == "bob"
    assert event.target_name == "orders" and event.target_id == str(resource.pk)
    assert event.data["write_only_changed"] == ["admin_password"]
    assert event.data["changed"]["uri"] == "mongodb://db1:27017"
    assert "Xyz-Secret-99" not in str(event.data)


def test_audit_row_rolls_back_with_the_change(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        resource_create(actor=None, name="gone", uri="mongodb://db1:27017")
        raise RuntimeError("the surrounding work failed")
    assert not AuditEvent.objects.filter(action="resource.create").exists()


def test_audit_events_refuse_updates_and_deletes(chain):
    event = chain[0]
    event.action = "rewritten"
    with pytest.raises(AuditEventIsAppendOnly):
        event.save()
    with pytest.raises(AuditEventIsAppendOnly):
        event.delete()
    with pytest.raises(AuditEventIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(action="rewritten")
    with pytest.raises(AuditEventIsAppendOnly):
        AuditEvent.objects.all().delete()


def test_audit_rows_outlive_the_actor(chain):
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username="alice").delete()
    event = AuditEvent.objects.get(pk=chain[0].pk)
    assert event.actor is None and event.actor_name == "alice"
    assert verify_audit()[0] == 0


def test_verify_audit_passes_on_an_intact_chain(chain):
    code, out = verify_audit()
    assert code == 0
    assert "5 events checked" in out


def test_verify_audit_names_a_row_altered_by_raw_sql(chain):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE access_auditevent SET data = %s WHERE seq = 3", ['{"n": 99}'])
    code, err = verify_audit()
    assert code == 1
    assert "event #3 (schedules.setup) was altered" in err


def test_verify_audit_names_a_removed_row(chain):
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM access_auditevent WHERE seq = 2")
    code, err = verify_audit()
    assert code == 1
    assert "event #2 is missing" in err


def test_verify_audit_names_a_row_rewritten_with_a_fresh_hash(chain):
    # An attacker who recomputes the altered row's own hash still breaks the link to the next row.
    event = AuditEvent.objects.get(seq=2)
    event.actor_name = "mallory"
    new_hash = event.compute_hash()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE access_auditevent SET actor_name = 'mallory', hash = %s WHERE seq = 2", [new_hash])
    code, err = verify_audit()
    assert code == 1
    assert "event #3 does not follow event #2" in err


def test_audit_data_never_stores_secret_values(db):
    event = audit_record(
        action=AuditAction.SECRETS_REENCRYPT, data={"password": "P4ss-w0rd-XYZ", "nested": {"pwd": "abc-123-secret"}}
    )
    assert "P4ss-w0rd-XYZ" not in str(event.data) and "abc-123-secret" not in str(event.data)
    assert event.data["password"] == "[redacted]"


def test_audit_actions_are_one_enumeration(db):
    """A name outside AuditAction is refused before anything is written; the stored value is the member's string."""
    with pytest.raises(ValueError):
        audit_record(action="resource.renamed")
    assert not AuditEvent.objects.exists()
    event = audit_record(action=AuditAction.LEASE_ISSUE)
    assert AuditEvent.objects.get(pk=event.pk).action == "lease.issue"
    assert AuditAction.for_connector_action_state("rolled_back") == "connector_action.rolled_back"
