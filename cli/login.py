"""`pam login`: the OAuth 2.0 device authorization grant (RFC 8628) against the portal.

The CLI asks for a device code, prints the short user code and the page where to confirm it (and opens the browser
when this machine has a display), then polls the token endpoint at the interval the portal asks for until the person
confirms (or denies, or the code expires). The tokens go to the private credentials file; no password is typed here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import webbrowser

import click
import requests

from cli.api import CLIENT_ID, DEVICE_GRANT, EXIT_DENIED, EXIT_LOGIN, TIMEOUT, Api, CliError, store_tokens, unreachable
from cli.config import Login, save_login
from cli.output import Live


def _has_display() -> bool:
    if os.environ.get("PAM_NO_BROWSER"):
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def device_login(portal: str, *, open_browser: bool = True, echo=click.echo) -> Login:
    portal = portal.rstrip("/")
    http = requests.Session()
    try:
        answer = http.post(f"{portal}/oauth/device-authorization/", data={"client_id": CLIENT_ID}, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise unreachable(portal, exc) from None
    if answer.status_code != 200:
        raise CliError(f"The portal at {portal} refused to start a sign-in ({answer.status_code}).", EXIT_LOGIN)
    codes = answer.json()
    user_code = codes["user_code"]
    shown = f"{user_code[:4]}-{user_code[4:]}" if len(user_code) == 8 else user_code
    minutes = max(1, int(codes.get("expires_in", 600)) // 60)
    echo(f"To sign in, open {codes['verification_uri']} and enter the code {shown}")
    complete = codes.get("verification_uri_complete") or codes["verification_uri"]
    echo(f"(or open {complete}). The code expires in {minutes} minutes.")
    if open_browser and _has_display():
        with contextlib.suppress(webbrowser.Error):
            webbrowser.open(complete)
    interval = max(1, int(codes.get("interval", 5)))
    deadline = time.monotonic() + int(codes.get("expires_in", 600))
    with Live() as live:
        while True:
            remaining = int(deadline - time.monotonic())
            left = f"{remaining // 60}:{remaining % 60:02d}"
            live.update(f"Waiting for you to confirm {shown} in the browser ({left} left)…")
            time.sleep(interval)
            try:
                response = http.post(
                    f"{portal}/oauth/token/",
                    data={"grant_type": DEVICE_GRANT, "device_code": codes["device_code"], "client_id": CLIENT_ID},
                    timeout=TIMEOUT,
                )
            except requests.RequestException as exc:
                raise unreachable(portal, exc) from None
            if response.status_code == 200:
                tokens = response.json()
                break
            try:
                error = response.json().get("error", "")
            except ValueError:
                error = ""
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5
                continue
            if error == "access_denied":
                raise CliError("The sign-in was denied in the browser.", EXIT_DENIED)
            if error in ("expired_token", "device_not_found"):
                raise CliError("The code expired or was already used: run `pam login` again.", EXIT_LOGIN)
            raise CliError(f"The portal refused the sign-in ({response.status_code} {error}).", EXIT_LOGIN)
    login = Login(portal=portal, access_token="", refresh_token="", expires_at=0.0)
    store_tokens(login, tokens)
    login.username = Api(portal, login=login).get("me")["username"]
    save_login(login)
    return login
