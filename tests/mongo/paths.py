"""Where the MongoDB test tooling keeps its files, and small process helpers it shares.

Built tools (the FerretDB binary, its prepared source tree) live in a cache folder outside git:
``$PAM_TOOLS_CACHE`` when set, else ``<repo>/var/cache``; binaries go to its ``bin/``. The JS clients
live in ``tests/js/node_modules``. Everything here is stdlib-only so the install commands run before
the test dependencies are importable.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
JS_DIR = REPO_ROOT / "tests" / "js"


def tools_cache_dir() -> Path:
    """The cache root for built test tools (created on demand)."""
    root = Path(os.environ.get("PAM_TOOLS_CACHE") or REPO_ROOT / "var" / "cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


def tools_bin_dir() -> Path:
    """The folder `go install` writes binaries to (GOBIN)."""
    path = tools_cache_dir() / "bin"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so parallel test workers never build the same tool twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the caller must retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def stop_process(process: subprocess.Popen, *, grace: float = 10.0) -> int | None:
    """Terminate ``process``, kill it if it outlives ``grace`` seconds, and return its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    return process.returncode


def wait_until(predicate, *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it returns true or ``timeout`` seconds pass; return its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def die_with_parent() -> None:
    """In a child (`preexec_fn`): ask Linux to SIGTERM it when the process that started it dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
