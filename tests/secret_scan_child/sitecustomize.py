"""Loaded by every Python subprocess the test suite starts (the leak scan puts this folder on PYTHONPATH).

When `PAM_TEST_SECRETS_FILE` is set, each secret `access.generators` makes in this process (daphne, runproxy,
qcluster, manage.py) is appended to that file, one per line, so the test run's leak scan can search for it too.
Outside the test suite neither the folder nor the variable is set, and nothing happens.
"""

import os

_path = os.environ.get("PAM_TEST_SECRETS_FILE")
if _path:
    try:
        from access import generators
    except ImportError:  # a Python process outside the project (a tool): nothing to watch
        pass
    else:

        def _append(secret: str, path: str = _path) -> None:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(secret + "\n")

        generators.secret_watch(_append)
