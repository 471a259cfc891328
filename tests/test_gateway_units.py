"""The gateway's pure parts without sockets: hello synthesis, client SCRAM, policy, redaction, TLS settings."""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import bson
import pytest

from gatewayproxy.auth import ClientLogin, LoginError
from gatewayproxy.policy import SessionPolicy
from gatewayproxy.upstream import UpstreamError, tls_context
from gatewayproxy.wire import codec as wire
from gatewayproxy.wire import redact, scram
from gatewayproxy.wire.hello import MONGOS, STANDALONE, UpstreamLimits, build_info_reply, hello_reply

# -- layout -----------------------------------------------------------------------------------------------

_IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import gatewayproxy
names = [m.name for m in pkgutil.walk_packages(gatewayproxy.__path__, "gatewayproxy.")]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("django", "access", "portal"))
print(len(names), loaded)
"""


def test_the_gateway_and_its_wire_library_load_without_django():
    # No settings module, and not the leak scan's child hook (which imports access.generators to watch secrets).
    unset = ("DJANGO_SETTINGS_MODULE", "PAM_TEST_SECRETS_FILE")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERY_MODULE],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) >= 14  # server, relay, pipe, ... and gatewayproxy.wire's codec, scram, hello, redact
    assert loaded.strip() == "[]"


# -- hello ------------------------------------------------------------------------------------------------


def test_a_replica_set_member_is_presented_as_a_mongos_with_its_limits_and_nothing_else():
    upstream = {
        "isWritablePrimary": True,
        "setName": "rs0",
        "hosts": ["a:1", "b:2"],
        "me": "a:1",
        "topologyVersion": {"processId": bson.ObjectId(), "counter": 0},
        "compression": ["zstd"],
        "maxBsonObjectSize": 16777216,
        "maxMessageSizeBytes": 48000000,
        "maxWriteBatchSize": 100000,
        "maxWireVersion": 17,
        "minWireVersion": 6,
        "logicalSessionTimeoutMinutes": 30,
    }
    limits = UpstreamLimits.from_hello(upstream)
    reply = hello_reply({"hello": 1, "helloOk": True}, limits=limits, connection_id=7)

    assert limits.topology == MONGOS and reply["msg"] == "isdbgrid"
    assert not {"setName", "hosts", "me", "topologyVersion", "compression", "primary"} & set(reply)
    assert (reply["maxWireVersion"], reply["minWireVersion"], reply["connectionId"]) == (17, 6, 7)
    assert reply["isWritablePrimary"] is True and reply["helloOk"] is True
    assert reply["logicalSessionTimeoutMinutes"] == 30


def test_a_standalone_is_presented_as_a_standalone_and_legacy_ismaster_gets_ismaster():
    limits = UpstreamLimits.from_hello({"ismaster": True, "maxWireVersion": 21})
    reply = hello_reply({"isMaster": 1}, limits=limits, connection_id=1, sasl_supported_mechs=["SCRAM-SHA-256"])
    assert limits.topology == STANDALONE and "msg" not in reply
    assert reply["ismaster"] is True and "isWritablePrimary" not in reply
    assert reply["saslSupportedMechs"] == ["SCRAM-SHA-256"]
    assert build_info_reply(limits)["version"] == "7.0.0"


# -- client SCRAM -----------------------------------------------------------------------------------------


@dataclass
class Login:
    session_id: int
    verifiers: dict = field(repr=False)
    expires_at: datetime.datetime
    refusal: str = ""
    upstream: object = None


def _login_flow(secret: str, *, expires_in: float = 3600, upstream_error: UpstreamError | None = None):
    verifiers = {m: scram.derive_credentials(m, "s-abc", secret).to_dict() for m in scram.MECHANISMS}
    login = Login(1, verifiers, datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in))
    verified = []

    async def lookup(username):
        return login if username == "s-abc" else None

    async def on_verified(found):
        if upstream_error:
            raise upstream_error
        verified.append(found)

    return ClientLogin(lookup=lookup, on_verified=on_verified), verified


def _converse(flow: ClientLogin, mechanism: str, username: str, password: str) -> None:
    client = scram.ScramClient(mechanism, username, password)

    async def run():
        start = await flow.sasl_start(scram.sasl_start_command(mechanism, client.first_message()))
        final = client.final_message(bytes(start["payload"]))
        reply = await flow.sasl_continue(
            {"saslContinue": 1, "conversationId": start["conversationId"], "payload": final}
        )
        client.verify_server_final(bytes(reply["payload"]))
        assert reply["done"] is True

    asyncio.run(run())


@pytest.mark.parametrize("mechanism", scram.MECHANISMS)
def test_the_session_secret_logs_in_with_both_mechanisms(mechanism):
    flow, verified = _login_flow("the-secret")
    _converse(flow, mechanism, "s-abc", "the-secret")
    assert flow.authenticated and verified


@pytest.mark.parametrize(
    ("username", "password", "expires_in"),
    [("s-abc", "wrong", 3600), ("s-nobody", "the-secret", 3600), ("s-abc", "wrong", -1)],
    ids=["wrong secret", "unknown user", "expired session, wrong secret"],
)
def test_bad_logins_fail_with_authentication_failed(username, password, expires_in):
    flow, verified = _login_flow("the-secret", expires_in=expires_in)
    with pytest.raises((LoginError, scram.ScramError)) as failure:
        _converse(flow, "SCRAM-SHA-256", username, password)
    assert isinstance(failure.value, LoginError) and failure.value.code == 18
    assert str(failure.value) == "Authentication failed."
    assert not flow.authenticated and not verified


def test_an_expired_session_is_refused_with_why_once_its_secret_is_proved():
    flow, verified = _login_flow("the-secret", expires_in=-1)
    with pytest.raises(LoginError) as failure:
        _converse(flow, "SCRAM-SHA-256", "s-abc", "the-secret")
    assert failure.value.code == 18 and str(failure.value) == "Authentication failed: the session expired"
    assert not flow.authenticated and not verified


def test_an_upstream_that_refuses_the_account_fails_the_login_without_its_password():
    flow, _ = _login_flow(
        "the-secret", upstream_error=UpstreamError("auth", "the upstream refused the account's login")
    )
    with pytest.raises(LoginError) as failure:
        _converse(flow, "SCRAM-SHA-256", "s-abc", "the-secret")
    assert failure.value.code == 18 and "gateway could not authenticate upstream" in str(failure.value)
    flow, _ = _login_flow("the-secret", upstream_error=UpstreamError("unreachable", "cannot connect"))
    with pytest.raises(LoginError) as failure:
        _converse(flow, "SCRAM-SHA-256", "s-abc", "the-secret")
    assert failure.value.code == 6 and failure.value.code_name == "HostUnreachable"


def test_speculative_authentication_returns_the_server_first_message():
    flow, _ = _login_flow("the-secret")
    client = scram.ScramClient("SCRAM-SHA-256", "s-abc", "the-secret")
    command = scram.sasl_start_command("SCRAM-SHA-256", client.first_message())
    reply = asyncio.run(flow.speculative({**command, "db": "admin"}))
    assert reply["conversationId"] == 1 and bytes(reply["payload"]).startswith(b"r=") and "ok" not in reply
    assert asyncio.run(flow.mechanisms_for("s-abc")) == list(scram.MECHANISMS)
    assert asyncio.run(flow.mechanisms_for("s-nobody")) is None


# -- policy -----------------------------------------------------------------------------------------------


def test_read_only_sessions_refuse_writes_and_admin_commands_by_name():
    policy = SessionPolicy.build(read_only=True, command_deny_list=[], database_allow_list=[])
    assert policy.check("find", "app") is None and policy.check("getMore", "app") is None
    assert policy.check("insert", "app").message == "insert is not allowed in a read-only session"
    assert policy.check("createIndexes", "app").code == 13
    assert policy.check("shutdown", "admin") is not None
    assert policy.check("aggregate", "app", {"aggregate": "c", "pipeline": [{"$match": {}}]}) is None
    assert policy.check("aggregate", "app", {"aggregate": "c", "pipeline": [{"$merge": "x"}]}) is not None
    assert policy.check("explain", "app", {"explain": {"delete": "c"}}) is not None


def test_the_deny_list_matches_any_case_and_the_database_allow_list_keeps_driver_bookkeeping():
    policy = SessionPolicy.build(read_only=False, command_deny_list=["dropDatabase"], database_allow_list=["app"])
    assert "dropdatabase is denied" in policy.check("dropdatabase", "app").message
    assert "dropDatabase is denied" in policy.check("dropDatabase", "app").message
    assert policy.check("insert", "app") is None
    assert "outside this session's databases" in policy.check("find", "other").message
    assert policy.check("endSessions", "admin") is None and policy.check("ping", "admin") is None
    assert policy.check("find", "admin") is not None


# -- redaction --------------------------------------------------------------------------------------------


def test_summaries_keep_shape_but_not_values():
    insert = redact.summarize(
        "insert", {"insert": "c", "documents": [{"card": "4111"}] * 3, "ordered": True}, full=False
    )
    assert insert == {"insert": "c", "documents": {"count": 3}, "ordered": True}
    find = redact.summarize("find", {"find": "c", "filter": {"ssn": "123", "age": {"$gt": 40}}, "limit": 1}, full=False)
    assert find == {"find": "c", "filter": {"ssn": "?", "age": {"$gt": "?"}}, "limit": 1}
    update = redact.summarize(
        "update",
        {"update": "c", "updates": [{"q": {"a": 1}, "u": {"$set": {"b": "secret"}}, "upsert": True}]},
        full=False,
    )
    assert update["updates"] == [{"q": {"a": "?"}, "u": {"$set": ["b"]}, "upsert": True}]
    assert "4111" not in repr(insert) and "secret" not in repr(update)


def test_credentials_never_reach_a_summary_even_with_full_logging():
    assert redact.summarize("createUser", {"createUser": "u", "pwd": "pw", "roles": []}, full=True) == {}
    assert redact.summarize("saslStart", {"saslStart": 1, "payload": b"n,,n=u"}, full=True) == {}
    summary = redact.summarize("updateUser", {"updateUser": "u", "pwd": "pw"}, full=True)
    assert summary == {}
    summary = redact.summarize("find", {"find": "c", "filter": {"a": "v"}, "lsid": {"id": 1}, "$db": "x"}, full=True)
    assert summary == {"find": "c", "filter": {"a": "v"}}


def test_error_messages_lose_quoted_document_values():
    message = 'E11000 duplicate key error collection: app.c index: _id_ dup key: { _id: "4111-1111" }'
    assert "4111" not in redact.redact_error_message(message, full=False)
    assert "4111" in redact.redact_error_message(message, full=True)


def test_reply_outcomes_are_read_without_decoding_batches():
    batch = [{"n": i, "payload": "x" * 1000} for i in range(50)]
    found = wire.build_op_msg({"cursor": {"firstBatch": batch, "id": bson.Int64(0), "ns": "a.b"}, "ok": 1.0})
    assert redact.reply_outcome(found) == redact.Outcome(ok=True, n=50, cursor_id=0)
    failed = wire.build_op_msg({"ok": 0.0, "errmsg": "nope", "code": 13, "codeName": "Unauthorized"})
    assert redact.reply_outcome(failed) == redact.Outcome(ok=False, error_code=13, error_message="nope")
    write_error = wire.build_op_msg({"n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}], "ok": 1.0})
    assert redact.reply_outcome(write_error) == redact.Outcome(ok=False, n=0, error_code=11000, error_message="dup")
    legacy = wire.build_op_reply([{"$err": "bad", "code": 2, "ok": 0.0}], response_flags=wire.QUERY_FAILURE)
    assert redact.reply_outcome(legacy).ok is False


def test_large_requests_are_summarised_without_decoding_their_documents():
    documents = [{"payload": "v" * 100_000, "i": i} for i in range(5)]
    in_sequence = wire.build_op_msg({"insert": "c", "$db": "app"}, sequences=[("documents", documents)])
    in_body = wire.build_op_msg({"insert": "c", "documents": documents, "$db": "app"})
    for message in (in_sequence, in_body):
        command, database, collection, summary = redact.summarize_request(message, full=False)
        assert (command, database, collection) == ("insert", "app", "c")
        assert summary["documents"] == {"count": 5}


# -- upstream TLS -----------------------------------------------------------------------------------------


@dataclass
class Target:
    uri: str = "mongodb://db.example.com"
    auth_database: str = "admin"
    tls: bool = True
    tls_verify: bool = True
    ca_certificate: str = ""
    username: str = "u"
    password: str = "p"


def test_tls_verifies_by_default_and_only_the_resource_or_uri_turns_it_off():
    assert tls_context(Target(tls=False), {}) is None
    assert tls_context(Target(tls=False), {"tls": True}).verify_mode == ssl.CERT_REQUIRED
    strict = tls_context(Target(), {})
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    assert tls_context(Target(tls_verify=False), {}).verify_mode == ssl.CERT_NONE
    assert tls_context(Target(), {"tlsInsecure": True}).verify_mode == ssl.CERT_NONE
    with pytest.raises(UpstreamError) as failure:
        tls_context(Target(ca_certificate="-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n"), {})
    assert failure.value.kind == "config"


class _Answer(list):
    rrset = type("RRset", (), {"ttl": 60})()


def test_mongodb_srv_uris_resolve_to_their_hosts_options_and_tls(monkeypatch):
    import dns.name
    import dns.resolver

    from gatewayproxy.upstream import resolve_seeds

    def fake_resolve(name, kind, **_options):
        if kind == "TXT":
            return _Answer([type("TXT", (), {"strings": [b"replicaSet=rs0&authSource=admin"]})()])
        records = [("db1.cluster.example.com.", 27017), ("db2.cluster.example.com.", 27018)]
        return _Answer(type("SRV", (), {"target": dns.name.from_text(t), "port": p})() for t, p in records)

    monkeypatch.setattr(dns.resolver, "resolve", fake_resolve)
    seeds, options = asyncio.run(resolve_seeds(Target(uri="mongodb+srv://cluster.example.com")))
    assert sorted(seeds) == [("db1.cluster.example.com", 27017), ("db2.cluster.example.com", 27018)]
    assert options["replicaSet"] == "rs0" and options["tls"] is True
    assert tls_context(Target(tls=False), options).verify_mode == ssl.CERT_REQUIRED
