"""`pam scoped`: scoped just-in-time access from the terminal (README, "From the terminal").

A requester asks inside a scope envelope of their policies for exactly the databases or collections, the permission
level and the time they need (`pam scoped request`); an approver sees exactly that and may narrow it (`pam scoped
approve ID --only shop.orders --level read`, with a fresh one-time code, as in the portal) or deny it; the grant is a
database user made for the request, used once as credentials (`pam scoped creds ID`) or through the gateway
(`pam db access --scoped ID`). Exit codes are those of `pam` (cli.main).
"""

from __future__ import annotations

import click

from cli.access import no_scoped_request, one_time_code, show_warnings, wait_for_request, with_fresh_code
from cli.api import EXIT_DENIED, Api, CliError
from cli.output import json_option, print_credentials, print_json, print_mine_and_queue, table, wants_json, when

PATH = "scoped/requests"
SEE_GRANT = "use it with `pam scoped creds {id}` (credentials, once) or `pam db access --scoped {id}`"


def scope_words(scope: dict | None) -> str:
    """`read on shop.orders, shop.customers` from a request's `requested` or `granted` scope."""
    if not scope:
        return "—"
    names = [
        item["db"] if not item.get("collection") else f"{item['db']}.{item['collection']}"
        for item in scope.get("resources") or []
    ]
    return f"{scope.get('level') or '?'} on {', '.join(names) or '?'}"


def _grant_words(row: dict) -> str:
    grant = row.get("grant")
    if not grant:
        return "—"
    if grant.get("error"):
        return f"{grant['state']}: {grant['error']}"
    return f"{grant['state']} until {when(grant.get('expires_at'))}"


def _rows(rows: list[dict]) -> list[tuple]:
    return [
        (
            r["id"],
            r["requester"],
            r["resource"],
            scope_words(r.get("granted") or r.get("requested")) + (" (narrowed)" if r.get("narrowed") else ""),
            r["duration"],
            r["state"],
            _grant_words(r),
            (r.get("reason") or "")[:40],
        )
        for r in rows
    ]


HEADERS = ["id", "requester", "resource", "scope", "duration", "state", "grant", "reason"]


def _resources(databases: tuple[str, ...], collections: tuple[str, ...]) -> list[str]:
    """What to ask for: `--database shop` (all of it), `--database shop --collection orders`, `--collection
    shop.orders`."""
    named = [c for c in collections if "." in c]
    bare = [c for c in collections if "." not in c]
    if bare and len(databases) != 1:
        raise click.UsageError("Name one --database for --collection NAME (or write --collection DB.NAME).")
    resources = named + [f"{databases[0]}.{c}" for c in bare]
    if not bare:
        resources = list(databases) + resources
    if not resources:
        raise click.UsageError("Ask for at least one --database (and optionally --collection).")
    return resources


def _envelope(api: Api, *, resource: str, level: str, policy: int | None) -> dict:
    """The caller's envelope on `resource` to ask inside (`policy` picks one when several offer `level`)."""
    envelopes = [e for e in api.get("scoped/envelopes")["results"] if e["resource"]["name"] == resource]
    if policy is not None:
        envelopes = [e for e in envelopes if e["policy"]["id"] == policy]
    if not envelopes:
        raise CliError(
            f"No access policy lets you ask for scoped access on {resource!r}"
            + (f" under policy {policy}" if policy is not None else "")
            + ". Ask your security team for a scope envelope; `pam scoped envelopes` lists yours.",
            EXIT_DENIED,
        )
    offering = [e for e in envelopes if level in [lv["name"] for lv in e["levels"]]]
    if len(offering) == 1:
        return offering[0]
    if not offering:
        levels = sorted({lv["name"] for e in envelopes for lv in e["levels"]})
        raise CliError(f"On {resource!r} you may ask for {', '.join(levels)}, not {level}.", EXIT_DENIED)
    names = ", ".join(f"{e['policy']['id']} ({e['policy']['name']})" for e in offering)
    raise CliError(f"Several of your policies offer {level} on {resource!r}: choose one with --policy ({names}).")


@click.group("scoped", invoke_without_command=True)
@json_option
@click.pass_context
def scoped_group(ctx, json_out):
    """Scoped just-in-time access: ask for exactly the databases, collections and level you need.

    `envelopes` (what you may ask for), `request`, `list`, `show`, `creds`, `cancel`; approvers: `approve`
    (optionally narrowed) and `deny`. Use a grant through the gateway with `pam db access --scoped ID`.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(scoped_list, json_out=json_out)


@scoped_group.command("envelopes")
@click.option("--resource", "-r", help="Only this resource.")
@click.option("--choices", is_flag=True, help="Also list the databases and collections the server holds in each.")
@json_option
@click.pass_context
def scoped_envelopes(ctx, resource, choices, json_out):
    """What you may ask for: each policy's resource, databases, collections, levels and longest duration."""
    api = Api.from_environment()
    rows = [e for e in api.get("scoped/envelopes")["results"] if not resource or e["resource"]["name"] == resource]
    if choices:
        for envelope in rows:
            envelope["choices"] = api.get(f"scoped/envelopes/{envelope['policy']['id']}/choices")
    if wants_json(ctx, json_out):
        print_json(rows)
        return
    table(
        ["policy", "resource", "databases", "collections", "levels", "max", "approval"],
        [
            (
                f"{e['policy']['id']} {e['policy']['name']}",
                e["resource"]["name"],
                ", ".join(e["databases"]),
                ", ".join(e["collections"]) or "(any)",
                ", ".join(lv["name"] for lv in e["levels"]),
                e["max_duration"],
                "needed" if e["approval_required"] else "no",
            )
            for e in rows
        ],
        empty="No scope envelopes: no policy lets you ask for scoped access.",
    )
    for envelope in rows if choices else []:
        click.echo(f"\nOn {envelope['resource']['name']} under policy {envelope['policy']['id']}:")
        for said in (envelope["choices"].get("error"), envelope["choices"].get("note")):
            if said:
                click.echo(f"  ({said})")
        for database in envelope["choices"]["databases"]:
            whole = " (whole database allowed)" if database["whole_database"] else ""
            click.echo(f"  {database['name']}{whole}: {', '.join(database['collections']) or '(no collections)'}")


@scoped_group.command("request")
@click.option("--resource", "-r", required=True, help="The resource (deployment) name.")
@click.option("--database", "databases", multiple=True, help="A database (repeat for more); all of it unless...")
@click.option("--collection", "collections", multiple=True, help="...only this collection (NAME or DB.NAME; repeat).")
@click.option("--level", "-l", required=True, help="The permission level: read, readWrite, dbAdmin or a custom one.")
@click.option("--duration", "-d", default="1h", show_default=True, help="How long: 30m, 2h…")
@click.option("--reason", required=True, help="Why you need it.")
@click.option("--policy", type=int, help="Which of your policies, when several offer this level on the resource.")
@click.option("--break-glass", is_flag=True, help="Emergency access without approval, where the policy allows it.")
@click.option("--wait", is_flag=True, help="Wait until it is decided.")
@json_option
@click.pass_context
def scoped_request(ctx, resource, databases, collections, level, duration, reason, policy, break_glass, wait, json_out):
    """Ask for LEVEL on databases or collections of a resource, for a while, with a reason."""
    resources = _resources(databases, collections)
    api = Api.from_environment()
    envelope = _envelope(api, resource=resource, level=level, policy=policy)
    body = {
        "policy": envelope["policy"]["id"],
        "resources": resources,
        "level": level,
        "duration": duration,
        "reason": reason,
        "break_glass": break_glass,
    }
    filed = api.post(PATH, body)
    show_warnings(filed)
    if wait and filed["state"] == "pending":
        click.echo(f"Asked for {scope_words(filed['requested'])} (scoped request #{filed['id']}).", err=True)
        filed = wait_for_request(api, filed["id"], path=PATH)
    if wants_json(ctx, json_out):
        print_json(filed)
        return
    _say(filed)


def _say(row: dict) -> None:
    """One request's state in words, and what to do next."""
    scope = scope_words(row.get("granted") or row.get("requested"))
    line = f"Scoped request #{row['id']} ({scope} on {row['resource']} for {row['duration']}) is {row['state']}"
    if row["state"] == "pending":
        click.echo(f"{line}: an approver decides (`pam scoped list` shows it).")
        return
    click.echo(line + (f", narrowed by {row['approver']}." if row.get("narrowed") else "."))
    grant = row.get("grant")
    if grant and grant.get("error"):
        click.echo(f"The grant failed: {grant['error']}", err=True)
    elif grant and grant["state"] == "active":
        click.echo(
            f"Database user {grant['username']} holds it until {when(grant['expires_at'])}: "
            + SEE_GRANT.format(id=row["id"])
            + "."
        )


@scoped_group.command("list")
@json_option
@click.pass_context
def scoped_list(ctx, json_out):
    """Your scoped requests (and, for approvers, the ones waiting for a decision)."""
    print_mine_and_queue(
        Api.from_environment(),
        PATH,
        what="scoped requests",
        headers=HEADERS,
        rows=_rows,
        as_json=wants_json(ctx, json_out),
    )


@scoped_group.command("show")
@click.argument("request_id", type=int)
@json_option
@click.pass_context
def scoped_show(ctx, request_id, json_out):
    """One scoped request: what was asked, what was granted, and its grant."""
    row = _call(Api.from_environment(), "GET", request_id)
    if wants_json(ctx, json_out):
        print_json(row)
        return
    click.echo(f"Scoped request #{row['id']} of {row['requester']} on {row['resource']}: {row['state']}")
    click.echo(f"  asked:   {scope_words(row['requested'])} for {row['duration']}, because “{row['reason']}”")
    if row.get("granted"):
        click.echo(f"  granted: {scope_words(row['granted'])}" + (" (narrowed)" if row.get("narrowed") else ""))
    if row.get("approver"):
        comment = f": {row['decision_comment']}" if row.get("decision_comment") else ""
        click.echo(f"  decided by {row['approver']}{comment}")
    click.echo(f"  grant:   {_grant_words(row)}")


def _call(api: Api, method: str, request_id: int, action: str = "", body: dict | None = None):
    """One call on scoped request `request_id`; an unknown (or someone else's) request said in words."""
    try:
        return api.call(method, f"{PATH}/{request_id}" + (f"/{action}" if action else ""), json=body)
    except CliError as exc:
        if exc.status == 404:
            raise no_scoped_request(request_id) from None
        raise


def _decide(api: Api, request_id: int, verb: str, body: dict, otp: str) -> dict:
    _call(api, "GET", request_id)  # 404 in words before asking for a code
    return _call(api, "POST", request_id, verb, {**body, "otp": one_time_code(otp)})


@scoped_group.command("approve")
@click.argument("request_id", type=int)
@click.option("--only", "only", multiple=True, help="Narrow to these databases or DB.COLLECTIONs (repeat).")
@click.option("--level", "-l", help="Narrow to a lesser level (e.g. read instead of readWrite).")
@click.option("--duration", "-d", help="Narrow to less time.")
@click.option("--comment", default="")
@click.option("--otp", default="", help="The one-time code (prompted for when left out).")
@json_option
@click.pass_context
def scoped_approve(ctx, request_id, only, level, duration, comment, otp, json_out):
    """Approve a scoped request, as asked or narrowed (never wider); needs a fresh one-time code."""
    body = {"comment": comment}
    for key, value in (("resources", list(only)), ("level", level), ("duration", duration)):
        if value:
            body[key] = value
    decided = _decide(Api.from_environment(), request_id, "approve", body, otp)
    if wants_json(ctx, json_out):
        print_json(decided)
        return
    narrowed = " (narrowed)" if decided.get("narrowed") else ""
    click.echo(
        f"Scoped request #{request_id} of {decided['requester']} is {decided['state']}: "
        f"{scope_words(decided['granted'])} for {decided['duration']}{narrowed}."
    )
    grant = decided.get("grant")
    if grant and grant.get("error"):
        click.echo(f"pam: the grant failed: {grant['error']}", err=True)


@scoped_group.command("deny")
@click.argument("request_id", type=int)
@click.option("--comment", default="")
@click.option("--otp", default="", help="The one-time code (prompted for when left out).")
@json_option
@click.pass_context
def scoped_deny(ctx, request_id, comment, otp, json_out):
    """Deny a scoped request; needs a fresh one-time code."""
    decided = _decide(Api.from_environment(), request_id, "deny", {"comment": comment}, otp)
    if wants_json(ctx, json_out):
        print_json(decided)
    else:
        click.echo(f"Scoped request #{request_id} of {decided['requester']} is {decided['state']}.")


@scoped_group.command("cancel")
@click.argument("request_id", type=int)
@json_option
@click.pass_context
def scoped_cancel(ctx, request_id, json_out):
    """Withdraw your pending request, or give up a grant (its database user and role are dropped now)."""
    cancelled = _call(Api.from_environment(), "POST", request_id, "cancel", {})
    if wants_json(ctx, json_out):
        print_json(cancelled)
    else:
        click.echo(f"Scoped request #{request_id} is {cancelled['state']}.")


@scoped_group.command("creds")
@click.argument("request_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["env", "json", "uri"]), default="env", show_default=True)
@json_option
@click.pass_context
def scoped_creds(ctx, request_id, fmt, json_out):
    """The credentials of the database user made for your approved request: shown once, keep them."""
    api = Api.from_environment()
    answer = with_fresh_code(lambda data: _call(api, "POST", request_id, "credentials", data), {})
    print_credentials("json" if wants_json(ctx, json_out) else fmt, answer, database=answer["auth_database"])
