"""The requester portal's pages, one module per concern: auth, mfa, dashboard, requests, leases, sessions."""
