"""User-defined roles (createRole, updateRole, dropRole, rolesInfo, ...) and authorization by the actions
their privileges grant, checked with the real clients pymongo and mongosh.

Each test runs against the in-repo wire server and, when ``MONGODB_URI`` points at a real MongoDB, against
that server too, so the wire server's behaviour, codes and messages are held to mongod's. The scenario is
issue 17's scoped grant: a role with ``find`` on ``shop.orders`` only, and a user made for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pymongo
import pymongo.errors
import pytest

from tests.helpers import unique_name as _name
from tests.helpers import unique_password
from tests.mongo.fixtures import MongoServer as Target
from tests.mongo.fixtures import server_kind

pytestmark = pytest.mark.wireserver


@pytest.fixture(params=["wireserver", "mongodb"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "wireserver":
        return Target(request.getfixturevalue("wire_server").uri, "wireserver")
    uri = os.environ.get("MONGODB_URI")
    if not uri or server_kind(uri) != "mongodb":
        pytest.skip("no real MongoDB: MONGODB_URI is not set (or is FerretDB, which has no roles)")
    return Target(uri, "mongodb")


@pytest.fixture
def shop(admin: pymongo.MongoClient) -> Iterator[str]:
    """A fresh "shop" database with orders and customers; its roles, users and data go afterwards."""
    name = _name("shop")
    admin[name].orders.insert_many([{"_id": 1, "item": "book"}, {"_id": 2, "item": "pen"}])
    admin[name].customers.insert_one({"_id": 1, "name": "Ada"})
    yield name
    admin[name].command("dropAllUsersFromDatabase")
    admin[name].command("dropAllRolesFromDatabase")
    admin.drop_database(name)


def _orders_reader(admin: pymongo.MongoClient, shop: str, actions: list[str] | None = None) -> str:
    role = _name("orders_reader")
    privileges = [{"resource": {"db": shop, "collection": "orders"}, "actions": actions or ["find"]}]
    admin[shop].command("createRole", role, privileges=privileges, roles=[])
    return role


def _scoped_user(admin: pymongo.MongoClient, shop: str, role: str) -> tuple[str, str]:
    user, password = _name("scoped"), unique_password()
    admin[shop].command("createUser", user, pwd=password, roles=[role])
    return user, password


def _refused(call) -> pymongo.errors.OperationFailure:
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        call()
    return failure.value


# -- the scoped grant -----------------------------------------------------------------------------------
def test_scoped_user_reads_orders_but_not_customers_and_cannot_write(target, admin, shop):
    role = _orders_reader(admin, shop)
    user, password = _scoped_user(admin, shop, role)
    with target.client(target.uri_for(user, password, shop)) as client:
        assert list(client[shop].orders.find({}, sort=[("_id", 1)])) == [
            {"_id": 1, "item": "book"},
            {"_id": 2, "item": "pen"},
        ]
        assert client[shop].orders.count_documents({}) == 2
        other = _refused(lambda: client[shop].customers.find_one())
        insert = _refused(lambda: client[shop].orders.insert_one({"_id": 3}))
        delete = _refused(lambda: client[shop].orders.delete_one({"_id": 1}))
        joined = _refused(
            lambda: list(
                client[shop].orders.aggregate(
                    [{"$lookup": {"from": "customers", "localField": "_id", "foreignField": "_id", "as": "c"}}]
                )
            )
        )
        assert client[shop].list_collection_names(authorizedCollections=True) == ["orders"]
        assert client.list_database_names() == [shop]
    for failure in (other, insert, delete, joined):
        assert failure.code == 13 and failure.details["codeName"] == "Unauthorized"
    assert other.details["errmsg"].startswith(f'not authorized on {shop} to execute command {{ find: "customers"')
    assert admin[shop].orders.count_documents({}) == 2  # nothing was written


def test_updated_role_applies_on_the_next_command(target, admin, shop):
    role = _orders_reader(admin, shop)
    user, password = _scoped_user(admin, shop, role)
    with target.client(target.uri_for(user, password, shop)) as client:
        assert client[shop].orders.find_one({"_id": 1})
        customers_only = [{"resource": {"db": shop, "collection": "customers"}, "actions": ["find"]}]
        admin[shop].command("updateRole", role, privileges=customers_only)
        assert _refused(lambda: client[shop].orders.find_one()).code == 13
        assert client[shop].customers.find_one() == {"_id": 1, "name": "Ada"}

        insert_orders = [{"resource": {"db": shop, "collection": "orders"}, "actions": ["insert"]}]
        admin[shop].command("grantPrivilegesToRole", role, privileges=insert_orders)
        client[shop].orders.insert_one({"_id": 3, "item": "ink"})
        admin[shop].command("revokePrivilegesFromRole", role, privileges=insert_orders)
        assert _refused(lambda: client[shop].orders.insert_one({"_id": 4})).code == 13
    assert admin[shop].orders.count_documents({}) == 3


def test_dropped_role_is_taken_from_its_user(target, admin, shop):
    role = _orders_reader(admin, shop)
    user, password = _scoped_user(admin, shop, role)
    with target.client(target.uri_for(user, password, shop)) as client:
        assert client[shop].orders.find_one()
        admin[shop].command("dropRole", role)
        assert _refused(lambda: client[shop].orders.find_one()).code == 13
    assert admin[shop].command("usersInfo", user)["users"][0]["roles"] == []
    assert admin[shop].command("rolesInfo", role)["roles"] == []


def test_a_cursor_stops_when_its_privileges_are_revoked(target, admin, shop):
    admin[shop].orders.insert_many([{"_id": n} for n in range(10, 20)])
    role = _orders_reader(admin, shop)
    user, password = _scoped_user(admin, shop, role)
    with target.client(target.uri_for(user, password, shop)) as client:
        cursor = client[shop].orders.find({}, batch_size=2)
        assert next(cursor) and next(cursor)  # the first batch
        admin[shop].command("updateRole", role, privileges=[])
        failure = _refused(lambda: list(cursor))  # getMore checks what opened the cursor
    assert failure.code == 13
    assert failure.details["errmsg"].startswith("not authorized for getMore with cursor id")


def test_user_and_role_are_gone_after_the_grant_ends(target, admin, shop):
    role = _orders_reader(admin, shop)
    user, password = _scoped_user(admin, shop, role)
    with target.client(target.uri_for(user, password, shop)) as client:
        assert client[shop].orders.find_one()
        admin[shop].command("dropUser", user)
        admin[shop].command("dropRole", role)
        assert _refused(lambda: client[shop].orders.find_one()).code == 13
    assert admin[shop].command("usersInfo", user)["users"] == []
    assert admin[shop].command("rolesInfo", role)["roles"] == []
    with target.client(target.uri_for(user, password, shop)) as fresh:
        assert _refused(lambda: fresh[shop].command("ping")).code == 18


# -- rolesInfo -------------------------------------------------------------------------------------------
def test_roles_info_shows_what_was_granted(target, admin, shop):
    role = _orders_reader(admin, shop, ["insert", "find"])
    child = _name("child")
    admin[shop].command("createRole", child, privileges=[], roles=[role, "read"])

    shown = admin[shop].command("rolesInfo", role, showPrivileges=True)["roles"]
    assert len(shown) == 1
    doc = shown[0]
    assert (doc["role"], doc["db"], doc["isBuiltin"], doc["roles"]) == (role, shop, False, [])
    assert [(p["resource"], sorted(p["actions"])) for p in doc["privileges"]] == [
        ({"db": shop, "collection": "orders"}, ["find", "insert"])
    ]
    assert doc["inheritedPrivileges"] == doc["privileges"]

    plain = admin.admin.command("rolesInfo", {"role": child, "db": shop})["roles"][0]
    assert "privileges" not in plain
    assert plain["roles"] == [{"role": role, "db": shop}, {"role": "read", "db": shop}]
    assert {(r["role"], r["db"]) for r in plain["inheritedRoles"]} == {(role, shop), ("read", shop)}

    listed = admin[shop].command("rolesInfo", 1)["roles"]
    assert sorted(r["role"] for r in listed) == sorted([role, child])
    with_builtin = admin[shop].command("rolesInfo", 1, showBuiltinRoles=True)["roles"]
    assert {"read", "readWrite", "dbAdmin", "userAdmin", "dbOwner", role, child} <= {r["role"] for r in with_builtin}
    both = admin[shop].command("rolesInfo", [role, {"role": "ghost", "db": shop}])["roles"]
    assert [r["role"] for r in both] == [role]  # roles that do not exist are left out


def test_built_in_roles_are_shown_as_privileges(target, admin, shop):
    read = admin[shop].command("rolesInfo", "read", showPrivileges=True)["roles"][0]
    assert read["isBuiltin"] is True
    on_db = [p for p in read["privileges"] if p["resource"] == {"db": shop, "collection": ""}]
    assert on_db and {"find", "listCollections", "listIndexes"} <= set(on_db[0]["actions"])
    assert "insert" not in on_db[0]["actions"]


def test_a_user_sees_its_own_roles_but_not_others(target, admin, shop):
    role, other = _orders_reader(admin, shop), _orders_reader(admin, shop)
    user, password = _scoped_user(admin, shop, role)
    with target.client(target.uri_for(user, password, shop)) as client:
        mine = client[shop].command("rolesInfo", role, showPrivileges=True)["roles"]
        refused = _refused(lambda: client[shop].command("rolesInfo", other))
    assert [r["role"] for r in mine] == [role]
    assert refused.code == 13
    assert refused.details["errmsg"] == f"Not authorized to view roles from the {shop} database"


# -- inheritance and resource patterns ---------------------------------------------------------------
def test_inherited_role_grants_and_cycles_are_refused(target, admin, shop):
    base = _orders_reader(admin, shop)
    child = _name("child")
    admin[shop].command("createRole", child, privileges=[], roles=[base])
    user, password = _scoped_user(admin, shop, child)
    with target.client(target.uri_for(user, password, shop)) as client:
        assert client[shop].orders.find_one()
        cycle = _refused(lambda: admin[shop].command("grantRolesToRole", base, roles=[child]))
        admin[shop].command("revokeRolesFromRole", child, roles=[base])
        assert _refused(lambda: client[shop].orders.find_one()).code == 13
        admin[shop].command("grantRolesToRole", child, roles=[base])
        assert client[shop].orders.find_one()
    assert cycle.code == 49 and cycle.details["codeName"] == "InvalidRoleModification"
    assert cycle.details["errmsg"] == f"Granting roles to {base}@{shop} would introduce a cycle in the role graph"


@pytest.mark.parametrize(
    ("resource", "orders", "customers", "elsewhere"),
    [
        ({"db": "{shop}", "collection": "orders"}, True, False, False),
        ({"db": "{shop}", "collection": ""}, True, True, False),
        ({"db": "", "collection": "orders"}, True, False, True),
        ({"db": "", "collection": ""}, True, True, True),
        ({"anyResource": True}, True, True, True),
    ],
    ids=["one-collection", "one-database", "collection-everywhere", "every-database", "any-resource"],
)
def test_resource_patterns_match_as_mongodb_documents_them(target, admin, shop, resource, orders, customers, elsewhere):
    elsewhere_db = f"{shop}_other"
    admin[elsewhere_db].orders.insert_one({"_id": 1})
    role, user, password = _name("pattern"), _name("pattern_user"), unique_password()
    resource = {k: v.format(shop=shop) if isinstance(v, str) else v for k, v in resource.items()}
    admin.admin.command("createRole", role, privileges=[{"resource": resource, "actions": ["find"]}], roles=[])
    admin.admin.command("createUser", user, pwd=password, roles=[role])
    try:
        with target.client(target.uri_for(user, password, "admin")) as client:
            for coll, allowed in ((client[shop].orders, orders), (client[shop].customers, customers)):
                if allowed:
                    assert coll.find_one() is not None
                else:
                    assert _refused(coll.find_one).code == 13
            if elsewhere:
                assert client[elsewhere_db].orders.find_one() == {"_id": 1}
            else:
                assert _refused(client[elsewhere_db].orders.find_one).code == 13
            assert _refused(lambda: client[shop].orders.insert_one({"_id": 9})).code == 13
    finally:
        admin.admin.command("dropUser", user)
        admin.admin.command("dropRole", role)
        admin.drop_database(elsewhere_db)


def test_cluster_privileges_cover_cluster_commands_only(target, admin):
    role, user, password = _name("ops_watcher"), _name("watcher"), unique_password()
    admin.admin.command(
        "createRole", role, privileges=[{"resource": {"cluster": True}, "actions": ["inprog"]}], roles=[]
    )
    admin.admin.command("createUser", user, pwd=password, roles=[role])
    try:
        with target.client(target.uri_for(user, password, "admin")) as client:
            assert isinstance(client.admin.command("currentOp")["inprog"], list)
            assert _refused(lambda: client.admin.command("serverStatus")).code == 13
            assert _refused(lambda: client.admin.command("killOp", op=123456789)).code == 13
    finally:
        admin.admin.command("dropUser", user)
        admin.admin.command("dropRole", role)


# -- who may manage roles, and mongod's errors -------------------------------------------------------
def test_role_management_needs_its_actions(target, admin, shop):
    other_db = f"{shop}_other"
    manager, writer = _name("manager"), _name("writer")
    admin[shop].command("createUser", manager, pwd="pw", roles=["userAdmin"])
    admin[shop].command("createUser", writer, pwd="pw", roles=["readWrite"])
    orders_find = [{"resource": {"db": shop, "collection": "orders"}, "actions": ["find"]}]
    elsewhere = [{"resource": {"db": other_db, "collection": "orders"}, "actions": ["find"]}]
    with target.client(target.uri_for(writer, "pw", shop)) as client:
        no_create = _refused(lambda: client[shop].command("createRole", "r1", privileges=orders_find, roles=[]))
    with target.client(target.uri_for(manager, "pw", shop)) as client:
        client[shop].command("createRole", "r2", privileges=orders_find, roles=["read"])
        no_grant = _refused(lambda: client[shop].command("createRole", "r3", privileges=elsewhere, roles=[]))
        client[shop].command("dropRole", "r2")
    assert no_create.code == 13 and no_create.details["errmsg"] == f"Not authorized to create roles on db: {shop}"
    assert no_grant.code == 13
    assert admin[shop].command("rolesInfo", 1)["roles"] == []


def test_role_errors_carry_mongodb_codes(target, admin, shop):
    role = _orders_reader(admin, shop)
    duplicate = _refused(lambda: admin[shop].command("createRole", role, privileges=[], roles=[]))
    unknown_action = _refused(
        lambda: admin[shop].command(
            "createRole",
            _name("bad"),
            privileges=[{"resource": {"db": shop, "collection": ""}, "actions": ["find", "fnd"]}],
            roles=[],
        )
    )
    missing = _refused(lambda: admin[shop].command("dropRole", "ghost"))
    unknown_inherited = _refused(lambda: admin[shop].command("createRole", _name("r"), privileges=[], roles=["ghost"]))
    unknown_for_user = _refused(lambda: admin[shop].command("createUser", _name("u"), pwd="pw", roles=["ghost"]))
    cross_db = _refused(
        lambda: admin[shop].command(
            "createRole", _name("r"), privileges=[{"resource": {"cluster": True}, "actions": ["inprog"]}], roles=[]
        )
    )
    builtin = _refused(lambda: admin[shop].command("createRole", "read", privileges=[], roles=[]))
    assert (duplicate.code, duplicate.details["errmsg"]) == (51002, f'Role "{role}@{shop}" already exists')
    assert (unknown_action.code, unknown_action.details["codeName"]) == (9, "FailedToParse")
    assert unknown_action.details["errmsg"] == "Unrecognized action privilege strings: fnd"
    assert (missing.code, missing.details["codeName"]) == (31, "RoleNotFound")
    assert missing.details["errmsg"] == f"Could not find role: ghost@{shop}"
    assert unknown_inherited.code == 31 and unknown_inherited.details["errmsg"].endswith(f"ghost@{shop}")
    assert (unknown_for_user.code, unknown_for_user.details["errmsg"]) == (31, f"Could not find role: ghost@{shop}")
    assert (cross_db.code, cross_db.details["codeName"]) == (49, "InvalidRoleModification")
    assert (builtin.code, builtin.details["codeName"]) == (2, "BadValue")


# -- mongosh ---------------------------------------------------------------------------------------------
def _last_json(result) -> dict:
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mongosh_creates_and_shows_a_role(target, admin, shop, mongosh):
    role = _name("sh_role")
    script = (
        f'const d = db.getSiblingDB("{shop}"); '
        f'd.createRole({{role: "{role}", privileges: [{{resource: {{db: "{shop}", collection: "orders"}}, '
        'actions: ["find"]}], roles: []}); '
        f'const r = d.getRole("{role}", {{showPrivileges: true}}); '
        f'const missing = d.getRole("{role}_ghost"); '
        "print(JSON.stringify({role: r.role, db: r.db, isBuiltin: r.isBuiltin, privileges: r.privileges, missing}))"
    )
    output = _last_json(mongosh(target.uri, script, timeout=90))
    assert output == {
        "role": role,
        "db": shop,
        "isBuiltin": False,
        "privileges": [{"resource": {"db": shop, "collection": "orders"}, "actions": ["find"]}],
        "missing": None,
    }
    assert admin[shop].command("rolesInfo", role)["roles"][0]["role"] == role


def test_mongosh_scoped_user_is_refused_what_its_role_does_not_grant(target, admin, shop, mongosh):
    role = _orders_reader(admin, shop)
    user, password = _scoped_user(admin, shop, role)
    uri = target.uri_for(user, password, shop)
    script = (
        f'const d = db.getSiblingDB("{shop}"); '
        "const out = {orders: d.orders.find({}, {_id: 0}).sort({item: 1}).toArray(), "
        "collections: d.getCollectionInfos({}, {nameOnly: true, authorizedCollections: true}).map((c) => c.name)}; "
        'try { d.customers.findOne(); out.customers = "allowed"; } '
        "catch (e) { out.customers = {code: e.code, codeName: e.codeName}; } "
        'try { d.orders.insertOne({x: 1}); out.insert = "allowed"; } '
        "catch (e) { out.insert = {code: e.code, codeName: e.codeName}; } "
        "print(JSON.stringify(out))"
    )
    output = _last_json(mongosh(uri, script, timeout=90))
    denied = {"code": 13, "codeName": "Unauthorized"}
    assert output == {
        "orders": [{"item": "book"}, {"item": "pen"}],
        "collections": ["orders"],
        "customers": denied,
        "insert": denied,
    }
    uncaught = mongosh(uri, f'db.getSiblingDB("{shop}").customers.find().toArray()', timeout=90)
    assert uncaught.returncode != 0
    assert f"not authorized on {shop} to execute command" in uncaught.stdout + uncaught.stderr
