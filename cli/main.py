"""`pam`: the command line of the MongoDB access portal (README, "From the terminal").

Exit codes: 0 done; 1 an error (said in words); 2 bad usage; 3 not signed in or the login expired ("run pam login
again"); 4 no grant, forbidden or a request denied; 5 the session ended elsewhere (expiry, kill, revoke); 6 the
portal cannot be reached. `pam exec` and `pam db connect` return their command's exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import click

from cli import __version__
from cli.access import (
    AccessOptions,
    find_entry,
    issue_lease,
    lease_left,
    no_grant,
    one_time_code,
    run_access,
    show_warnings,
    wait_for_request,
)
from cli.api import Api, CliError
from cli.config import credentials_path, forget_login, load_login
from cli.login import device_login
from cli.output import (
    JSON_HELP,
    duration_words,
    json_option,
    print_credentials,
    print_json,
    print_mine_and_queue,
    table,
    when,
)
from cli.output import wants_json as _json
from cli.scoped import scoped_group


class PamGroup(click.Group):
    """Turns a CliError into its words (or JSON) and its exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CliError as exc:
            if (ctx.obj or {}).get("json") or "--json" in sys.argv:
                print_json({"error": {"message": str(exc), "exit_code": exc.exit_code}})
            click.echo(f"pam: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=PamGroup)
@click.option("--json", "json_out", is_flag=True, help=JSON_HELP)
@click.version_option(__version__, prog_name="pam")
@click.pass_context
def cli(ctx, json_out):
    """Reach MongoDB through the access portal: sign in, open access, use leases and requests."""
    ctx.obj = {"json": json_out}


# -- login ----------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--portal", envvar="PAM_PORTAL", help="The portal's address, e.g. https://pam.example.com.")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the address.")
@json_option
@click.pass_context
def login(ctx, portal, no_browser, json_out):
    """Sign in with your browser (device code, password and second factor)."""
    stored = load_login()
    portal = portal or (stored.portal if stored else None)
    if not portal:
        raise CliError("Which portal? Run `pam login --portal https://pam.example.com` (or set PAM_PORTAL).")
    done = device_login(portal, open_browser=not no_browser, echo=lambda text: click.echo(text, err=True))
    if _json(ctx, json_out):
        print_json({"portal": done.portal, "username": done.username, "credentials": str(credentials_path())})
    else:
        click.echo(f"Signed in to {done.portal} as {done.username}.")


@cli.command()
@json_option
@click.pass_context
def logout(ctx, json_out):
    """Revoke this terminal's login and forget it."""
    stored = load_login()
    if stored is None:
        raise CliError("You are not signed in.", 3)
    revoked = True
    try:
        Api(stored.portal, login=stored).post("cli/logout")
    except CliError:
        revoked = False  # already expired or revoked: forgetting it is all there is left to do
    forget_login()
    if _json(ctx, json_out):
        print_json({"revoked": revoked})
    else:
        click.echo("Signed out: this terminal's login is revoked." if revoked else "Signed out (the login had lapsed).")


@cli.command()
@json_option
@click.pass_context
def whoami(ctx, json_out):
    """Who you are signed in as, and where."""
    api = Api.from_environment()
    me = api.get("me")
    if _json(ctx, json_out):
        print_json({**me, "portal": api.portal})
    else:
        click.echo(f"{me['username']} on {api.portal} ({'API token' if me['auth'] == 'api_token' else 'pam login'})")


@cli.command()
@json_option
@click.pass_context
def catalogue(ctx, json_out):
    """What you may use: accounts (`pam db access`), roles (`pam creds`) and scope envelopes (`pam scoped`)."""
    rows = Api.from_environment().get("catalogue")["results"]
    if _json(ctx, json_out):
        print_json(rows)
        return

    def status(entry: dict) -> str:
        if entry["usable_now"]:
            until = f" until {when(entry['usable_until'])}" if entry.get("usable_until") else ""
            return "usable now" + until
        if entry.get("pending_request"):
            return f"request #{entry['pending_request']} pending"
        return "needs approval" if entry["approval_required"] else "not now"

    use = {"account": "pam db access -r {r} -a {n}", "role": "pam creds {n} -r {r}", "scoped": "pam scoped envelopes"}
    table(
        ["kind", "resource", "name", "status", "max", "approvers", "use with"],
        [
            (
                e["target"]["kind"],
                e["target"]["resource"],
                e["target"]["name"] or "(you choose)",
                status(e),
                e["max_duration"],
                ", ".join(e.get("approvers") or []) or "—",
                use.get(e["target"]["kind"], "").format(r=e["target"]["resource"], n=e["target"]["name"]),
            )
            for e in rows
        ],
        empty="Nothing: no access policy names you yet. Ask your security team.",
    )


# -- databases ------------------------------------------------------------------------------------------------
@cli.group()
def db():
    """Open access to a database account through a local proxy."""


def _access_options(function):
    options = [
        click.option("--resource", "-r", help="The resource (deployment) name."),
        click.option("--account", "-a", help="The account name on that resource."),
        click.option(
            "--scoped",
            type=int,
            metavar="ID",
            help="Instead of an account: the grant of your scoped request ID (`pam scoped request`).",
        ),
        click.option("--duration", "-d", default="1h", show_default=True, help="How long: 90s, 30m, 1h…"),
        click.option("--reason", help="Why (needed when access must be approved)."),
        click.option("--read-only", is_flag=True, help="Refuse writes in this session."),
        click.option("--database", "databases", multiple=True, help="Only this database (repeat for more)."),
        click.option("--port", "-p", type=int, default=0, help="Local port (default: any free port)."),
        click.option(
            "--listen",
            default="127.0.0.1",
            show_default=True,
            help="Address to listen on; anything but loopback demands a local password, printed once.",
        ),
        json_option,
    ]
    for option in reversed(options):
        function = option(function)
    return function


@db.command("access")
@_access_options
@click.pass_context
def db_access(ctx, resource, account, scoped, duration, reason, read_only, databases, port, listen, json_out):
    """Open a session and serve it on 127.0.0.1 for any client, with no password; Ctrl+C ends it.

    Either `--resource R --account A`, or `--scoped ID` for the grant of an approved scoped request.
    """
    options = AccessOptions(
        resource, account, duration, reason, read_only, databases, port, listen, _json(ctx, json_out)
    )
    options = _target_of(ctx, options, scoped)
    ctx.exit(run_access(Api.from_environment(), options))


def _target_of(ctx: click.Context, options: AccessOptions, scoped: int | None) -> AccessOptions:
    """Check that the command names one target: an account on a resource, or a scoped request's grant."""
    if scoped is not None:
        if options.account:
            raise click.UsageError("Give either --account (with --resource) or --scoped, not both.")
        if options.read_only or options.databases:
            raise click.UsageError("A scoped grant is limited to what was granted: drop --read-only and --database.")
        options.scoped = scoped
        options.duration_given = ctx.get_parameter_source("duration") != click.core.ParameterSource.DEFAULT
    elif not (options.resource and options.account):
        raise click.UsageError("Name what to open: --resource R --account A, or --scoped ID.")
    return options


@db.command("connect", context_settings={"ignore_unknown_options": True})
@_access_options
@click.option("--mongosh", "mongosh", default="", help="The mongosh to run (default: mongosh on PATH).")
@click.argument("mongosh_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def db_connect(
    ctx,
    resource,
    account,
    scoped,
    duration,
    reason,
    read_only,
    databases,
    port,
    listen,
    json_out,
    mongosh,
    mongosh_args,
):
    """The same, then run mongosh on it in the foreground; the session ends when mongosh exits.

    Arguments after `--` go to mongosh, e.g. `pam db connect -r R -a A -- --eval 'db.stats()'`.
    """
    options = AccessOptions(
        resource,
        account,
        duration,
        reason,
        read_only,
        databases,
        port,
        listen,
        _json(ctx, json_out),
        connect=True,
        mongosh=mongosh,
        mongosh_args=tuple(mongosh_args),
    )
    options = _target_of(ctx, options, scoped)
    ctx.exit(run_access(Api.from_environment(), options))


# -- leases ---------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("role")
@click.option("--resource", "-r", required=True, help="The resource the role belongs to.")
@click.option("--ttl", help="How long the lease lives (e.g. 15m); default: the role's.")
@click.option("--reason", help="Why (needed when the role must be approved).")
@click.option("--format", "fmt", type=click.Choice(["env", "json", "uri"]), default="env", show_default=True)
@json_option
@click.pass_context
def creds(ctx, role, resource, ttl, reason, fmt, json_out):
    """Issue a lease on ROLE: a database user and password for scripts."""
    answer = issue_lease(
        Api.from_environment(), resource=resource, role=role, ttl=ttl, reason=reason, json_out=_json(ctx, json_out)
    )
    data = answer["data"]
    print_credentials(
        "json" if _json(ctx, json_out) else fmt,
        {"lease_id": answer["lease_id"], "lease_duration": answer["lease_duration"], **data},
        database=data["db"],
    )


@cli.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("role")
@click.option("--resource", "-r", required=True, help="The resource the role belongs to.")
@click.option("--ttl", default="2m", show_default=True, help="The lease's TTL, renewed while the command runs.")
@click.option("--reason", help="Why (needed when the role must be approved).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx, role, resource, ttl, reason, command):
    """Run COMMAND with MONGODB_URI and PAM_LEASE_ID of a fresh lease; revoke it when COMMAND exits."""
    api = Api.from_environment()
    answer = issue_lease(api, resource=resource, role=role, ttl=ttl, reason=reason, json_out=False)
    lease_id, data = answer["lease_id"], answer["data"]
    env = {**os.environ, "MONGODB_URI": data["connection_string"], "PAM_LEASE_ID": lease_id}
    env.pop("PAM_TOKEN", None)  # the child gets a lease, not the caller's portal access
    period = max(5.0, int(answer.get("lease_duration") or 120) / 3)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(period):
            try:
                api.call("PUT", "sys/leases/renew", json={"lease_id": lease_id, "increment": ttl})
            except CliError as exc:
                click.echo(f"pam: could not renew lease {lease_id}: {exc}", err=True)

    try:
        child = subprocess.Popen(list(command), env=env)
    except OSError as exc:
        api.call("PUT", "sys/leases/revoke", json={"lease_id": lease_id})
        raise CliError(f"Cannot run {command[0]}: {exc.strerror or exc}.", 127) from None
    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda number, _frame: child.send_signal(number)) for sig in forwarded}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the child directly
    try:
        code = child.wait()
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            api.call("PUT", "sys/leases/revoke", json={"lease_id": lease_id})
        except CliError as exc:
            click.echo(f"pam: could not revoke lease {lease_id} (it expires within {ttl}): {exc}", err=True)
    ctx.exit(code if code >= 0 else 128 - code)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include ended leases.")
@json_option
@click.pass_context
def leases(ctx, show_all, json_out):
    """Your leases."""
    rows = Api.from_environment().get("me/leases", **({"all": 1} if show_all else {}))["results"]
    if _json(ctx, json_out):
        print_json(rows)
        return
    table(
        ["lease", "resource", "role", "user", "state", "expires", "left"],
        [
            (r["lease_id"], r["resource"], r["role"], r["username"], r["state"], when(r["expires_at"]), lease_left(r))
            for r in rows
        ],
        empty="No live leases.",
    )


@cli.command()
@click.argument("lease_id")
@click.option("--increment", help="By how much (e.g. 30m); default: the role's TTL.")
@json_option
@click.pass_context
def renew(ctx, lease_id, increment, json_out):
    """Extend a lease (never past its maximum)."""
    body = {"lease_id": lease_id, **({"increment": increment} if increment else {})}
    answer = Api.from_environment().call("PUT", "sys/leases/renew", json=body)
    show_warnings(answer)
    if _json(ctx, json_out):
        print_json(answer)
    else:
        left = duration_words(int(answer["lease_duration"]))
        click.echo(f"Lease {lease_id} renewed: {left} left (a lease renews to the increment from now).")


@cli.command()
@click.argument("lease_id")
@json_option
@click.pass_context
def revoke(ctx, lease_id, json_out):
    """Revoke a lease now (its database user is dropped)."""
    answer = Api.from_environment().call("PUT", "sys/leases/revoke", json={"lease_id": lease_id})
    if _json(ctx, json_out):
        print_json(answer or {"lease_id": lease_id, "state": "revoked"})
    elif answer:
        click.echo(f"Lease {lease_id}: {answer['message']}")
    else:
        click.echo(f"Lease {lease_id} revoked.")


# -- sessions -------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include ended sessions.")
@json_option
@click.pass_context
def sessions(ctx, show_all, json_out):
    """Your gateway sessions."""
    rows = Api.from_environment().get("sessions", limit=100)["results"]
    if not show_all:
        rows = [row for row in rows if row["state"] == "open"]
    if _json(ctx, json_out):
        print_json(rows)
        return
    table(
        ["session", "account", "state", "started", "expires", "ended", "commands"],
        [
            (
                r["session_id"],
                (r.get("account") or {}).get("name"),
                r["state"] + (f" ({r['end_reason'].replace('_', ' ')})" if r.get("end_reason") else ""),
                when(r["started_at"]),
                when(r["expires_at"]),
                when(r.get("ended_at")),
                r["commands_count"],
            )
            for r in rows
        ],
        empty="No open sessions." if not show_all else "No sessions.",
    )


# -- requests -------------------------------------------------------------------------------------------------
def _request_rows(rows):
    return [
        (
            r["id"],
            r["requester"],
            f"{r['target']['name']} on {r['target']['resource']}",
            r["duration"],
            r["state"],
            r.get("approver") or ", ".join(r.get("approvers") or []),
            r["reason"][:40],
        )
        for r in rows
    ]


REQUEST_HEADERS = ["id", "requester", "target", "duration", "state", "approver(s)", "reason"]


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def requests(ctx, json_out):
    """Your access requests (and, for approvers, the queue); `new`, `approve`, `deny`, `cancel`."""
    if ctx.invoked_subcommand is not None:
        return
    print_mine_and_queue(
        Api.from_environment(),
        "requests",
        what="requests",
        headers=REQUEST_HEADERS,
        rows=_request_rows,
        as_json=_json(ctx, json_out),
    )


@requests.command("new")
@click.option("--resource", "-r", required=True)
@click.option("--account", "-a", help="An account (gateway sessions).")
@click.option("--role", help="A dynamic role (leases).")
@click.option("--reason", required=True, help="Why you need it.")
@click.option("--duration", "-d", default="1h", show_default=True)
@click.option("--break-glass", is_flag=True, help="Emergency access without approval, where the policy allows it.")
@click.option("--wait", is_flag=True, help="Wait until it is decided.")
@json_option
@click.pass_context
def requests_new(ctx, resource, account, role, reason, duration, break_glass, wait, json_out):
    """Ask for access to an account or a role."""
    if bool(account) == bool(role):
        raise click.UsageError("Give either --account or --role.")
    kind, name = ("account", account) if account else ("role", role)
    api = Api.from_environment()
    entry = find_entry(api, kind=kind, resource=resource, name=name)
    if entry is None:
        raise no_grant(kind, resource, name)
    body = {"policy": entry["policy"]["id"], "reason": reason, "duration": duration, "break_glass": break_glass}
    filed = api.post("requests", body)
    if wait and filed["state"] == "pending":
        filed = wait_for_request(api, filed["id"])
    if _json(ctx, json_out):
        print_json(filed)
    else:
        approvers = ", ".join(filed.get("approvers") or []) or "an approver"
        pending = f"; approvers: {approvers}." if filed["state"] == "pending" else "."
        click.echo(f"Request #{filed['id']} is {filed['state']}{pending}")


def _decide(ctx, request_id: int, comment: str, otp: str, json_out: bool, verb: str) -> None:
    api = Api.from_environment()
    api.get(f"requests/{request_id}")  # 404 in words before asking for a code
    decided = api.post(f"requests/{request_id}/{verb}", {"comment": comment, "otp": one_time_code(otp)})
    if _json(ctx, json_out):
        print_json(decided)
    else:
        click.echo(f"Request #{request_id} of {decided['requester']} is {decided['state']}.")


@requests.command("approve")
@click.argument("request_id", type=int)
@click.option("--comment", default="")
@click.option("--otp", default="", help="The one-time code (prompted for when left out).")
@json_option
@click.pass_context
def requests_approve(ctx, request_id, comment, otp, json_out):
    """Approve someone's request (needs a fresh one-time code)."""
    _decide(ctx, request_id, comment, otp, _json(ctx, json_out), "approve")


@requests.command("deny")
@click.argument("request_id", type=int)
@click.option("--comment", default="")
@click.option("--otp", default="", help="The one-time code (prompted for when left out).")
@json_option
@click.pass_context
def requests_deny(ctx, request_id, comment, otp, json_out):
    """Deny someone's request (needs a fresh one-time code)."""
    _decide(ctx, request_id, comment, otp, _json(ctx, json_out), "deny")


@requests.command("cancel")
@click.argument("request_id", type=int)
@json_option
@click.pass_context
def requests_cancel(ctx, request_id, json_out):
    """Withdraw your own request."""
    cancelled = Api.from_environment().post(f"requests/{request_id}/cancel")
    if _json(ctx, json_out):
        print_json(cancelled)
    else:
        click.echo(f"Request #{request_id} is {cancelled['state']}.")


cli.add_command(scoped_group)


def main(argv: list[str] | None = None) -> int:
    try:
        return cli.main(args=argv, prog_name="pam", standalone_mode=True) or 0
    except KeyboardInterrupt:
        click.echo("", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
