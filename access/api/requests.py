"""API for asking for access and deciding on it: the caller's catalogue, their requests, and the approvers' actions.

What the portal's request pages do, for the CLI (`pam requests`, and `pam db access` when approval is needed).
Each view validates its input and calls one service of access.services.requests; an approver's approve or deny
needs a fresh one-time code in the body (`otp`), as the portal asks for one. Requests the caller may not see are 404.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.api.serializers import DurationField
from access.durations import format_duration
from access.models import AccessRequest
from access.models.policies import user_may_approve
from access.selectors.policies import policies_granted_to
from access.selectors.requests import (
    approval_queue,
    catalogue_for,
    request_display_state,
    requests_of,
    requests_visible,
)
from access.services import requests as request_services
from access.services.mfa import mfa_code_verify


def _target(policy_or_request, kind: str | None = None) -> dict:
    if kind == "scoped" or getattr(policy_or_request, "is_scoped", False):  # scoped access: /api/v1/scoped/
        resource = getattr(policy_or_request, "scope_resource", None) or policy_or_request.resource
        return {"kind": "scoped", "id": None, "name": None, "resource": resource.name}
    account, role = policy_or_request.account, policy_or_request.role
    target = account or role
    return {
        "kind": "account" if account else "role",
        "id": target.pk if target else None,
        "name": target.name if target else None,
        "resource": target.resource.name if target else None,
    }


def _approver_names(request: AccessRequest | None = None, *, exclude=None) -> list[str]:
    approvers = request_services.approvers_for(request)
    if exclude is not None:
        approvers = approvers.exclude(pk=exclude.pk)
    return sorted(user.get_username() for user in approvers)


def catalogue_entry_data(entry, *, user) -> dict:
    policy = entry.policy
    return {
        "policy": {"id": policy.pk, "name": policy.name},
        "target": _target(policy, entry.kind),
        "approval_required": policy.approval_required,
        "mfa_required": policy.mfa_required or bool(getattr(policy.target, "require_mfa", False)),
        "read_only": policy.read_only,
        "max_duration": format_duration(policy.max_duration),
        "break_glass_allowed": policy.break_glass_allowed,
        "usable_now": entry.usable_now,
        "usable_until": entry.usable_until,
        "pending_request": entry.pending_request.pk if entry.pending_request else None,
        "approvers": _approver_names(exclude=user) if policy.approval_required else [],
    }


def request_common_data(access_request: AccessRequest) -> dict:
    """What every request's answer says, scoped or not: who asked under which policy, why, for how long, and
    where the decision stands."""
    return {
        "id": access_request.pk,
        "requester": access_request.requester.get_username(),
        "policy": {"id": access_request.policy_id, "name": access_request.policy.name},
        "reason": access_request.reason,
        "duration": format_duration(access_request.duration),
        "state": request_display_state(access_request),
        "break_glass": access_request.break_glass,
        "created_at": access_request.created_at,
        "decided_at": access_request.decided_at,
        "expires_at": access_request.expires_at,
        "approver": access_request.approver.get_username() if access_request.approver else None,
        "decision_comment": access_request.decision_comment,
    }


def request_data(access_request: AccessRequest) -> dict:
    return {
        **request_common_data(access_request),
        "target": _target(access_request),
        "approvers": _approver_names(access_request),
    }


def require_approver(user) -> None:
    """Refuse (403) a decision from someone who may not decide access requests."""
    if not user_may_approve(user):
        raise exceptions.PermissionDenied("Only approvers may decide access requests.")


class CatalogueApi(APIView):
    """What the caller may ask for or use: their policies' targets, whether each is usable now, who approves."""

    @extend_schema(operation_id="catalogue_list", responses={200: dict})
    def get(self, request):
        return Response(
            {"results": [catalogue_entry_data(entry, user=request.user) for entry in catalogue_for(request.user)]}
        )


class RequestCreateSerializer(serializers.Serializer):
    policy = serializers.IntegerField()
    reason = serializers.CharField(max_length=request_services.REASON_MAX_LENGTH, allow_blank=True)
    duration = DurationField()
    break_glass = serializers.BooleanField(default=False)


class RequestListCreateApi(APIView):
    """GET: the caller's requests (`?queue=1`: the pending requests they may decide). POST: ask for access."""

    @extend_schema(operation_id="requests_list", responses={200: dict})
    def get(self, request):
        if request.query_params.get("queue"):
            rows = approval_queue(request.user)
        else:
            rows = requests_of(request.user).select_related("requester", "policy")[:200]
        return Response({"results": [request_data(row) for row in rows]})

    @extend_schema(operation_id="requests_create", request=RequestCreateSerializer, responses={201: dict})
    def post(self, request):
        serializer = RequestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        policy = get_object_or_404(policies_granted_to(request.user), pk=data["policy"])
        created = request_services.access_request_create(
            requester=request.user,
            policy=policy,
            reason=data["reason"],
            duration=data["duration"],
            break_glass=data["break_glass"],
        )
        return Response(request_data(created), status=status.HTTP_201_CREATED)


def _visible_request(request, pk: int) -> AccessRequest:
    return get_object_or_404(requests_visible(user=request.user), pk=pk)


class RequestDetailApi(APIView):
    """One request the caller may see (their own; any for approvers)."""

    @extend_schema(operation_id="requests_read", responses={200: dict})
    def get(self, request, pk: int):
        return Response(request_data(_visible_request(request, pk)))


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class DecisionSerializer(CommentSerializer):
    otp = serializers.CharField(required=False, allow_blank=True, default="", write_only=True)


def fresh_code_refusal(user, otp: str) -> Response | None:
    """The 403 answer (field `otp`) when a decision comes without `user`'s current one-time code; None when the
    code is right. Deciding a request from the API needs a fresh second factor, as in the portal."""
    if not otp:
        message = "Deciding a request needs a fresh one-time code."
    elif not mfa_code_verify(user=user, code=otp):
        message = "That one-time code is not right: try the current one."
    else:
        return None
    return Response({"error": {"message": message, "field": "otp"}}, status=status.HTTP_403_FORBIDDEN)


class _DecisionApi(APIView):
    approve = True

    @extend_schema(request=DecisionSerializer, responses={200: dict})
    def post(self, request, pk: int):
        serializer = DecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        require_approver(request.user)
        access_request = _visible_request(request, pk)
        refusal = fresh_code_refusal(request.user, serializer.validated_data["otp"])
        if refusal is not None:
            return refusal
        decide = request_services.access_request_approve if self.approve else request_services.access_request_deny
        decided = decide(request=access_request, approver=request.user, comment=serializer.validated_data["comment"])
        return Response(request_data(decided))


class RequestApproveApi(_DecisionApi):
    """Approve a pending request (not one's own), with a fresh one-time code."""

    approve = True


class RequestDenyApi(_DecisionApi):
    """Deny a pending request, with a fresh one-time code."""

    approve = False


class RequestCancelApi(APIView):
    """The requester withdraws a pending request or gives up an approved one."""

    @extend_schema(operation_id="requests_cancel", request=None, responses={200: dict})
    def post(self, request, pk: int):
        access_request = get_object_or_404(requests_of(request.user), pk=pk)
        cancelled = request_services.access_request_cancel(request=access_request, user=request.user)
        return Response(request_data(cancelled))
