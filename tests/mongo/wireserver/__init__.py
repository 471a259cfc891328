"""An in-repo MongoDB wire-protocol server for tests: SCRAM users with roles, CRUD over mongomock,
currentOp/killOp/killAllSessions, a replica-set-primary mode and fault injection.

Start it with ``python -m tests.mongo wireserver [--replica-set NAME] [--port N]`` or in-process
with ``WireServer(...).start()``; pytest fixtures live in ``tests.mongo.wireserver_fixtures``.
Modules: ``server`` (connections and framing), ``commands`` (dispatch and authorization),
``handshake`` (hello and SCRAM), ``usercmds`` and ``users`` (user store), ``roles``,
``engine`` and ``cursors`` (data commands), ``admin`` (diagnostics and kills), ``faults``.
"""

from __future__ import annotations

from .cli import main
from .server import WireServer

__all__ = ["WireServer", "main"]
