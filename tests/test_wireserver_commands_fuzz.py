"""Every command of the wire server, fed odd arguments by hypothesis, answers with a MongoDB error
(never an internal error) and leaves the connection usable."""

from __future__ import annotations

import pymongo
import pymongo.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mongo.wireserver import WireServer
from tests.mongo.wireserver import commands as wire_commands

pytestmark = pytest.mark.wireserver

# Commands that change the server's own state in ways that would disturb the run.
SKIPPED = {
    "wireserverFault",
    "killAllSessions",
    "killOp",
    "logout",
    "dropAllUsersFromDatabase",
    "dropDatabase",
    "saslStart",
    "saslContinue",
    "hello",
    "isMaster",
    "ismaster",
}
COMMANDS = sorted(set(wire_commands.PRIVILEGES) - SKIPPED)
FIELDS = [
    "filter",
    "documents",
    "updates",
    "deletes",
    "q",
    "u",
    "pipeline",
    "cursor",
    "batchSize",
    "limit",
    "skip",
    "sort",
    "projection",
    "key",
    "query",
    "roles",
    "pwd",
    "user",
    "db",
    "op",
    "cursors",
    "indexes",
    "index",
    "update",
    "remove",
    "new",
    "upsert",
    "mechanisms",
    "authenticationRestrictions",
    "customData",
    "collection",
    "forAllDBs",
    "nameOnly",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["items", "$bad", "", "read", "a.b"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["a", "$set", "$gt", "role", "db", "q", "u", "limit", "_id"]), inner, max_size=3
        ),
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def server_and_client():
    server = WireServer().start()
    client = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=3000, retryReads=False, retryWrites=False)
    yield server, client
    client.close()
    server.stop()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(COMMANDS),
    value=st.one_of(st.just("items"), st.just(1), values),
    extra=st.dictionaries(st.sampled_from(FIELDS), values, max_size=4),
    db=st.sampled_from(["fuzzdb", "admin"]),
)
def test_commands_answer_odd_arguments_with_mongodb_errors(server_and_client, name, value, extra, db):
    _server, client = server_and_client
    try:
        client[db].command({name: value, **extra})
    except pymongo.errors.OperationFailure as exc:
        assert exc.code not in (1, None), exc.details  # 1 is InternalError: a server bug
    except (pymongo.errors.InvalidOperation, pymongo.errors.InvalidDocument, ValueError, TypeError):
        pass  # pymongo refused to send it
    assert client.admin.command("ping")["ok"] == 1
