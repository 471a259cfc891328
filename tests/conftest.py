"""Shared fixtures: users, OTP-verified admin clients, API clients, and the MongoDB test servers."""

import importlib.util

import pytest

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
    from django_otp import DEVICE_ID_SESSION_KEY

    from access.otp import totp_device_create

    device = totp_device_create(user=staff_user)
    client.force_login(staff_user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


@pytest.fixture
def api_client(staff_user):
    """A DRF client authenticated with a real bearer token of the staff user."""
    from rest_framework.test import APIClient

    from access.services.tokens import api_token_create

    _token, raw = api_token_create(user=staff_user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.raw_token = raw
    return client
