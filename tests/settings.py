"""Settings for the test run: the portal's own settings with the embedded defaults switched on, and the leak scan.

Debug stays off, as in production. The variables are set in the environment (unless the run sets them itself), so
the portal subprocesses the tests start (daphne, runproxy, qcluster, manage.py) run the same way. The test servers
speak plain HTTP on loopback, hence cookies without the Secure flag. A test that starts the portal as a fresh shell
or a production host would, removes these first (`tests.profile.embedded_env`, `TEST_RUN_ENVIRONMENT`).
"""

import os

TEST_RUN_ENVIRONMENT = {"PAM_EMBEDDED": "true", "DJANGO_SECURE_COOKIES": "false"}
for _name, _value in TEST_RUN_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

from portal.settings import *  # noqa: E402, F403
from portal.settings import MIDDLEWARE  # noqa: E402

# The leak scan searches every response the tests get (tests/secret_scan.py); first, so it sees the final response.
MIDDLEWARE = ["tests.secret_scan.ResponseScanMiddleware", *MIDDLEWARE]
