"""FerretDB as an independent MongoDB-compatible test server: install it, start it, stop it.

FerretDB v1.24 is a real server written in Go that speaks the wire protocol, authenticates with
SCRAM-SHA-1/SCRAM-SHA-256 ("new auth", experimental in v1) and implements createUser, updateUser,
dropUser and usersInfo, but has no roles or authorization. It runs here on its SQLite backend in a
temporary directory, on a free loopback port, with telemetry disabled and no network use.

Installing: `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds a binary that panics at
start, because the module zip lacks the generated ``build/version/version.txt`` (FerretDB issue #4001),
and the Go proxy here refuses the version listing that ``@version`` installs query. So
:func:`ensure_ferretdb` downloads the module with ``go mod download`` (checksum-verified), copies the
source into the tools cache, writes ``version.txt`` and runs ``go install ./cmd/ferretdb`` there with
GOBIN set to the cache's ``bin/``. ``FERRETDB_BIN`` points at a prebuilt binary instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote_plus

from tests.mongo.paths import (
    die_with_parent,
    file_lock,
    free_loopback_port,
    stop_process,
    tail,
    tools_bin_dir,
    tools_cache_dir,
)

FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
ADMIN_DATABASE = "admin"
START_ATTEMPTS = 3


class FerretDBUnavailable(RuntimeError):
    """FerretDB could not be built or started; the message says why."""


# --- installing -------------------------------------------------------------------------------------


def ensure_ferretdb() -> Path:
    """Return the path of a FerretDB v1.24.2 binary, building it into the tools cache when missing."""
    override = os.environ.get("FERRETDB_BIN")
    if override:
        return _checked_binary(Path(override))
    binary = tools_bin_dir() / "ferretdb"
    if installed_version(binary) == FERRETDB_VERSION:
        return binary
    with file_lock(tools_cache_dir() / "ferretdb.lock"):
        if installed_version(binary) != FERRETDB_VERSION:
            _build(binary.parent)
    return _checked_binary(binary)


def installed_version(binary: Path) -> str | None:
    """The version a FerretDB binary reports (``v1.24.2``), or None when it is absent or broken."""
    try:
        result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        if result.returncode == 0 and key.strip() == "version":
            return value.strip()
    return None


def _checked_binary(binary: Path) -> Path:
    if not binary.is_file():
        raise FerretDBUnavailable(f"{binary} does not exist")
    version = installed_version(binary)
    if version != FERRETDB_VERSION:
        raise FerretDBUnavailable(f"{binary} reports version {version!r}, expected {FERRETDB_VERSION}")
    return binary


def _build(gobin: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise FerretDBUnavailable("the Go toolchain (`go`) is not on PATH; it is needed to build FerretDB")
    module_dir = _download_module(go)
    source = _prepare_source_tree(module_dir)
    _run_go(go, ["install", "-trimpath", "./cmd/ferretdb"], cwd=source, extra_env={"GOBIN": str(gobin)})


def _go_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    # No VCS stamping: the copied tree sits inside this repository's git checkout.
    return {**os.environ, "GOFLAGS": "-buildvcs=false", **(extra_env or {})}


def _run_go(go: str, args: list[str], *, cwd: Path, extra_env: dict[str, str] | None = None) -> str:
    result = subprocess.run([go, *args], cwd=cwd, env=_go_env(extra_env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise FerretDBUnavailable(f"`go {' '.join(args)}` failed (exit {result.returncode}):\n{output}")
    return result.stdout


def _download_module(go: str) -> Path:
    """Fetch the FerretDB module into the Go module cache and return its (read-only) directory."""
    output = _run_go(go, ["mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"], cwd=Path("/"))
    info = json.loads(output)
    if info.get("Error"):
        raise FerretDBUnavailable(f"go mod download failed: {info['Error']}")
    return Path(info["Dir"])


def _prepare_source_tree(module_dir: Path) -> Path:
    """A writable copy of the FerretDB source with the version file its build expects."""
    target = tools_cache_dir() / f"ferretdb-src-{FERRETDB_VERSION}"
    version_file = target / "build" / "version" / "version.txt"
    if version_file.is_file() and version_file.read_text().strip() == FERRETDB_VERSION:
        return target
    staging = Path(tempfile.mkdtemp(prefix="ferretdb-src-", dir=tools_cache_dir()))
    tree = staging / "src"
    shutil.copytree(module_dir, tree)
    _make_writable(tree)
    (tree / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
    if target.exists():
        _make_writable(target)
        shutil.rmtree(target)
    tree.rename(target)
    staging.rmdir()
    return target


def _make_writable(tree: Path) -> None:
    # Files copied out of the module cache keep its read-only modes.
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)


# --- running ----------------------------------------------------------------------------------------


class FerretDB:
    """One FerretDB process on 127.0.0.1 with SQLite storage and a SCRAM admin user in ``admin``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``data_dir`` holds the SQLite files,
    state and log; without it a temporary directory is made and removed on stop.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        username: str = "pam-admin",
        password: str | None = None,
        binary: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.username = username
        self.password = password or secrets.token_urlsafe(24)
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._binary = binary
        self._data_dir = data_dir
        self._temp_dir: Path | None = None

    def __repr__(self) -> str:
        return f"<FerretDB {FERRETDB_VERSION} user={self.username!r} port={self.port}>"

    def __enter__(self) -> FerretDB:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def uri(self) -> str:
        """The admin connection string: ``mongodb://USER:PASS@127.0.0.1:PORT/?authSource=admin``."""
        if self.port is None:
            raise RuntimeError("FerretDB is not running; call start() first")
        credentials = f"{quote_plus(self.username)}:{quote_plus(self.password)}"
        return f"mongodb://{credentials}@127.0.0.1:{self.port}/?authSource={ADMIN_DATABASE}"

    def start(self) -> FerretDB:
        """Start FerretDB and return once the admin user can ping it over SCRAM-SHA-256."""
        if self.process is not None:
            return self
        binary = self._binary or ensure_ferretdb()
        workdir = self._workdir()
        for _attempt in range(START_ATTEMPTS):
            port = free_loopback_port()
            log_path = workdir / f"ferretdb-{port}.log"
            process = self._spawn(binary, workdir, port, log_path)
            self.process, self.port, self.log_path = process, port, log_path
            if self._wait_ready():
                return self
            stop_process(process)
            self.process = self.port = None
            if "address already in use" not in tail(log_path):
                break  # only a lost race for the port is worth another try
        log_tail = tail(log_path)
        self._remove_temp_dir()
        raise FerretDBUnavailable(f"FerretDB did not become ready; log tail:\n{log_tail}")

    def stop(self) -> int | None:
        """Terminate FerretDB (kill it after a grace period) and return its exit code."""
        code = None
        if self.process is not None:
            code = stop_process(self.process)
        self.process = self.port = None
        self._remove_temp_dir()
        return code

    def _workdir(self) -> Path:
        if self._data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="ferretdb-"))
        workdir = self._data_dir or self._temp_dir
        for sub in ("data", "state"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        return workdir

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _command(self, binary: Path, workdir: Path, port: int) -> list[str]:
        return [
            str(binary),
            "--handler=sqlite",
            f"--sqlite-url=file:{workdir / 'data'}/",
            f"--state-dir={workdir / 'state'}",
            f"--listen-addr=127.0.0.1:{port}",
            "--debug-addr=-",
            "--telemetry=disable",
            "--test-enable-new-auth",
            f"--setup-database={ADMIN_DATABASE}",
            f"--setup-username={self.username}",
            "--log-level=WARN",
        ]

    def _spawn(self, binary: Path, workdir: Path, port: int, log_path: Path) -> subprocess.Popen:
        env = {key: value for key, value in os.environ.items() if not key.startswith("FERRETDB_")}
        env["FERRETDB_SETUP_PASSWORD"] = self.password  # kept out of argv, which `ps` shows
        with log_path.open("ab") as log:
            return subprocess.Popen(
                self._command(binary, workdir, port),
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop it in order
                preexec_fn=die_with_parent,
            )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self._ping():
                return True
            time.sleep(0.2)
        return False

    def _ping(self) -> bool:
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        client = MongoClient(
            self.uri,
            authMechanism="SCRAM-SHA-256",
            directConnection=True,
            serverSelectionTimeoutMS=1000,
            connectTimeoutMS=1000,
        )
        with client:
            try:
                client.admin.command("ping")
            except PyMongoError:
                return False
        return True
