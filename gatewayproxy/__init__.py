"""The MongoDB gateway: accepts session logins and relays each client connection to its deployment.

The proxy (:mod:`~gatewayproxy.server`, :mod:`~gatewayproxy.relay`, :mod:`~gatewayproxy.pipe`,
:mod:`~gatewayproxy.policy`, :mod:`~gatewayproxy.commandlog`, :mod:`~gatewayproxy.upstream`,
:mod:`~gatewayproxy.auth`, :mod:`~gatewayproxy.metrics`) speaks the wire protocol through the library
:mod:`gatewayproxy.wire`.
"""
