"""API for scoped just-in-time access: the caller's envelopes and what they hold, asking inside one, deciding (an
approver may narrow), and using the grant (credentials once, or a gateway session through the request's user).

Every view validates its input and calls one service (access.services.requests for asking and deciding,
access.services.usage for using, access.services.scoped for permission levels and retries); the same services
serve the portal and the CLI. Requests the caller may not see are 404. Routes live under /api/v1/scoped/ and
/api/v1/permission-levels/ (CONTRACTS.md, "Scoped access").
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from access.api.requests import (
    DecisionSerializer,
    RequestCreateSerializer,
    fresh_code_refusal,
    request_common_data,
    require_approver,
)
from access.api.serializers import DurationField
from access.api.sessions import mfa_needed, mfa_verified_for
from access.api.views import ModelPermissions
from access.durations import format_duration
from access.models import AccessPolicy, AccessRequest, PermissionLevel, Resource
from access.models.policies import RequestState
from access.selectors.leases import lease_connection_string
from access.selectors.policies import GrantNeedsMfa
from access.selectors.requests import approval_queue, requests_visible
from access.selectors.scoped import envelope_levels, envelopes_granted_to, scope_choices, scoped_leases_of
from access.selectors.sessions import session_connection_info
from access.services import policies as policy_services
from access.services import requests as request_services
from access.services import scoped as scoped_services
from access.services.leases import LeaseError
from access.services.usage import access_scoped_reveal, access_scoped_session_open


def _mfa_verified(request) -> bool:
    """A browser session past the second factor, or a fresh one-time code in the body (`otp`, as `pam` sends)."""
    return mfa_verified_for(request, str(request.data.get("otp") or "") if hasattr(request.data, "get") else "")


def _lease_error(exc: LeaseError):
    return exceptions.ValidationError({"grant": [exc.message]})


# -- envelopes -----------------------------------------------------------------------------------------------
def envelope_data(policy, *, pending: AccessRequest | None = None) -> dict:
    return {
        "policy": {"id": policy.pk, "name": policy.name},
        "resource": {"name": policy.scope_resource.name, "kind": policy.scope_resource.kind},
        "databases": list(policy.scope_databases or []),
        "collections": list(policy.scope_collections or []),
        "levels": envelope_levels(policy),
        "max_duration": format_duration(policy.max_duration),
        "approval_required": policy.approval_required,
        "mfa_required": policy.mfa_required,
        "break_glass_allowed": policy.break_glass_allowed,
        "pending_request": pending.pk if pending else None,
    }


class EnvelopeListApi(APIView):
    """The scope envelopes the caller may ask inside: the policy, its resource, databases, collections, levels."""

    @extend_schema(operation_id="scoped_envelopes_list", responses={200: dict})
    def get(self, request):
        pending = {
            r.policy_id: r
            for r in AccessRequest.objects.filter(
                requester=request.user, state=RequestState.PENDING, resource__isnull=False
            ).order_by("created_at")
        }
        return Response(
            {"results": [envelope_data(p, pending=pending.get(p.pk)) for p in envelopes_granted_to(request.user)]}
        )


class EnvelopeChoicesApi(APIView):
    """What the caller may pick under one envelope: the server's databases and collections filtered by it
    (read through the resource's admin account, cached briefly; `?refresh=1` reads again), and the levels."""

    @extend_schema(operation_id="scoped_envelope_choices", responses={200: dict})
    def get(self, request, policy: int):
        envelope = get_object_or_404(envelopes_granted_to(request.user), pk=policy)
        refresh = request.query_params.get("refresh") in ("1", "true", "yes")
        return Response(scope_choices(policy=envelope, refresh=refresh).as_dict())


# -- requests --------------------------------------------------------------------------------------------------
def grant_data(access_request: AccessRequest) -> dict | None:
    lease = scoped_leases_of(access_request).first()
    if lease is None:
        return None
    return {
        "lease_id": lease.lease_id,
        "lease": lease.pk,
        "state": lease.display_state,
        "username": lease.username,
        "auth_database": lease.db,
        "role": lease.server_role or None,
        "scope": lease.scope,
        "expires_at": lease.expires_at,
        "revealed": lease.revealed_at is not None,
        "error": lease.last_error if lease.issue_failed else "",
    }


def scoped_request_data(access_request: AccessRequest) -> dict:
    return {
        **request_common_data(access_request),
        "resource": access_request.resource.name,
        "requested": access_request.scope_requested,
        "granted": access_request.scope,
        "narrowed": access_request.scope_narrowed,
        "grant": grant_data(access_request),
    }


class ResourcesField(serializers.ListField):
    """Databases and collections: "shop", "shop.orders", or {"db", "collection"}."""

    def __init__(self, **kwargs):
        super().__init__(child=serializers.JSONField(), **kwargs)


class ScopedRequestCreateSerializer(RequestCreateSerializer):
    resources = ResourcesField()
    level = serializers.CharField(max_length=64)


def _scoped_requests(user):
    return requests_visible(user=user).filter(resource__isnull=False).select_related("resource")


class ScopedRequestListCreateApi(APIView):
    """GET: the caller's scoped requests (`?queue=1`: the pending ones they may decide). POST: ask inside an
    envelope; without approval (or break-glass) the grant is made at once and is in the answer's `grant`."""

    @extend_schema(operation_id="scoped_requests_list", responses={200: dict})
    def get(self, request):
        if request.query_params.get("queue"):
            rows = approval_queue(request.user).filter(resource__isnull=False).select_related("resource")
        else:
            rows = _scoped_requests(request.user).filter(requester=request.user).order_by("-created_at")
        return Response({"results": [scoped_request_data(row) for row in rows[:200]]})

    @extend_schema(operation_id="scoped_requests_create", request=ScopedRequestCreateSerializer, responses={201: dict})
    def post(self, request):
        serializer = ScopedRequestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        policy = get_object_or_404(envelopes_granted_to(request.user), pk=data["policy"])
        created = request_services.access_request_create(
            requester=request.user,
            policy=policy,
            reason=data["reason"],
            duration=data["duration"],
            break_glass=data["break_glass"],
            scope={"resources": data["resources"], "level": data["level"]},
        )
        return Response(scoped_request_data(created), status=status.HTTP_201_CREATED)


def _visible(request, pk: int) -> AccessRequest:
    return get_object_or_404(_scoped_requests(request.user), pk=pk)


class ScopedRequestDetailApi(APIView):
    """One scoped request: what was asked, what was granted, and its grant (lease state, user, expiry)."""

    @extend_schema(operation_id="scoped_requests_read", responses={200: dict})
    def get(self, request, pk: int):
        return Response(scoped_request_data(_visible(request, pk)))


class ApproveSerializer(DecisionSerializer):
    resources = ResourcesField(required=False)
    level = serializers.CharField(required=False, max_length=64)
    duration = DurationField(required=False)


class ScopedRequestApproveApi(APIView):
    """Approve a pending scoped request, optionally narrowed (fewer resources, a lesser level, less time; never
    wider: 400 naming the field), with a fresh one-time code (`otp`). The user and role are made at once; `grant`
    says how that went."""

    @extend_schema(operation_id="scoped_requests_approve", request=ApproveSerializer, responses={200: dict})
    def post(self, request, pk: int):
        serializer = ApproveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        require_approver(request.user)
        data = serializer.validated_data
        access_request = _visible(request, pk)
        refusal = fresh_code_refusal(request.user, data["otp"])
        if refusal is not None:
            return refusal
        decided = request_services.access_request_approve(
            request=access_request,
            approver=request.user,
            comment=data["comment"],
            resources=data.get("resources"),
            level=data.get("level"),
            duration=data.get("duration"),
        )
        return Response(scoped_request_data(decided))


class ScopedRequestDenyApi(APIView):
    """Deny a pending scoped request, with a fresh one-time code (`otp`)."""

    @extend_schema(operation_id="scoped_requests_deny", request=DecisionSerializer, responses={200: dict})
    def post(self, request, pk: int):
        serializer = DecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        require_approver(request.user)
        access_request = _visible(request, pk)
        refusal = fresh_code_refusal(request.user, serializer.validated_data["otp"])
        if refusal is not None:
            return refusal
        decided = request_services.access_request_deny(
            request=access_request, approver=request.user, comment=serializer.validated_data["comment"]
        )
        return Response(scoped_request_data(decided))


class ScopedRequestCancelApi(APIView):
    """The requester withdraws a pending request, or gives up an approved one (its user and role go now)."""

    @extend_schema(operation_id="scoped_requests_cancel", request=None, responses={200: dict})
    def post(self, request, pk: int):
        access_request = get_object_or_404(_scoped_requests(request.user).filter(requester=request.user), pk=pk)
        cancelled = request_services.access_request_cancel(request=access_request, user=request.user)
        return Response(scoped_request_data(cancelled))


class ScopedGrantRetryApi(APIView):
    """Make the grant again after a failed attempt (the requester or an approver), while the window is open."""

    @extend_schema(operation_id="scoped_requests_retry", request=None, responses={200: dict})
    def post(self, request, pk: int):
        access_request = _visible(request, pk)
        scoped_services.scoped_grant_retry(request=access_request, user=request.user)
        return Response(scoped_request_data(access_request))


def _own_active_lease(request, pk: int):
    access_request = get_object_or_404(_scoped_requests(request.user).filter(requester=request.user), pk=pk)
    lease = scoped_leases_of(access_request).first()
    if lease is None:
        raise exceptions.ValidationError({"grant": ["This request has no grant yet: it is not approved."]})
    return access_request, lease


class ScopedCredentialsApi(APIView):
    """The credentials of the user made for the caller's request, once (POST; 409 when already shown)."""

    session_get_refused = True

    @extend_schema(operation_id="scoped_requests_credentials", request=None, responses={200: dict})
    def post(self, request, pk: int):
        _access_request, lease = _own_active_lease(request, pk)
        try:
            password = access_scoped_reveal(user=request.user, lease=lease, mfa_verified=_mfa_verified(request))
        except GrantNeedsMfa as exc:
            return mfa_needed(exc)
        except LeaseError as exc:
            raise _lease_error(exc) from None
        if password is None:
            return Response(
                {"error": {"message": "The password was already shown once: ask again for new access.", "field": None}},
                status=status.HTTP_409_CONFLICT,
            )
        body = {
            "lease_id": lease.lease_id,
            "username": lease.username,
            "password": password,
            "auth_database": lease.db,
            "connection_string": lease_connection_string(lease, password) or None,
            "scope": lease.scope,
            "expires_at": lease.expires_at,
        }
        return Response(body, headers={"Cache-Control": "no-store", "X-One-Time-Secret": "1"})


class SessionSerializer(serializers.Serializer):
    duration = DurationField(required=False)
    otp = serializers.CharField(required=False, allow_blank=True, write_only=True)


class ScopedSessionOpenApi(APIView):
    """Open a gateway session through the user made for the caller's request, kept to its databases."""

    @extend_schema(operation_id="scoped_requests_session", request=SessionSerializer, responses={201: dict})
    def post(self, request, pk: int):
        serializer = SessionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        _access_request, lease = _own_active_lease(request, pk)
        try:
            opened = access_scoped_session_open(
                user=request.user,
                lease=lease,
                duration=serializer.validated_data.get("duration"),
                mfa_verified=_mfa_verified(request),
            )
        except GrantNeedsMfa as exc:
            return mfa_needed(exc)
        except LeaseError as exc:
            raise _lease_error(exc) from None
        session, secret = opened.session, opened.secret
        body = {
            "session_id": str(session.public_id),
            "username": session.username,
            "secret": secret,
            "expires_at": session.expires_at,
            "databases": session.database_allow_list,
            **session_connection_info(session, secret),
            "warnings": list(opened.warnings),
        }
        return Response(
            body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store", "X-One-Time-Secret": "1"}
        )


# -- permission levels (the security team) -----------------------------------------------------------------
class PermissionLevelSerializer(serializers.ModelSerializer):
    class Meta:
        model = PermissionLevel
        fields = ["id", "name", "description", "actions", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]


class PermissionLevelViewSet(viewsets.ModelViewSet):
    """Custom permission levels: named sets of MongoDB privilege actions (an unknown action is refused)."""

    queryset = PermissionLevel.objects.order_by("name")
    serializer_class = PermissionLevelSerializer
    permission_classes = [ModelPermissions]
    lookup_field = "name"

    def perform_create(self, serializer):
        serializer.instance = scoped_services.permission_level_create(
            actor=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = scoped_services.permission_level_update(
            actor=self.request.user, level=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        scoped_services.permission_level_delete(actor=self.request.user, level=instance)


# -- access policies, envelopes included (the security team) ---------------------------------------------------
class AccessPolicySerializer(serializers.ModelSerializer):
    """A policy: who (user or group), what (account, role and/or a scope envelope on a resource), on what terms."""

    user = serializers.SlugRelatedField(
        slug_field="username", queryset=get_user_model().objects.all(), required=False, allow_null=True
    )
    group = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), required=False, allow_null=True
    )
    scope_resource = serializers.SlugRelatedField(
        slug_field="name", queryset=Resource.objects.all(), required=False, allow_null=True
    )
    max_duration = DurationField(required=False)

    class Meta:
        model = AccessPolicy
        fields = ["id", *policy_services.POLICY_FIELDS, "last_used_at", "created_at"]
        read_only_fields = ["id", "last_used_at", "created_at"]


class AccessPolicyViewSet(viewsets.ModelViewSet):
    """Access policies, written through the policy services (validated and audited like the admin's); a policy
    may grant a scope envelope (`scope_resource`, `scope_databases`, `scope_collections`, `scope_levels`)."""

    queryset = AccessPolicy.objects.select_related("user", "group", "scope_resource").order_by("name", "pk")
    serializer_class = AccessPolicySerializer
    permission_classes = [ModelPermissions]

    def perform_create(self, serializer):
        serializer.instance = policy_services.access_policy_create(actor=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = policy_services.access_policy_update(
            actor=self.request.user, policy=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        policy_services.access_policy_delete(actor=self.request.user, policy=instance)
