"""Single sign-on against a real OpenID Connect provider (panva's oidc-provider, run by node on loopback).

The portal (Django's test client) does real discovery, a real code exchange with PKCE, fetches the real JWKS and
checks real signed ID tokens; the identity provider's login form is filled by a requests session. The refusal
tests make the provider alter the next ID token (provider.js's tamper hook, re-signed with its real key unless the
signature is the point) or drive the callback with crafted and replayed requests.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.test import Client, RequestFactory

from access.models import AuditEvent, Session, SsoGroupMapping, SsoIdentity
from access.models.leases import LeaseState
from access.models.sessions import SessionEndReason, SessionState
from access.otp import totp_device_create
from access.services.usage import access_lease_issue, access_session_open
from portal.guards import MFA_VERIFIED_AT
from portal.sso_forms import SSO_ONLY_MESSAGE
from tests.factories import AccessPolicyFactory, AccountFactory, DynamicRoleFactory, UserFactory
from tests.helpers import audit_text, totp_code
from tests.mongo.logins import logs_in
from tests.oidc import OidcProvider

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
CALLBACK = "http://testserver/sso/callback/"
IDP_PASSWORD = "idp password 7Rk"
LOCAL_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    provider = OidcProvider(tmp_path_factory.mktemp("oidc"), redirect_uris=[CALLBACK]).start()
    yield provider
    provider.stop()


@pytest.fixture
def sso(settings, idp):
    """The portal pointed at the test identity provider (its own second factor still required)."""
    for name, value in idp.sso_settings().items():
        setattr(settings, name, value)
    settings.PAM_OIDC_TRUST_IDP_MFA = False
    settings.PAM_OIDC_STEP_UP = "portal"
    return idp


def start_sign_in(client, idp, *, next_url="/", **params) -> str:
    """Ask the portal to sign in through SSO; return the authorization URL it sends the browser to."""
    response = client.get("/sso/login/", {"next": next_url, **params})
    assert response.status_code == 302, response
    assert response["Location"].startswith(f"{idp.issuer}/auth?")
    return response["Location"]


def callback(client, url: str):
    assert url.startswith(CALLBACK), url
    return client.get(url.removeprefix("http://testserver"))


def sso_sign_in(client, idp, username, *, password=IDP_PASSWORD, next_url="/"):
    """The whole round trip: portal → identity provider's login form → the portal's callback (its response)."""
    return callback(client, idp.authorize(start_sign_in(client, idp, next_url=next_url), username, password))


def signed_in_user(client):
    return get_user_model().objects.filter(pk=client.session.get("_auth_user_id")).first()


def last_event(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).order_by("-seq").first()


def follow_messages(client, response) -> str:
    return client.get(response["Location"]).content.decode()


# -- signing in --------------------------------------------------------------------------------------------------
def test_first_sign_in_creates_the_user_maps_groups_and_the_portal_still_asks_its_code(client, sso):
    dba, ops = Group.objects.create(name="dba-team"), Group.objects.create(name="ops-team")
    SsoGroupMapping.objects.create(claim_value="dba", group=dba)
    SsoGroupMapping.objects.create(claim_value="ops", group=ops)
    sso.set_user("alice", password=IDP_PASSWORD, groups=["dba", "not-mapped"], amr=["pwd", "mfa"], name="Alice Ng")

    authorization = start_sign_in(client, sso)
    query = parse_qs(urlsplit(authorization).query)
    assert query["client_id"] == [sso.client_id] and query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    assert query["redirect_uri"] == [CALLBACK]
    response = callback(client, sso.authorize(authorization, "alice", IDP_PASSWORD))

    # No trust in the identity provider's second factor: the portal's own code comes next.
    assert response.status_code == 302 and response["Location"] == "/mfa/?next=%2F"
    alice = get_user_model().objects.get(username="alice")
    assert signed_in_user(client) == alice
    assert not alice.has_usable_password()
    assert (alice.email, alice.first_name, alice.last_name) == ("alice@idp.example", "Alice", "Ng")
    assert set(alice.groups.values_list("name", flat=True)) == {"dba-team"}
    identity = SsoIdentity.objects.get(user=alice)
    assert (identity.issuer, identity.subject, identity.last_claim_groups) == (
        sso.issuer,
        "alice",
        ["dba", "not-mapped"],
    )
    assert client.get("/")["Location"].startswith("/mfa/")

    sign_in = last_event("auth.sso_login")
    assert sign_in.target_name == "alice" and sign_in.data["created"] is True
    assert sign_in.data["groups_added"] == ["dba-team"]
    assert sign_in.data["amr"] == ["pwd", "mfa"] and sign_in.data["idp_mfa"] is True
    assert last_event("sso.groups_sync").data["groups_added"] == ["dba-team"]
    assert not AuditEvent.objects.filter(action="auth.login").exists()  # no "password accepted" row for SSO
    assert sso.client_secret not in audit_text()


def test_trusted_idp_second_factor_verifies_the_session_and_only_then(client, sso, settings):
    settings.PAM_OIDC_TRUST_IDP_MFA = True
    settings.PAM_OIDC_MFA_ACR = ["urn:pam:mfa"]
    sso.set_user("bob", password=IDP_PASSWORD, amr=["pwd", "otp"])
    sso.set_user("carol", password=IDP_PASSWORD, amr=["pwd"])
    sso.set_user("dave", password=IDP_PASSWORD, amr=["pwd"], acr="urn:pam:mfa")

    response = sso_sign_in(client, sso, "bob", next_url="/leases/")
    assert response["Location"] == "/leases/"
    assert client.get("/").status_code == 200 and b"Hello Bob" in client.get("/").content
    passed = last_event("auth.mfa_passed")
    assert passed.target_name == "bob" and passed.data["via"] == "sso" and passed.data["device"] == "IdpMfaDevice"

    carol = Client()
    assert sso_sign_in(carol, sso, "carol")["Location"] == "/mfa/?next=%2F"  # no second factor asserted
    dave = Client()
    assert sso_sign_in(dave, sso, "dave")["Location"] == "/"  # acr in the trusted list

    # Trust withdrawn: the sessions it verified are no longer verified at their next request.
    settings.PAM_OIDC_TRUST_IDP_MFA = False
    assert client.get("/")["Location"].startswith("/mfa/")


def test_the_admin_signs_in_through_sso(client, sso, settings):
    settings.PAM_OIDC_TRUST_IDP_MFA = True
    admin = UserFactory(username="sam", is_staff=True, is_superuser=True)
    admin.set_unusable_password()  # a pre-provisioned account without password is linked at its first sign-in
    admin.save()
    sso.set_user("sam", password=IDP_PASSWORD, amr=["pwd", "hwk"])

    login_page = client.get("/admin/login/?next=/admin/").content.decode()
    assert 'id="sso-button"' in login_page and "/sso/login/?next=%2Fadmin%2F" in login_page
    response = sso_sign_in(client, sso, "sam", next_url="/admin/")
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert SsoIdentity.objects.get(subject="sam").user == admin


def test_a_local_password_account_is_never_taken_over_by_name(client, sso):
    local = UserFactory(username="root-admin", is_staff=True)
    sso.set_user("root-admin", password=IDP_PASSWORD, amr=["pwd", "mfa"])

    response = sso_sign_in(client, sso, "root-admin")
    assert response["Location"] == "/accounts/login/"
    assert signed_in_user(client) is None
    assert not SsoIdentity.objects.exists()
    local.refresh_from_db()
    assert local.check_password(LOCAL_PASSWORD)
    assert "a local account named 'root-admin' already exists" in last_event("auth.sso_failed").data["reason"]
    assert "Single sign-on failed: a local account named" in follow_messages(client, response)


def test_a_deactivated_person_is_refused(client, sso):
    sso.set_user("gone", password=IDP_PASSWORD)
    assert sso_sign_in(client, sso, "gone")["Location"].startswith("/mfa/")
    get_user_model().objects.filter(username="gone").update(is_active=False)

    again = Client()
    response = sso_sign_in(again, sso, "gone")
    assert response["Location"] == "/accounts/login/" and signed_in_user(again) is None
    assert last_event("auth.sso_failed").data["reason"] == "the account 'gone' is deactivated here"


# -- groups follow the identity provider ---------------------------------------------------------------------------
def test_a_group_removed_at_the_idp_is_lost_at_next_sign_in_with_the_sessions_and_leases_it_granted(
    sso, wire_server, wire_resource, django_capture_on_commit_callbacks
):
    dba, oncall = Group.objects.create(name="dba-team"), Group.objects.create(name="oncall")
    SsoGroupMapping.objects.create(claim_value="dba", group=dba, description="database admins")
    via_group = AccountFactory(name="orders-rw")
    direct = AccountFactory(name="catalog-ro")
    AccessPolicyFactory(user=None, group=dba, account=via_group, approval_required=False)
    role = DynamicRoleFactory(resource=wire_resource, name="orders-app", db="app", roles=["readWrite"])
    AccessPolicyFactory(user=None, group=dba, account=None, role=role, approval_required=False)
    sso.set_user("erin", password=IDP_PASSWORD, groups=["dba"])

    sso_sign_in(Client(), sso, "erin")
    erin = get_user_model().objects.get(username="erin")
    erin.groups.add(oncall)  # a group no mapping names: the identity provider does not manage it
    AccessPolicyFactory(user=erin, account=direct, approval_required=False)
    assert set(erin.groups.values_list("name", flat=True)) == {"dba-team", "oncall"}
    group_session = access_session_open(user=erin, account=via_group, duration=timedelta(minutes=30)).session
    own_session = access_session_open(user=erin, account=direct, duration=timedelta(minutes=30)).session
    issued = access_lease_issue(user=erin, role=role)
    lease, lease_password = issued.lease, issued.password
    assert logs_in(wire_server.host_port, "app", lease.username, lease_password)

    sso.set_user("erin", password=IDP_PASSWORD, groups=[])  # removed from "dba" at the identity provider
    with django_capture_on_commit_callbacks(execute=True):
        response = sso_sign_in(Client(), sso, "erin")
    assert response.status_code == 302

    assert set(erin.groups.values_list("name", flat=True)) == {"oncall"}
    group_session.refresh_from_db()
    own_session.refresh_from_db()
    lease.refresh_from_db()
    assert (group_session.state, group_session.end_reason) == (SessionState.ENDED, SessionEndReason.GRANT_REMOVED)
    assert own_session.state == SessionState.OPEN
    assert lease.state == LeaseState.REVOKED and lease.revoke_reason == "grant_removed"
    assert not logs_in(wire_server.host_port, "app", lease.username, lease_password)

    sync = last_event("sso.groups_sync")
    assert sync.actor_name == "single sign-on" and sync.target_name == "erin"
    assert sync.data["groups_removed"] == ["dba-team"] and sync.data["claim_groups"] == []
    assert (sync.data["sessions_ended"], sync.data["leases_revoked"]) == (1, 1)
    ended = AuditEvent.objects.filter(action="session.end", target_id=str(group_session.pk)).get()
    assert ended.actor_name == "single sign-on"
    assert Session.objects.get(pk=own_session.pk).state == SessionState.OPEN


def test_the_admin_edits_the_mapping_through_the_audited_services(otp_admin_client):
    group = Group.objects.create(name="readers")
    response = otp_admin_client.post(
        "/admin/access/ssogroupmapping/add/", {"claim_value": "Readers", "group": group.pk, "description": "all"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    mapping = SsoGroupMapping.objects.get()
    created = last_event("sso.mapping_create")
    assert created.actor_name == "sec-admin" and created.data["changed"]["claim_value"] == "Readers"

    otp_admin_client.post(
        f"/admin/access/ssogroupmapping/{mapping.pk}/change/",
        {"claim_value": "readers", "group": group.pk, "description": "all"},
    )
    assert last_event("sso.mapping_update").data["changed"] == {"claim_value": "readers"}
    otp_admin_client.post(f"/admin/access/ssogroupmapping/{mapping.pk}/delete/", {"post": "yes"})
    assert not SsoGroupMapping.objects.exists()
    assert last_event("sso.mapping_delete").data == {"claim_value": "readers", "group": "readers"}
    index = otp_admin_client.get("/admin/").content.decode()
    assert "Single sign-on group mappings" in index and "Single sign-on identities" in index


# -- refusals --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("wrong-audience", "the ID token was issued for another client (audience)"),
        ("expired", "the ID token has expired"),
        ("bad-signature", "the ID token's signature does not verify"),
        ("wrong-issuer", "the ID token was issued by another issuer"),
        ("unsigned", "the ID token is signed with 'none', not the configured RS256"),
        ("wrong-nonce", "the ID token's nonce is not this sign-in's (a replayed or foreign token)"),
        ("replay-previous", "the ID token's nonce is not this sign-in's (a replayed or foreign token)"),
    ],
)
def test_a_bad_id_token_is_refused(client, sso, mode, reason):
    sso.set_user("frank", password=IDP_PASSWORD, amr=["pwd", "mfa"])
    sso.set_user("mallory", password=IDP_PASSWORD)
    if mode == "replay-previous":
        sso_sign_in(Client(), sso, "mallory")  # the ID token the provider issued last, for another sign-in
        get_user_model().objects.filter(username="mallory").delete()
    sso.tamper(mode)

    response = sso_sign_in(client, sso, "frank")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert signed_in_user(client) is None
    assert not get_user_model().objects.filter(username__in=["frank", "mallory"]).exists()
    refused = last_event("auth.sso_failed")
    assert refused.data == {"via": "sso", "reason": reason, "step_up": False}
    assert f"Single sign-on failed: {reason}" in follow_messages(client, response).replace("&#x27;", "'")


def test_a_replayed_or_forged_callback_is_refused(client, sso):
    sso.set_user("grace", password=IDP_PASSWORD)
    back = sso.authorize(start_sign_in(client, sso), "grace", IDP_PASSWORD)
    assert callback(client, back)["Location"].startswith("/mfa/")
    grace = signed_in_user(client)

    # The same answer again, in the same browser and in an attacker's: its state was spent.
    assert callback(client, back)["Location"] == "/accounts/login/"
    attacker = Client()
    assert callback(attacker, back)["Location"] == "/accounts/login/" and signed_in_user(attacker) is None
    refusals = AuditEvent.objects.filter(action="auth.sso_failed").order_by("seq")
    assert [event.data["reason"] for event in refusals] == [
        "this sign-in's state is unknown or already used (a replayed or forged answer)"
    ] * 2
    assert refusals[0].actor_name == "grace" and signed_in_user(client) == grace

    # Login CSRF: an answer for someone else's login does not sign this browser in.
    victim = Client()
    forged = sso.authorize(start_sign_in(Client(), sso), "grace", IDP_PASSWORD)
    assert callback(victim, forged)["Location"] == "/accounts/login/" and signed_in_user(victim) is None

    # A code issued to one login, brought back with another login's state: PKCE binds it, the provider refuses.
    browser = Client()
    first = sso.authorize(start_sign_in(browser, sso), "grace", IDP_PASSWORD)
    second = parse_qs(urlsplit(start_sign_in(browser, sso)).query)["state"][0]
    code = parse_qs(urlsplit(first).query)["code"][0]
    response = callback(browser, f"{CALLBACK}?code={code}&state={second}&iss={sso.issuer}")
    assert response["Location"] == "/accounts/login/" and signed_in_user(browser) is None
    assert "refused the authorization code" in last_event("auth.sso_failed").data["reason"]


def test_an_answer_naming_another_issuer_is_refused(client, sso):
    sso.set_user("lena", password=IDP_PASSWORD)
    back = sso.authorize(start_sign_in(client, sso), "lena", IDP_PASSWORD)
    assert parse_qs(urlsplit(back).query)["iss"] == [sso.issuer]  # RFC 9207: the provider names itself
    response = callback(client, back.replace("iss=", "iss=http%3A%2F%2Fidp.evil.example&was="))
    assert response["Location"] == "/accounts/login/" and signed_in_user(client) is None
    assert last_event("auth.sso_failed").data["reason"] == "the answer names another identity provider (iss)"


def test_an_unreachable_identity_provider_is_said_so(client, sso, settings):
    from tests.gateway_fixtures import free_port

    settings.PAM_OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"
    response = client.get("/sso/login/")
    assert response["Location"] == "/accounts/login/"
    page = follow_messages(client, response)
    assert "Single sign-on is unavailable: the identity provider could not be reached" in page
    assert last_event("auth.sso_failed").data["reason"].startswith("the identity provider could not be reached")


def test_an_error_from_the_identity_provider_is_refused_and_spends_the_state(client, sso):
    state = parse_qs(urlsplit(start_sign_in(client, sso)).query)["state"][0]
    response = client.get("/sso/callback/", {"error": "access_denied", "state": state})
    assert response["Location"] == "/accounts/login/" and signed_in_user(client) is None
    assert last_event("auth.sso_failed").data["reason"] == "the identity provider answered 'access_denied'"
    assert state not in client.session.get("oidc_states", {})


def test_without_an_issuer_there_is_no_sso(client, settings):
    settings.PAM_OIDC_ISSUER = ""
    assert client.get("/sso/login/").status_code == 404
    assert client.get("/sso/callback/?code=x&state=y").status_code == 404
    assert 'id="sso-button"' not in client.get("/accounts/login/").content.decode()


def test_sessions_started_by_sso_end_when_sso_is_turned_off(client, sso, settings):
    sso.set_user("hank", password=IDP_PASSWORD)
    sso_sign_in(client, sso, "hank")
    assert signed_in_user(client) is not None
    settings.PAM_OIDC_ISSUER = ""
    assert client.get("/")["Location"].startswith("/accounts/login/")


# -- step-up ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def mfa_account(db):
    """An account whose policy (for the "dba" group of the identity provider) requires a fresh second factor."""
    dba = Group.objects.create(name="dba-team")
    SsoGroupMapping.objects.create(claim_value="dba", group=dba)
    account = AccountFactory(name="payments-rw")
    AccessPolicyFactory(user=None, group=dba, account=account, approval_required=False, mfa_required=True)
    return account


def test_step_up_at_the_identity_provider_asks_for_a_fresh_sign_in(client, sso, settings, mfa_account):
    settings.PAM_OIDC_TRUST_IDP_MFA = True
    settings.PAM_OIDC_STEP_UP = "idp"
    sso.set_user("ivy", password=IDP_PASSWORD, groups=["dba"], amr=["pwd", "mfa"])
    sso_sign_in(client, sso, "ivy")
    session = client.session
    session[MFA_VERIFIED_AT] = time.time() - 3600  # signed in an hour ago
    session.save()

    use_url = f"/db-accounts/{mfa_account.pk}/use/"
    step_up = client.get(use_url)
    assert step_up.status_code == 302 and step_up["Location"].startswith("/sso/login/?")
    authorization = client.get(step_up["Location"])["Location"]
    query = parse_qs(urlsplit(authorization).query)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]
    back = sso.authorize(authorization, "ivy", IDP_PASSWORD)
    assert callback(client, back)["Location"] == use_url
    page = client.get(use_url)
    assert page.status_code == 200 and b"payments-rw" in page.content
    stepped = last_event("auth.step_up")
    assert stepped.target_name == "ivy" and stepped.data["via"] == "sso"


def test_step_up_by_another_person_at_the_identity_provider_is_refused(client, sso, settings, mfa_account):
    settings.PAM_OIDC_TRUST_IDP_MFA = True
    settings.PAM_OIDC_STEP_UP = "idp"
    sso.set_user("ivy", password=IDP_PASSWORD, groups=["dba"], amr=["pwd", "mfa"])
    sso.set_user("jack", password=IDP_PASSWORD, groups=["dba"], amr=["pwd", "mfa"])
    sso_sign_in(client, sso, "ivy")
    ivy = signed_in_user(client)
    session = client.session
    session[MFA_VERIFIED_AT] = time.time() - 3600
    session.save()

    step_up = client.get(f"/db-accounts/{mfa_account.pk}/use/")
    authorization = client.get(step_up["Location"])["Location"]
    response = callback(client, sso.authorize(authorization, "jack", IDP_PASSWORD))
    assert response["Location"] == "/"
    assert signed_in_user(client) == ivy
    assert client.get(f"/db-accounts/{mfa_account.pk}/use/")["Location"].startswith("/sso/login/")
    refused = last_event("auth.sso_failed")
    assert refused.actor_name == "ivy" and refused.data["step_up"] is True
    assert refused.data["reason"] == "the step-up sign-in was by another person than the one signed in here"


def test_portal_step_up_still_asks_for_the_portals_code(client, sso, settings, mfa_account):
    settings.PAM_OIDC_TRUST_IDP_MFA = True
    settings.PAM_MFA_METHOD = "totp"
    sso.set_user("kim", password=IDP_PASSWORD, groups=["dba"], amr=["pwd", "mfa"])
    sso_sign_in(client, sso, "kim")
    use_url = f"/db-accounts/{mfa_account.pk}/use/"

    # Verified by the identity provider, but no authenticator app yet: set one up first, then come back.
    enrol = client.get(use_url)
    assert enrol["Location"].startswith("/mfa/enrol/?next=")
    from django_otp.plugins.otp_totp.models import TOTPDevice

    client.get(enrol["Location"])
    device = TOTPDevice.objects.get(user__username="kim")
    assert client.post(enrol["Location"], {"token": totp_code(device)}).status_code == 200  # backup codes, once
    assert client.get(use_url).status_code == 200

    session = client.session
    session[MFA_VERIFIED_AT] = time.time() - 3600
    session.save()
    assert client.get(use_url)["Location"].startswith("/mfa/step-up/?next=")


# -- SSO only ----------------------------------------------------------------------------------------------------
@pytest.fixture
def sso_only(sso, settings):
    settings.PAM_SSO_ONLY = True
    settings.PAM_SSO_BREAK_GLASS_USERS = ["breakglass"]
    return sso


def test_sso_only_refuses_password_sign_in_except_for_break_glass(client, sso_only):
    UserFactory(username="nina")
    breakglass = UserFactory(username="breakglass", is_staff=True, is_superuser=True)
    device = totp_device_create(user=breakglass)

    page = client.get("/accounts/login/").content.decode()
    assert 'id="sso-button"' in page and 'id="local-sign-in"' in page
    refused = client.post("/accounts/login/", {"username": "nina", "password": LOCAL_PASSWORD})
    assert refused.status_code == 200 and SSO_ONLY_MESSAGE in refused.content.decode().replace("&#x27;", "'")
    assert signed_in_user(client) is None
    failed = last_event("auth.login_failed")
    assert failed.target_name == "nina" and failed.data["reason"] == "password sign-in is off (SSO only)"
    from axes.models import AccessAttempt

    assert not AccessAttempt.objects.exists()  # not a wrong password: nobody is locked out by it

    admin_refused = Client().post(
        "/admin/login/?next=/admin/", {"username": "nina", "password": LOCAL_PASSWORD, "otp_token": "123456"}
    )
    assert SSO_ONLY_MESSAGE in admin_refused.content.decode().replace("&#x27;", "'")

    # Any other door that checks a password refuses the same names.
    request = RequestFactory().post("/anything/")
    assert authenticate(request, username="nina", password=LOCAL_PASSWORD) is None
    assert authenticate(request, username="breakglass", password=LOCAL_PASSWORD) == breakglass

    # The break-glass admin signs in with a password, in the portal and in the admin (with their code).
    allowed = client.post("/accounts/login/", {"username": "breakglass", "password": LOCAL_PASSWORD})
    assert allowed.status_code == 302 and signed_in_user(client) == breakglass
    assert client.get("/")["Location"].startswith("/mfa/")  # and their code next
    admin = Client()
    response = admin.post(
        "/admin/login/?next=/admin/",
        {"username": "breakglass", "password": LOCAL_PASSWORD, "otp_token": totp_code(device), "next": "/admin/"},
    )
    assert response.status_code == 302 and admin.get("/admin/").status_code == 200


def test_sso_only_still_signs_in_through_sso(client, sso_only):
    sso_only.set_user("olga", password=IDP_PASSWORD)
    assert sso_sign_in(client, sso_only, "olga")["Location"].startswith("/mfa/")
    assert signed_in_user(client).username == "olga"


def test_sso_only_without_an_issuer_stops_start_up(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "PAM_EMBEDDED": "true",
        "PAM_VAR_DIR": str(tmp_path),
        "PAM_SSO_ONLY": "true",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "PAM_SSO_ONLY is on but PAM_OIDC_ISSUER is not set" in result.stderr
