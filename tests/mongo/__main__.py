"""Command line for the MongoDB test servers and tools: ``python -m tests.mongo <command>``.

- ``ferretdb``: start one FerretDB, print ``MONGODB_URI=...`` and serve until SIGINT/SIGTERM.
- ``wireserver [ARGS...]``: the in-repo wire server; its module ``tests.mongo.wireserver`` owns the
  arguments through ``main(argv: list[str]) -> int``.
- ``install-ferretdb`` / ``install-clients``: build FerretDB into the tools cache / npm-install the
  JS clients (what ``tests/mongo/install-tools.sh`` calls).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path

from tests.mongo.clients import JsClientsUnavailable, ensure_js_clients
from tests.mongo.ferretdb import FerretDB, FerretDBUnavailable, ensure_ferretdb

WIRESERVER_MODULE = "tests.mongo.wireserver"


def run_ferretdb(args: argparse.Namespace) -> int:
    """Serve one FerretDB until SIGINT or SIGTERM, then stop it and exit 0."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = FerretDB(args.data_dir, username=args.username)
    try:
        server.start()
    except FerretDBUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"MONGODB_URI={server.uri}", flush=True)
        while not stop.wait(0.5):
            if server.process.poll() is not None:
                print(f"error: FerretDB exited with code {server.process.returncode}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


def run_wireserver(args: argparse.Namespace) -> int:
    """Hand over to the in-repo wire server's own ``main(argv)``."""
    try:
        module = importlib.import_module(WIRESERVER_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name is None or not WIRESERVER_MODULE.startswith(exc.name):
            raise
        print(f"error: {WIRESERVER_MODULE} is not available yet ({exc})", file=sys.stderr)
        return 2
    main = getattr(module, "main", None)
    if main is None:
        print(f"error: {WIRESERVER_MODULE} has no main(argv) entry point yet", file=sys.stderr)
        return 2
    return main(args.wireserver_args) or 0


def install_ferretdb(_args: argparse.Namespace) -> int:
    try:
        print(ensure_ferretdb())
    except FerretDBUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def install_clients(_args: argparse.Namespace) -> int:
    try:
        ensure_js_clients()
    except JsClientsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("mongosh and the Node driver are installed in tests/js/node_modules")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.mongo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    ferretdb = commands.add_parser("ferretdb", help="serve one FerretDB until SIGINT/SIGTERM")
    ferretdb.add_argument("--username", default="pam-admin", help="setup admin user (default: pam-admin)")
    ferretdb.add_argument("--data-dir", type=Path, default=None, help="keep data here (default: a temporary directory)")
    ferretdb.set_defaults(handler=run_ferretdb)

    # The wire server parses its own arguments (including --help): they arrive as unknown extras.
    wireserver = commands.add_parser("wireserver", help="the in-repo wire server", add_help=False)
    wireserver.set_defaults(handler=run_wireserver)

    commands.add_parser("install-ferretdb", help="build FerretDB into the tools cache").set_defaults(
        handler=install_ferretdb
    )
    commands.add_parser("install-clients", help="npm-install mongosh and the Node driver").set_defaults(
        handler=install_clients
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "wireserver" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.wireserver_args = extra
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
