"""Start-up refuses to run without production secrets; management commands print what they promise."""

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command

from access.models import ApiToken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_check(env_overrides, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SECRET_KEY", "PAM_ENCRYPTION_KEYS")}
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
