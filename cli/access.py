"""Getting to a target from the terminal: find the caller's grant, ask and wait for approval when the policy needs it,
open a gateway session (a fresh one-time code when the target requires MFA), and serve it on a local proxy until
Ctrl+C, SIGTERM, mongosh's exit (`pam db connect`) or the session's end elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import secrets
import shlex
import shutil
import signal
import time
from dataclasses import dataclass

import click

from cli.api import EXIT_DENIED, EXIT_ENDED, EXIT_ERROR, EXIT_LOGIN, EXIT_OK, EXIT_UNREACHABLE, Api, CliError
from cli.localproxy import LOCAL_USER, LocalProxy, gateway_target
from cli.output import Live, duration_words, print_json, seconds_left, when

SESSION_POLL_SECONDS = 1.0
REQUEST_POLL_SECONDS = 2.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")

END_REASONS = {
    "expired": "The session expired.",
    "killed": "An administrator killed the session.",
    "account_revoked": "The account (or its access) was revoked.",
    "gateway_stopped": "The gateway stopped.",
    "gateway_lost": "The gateway stopped answering.",
    "ended_by_user": "The session was ended elsewhere (the portal or another pam).",
    "user_deactivated": "Your user was deactivated.",
    "user_deleted": "Your user was deleted.",
    "grant_removed": "Your access grant was removed (policy changed, group left or approved window over).",
}


def _info(message: str, *, json_out: bool) -> None:
    """Progress for people: on stderr, so that stdout stays parseable with --json."""
    click.echo(message, err=True)


# -- grants and requests ---------------------------------------------------------------------------------------
def find_entry(api: Api, *, kind: str, resource: str, name: str) -> dict | None:
    """The caller's catalogue entry for `name` on `resource` (an account or a role), usable ones first."""
    wanted = {"kind": kind, "resource": resource, "name": name}
    entries = [
        entry
        for entry in api.get("catalogue")["results"]
        if all(entry["target"][key] == value for key, value in wanted.items())
    ]
    entries.sort(key=lambda entry: (not entry["usable_now"], entry["approval_required"]))
    return entries[0] if entries else None


def no_grant(kind: str, resource: str, name: str) -> CliError:
    what = "account" if kind == "account" else "role"
    return CliError(
        f"No access policy gives you the {what} {name!r} on {resource!r}. Ask your security team for a policy "
        "(they grant it in the portal's admin); `pam requests new` works once a policy names you.",
        EXIT_DENIED,
    )


def no_scoped_request(request_id: int) -> CliError:
    words = f"There is no scoped request #{request_id} you may see: `pam scoped list` lists yours."
    return CliError(words, EXIT_DENIED)


def ensure_grant(api: Api, entry: dict, *, duration: str, reason: str | None, json_out: bool) -> None:
    """Return once the entry's target is usable: file a request when approval is needed, and wait for it."""
    if entry["usable_now"]:
        return
    target = f"{entry['target']['name']} on {entry['target']['resource']}"
    approvers = ", ".join(entry.get("approvers") or []) or "an approver"
    if not entry["approval_required"]:
        raise CliError(f"Your policy for {target} does not let you use it now.", EXIT_DENIED)
    request_id = entry.get("pending_request")
    if request_id is None:
        if not reason:
            raise CliError(
                f"{target} needs an approved request: run again with --reason TEXT to ask {approvers}.", EXIT_DENIED
            )
        filed = api.post("requests", {"policy": entry["policy"]["id"], "reason": reason, "duration": duration})
        request_id = filed["id"]
        _info(f"Asked for access to {target} (request #{request_id}); approvers: {approvers}.", json_out=json_out)
    else:
        _info(f"Waiting on your pending request #{request_id} for {target}.", json_out=json_out)
    wait_for_request(api, request_id)


def wait_for_request(api: Api, request_id: int, *, path: str = "requests") -> dict:
    """Poll a request (`path`: "requests", or "scoped/requests") until it is decided; the approved request, or
    CliError (exit 4) when denied or withdrawn."""
    started = time.monotonic()
    with Live() as live:
        while True:
            data = api.get(f"{path}/{request_id}")
            state = data["state"]
            if state == "approved":
                live.clear()
                click.echo(f"Request #{request_id} approved by {data.get('approver') or 'break-glass'}.", err=True)
                return data
            if state != "pending":
                by = f" by {data['approver']}" if data.get("approver") else ""
                comment = f": {data['decision_comment']}" if data.get("decision_comment") else ""
                raise CliError(f"Request #{request_id} was {state}{by}{comment}.", EXIT_DENIED)
            approvers = ", ".join(data.get("approvers") or []) or "an approver"
            waited = duration_words(int(time.monotonic() - started))
            live.update(f"Request #{request_id}: pending, waiting for {approvers} to approve ({waited})…")
            time.sleep(REQUEST_POLL_SECONDS)


def show_warnings(answer: dict) -> None:
    """What the portal changed from what was asked (a capped duration, ...), on stderr."""
    for warning in answer.get("warnings") or []:
        click.echo(f"pam: note: {warning}", err=True)


def one_time_code(given: str = "") -> str:
    """The one-time code: `given` (--otp), else $PAM_OTP, else asked for on the terminal."""
    code = given or os.environ.get("PAM_OTP") or click.prompt("One-time code from your authenticator app", err=True)
    return code.strip()


def with_fresh_code(call, body: dict):
    """Run `call(body)`; when the API asks for a one-time code (field `otp`), prompt for one and try once more."""
    try:
        return call(body)
    except CliError as exc:
        if exc.field != "otp":
            raise
        click.echo(str(exc), err=True)
        return call({**body, "otp": one_time_code()})


# -- the session -----------------------------------------------------------------------------------------------
@dataclass
class AccessOptions:
    resource: str | None
    account: str | None
    duration: str = "1h"
    reason: str | None = None
    read_only: bool = False
    databases: tuple[str, ...] = ()
    port: int = 0
    listen: str = "127.0.0.1"
    json_out: bool = False
    connect: bool = False
    mongosh: str = ""
    mongosh_args: tuple[str, ...] = ()
    scoped: int | None = None  # a scoped request's grant instead of an account
    duration_given: bool = True


def open_scoped_session(api: Api, options: AccessOptions) -> tuple[dict, str]:
    """Open a gateway session through the user made for the caller's approved scoped request `options.scoped`."""
    request_id = options.scoped
    try:
        asked = api.get(f"scoped/requests/{request_id}")
    except CliError as exc:
        if exc.status == 404:
            raise no_scoped_request(request_id) from None
        raise
    if asked["state"] == "pending":
        _info(f"Waiting on your pending scoped request #{request_id}.", json_out=options.json_out)
        asked = wait_for_request(api, request_id, path="scoped/requests")
    if not asked.get("grant") or asked["grant"]["state"] != "active":
        state = asked["grant"]["state"] if asked.get("grant") else asked["state"]
        raise CliError(f"Scoped request #{request_id} has no active grant ({state}): ask again.", EXIT_DENIED)
    body = {"duration": options.duration} if options.duration_given else {}
    opened = with_fresh_code(lambda data: api.post(f"scoped/requests/{request_id}/session", data), body)
    show_warnings(opened)
    secret = opened.pop("secret")
    session = api.get(f"sessions/{opened['session_id']}")  # the gateway's address, the read-only flag, ...
    session["account"] = {"name": f"{asked['resource']} (scoped request #{request_id})"}
    return session, secret


def open_session(api: Api, options: AccessOptions) -> tuple[dict, str]:
    """Open the gateway session (after the grant is settled); returns its data and its secret (kept in memory)."""
    if options.scoped is not None:
        return open_scoped_session(api, options)
    entry = find_entry(api, kind="account", resource=options.resource, name=options.account)
    if entry is None:
        raise no_grant("account", options.resource, options.account)
    ensure_grant(api, entry, duration=options.duration, reason=options.reason, json_out=options.json_out)
    body = {
        "account": entry["target"]["id"],
        "duration": options.duration,
        "read_only": options.read_only,
        "databases": list(options.databases),
    }
    opened = with_fresh_code(lambda data: api.post("sessions", data), body)
    show_warnings(opened)
    secret = opened.pop("secret")
    for key in ("connection_string", "mongosh"):
        opened.pop(key, None)  # they carry the secret: never printed
    return opened, secret


def _mongosh(options: AccessOptions) -> str:
    """The mongosh `pam db connect` runs (`--mongosh`, `PAM_MONGOSH`, else PATH); CliError before any session."""
    mongosh = options.mongosh or os.environ.get("PAM_MONGOSH") or shutil.which("mongosh")
    if not mongosh:
        raise CliError("mongosh is not on PATH: install it, or use `pam db access` with any client.", EXIT_ERROR)
    return mongosh


def run_access(api: Api, options: AccessOptions) -> int:
    if options.connect:
        options.mongosh = _mongosh(options)  # checked before a session is opened for nothing
    session, secret = open_session(api, options)
    try:
        return asyncio.run(_serve(api, session, secret, options))
    finally:
        del secret


def _end_session(api: Api, session_id: str) -> dict | None:
    with contextlib.suppress(CliError):
        return api.post(f"sessions/{session_id}/end")
    return None


async def _watch(api: Api, session_id: str) -> tuple[int, str]:
    """Poll the session's state; return (exit code, words) once it ended elsewhere or the login stopped working."""
    warned = False
    while True:
        await asyncio.sleep(SESSION_POLL_SECONDS)
        try:
            data = await asyncio.to_thread(api.get, f"sessions/{session_id}")
        except CliError as exc:
            if exc.exit_code == EXIT_UNREACHABLE:
                if not warned:
                    click.echo(f"pam: {exc} Retrying…", err=True)
                    warned = True
                continue
            if exc.exit_code == EXIT_LOGIN:
                return EXIT_LOGIN, str(exc)
            if exc.status == 404:
                return EXIT_ENDED, "The session is gone."
            raise
        if data["state"] != "open":
            reason = data.get("end_reason") or ""
            return EXIT_ENDED, END_REASONS.get(reason, f"The session ended ({reason or 'no reason given'}).")


def _describe(session: dict, uri: str, options: AccessOptions, password: str | None) -> None:
    account = (session.get("account") or {}).get("name") or options.account
    until = when(session.get("expires_at"))
    mode = ", read-only" if session.get("read_only") else ""
    lines = [
        f"Session {session['session_id']} on {account} is open until {until}{mode}.",
        f"Local proxy: {uri}",
        f"Connect with: mongosh {shlex.quote(uri)}",
    ]
    if password is not None:
        lines.append(f"Clients log in as user {LOCAL_USER!r} with this local password (shown once): {password}")
    if not options.connect:
        lines.append("Press Ctrl+C to end the session.")
    for line in lines:
        click.echo(line)


async def _serve(api: Api, session: dict, secret: str, options: AccessOptions) -> int:
    loop = asyncio.get_running_loop()
    session_id = session["session_id"]
    target = gateway_target(address=session["gateway"]["address"], username=session["username"], secret=secret)
    password = None if options.listen in LOOPBACK else secrets.token_urlsafe(18)
    expires_at = datetime.datetime.fromisoformat(str(session["expires_at"]).replace("Z", "+00:00"))
    proxy = LocalProxy(gateway=target, expires_at=expires_at, host=options.listen, port=options.port, password=password)
    try:
        port = await proxy.start()
    except OSError as exc:
        await asyncio.to_thread(_end_session, api, session_id)
        where = f"{options.listen}:{options.port}"
        raise CliError(f"Cannot listen on {where}: {exc.strerror or exc}.", EXIT_ERROR) from None
    host = "127.0.0.1" if options.listen in LOOPBACK else options.listen
    uri = f"mongodb://{host}:{port}/?directConnection=true"
    if options.json_out:
        print_json({**session, "local_uri": uri, "local_port": port, "local_user": LOCAL_USER if password else None})
    else:
        _describe(session, uri, options, password)
    click.get_text_stream("stdout").flush()

    stop = asyncio.Event()
    stopped_by: list[str] = []

    def on_signal(name: str) -> None:
        stopped_by.append(name)
        proxy.close_all(f"{name}: session ending")  # connections close at once, before the API call
        stop.set()

    signals = [signal.SIGTERM, signal.SIGHUP] + ([] if options.connect else [signal.SIGINT])
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    if options.connect:
        loop.add_signal_handler(signal.SIGINT, lambda: None)  # mongosh, in the foreground, handles Ctrl+C

    watcher = asyncio.ensure_future(_watch(api, session_id))
    waiters = {asyncio.ensure_future(stop.wait()): "signal", watcher: "watch"}
    child = None
    if options.connect:
        child = await asyncio.create_subprocess_exec(options.mongosh, uri, *options.mongosh_args)
        waiters[asyncio.ensure_future(child.wait())] = "child"
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    which = waiters[next(iter(done))]
    for task in pending:
        task.cancel()
    for sig in [*signals, signal.SIGINT]:
        loop.remove_signal_handler(sig)

    if which == "watch":
        code, words = watcher.result()
        await proxy.stop(words)
        if child is not None and child.returncode is None:
            child.terminate()
            await child.wait()
        click.echo(f"pam: {words}", err=True)
        return code
    if child is not None and child.returncode is None:
        child.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.wait(), 5)
    await proxy.stop("session ending")
    ended = await asyncio.to_thread(_end_session, api, session_id)
    state = (ended or {}).get("end_reason") or "ended"
    click.echo(f"Session {session_id} ended ({state.replace('_', ' ')}).", err=True)
    if which == "child" and child is not None:
        return child.returncode or EXIT_OK
    return EXIT_OK


# -- leases -----------------------------------------------------------------------------------------------------
def issue_lease(api: Api, *, resource: str, role: str, ttl: str | None, reason: str | None, json_out: bool) -> dict:
    """A lease on `role` (after the grant is settled); the Vault-shaped answer with the password."""
    entry = find_entry(api, kind="role", resource=resource, name=role)
    if entry is not None:
        ensure_grant(api, entry, duration=ttl or "1h", reason=reason, json_out=json_out)
    body = {"ttl": ttl} if ttl else {}
    try:
        issued = with_fresh_code(lambda data: api.post(f"mongodb/{resource}/creds/{role}", data), body)
        show_warnings(issued)
        return issued
    except CliError as exc:
        if exc.status == 404 and entry is None:
            raise no_grant("role", resource, role) from None
        raise


def lease_left(lease: dict) -> str:
    """The time an active lease has left ("—" once it ended)."""
    if lease.get("state") != "active":
        return "—"
    return duration_words(seconds_left(lease.get("expires_at")))
