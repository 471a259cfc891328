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


def _retry_flush_on_deadlock() -> None:
    """Transactional tests end with a flush (TRUNCATE). On PostgreSQL it can deadlock with a gateway or qcluster
    subprocess that is still writing its heartbeat or command log; the server then aborts one side. The flush is
    retried a few times instead of failing a test whose behaviour was already checked."""
    import time

    from django.db import OperationalError
    from django.test import testcases

    original = testcases.TransactionTestCase._fixture_teardown

    def teardown(self):
        for attempt in range(4):
            try:
                return original(self)
            except Exception as exc:  # flush wraps the database error in a CommandError
                cause = exc.__cause__ or exc.__context__
                if attempt == 3 or not isinstance(cause, OperationalError) or "deadlock" not in str(cause):
                    raise
                time.sleep(0.2 * (attempt + 1))

    testcases.TransactionTestCase._fixture_teardown = teardown


_retry_flush_on_deadlock()
