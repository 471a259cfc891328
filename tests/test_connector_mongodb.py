"""The pymongo connector against real servers: FerretDB for users and passwords, the wire server for roles,
locks and kills, and deliberately broken settings for each way verify_connection can fail.
"""

from __future__ import annotations

import os
import socket
import stat
import threading

import pytest
from pymongo.errors import ConnectionFailure, OperationFailure

from connectors import ConnectorError, connector_for
from connectors.mongodb import LOCK_RESTRICTIONS, TAG_KEY, MongoDBConnector
from tests.factories import ResourceFactory
from tests.helpers import assert_connection_cut as _assert_cut
from tests.helpers import unique_name as _name
from tests.helpers import unique_password as _password
from tests.mongo.logins import user_client as _user_client


@pytest.fixture
def ferret(ferret_resource):
    with MongoDBConnector(ferret_resource, timeout_ms=3000) as connector:
        yield connector


@pytest.fixture
def wire(wire_resource):
    with MongoDBConnector(wire_resource, timeout_ms=3000) as connector:
        yield connector


def _failure(resource, **options) -> ConnectorError:
    timeout_ms = options.pop("timeout_ms", 1000)
    with MongoDBConnector(resource, timeout_ms=timeout_ms) as connector, pytest.raises(ConnectorError) as caught:
        connector.verify_connection()
    return caught.value


# -- choosing a connector ------------------------------------------------------------------------------
def test_connector_for_a_mongodb_resource_is_the_pymongo_connector(ferret_resource):
    with connector_for(ferret_resource) as connector:
        assert isinstance(connector, MongoDBConnector)


@pytest.mark.django_db
def test_connector_for_an_atlas_resource_is_the_atlas_connector():
    from connectors.atlas import AtlasConnector

    resource = ResourceFactory(
        kind="atlas",
        uri="",
        atlas_group_id="5f1d0000000000000000abcd",
        atlas_public_key="pubkey",
        atlas_private_key="Atlas-Private-Key-9Qx",
    )
    assert isinstance(connector_for(resource), AtlasConnector)


@pytest.mark.django_db
def test_connector_for_an_unknown_kind_is_a_config_error():
    resource = ResourceFactory()
    resource.kind = "cassandra"
    with pytest.raises(ConnectorError) as caught:
        connector_for(resource)
    assert caught.value.kind == "config"


# -- FerretDB: users and passwords ----------------------------------------------------------------------
@pytest.mark.ferretdb
def test_verify_connection_reports_the_server(ferret, ferretdb_server):
    summary = ferret.verify_connection()
    assert summary["server"] == "FerretDB"
    assert summary["user"] == ferretdb_server.username
    assert ferretdb_server.password not in repr(summary)


@pytest.mark.ferretdb
def test_created_user_logs_in_changes_password_and_is_dropped(ferret):
    name, first, second = _name(), _password(), _password()
    ferret.create_user(db="app", username=name, password=first, roles=[])
    assert ferret.get_user(db="app", username=name)["user"] == name
    assert name in {u["user"] for u in ferret.list_users(db="app")}
    assert ferret.can_login(db="app", username=name, password=first)

    ferret.change_password(db="app", username=name, password=second)
    assert not ferret.can_login(db="app", username=name, password=first)
    assert ferret.can_login(db="app", username=name, password=second)

    assert ferret.drop_user(db="app", username=name) is True
    assert ferret.get_user(db="app", username=name) is None
    assert not ferret.can_login(db="app", username=name, password=second)
    assert ferret.drop_user(db="app", username=name) is False  # already gone counts as done


@pytest.mark.ferretdb
def test_ferretdb_gets_the_user_without_the_tag_it_cannot_store(ferret):
    name, password = _name(), _password()
    ferret.create_user(db="app", username=name, password=password, roles=[], custom_data={TAG_KEY: {"lease_id": "x/1"}})
    try:
        assert ferret.can_login(db="app", username=name, password=password)
    finally:
        ferret.drop_user(db="app", username=name)


@pytest.mark.ferretdb
def test_creating_an_existing_user_is_a_conflict(ferret):
    name, password = _name(), _password()
    ferret.create_user(db="app", username=name, password=password, roles=[])
    try:
        with pytest.raises(ConnectorError) as caught:
            ferret.create_user(db="app", username=name, password=password, roles=[])
        assert caught.value.kind == "conflict"
        assert password not in str(caught.value)
    finally:
        ferret.drop_user(db="app", username=name)


@pytest.mark.ferretdb
def test_changing_the_password_of_a_missing_user_is_not_found(ferret):
    password = _password()
    with pytest.raises(ConnectorError) as caught:
        ferret.change_password(db="app", username=_name(), password=password)
    assert caught.value.kind == "not_found"
    assert password not in str(caught.value)


@pytest.mark.ferretdb
def test_locking_on_a_server_without_restrictions_fails_clearly(ferret):
    name, password = _name(), _password()
    ferret.create_user(db="app", username=name, password=password, roles=[])
    try:
        with pytest.raises(ConnectorError) as caught:
            ferret.lock_user(db="app", username=name)
        assert caught.value.kind == "server"
        assert "authenticationRestrictions" in str(caught.value)
        assert ferret.can_login(db="app", username=name, password=password)
    finally:
        ferret.drop_user(db="app", username=name)


# -- verify_connection: each way to fail, in words -------------------------------------------------------
@pytest.mark.ferretdb
def test_wrong_admin_password_is_an_auth_error_without_the_password(ferret_resource):
    wrong = _password()
    ferret_resource.admin_password = wrong
    error = _failure(ferret_resource)
    assert error.kind == "auth"
    assert "refused the login" in str(error)
    assert wrong not in str(error) and wrong not in repr(error)


@pytest.mark.django_db
def test_unknown_host_is_a_dns_error():
    error = _failure(ResourceFactory(uri="mongodb://no-such-host.invalid:27017/?directConnection=true"))
    assert error.kind == "dns"
    assert "does not resolve" in str(error)


@pytest.mark.django_db
def test_unknown_srv_name_is_a_dns_error():
    error = _failure(ResourceFactory(uri="mongodb+srv://no-such-cluster.invalid/", tls=True))
    assert error.kind == "dns"


@pytest.mark.django_db
def test_closed_port_is_unreachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        error = _failure(ResourceFactory(uri=f"mongodb://127.0.0.1:{port}/?directConnection=true"))
    assert error.kind == "unreachable"
    assert "unreachable" in str(error)


@pytest.mark.django_db
def test_a_server_that_never_answers_is_a_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        error = _failure(ResourceFactory(uri=f"mongodb://127.0.0.1:{port}/?directConnection=true"), timeout_ms=700)
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        listener.close()
    assert error.kind == "timeout"
    assert "did not answer in time" in str(error)


@pytest.mark.ferretdb
def test_tls_against_a_plain_server_is_a_tls_error(ferret_resource):
    ferret_resource.tls = True
    error = _failure(ferret_resource)
    assert error.kind == "tls"
    assert "TLS handshake failed" in str(error)


@pytest.mark.wireserver
def test_tls_with_a_ca_file_against_a_plain_server_is_a_tls_error_and_the_ca_file_is_private(wire_resource):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "pam-test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    wire_resource.tls = True
    wire_resource.ca_certificate = certificate.public_bytes(serialization.Encoding.PEM).decode()
    connector = MongoDBConnector(wire_resource, timeout_ms=1000)
    with pytest.raises(ConnectorError) as caught:
        connector.verify_connection()
    ca_path = connector._ca_path
    assert ca_path and stat.S_IMODE(os.stat(ca_path).st_mode) == 0o600
    connector.close()
    assert not os.path.exists(ca_path)
    assert caught.value.kind == "tls"


@pytest.mark.wireserver
def test_admin_without_user_admin_privilege_is_a_permission_error(wire_resource, wire_server):
    name, password = _name(), _password()
    wire_server.create_user(name, password, [{"role": "readWrite", "db": "app"}])
    wire_resource.admin_username, wire_resource.admin_password = name, password
    error = _failure(wire_resource)
    assert error.kind == "permission"
    assert "may not manage users" in str(error)
    assert password not in str(error)


# -- the wire server: roles, locks and kills -----------------------------------------------------------
@pytest.mark.wireserver
def test_verify_connection_on_the_wire_server_shows_the_admin_roles(wire):
    summary = wire.verify_connection()
    assert summary["server"] == "MongoDB"
    assert {"role": "root", "db": "admin"} in summary["roles"]


@pytest.mark.wireserver
def test_roles_are_granted_and_revoked_and_the_user_feels_it(wire, wire_server):
    name, password = _name(), _password()
    wire.create_user(
        db="app", username=name, password=password, roles=["read"], custom_data={TAG_KEY: {"lease_id": "l/1"}}
    )
    assert wire.get_user(db="app", username=name)["customData"] == {TAG_KEY: {"lease_id": "l/1"}}
    with _user_client(wire_server.host_port, "app", name, password) as user:
        with pytest.raises(OperationFailure) as refused:
            user.app.things.insert_one({"x": 1})
        assert refused.value.code == 13
        wire.grant_roles(db="app", username=name, roles=[{"role": "readWrite", "db": "app"}])
        user.app.things.insert_one({"x": 1})
        assert {"role": "readWrite", "db": "app"} in wire.get_user(db="app", username=name)["roles"]
        wire.revoke_roles(db="app", username=name, roles=["readWrite"])
        with pytest.raises(OperationFailure):
            user.app.things.insert_one({"x": 2})
    assert wire.get_user(db="app", username=name)["roles"] == [{"role": "read", "db": "app"}]
    assert any(u["user"] == name and u["db"] == "app" for u in wire.list_users())
    wire.drop_user(db="app", username=name)


@pytest.mark.wireserver
def test_granting_an_unknown_role_is_not_found(wire):
    name = _name()
    wire.create_user(db="app", username=name, password=_password(), roles=[])
    try:
        with pytest.raises(ConnectorError) as caught:
            wire.grant_roles(db="app", username=name, roles=["noSuchRole"])
        assert caught.value.kind == "not_found"
    finally:
        wire.drop_user(db="app", username=name)


@pytest.mark.wireserver
def test_lock_refuses_logins_cuts_connections_and_unlock_restores_the_previous_restrictions(wire, wire_server):
    name, password = _name(), _password()
    previous = [{"clientSource": ["127.0.0.0/8"]}]
    wire_server.create_user(name, password, [{"role": "read", "db": "app"}], db="app", restrictions=previous)
    with _user_client(wire_server.host_port, "app", name, password) as live:
        live.app.command("ping")

        returned = wire.lock_user(db="app", username=name)
        assert returned == previous
        assert wire.get_user(db="app", username=name)["authenticationRestrictions"] == LOCK_RESTRICTIONS
        assert wire.can_login(db="app", username=name, password=password) is False
        assert wire.kill_user_connections(db="app", username=name) >= 1
        _assert_cut(live)

    wire.unlock_user(db="app", username=name, restrictions=returned)
    assert wire.get_user(db="app", username=name)["authenticationRestrictions"] == previous
    assert wire.can_login(db="app", username=name, password=password) is True
    wire.drop_user(db="app", username=name)


@pytest.mark.wireserver
def test_unlocking_a_user_without_previous_restrictions_clears_them(wire, wire_server):
    name, password = _name(), _password()
    wire.create_user(db="app", username=name, password=password, roles=["read"])
    assert wire.lock_user(db="app", username=name) == []
    assert wire.can_login(db="app", username=name, password=password) is False
    wire.unlock_user(db="app", username=name, restrictions=[])
    assert wire.can_login(db="app", username=name, password=password) is True
    wire.drop_user(db="app", username=name)


@pytest.mark.wireserver
def test_kill_falls_back_to_current_op_and_kill_op_when_kill_all_sessions_is_refused(wire, wire_faults_cleared):
    server = wire_faults_cleared
    name, password = _name(), _password()
    server.create_user(name, password, [{"role": "read", "db": "app"}], db="app")
    server.fail_command("killAllSessions", 13, "not authorized on admin to execute command killAllSessions")
    with _user_client(server.host_port, "app", name, password) as live:
        live.app.command("ping")
        assert wire.kill_user_connections(db="app", username=name) >= 1
        with pytest.raises(ConnectionFailure):
            live.app.command("ping")
    wire.drop_user(db="app", username=name)


@pytest.mark.wireserver
def test_kill_without_any_kill_privilege_is_a_permission_error(wire_resource, wire_server):
    admin_name, admin_password = _name(), _password()
    wire_server.create_user(admin_name, admin_password, ["userAdminAnyDatabase"])
    wire_resource.admin_username, wire_resource.admin_password = admin_name, admin_password
    with MongoDBConnector(wire_resource, timeout_ms=2000) as connector, pytest.raises(ConnectorError) as caught:
        connector.kill_user_connections(db="app", username="whoever")
    assert caught.value.kind == "permission"


@pytest.mark.wireserver
def test_can_login_raises_on_network_errors_rather_than_answering_false(wire_resource):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        wire_resource.uri = f"mongodb://127.0.0.1:{probe.getsockname()[1]}/?directConnection=true"
        wire_resource.verified_fingerprint = wire_resource.connection_fingerprint()  # as a verification records it
        password = _password()
        with MongoDBConnector(wire_resource, timeout_ms=700) as connector, pytest.raises(ConnectorError) as caught:
            connector.can_login(db="app", username="someone", password=password)
    assert caught.value.kind == "unreachable"
    assert password not in str(caught.value)


@pytest.mark.wireserver
def test_one_client_is_cached_until_close(wire):
    first = wire.client
    wire.verify_connection()
    assert wire.client is first
    wire.close()
    assert wire._client is None


@pytest.mark.wireserver
def test_user_management_writes_carry_a_majority_write_concern(wire, wire_server, monkeypatch):
    from pymongo import monitoring

    class Recorder(monitoring.CommandListener):
        def __init__(self):
            self.commands = []

        def started(self, event):
            self.commands.append((event.command_name, dict(event.command)))

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    recorder = Recorder()
    original = MongoDBConnector._new_client
    monkeypatch.setattr(
        MongoDBConnector,
        "_new_client",
        lambda self, **kw: original(self, event_listeners=[recorder], **kw),
    )
    name = _name()
    wire.create_user(db="app", username=name, password=_password(), roles=[])
    wire.grant_roles(db="app", username=name, roles=["read"])
    wire.drop_user(db="app", username=name)
    concerns = {
        cmd: body.get("writeConcern") for cmd, body in recorder.commands if cmd in ("grantRolesToUser", "dropUser")
    }
    assert concerns["grantRolesToUser"]["w"] == "majority" and concerns["dropUser"]["w"] == "majority"


@pytest.mark.wireserver
def test_a_server_that_rejects_write_concern_gets_the_command_without_it(wire, wire_faults_cleared):
    name = _name()
    wire.create_user(db="app", username=name, password=_password(), roles=[])
    wire_faults_cleared.fail_command(
        "grantRolesToUser", 9, "BSON field 'grantRolesToUser.writeConcern' is an unknown field", times=1
    )
    wire.grant_roles(db="app", username=name, roles=["read"])
    assert wire.get_user(db="app", username=name)["roles"] == [{"role": "read", "db": "app"}]
    wire.drop_user(db="app", username=name)


@pytest.mark.wireserver
def test_a_slow_server_is_a_timeout(wire_resource, wire_faults_cleared):
    wire_faults_cleared.delay(1500, "usersInfo")
    with MongoDBConnector(wire_resource, timeout_ms=500) as connector, pytest.raises(ConnectorError) as caught:
        connector.get_user(db="app", username="anyone")
    assert caught.value.kind == "timeout"


# -- the session's server: MONGODB_URI when set (a real MongoDB), else FerretDB --------------------------
@pytest.fixture
def session_resource(db, mongo_admin_uri):
    from pymongo.uri_parser import parse_uri

    parsed = parse_uri(mongo_admin_uri)
    hosts = ",".join(f"{host}:{port}" for host, port in parsed["nodelist"])
    options = parsed["options"]
    topology = f"replicaSet={options['replicaset']}" if options.get("replicaset") else "directConnection=true"
    return ResourceFactory(
        uri=f"mongodb://{hosts}/?{topology}",
        tls=bool(options.get("tls")),
        tls_verify=not options.get("tlsallowinvalidcertificates", False),
        auth_database=options.get("authsource", "admin"),
        admin_username=parsed["username"],
        admin_password=parsed["password"],
    )


def test_user_lifecycle_on_the_session_server(session_resource, mongo_server_kind):
    name, first, second = _name("life"), _password(), _password()
    roles = [] if mongo_server_kind == "ferretdb" else [{"role": "read", "db": "app"}]
    with MongoDBConnector(session_resource) as connector:
        connector.verify_connection()
        connector.create_user(db="app", username=name, password=first, roles=roles, custom_data={TAG_KEY: {"t": 1}})
        try:
            assert connector.can_login(db="app", username=name, password=first)
            connector.change_password(db="app", username=name, password=second)
            assert not connector.can_login(db="app", username=name, password=first)
            if mongo_server_kind != "ferretdb":
                assert connector.get_user(db="app", username=name)["customData"] == {TAG_KEY: {"t": 1}}
                previous = connector.lock_user(db="app", username=name)
                assert not connector.can_login(db="app", username=name, password=second)
                connector.kill_user_connections(db="app", username=name)
                connector.unlock_user(db="app", username=name, restrictions=previous)
            assert connector.can_login(db="app", username=name, password=second)
        finally:
            assert connector.drop_user(db="app", username=name) is True
        assert connector.get_user(db="app", username=name) is None
