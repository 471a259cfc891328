"""`manage.py demo` (what `make run` runs), tried as a newcomer would: read the printed password and TOTP URI,
log into the admin over real HTTP, then stop it with Ctrl+C."""

import http.cookiejar
import re
import signal
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


def _demo_run(tmp_path, env: dict[str, str]) -> None:
    http_port, gateway_port = free_loopback_port(), free_loopback_port()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--http",
            f"127.0.0.1:{http_port}",
            "--gateway",
            f"127.0.0.1:{gateway_port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        reader = OutputReader(process)
        output = reader.wait_for(r"Press Ctrl\+C to stop everything", timeout=120)
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

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        reader.thread.join(timeout=5)
        assert "Stopped." in reader.text
        assert not port_is_open(http_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "log").glob("*.log"))
    assert password not in logs
