"""Shared fixtures: users, OTP-verified admin clients, API clients, Resources on the MongoDB test servers, and the
plugins with the test servers and the gateway. Plain helpers are in tests/helpers.py."""

import importlib.util

import pytest

from tests.helpers import otp_login, token_client

pytest_plugins = [
    name
    for name in ("tests.mongo.fixtures", "tests.mongo.wireserver_fixtures", "tests.gateway_fixtures")
    if importlib.util.find_spec(name) is not None
] + ["tests.secret_scan"]


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_user(
        username="sec-admin",
        email="sec@example.com",
        password="correct horse battery staple",
        is_staff=True,
        is_superuser=True,
    )


@pytest.fixture
def otp_admin_client(client, staff_user):
    """A browser session logged into the admin with a verified TOTP device."""
    otp_login(client, staff_user)
    return client


@pytest.fixture
def api_client(staff_user):
    """A DRF client authenticated with a real bearer token of the staff user (`.raw_token`)."""
    return token_client(staff_user)


@pytest.fixture
def wire_resource(db, wire_server):
    """A Resource on the session's in-repo wire server, administered with its admin user."""
    from tests.factories import resource_on

    return resource_on(wire_server)


@pytest.fixture
def ferret_resource(db, ferretdb_server):
    """A Resource on the session's FerretDB, administered with its admin user."""
    from tests.factories import resource_on

    return resource_on(ferretdb_server)
