"""Real JavaScript MongoDB clients for the tests: mongosh and the official Node driver.

Both are pinned in ``tests/js/package.json`` / ``package-lock.json`` and installed by npm into
``tests/js/node_modules`` (git-ignored) with :func:`ensure_js_clients`. :func:`mongosh_eval` runs a
mongosh script against a connection string; :func:`node_run` runs a Node script that can
``require("mongodb")``. Both keep mongosh's telemetry and update checks off and its home directory
inside the tools cache, so runs stay offline and leave nothing in the user's home.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.mongo.paths import JS_DIR, file_lock, tools_cache_dir

NODE_MODULES = JS_DIR / "node_modules"
MONGOSH = NODE_MODULES / ".bin" / "mongosh"
NODE_DRIVER = NODE_MODULES / "mongodb" / "package.json"


class JsClientsUnavailable(RuntimeError):
    """npm could not install mongosh and the Node driver; the message says why."""


def js_clients_installed() -> bool:
    """Whether mongosh and the Node driver are present in ``tests/js/node_modules``."""
    return MONGOSH.exists() and NODE_DRIVER.is_file()


def ensure_js_clients() -> None:
    """Install the locked JS clients with npm unless they are already there."""
    if js_clients_installed():
        return
    with file_lock(tools_cache_dir() / "js-clients.lock"):
        if js_clients_installed():
            return
        _npm_install()
    if not js_clients_installed():
        raise JsClientsUnavailable(f"npm finished but {MONGOSH} or {NODE_DRIVER} is missing")


def _npm_install() -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise JsClientsUnavailable("npm is not on PATH; it is needed to install mongosh and the Node driver")
    verb = "ci" if (JS_DIR / "package-lock.json").is_file() else "install"
    result = subprocess.run(
        [npm, verb, "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise JsClientsUnavailable(f"`npm {verb}` failed (exit {result.returncode}):\n{output}")


def _client_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    home = tools_cache_dir() / "js-home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "HOME": str(home),  # mongosh keeps config, history and logs under ~/.mongodb
        "MONGOSH_FORCE_DISABLE_TELEMETRY_FOR_TESTING": "1",
        "DO_NOT_TRACK": "1",
        **(extra or {}),
    }


def mongosh_eval(uri: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in mongosh connected to ``uri``; the caller checks ``returncode`` and ``stdout``.

    ``--quiet`` also skips mongosh's update check; ``--norc`` ignores any ``~/.mongoshrc.js``.
    """
    return subprocess.run(
        [str(MONGOSH), uri, "--quiet", "--norc", "--eval", script],
        cwd=JS_DIR,
        env=_client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def node_run(
    script: str | Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a Node script (a path to a ``.js`` file, or its source) with the ``mongodb`` driver resolvable.

    Pass connection strings through ``env`` rather than the source, e.g. ``{"MONGODB_URI": uri}``.
    """
    if isinstance(script, Path):
        return _node([str(script)], env, timeout)
    # A CommonJS file, so that require("mongodb") resolves through NODE_PATH from anywhere.
    with tempfile.NamedTemporaryFile("w", suffix=".cjs", prefix="node-run-", delete=False) as handle:
        handle.write(script)
    try:
        return _node([handle.name], env, timeout)
    finally:
        Path(handle.name).unlink(missing_ok=True)


def _node(args: list[str], env: dict[str, str] | None, timeout: float) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        raise JsClientsUnavailable("node is not on PATH")
    return subprocess.run(
        [node, *args],
        cwd=JS_DIR,
        env=_client_env({"NODE_PATH": str(NODE_MODULES), **(env or {})}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
