"""The signed-in user's home: live leases, open sessions, requests in flight and, for approvers, the queue."""

from django.shortcuts import render
from django.utils import timezone

from access.models.policies import RequestState, user_may_approve
from access.selectors.leases import leases_held_by
from access.selectors.requests import approval_queue, requests_of
from access.selectors.sessions import sessions_of
from portal.guards import portal_view


@portal_view
def dashboard(request):
    user = request.user
    now = timezone.now()
    context = {
        "leases": leases_held_by(user).active(now).order_by("expires_at"),
        "sessions": sessions_of(user).live(now).order_by("expires_at"),
        "pending": requests_of(user).filter(state=RequestState.PENDING),
        "approved": requests_of(user).usable(now),
        "is_approver": user_may_approve(user),
        "queue_count": approval_queue(user).count(),
    }
    return render(request, "portal/dashboard.html", context)
