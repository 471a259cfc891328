"""The Atlas connector against the local Admin API server: digest authentication, media types, paging, retries,
timeouts and the error messages a security team reads."""

from __future__ import annotations

import re
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from requests.auth import HTTPDigestAuth

from connectors import ConnectorError, atlas, connector_for
from connectors.atlas import atlas_roles, delete_after_date, media_type

pytestmark = pytest.mark.usefixtures("fast_atlas")


@pytest.fixture
def connector(atlas_resource):
    with connector_for(atlas_resource) as own:
        yield own


def test_the_server_challenges_with_rfc_7616_digest_and_the_client_answers_without_sending_the_key(
    atlas_api, connector
):
    bare = requests.get(f"{atlas_api.base_url}/api/atlas/v2/groups/{atlas_api.state.group_id}/databaseUsers")
    assert bare.status_code == 401
    challenge = bare.headers["WWW-Authenticate"]
    assert challenge.startswith('Digest realm="MMS Public API"')
    assert 'qop="auth"' in challenge and "algorithm=MD5" in challenge and re.search(r'nonce="[^"]+"', challenge)
    assert bare.json()["error"] == 401

    connector.verify_connection()

    answered = [h for h in atlas_api.state.authorization_headers if h.startswith("Digest ")]
    assert answered and all(f'username="{atlas_api.state.public_key}"' in h for h in answered)
    assert all(atlas_api.state.private_key not in h for h in atlas_api.state.authorization_headers)


def test_a_response_hash_made_with_another_key_is_refused(atlas_api):
    url = f"{atlas_api.base_url}/api/atlas/v2/groups/{atlas_api.state.group_id}/databaseUsers"
    headers = {"Accept": media_type("2023-01-01")}
    wrong = requests.get(url, auth=HTTPDigestAuth(atlas_api.state.public_key, "not-the-key"), headers=headers)
    right = requests.get(
        url, auth=HTTPDigestAuth(atlas_api.state.public_key, atlas_api.state.private_key), headers=headers
    )
    assert wrong.status_code == 401
    assert right.status_code == 200 and right.headers["Content-Type"] == media_type("2023-01-01")


def test_an_unknown_resource_version_is_a_configuration_error_in_atlas_words(atlas_api, connector):
    with pytest.raises(ConnectorError) as caught:
        connector._request("GET", "/databaseUsers", version="2019-01-01", what="listing database users")
    assert caught.value.kind == "config"
    assert "INVALID_VERSION_DATE" in str(caught.value) and "HTTP 406" in str(caught.value)


def test_users_are_listed_across_pages(atlas_api, connector, monkeypatch):
    monkeypatch.setattr(atlas, "PAGE_SIZE", 2)
    for n in range(5):
        atlas_api.add_user({"username": f"u{n}", "roles": []})
    assert sorted(u["user"] for u in connector.list_users()) == [f"u{n}" for n in range(5)]
    assert atlas_api.count("GET", "/databaseUsers", 200) == 3


def test_an_unknown_project_is_not_found_in_words(atlas_api, atlas_resource):
    atlas_resource.atlas_group_id = "0" * 24
    with connector_for(atlas_resource) as wrong_project, pytest.raises(ConnectorError) as caught:
        wrong_project.verify_connection()
    assert caught.value.kind == "not_found"
    assert "No group with ID 000000000000000000000000 exists" in str(caught.value)


def test_retry_after_as_an_http_date_is_honoured(atlas_api, connector):
    when = datetime.now(UTC) + timedelta(seconds=2)
    atlas_api.fail_next("GET", "/databaseUsers", status=503, retry_after=format_datetime(when, usegmt=True))
    started = time.monotonic()
    connector.list_users()
    assert time.monotonic() - started >= 0.9  # HTTP dates have whole seconds
    assert atlas_api.count("GET", "/databaseUsers", 503) == 1


def test_a_slow_atlas_is_a_timeout_error_after_the_retries(atlas_api, atlas_resource, settings):
    settings.PAM_ATLAS_TIMEOUT = 0.2
    settings.PAM_ATLAS_MAX_RETRIES = 1
    atlas_api.fail_next("GET", "/databaseUsers", status=0, delay=0.6, times=2)
    with connector_for(atlas_resource) as slow, pytest.raises(ConnectorError) as caught:
        slow.list_users()
    assert caught.value.kind == "timeout"
    assert "did not answer within 0.2 s" in str(caught.value) and "gave up after 2 attempts" in str(caught.value)


def test_an_unreachable_base_url_is_unreachable_in_words(atlas_resource, settings):
    settings.PAM_ATLAS_MAX_RETRIES = 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    atlas_resource.atlas_base_url = f"http://127.0.0.1:{port}"
    with connector_for(atlas_resource) as nowhere, pytest.raises(ConnectorError) as caught:
        nowhere.verify_connection()
    assert caught.value.kind == "unreachable"
    assert f"Atlas at http://127.0.0.1:{port} is unreachable" in str(caught.value)


def test_delete_after_date_is_clamped_to_a_week_minus_a_margin():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert delete_after_date(now + timedelta(hours=1), now=now) == now + timedelta(hours=1)
    clamped = delete_after_date(now + timedelta(days=30), now=now)
    assert now + timedelta(days=6, hours=23) < clamped < now + timedelta(days=7)


def test_roles_are_sent_in_atlas_shape_whatever_form_they_were_written_in():
    assert atlas_roles(
        [
            "readAnyDatabase",
            {"role": "read", "db": "reports"},
            {"roleName": "dbAdmin", "databaseName": "x", "collectionName": "c"},
        ]
    ) == [
        {"roleName": "readAnyDatabase", "databaseName": "admin"},
        {"roleName": "read", "databaseName": "reports"},
        {"roleName": "dbAdmin", "databaseName": "x", "collectionName": "c"},
    ]
    with pytest.raises(ConnectorError):
        atlas_roles([42])


def test_generated_names_and_passwords_are_ones_atlas_accepts(atlas_api, connector):
    from access.services.leases import password_generate, username_render

    username = username_render(template="v-{holder}-{role}-{random}-{unix}", holder="x" * 300, role="é" * 80)
    password = password_generate(16)
    created = connector.create_user(username=username, password=password, roles=["read"])
    assert created["user"] == username and len(username) <= 100
    assert atlas_api.user(username)["password"] == password


def test_one_connector_serves_several_threads(atlas_api, connector):
    from concurrent.futures import ThreadPoolExecutor

    for n in range(6):
        atlas_api.add_user({"username": f"t{n}", "roles": []})
    with ThreadPoolExecutor(6) as pool:
        found = list(pool.map(lambda n: connector.get_user(username=f"t{n}"), range(6)))
    assert [u["user"] for u in found] == [f"t{n}" for n in range(6)]


def test_password_changes_and_role_grants_are_applied_on_every_cluster(atlas_api, connector):
    connector.create_user(
        username="svc", password="First-Password-123", roles=[{"roleName": "read", "databaseName": "a"}]
    )
    atlas_api.state.pending_polls = 2

    connector.change_password(username="svc", password="Second-Password-456")
    assert atlas_api.user("svc")["password"] == "Second-Password-456" and atlas_api.is_applied()

    connector.grant_roles(db="reports", username="svc", roles=["read", {"roleName": "read", "databaseName": "a"}])
    assert atlas_api.user("svc")["roles"] == [
        {"roleName": "read", "databaseName": "a"},
        {"roleName": "read", "databaseName": "reports"},
    ]
    connector.revoke_roles(db="reports", username="svc", roles=["read"])
    assert atlas_api.user("svc")["roles"] == [{"roleName": "read", "databaseName": "a"}]
    assert atlas_api.is_applied()

    with pytest.raises(ConnectorError) as caught:
        connector.lock_user(username="svc")
    assert caught.value.kind == "config" and "cannot be locked" in str(caught.value)
