"""The test identity provider: panva's oidc-provider (tests/oidc/provider.js, pinned in package-lock.json, installed
by tests/install-oidc.sh) run by node on a free loopback port, and a requests-driven "browser" for its login form.

`OidcProvider(workdir, redirect_uris=[...])` starts it with one confidential client (the portal) whose secret comes
from access.generators (so the leak scan watches it); `set_user` writes a person (password, groups, amr/acr) into
the users file the provider reads at every sign-in; `tamper(mode)` alters the next token response's ID token
(see provider.js); `sso_settings()` are the PAM_OIDC_* settings that point the portal at it.
`authorize(url, username, password)` follows an authorization request through the login form and returns the
URL the provider sends the browser back to (the portal's callback, with code and state).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import requests

from tests.gateway_fixtures import free_port
from tests.helpers import process_stop, process_wait_ready

HERE = Path(__file__).resolve().parent
INSTALL = HERE.parent / "install-oidc.sh"
CLIENT_ID = "mongo-pam-portal"


class OidcProvider:
    """oidc-provider on 127.0.0.1:<free port>, with the portal as its client and a users file the tests edit."""

    def __init__(self, workdir: Path, *, redirect_uris: list[str]) -> None:
        from access.generators import new_token

        self.workdir = workdir
        self.port = free_port()
        self.client_id = CLIENT_ID
        self.client_secret = new_token(nbytes=24)
        self.redirect_uris = redirect_uris
        self.users_file = workdir / "users.json"
        self.log_path = workdir / "oidc-provider.log"
        self.users: dict[str, dict] = {}
        self.process: subprocess.Popen | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sso_settings(self, **extra) -> dict:
        """The portal's settings for this provider (for `settings` overrides or a subprocess's environment)."""
        return {
            "PAM_OIDC_ISSUER": self.issuer,
            "PAM_OIDC_CLIENT_ID": self.client_id,
            "PAM_OIDC_CLIENT_SECRET": self.client_secret,
            "PAM_OIDC_SCOPES": "openid email profile groups",
            **extra,
        }

    def start(self, timeout: float = 30.0) -> OidcProvider:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH: the single sign-on tests run the identity provider with it")
        if not (HERE / "node_modules" / "oidc-provider").is_dir():
            subprocess.run([str(INSTALL)], check=True)
        self._write_users()
        config = self.workdir / "oidc-config.json"
        config.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "cookie_key": os.urandom(16).hex(),
                    "users_file": str(self.users_file),
                    "clients": [
                        {
                            "client_id": self.client_id,
                            "client_secret": self.client_secret,
                            "redirect_uris": self.redirect_uris,
                        }
                    ],
                }
            )
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [node, str(HERE / "provider.js"), str(config)], cwd=HERE, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        process_wait_ready(
            self.process,
            self._answers,
            name="oidc-provider",
            timeout=timeout,
            log_text=self.log_text,
            poll=0.1,
        )
        return self

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        process_stop(self.process)
        self.process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- what the tests change at the identity provider ---------------------------------------------------------
    def set_user(
        self,
        username: str,
        *,
        password: str,
        groups: list[str] | tuple[str, ...] = (),
        amr: list[str] | tuple[str, ...] = ("pwd",),
        acr: str | None = None,
        email: str | None = None,
        name: str | None = None,
    ) -> None:
        """Create or replace a person at the identity provider (read again at their next sign-in)."""
        self.users[username] = {
            "password": password,
            "groups": list(groups),
            "amr": list(amr),
            "email": email or f"{username}@idp.example",
            "name": name or username.title(),
            **({"acr": acr} if acr else {}),
        }
        self._write_users()

    def _write_users(self) -> None:
        temporary = self.users_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.users))
        temporary.replace(self.users_file)

    def tamper(self, mode: str) -> None:
        """Alter the ID token of the next token response (modes in provider.js)."""
        requests.post(f"{self.issuer}/__test__/tamper", json={"mode": mode}, timeout=5).raise_for_status()

    # -- a browser at the identity provider ---------------------------------------------------------------------
    def authorize(
        self, authorization_url: str, username: str, password: str, *, browser: requests.Session | None = None
    ) -> str:
        """Follow an authorization request through the login form; return the URL the provider redirects back to."""
        browser = browser or requests.Session()
        response = browser.get(authorization_url, allow_redirects=False, timeout=10)
        for _ in range(12):
            location = response.headers.get("Location")
            if response.status_code in (302, 303) and location:
                location = urljoin(response.url, location)
                if not location.startswith(self.issuer):
                    return location
                response = browser.get(location, allow_redirects=False, timeout=10)
            elif (
                response.status_code == 200 and "/interaction/" in response.url and 'id="idp-username"' in response.text
            ):
                if 'id="error"' in response.text:
                    raise AssertionError(f"the identity provider refused {username}'s password")
                login_url = response.url.rstrip("/")
                login_url = login_url if login_url.endswith("/login") else f"{login_url}/login"
                response = browser.post(
                    login_url, data={"username": username, "password": password}, allow_redirects=False, timeout=10
                )
            else:
                raise AssertionError(
                    f"unexpected answer {response.status_code} at {response.url}: {response.text[:300]}"
                )
        raise AssertionError("the identity provider never sent the browser back")
