"""Using access through the API counts as using the policy: the access review shows when it was last used."""

from __future__ import annotations

from datetime import timedelta

import pytest

from access.models import AccessPolicy
from tests.factories import AccessPolicyFactory, AccountFactory, DynamicRoleFactory, UserFactory
from tests.helpers import token_client


@pytest.mark.wireserver
def test_creds_through_the_api_record_the_policys_last_use(wire_resource):
    resource = wire_resource
    role = DynamicRoleFactory(resource=resource, db="reports", roles=["read"])
    engineer = UserFactory()
    policy = AccessPolicyFactory(user=engineer, account=None, role=role, approval_required=False)
    assert policy.last_used_at is None

    response = token_client(engineer).get(f"/api/v1/mongodb/{resource.name}/creds/{role.name}")
    assert response.status_code == 200, response.json()
    assert AccessPolicy.objects.get(pk=policy.pk).last_used_at is not None


def test_opening_a_session_through_the_api_records_the_policys_last_use(db):
    account = AccountFactory()
    engineer = UserFactory()
    policy = AccessPolicyFactory(
        user=engineer, account=account, approval_required=False, max_duration=timedelta(hours=2)
    )

    response = token_client(engineer).post(
        "/api/v1/sessions", {"account": account.pk, "duration": "30m"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert AccessPolicy.objects.get(pk=policy.pk).last_used_at is not None
