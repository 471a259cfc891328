"""One door per behaviour: the API and the portal renew, see and change leases, roles and sessions by one rule.

Where the two copies used to disagree, the stricter rule won; each test here failed on the looser copy:
- a superuser renewing their own lease through the API skipped their grant (the portal capped it);
- staff-less holders of `view_lease`/`change_lease`/`view_dynamicrole` saw or changed every lease or role through
  the API (sessions already required staff and the permission).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from access.models import AccessPolicy, Lease, Session
from access.models.leases import LeaseState
from access.models.sessions import SessionEndReason
from tests.factories import (
    AccessPolicyFactory,
    DynamicRoleFactory,
    LeaseFactory,
    SessionFactory,
    UserFactory,
)
from tests.helpers import verified_client
from tests.test_leases_api import token_client

pytestmark = pytest.mark.django_db


def _grant_perms(user, *codenames: str):
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="access", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)  # drop the permission cache


@pytest.fixture
def boss_with_a_short_policy():
    """A superuser holding a lease on a role whose policy (for them) now allows ten minutes at a time."""
    boss = UserFactory(username="boss", is_staff=True, is_superuser=True)
    role = DynamicRoleFactory(name="reports", max_ttl=timedelta(hours=24))
    AccessPolicyFactory(user=boss, account=None, role=role, approval_required=False, max_duration=timedelta(minutes=10))
    lease = LeaseFactory(role=role, holder=boss, expires_at=timezone.now() + timedelta(minutes=5))
    return boss, lease


def test_a_superuser_renewing_their_own_lease_in_the_api_is_capped_by_their_grant(boss_with_a_short_policy):
    boss, lease = boss_with_a_short_policy
    response = token_client(boss).put(
        "/api/v1/sys/leases/renew", {"lease_id": lease.lease_id, "increment": "2h"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert 590 <= response.json()["lease_duration"] <= 600
    assert Lease.objects.get(pk=lease.pk).expires_at <= timezone.now() + timedelta(minutes=10)


def test_the_portal_renews_the_same_lease_to_the_same_cap(boss_with_a_short_policy):
    boss, lease = boss_with_a_short_policy
    response = verified_client(boss).post(reverse("portal:lease-renew", args=[lease.pk]), {"increment": "2h"})
    assert response.status_code == 302
    assert Lease.objects.get(pk=lease.pk).expires_at <= timezone.now() + timedelta(minutes=10)


def test_a_holder_whose_grant_ended_cannot_renew_in_either_door(db):
    holder = UserFactory(username="former")
    role = DynamicRoleFactory(name="gone")
    policy = AccessPolicyFactory(user=holder, account=None, role=role, approval_required=False)
    lease = LeaseFactory(role=role, holder=holder)
    before = lease.expires_at
    AccessPolicy.objects.filter(pk=policy.pk).update(is_enabled=False)

    response = token_client(holder).put("/api/v1/sys/leases/renew", {"lease_id": lease.lease_id}, format="json")
    assert response.status_code == 403
    assert "cannot be renewed" in response.json()["error"]["message"]
    page = verified_client(holder).post(
        reverse("portal:lease-renew", args=[lease.pk]), {"increment": "30m"}, follow=True
    )
    assert "cannot be renewed" in page.content.decode()
    assert Lease.objects.get(pk=lease.pk).expires_at == before


def test_a_permission_without_staff_shows_and_changes_only_ones_own_leases(db):
    """Before, `access.view_lease` alone (no staff flag) showed every lease in the API; sessions needed staff too."""
    lease = LeaseFactory(holder=UserFactory(username="owner"))
    auditor = _grant_perms(UserFactory(username="auditor"), "view_lease", "change_lease")
    client = token_client(auditor)
    for path in ("/api/v1/sys/leases/lookup", "/api/v1/sys/leases/renew", "/api/v1/sys/leases/revoke"):
        assert client.put(path, {"lease_id": lease.lease_id}, format="json").status_code == 404, path
    assert client.put("/api/v1/sys/leases/revoke-prefix/mongodb/").status_code == 403
    assert Lease.objects.get(pk=lease.pk).state == LeaseState.ACTIVE

    auditor.is_staff = True
    auditor.save(update_fields=["is_staff"])
    staff = token_client(auditor)
    assert staff.put("/api/v1/sys/leases/lookup", {"lease_id": lease.lease_id}, format="json").status_code == 200


def test_roles_and_sessions_follow_the_same_rule(db):
    role = DynamicRoleFactory(name="hidden")
    session = SessionFactory(user=UserFactory(username="someone"))
    viewer = _grant_perms(UserFactory(username="viewer"), "view_dynamicrole", "view_session", "change_session")
    client = token_client(viewer)
    assert client.get(f"/api/v1/mongodb/{role.resource.name}/roles/{role.name}").status_code == 404
    assert client.get(f"/api/v1/sessions/{session.public_id}").status_code == 404
    assert client.post(f"/api/v1/sessions/{session.public_id}/end").status_code == 404

    viewer.is_staff = True
    viewer.save(update_fields=["is_staff"])
    staff = token_client(viewer)
    assert staff.get(f"/api/v1/mongodb/{role.resource.name}/roles/{role.name}").status_code == 200
    assert staff.post(f"/api/v1/sessions/{session.public_id}/end").status_code == 200
    assert Session.objects.get(pk=session.pk).end_reason == SessionEndReason.KILLED


def test_visibility_has_one_spelling(db):
    """Each model answers "what may this user see" once: `Model.objects.visible_to(user)`; no `for_user` is left."""
    from access.models import AccessRequest, DynamicRole

    for model in (Lease, Session, AccessRequest, DynamicRole):
        assert hasattr(model.objects, "visible_to"), model
        assert not hasattr(model.objects, "for_user"), model
    assert not hasattr(AccessPolicy.objects, "for_user")
    inactive = UserFactory(username="left", is_active=False, is_staff=True, is_superuser=True)
    assert not Lease.objects.visible_to(inactive).exists() and not Session.objects.visible_to(inactive).exists()
