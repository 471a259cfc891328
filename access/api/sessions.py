"""API for gateway sessions: open one (the secret is returned once), list, read, end, and read its command log."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from access.api.serializers import DurationField
from access.events import COMMAND_FIELDS, command_event_fields
from access.models import Account, Session, SessionCommand
from access.selectors.policies import GrantNeedsMfa
from access.selectors.sessions import (
    session_commands,
    session_connection_info,
    session_gateway_address,
    sessions_visible,
)
from access.services.mfa import mfa_code_verify
from access.services.usage import access_session_end, access_session_open


class SessionOpenSerializer(serializers.Serializer):
    account = serializers.PrimaryKeyRelatedField(queryset=Account.objects.select_related("resource"))
    duration = DurationField()
    read_only = serializers.BooleanField(default=False)
    databases = serializers.ListField(
        child=serializers.CharField(max_length=63),
        required=False,
        default=list,
        help_text="Narrow the session to these databases (within what your access policy allows).",
    )
    otp = serializers.CharField(
        required=False, allow_blank=True, write_only=True, help_text="A fresh one-time code, for MFA-required access."
    )


class SessionSerializer(serializers.ModelSerializer):
    """A session as its owner (or staff) sees it: never the secret, never the verifiers."""

    session_id = serializers.UUIDField(source="public_id", read_only=True)
    user = serializers.CharField(source="user_name", read_only=True)
    account = serializers.SerializerMethodField()
    gateway = serializers.SerializerMethodField()
    databases = serializers.ListField(
        source="database_allow_list",
        child=serializers.CharField(),
        read_only=True,
        help_text="The databases the gateway lets the session use (empty: every database).",
    )
    privileged_commands = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Privileged command families the gateway lets the session run (none by default).",
    )

    class Meta:
        model = Session
        fields = [
            "session_id",
            "username",
            "user",
            "account",
            "gateway",
            "read_only",
            "databases",
            "privileged_commands",
            "state",
            "started_at",
            "expires_at",
            "first_connected_at",
            "ended_at",
            "end_reason",
            "client_address",
            "connections",
            "commands_count",
            "bytes_in",
            "bytes_out",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_account(self, session: Session):
        if session.account is None:
            return None
        return {"id": session.account.pk, "name": str(session.account)}

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_gateway(self, session: Session):
        return {"name": session.gateway.name if session.gateway else None, "address": session_gateway_address(session)}


class SessionOpenedSerializer(SessionSerializer):
    """The answer to opening a session: the only time the secret is shown."""

    secret = serializers.CharField(read_only=True, help_text="One-time secret: shown once, never stored.")
    connection_string = serializers.CharField(read_only=True)
    mongosh = serializers.CharField(read_only=True)
    warnings = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="What changed from what was asked (a capped duration)."
    )

    class Meta(SessionSerializer.Meta):
        fields = [*SessionSerializer.Meta.fields, "secret", "connection_string", "mongosh", "warnings"]
        read_only_fields = fields


class SessionCommandSerializer(serializers.ModelSerializer):
    """One recorded command (documentation of the command log's rows; summaries are redacted)."""

    class Meta:
        model = SessionCommand
        fields = list(COMMAND_FIELDS)
        read_only_fields = fields


_PAGING = [
    OpenApiParameter("limit", int, description="Page size (default 100)."),
    OpenApiParameter("offset", int, description="Rows to skip."),
]


def _is_mfa_verified(request) -> bool:
    is_verified = getattr(request.user, "is_verified", None)
    return bool(is_verified()) if callable(is_verified) else False


def mfa_verified_for(request, otp: str) -> bool:
    """An OTP-verified browser session, or a fresh one-time code sent with the request (the CLI's way)."""
    return _is_mfa_verified(request) or bool(otp and mfa_code_verify(user=request.user, code=otp))


def mfa_needed(exc: GrantNeedsMfa) -> Response:
    """403 naming the `otp` field: send the request again with a fresh one-time code."""
    return Response({"error": {"message": str(exc), "field": "otp"}}, status=status.HTTP_403_FORBIDDEN)


class SessionListCreateApi(APIView):
    """GET: the caller's sessions (every session for staff with view_session). POST: open a session."""

    @extend_schema(operation_id="sessions_list", responses=SessionSerializer(many=True), parameters=_PAGING)
    def get(self, request):
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(sessions_visible(user=request.user), request, view=self)
        return paginator.get_paginated_response(SessionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="sessions_open", request=SessionOpenSerializer, responses={201: SessionOpenedSerializer}
    )
    def post(self, request):
        serializer = SessionOpenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            opened = access_session_open(
                user=request.user,
                account=data["account"],
                duration=data["duration"],
                read_only=data["read_only"],
                mfa_verified=mfa_verified_for(request, data.get("otp", "")),
                databases=data["databases"],
            )
        except GrantNeedsMfa as exc:
            return mfa_needed(exc)
        session, secret = opened.session, opened.secret
        body = {
            **SessionSerializer(session).data,
            "secret": secret,
            **session_connection_info(session, secret),
            "warnings": list(opened.warnings),  # e.g. a duration capped at what the grant allows
        }
        # X-One-Time-Secret marks the one response allowed to carry the secret (the test suite's leak scan skips it).
        return Response(
            body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store", "X-One-Time-Secret": "1"}
        )


def _visible_session(request, public_id) -> Session:
    return get_object_or_404(sessions_visible(user=request.user), public_id=public_id)


class SessionDetailApi(APIView):
    """One session the caller may see."""

    @extend_schema(operation_id="sessions_read", responses=SessionSerializer)
    def get(self, request, public_id):
        return Response(SessionSerializer(_visible_session(request, public_id)).data)


class SessionEndApi(APIView):
    """End a session: its owner ends it (ended_by_user); staff with change_session kill someone else's."""

    @extend_schema(operation_id="sessions_end", request=None, responses=SessionSerializer)
    def post(self, request, public_id):
        session = access_session_end(user=request.user, session=_visible_session(request, public_id))
        return Response(SessionSerializer(session).data)


class SessionCommandsApi(APIView):
    """The session's command log, oldest first, paginated (limit/offset); summaries are redacted."""

    @extend_schema(operation_id="sessions_commands", responses=SessionCommandSerializer(many=True), parameters=_PAGING)
    def get(self, request, public_id):
        session = _visible_session(request, public_id)
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(session_commands(session), request, view=self)
        return paginator.get_paginated_response([command_event_fields(command) for command in page])
