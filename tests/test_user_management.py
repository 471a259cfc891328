"""User management as a MongoDB server does it, on every server the tests can reach.

Each test runs against the in-repo wire server, FerretDB (an independent implementation) and a real
MongoDB when ``MONGODB_URI`` is set (or Docker can start one), so the wire server's codes and messages
are checked against servers we did not write. FerretDB v1.24 has no roles, authorization or
killAllSessions: those cases skip there with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymongo
import pymongo.errors
import pytest

from tests.helpers import unique_name as _name
from tests.mongo.fixtures import MongoServer as Target
from tests.mongo.fixtures import skip_on_ferretdb

pytestmark = pytest.mark.wireserver


@pytest.fixture(params=["wireserver", "ferretdb", "mongodb"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "wireserver":
        return Target(request.getfixturevalue("wire_server").uri, "wireserver")
    if request.param == "ferretdb":
        return Target(request.getfixturevalue("ferretdb_uri"), "ferretdb")
    if request.getfixturevalue("mongo_server_kind") != "mongodb":
        pytest.skip("no real MongoDB: MONGODB_URI is not set and no Docker engine answers")
    return Target(request.getfixturevalue("mongo_admin_uri"), "mongodb")


@pytest.fixture
def db_name(admin: pymongo.MongoClient) -> Iterator[str]:
    """A fresh database name; its users are dropped afterwards."""
    name = _name("um")
    yield name
    admin[name].command("dropAllUsersFromDatabase")


def _roles(target: Target, roles: list) -> list:
    """FerretDB takes only an empty roles array."""
    return [] if target.kind == "ferretdb" else roles


def _login_works(target: Target, user: str, password: str, db: str, mechanism: str | None = None) -> bool:
    options = {"authMechanism": mechanism} if mechanism else {}
    with target.client(target.uri_for(user, password, db), **options) as client:
        try:
            client[db].command("ping")
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 18, exc.details
            return False
    return True


def test_created_user_is_listed_by_users_info_in_every_form(target, admin, db_name):
    user, other = _name(), _name()
    roles = _roles(target, [{"role": "read", "db": db_name}])
    admin[db_name].command("createUser", user, pwd="pw-1", roles=roles)
    admin[db_name].command("createUser", other, pwd="pw-2", roles=roles)
    by_name = admin[db_name].command("usersInfo", user)["users"]
    assert [(u["user"], u["db"]) for u in by_name] == [(user, db_name)]
    assert by_name[0]["roles"] == roles
    assert set(by_name[0]["mechanisms"]) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    assert "credentials" not in by_name[0]
    by_doc = admin.admin.command("usersInfo", {"user": user, "db": db_name})["users"]
    assert [u["user"] for u in by_doc] == [user]
    listed = admin[db_name].command("usersInfo", [user, {"user": other, "db": db_name}])["users"]
    assert sorted(u["user"] for u in listed) == sorted([user, other])
    everyone = admin[db_name].command("usersInfo", 1)["users"]
    assert sorted(u["user"] for u in everyone) == sorted([user, other])
    assert admin[db_name].command("usersInfo", "nobody-here")["users"] == []


def test_custom_data_is_stored_and_updated(target, admin, db_name):
    skip_on_ferretdb(target.kind, "customData")
    user = _name()
    admin[db_name].command("createUser", user, pwd="pw", roles=[], customData={"owner": "pam"})
    assert admin[db_name].command("usersInfo", user)["users"][0]["customData"] == {"owner": "pam"}
    admin[db_name].command("updateUser", user, customData={"owner": "other"})
    assert admin[db_name].command("usersInfo", user)["users"][0]["customData"] == {"owner": "other"}


def test_users_info_for_all_databases(target, admin, db_name):
    user = _name()
    admin[db_name].command("createUser", user, pwd="pw", roles=[])
    everyone = admin.admin.command("usersInfo", {"forAllDBs": True})["users"]
    assert (user, db_name) in {(u["user"], u["db"]) for u in everyone}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_created_user_logs_in_with_each_mechanism(target, admin, db_name, mechanism):
    user = _name()
    admin[db_name].command("createUser", user, pwd="s3cret", roles=[])
    assert _login_works(target, user, "s3cret", db_name, mechanism)
    assert not _login_works(target, user, "wrong", db_name, mechanism)


def test_duplicate_user_is_refused(target, admin, db_name):
    user = _name()
    admin[db_name].command("createUser", user, pwd="pw", roles=[])
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        admin[db_name].command("createUser", user, pwd="pw", roles=[])
    assert failure.value.code == 51003
    assert failure.value.details["errmsg"] == f'User "{user}@{db_name}" already exists'


@pytest.mark.parametrize(
    ("command", "message"),
    [("dropUser", "User 'ghost@{db}' not found"), ("updateUser", "User ghost@{db} not found")],
)
def test_missing_user_is_user_not_found(target, admin, db_name, command, message):
    options = {"pwd": "x"} if command == "updateUser" else {}
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        admin[db_name].command(command, "ghost", **options)
    assert failure.value.code == 11
    assert failure.value.details["errmsg"] == message.format(db=db_name)


def test_password_change_replaces_the_old_password(target, admin, db_name):
    user = _name()
    admin[db_name].command("createUser", user, pwd="old-password", roles=[])
    admin[db_name].command("updateUser", user, pwd="new-password")
    assert not _login_works(target, user, "old-password", db_name)
    assert _login_works(target, user, "new-password", db_name)


def test_dropped_user_cannot_log_in(target, admin, db_name):
    user = _name()
    admin[db_name].command("createUser", user, pwd="pw", roles=[])
    admin[db_name].command("dropUser", user)
    assert admin[db_name].command("usersInfo", user)["users"] == []
    assert not _login_works(target, user, "pw", db_name)


def test_drop_all_users_counts_them(target, admin, db_name):
    for _ in range(2):
        admin[db_name].command("createUser", _name(), pwd="pw", roles=[])
    assert admin[db_name].command("dropAllUsersFromDatabase")["n"] == 2
    assert admin[db_name].command("usersInfo", 1)["users"] == []


def test_unknown_role_is_role_not_found(target, admin, db_name):
    skip_on_ferretdb(target.kind, "roles")
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        admin[db_name].command("createUser", _name(), pwd="pw", roles=["noSuchRole"])
    assert failure.value.code == 31
    assert failure.value.details["errmsg"] == f"Could not find role: noSuchRole@{db_name}"


def test_grant_and_revoke_change_what_a_user_may_do(target, admin, db_name):
    skip_on_ferretdb(target.kind, "roles")
    user = _name()
    admin[db_name].command("createUser", user, pwd="pw", roles=["read"])
    admin[db_name].command("grantRolesToUser", user, roles=["readWrite"])
    info = admin[db_name].command("usersInfo", user)["users"][0]
    assert sorted(r["role"] for r in info["roles"]) == ["read", "readWrite"]
    with target.client(target.uri_for(user, "pw", db_name)) as client:
        client[db_name].items.insert_one({"x": 1})
        admin[db_name].command("revokeRolesFromUser", user, roles=["readWrite"])
        with pytest.raises(pymongo.errors.OperationFailure) as failure:
            client[db_name].items.insert_one({"x": 2})
        assert failure.value.code == 13
        assert client[db_name].items.count_documents({}) == 1
    admin.drop_database(db_name)


def test_read_user_insert_is_unauthorized(target, admin, db_name):
    skip_on_ferretdb(target.kind, "authorization")
    user = _name()
    admin[db_name].command("createUser", user, pwd="pw", roles=["read"])
    client = target.client(target.uri_for(user, "pw", db_name))
    with client, pytest.raises(pymongo.errors.OperationFailure) as failure:
        client[db_name].items.insert_one({"x": 1})
    assert failure.value.code == 13
    assert failure.value.details["errmsg"].startswith(f"not authorized on {db_name} to execute command")


def test_client_source_restriction_refuses_login(target, admin, db_name):
    skip_on_ferretdb(target.kind, "authenticationRestrictions")
    user = _name()
    admin[db_name].command(
        "createUser", user, pwd="pw", roles=[], authenticationRestrictions=[{"clientSource": ["192.0.2.0/24"]}]
    )
    assert not _login_works(target, user, "pw", db_name)
    admin[db_name].command("updateUser", user, authenticationRestrictions=[])
    assert _login_works(target, user, "pw", db_name)


def test_kill_all_sessions_ends_the_users_connections(target, admin, db_name):
    skip_on_ferretdb(target.kind, "killAllSessions")
    if target.kind == "mongodb":
        pytest.skip("mongod's killAllSessions ends sessions and operations, not idle connections")
    user = _name()
    admin[db_name].command("createUser", user, pwd="pw", roles=["read"])
    uri = target.uri_for(user, "pw", db_name)
    with target.client(uri, retryReads=False) as client:
        client[db_name].items.find_one()
        admin.admin.command("killAllSessions", [{"user": user, "db": db_name}])
        with pytest.raises(pymongo.errors.AutoReconnect):
            client[db_name].items.find_one()
