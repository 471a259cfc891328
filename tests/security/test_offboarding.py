"""Attack: keep using access after it was taken away: a person deactivated or deleted, their policy deleted,
disabled or narrowed to read-only, their group membership removed, their approved window over, or deactivated
behind the admin's back (a script, a bulk update), goes on with the open session, the lease and the API token.

Refused: each of these ends the person's open gateway sessions and revokes their leases (the database user is
dropped) within seconds, audited with the reason in words; each end is told to the gateways at once (a row they
poll), and the gateway's check at every login says why a session may no longer be used.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from access import tasks
from access.models import AccessPolicy, AccessRequest, AuditAction, AuditEvent, Lease, Session, SessionRevocation
from access.models.leases import LeaseState
from access.models.policies import RequestState
from access.models.sessions import SessionEndReason, SessionState
from access.services.offboarding import session_access_problem
from access.services.revocations import gateway_ended_sessions_since
from access.services.sessions import session_end
from access.services.sweeper import lease_sweeper_run
from access.services.tokens import api_token_create
from access.services.usage import access_lease_issue
from tests.factories import AccessPolicyFactory, DynamicRoleFactory, SessionFactory, UserFactory, resource_on
from tests.gateway_fixtures import account_on
from tests.helpers import otp_login
from tests.mongo.logins import logs_in

pytestmark = pytest.mark.wireserver


@pytest.fixture
def committed(db, django_capture_on_commit_callbacks):
    """`with committed():` runs what the change queued for after its commit (lease revocations), as a request would
    (the test's own transaction never commits)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


class Holder:
    """A person with an open gateway session, a live lease (a real user on the wire server) and an API token."""

    def __init__(self, wire_server, *, group: Group | None = None, read_only_policy: bool = False):
        self.server = wire_server
        self.user = UserFactory()
        subject = {"group": group, "user": None} if group else {"user": self.user}
        if group:
            self.user.groups.add(group)
        self.account = account_on(wire_server)
        self.role = DynamicRoleFactory(resource=resource_on(wire_server), db="reports", roles=["read"])
        self.account_policy = AccessPolicyFactory(
            **subject, account=self.account, approval_required=False, read_only=read_only_policy
        )
        self.role_policy = AccessPolicyFactory(**subject, account=None, role=self.role, approval_required=False)
        self.session = SessionFactory(user=self.user, account=self.account)
        issued = access_lease_issue(user=self.user, role=self.role)
        self.lease, self.lease_password = issued.lease, issued.password
        self.token, self.raw_token = api_token_create(user=self.user, name="script")
        assert self.lease_logs_in()

    def lease_logs_in(self) -> bool:
        return logs_in(self.server.host_port, self.lease.db, self.lease.username, self.lease_password)

    def assert_cut(self, reason: SessionEndReason) -> None:
        session = Session.objects.get(pk=self.session.pk)
        assert session.state == SessionState.ENDED and session.end_reason == reason
        lease = Lease.objects.get(pk=self.lease.pk)
        assert lease.state == LeaseState.REVOKED and lease.revoke_reason == reason.value
        assert not self.lease_logs_in()
        told = SessionRevocation.objects.get(session=session)
        assert told.reason == reason.value and told.session_username == session.username

    def assert_kept(self) -> None:
        assert Session.objects.get(pk=self.session.pk).state == SessionState.OPEN
        assert Lease.objects.get(pk=self.lease.pk).state == LeaseState.ACTIVE
        assert self.lease_logs_in()


def _user_form(user, **changes) -> dict:
    form = {
        "username": user.username,
        "email": user.email,
        "first_name": "",
        "last_name": "",
        "is_active": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "groups": [group.pk for group in user.groups.all()],
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def test_deactivating_a_person_in_the_admin_cuts_everything_they_hold(
    wire_server, otp_admin_client, staff_user, committed
):
    holder = Holder(wire_server)
    with committed():
        response = otp_admin_client.post(
            f"/admin/auth/user/{holder.user.pk}/change/", _user_form(holder.user, is_active=None)
        )
    assert response.status_code == 302, response.content.decode()[:3000]
    holder.assert_cut(SessionEndReason.USER_DEACTIVATED)
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {holder.raw_token}")
    assert api.get("/api/v1/sessions").status_code == 401
    row = AuditEvent.objects.get(action=AuditAction.USER_ACCESS_END)
    assert row.actor == staff_user and row.target_name == holder.user.username
    assert row.data["reason"] == "user_deactivated" and row.data["why"] == "the user was deactivated"
    assert row.data["sessions_ended"] == 1 and row.data["leases_revoked"] == 1 and row.data["api_access_revoked"] == 1


def test_deleting_a_person_in_the_admin_cuts_everything_and_audits_their_policies(
    wire_server, otp_admin_client, committed
):
    holder = Holder(wire_server)
    with committed():
        response = otp_admin_client.post(f"/admin/auth/user/{holder.user.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    holder.assert_cut(SessionEndReason.USER_DELETED)
    assert AuditEvent.objects.filter(action=AuditAction.ACCESSPOLICY_DELETE).count() == 2


def test_deleting_the_policy_in_the_admin_ends_what_it_granted(wire_server, otp_admin_client, committed):
    holder = Holder(wire_server)
    for policy in (holder.account_policy, holder.role_policy):
        page = f"/admin/access/accesspolicy/{policy.pk}/delete/"
        with committed():
            assert otp_admin_client.post(page, {"post": "yes"}).status_code == 302
    holder.assert_cut(SessionEndReason.GRANT_REMOVED)


def test_disabling_the_policy_ends_what_it_granted_and_a_second_grant_keeps_it(wire_server, committed):
    from access.services.policies import access_policy_update

    holder = Holder(wire_server)
    other = Holder(wire_server)
    AccessPolicyFactory(user=other.user, account=other.account, approval_required=False, name="second grant")
    access_policy_update(actor="test", policy=other.account_policy, is_enabled=False)
    assert Session.objects.get(pk=other.session.pk).state == SessionState.OPEN  # still granted by the second

    with committed():
        access_policy_update(actor="test", policy=holder.account_policy, is_enabled=False)
        access_policy_update(actor="test", policy=holder.role_policy, is_enabled=False)
    holder.assert_cut(SessionEndReason.GRANT_REMOVED)


def test_a_policy_narrowed_to_read_only_ends_the_sessions_that_may_write(wire_server, committed):
    from access.services.policies import access_policy_update

    holder = Holder(wire_server)
    reader = SessionFactory(user=holder.user, account=holder.account, read_only=True)
    access_policy_update(actor="test", policy=holder.account_policy, read_only=True)
    assert Session.objects.get(pk=holder.session.pk).end_reason == SessionEndReason.GRANT_REMOVED
    assert Session.objects.get(pk=reader.pk).state == SessionState.OPEN


def test_leaving_the_group_that_granted_access_ends_it_from_the_admin_or_any_code(
    wire_server, otp_admin_client, committed
):
    group = Group.objects.create(name="dba")
    by_admin, by_code = Holder(wire_server, group=group), Holder(wire_server, group=group)

    with committed():
        response = otp_admin_client.post(
            f"/admin/auth/user/{by_admin.user.pk}/change/", _user_form(by_admin.user, groups=[])
        )
    assert response.status_code == 302
    by_admin.assert_cut(SessionEndReason.GRANT_REMOVED)
    by_code.assert_kept()

    with committed():
        group.user_set.remove(by_code.user)  # a script, a single sign-on group sync: not the admin
    by_code.assert_cut(SessionEndReason.GRANT_REMOVED)


def test_the_end_of_an_approved_window_ends_sessions_and_leases_on_the_sweepers_next_tick(wire_server, committed):
    holder = Holder(wire_server)
    for policy in (holder.account_policy, holder.role_policy):
        AccessPolicy.objects.filter(pk=policy.pk).update(approval_required=True)
        AccessRequest.objects.create(
            requester=holder.user,
            policy=policy,
            account=policy.account,
            role=policy.role,
            reason="incident 4711",
            duration=timedelta(hours=1),
            state=RequestState.APPROVED,
            approver=UserFactory(),
            decided_at=timezone.now(),
            expires_at=timezone.now() + timedelta(hours=1),
        )
    lease_sweeper_run(run_for=0.1, interval=0.05)
    holder.assert_kept()

    AccessRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))  # the window just closed
    started = time.monotonic()
    with committed():
        lease_sweeper_run(run_for=0.1, interval=0.05)
    holder.assert_cut(SessionEndReason.GRANT_REMOVED)
    assert time.monotonic() - started < 5


def test_a_person_deactivated_behind_the_admins_back_is_cut_by_the_reconciler(wire_server, committed):
    holder = Holder(wire_server)
    type(holder.user).objects.filter(pk=holder.user.pk).update(is_active=False)  # a bulk update, a script
    with committed():
        report = tasks.reconcile_access()
    assert report["sessions_ended"] == 1 and report["leases_revoked"] == 1
    holder.assert_cut(SessionEndReason.USER_DEACTIVATED)


def test_gateways_are_told_at_once_and_their_login_check_says_why(db, otp_admin_client, staff_user):
    _nothing, cursor = gateway_ended_sessions_since(cursor=None)
    killed = SessionFactory()
    session_end(session=killed, reason=SessionEndReason.KILLED, actor=staff_user)
    ended, next_cursor = gateway_ended_sessions_since(cursor=cursor)
    assert [(e.session_id, e.reason, e.description) for e in ended] == [
        (killed.pk, "killed", "the session was killed by sec-admin")
    ]
    assert next_cursor >= cursor
    assert session_access_problem(session_id=killed.pk) == "the session was killed by sec-admin"

    deactivated = SessionFactory()
    type(deactivated.user).objects.filter(pk=deactivated.user_id).update(is_active=False)
    assert session_access_problem(session_id=deactivated.pk) == "the user was deactivated"
    ungranted = SessionFactory()
    assert session_access_problem(session_id=ungranted.pk) == "the user's access grant was removed"
    granted = SessionFactory()
    AccessPolicyFactory(user=granted.user, account=granted.account, approval_required=False)
    assert session_access_problem(session_id=granted.pk) is None


@pytest.mark.django_db(transaction=True)
def test_a_deactivated_persons_open_gateway_connection_is_cut_within_seconds(
    wire_server, gateway, gateway_proxy, staff_user
):
    import secrets

    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from access.services.sessions import session_username_new, session_verifiers
    from tests.secret_scan import remember

    owner = UserFactory()
    account = account_on(wire_server)
    AccessPolicyFactory(user=owner, account=account, approval_required=False)
    username, secret = session_username_new(), secrets.token_urlsafe(32)
    remember(secret)
    session = SessionFactory(
        user=owner,
        account=account,
        gateway=gateway,
        username=username,
        verifiers=session_verifiers(username=username, secret=secret),
    )
    client = MongoClient(gateway_proxy.uri(username, secret), serverSelectionTimeoutMS=5000, retryReads=False)
    admin = Client()
    otp_login(admin, staff_user)
    try:
        client.app.items.insert_one({"n": 1})
        started = time.monotonic()
        response = admin.post(f"/admin/auth/user/{owner.pk}/change/", _user_form(owner, is_active=None))
        assert response.status_code == 302
        while True:
            try:
                client.app.items.find_one({})
            except PyMongoError:
                break
            assert time.monotonic() - started < 5, "the deactivated person's connection still runs commands"
            time.sleep(0.05)
        print(f"deactivation to cut: {(time.monotonic() - started) * 1000:.0f} ms")
    finally:
        client.close()
    assert Session.objects.get(pk=session.pk).end_reason == SessionEndReason.USER_DEACTIVATED
