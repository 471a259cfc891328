"""The MongoDB gateway: accepts session logins and relays each client connection to its deployment.

The proxy (:mod:`~gatewayproxy.server`, :mod:`~gatewayproxy.relay`, :mod:`~gatewayproxy.pipe`,
:mod:`~gatewayproxy.policy`, :mod:`~gatewayproxy.commandlog`, :mod:`~gatewayproxy.upstream`,
:mod:`~gatewayproxy.auth`, :mod:`~gatewayproxy.metrics`) speaks the wire protocol through the library
:mod:`gatewayproxy.wire` and imports nothing of Django or ``access``: the process that runs it hands the
server a :class:`gatewayproxy.host.Domain` (``access.gateway_bridge.GatewayBridge`` under
``manage.py runproxy``), and the domain answers with the plain types of :mod:`gatewayproxy.host`.
"""
