"""Template helpers for the portal layout: the approver badge and human durations."""

from django import template

from access.durations import format_duration
from access.selectors.requests import approval_queue, request_display_state
from access.services.requests import user_may_approve

register = template.Library()


@register.simple_tag(takes_context=True)
def approver_queue_count(context) -> int | None:
    """How many requests wait for this user's decision (None for non-approvers)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if not user_may_approve(user):
        return None
    return approval_queue(user).count()


@register.filter
def duration(value) -> str:
    # A bound form field's value is already text ("1h"): only timedeltas need formatting.
    return value if isinstance(value, str) else format_duration(value)


@register.filter
def display_state(access_request) -> str:
    return request_display_state(access_request)


@register.filter
def as_json(value) -> str:
    """A command summary as compact JSON text (escaped by the template like any string)."""
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


@register.simple_tag(takes_context=True)
def nav_active(context, *prefixes: str) -> str:
    """`active` when the current page's URL name starts with one of `prefixes` (for the top navigation)."""
    match = getattr(context.get("request"), "resolver_match", None)
    name = match.url_name if match else ""
    return "active" if name and any(name.startswith(prefix) for prefix in prefixes) else ""


@register.filter
def when(value) -> str:
    """A moment as the portal writes every time, to the second, in UTC: `2026-05-01 14:03:09` ("" for None)."""
    if not value:
        return ""
    from datetime import UTC

    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


@register.filter
def page_query(listing, number) -> str:
    """The query string of page `number` of a portal list, keeping its filter (portal.listing.Listing)."""
    return listing.query(number)


@register.filter
def latency(microseconds) -> str:
    """A command's latency as the live page writes it (portal.js): milliseconds with one decimal, `1.2 ms`."""
    if microseconds is None or microseconds == "":
        return ""
    return f"{int(microseconds) / 1000:.1f} ms"


@register.filter
def is_chatter(command) -> bool:
    """Whether a logged command is the client's own handshake (access.events.command_is_chatter)."""
    from access.events import command_is_chatter

    return command_is_chatter(command.command, command.database, command.collection)


@register.filter
def chatter_count(commands) -> int:
    return sum(1 for command in commands if is_chatter(command))
