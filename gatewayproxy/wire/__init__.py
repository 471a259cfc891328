"""The MongoDB wire protocol as a library: no Django, no sockets of its own, no knowledge of sessions.

- :mod:`gatewayproxy.wire.codec`: pure functions over bytes — framing, OP_MSG, OP_QUERY/OP_REPLY,
  OP_COMPRESSED, CRC-32C, a cheap peek at a request's command, and the replies a proxy makes itself.
- :mod:`gatewayproxy.wire.scram`: SCRAM-SHA-1 and SCRAM-SHA-256 as MongoDB speaks them, client and server.
- :mod:`gatewayproxy.wire.hello`: the hello/isMaster and buildInfo replies a proxy presents to drivers.
- :mod:`gatewayproxy.wire.redact`: what a command log may keep of a request and a reply.
- :mod:`gatewayproxy.wire.actions`: the privilege action names a MongoDB role may grant.

The gateway (the rest of :mod:`gatewayproxy`), the test wire server (``tests/mongo/wireserver``) and the
benchmarks use it; the Django side uses :mod:`~gatewayproxy.wire.scram` to make session verifiers and
:mod:`~gatewayproxy.wire.actions` to check custom permission levels.
"""
