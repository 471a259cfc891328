"""`manage.py demo` (what `make run` runs), tried as a newcomer would: read the printed password and TOTP URI,
log into the admin over real HTTP, then stop it with Ctrl+C."""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import totp_code
from tests.mongo.paths import free_loopback_port, port_is_open
from tests.profile import ScratchDatabase, embedded_env, require_production_profile, scratch_redis_url

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


class OutputReader:
    """Collects a process's output on a thread, so the test can wait for a line without blocking."""

    def __init__(self, process):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process):
        for line in process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text):
                return self.text
            time.sleep(0.1)
        raise AssertionError(f"demo did not print {pattern!r} in {timeout}s; output:\n{self.text[-3000:]}")


@pytest.mark.parametrize("profile", ["embedded", pytest.param("production", marks=pytest.mark.production)])
def test_demo_prints_credentials_serves_the_admin_and_stops_on_ctrl_c(tmp_path, ferretdb_uri, profile):
    # ferretdb_uri: FerretDB is built and works here (or the test fails under CI); the demo starts its own.
    # The embedded defaults, as a newcomer's first `make run` (the production profile's variables removed);
    # in the production profile, `make run` with DATABASE_URL and REDIS_URL: a database and a Redis of its own.
    env = {**embedded_env(), "PAM_VAR_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "DJANGO_DEBUG": "true"}
    env.pop("MONGODB_URI", None)
    if profile == "embedded":
        _demo_run(tmp_path, env)
        return
    require_production_profile()
    with ScratchDatabase(tmp_path) as database:
        env.update(DATABASE_URL=database.url, REDIS_URL=scratch_redis_url())
        _demo_run(tmp_path, env)
        assert database.rows("SELECT count(*) FROM access_resource WHERE name = 'demo'") == [(1,)]


def make_run(env: dict[str, str], *, http: str, gateway: str) -> subprocess.Popen:
    """`make run HTTP=… GATEWAY=…` as a newcomer types it, in a session of its own (Ctrl+C reaches make and the
    demo together, as a terminal's does). The venv's install stamp is taken as done (`-o`) and PY is this
    interpreter, so the test installs nothing and also runs from a worktree."""
    command = ["make", "--no-print-directory", "-o", ".venv/.installed", "run", f"PY={sys.executable}"]
    return subprocess.Popen(
        [*command, f"HTTP={http}", f"GATEWAY={gateway}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def ctrl_c(process: subprocess.Popen) -> None:
    """What Ctrl+C in a terminal does: SIGINT to the foreground process group (make and the demo)."""
    os.killpg(process.pid, signal.SIGINT)


def processes_with(marker: str) -> list[str]:
    """Live (not zombie) processes whose environment holds `marker` (the demo's own PAM_VAR_DIR): its children."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() not in environ.read_bytes().split(b"\0"):
                continue
            stat = (environ.parent / "stat").read_text()
            cmdline = (environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            found.append(f"{environ.parent.name}: {cmdline[:120]}")
    return found


def _demo_run(tmp_path, env: dict[str, str]) -> None:
    http_port, gateway_port = free_loopback_port(), free_loopback_port()
    process = make_run(env, http=f"127.0.0.1:{http_port}", gateway=f"127.0.0.1:{gateway_port}")
    try:
        reader = OutputReader(process)
        reader.wait_for(r"is running", timeout=180)
        # "running" is said only once every listener is bound: both answer at that very moment.
        assert port_is_open(http_port) and port_is_open(gateway_port)
        output = reader.wait_for(r"Press Ctrl\+C to stop everything", timeout=30)
        assert output.count("is running") == 1
        assert "username: engineer" in output and "username: approver" in output
        # The README's first screen shows what the terminal shows (with the default addresses).
        readme = (ROOT / "README.md").read_text()
        for line in re.search(r"```text\n(.*?)```", readme, re.S).group(1).splitlines():
            expected = line.replace(":8000/", f":{http_port}/").replace(":27018", f":{gateway_port}")
            assert expected.strip() in output, f"README line not printed by make run: {line!r}"
        password = re.search(r"password: (\S+)", output).group(1)
        otpauth = re.search(r"(otpauth://totp/\S+)", output).group(1)
        assert f"http://127.0.0.1:{http_port}/admin/" in output
        assert "registered as resource 'demo'" in output

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        base = f"http://127.0.0.1:{http_port}"
        for _ in range(50):
            if port_is_open(http_port):
                break
            time.sleep(0.2)
        login_page = opener.open(f"{base}/admin/login/?next=/admin/", timeout=10).read().decode()
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        assert 'name="otp_token"' in login_page
        form = {
            "csrfmiddlewaretoken": csrf,
            "username": "admin",
            "password": password,
            "otp_token": totp_code(otpauth),
            "next": "/admin/",
        }
        request = urllib.request.Request(
            f"{base}/admin/login/?next=/admin/",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Referer": f"{base}/admin/login/"},
        )
        admin_index = opener.open(request, timeout=10).read().decode()
        errors = re.findall(r"errornote.*?</p>|errorlist.*?</ul>", admin_index, re.S)
        assert "Resources, access and audit" in admin_index, errors
        resource_page = opener.open(f"{base}/admin/access/resource/", timeout=10).read().decode()
        assert ">demo<" in resource_page

        ctrl_c(process)
        process.wait(timeout=60)
        reader.thread.join(timeout=5)
        # "Stopped." only once every child (daphne, the qcluster and its workers, the gateway and its log writer,
        # FerretDB) has exited: none is left when it is printed, and make has nothing left to wait for either.
        assert "Stopped." in reader.text
        assert "did not stop" not in reader.text  # each part stopped on its own, none had to be killed
        assert processes_with(f"PAM_VAR_DIR={tmp_path}") == []
        assert not port_is_open(http_port) and not port_is_open(gateway_port)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "log").glob("*.log"))
    assert password not in logs


def test_make_run_documents_and_takes_its_addresses_from_variables():
    command = ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "run"]
    dry = subprocess.run(
        [*command, "HTTP=127.0.0.1:8001", "GATEWAY=127.0.0.1:27019"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dry.returncode == 0, dry.stderr
    assert "manage.py demo --http 127.0.0.1:8001 --gateway 127.0.0.1:27019" in dry.stdout
    assert "make run HTTP=127.0.0.1:8001 GATEWAY=127.0.0.1:27019" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("taken", ["HTTP", "GATEWAY"])
def test_an_address_in_use_is_shown_on_the_terminal_and_make_run_exits_non_zero(tmp_path, taken):
    env = {**embedded_env(), "PAM_VAR_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "DJANGO_DEBUG": "true"}
    env.pop("MONGODB_URI", None)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        addresses = {"HTTP": f"127.0.0.1:{free_loopback_port()}", "GATEWAY": f"127.0.0.1:{free_loopback_port()}"}
        addresses[taken] = f"127.0.0.1:{port}"
        process = make_run(env, http=addresses["HTTP"], gateway=addresses["GATEWAY"])
        output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output[-2000:]
    assert f"Cannot listen on 127.0.0.1:{port} ({taken}=127.0.0.1:{port}): Address already in use" in output
    assert "is running" not in output and "Starting FerretDB" not in output
    assert processes_with(f"PAM_VAR_DIR={tmp_path}") == []
