"""Where `pam` keeps its login: `$XDG_CONFIG_HOME/pam/credentials.json` (else `~/.config/pam/`), readable by its
owner only (the folder 0700, the file 0600, written atomically). `PAM_PORTAL` and `PAM_TOKEN` (an API token) in
the environment stand in for a stored login, for automation."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CREDENTIALS_FILE = "credentials.json"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pam"


def credentials_path() -> Path:
    return config_dir() / CREDENTIALS_FILE


@dataclass
class Login:
    """A stored `pam login`: the portal, the tokens and when the access token lapses."""

    portal: str
    access_token: str
    refresh_token: str
    expires_at: float
    username: str = ""
    client_id: str = "pam-cli"

    def __repr__(self) -> str:  # never show a token
        return f"Login(portal={self.portal!r}, username={self.username!r})"

    def expires_soon(self, margin: float = 30.0) -> bool:
        return time.time() + margin >= self.expires_at


def load_login() -> Login | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
        return Login(**{key: data[key] for key in Login.__dataclass_fields__ if key in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save_login(login: Login) -> Path:
    """Write the login for the owner only: a private folder, a 0600 file created before any byte is written."""
    folder = config_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        folder.chmod(0o700)
    path = folder / CREDENTIALS_FILE
    temporary = folder / f".{CREDENTIALS_FILE}.{os.getpid()}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(asdict(login), handle)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path


def forget_login() -> bool:
    try:
        credentials_path().unlink()
        return True
    except FileNotFoundError:
        return False


def environment_token() -> tuple[str, str] | None:
    """(`PAM_PORTAL`, `PAM_TOKEN`) when both are set."""
    portal, token = os.environ.get("PAM_PORTAL", "").strip(), os.environ.get("PAM_TOKEN", "").strip()
    return (portal, token) if portal and token else None
