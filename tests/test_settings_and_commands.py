"""Start-up refuses to run without production secrets; management commands print what they promise."""

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command

from access.models import ApiToken
from tests.profile import embedded_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_check(env_overrides, tmp_path):
    """`manage.py check` as a fresh shell runs it: the portal's settings, none of the test run's switches."""
    env = {k: v for k, v in embedded_env().items() if k not in ("DJANGO_SECRET_KEY", "PAM_ENCRYPTION_KEYS")}
    env.update({"PAM_VAR_DIR": str(tmp_path), **env_overrides})
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_without_a_secret_key_stops_with_a_clear_message(tmp_path):
    result = run_check({"DJANGO_DEBUG": "false", "PAM_ENCRYPTION_KEYS": "x"}, tmp_path)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_production_without_encryption_keys_stops_with_a_clear_message(tmp_path):
    result = run_check({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "k" * 50}, tmp_path)
    assert result.returncode != 0
    assert "PAM_ENCRYPTION_KEYS is not set" in result.stderr


def test_production_without_a_database_url_stops_with_a_clear_message(tmp_path):
    secrets = {"DJANGO_SECRET_KEY": "k" * 50, "PAM_ENCRYPTION_KEYS": "x"}
    result = run_check({"DJANGO_DEBUG": "false", **secrets}, tmp_path)
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


def test_debug_is_off_and_nothing_is_generated_unless_switched_on(tmp_path):
    var = tmp_path / "var"
    result = run_check({"DJANGO_SECRET_KEY": "k" * 50, "PAM_VAR_DIR": str(var)}, tmp_path)
    assert result.returncode != 0
    assert "PAM_ENCRYPTION_KEYS is not set" in result.stderr
    assert not var.exists()


def test_settings_create_no_directory_out_of_the_embedded_defaults(tmp_path):
    var = tmp_path / "var"
    production = {
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "k" * 50,
        "PAM_ENCRYPTION_KEYS": "x",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "PAM_VAR_DIR": str(var),
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
    }
    result = run_check(production, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not var.exists() and not (tmp_path / "static").exists()


def test_embedded_defaults_without_debug_generate_secrets_and_make_var_dir(tmp_path):
    var = tmp_path / "var"
    assert run_check({"PAM_EMBEDDED": "true", "PAM_VAR_DIR": str(var)}, tmp_path).returncode == 0
    assert (var / "secret_key").exists() and (var / "encryption_key").exists()


def test_debug_mode_generates_secrets_once_and_reuses_them(tmp_path):
    assert run_check({"DJANGO_DEBUG": "true"}, tmp_path).returncode == 0
    key = (tmp_path / "encryption_key").read_text()
    assert oct((tmp_path / "encryption_key").stat().st_mode & 0o777) == "0o600"
    assert run_check({"DJANGO_DEBUG": "true"}, tmp_path).returncode == 0
    assert (tmp_path / "encryption_key").read_text() == key


@pytest.mark.django_db
def test_add_totp_prints_an_otpauth_uri_and_a_qr_code(django_user_model):
    django_user_model.objects.create_user(username="carol")
    out = StringIO()
    call_command("add_totp", "carol", stdout=out)
    text = out.getvalue()
    assert "otpauth://totp/" in text and "carol" in text
    assert "█" in text or "▀" in text or "▄" in text


@pytest.mark.django_db
def test_create_api_token_prints_a_working_token_once(django_user_model, client):
    django_user_model.objects.create_user(username="svc", is_staff=True, is_superuser=True)
    out = StringIO()
    call_command("create_api_token", "svc", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith("pam_")
    assert not ApiToken.objects.filter(digest=raw).exists()
    response = client.get("/api/v1/resources", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
