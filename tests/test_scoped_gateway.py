"""A gateway session on a scoped grant, end to end: a real `manage.py runproxy` in front of the in-repo wire server
(which enforces user-defined roles), the session opened through the API, and pymongo through the gateway with the
session's username and one-time secret. The scoped user reads what was granted and nothing else; when the grant
ends the gateway cuts the connection and the user and its role are gone from the server."""

from __future__ import annotations

from datetime import timedelta

import pymongo
import pytest
from django.utils import timezone
from pymongo.errors import OperationFailure, PyMongoError

from access.models import Lease, Session
from access.models.leases import LeaseState
from access.otp import totp_device_create
from access.services.leases import ConnectorCache, leases_revoke_due
from tests.gateway_fixtures import wait_for
from tests.helpers import database_on, scoped_envelope, token_client, totp_code, unique_name

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.wireserver]

ORDERS = [{"_id": 1, "item": "book"}, {"_id": 2, "item": "pen"}]


def _refused(call) -> OperationFailure:
    with pytest.raises(OperationFailure) as caught:
        call()
    return caught.value


def _cut(client: pymongo.MongoClient) -> bool:
    """Whether the client's connection through the gateway is gone (its next command cannot be answered)."""
    try:
        client.admin.command("ping")
    except PyMongoError:
        return True
    return False


@pytest.mark.parametrize("end", ["revoke", "expiry"])
def test_a_scoped_gateway_session_reads_what_was_granted_and_is_cut_with_its_user_and_role_gone(
    wire_server, gateway_proxy, end
):
    with database_on(wire_server.uri, orders=ORDERS, customers=[{"_id": 1, "name": "Ada"}]) as shop:
        world = scoped_envelope(
            wire_server, [shop], requester="alice", approver="bob", name=unique_name("shop-readers")
        )
        alice, bob = token_client(world["requester"]), token_client(world["approver"])
        asked = alice.post(
            "/api/v1/scoped/requests",
            {
                "policy": world["policy"].pk,
                "resources": [f"{shop}.orders"],
                "level": "read",
                "duration": "1h",
                "reason": "check an order",
            },
            format="json",
        )
        assert asked.status_code == 201, asked.content
        request_id = asked.json()["id"]
        code = totp_code(totp_device_create(user=world["approver"]))  # deciding needs a fresh second factor
        approved = bob.post(f"/api/v1/scoped/requests/{request_id}/approve", {"otp": code}, format="json").json()
        assert approved["state"] == "approved" and approved["grant"]["state"] == LeaseState.ACTIVE
        lease = Lease.objects.get(request_id=request_id)

        opened = alice.post(f"/api/v1/scoped/requests/{request_id}/session", {"duration": "30m"}, format="json")
        assert opened.status_code == 201, opened.content
        body = opened.json()
        assert body["databases"] == [shop] and gateway_proxy.address in body["connection_string"]
        session = Session.objects.get(public_id=body["session_id"])
        assert session.lease_id == lease.pk and session.gateway_id == gateway_proxy.gateway_id

        with (
            pymongo.MongoClient(
                body["connection_string"], serverSelectionTimeoutMS=5000, retryReads=False, retryWrites=False
            ) as client,
            pymongo.MongoClient(wire_server.uri) as server_admin,
        ):
            # Through the gateway, as the scoped user: shop.orders reads; shop.customers and any write are refused.
            assert [d["item"] for d in client[shop].orders.find({}, sort=[("_id", 1)])] == ["book", "pen"]
            assert _refused(lambda: client[shop].customers.find_one()).code == 13
            assert _refused(lambda: client[shop].orders.insert_one({"_id": 3, "item": "ink"})).code == 13
            assert server_admin[shop].orders.count_documents({}) == 2

            # The user and role the grant made are on the server while it lasts.
            users = server_admin.admin.command("usersInfo", {"user": lease.username, "db": "admin"})["users"]
            assert [u["roles"] for u in users] == [[{"role": lease.server_role, "db": "admin"}]]
            roles = server_admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"})["roles"]
            assert [r["role"] for r in roles] == [lease.server_role]

            assert not _cut(client)

            # The grant ends (given up by the requester, or run out and swept): the session ends, the gateway cuts
            # the connection, and the user and the role are gone from the server.
            if end == "revoke":
                cancelled = alice.post(f"/api/v1/scoped/requests/{request_id}/cancel")
                assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
            else:
                past = timezone.now() - timedelta(seconds=1)
                Lease.objects.filter(pk=lease.pk).update(issued_at=past - timedelta(hours=1), expires_at=past)
                with ConnectorCache() as connectors:
                    assert leases_revoke_due(connectors=connectors) == 1
            lease.refresh_from_db()
            session.refresh_from_db()
            assert lease.state == (LeaseState.REVOKED if end == "revoke" else LeaseState.EXPIRED)
            assert session.state == "ended"
            assert wait_for(lambda: _cut(client), timeout=5.0), "the gateway kept the ended session's connection"
            assert server_admin.admin.command("usersInfo", {"user": lease.username, "db": "admin"})["users"] == []
            assert server_admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"})["roles"] == []

        # The one-time secret opens nothing any more.
        with (
            pymongo.MongoClient(body["connection_string"], serverSelectionTimeoutMS=3000) as again,
            pytest.raises(OperationFailure),
        ):
            again.admin.command("ping")
