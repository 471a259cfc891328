"""The admin's fast date hierarchy shows exactly the links Django's own does, at every drill-down level."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import date_hierarchy as django_date_hierarchy
from django.test import RequestFactory

from access.models import AuditEvent, Lease
from access.templatetags.pam_admin import pam_date_hierarchy
from tests.factories import DynamicRoleFactory, LeaseFactory

ISSUED = [
    datetime(2024, 12, 31, 23, 30, tzinfo=UTC),
    datetime(2025, 2, 3, 8, 0, tzinfo=UTC),
    datetime(2025, 2, 3, 9, 0, tzinfo=UTC),
    datetime(2025, 2, 17, 12, 0, tzinfo=UTC),
    datetime(2025, 7, 1, 0, 0, tzinfo=UTC),
    datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
]


@pytest.fixture
def leases(db):
    role = DynamicRoleFactory()
    for index, issued in enumerate(ISSUED):
        LeaseFactory(
            role=role,
            state="active" if index % 2 else "expired",
            issued_at=issued,
            expires_at=issued + timedelta(hours=1),
            max_expires_at=issued + timedelta(hours=2),
        )


def _both(model, query: dict, user):
    request = RequestFactory().get("/admin/", query)
    request.user = user
    changelist = admin.site._registry[model].get_changelist_instance(request)
    return pam_date_hierarchy(changelist), django_date_hierarchy(changelist)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"issued_at__year": "2025"},
        {"issued_at__year": "2025", "issued_at__month": "2"},
        {"issued_at__year": "2025", "issued_at__month": "2", "issued_at__day": "3"},
        {"issued_at__year": "2023"},
        {"state": "active"},
        {"state": "active", "issued_at__year": "2025"},
    ],
)
def test_lease_date_links_match_djangos(leases, staff_user, query):
    ours, djangos = _both(Lease, query, staff_user)
    assert ours == djangos


def test_a_single_month_starts_at_its_days(db, staff_user):
    LeaseFactory(issued_at=datetime(2025, 3, 4, tzinfo=UTC), expires_at=datetime(2025, 3, 5, tzinfo=UTC))
    LeaseFactory(issued_at=datetime(2025, 3, 9, tzinfo=UTC), expires_at=datetime(2025, 3, 10, tzinfo=UTC))
    ours, djangos = _both(Lease, {}, staff_user)
    assert ours == djangos and [c["title"] for c in ours["choices"]] == ["March 4", "March 9"]


def test_an_empty_audit_list_has_no_links(db, staff_user):
    ours, djangos = _both(AuditEvent, {"action": "nothing.like.this"}, staff_user)
    assert ours["choices"] == djangos["choices"] == []


def test_the_changelist_page_renders_the_links(otp_admin_client, leases):
    response = otp_admin_client.get("/admin/access/lease/", {"issued_at__year": "2025"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "?issued_at__month=2&amp;issued_at__year=2025" in page and "February 2025" in page
    assert "?issued_at__month=3&amp;issued_at__year=2025" not in page  # no lease in March


def test_indexed_values_filter_lists_what_select_distinct_lists(db, staff_user):
    from access.admin.scale import indexed_distinct_values
    from access.services.audit import audit_record

    for action in ("lease.issue", "session.open", "lease.issue", "api_token.create"):
        audit_record(action=action)
    audit_record(action="resource.update", target=DynamicRoleFactory())
    expected = list(AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct())
    assert indexed_distinct_values(AuditEvent, "action") == expected
    targets = list(AuditEvent.objects.order_by("target_type").values_list("target_type", flat=True).distinct())
    assert indexed_distinct_values(AuditEvent, "target_type") == targets == ["", "access.dynamicrole"]


def test_audit_changelist_filters_and_counts(otp_admin_client, db):
    from access.models import AuditAction
    from access.services.audit import audit_record

    for action in (AuditAction.SECRETS_REENCRYPT, AuditAction.SCHEDULES_SETUP, AuditAction.SECRETS_REENCRYPT):
        audit_record(action=action)
    page = otp_admin_client.get("/admin/access/auditevent/").content.decode()
    assert "?action=secrets.reencrypt" in page and "?action=schedules.setup" in page
    filtered = otp_admin_client.get("/admin/access/auditevent/", {"action": "secrets.reencrypt"}).content.decode()
    assert "2 audit events" in filtered
