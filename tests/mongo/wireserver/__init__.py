"""An in-repo MongoDB wire-protocol server for tests: SCRAM users with built-in and user-defined roles,
every command authorized by the actions its roles' privileges grant, CRUD over mongomock,
currentOp/killOp/killAllSessions, a replica-set-primary mode and fault injection.

Start it with ``python -m tests.mongo wireserver [--replica-set NAME] [--port N]`` or in-process
with ``WireServer(...).start()``; pytest fixtures live in ``tests.mongo.wireserver_fixtures``.
Modules: ``server`` (connections and framing), ``commands`` (dispatch), ``authz`` (what each command
needs), ``privileges`` (resources, actions, built-in roles as privileges), ``roles`` (role store and
resolution), ``handshake`` (hello and SCRAM), ``usercmds`` and ``users`` (user store), ``rolecmds``
(createRole, rolesInfo, ...), ``engine`` and ``cursors`` (data commands), ``admin`` (diagnostics and
kills), ``faults``.
"""

from __future__ import annotations

from .cli import main
from .server import WireServer

__all__ = ["WireServer", "main"]
