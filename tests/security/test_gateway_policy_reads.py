"""Attacks on the gateway's policy (issue 12, section 3): a message the server reads differently, namespaces hidden
in arguments, writes to system collections, user and role management, credentials, other people's cursors.

Refused: each attack below goes through a real `manage.py runproxy` to the in-repo wire server (FerretDB where
said), as raw wire messages where a driver would not send them and with pymongo where it would; the gateway
answers Unauthorized (13) with a message naming why, the server never sees the command, and its data shows it
(the secret document is not returned, the user is not created, the collection is not written).
"""

from __future__ import annotations

import bson
import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from tests.gateway_fixtures import account_on, session_on
from tests.helpers import unique_name
from tests.security.gateway_wire import Raw, RawClient, array, body_section, document, op_msg_sections, refused

pytestmark = [pytest.mark.wireserver, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def seeded(wire_server):
    """Databases on the wire server: `app` (the session's), `secret` (outside it), with a document each."""
    names = {"app": unique_name("app"), "secret": unique_name("secret")}
    with MongoClient(wire_server.uri, serverSelectionTimeoutMS=5000) as admin:
        admin[names["app"]].c.insert_many([{"n": n, "where": "app"} for n in range(10)])
        admin[names["app"]].important.insert_many([{"keep": n} for n in range(3)])
        admin[names["secret"]].c.insert_one({"where": "secret", "card": "4111-1111-1111-1111"})
    return names


def login(gateway_proxy, session, secret, *, source: str = "127.0.0.1") -> RawClient:
    client = RawClient(gateway_proxy.port, source=source)
    client.login(session.username, secret)
    return client


def admin_client(wire_server) -> MongoClient:
    return MongoClient(wire_server.uri, serverSelectionTimeoutMS=5000)


# -- a message the server could read differently -----------------------------------------------------------------


def test_a_field_given_twice_in_the_command_is_refused(wire_server, gateway, gateway_proxy, seeded):
    app, other = seeded["app"], seeded["secret"]
    session, secret = session_on(gateway, account_on(wire_server), database_allow_list=[app])
    with login(gateway_proxy, session, secret) as client:
        # A second $db: the allow-list would read the first, the server uses the last.
        reply = client.command(document([("find", "c"), ("filter", {}), ("$db", app), ("$db", other)]))
        assert refused(reply, "'$db' appears twice")
        assert "secret" not in repr(reply) and "4111" not in repr(reply)
        # The command name repeated: the command log would name one collection, the server delete from another.
        attack = document(
            [("delete", "c"), ("deletes", [{"q": {}, "limit": 0}]), ("delete", "important"), ("$db", app)]
        )
        assert refused(client.command(attack), "command name 'delete' appears twice")
        # A field given twice inside an argument the policy reads ($lookup's `from`).
        lookup = document(
            [("from", {"db": app, "coll": "c"}), ("from", {"db": other, "coll": "c"}), ("as", "x"), ("pipeline", [])]
        )
        stage = document([("$lookup", Raw(lookup))])
        body = document([("aggregate", "c"), ("pipeline", array(stage)), ("cursor", {}), ("$db", app)])
        assert refused(client.command(body), "'from' appears twice")
    with admin_client(wire_server) as admin:
        assert admin[app].important.count_documents({}) == 3  # the repeated delete never reached the server


def test_a_second_command_document_is_refused(wire_server, gateway, gateway_proxy, seeded):
    app, other = seeded["app"], seeded["secret"]
    session, secret = session_on(gateway, account_on(wire_server), database_allow_list=[app])
    with login(gateway_proxy, session, secret) as client:
        message = op_msg_sections(
            [body_section({"find": "c", "$db": app}), body_section({"find": "c", "$db": other})], request_id=5
        )
        assert refused(client.raw(message), "second command document")


def test_a_document_sequence_named_like_a_field_the_policy_reads_is_refused(
    wire_server, gateway, gateway_proxy, seeded
):
    app = seeded["app"]
    account = account_on(wire_server)
    reader, reader_secret = session_on(gateway, account, read_only=True)
    with login(gateway_proxy, reader, reader_secret) as client:
        # The read-only rule reads `pipeline` in the body; a sequence named `pipeline` would carry an $out.
        reply = client.command(
            {"aggregate": "c", "cursor": {}, "$db": app}, sequences=[("pipeline", [{"$out": "copied"}])]
        )
        assert refused(reply, "document sequence named 'pipeline'")
    writer, writer_secret = session_on(gateway, account)
    with login(gateway_proxy, writer, writer_secret) as client:
        # `deletes` in the body and again as a sequence: which one runs depends on the server.
        reply = client.command(
            {"delete": "important", "deletes": [{"q": {"keep": 99}, "limit": 1}], "$db": app},
            sequences=[("deletes", [{"q": {}, "limit": 0}])],
        )
        assert refused(reply, "document sequence 'deletes' repeats a field")
        # A sequence the command does not take as one.
        reply = client.command({"find": "c", "$db": app}, sequences=[("filter", [{"n": 1}])])
        assert refused(reply, "document sequence named 'filter'")
        # The sequences drivers send stay accepted (insert's documents, update's updates, delete's deletes).
        assert client.command({"insert": "fresh", "$db": app}, sequences=[("documents", [{"a": 1}])])["ok"] == 1
    with admin_client(wire_server) as admin:
        assert "copied" not in admin[app].list_collection_names()
        assert admin[app].important.count_documents({}) == 3


# -- namespaces inside arguments --------------------------------------------------------------------------------


def test_namespaces_inside_arguments_are_checked_against_the_database_allow_list(
    wire_server, gateway, gateway_proxy, seeded
):
    app, other = seeded["app"], seeded["secret"]
    session, secret = session_on(gateway, account_on(wire_server), database_allow_list=[app])
    lookup = {"from": {"db": other, "coll": "c"}, "localField": "n", "foreignField": "n", "as": "x"}
    attacks = [
        {"renameCollection": f"{app}.c", "to": f"{other}.stolen", "$db": "admin"},
        {"renameCollection": f"{other}.c", "to": f"{app}.stolen", "$db": "admin"},
        {"aggregate": "c", "pipeline": [{"$out": {"db": other, "coll": "x"}}], "cursor": {}, "$db": app},
        {"aggregate": "c", "pipeline": [{"$merge": {"into": {"db": other, "coll": "x"}}}], "cursor": {}, "$db": app},
        {"aggregate": "c", "pipeline": [{"$lookup": lookup}], "cursor": {}, "$db": app},
        {"aggregate": "c", "pipeline": [{"$graphLookup": {**lookup, "startWith": "$n"}}], "cursor": {}, "$db": app},
        {"aggregate": "c", "pipeline": [{"$unionWith": {"coll": "c", "db": other}}], "cursor": {}, "$db": app},
        {"aggregate": "c", "pipeline": [{"$facet": {"a": [{"$lookup": lookup}]}}], "cursor": {}, "$db": app},
        {
            "aggregate": "c",
            "pipeline": [
                {"$lookup": {"from": "c", "as": "x", "pipeline": [{"$unionWith": {"coll": "c", "db": other}}]}}
            ],
            "cursor": {},
            "$db": app,
        },
        {
            "mapReduce": "c",
            "map": "function(){}",
            "reduce": "function(){}",
            "out": {"replace": "x", "db": other},
            "$db": app,
        },
        {"dataSize": f"{other}.c", "$db": app},
        {
            "explain": {"aggregate": "c", "pipeline": [{"$unionWith": {"coll": "c", "db": other}}], "cursor": {}},
            "$db": app,
        },
        {"aggregate": 1, "pipeline": [{"$changeStream": {"allChangesForCluster": True}}], "cursor": {}, "$db": "admin"},
        {"usersInfo": {"forAllDBs": True}, "$db": app},
        {"create": "v", "viewOn": "c", "pipeline": [{"$lookup": lookup}], "$db": app},
        {"shardCollection": f"{other}.c", "key": {"_id": 1}, "$db": "admin"},
    ]
    with login(gateway_proxy, session, secret) as client:
        for attack in attacks:
            reply = client.command(attack)
            assert refused(reply), (next(iter(attack)), reply)
            assert "4111" not in repr(reply)
        bulk = client.command(
            {"bulkWrite": 1, "ops": [{"insert": 0, "document": {"x": 1}}], "$db": "admin"},
            sequences=[("nsInfo", [{"ns": f"{other}.c"}])],
        )
        assert refused(bulk, "outside this session's databases")
        # Within the allow-list the same command is usable: renameCollection runs on admin, and the gateway lets
        # it through (the wire server, which has no renameCollection, answers CommandNotFound).
        renamed = client.command({"renameCollection": f"{app}.important", "to": f"{app}.kept", "$db": "admin"})
        assert renamed.get("code") == 59, renamed
    with admin_client(wire_server) as admin:
        assert admin[other].list_collection_names() == ["c"]


def test_writes_to_system_collections_are_refused_in_every_session(wire_server, gateway, gateway_proxy, seeded):
    app = seeded["app"]
    session, secret = session_on(gateway, account_on(wire_server))  # root upstream, no allow-list
    with MongoClient(gateway_proxy.uri(session.username, secret), serverSelectionTimeoutMS=5000) as driver:
        for collection, database in (("system.users", "admin"), ("system.roles", "admin"), ("system.js", app)):
            with pytest.raises(OperationFailure) as failure:
                driver[database][collection].insert_one({"_id": f"{database}.evil", "user": "evil", "db": "admin"})
            assert failure.value.code == 13 and "system collections are read-only" in str(failure.value)
        with pytest.raises(OperationFailure, match="system collections are read-only"):
            driver.admin["system.users"].update_one({}, {"$set": {"roles": [{"role": "root", "db": "admin"}]}})
        with pytest.raises(OperationFailure, match="system collections are read-only"):
            driver.admin["system.users"].delete_many({})
        with pytest.raises(OperationFailure, match="system collections are read-only"):
            driver[app].create_collection("system.views")
    with login(gateway_proxy, session, secret) as client:
        attacks = [
            {"renameCollection": f"{app}.c", "to": f"{app}.system.js", "$db": "admin"},
            {"aggregate": "c", "pipeline": [{"$out": "system.js"}], "cursor": {}, "$db": app},
            {"aggregate": "c", "pipeline": [{"$merge": {"into": "system.views"}}], "cursor": {}, "$db": app},
            {"createIndexes": "system.users", "indexes": [{"key": {"x": 1}, "name": "x"}], "$db": "admin"},
            {"drop": "system.js", "$db": app},
            {"cloneCollectionAsCapped": "c", "toCollection": "system.js", "size": 4096, "$db": app},
        ]
        for attack in attacks:
            assert refused(client.command(attack), "system collections are read-only"), attack
        bulk = client.command(
            {"bulkWrite": 1, "ops": [{"insert": 0, "document": {"user": "evil"}}], "$db": "admin"},
            sequences=[("nsInfo", [{"ns": "admin.system.users"}])],
        )
        assert refused(bulk, "system collections are read-only")
    assert wire_server.users.get("evil", "admin") is None


USER_AND_ROLE_MANAGEMENT = [
    {"createUser": "evil", "pwd": "evil-password-1", "roles": [{"role": "root", "db": "admin"}]},
    {"updateUser": "someone", "pwd": "new-password-1"},
    {"dropUser": "someone"},
    {"dropAllUsersFromDatabase": 1},
    {"grantRolesToUser": "someone", "roles": [{"role": "root", "db": "admin"}]},
    {"revokeRolesFromUser": "someone", "roles": [{"role": "root", "db": "admin"}]},
    {"createRole": "evilRole", "privileges": [], "roles": [{"role": "root", "db": "admin"}]},
    {"updateRole": "someRole", "roles": [{"role": "root", "db": "admin"}]},
    {"dropRole": "someRole"},
    {"dropAllRolesFromDatabase": 1},
    {
        "grantPrivilegesToRole": "someRole",
        "privileges": [{"resource": {"cluster": True}, "actions": ["shutdown"]}],
    },
    {"revokePrivilegesFromRole": "someRole", "privileges": []},
    {"grantRolesToRole": "someRole", "roles": [{"role": "root", "db": "admin"}]},
    {"revokeRolesFromRole": "someRole", "roles": [{"role": "root", "db": "admin"}]},
    {"applyOps": [{"op": "i", "ns": "admin.system.users", "o": {"_id": "admin.evil", "user": "evil"}}]},
    {"currentOp": 1},
    {"killOp": 1, "op": 12345},
    {"killAllSessions": []},
    {"aggregate": 1, "pipeline": [{"$currentOp": {"allUsers": True}}], "cursor": {}},
    {"setParameter": 1, "logLevel": 5},
]


def test_user_and_role_management_is_refused_unless_the_policy_allows_it(wire_server, gateway, gateway_proxy):
    # The stored account is root upstream and the resource has no deny list: only the allow-list stands in the way.
    account = account_on(wire_server, command_deny_list=[])
    wire_server.create_user("someone", "someone-password-1", [{"role": "read", "db": "admin"}])
    session, secret = session_on(gateway, account)
    with MongoClient(gateway_proxy.uri(session.username, secret), serverSelectionTimeoutMS=5000) as driver:
        for attack in USER_AND_ROLE_MANAGEMENT:
            name = next(iter(attack))
            with pytest.raises(OperationFailure) as failure:
                driver.admin.command(attack)
            assert failure.value.code == 13, name
            assert "is not allowed by this session's access policy" in str(failure.value), name
        assert driver.admin.command("usersInfo", "someone")["users"]  # reading users stays possible
    assert wire_server.users.get("evil", "admin") is None
    assert wire_server.users.get("someone", "admin") is not None
    # A policy that names the family lets its sessions manage users.
    allowed, allowed_secret = session_on(gateway, account, privileged_commands=["user_management"])
    with MongoClient(gateway_proxy.uri(allowed.username, allowed_secret), serverSelectionTimeoutMS=5000) as driver:
        driver.admin.command("createUser", "delegated", pwd="delegated-password-1", roles=[])
        driver.admin.command("dropUser", "delegated")
        with pytest.raises(OperationFailure, match="role management"):
            driver.admin.command("createRole", "evilRole", privileges=[], roles=[])
    wire_server.users.drop("someone", "admin")


def test_credentials_are_never_read_through_a_session(wire_server, gateway, gateway_proxy, seeded):
    app = seeded["app"]
    session, secret = session_on(gateway, account_on(wire_server))
    with MongoClient(gateway_proxy.uri(session.username, secret), serverSelectionTimeoutMS=5000) as driver:
        with pytest.raises(OperationFailure, match="holds credentials"):
            driver.admin["system.users"].find_one()
        with pytest.raises(OperationFailure, match="holds credentials"):
            driver.admin["system.users"].count_documents({})
        with pytest.raises(OperationFailure, match="never shows credentials"):
            driver.admin.command("usersInfo", {"forAllDBs": True}, showCredentials=True)
        with pytest.raises(OperationFailure, match="holds credentials"):
            driver.local["oplog.rs"].find_one()
        with pytest.raises(OperationFailure, match="holds credentials"):
            driver.admin["system.keys"].find_one()
        users = driver.admin.command("usersInfo", {"forAllDBs": True})["users"]  # without credentials: allowed
        assert users and not any("credentials" in user for user in users)
    with login(gateway_proxy, session, secret) as client:
        lookup = {"from": {"db": "admin", "coll": "system.users"}, "pipeline": [], "as": "stolen"}
        for attack in (
            {"aggregate": "c", "pipeline": [{"$lookup": lookup}], "cursor": {}, "$db": app},
            {"aggregate": "c", "pipeline": [{"$unionWith": "system.users"}], "cursor": {}, "$db": "admin"},
            {"dataSize": "admin.system.users", "$db": "admin"},
            {"aggregate": "system.users", "pipeline": [], "cursor": {}, "$db": "admin"},
        ):
            reply = client.command(attack)
            assert refused(reply, "holds credentials"), attack
            assert "SCRAM" not in repr(reply) and "storedKey" not in repr(reply)


def test_cursors_pass_only_for_the_session_that_opened_them(wire_server, gateway, gateway_proxy, seeded):
    app = seeded["app"]
    account = account_on(wire_server)  # two people on one stored account
    alice, alice_secret = session_on(gateway, account)
    mallory, mallory_secret = session_on(gateway, account)
    with login(gateway_proxy, alice, alice_secret) as owner, login(gateway_proxy, mallory, mallory_secret) as other:
        opened = owner.command({"find": "c", "filter": {}, "batchSize": 2, "$db": app})
        cursor_id = opened["cursor"]["id"]
        assert cursor_id and len(opened["cursor"]["firstBatch"]) == 2
        stolen = other.command({"getMore": cursor_id, "collection": "c", "batchSize": 100, "$db": app})
        assert refused(stolen, f"cursor {cursor_id} was not opened by this session")
        killed = other.command({"killCursors": "c", "cursors": [cursor_id], "$db": app})
        assert refused(killed, "was not opened by this session")
        guessed = other.command({"getMore": bson.Int64(cursor_id + 1), "collection": "c", "$db": app})
        assert refused(guessed, "was not opened by this session")
        more = owner.command({"getMore": cursor_id, "collection": "c", "batchSize": 100, "$db": app})
        assert len(more["cursor"]["nextBatch"]) == 8  # still whole: nobody else read or killed it
    # A driver's own cursors keep working across batches and pooled connections.
    with MongoClient(gateway_proxy.uri(alice.username, alice_secret), serverSelectionTimeoutMS=5000) as driver:
        assert len(list(driver[app].c.find({}, batch_size=3))) == 10


@pytest.mark.ferretdb
def test_ferretdb_behind_the_gateway_is_not_read_differently(ferretdb_server, gateway, gateway_proxy):
    from tests.factories import AccountFactory, ResourceFactory
    from tests.helpers import unique_password
    from tests.secret_scan import remember

    username, password = unique_name("acct"), unique_password()
    remember(password)
    with MongoClient(ferretdb_server.uri, serverSelectionTimeoutMS=5000) as admin:
        admin.admin.command("createUser", username, pwd=password, roles=[])
        app, other = unique_name("app"), unique_name("secret")
        admin[other].c.insert_one({"where": "secret"})
    resource = ResourceFactory(uri=f"mongodb://127.0.0.1:{ferretdb_server.port}", tls=False, command_deny_list=[])
    account = AccountFactory(resource=resource, username=username, password=password)
    session, secret = session_on(gateway, account, database_allow_list=[app])
    with login(gateway_proxy, session, secret) as client:
        reply = client.command(document([("find", "c"), ("filter", {}), ("$db", app), ("$db", other)]))
        assert refused(reply, "'$db' appears twice") and "secret" not in repr(reply.get("cursor"))
        reply = client.command(
            {"aggregate": "c", "pipeline": [{"$out": {"db": other, "coll": "x"}}], "cursor": {}, "$db": app}
        )
        assert refused(reply, "outside this session's databases")
        reply = client.command({"createUser": "evil", "pwd": "evil-password-1", "roles": [], "$db": app})
        assert refused(reply, "user management")
        assert client.command({"insert": "c", "$db": app}, sequences=[("documents", [{"a": 1}])])["n"] == 1
    with MongoClient(ferretdb_server.uri, serverSelectionTimeoutMS=5000) as admin:
        assert not admin[app].command("usersInfo", "evil")["users"]
