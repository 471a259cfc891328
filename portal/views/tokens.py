"""API tokens in the portal: a person creates their own (shown once) and revokes them, from an OTP-verified page.

Creating one needs a second-factor code of the last five minutes (a step-up), because a token signs in without
one for as long as it lives. A token never grants more than its owner holds at each call.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from access.selectors.tokens import api_tokens_of
from access.services.tokens import DEFAULT_TOKEN_DAYS, api_token_create, api_token_revoke
from portal.forms import ApiTokenForm
from portal.guards import mfa_fresh, portal_view, step_up_redirect


@never_cache
@portal_view
def token_list(request):
    """The user's tokens and the form to create one; a new token is shown once, on the page that made it."""
    form = ApiTokenForm(
        request.POST or None,
        initial={"days": min(DEFAULT_TOKEN_DAYS, settings.PAM_API_TOKEN_MAX_DAYS)},
        max_days=settings.PAM_API_TOKEN_MAX_DAYS,
    )
    if request.method == "POST":
        if not mfa_fresh(request):
            return step_up_redirect(request, request.get_full_path())
        if form.is_valid():
            try:
                token, raw = api_token_create(
                    user=request.user,
                    name=form.cleaned_data["name"],
                    lifetime=timedelta(days=form.cleaned_data["days"]),
                )
            except ValidationError as exc:
                form.add_error("days", " ".join(exc.messages))
            else:
                response = render(request, "portal/token_created.html", {"token": token, "raw": raw})
                response["Cache-Control"] = "no-store"
                response["X-One-Time-Secret"] = "1"  # the one page that shows this token
                return response
    return render(request, "portal/tokens.html", {"form": form, "tokens": api_tokens_of(request.user)})


@require_POST
@portal_view
def token_revoke_view(request, pk: int):
    token = get_object_or_404(api_tokens_of(request.user), pk=pk)
    if api_token_revoke(token=token, actor=request.user):
        messages.success(request, f"Token {token.prefix}… is revoked: it stops working at its next call.")
    return redirect("portal:token-list")
