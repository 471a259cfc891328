"""The signed-in user's home: live leases, open sessions, requests in flight and, for approvers, the queue."""

from django.shortcuts import render
from django.utils import timezone

from access.models import Lease, Session
from access.models.policies import RequestState
from access.selectors.requests import approval_queue, requests_of
from access.services.requests import user_may_approve
from portal.guards import portal_view


@portal_view
def dashboard(request):
    user = request.user
    now = timezone.now()
    context = {
        "leases": Lease.objects.for_user(user).active(now).select_related("role", "resource").order_by("expires_at"),
        "sessions": Session.objects.for_user(user).live(now).select_related("account__resource").order_by("expires_at"),
        "pending": requests_of(user).filter(state=RequestState.PENDING),
        "approved": requests_of(user).usable(now),
        "is_approver": user_may_approve(user),
        "queue_count": approval_queue(user).count(),
    }
    return render(request, "portal/dashboard.html", context)
