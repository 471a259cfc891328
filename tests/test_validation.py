"""Validation rules with errors a person understands: URIs, roles, durations and TTLs."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from access.durations import format_duration, parse_duration
from access.validators import validate_atlas_roles, validate_mongodb_roles, validate_resource_uri
from tests.factories import DynamicRoleFactory, ResourceFactory


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://db1.example.com:27017",
        "mongodb://db1:27017,db2:27017,db3:27017/?replicaSet=rs0",
        "mongodb://127.0.0.1",
        "mongodb://[::1]:27017/?tls=true",
        "mongodb+srv://cluster0.example.mongodb.net/?retryWrites=true",
    ],
)
def test_valid_resource_uris_are_accepted(uri):
    validate_resource_uri(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("postgres://db:5432", "starts with mongodb:// or mongodb+srv://"),
        ("db1.example.com:27017", "starts with mongodb:// or mongodb+srv://"),
        ("mongodb://admin:hunter2@db1:27017", "Remove the username and password"),
        ("mongodb://admin@db1:27017", "Remove the username and password"),
        ("mongodb://db1:27017/admin", "Remove the database name (admin)"),
        ("mongodb://", "names no host"),
        ("mongodb://db1:99999", "out of range"),
        ("mongodb+srv://a.example.com,b.example.com", "exactly one host name and no port"),
        ("mongodb+srv://a.example.com:27017", "exactly one host name and no port"),
    ],
)
def test_bad_resource_uris_say_what_is_wrong(uri, message):
    with pytest.raises(ValidationError) as info:
        validate_resource_uri(uri)
    assert message in " ".join(info.value.messages)


def test_uri_error_never_echoes_the_password():
    with pytest.raises(ValidationError) as info:
        validate_resource_uri("mongodb://admin:Sup3rS3cretPw@db1:27017")
    assert "Sup3rS3cretPw" not in " ".join(info.value.messages)


@pytest.mark.parametrize(
    "roles",
    [["readWrite"], [{"role": "read", "db": "reports"}], '["read", {"role": "dbAdmin", "db": "app"}]', []],
)
def test_mongodb_roles_accept_names_and_documents(roles):
    validate_mongodb_roles(roles)


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ("[readWrite", "Roles must be JSON"),
        ('{"role": "read"}', "must be a list"),
        ([{"role": "read"}], 'exactly the keys "role" and "db"'),
        ([{"role": "read", "db": "x", "extra": 1}], 'exactly the keys "role" and "db"'),
        ([42], "must be a role name or"),
        (["read write"], "is not a role name"),
    ],
)
def test_bad_mongodb_roles_are_explained(roles, message):
    with pytest.raises(ValidationError) as info:
        validate_mongodb_roles(roles)
    assert message in " ".join(info.value.messages)


def test_atlas_roles_need_role_and_database_names():
    validate_atlas_roles([{"roleName": "read", "databaseName": "sales", "collectionName": "orders"}])
    with pytest.raises(ValidationError, match="needs roleName and databaseName"):
        validate_atlas_roles([{"roleName": "read"}])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("3600", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        (" 5M ", 300),
    ],
)
def test_durations_accept_units_and_plain_seconds(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1x", "h", "-5", "0", "1.5h", "an hour"])
def test_bad_durations_are_explained(text):
    with pytest.raises(ValidationError):
        parse_duration(text)


def test_format_duration_is_the_inverse_of_parse():
    for text in ["90s", "30m", "1h", "1h30m", "2d"]:
        assert format_duration(parse_duration(text)) == text.replace("90s", "1m30s")


@pytest.mark.django_db
def test_role_ttl_longer_than_max_ttl_is_refused():
    role = DynamicRoleFactory.build(
        resource=ResourceFactory(), default_ttl=timedelta(hours=2), max_ttl=timedelta(hours=1)
    )
    with pytest.raises(ValidationError) as info:
        role.full_clean()
    assert "cannot be longer than the max TTL" in str(info.value)


@pytest.mark.django_db
def test_role_with_bad_roles_is_refused_by_model_validation():
    role = DynamicRoleFactory.build(resource=ResourceFactory(), roles=[{"role": "read"}])
    with pytest.raises(ValidationError) as info:
        role.full_clean()
    assert "roles" in info.value.message_dict


@pytest.mark.django_db
def test_database_refuses_ttl_beyond_max_even_without_validation():
    from django.db import IntegrityError

    resource = ResourceFactory()
    resource.default_ttl = timedelta(days=3)
    with pytest.raises(IntegrityError):
        resource.save()
