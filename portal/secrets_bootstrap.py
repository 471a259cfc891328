"""The embedded defaults' secrets, generated once into `PAM_VAR_DIR` and reused, so `make run` needs no configuration.

Only used when the embedded defaults are on (`PAM_EMBEDDED`, on with `DJANGO_DEBUG`); production reads its secrets
from the environment.
"""

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet


def embedded_secret(path: Path, *, kind: str) -> str:
    """Return the secret stored at `path`, creating it (mode 0600, and its directory) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = Fernet.generate_key().decode() if kind == "fernet" else secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value
