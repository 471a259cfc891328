"""A pytest plugin for running pymongo's own test suite against FerretDB (used by ``benchmarks/transparency.py``).

pymongo's ``test.ClientContext`` reads ``getParameter('*')['enableTestCommands']``, which FerretDB v1.24 does
not report, and stops every test with a KeyError. This plugin adds ``enableTestCommands: false`` to that one
reply when it is missing, so the tests that need test commands skip themselves instead.

Its set-up also looks for ``DB_USER`` in ``usersInfo`` and, when absent, creates it over an unauthenticated
connection. Through the gateway ``DB_USER`` is the session's one-time username, which logs in but is no user
of the server (the gateway logs in upstream with the account), so the set-up would try that ``createUser``
before login. The plugin answers that check with "the user exists": the credentials given are valid on both
sides. It changes nothing else, and it is loaded the same way for the direct run and for the run through the
gateway.
"""

from __future__ import annotations


def pytest_configure(config) -> None:
    from pymongo.synchronous.database import Database

    original = Database.command

    def command(self, command, *args, **kwargs):
        reply = original(self, command, *args, **kwargs)
        if command == "getParameter" and args[:1] == ("*",) and isinstance(reply, dict):
            reply.setdefault("enableTestCommands", False)
        return reply

    Database.command = command

    import test  # pymongo's test package, from the sdist's root (the working directory)

    test.ClientContext._check_user_provided = lambda self: True
