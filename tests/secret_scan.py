"""A pytest plugin that proves the run leaked no secret it generated.

Every password, session secret and API token the portal makes goes through `access.generators`; this plugin
watches that module and remembers each value. It then searches, over the whole run:

- every log record of every logger and level (a root handler), and the tests' captured stdout, stderr and log
  sections, and at the end the `*.log` files under pytest's temporary directory (daphne, qcluster, runproxy,
  FerretDB and `make run` write theirs there);
- the body (and redirect target) of every response Django serves in the test process (the test client, DRF's
  APIClient, the ASGI app), through `ResponseScanMiddleware`, which tests/settings.py puts first in MIDDLEWARE,
  except the responses a view marked with `X-One-Time-Secret: 1` (the reveal-once pages and API answers);
- after each database test, before its rollback, every text and JSON column of every model except encrypted
  fields and SCRAM verifiers: this covers audit rows, error messages, command logs and sessions;
- Playwright pages, through `scan_page(page)` (a helper browser tests call).

A secret that appears anywhere fails the run; the report names where, with a hash prefix, never the value.
Python subprocesses (daphne, runproxy, qcluster, manage.py) report the secrets they make through
tests/secret_scan_child/sitecustomize.py (this plugin puts it on PYTHONPATH with a file to append to); they are
picked up between tests and before each database snapshot. A test that meets a secret some other way (read from a
browser page) passes it to `remember()`. `pytest --secret-scan off` turns the whole scan off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ONE_TIME_SECRET_HEADER = "X-One-Time-Secret"
MIN_SECRET_LENGTH = 12  # shorter values (e.g. 6-digit codes) would match by chance
LOG_FILE_MAX_BYTES = 64 * 1024 * 1024
LONG_RUN = 256  # longer runs of secret characters are searched secret by secret


def fingerprint(secret: str) -> str:
    """What the report prints instead of a secret: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass
class Finding:
    where: str
    secret_hash: str


@dataclass
class SecretScanner:
    """The generated secrets, one regex over them (rebuilt only when the set grows), and what it found where."""

    secrets: set[str] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)
    log_records: int = 0
    html_responses: int = 0
    db_snapshots: int = 0
    db_unreadable: int = 0
    _pattern: re.Pattern | None = None
    _pattern_size: int = -1
    _lengths: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, secret: str) -> None:
        """Add a secret to search for (values shorter than MIN_SECRET_LENGTH are ignored)."""
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            with self._lock:
                self.secrets.add(secret)

    def _regex(self) -> re.Pattern | None:
        """One regex for the runs of characters secrets are made of (rebuilt only when the set grows).

        A search is then linear in the text whatever the number of secrets: the regex finds the runs (in C) and
        each run is looked up in the set; only a run longer than a secret is searched for secrets inside it.
        (A regex alternation of thousands of secrets tries each at every position: a 200-client load test's
        leases made one log scan exceed 300 s.)
        """
        if self._pattern_size != len(self.secrets):
            with self._lock:
                secrets = tuple(self.secrets)
                alphabet = "".join(sorted(set().union(*secrets))) if secrets else ""
                shortest = min(map(len, secrets), default=MIN_SECRET_LENGTH)
                self._pattern = re.compile(f"[{re.escape(alphabet)}]{{{shortest},}}") if alphabet else None
                self._lengths = sorted({len(secret) for secret in secrets})
                self._pattern_size = len(secrets)
        return self._pattern

    def _secrets_in_run(self, run: str) -> set[str]:
        if run in self.secrets:
            return {run}
        if len(run) > LONG_RUN:  # e.g. a base64 blob: one substring search per secret, in C
            with self._lock:
                candidates = tuple(self.secrets)
            return {secret for secret in candidates if secret in run}
        return {
            run[start : start + length]
            for length in self._lengths
            if length < len(run)
            for start in range(len(run) - length + 1)
            if run[start : start + length] in self.secrets
        }

    def scan(self, text: str | bytes | None, *, where: str) -> list[str]:
        """Search `text` for every remembered secret; record and return the fingerprints found."""
        pattern = self._regex()
        if pattern is None or not text:
            return []
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        leaked: set[str] = set()
        for run in pattern.findall(text):
            leaked |= self._secrets_in_run(run)
        found = sorted({fingerprint(secret) for secret in leaked})
        for secret_hash in found:
            self.findings.append(Finding(where=where, secret_hash=secret_hash))
        return found

    def scan_response(self, response, *, where: str) -> None:
        """Search a Django/DRF test response unless its view marked it as the one-time reveal."""
        if response.get(ONE_TIME_SECRET_HEADER) == "1":
            return
        self.html_responses += 1
        body = b"" if getattr(response, "streaming", False) else response.content
        self.scan(body + response.get("Location", "").encode(), where=where)

    def scan_database(self, *, where: str) -> None:
        """Search every non-secret text and JSON column of every model (one query per model)."""
        from django.apps import apps
        from django.db import models

        from access.fields import EncryptedTextField

        if self._regex() is None:
            return
        self.db_snapshots += 1
        for model in apps.get_models():
            if not model._meta.managed or model._meta.proxy:
                continue
            columns = [
                f.attname
                for f in model._meta.concrete_fields
                if isinstance(f, models.CharField | models.TextField | models.JSONField)
                and not isinstance(f, EncryptedTextField)
                and (model._meta.label_lower, f.name) not in NOT_SCANNED_COLUMNS
            ]
            if not columns:
                continue
            rows = model._base_manager.values_list(*columns).iterator()
            text = "\n".join("\x00".join(str(value) for value in row if value not in (None, "")) for row in rows)
            if text.strip():
                self.scan(text, where=f"{where}: table {model._meta.db_table}")  # one search per table

    def summary(self, *, log_files: int = 0) -> str:
        head = (
            f"secret scan: {len(self.secrets)} secrets checked across {self.log_records} log records"
            f"{f' and {log_files} log files' if log_files else ''}, {self.html_responses} HTML responses, "
            f"{self.db_snapshots} DB snapshots"
        )
        if not self.findings:
            return head + ": none found"
        return head + f": {len(self.findings)} LEAKS FOUND"


# Columns that hold secrets by design: SCRAM verifiers (salted, stretched keys of a session secret).
NOT_SCANNED_COLUMNS = {("access.session", "verifiers")}


class _ScanningHandler(logging.Handler):
    """A root logging handler that searches each record (message, arguments and traceback) for secrets."""

    def __init__(self, scanner: SecretScanner) -> None:
        super().__init__(level=logging.NOTSET)
        self.scanner = scanner

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.scanner.log_records += 1
            parts = [record.getMessage()]
            if record.exc_info:
                parts.append(logging.Formatter().formatException(record.exc_info))
            if record.exc_text:
                parts.append(record.exc_text)
            if record.stack_info:
                parts.append(record.stack_info)
            self.scanner.scan("\n".join(parts), where=f"log record {record.name}:{record.levelname}")
        except Exception:  # a log handler never raises into the code that logged
            self.handleError(record)


def scan_log_files(scanner: SecretScanner, root: Path) -> int:
    """Search every `*.log` file under `root` (the subprocesses' output); return how many were read."""
    count = 0
    for path in sorted(root.rglob("*.log")):
        try:
            with path.open("rb") as handle:
                data = handle.read(LOG_FILE_MAX_BYTES)
        except OSError:
            continue
        count += 1
        scanner.scan(data, where=f"log file {path}")
    return count


# -- the plugin: one scanner for the session --------------------------------------------------------------------
_scanner: SecretScanner | None = None
_child_secrets_path: Path | None = None
_child_secrets_offset = 0
CHILD_SITE = Path(__file__).resolve().parent / "secret_scan_child"


def remember(secret: str) -> None:
    """Tell the scan about a secret made outside this process (e.g. read from a reveal page in a browser test)."""
    if _scanner is not None:
        _scanner.remember(secret)


def scan_page(page, *, where: str | None = None) -> None:
    """Search a Playwright page's HTML; pages that browser tests mark with `page.one_time_secret = True` are skipped.

    Browser tests call this after each step whose page must not show a secret (every page but the reveal).
    """
    if _scanner is not None and not getattr(page, "one_time_secret", False):
        _scanner.html_responses += 1
        _scanner.scan(page.content(), where=where or f"browser page {page.url}")


def _is_database_test(request) -> bool:
    names = set(request.fixturenames)
    return bool(request.node.get_closest_marker("django_db")) or bool(
        names & {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"}
    )


@pytest.fixture(autouse=True)
def _secret_scan_database(request):
    """After a database test, before its rollback, search the tables for secrets generated during it."""
    if _scanner is None or not _is_database_test(request):
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up first, so it is torn down (rolled back) after us
    absorb_child_secrets()
    generated_before = len(_scanner.secrets)
    yield
    absorb_child_secrets()
    transactional = "transactional_db" in request.fixturenames or "live_server" in request.fixturenames
    if request.node.get_closest_marker("django_db") and request.node.get_closest_marker("django_db").kwargs.get(
        "transaction"
    ):
        transactional = True
    if len(_scanner.secrets) != generated_before or transactional:
        from django.db import DatabaseError

        try:
            _scanner.scan_database(where=f"database after {request.node.nodeid}")
        except DatabaseError:  # the test left its transaction unusable (PostgreSQL): nothing can be read now
            _scanner.db_unreadable += 1


class ResponseScanMiddleware:
    """Searches every response Django serves in the test process; nothing in a process without the scan (the
    portal subprocesses the tests start load the same settings)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        self._scan(request, response)
        return response

    async def _acall(self, request):
        response = await self.get_response(request)
        self._scan(request, response)
        return response

    @staticmethod
    def _scan(request, response) -> None:
        if _scanner is not None:
            _scanner.scan_response(response, where=f"response to {request.method} {request.path}")


def pytest_configure(config) -> None:
    global _scanner
    if _scanner is not None or config.getoption("--secret-scan", "on") == "off":
        return
    from access import generators

    _scanner = SecretScanner()
    handler = _ScanningHandler(_scanner)
    root = logging.getLogger()
    root_level_before = root.level
    root.addHandler(handler)
    unwatch = generators.secret_watch(_scanner.remember)
    config._secret_scan_cleanups = [unwatch, lambda: root.removeHandler(handler)]
    config._secret_scan_handler = handler
    _keep_root_logger_open(root, handler)
    config._secret_scan_root_level_before = root_level_before
    _share_with_subprocesses(config)


def _share_with_subprocesses(config) -> None:
    """Python subprocesses report the secrets they make to a file (tests/secret_scan_child/sitecustomize.py)."""
    global _child_secrets_path
    folder = Path(tempfile.mkdtemp(prefix="pam-secret-scan-"))
    _child_secrets_path = folder / "child-secrets.txt"
    _child_secrets_path.touch(mode=0o600)
    previous = {name: os.environ.get(name) for name in ("PAM_TEST_SECRETS_FILE", "PYTHONPATH")}
    os.environ["PAM_TEST_SECRETS_FILE"] = str(_child_secrets_path)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHILD_SITE), previous["PYTHONPATH"]]))

    def restore() -> None:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)

    config._secret_scan_cleanups.append(restore)


def absorb_child_secrets() -> None:
    """Remember the secrets the subprocesses wrote since the last call."""
    global _child_secrets_offset
    if _scanner is None or _child_secrets_path is None:
        return
    try:
        with _child_secrets_path.open("r", encoding="utf-8") as handle:
            handle.seek(_child_secrets_offset)
            data = handle.read()
    except OSError:
        return
    complete, _, _partial = data.rpartition("\n")
    if not complete and not data.endswith("\n"):
        return
    _child_secrets_offset += len(complete.encode()) + 1
    for line in complete.split("\n"):
        _scanner.remember(line.strip())


def pytest_sessionstart(session) -> None:
    level = getattr(session.config, "_secret_scan_root_level_before", None)
    if level is not None:  # pytest's logging plugin registers itself after every pytest_configure
        _keep_pytest_capture_level(session.config, level)


def _keep_root_logger_open(root: logging.Logger, handler: logging.Handler) -> None:
    """Let every level reach the scanning handler; the other root handlers keep the level they printed before."""
    previous = root.level
    for other in root.handlers:
        if other is not handler and other.level < previous:
            other.setLevel(previous)
    root.setLevel(logging.DEBUG)


def _keep_pytest_capture_level(config, level: int) -> None:
    """pytest's own log capture (report sections, caplog) keeps seeing what it saw before the root was opened."""
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    if plugin is None or plugin.log_level is not None:
        return
    for name in ("caplog_handler", "report_handler"):
        capture = getattr(plugin, name, None)
        if capture is not None and capture.level < level:
            capture.setLevel(level)


def pytest_addoption(parser) -> None:
    parser.addoption("--secret-scan", default="on", choices=("on", "off"), help="search the run for leaked secrets")


def pytest_runtest_setup(item) -> None:
    """Put the scanning handler back if a test reconfigured logging (dictConfig drops the root's handlers)."""
    handler = getattr(item.config, "_secret_scan_handler", None)
    root = logging.getLogger()
    if handler is not None and handler not in root.handlers:
        root.addHandler(handler)
        _keep_root_logger_open(root, handler)


def pytest_runtest_logreport(report) -> None:
    """Search the captured stdout, stderr and log sections and the failure text of each test phase."""
    if _scanner is None:
        return
    absorb_child_secrets()
    for title, content in report.sections:
        _scanner.scan(content, where=f"{report.nodeid} ({report.when}): {title}")
    if report.failed:
        _scanner.scan(report.longreprtext, where=f"{report.nodeid} ({report.when}): failure report")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _scanner is None:
        return
    absorb_child_secrets()
    basetemp = session.config._tmp_path_factory.getbasetemp() if hasattr(session.config, "_tmp_path_factory") else None
    log_files = scan_log_files(_scanner, basetemp) if basetemp and basetemp.exists() else 0
    session.config._secret_scan_summary = _scanner.summary(log_files=log_files)
    if _scanner.findings and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _scanner is None:
        return
    summary = getattr(config, "_secret_scan_summary", None) or _scanner.summary()
    if _scanner.findings:
        terminalreporter.section("secret scan: generated secrets found outside their reveal", red=True)
        for finding in _scanner.findings[:200]:
            terminalreporter.line(f"secret sha256:{finding.secret_hash}… in {finding.where}")
    terminalreporter.write_line(summary)


def pytest_unconfigure(config) -> None:
    global _scanner
    for cleanup in getattr(config, "_secret_scan_cleanups", []):
        cleanup()
    if hasattr(config, "_secret_scan_cleanups"):
        _scanner = None
