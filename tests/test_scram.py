"""Tests for gatewayproxy.wire.scram: RFC and MongoDB-spec vectors, both roles, failures, the sasl exchange.

No Django: run with ``python -m pytest -p no:django tests/test_scram.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import bson
import pytest

from gatewayproxy.wire import scram
from gatewayproxy.wire.scram import (
    MECHANISMS,
    ScramClient,
    ScramCredentials,
    ScramError,
    ScramServer,
    derive_credentials,
    mongo_password,
)

SECRET = "hunter2-Secret"

# (mechanism, MongoDB password rules, client nonce, server nonce part, salt, iterations, 4 messages)
VECTORS = {
    "RFC 5802 SCRAM-SHA-1": (
        "SCRAM-SHA-1",
        False,
        b"fyko+d2lbbFgONRv9qkxdawL",
        b"3rfcNHYJY1ZVvWVs7j",
        "QSXCR+Q6sek8bf92",
        4096,
        (
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
    ),
    "RFC 7677 SCRAM-SHA-256": (
        "SCRAM-SHA-256",
        True,  # SASLprep("pencil") == "pencil", so MongoDB's rules give the RFC's result
        b"rOprNGfwEbeRWgbNEkqO",
        b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        "W22ZaJ0SNY7soEsUEjb6gQ==",
        4096,
        (
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
    ),
    "MongoDB auth spec SCRAM-SHA-1 (md5 digest)": (
        "SCRAM-SHA-1",
        True,
        b"fyko+d2lbbFgONRv9qkxdawL",
        b"Ho+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE",
        "rQ9ZY3MntBeuP3E1TDVC4w==",
        10000,
        (
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            b"r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,s=rQ9ZY3MntBeuP3E1TDVC4w==,i=10000",
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,p=MC2T8BvbmWRckDw8oWl5IVghwCY=",
            b"v=UMWeI25JD1yNYZRMpZ4VHvhZ9e0=",
        ),
    ),
}


def _pair(mechanism="SCRAM-SHA-256", username="alice", password="pw", *, client_password=None, users=None):
    """A client and a server whose lookup knows ``username`` with ``password`` (4096 iterations)."""
    credentials = derive_credentials(mechanism, username, password, iterations=4096)
    lookup = (users or {username: credentials}).get
    client = ScramClient(mechanism, username, password if client_password is None else client_password)
    return client, ScramServer(mechanism, lookup)


def _converse(client: ScramClient, server: ScramServer) -> None:
    client.verify_server_final(server.server_final(client.final_message(server.server_first(client.first_message()))))


# --------------------------------------------------------------------------------------------------------
# Known vectors.
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VECTORS)
def test_client_produces_the_published_conversation(name):
    mechanism, rules, client_nonce, _, _, _, messages = VECTORS[name]
    client = ScramClient(mechanism, "user", "pencil", nonce=client_nonce, mongodb_rules=rules)
    assert client.first_message() == messages[0]
    assert client.final_message(messages[1]) == messages[2]
    client.verify_server_final(messages[3])
    assert client.authenticated


@pytest.mark.parametrize("name", VECTORS)
def test_server_produces_the_published_conversation(name):
    mechanism, rules, _, server_nonce, salt, iterations, messages = VECTORS[name]
    credentials = derive_credentials(
        mechanism, "user", "pencil", salt=base64.b64decode(salt), iterations=iterations, mongodb_rules=rules
    )
    server = ScramServer(mechanism, {"user": credentials}.get, nonce=server_nonce)
    assert server.server_first(messages[0]) == messages[1]
    assert server.server_final(messages[2]) == messages[3]
    assert (server.username, server.authenticated) == ("user", True)


def test_sha1_password_is_the_mongodb_md5_digest_without_saslprep():
    assert mongo_password("SCRAM-SHA-1", "user", "pencil") == hashlib.md5(b"user:mongo:pencil").hexdigest()
    assert mongo_password("SCRAM-SHA-1", "user", "pencil") == "1c33006ec1ffd90f9cadcbcc0e118200"
    assert mongo_password("SCRAM-SHA-1", "u", "I\u00adX") != mongo_password("SCRAM-SHA-1", "u", "IX")


def test_sha1_digest_matches_pymongo():
    from pymongo.auth_shared import _password_digest

    assert mongo_password("SCRAM-SHA-1", "user", "pëncil") == _password_digest("user", "pëncil")


@pytest.mark.parametrize(
    ("password", "prepared"),
    [("IX", "IX"), ("I\u00adX", "IX"), ("\u2168", "IX"), ("\u2163", "IV"), ("a\u00a0b", "a b")],
)
def test_sha256_password_is_saslprepped(password, prepared):
    assert mongo_password("SCRAM-SHA-256", "user", password) == prepared


@pytest.mark.parametrize(
    ("stored", "typed"),
    [("IX", "IX"), ("IX", "I\u00adX"), ("\u2163", "IV"), ("IV", "\u2163"), ("I\u00adX", "\u2168")],
)
def test_sha256_saslprep_equivalent_passwords_authenticate(stored, typed):
    """The auth spec's SASLprep prose tests: users IX/IX and \u2168/\u2163 log in with equivalent spellings."""
    client, server = _pair("SCRAM-SHA-256", "\u2168", stored, client_password=typed)
    _converse(client, server)
    assert server.authenticated and client.authenticated


def test_saslprep_prohibited_password_is_refused_without_echoing_it():
    with pytest.raises(ScramError) as info:
        ScramClient("SCRAM-SHA-256", "u", SECRET + "\u0007")
    assert SECRET not in str(info.value)


def test_derived_keys_match_pymongo_key_schedule():
    """Recompute StoredKey/ServerKey the way pymongo's SCRAM client does (pbkdf2 + HMAC)."""
    import hmac

    salt = b"0123456789abcdef"
    for mechanism, digest in (("SCRAM-SHA-1", "sha1"), ("SCRAM-SHA-256", "sha256")):
        credentials = derive_credentials(mechanism, "user", "pencil", salt=salt, iterations=4096)
        data = mongo_password(mechanism, "user", "pencil").encode()
        salted = hashlib.pbkdf2_hmac(digest, data, salt, 4096)
        client_key = hmac.new(salted, b"Client Key", digest).digest()
        assert credentials.stored_key == hashlib.new(digest, client_key).digest()
        assert credentials.server_key == hmac.new(salted, b"Server Key", digest).digest()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_pymongo_client_authenticates_against_our_server(mechanism):
    """pymongo's own SCRAM client (an internal function, so skipped if it moves) talks to ScramServer."""
    sync_auth = pytest.importorskip("pymongo.synchronous.auth")
    auth_shared = pytest.importorskip("pymongo.auth_shared")
    if not hasattr(sync_auth, "_authenticate_scram") or not hasattr(auth_shared, "_Cache"):
        pytest.skip("pymongo's SCRAM internals moved")
    credentials = derive_credentials(mechanism, "app", "pencil", iterations=4096)
    server = ScramServer(mechanism, {"app": credentials}.get)

    class FakeConnection:
        auth_ctx = None

        def command(self, source, cmd):
            step = server.server_first if "saslStart" in cmd else server.server_final
            payload = step(cmd["payload"])
            return {"conversationId": 1, "payload": bson.Binary(payload), "done": True, "ok": 1}

    creds = auth_shared.MongoCredential(mechanism, "admin", "app", "pencil", None, auth_shared._Cache())
    sync_auth._authenticate_scram(creds, FakeConnection(), mechanism)
    assert server.authenticated and server.username == "app"


# --------------------------------------------------------------------------------------------------------
# Round trips, usernames, credentials storage.
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("username", ["alice", "a,b", "a=b", "=2C", "ünïcode", "x=3Dy,"])
def test_round_trip_with_awkward_usernames(mechanism, username):
    client, server = _pair(mechanism, username, "pa,ss=word")
    _converse(client, server)
    assert server.username == username and server.authenticated and client.authenticated


def test_username_escaping():
    assert scram.escape_username("a=b,c") == b"a=3Db=2Cc"
    assert scram.unescape_username(b"a=3Db=2Cc") == "a=b,c"
    for bad in (b"a=41", b"a=", b"=2", b"\xff"):
        with pytest.raises(ScramError):
            scram.unescape_username(bad)


def test_credentials_survive_json_storage():
    credentials = derive_credentials("SCRAM-SHA-256", "u", "p", iterations=4096)
    restored = ScramCredentials.from_dict(json.loads(json.dumps(credentials.to_dict())))
    assert restored == credentials


def test_credentials_repr_hides_the_keys():
    credentials = derive_credentials("SCRAM-SHA-256", "u", "p", iterations=4096)
    text = repr(credentials)
    assert "stored_key" not in text and "server_key" not in text
    assert base64.b64encode(credentials.stored_key).decode() not in text


@pytest.mark.parametrize(
    "change",
    [{"stored_key": "AAAA"}, {"salt": "not base64!"}, {"iterations": 10}, {"mechanism": "PLAIN"}, {"server_key": 5}],
)
def test_malformed_stored_credentials_raise_scram_error(change):
    data = {**derive_credentials("SCRAM-SHA-256", "u", "p", iterations=4096).to_dict(), **change}
    with pytest.raises(ScramError):
        ScramCredentials.from_dict(data)


def test_derive_uses_mongodb_defaults():
    sha256 = derive_credentials("SCRAM-SHA-256", "u", "p")
    sha1 = derive_credentials("SCRAM-SHA-1", "u", "p")
    assert (sha256.iterations, len(sha256.salt), len(sha256.stored_key)) == (15000, 28, 32)
    assert (sha1.iterations, len(sha1.salt), len(sha1.stored_key)) == (10000, 16, 20)
    assert derive_credentials("SCRAM-SHA-256", "u", "p").salt != sha256.salt


def test_derive_refuses_weak_parameters_and_unknown_mechanisms():
    with pytest.raises(ScramError, match="4096"):
        derive_credentials("SCRAM-SHA-256", "u", "p", iterations=4095)
    with pytest.raises(ScramError, match="unsupported mechanism"):
        derive_credentials("SCRAM-SHA-512", "u", "p")


def test_salted_password_is_cached(monkeypatch):
    calls = []
    real = hashlib.pbkdf2_hmac
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", lambda *a: calls.append(a) or real(*a))
    scram._KEY_CACHE.clear()
    for _ in range(3):
        derive_credentials("SCRAM-SHA-256", "u", "cached", salt=b"s" * 16, iterations=4096)
    derive_credentials("SCRAM-SHA-256", "u", "cached", salt=b"t" * 16, iterations=4096)
    assert len(calls) == 2
    assert all(b"cached" not in repr(key).encode() for key in scram._KEY_CACHE._items)


# --------------------------------------------------------------------------------------------------------
# Server-side failures.
# --------------------------------------------------------------------------------------------------------


def test_wrong_password_fails_with_authentication_failed():
    client, server = _pair(client_password="wrong")
    final = client.final_message(server.server_first(client.first_message()))
    with pytest.raises(ScramError, match=r"^Authentication failed\.$"):
        server.server_final(final)
    assert not server.authenticated


def test_conversation_cannot_be_retried_after_failure():
    client, server = _pair(client_password="wrong")
    final = client.final_message(server.server_first(client.first_message()))
    with pytest.raises(ScramError):
        server.server_final(final)
    with pytest.raises(ScramError, match="out of order"):
        server.server_final(final)


def test_unknown_user_gets_a_plausible_challenge_and_the_same_failure():
    server = ScramServer("SCRAM-SHA-256", {}.get)
    first = dict(item.split(b"=", 1) for item in server.server_first(b"n,,n=ghost,r=abcdefgh").split(b","))
    assert first[b"i"] == b"15000" and len(base64.b64decode(first[b"s"])) == 28
    again = ScramServer("SCRAM-SHA-256", {}.get).server_first(b"n,,n=ghost,r=abcdefgh")
    assert again.split(b",")[1] == b"s=" + first[b"s"]  # stable salt: probing twice reveals nothing
    client, server = ScramClient("SCRAM-SHA-256", "ghost", "anything"), ScramServer("SCRAM-SHA-256", {}.get)
    final = client.final_message(server.server_first(client.first_message()))
    with pytest.raises(ScramError, match=r"^Authentication failed\.$"):
        server.server_final(final)


def test_credentials_for_another_mechanism_are_not_used():
    sha1 = derive_credentials("SCRAM-SHA-1", "alice", "pw", iterations=4096)
    client, server = _pair("SCRAM-SHA-256", "alice", "pw", users={"alice": sha1})
    with pytest.raises(ScramError, match="Authentication failed"):
        _converse(client, server)


@pytest.mark.parametrize(
    "client_first",
    [
        b"y,,n=alice,r=abc",
        b"p=tls-unique,,n=alice,r=abc",
        b"n,a=admin,n=alice,r=abc",
        b"n,,m=ext,n=alice,r=abc",
        b"n,,r=abc,n=alice",
        b"n,,n=alice",
        b"n,,n=,r=abc",
        b"n,,n=al=ice,r=abc",
        b"n,,n=alice,r=a b",
        b"",
    ],
)
def test_server_refuses_malformed_client_first(client_first):
    server = ScramServer("SCRAM-SHA-256", {}.get)
    with pytest.raises(ScramError):
        server.server_first(client_first)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"c=biws", b"c=eSws"),
        lambda m: m.replace(b",r=", b",r=x", 1),
        lambda m: m.rpartition(b",p=")[0],
        lambda m: m.rpartition(b",p=")[0] + b",p=!!!",
        lambda m: m.rpartition(b",p=")[0] + b",p=AAAA",
    ],
)
def test_server_refuses_tampered_client_final(tamper):
    client, server = _pair()
    final = client.final_message(server.server_first(client.first_message()))
    with pytest.raises(ScramError):
        server.server_final(tamper(final))
    assert not server.authenticated


def test_server_final_before_server_first_is_refused():
    with pytest.raises(ScramError, match="out of order"):
        ScramServer("SCRAM-SHA-256", {}.get).server_final(b"c=biws,r=x,p=AAAA")


# --------------------------------------------------------------------------------------------------------
# Client-side failures.
# --------------------------------------------------------------------------------------------------------


def _client():
    client = ScramClient("SCRAM-SHA-256", "alice", SECRET, nonce=b"clientnonce")
    client.first_message()
    return client


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=othernonceXYZ,s=c2FsdHNhbHQ=,i=4096",
        b"r=clientnonce,s=c2FsdHNhbHQ=,i=4096",
        b"r=clientnonceXYZ,s=c2FsdHNhbHQ=,i=4095",
        b"r=clientnonceXYZ,s=c2FsdHNhbHQ=,i=99999999999",
        b"r=clientnonceXYZ,s=c2FsdHNhbHQ=,i=-1",
        b"r=clientnonceXYZ,s=c2FsdHNhbHQ=,i=",
        b"r=clientnonceXYZ,s=!!!,i=4096",
        b"r=clientnonceXYZ,s=,i=4096",
        b"m=ext,r=clientnonceXYZ,s=c2FsdHNhbHQ=,i=4096",
        b"r=clientnonceXYZ,i=4096",
        b"garbage",
    ],
)
def test_client_refuses_bad_server_first(server_first):
    with pytest.raises(ScramError) as info:
        _client().final_message(server_first)
    assert SECRET not in str(info.value)


def test_client_refuses_wrong_server_signature_and_server_errors():
    client, server = _pair()
    client.final_message(server.server_first(client.first_message()))
    with pytest.raises(ScramError, match="signature is invalid"):
        client.verify_server_final(b"v=" + base64.b64encode(bytes(32)))
    with pytest.raises(ScramError, match="invalid-proof"):
        client.verify_server_final(b"e=invalid-proof")
    assert not client.authenticated


def test_client_refuses_server_final_before_client_final():
    with pytest.raises(ScramError):
        _client().verify_server_final(b"v=AAAA")


# --------------------------------------------------------------------------------------------------------
# The MongoDB exchange helpers.
# --------------------------------------------------------------------------------------------------------


class FakeMongo:
    """A command endpoint that answers saslStart/saslContinue like mongod, using ScramServer."""

    def __init__(self, mechanism, users, *, skip_empty_exchange=True, forge_signature=False):
        self.mechanism, self.users = mechanism, users
        self.skip_empty_exchange, self.forge_signature = skip_empty_exchange, forge_signature
        self.commands: list[dict] = []
        self.server: ScramServer | None = None

    def __call__(self, command: dict) -> dict:
        self.commands.append(command)
        try:
            return self._answer(command)
        except ScramError as exc:
            return {"ok": 0.0, "errmsg": str(exc), "code": 18, "codeName": "AuthenticationFailed"}

    def _answer(self, command):
        if "saslStart" in command:
            self.server = ScramServer(command["mechanism"], self.users.get)
            payload = self.server.server_first(command["payload"])
            return {"conversationId": 1, "done": False, "payload": bson.Binary(payload), "ok": 1.0}
        if self.server.authenticated:
            return {"conversationId": 1, "done": True, "payload": b"", "ok": 1.0}
        payload = self.server.server_final(command["payload"])
        if self.forge_signature:
            payload = b"v=" + base64.b64encode(bytes(32))
        return {"conversationId": 1, "done": self.skip_empty_exchange, "payload": payload, "ok": 1.0}


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_authenticate_sends_mongodb_shaped_commands(mechanism):
    mongo = FakeMongo(mechanism, {"app": derive_credentials(mechanism, "app", "pw", iterations=4096)})
    scram.authenticate(mongo, mechanism=mechanism, username="app", password="pw", source="admin")
    start, cont = mongo.commands
    assert start["saslStart"] == 1 and start["mechanism"] == mechanism and start["autoAuthorize"] == 1
    assert start["options"] == {"skipEmptyExchange": True} and start["$db"] == "admin"
    assert isinstance(start["payload"], bson.Binary) and start["payload"].startswith(b"n,,n=app,r=")
    assert cont["saslContinue"] == 1 and cont["conversationId"] == 1 and cont["$db"] == "admin"
    assert isinstance(cont["payload"], bson.Binary)
    assert mongo.server.authenticated


def test_authenticate_handles_servers_that_want_the_empty_exchange():
    credentials = derive_credentials("SCRAM-SHA-256", "app", "pw", iterations=4096)
    mongo = FakeMongo("SCRAM-SHA-256", {"app": credentials}, skip_empty_exchange=False)
    scram.authenticate(mongo, mechanism="SCRAM-SHA-256", username="app", password="pw")
    assert len(mongo.commands) == 3 and bytes(mongo.commands[2]["payload"]) == b""


def test_authenticate_reports_the_server_error_code():
    mongo = FakeMongo("SCRAM-SHA-256", {"app": derive_credentials("SCRAM-SHA-256", "app", "pw", iterations=4096)})
    with pytest.raises(ScramError, match=r"Authentication failed\. \(code 18\)") as info:
        scram.authenticate(mongo, mechanism="SCRAM-SHA-256", username="app", password=SECRET)
    assert (info.value.code, info.value.code_name) == (18, "AuthenticationFailed")
    assert SECRET not in str(info.value)


def test_authenticate_refuses_a_server_that_cannot_sign():
    credentials = derive_credentials("SCRAM-SHA-1", "app", "pw", iterations=4096)
    mongo = FakeMongo("SCRAM-SHA-1", {"app": credentials}, forge_signature=True)
    with pytest.raises(ScramError, match="signature is invalid"):
        scram.authenticate(mongo, mechanism="SCRAM-SHA-1", username="app", password="pw")


def test_authenticate_async_runs_the_same_exchange():
    mongo = FakeMongo("SCRAM-SHA-256", {"app": derive_credentials("SCRAM-SHA-256", "app", "pw", iterations=4096)})

    async def run_command(command):
        await asyncio.sleep(0)
        return mongo(command)

    asyncio.run(
        scram.authenticate_async(run_command, mechanism="SCRAM-SHA-256", username="app", password="pw", source="db")
    )
    assert mongo.server.authenticated and mongo.commands[0]["$db"] == "db"


def test_authenticate_async_reports_failures():
    mongo = FakeMongo("SCRAM-SHA-256", {})

    async def run_command(command):
        return mongo(command)

    with pytest.raises(ScramError) as info:
        asyncio.run(scram.authenticate_async(run_command, mechanism="SCRAM-SHA-256", username="x", password="y"))
    assert info.value.code == 18


def test_authenticate_refuses_unknown_mechanisms():
    with pytest.raises(ScramError, match="unsupported mechanism"):
        scram.authenticate(lambda command: {}, mechanism="PLAIN", username="u", password="p")
