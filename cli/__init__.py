"""`pam`, the requester's command line: sign in with the device grant, open database access through a local proxy
that needs no password, and use leases and requests from the terminal. A client of the portal's REST API; it
imports nothing of Django (the local proxy reuses the gateway's wire library, `gatewayproxy.wire`)."""

__version__ = "0.1.0"
