"""The leak scan itself: a planted secret is found in a log record, a response, a table or a log file, and fails a run.

These tests use their own `SecretScanner`, never the session's, so the planted values cannot fail this run.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.http import HttpResponse

from access import generators
from tests.secret_scan import (
    ONE_TIME_SECRET_HEADER,
    SecretScanner,
    _ScanningHandler,
    fingerprint,
    scan_log_files,
)

ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def planted() -> str:
    """A token like the portal's, made here so that the session's own scan does not know it."""
    return "pam_" + secrets.token_urlsafe(24)


def test_a_secret_in_a_log_record_is_found_and_reported_by_hash_only():
    scanner, secret = SecretScanner(), planted()
    scanner.remember(secret)
    record = logging.LogRecord("access.leases", logging.DEBUG, __file__, 1, "created user with %s", (secret,), None)
    _ScanningHandler(scanner).emit(record)
    assert [f.secret_hash for f in scanner.findings] == [fingerprint(secret)]
    assert "access.leases" in scanner.findings[0].where
    assert secret not in scanner.summary() and "1 LEAKS FOUND" in scanner.summary()


def test_a_secret_in_a_traceback_is_found():
    scanner, secret = SecretScanner(), planted()
    scanner.remember(secret)
    try:
        raise RuntimeError(f"login failed for password {secret}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    _ScanningHandler(scanner).emit(record)
    assert len(scanner.findings) == 1


def test_responses_are_searched_except_those_marked_one_time():
    scanner, secret = SecretScanner(), planted()
    scanner.remember(secret)
    reveal = HttpResponse(f"<p>your password: {secret}</p>")
    reveal[ONE_TIME_SECRET_HEADER] = "1"
    scanner.scan_response(reveal, where="reveal")
    assert scanner.findings == []
    scanner.scan_response(HttpResponse(f"<td>{secret}</td>"), where="lease list")
    redirect = HttpResponse(status=302)
    redirect["Location"] = f"/done/?secret={secret}"
    scanner.scan_response(redirect, where="redirect")
    assert [f.where for f in scanner.findings] == ["lease list", "redirect"]
    assert scanner.html_responses == 2


@pytest.mark.django_db
def test_responses_the_test_client_gets_are_searched_through_the_middleware(client, monkeypatch):
    from tests import secret_scan

    scanner, secret = SecretScanner(), planted()
    scanner.remember(secret)
    monkeypatch.setattr(secret_scan, "_scanner", scanner)  # this test's scanner, not the session's
    response = client.get(f"/accounts/login/?next=/{secret}")
    assert secret in response.content.decode()
    assert [f.where for f in scanner.findings] == ["response to GET /accounts/login/"]


def test_the_generator_watch_sees_every_new_secret():
    seen: list[str] = []
    unwatch = generators.secret_watch(seen.append)
    try:
        password = generators.new_password(length=20, alphabet="abcdefXYZ123")
        token = generators.new_token(nbytes=16)
    finally:
        unwatch()
    generators.new_token(nbytes=16)
    assert seen == [password, token]


@pytest.mark.django_db
def test_a_secret_in_an_audit_row_is_found_but_not_in_an_encrypted_column():
    from access.models import AuditAction, AuditEvent
    from access.services.audit import audit_record
    from tests.factories import ResourceFactory

    scanner, secret = SecretScanner(), planted()
    scanner.remember(secret)
    resource = ResourceFactory()
    resource.admin_password = secret  # an EncryptedTextField: ciphertext in the table
    resource.save()
    scanner.scan_database(where="db")
    assert scanner.findings == []
    audit_record(action=AuditAction.SECRETS_REENCRYPT, data={"note": f"oops {secret}"})
    scanner.scan_database(where="db")
    assert [f.where for f in scanner.findings] == [f"db: table {AuditEvent._meta.db_table}"]
    assert scanner.db_snapshots == 2


def test_log_files_of_subprocesses_are_searched(tmp_path):
    scanner, secret = SecretScanner(), planted()
    scanner.remember(secret)
    (tmp_path / "daphne").mkdir()
    (tmp_path / "daphne" / "daphne.log").write_text("ok\n")
    (tmp_path / "qcluster.log").write_text(f"task failed: {secret}\n")
    assert scan_log_files(scanner, tmp_path) == 2
    assert len(scanner.findings) == 1 and "qcluster.log" in scanner.findings[0].where


def test_short_values_are_not_searched():
    scanner = SecretScanner()
    scanner.remember("123456")
    scanner.scan("code 123456", where="x")
    assert scanner.secrets == set() and scanner.findings == []


def test_a_run_that_logs_a_generated_secret_fails_with_its_hash(tmp_path):
    """A whole pytest run with the plugin: the tests pass, the leak fails the run, the secret is not printed."""
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import logging
            from access.services.tokens import TOKEN_PREFIX
            from access.generators import new_token

            def test_leaks():
                raw = new_token(nbytes=32, prefix=TOKEN_PREFIX)
                open("raw.txt", "w").write(raw)
                logging.getLogger("access.api").debug("issued %s", raw)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "portal.settings"}
    env.pop("PAM_TEST_SECRETS_FILE", None)  # the inner run's planted secret stays out of this run's scan
    result = subprocess.run(
        [*PYTEST, "-p", "tests.secret_scan", "--basetemp", str(tmp_path / "basetemp"), "test_leaky.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    raw = (tmp_path / "raw.txt").read_text()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:].replace(raw, "<secret>")
    assert "1 passed" in output
    assert f"sha256:{fingerprint(raw)}" in output and "log record access.api:DEBUG" in output
    assert raw not in output


def test_python_subprocesses_report_the_secrets_they_make():
    from tests import secret_scan

    if secret_scan._scanner is None:
        pytest.skip("the leak scan is off (--secret-scan off)")
    script = (
        "import hashlib; from access.generators import new_token; "
        "print(hashlib.sha256(new_token(nbytes=20).encode()).hexdigest())"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    secret_scan.absorb_child_secrets()
    assert result.stdout.strip()[:12] in {fingerprint(secret) for secret in secret_scan._scanner.secrets}


def test_the_scan_is_linear_and_finds_secrets_glued_to_other_characters():
    import time

    scanner = SecretScanner()
    many = [planted() for _ in range(5000)]
    for secret in many:
        scanner.remember(secret)
    text = "INFO access.api GET /api/v1/sys/leases/lookup 200 ok\n" * 20_000  # about 1 MB
    glued = f"user=x{many[1234]}y blob={'A' * 300}{many[42]}{'B' * 300}"
    started = time.perf_counter()
    found = scanner.scan(text + glued, where="big")
    elapsed = time.perf_counter() - started
    assert sorted(found) == sorted([fingerprint(many[1234]), fingerprint(many[42])])
    assert elapsed < 5, f"1 MB against 5,000 secrets took {elapsed:.1f} s"
