"""The portal's REST API as `pam` uses it: bearer auth from the stored login (refreshed before it lapses) or from
`PAM_TOKEN`, JSON in and out, and every failure turned into a :class:`CliError` with words and an exit code."""

from __future__ import annotations

import time
from typing import Any

import requests

from cli import __version__
from cli.config import Login, environment_token, load_login, save_login

CLIENT_ID = "pam-cli"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TIMEOUT = 15

# Exit codes (README, "From the terminal").
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_LOGIN = 3  # not signed in, login expired or revoked
EXIT_DENIED = 4  # no grant, forbidden, request denied
EXIT_ENDED = 5  # the session ended elsewhere (expiry, kill, revoke)
EXIT_UNREACHABLE = 6  # the portal or the gateway cannot be reached


class CliError(Exception):
    """A failure to tell the person in words; `exit_code` is what `pam` exits with; `field` names the API field."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR, *, field: str | None = None, status: int = 0):
        super().__init__(message)
        self.exit_code = exit_code
        self.field = field
        self.status = status


LOGIN_AGAIN = "Your login has expired or was revoked: run `pam login` again."


def _message(response: requests.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return f"the portal answered {response.status_code} {response.reason}", None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or response.reason), error.get("field")
    if isinstance(error, str):
        return str(body.get("error_description") or error), None
    return f"the portal answered {response.status_code} {response.reason}", None


class Api:
    """A signed-in client of one portal."""

    def __init__(self, portal: str, *, token: str = "", login: Login | None = None) -> None:
        self.portal = portal.rstrip("/")
        self.login = login
        self._token = token
        self.http = requests.Session()
        self.http.headers["User-Agent"] = f"pam-cli/{__version__}"

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_environment(cls) -> Api:
        """`PAM_PORTAL` + `PAM_TOKEN` when set, else the stored login; CliError (exit 3) when there is neither."""
        env = environment_token()
        if env is not None:
            return cls(env[0], token=env[1])
        login = load_login()
        if login is None:
            raise CliError("You are not signed in: run `pam login --portal URL` first.", EXIT_LOGIN)
        return cls(login.portal, login=login)

    # -- tokens ---------------------------------------------------------------------------------------------
    def token(self) -> str:
        if self.login is None:
            return self._token
        if self.login.expires_soon():
            self.refresh()
        return self.login.access_token

    def refresh(self) -> None:
        """Trade the refresh token for new tokens (the old one stops working); CliError (exit 3) when refused."""
        assert self.login is not None
        try:
            response = self.http.post(
                f"{self.portal}/oauth/token/",
                data={"grant_type": "refresh_token", "refresh_token": self.login.refresh_token, "client_id": CLIENT_ID},
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise unreachable(self.portal, exc) from None
        if response.status_code != 200:
            raise CliError(LOGIN_AGAIN, EXIT_LOGIN, status=response.status_code)
        store_tokens(self.login, response.json())
        save_login(self.login)

    # -- calls ----------------------------------------------------------------------------------------------
    def call(self, method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
        """One API call; the decoded JSON (None for 204). Refreshes once on 401; CliError otherwise."""
        url = f"{self.portal}/api/v1/{path.lstrip('/')}"
        for attempt in (1, 2):
            try:
                response = self.http.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers={"Authorization": f"Bearer {self.token()}"},
                    timeout=TIMEOUT,
                )
            except requests.RequestException as exc:
                raise unreachable(self.portal, exc) from None
            if response.status_code == 401 and self.login is not None and attempt == 1:
                self.refresh()
                continue
            break
        if response.status_code == 204:
            return None
        if response.ok:
            return response.json()
        message, field = _message(response)
        if response.status_code == 401:
            if self.login is None:
                raise CliError(f"The portal refused PAM_TOKEN: {message}", EXIT_LOGIN, status=401)
            raise CliError(LOGIN_AGAIN, EXIT_LOGIN, status=401)
        code = EXIT_DENIED if response.status_code in (403, 404) else EXIT_ERROR
        raise CliError(message, code, field=field, status=response.status_code)

    def get(self, path: str, **params) -> Any:
        return self.call("GET", path, params=params or None)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.call("POST", path, json=body or {})


def store_tokens(login: Login, tokens: dict) -> None:
    login.access_token = tokens["access_token"]
    login.refresh_token = tokens.get("refresh_token", login.refresh_token)
    login.expires_at = time.time() + float(tokens.get("expires_in", 300))


def unreachable(portal: str, exc: Exception) -> CliError:
    return CliError(f"Cannot reach the portal at {portal}: {type(exc).__name__}.", EXIT_UNREACHABLE)
