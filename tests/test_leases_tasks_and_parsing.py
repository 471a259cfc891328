"""Tasks, schedules, URI parsing, one-time reveal, connection strings, secret-free logs, the session's server."""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import quote

import pymongo
import pytest
from django.core.management import call_command
from django_q.brokers import get_broker
from django_q.models import Schedule
from pymongo.errors import OperationFailure

from access import tasks
from access.models.leases import LeaseState
from access.selectors.leases import lease_connection_string
from access.services.leases import lease_issue, lease_reveal_password, lease_revoke
from access.services.roles import connection_settings_from_uri
from connectors import connector_for
from tests.factories import DynamicRoleFactory, ResourceFactory, UserFactory, resource_on


# -- Vault-style connection URLs ---------------------------------------------------------------------------
def test_vault_style_uri_is_split_into_resource_fields():
    fields = connection_settings_from_uri("mongodb://adm%40corp:p%3Ass@h1:27017,h2:27018/admin?tls=true&replicaSet=rs0")
    assert fields == {
        "admin_username": "adm@corp",
        "admin_password": "p:ss",
        "auth_database": "admin",
        "tls": True,
        "uri": "mongodb://h1:27017,h2:27018/?replicaSet=rs0",
    }


def test_vault_template_uri_takes_username_and_password_fields():
    fields = connection_settings_from_uri(
        "mongodb+srv://{{username}}:{{password}}@cluster0.example.net/?authSource=ops&tlsInsecure=true",
        username="svc",
        password="pw-123456",
    )
    assert fields["admin_username"] == "svc" and fields["admin_password"] == "pw-123456"
    assert fields["auth_database"] == "ops" and fields["tls"] is True and fields["tls_verify"] is False
    assert fields["uri"] == "mongodb+srv://cluster0.example.net"


def test_a_uri_that_is_not_mongodb_is_a_validation_error_on_uri():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        connection_settings_from_uri("postgres://x@y/z")
    assert "uri" in caught.value.message_dict


# -- tasks and schedules -----------------------------------------------------------------------------------
def test_setup_schedules_is_idempotent_and_enqueues_one_sweeper_run(db):
    broker = get_broker()  # the ORM broker, or Redis in the production profile
    broker.purge_queue()
    call_command("setup_schedules")
    call_command("setup_schedules", "--no-kick")
    names = list(Schedule.objects.values_list("name", flat=True))
    assert names.count("pam: lease sweeper") == 1 and names.count("pam: reconcile users") == 1
    sweeper = Schedule.objects.get(name="pam: lease sweeper")
    assert sweeper.func == "access.tasks.sweep_leases" and sweeper.minutes == 1 and sweeper.repeats == -1
    assert broker.queue_size() == 1


def test_a_sweeper_run_that_ran_its_time_enqueues_its_successor(db, monkeypatch):
    queued = []
    monkeypatch.setattr(tasks, "async_task", lambda *args, **kwargs: queued.append(args))
    result = tasks.sweep_leases(run_for=0.1)
    assert result["acquired"] is True
    assert queued == [(tasks.SWEEP_TASK, 0.1)]


def test_revoke_lease_task_revokes_by_id(db, wire_server):
    resource = resource_on(wire_server)
    lease, _ = lease_issue(role=DynamicRoleFactory(resource=resource, roles=["read"]), holder=UserFactory())
    assert tasks.revoke_lease(lease.pk) == LeaseState.REVOKED
    assert tasks.revoke_lease(10**9) == "missing"


# -- reveal once, connection strings, logs -----------------------------------------------------------------
def test_the_password_is_revealed_once_and_only_to_its_holder(db, wire_server, caplog):
    caplog.set_level(logging.DEBUG)
    resource = resource_on(wire_server)
    holder, other = UserFactory(), UserFactory()
    lease, password = lease_issue(role=DynamicRoleFactory(resource=resource, db="app", roles=["read"]), holder=holder)
    assert lease_reveal_password(lease=lease, user=other) is None
    assert lease_reveal_password(lease=lease, user=holder) == password
    assert lease_reveal_password(lease=lease, user=holder) is None

    uri = lease_connection_string(lease, password)
    assert uri == (
        f"mongodb://{quote(lease.username)}:{password}@{wire_server.host_port}/app?authSource=app&directConnection=true"
    )
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000) as client:
        client.app.command("ping")
    wire_server.refuse_connections("close")
    try:
        with connector_for(resource, timeout_ms=300) as connector:
            assert lease_revoke(lease=lease, connector=connector).state == LeaseState.REVOKE_FAILED
    finally:
        wire_server.clear_faults()
    assert lease_revoke(lease=lease).state == LeaseState.REVOKED
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert password not in logged and wire_server.admin_password not in logged
    assert repr(lease.password) != password and password not in str(lease.password)


# -- the session's server (MONGODB_URI when set, else FerretDB) ---------------------------------------------
def test_lease_life_on_the_sessions_server(db, mongo_admin_uri, mongo_server_kind):
    fields = connection_settings_from_uri(mongo_admin_uri)
    resource = ResourceFactory(**fields)
    roles = [] if mongo_server_kind == "ferretdb" else ["read"]
    db_name = "admin" if mongo_server_kind == "ferretdb" else "app"
    role = DynamicRoleFactory(resource=resource, db=db_name, roles=roles)
    lease, password = lease_issue(role=role, holder=UserFactory(), ttl=timedelta(minutes=5))
    uri = lease_connection_string(lease, password)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    client[db_name].command("ping")
    assert lease_revoke(lease=lease).state == LeaseState.REVOKED
    client.close()
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as again, pytest.raises(OperationFailure):
        again[db_name].command("ping")
