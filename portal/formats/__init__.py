"""Date formats for the portal and the admin: every recorded time to the second, in ISO order, with its zone."""
