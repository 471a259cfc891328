"""Gateway sessions in the portal: open one on an account, see its one-time secret, watch it live, end it."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from access.models import Session
from access.models.sessions import SessionState
from access.selectors.sessions import (
    accounts_granted_to,
    session_commands,
    session_connection_info,
    session_gateway_address,
    sessions_of,
)
from access.services.usage import access_session_end, access_session_open
from portal.forms import SessionForm
from portal.guards import grant_or_redirect, mfa_fresh, portal_view
from portal.listing import listing

RECENT_COMMANDS = 100


def _own_session(request, public_id) -> Session:
    """The user's own session, or 404 (the portal never shows anyone else's; staff watch in the admin)."""
    return get_object_or_404(sessions_of(request.user), public_id=public_id)


@never_cache
@portal_view
def account_use(request, account_id: int):
    """Open a gateway session on an account the user holds a policy for; a fresh code first when MFA is required."""
    account = get_object_or_404(accounts_granted_to(request.user), pk=account_id)
    grant, elsewhere = grant_or_redirect(request, account=account)
    if elsewhere:
        return elsewhere
    form = SessionForm(
        request.POST or None,
        initial={"duration": grant.cap(min(grant.max_duration, timedelta(hours=1))), "read_only": grant.read_only},
    )
    if request.method == "POST" and form.is_valid():
        try:
            opened = access_session_open(
                user=request.user,
                account=account,
                duration=form.cleaned_data["duration"],
                read_only=form.cleaned_data["read_only"],
                mfa_verified=mfa_fresh(request),
                databases=form.cleaned_data.get("databases") or [],
            )
        except (PermissionDenied, ValidationError) as exc:
            form.add_error(None, " ".join(getattr(exc, "messages", [str(exc)])))
        else:
            for warning in opened.warnings:
                messages.warning(request, warning)
            # The secret exists only in this response: the page is not cached and its URL becomes the session's.
            return _session_page(request, opened.session, secret=opened.secret)
    return render(request, "portal/account_use.html", {"account": account, "grant": grant, "form": form})


def _session_page(request, session: Session, *, secret: str | None = None):
    commands = list(session_commands(session).order_by("-id")[:RECENT_COMMANDS])[::-1]
    context = {
        "session": session,
        "secret": secret,
        "connection": session_connection_info(session, secret) if secret else None,
        "gateway_address": session_gateway_address(session),
        "commands": commands,
        "is_open": session.state == SessionState.OPEN,
    }
    response = render(request, "portal/session_detail.html", context)
    response["Cache-Control"] = "no-store"
    if secret is not None:
        response["X-One-Time-Secret"] = "1"  # the one page showing the secret (the test suite's leak scan skips it)
    return response


@portal_view
def session_list(request):
    """The user's sessions, newest first, filtered by state and account or session user, a page at a time."""
    page = listing(
        request,
        sessions_of(request.user),
        states=list(SessionState.choices),
        search_fields=("account__name", "account__resource__name", "username"),
    )
    return render(request, "portal/session_list.html", {"listing": page})


@never_cache
@portal_view
def session_detail(request, public_id):
    """The live page: the commands as they run (over the websocket) and the end."""
    return _session_page(request, _own_session(request, public_id))


@require_POST
@portal_view
def session_end_view(request, public_id):
    session = _own_session(request, public_id)
    access_session_end(user=request.user, session=session)
    messages.success(request, "The session has ended; the gateway closes its connections within seconds.")
    return redirect("portal:session-detail", public_id=public_id)
