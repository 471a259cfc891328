"""The REST API skeleton: hashed tokens, resources and accounts, write-only secrets and JSON errors."""

import pytest

from access.models import ApiToken, AuditEvent, Resource

SECRET = "Api-Admin-Secret-8812"


def create_resource(api_client, **extra):
    body = {
        "name": "orders",
        "uri": "mongodb://db1:27017",
        "admin_username": "root",
        "admin_password": SECRET,
        **extra,
    }
    return api_client.post("/api/v1/resources", body, format="json")


def test_unauthenticated_requests_get_a_json_401(client, db):
    response = client.get("/api/v1/resources", HTTP_AUTHORIZATION="Bearer pam_not-a-real-token")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid or expired API token."


def test_tokens_are_stored_hashed(api_client):
    token = ApiToken.objects.get()
    assert api_client.raw_token not in (token.digest, token.prefix)
    assert token.matches(api_client.raw_token)


def test_create_resource_returns_its_id_and_never_the_password(api_client):
    response = create_resource(api_client)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert isinstance(body["id"], int)
    assert "admin_password" not in body and SECRET not in response.content.decode()
    assert body["tls"] is True and body["tls_verify"] is True and body["auth_database"] == "admin"
    assert body["default_ttl"] == "1h" and body["max_ttl"] == "1d"
    assert Resource.objects.get(pk=body["id"]).admin_password.reveal() == SECRET
    assert AuditEvent.objects.filter(action="resource.create", target_name="orders").exists()
    listed = api_client.get("/api/v1/resources").content.decode()
    assert SECRET not in listed and "gAAAA" not in listed


def test_resource_is_addressed_by_name(api_client):
    create_resource(api_client)
    assert api_client.get("/api/v1/resources/orders").json()["uri"] == "mongodb://db1:27017"
    response = api_client.patch("/api/v1/resources/orders", {"default_ttl": "30m"}, format="json")
    assert response.status_code == 200 and response.json()["default_ttl"] == "30m"
    assert api_client.delete("/api/v1/resources/orders").status_code == 204
    assert api_client.get("/api/v1/resources/orders").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"uri": "mongodb://root:pw@db1:27017"}, "uri", "Remove the username and password"),
        ({"uri": "mongodb://db1:27017/sales"}, "uri", "Remove the database name (sales)"),
        ({"uri": "http://db1"}, "uri", "starts with mongodb://"),
        ({"default_ttl": "2d", "max_ttl": "1d"}, "default_ttl", "cannot be longer than the max TTL"),
        ({"default_ttl": "soon"}, "default_ttl", "not a duration"),
        ({"name": "has spaces"}, "name", "slug"),
    ],
)
def test_bad_resource_input_is_a_json_error_naming_the_field(api_client, body, field, message):
    response = create_resource(api_client, **body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field
    assert message in error["message"]
    assert "pw@" not in response.content.decode()


def test_accounts_take_a_resource_name_and_keep_the_password_write_only(api_client):
    create_resource(api_client)
    response = api_client.post(
        "/api/v1/accounts",
        {"resource": "orders", "name": "app", "username": "app_user", "password": "Acct-Secret-1199"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["resource"] == "orders" and "password" not in body and isinstance(body["id"], int)
    detail = api_client.get(f"/api/v1/accounts/{body['id']}")
    assert "Acct-Secret-1199" not in detail.content.decode()


def test_account_without_password_is_refused(api_client):
    create_resource(api_client)
    response = api_client.post(
        "/api/v1/accounts", {"resource": "orders", "name": "app", "username": "u"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "password"


def test_token_of_a_user_without_permissions_gets_403(db, django_user_model):
    from rest_framework.test import APIClient

    from access.services.tokens import api_token_create

    user = django_user_model.objects.create_user(username="plain")
    _token, raw = api_token_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get("/api/v1/resources")
    assert response.status_code == 403
    assert "message" in response.json()["error"]


def test_openapi_schema_and_docs_are_served(api_client):
    schema = api_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/resources" in schema.content
    assert api_client.get("/api/docs/").status_code == 200
