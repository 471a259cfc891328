"""How `pam` prints: tables and a live status line for people, JSON for scripts."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterable, Sequence

import click

JSON_HELP = "Print JSON for scripts."


def json_option(function):
    """A command's `--json` flag (as `json_out`); `pam --json COMMAND` works too (wants_json)."""
    return click.option("--json", "json_out", is_flag=True, help=JSON_HELP)(function)


def wants_json(ctx: click.Context, json_out: bool) -> bool:
    return json_out or bool((ctx.find_root().obj or {}).get("json"))


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def print_credentials(fmt: str, answer: dict, *, database: str) -> None:
    """A lease's credentials as `fmt`: `json` (all of `answer`), `uri` (the connection string alone) or `env`
    (shell `export` lines: MONGODB_URI, MONGODB_USERNAME, MONGODB_PASSWORD, MONGODB_DATABASE, PAM_LEASE_ID,
    PAM_LEASE_EXPIRES). `answer` has lease_id, username, password, connection_string and expires_at."""
    if fmt == "json":
        print_json(answer)
    elif fmt == "uri":
        click.echo(answer["connection_string"])
    else:
        for name, value in (
            ("MONGODB_URI", answer["connection_string"]),
            ("MONGODB_USERNAME", answer["username"]),
            ("MONGODB_PASSWORD", answer["password"]),
            ("MONGODB_DATABASE", database),
            ("PAM_LEASE_ID", answer["lease_id"]),
            ("PAM_LEASE_EXPIRES", str(answer.get("expires_at", ""))),
        ):
            click.echo(f"export {name}={shell_quote(str(value))}")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "Nothing to show.") -> None:
    rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    if not rows:
        click.echo(empty)
        return
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    click.echo("  ".join(header.upper().ljust(widths[i]) for i, header in enumerate(headers)).rstrip())
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def print_mine_and_queue(api, path: str, *, what: str, headers: Sequence[str], rows, as_json: bool) -> None:
    """The caller's requests at `path` and, for an approver, the queue waiting for their decision (`rows` turns
    the API's answers into table rows); `{"mine", "to_decide"}` with --json."""
    mine = api.get(path)["results"]
    queue = api.get(path, queue=1)["results"] if api.get("me")["approver"] else []
    if as_json:
        print_json({"mine": mine, "to_decide": queue})
        return
    click.echo(f"Your {what}:")
    table(headers, rows(mine), empty="  none")
    if queue:
        click.echo("\nWaiting for your decision:")
        table(headers, rows(queue))


def when(value: str | None) -> str:
    """An API timestamp as `YYYY-MM-DD HH:MM:SS UTC` (or "—")."""
    if not value:
        return "—"
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds_left(value: str | None) -> int:
    if not value:
        return 0
    moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return max(0, int((moment - datetime.datetime.now(datetime.UTC)).total_seconds()))


def duration_words(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Live:
    """One status line rewritten in place on a terminal (plain lines, only when they change, elsewhere)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = ""

    def __enter__(self) -> Live:
        return self

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        elif text != self.last and _changed_beyond_clock(self.last, text):
            self.stream.write(text + "\n")
            self.stream.flush()
        self.last = text

    def clear(self) -> None:
        """Remove the line on a terminal (elsewhere the lines stay, as a log)."""
        if self.tty and self.last:
            self.stream.write("\r\033[K")
            self.stream.flush()
        self.last = ""

    def __exit__(self, *exc) -> None:
        self.clear()


def _changed_beyond_clock(before: str, after: str) -> bool:
    """Whether two status lines differ by more than their countdown (so logs get a line per real change)."""
    strip = str.maketrans("", "", "0123456789")
    return before.translate(strip) != after.translate(strip)
