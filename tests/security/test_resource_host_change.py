"""Attack: point a resource whose credentials are stored at a host of one's own (or turn its TLS checks off) and
let the portal log in there with them: a lease, a rotation, a connector action or a gateway session would send
the admin's or an account's credentials to the attacker.

Refused: a resource's credentials go only to the settings it was created or last verified with. A change of
hosts, URI options or TLS is saved (the admin shows it "changed since verified", the API `connection_verified:
false`) but no connector and no gateway uses the stored credentials against it until a verification with the new
settings succeeds, and the admin form and the API verify the same way, with the same words.
"""

from __future__ import annotations

import html
from datetime import timedelta

import pytest

from access.models import AuditAction, AuditEvent, DynamicRole, Lease, Resource
from access.models.leases import LeaseState
from access.services.gateway import session_login_lookup
from access.services.leases import LeaseError
from access.services.usage import access_lease_issue
from connectors import ConnectorError, connector_for
from tests.factories import (
    AccessPolicyFactory,
    AccountFactory,
    DynamicRoleFactory,
    SessionFactory,
    UserFactory,
    resource_on,
)


@pytest.fixture
def resource(db, wire_server):
    return resource_on(wire_server, name="prod")


@pytest.fixture
def holder(resource):
    role = DynamicRoleFactory(resource=resource, name="reader", db="reports", roles=["read"])
    user = UserFactory(username="holder")
    AccessPolicyFactory(user=user, account=None, role=role, approval_required=False, max_duration=timedelta(hours=1))
    return user, role


def test_a_host_moved_through_the_api_gets_no_stored_credential(api_client, resource, holder, collector):
    user, role = holder
    lease = access_lease_issue(user=user, role=role).lease  # works on the verified settings
    moved = api_client.patch(
        "/api/v1/resources/prod", {"uri": f"mongodb://{collector.host_port}/?directConnection=true"}, format="json"
    )
    assert moved.status_code == 200 and moved.json()["connection_verified"] is False
    row = AuditEvent.objects.filter(action=AuditAction.RESOURCE_UPDATE).latest("seq")
    assert row.data["connection"] == "unverified: stored credentials held back"

    role = DynamicRole.objects.get(pk=role.pk)  # as the next request reads it
    with pytest.raises(LeaseError) as caught:
        access_lease_issue(user=user, role=role)
    assert "changed since they were last verified" in str(caught.value)
    with pytest.raises(ConnectorError), connector_for(Resource.objects.get(pk=resource.pk)) as connector:
        connector.drop_user(db="reports", username=lease.username)
    session = SessionFactory(account=AccountFactory(resource=resource))
    login = session_login_lookup(username=session.username)  # no upstream target: no password handed over
    assert login.upstream is None and "stored credentials are held back" in login.refusal
    assert collector.connections == 0


def test_tls_checks_turned_off_in_the_admin_hold_credentials_back(otp_admin_client, resource, holder):
    user, role = holder
    form = {
        "name": "prod",
        "kind": "mongodb",
        "uri": resource.uri,
        "auth_database": "admin",
        "tls": "on",  # TLS on, certificates not verified: a man in the middle may answer
        "admin_username": resource.admin_username,
        "atlas_base_url": "https://cloud.mongodb.com",
        "default_ttl": "1h",
        "max_ttl": "24h",
        "accounts-TOTAL_FORMS": "0",
        "accounts-INITIAL_FORMS": "0",
    }
    saved = otp_admin_client.post(f"/admin/access/resource/{resource.pk}/change/", form)
    assert saved.status_code == 302
    page = otp_admin_client.get(f"/admin/access/resource/{resource.pk}/change/").content.decode()
    assert "changed since verified" in page
    with pytest.raises(LeaseError):
        access_lease_issue(user=user, role=DynamicRole.objects.get(pk=role.pk))


def test_a_successful_verification_of_the_new_settings_lets_credentials_go_again(
    otp_admin_client, resource, holder, wire_server
):
    user, role = holder
    Resource.objects.filter(pk=resource.pk).update(uri=resource.uri + "&appName=moved")  # a new setting, unverified
    with pytest.raises(LeaseError):
        access_lease_issue(user=user, role=DynamicRole.objects.get(pk=role.pk))
    response = otp_admin_client.post(
        "/admin/access/resource/",
        {"action": "verify_resource_connection", "_selected_action": [resource.pk]},
        follow=True,
    )
    assert "who may manage users" in response.content.decode()
    assert Resource.objects.get(pk=resource.pk).connection_verified
    lease = access_lease_issue(user=user, role=DynamicRole.objects.get(pk=role.pk)).lease
    assert lease.state == LeaseState.ACTIVE


def test_the_admin_and_the_api_verify_alike_and_refuse_alike(otp_admin_client, api_client, resource, collector):
    collector.close()  # nothing listens there any more: the verification cannot connect
    target = {"uri": f"mongodb://{collector.host_port}/?directConnection=true&connectTimeoutMS=500"}
    api = api_client.patch("/api/v1/resources/prod", {**target, "verify_connection": True}, format="json")
    assert api.status_code == 400
    message = api.json()["error"]["message"]
    words = "The connection could not be verified (unreachable): Could not connect to prod"
    assert api.json()["error"]["field"] == "uri" and words in message

    form = {
        "name": "prod",
        "kind": "mongodb",
        "auth_database": "admin",
        "admin_username": resource.admin_username,
        "atlas_base_url": "https://cloud.mongodb.com",
        "default_ttl": "1h",
        "max_ttl": "24h",
        "verify_connection": "on",
        "accounts-TOTAL_FORMS": "0",
        "accounts-INITIAL_FORMS": "0",
        **target,
    }
    page = otp_admin_client.post(f"/admin/access/resource/{resource.pk}/change/", form).content.decode()
    assert html.escape(words) in page
    assert Resource.objects.get(pk=resource.pk).uri == resource.uri  # neither door saved it

    verified = api_client.patch(
        "/api/v1/resources/prod", {"uri": resource.uri + "&appName=v2", "verify_connection": True}, format="json"
    )
    assert verified.status_code == 200 and verified.json()["connection_verified"] is True
    assert not Lease.objects.exists()


def test_a_session_on_a_moved_host_is_refused_when_opened_not_after_its_secret_is_handed_out(resource):
    from django.core.exceptions import ValidationError

    from access.models import Session
    from access.services.usage import access_session_open

    Resource.objects.filter(pk=resource.pk).update(uri=resource.uri + "&appName=moved")  # unverified now
    account = AccountFactory(resource=Resource.objects.get(pk=resource.pk), username="app")
    user = UserFactory(username="operator")
    AccessPolicyFactory(user=user, account=account, approval_required=False, max_duration=timedelta(hours=1))
    with pytest.raises(ValidationError) as refused:
        access_session_open(user=user, account=account, duration=timedelta(minutes=30))
    assert "not verified yet" in str(refused.value) and "verify the connection" in str(refused.value)
    assert not Session.objects.filter(account=account).exists()
