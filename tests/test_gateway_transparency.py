"""The gateway answers as the server does where ``benchmarks/transparency.py`` found it did not.

Each test sends the same command with pymongo directly to FerretDB and through the gateway (a session on an
account of that FerretDB) and expects the same observable answer, apart from what the gateway does on purpose.
"""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from tests.factories import AccountFactory, ResourceFactory
from tests.helpers import unique_name, unique_password
from tests.secret_scan import remember

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.ferretdb]


@pytest.fixture
def ferret_account(ferretdb_server):
    """An Account for a new FerretDB user (FerretDB has no roles: any user may do anything)."""
    username, password = unique_name("acct"), unique_password()
    remember(password)
    with MongoClient(ferretdb_server.uri, serverSelectionTimeoutMS=5000) as admin:
        admin.admin.command("createUser", username, pwd=password, roles=[])
    resource = ResourceFactory(uri=f"mongodb://127.0.0.1:{ferretdb_server.port}", tls=False)
    return AccountFactory(resource=resource, username=username, password=password)


def _error(client: MongoClient, command: dict) -> tuple[int, str]:
    with pytest.raises(OperationFailure) as failure:
        client.admin.command(command)
    return failure.value.code, failure.value.details.get("codeName", "")


def test_hello_with_sasl_supported_mechs_lacking_the_dot_is_bad_value(ferretdb_server, ferret_account, gateway_session):
    """FerretDB's TestHelloWithSupportedMechs/MissingSeparator: ``saslSupportedMechs: "db"`` is BadValue (2)."""
    _session, _secret, uri = gateway_session(ferret_account)
    command = {"hello": 1, "saslSupportedMechs": "admin"}
    with MongoClient(ferretdb_server.uri, serverSelectionTimeoutMS=5000) as direct:
        assert _error(direct, command) == (2, "BadValue")
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as through:
        assert _error(through, command) == (2, "BadValue")
        assert _error(through, {"isMaster": 1, "saslSupportedMechs": "nodot"}) == (2, "BadValue")
        hello = through.admin.command({"hello": 1, "saslSupportedMechs": "admin.nobody"})
        assert hello["ok"] == 1.0 and "saslSupportedMechs" not in hello  # an unknown user, as a server answers
