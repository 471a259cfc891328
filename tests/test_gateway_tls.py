"""The gateway's upstream TLS: the resource's CA is trusted, verification is on unless the resource turns it off.

A TLS terminator (a self-signed CA and a server certificate for 127.0.0.1 made here with ``cryptography``)
sits in front of the wire server; the gateway connects to it as it would to a TLS-only deployment.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from tests.gateway_fixtures import account_on

pytestmark = [pytest.mark.wireserver, pytest.mark.django_db(transaction=True)]


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def tls_front(wire_server, tmp_path_factory):
    """(port, CA PEM, another CA's PEM): TLS on ``port`` in front of the wire server."""
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("test CA", ca_key, None, None, ca=True)
    other_ca = _certificate("other CA", other_key, None, None, ca=True)
    server = _certificate("127.0.0.1", server_key, ca.subject, ca_key, ca=False)
    folder = tmp_path_factory.mktemp("tls")
    (folder / "server.pem").write_text(_pem(server))
    (folder / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    loop = asyncio.new_event_loop()
    ready, holder = threading.Event(), {}

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(wire_server.host, wire_server.port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    def run():
        asyncio.set_event_loop(loop)
        server_socket = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0, ssl=context))
        holder["port"] = server_socket.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    yield holder["port"], _pem(ca), _pem(other_ca)
    loop.call_soon_threadsafe(loop.stop)


def _tls_account(wire_server, port: int, **tls):
    account = account_on(wire_server)
    resource = account.resource
    resource.uri = f"mongodb://127.0.0.1:{port}"
    for field, value in {"tls": True, "tls_verify": True, **tls}.items():
        setattr(resource, field, value)
    resource.verified_fingerprint = resource.connection_fingerprint()  # as a successful verification records it
    resource.save()
    return account


def test_the_resource_ca_is_trusted_and_the_session_works_over_tls(wire_server, tls_front, gateway_session):
    port, ca_pem, _other = tls_front
    _session, _secret, uri = gateway_session(_tls_account(wire_server, port, ca_certificate=ca_pem))
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        client.app.tls_items.insert_one({"n": 1})
        assert client.app.tls_items.count_documents({}) >= 1


def test_a_certificate_from_another_ca_is_refused_unless_verification_is_off(wire_server, tls_front, gateway_session):
    port, _ca_pem, other_ca = tls_front
    _session, _secret, uri = gateway_session(_tls_account(wire_server, port, ca_certificate=other_ca))
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client, pytest.raises(OperationFailure) as failure:
        client.admin.command("ping")
    assert failure.value.code == 6 and "TLS" in str(failure.value)

    _session, _secret, uri = gateway_session(_tls_account(wire_server, port, ca_certificate=other_ca, tls_verify=False))
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        assert client.admin.command("ping")["ok"] == 1
