"""Debug-mode secrets generated once into `var/` and reused, so `make run` needs no configuration.

Only ever used when `DJANGO_DEBUG` is on; production reads its secrets from the environment.
"""

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet


def debug_secret(path: Path, *, kind: str) -> str:
    """Return the secret stored at `path`, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    value = Fernet.generate_key().decode() if kind == "fernet" else secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value
