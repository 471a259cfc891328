"""Command line: ``python -m tests.mongo wireserver [--host H] [--port N] [--replica-set NAME [--members 2]]``.

Prints ``MONGODB_URI=...`` (root user, ``directConnection=true`` for a standalone,
``replicaSet=NAME`` in replica-set mode) and serves until interrupted. ``--members 2`` runs a two-member set
(``replset.WireReplicaSet``, free ports) whose primary ``replSetStepDown`` moves to the other member.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading

from .replset import WireReplicaSet
from .server import WireServer


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m tests.mongo wireserver", description="Run the in-repo MongoDB wire server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--replica-set", default=None, metavar="NAME", help="answer as the primary of replica set NAME")
    parser.add_argument(
        "--members", type=int, choices=(1, 2), default=1, help="2: a two-member set (free ports) with replSetStepDown"
    )
    parser.add_argument("--admin-user", default="admin")
    parser.add_argument("--admin-password", default=None, help="random when omitted")
    parser.add_argument("--verbose", "-v", action="store_true", help="log connections at INFO")
    return parser


async def _serve(server: WireServer) -> None:
    await server.listen()
    print(f"MONGODB_URI={server.uri}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: loop.create_task(server.close()))
    await server.serve_forever()


def _serve_pair(args: argparse.Namespace) -> int:
    replica_set = WireReplicaSet(
        args.replica_set or "rs0",
        admin_user=getattr(args, "admin_user", "admin"),
        admin_password=getattr(args, "admin_password", None),
    ).start()
    print(f"MONGODB_URI={replica_set.uri}", flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    replica_set.stop()
    return 0


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    """Entry point; takes argv (without the ``wireserver`` word) or already-parsed arguments."""
    args = argv if isinstance(argv, argparse.Namespace) else build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "members", 1) == 2:
        return _serve_pair(args)
    server = WireServer(
        host=args.host,
        port=args.port,
        replica_set=args.replica_set,
        admin_user=getattr(args, "admin_user", "admin"),
        admin_password=getattr(args, "admin_password", None),
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server))
    return 0
