"""Attack: make the portal send a stored password as written, or read a file, by the options of a resource URI.

A staff member who may edit resources writes `authMechanism=PLAIN` (or GSSAPI, X.509, AWS; or a proxy, a CA file
path, an unknown option, the same option twice, `;` separators, lower case) and points the resource at a host of
theirs, hoping the admin password, an account's or a rotation's new one arrives there in clear.

Refused: one URI rule (access.validators) with an error that names the option, in the model, the REST API, Vault's
config/connection and the admin form (which never shows a refused URI's secrets back); and every connector path
(verify, leases, root rotation) and the gateway refuse a URI stored before the rule, before any connection.
"""

from __future__ import annotations

import html

import pytest
from django.core.exceptions import ValidationError

from access.models import Resource
from access.services.gateway import session_login_lookup
from access.services.root_rotation import RootRotationError, resource_rotate_root
from access.validators import validate_resource_uri
from connectors import ConnectorError, connector_for
from tests.factories import AccountFactory, ResourceFactory, SessionFactory

H = "mongodb://db1.example.com:27017/?"


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        (H + "authMechanism=PLAIN", "authMechanism=PLAIN"),
        (H + "authmechanism=PLAIN", "authMechanism=PLAIN"),
        (H + "AUTHMECHANISM=PLAIN", "authMechanism=PLAIN"),
        (H + "authMechanism=SCRAM-SHA-256&authMechanism=PLAIN", "authMechanism=PLAIN"),
        (H + "tls=false;authMechanism=PLAIN", "authMechanism=PLAIN"),
        (H + "authMechanism=PLAIN+", "authMechanism=PLAIN"),
        (H + "authMechanism=GSSAPI", "authMechanism=GSSAPI"),
        (H + "authMechanism=MONGODB-X509", "authMechanism=MONGODB-X509"),
        (H + "authMechanism=MONGODB-AWS", "authMechanism=MONGODB-AWS"),
        (H + "authMechanism=MONGODB-OIDC", "authMechanism=MONGODB-OIDC"),
        (H + "authMechanism=scram-sha-256", "authMechanism=scram-sha-256"),
        (H + "authMechanismProperties=SERVICE_NAME:evil", "authmechanismproperties"),
        (H + "proxyHost=evil.example.com&proxyPort=1080", "proxyhost"),
        (H + "tlsCAFile=/etc/passwd", "tlscafile"),
        (H + "tlsCertificateKeyFile=/etc/shadow", "tlscertificatekeyfile"),
        (H + "gssapiServiceName=evil", "gssapiservicename"),
        (H + "auth%4Dechanism=PLAIN", "(unreadable name)"),
        (H + "authMechanism", "name=value"),
        (H + "authMechanism=PLAIN#x", "#"),
        (H + "authMechanism=PLAIN\n", "spaces, control characters"),
    ],
)
def test_a_uri_option_the_portal_does_not_understand_is_refused_by_name(uri, named):
    with pytest.raises(ValidationError) as caught:
        validate_resource_uri(uri)
    assert named in " ".join(caught.value.messages)


@pytest.mark.parametrize(
    "uri",
    [
        H + "authMechanism=SCRAM-SHA-256",
        H + "authMechanism=SCRAM-SHA-1&authSource=admin",
        "mongodb://a:27017,b:27017,c:27017/?replicaSet=rs0&readPreference=secondaryPreferred&appName=reports",
        H + "directConnection=true&connectTimeoutMS=2000&serverSelectionTimeoutMS=3000&tls=true",
        "mongodb+srv://cluster0.example.mongodb.net/?retryWrites=true&w=majority&readPreferenceTags=dc:ny",
    ],
)
def test_the_options_the_portal_understands_are_accepted(uri):
    validate_resource_uri(uri)


def test_a_secret_in_a_refused_option_is_never_repeated(db):
    with pytest.raises(ValidationError) as caught:
        validate_resource_uri(H + "tlsCertificateKeyFilePassword=Hunter2-Secret-71")
    assert "Hunter2-Secret-71" not in str(caught.value)


def test_every_door_refuses_plain_with_the_same_words(api_client, otp_admin_client):
    uri = H + "authMechanism=PLAIN"
    existing = ResourceFactory(name="orders")

    created = api_client.post("/api/v1/resources", {"name": "evil", "uri": uri}, format="json")
    patched = api_client.patch("/api/v1/resources/orders", {"uri": uri}, format="json")
    vault = api_client.post(
        "/api/v1/mongodb/evil2/config/connection", {"uri": uri, "verify_connection": False}, format="json"
    )
    for response in (created, patched, vault):
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["field"] == "uri" and "authMechanism=PLAIN is not allowed" in error["message"]

    form = _admin_form(name="evil3", uri=uri)
    page = otp_admin_client.post("/admin/access/resource/add/", form).content.decode()
    assert html.escape("authMechanism=PLAIN is not allowed") in page or "authMechanism=PLAIN is not allowed" in page
    probe = Resource(name="evil4", uri=uri)
    with pytest.raises(ValidationError) as caught:
        probe.full_clean()
    assert "authMechanism=PLAIN" in str(caught.value.message_dict["uri"])
    assert not Resource.objects.filter(name__startswith="evil").exists()
    assert Resource.objects.get(pk=existing.pk).uri == existing.uri


def test_the_admin_never_shows_a_refused_uris_secrets_back(otp_admin_client):
    for uri in (
        "mongodb://root:Sup3r-Secret-77@db1:27017/?authMechanism=PLAIN",
        "mongodb://db1:27017/?tlsCertificateKeyFilePassword=Sup3r-Secret-77",
    ):
        response = otp_admin_client.post("/admin/access/resource/add/", _admin_form(name="leaky", uri=uri))
        page = response.content.decode()
        assert response.status_code == 200 and "errorlist" in page
        assert "Sup3r-Secret-77" not in page
    assert not Resource.objects.filter(name="leaky").exists()


def test_a_plain_uri_stored_before_the_rule_sends_nothing_from_any_connector_path(db, collector):
    uri = f"mongodb://{collector.host_port}/?authMechanism=PLAIN&directConnection=true"
    resource = ResourceFactory(admin_username="root", admin_password="Stored-Admin-Pw-881")
    Resource.objects.filter(pk=resource.pk).update(uri=uri)  # a row from before the rule, or a bulk update
    resource.refresh_from_db()
    resource.verified_fingerprint = resource.connection_fingerprint()  # even "verified", the rule still holds
    resource.save(update_fields=["verified_fingerprint"])

    with pytest.raises(ConnectorError) as caught, connector_for(resource) as connector:
        connector.verify_connection()
    assert caught.value.kind == "config" and "authMechanism=PLAIN" in str(caught.value)
    with pytest.raises(RootRotationError):
        resource_rotate_root(resource=resource, actor="test")
    account = AccountFactory(resource=resource)
    session = SessionFactory(account=account)
    login = session_login_lookup(username=session.username)  # no upstream target: no password handed over
    assert login.upstream is None and "stored credentials are held back" in login.refusal
    assert collector.connections == 0 and b"Stored-Admin-Pw-881" not in collector.received


def _admin_form(**fields) -> dict:
    return {
        "name": "x",
        "kind": "mongodb",
        "auth_database": "admin",
        "atlas_base_url": "https://cloud.mongodb.com",
        "default_ttl": "1h",
        "max_ttl": "24h",
        "accounts-TOTAL_FORMS": "0",
        "accounts-INITIAL_FORMS": "0",
        **fields,
    }
