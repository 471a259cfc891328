"""API for connector actions on a resource: run one (rotate, grant, revoke, create read-only, drop, lock, unlock),
list and read them, and roll one back. Staff with `access.add_connectoraction` only; the service does the work.

A succeeded action answers 201 (rollback: 200). A connector failure is recorded (state failed) and answers
502 with the error in words and the record, so a client sees both what failed and what was recorded.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import ConnectorAction, Resource
from access.models.actions import ActionKind, ActionState
from access.selectors.actions import connector_actions
from access.services.actions import action_rollback, action_run

RUN_PERMISSION = "access.add_connectoraction"


class CanRunConnectorActions(permissions.BasePermission):
    """Staff members holding access.add_connectoraction (superusers hold every permission)."""

    message = "Running connector actions needs staff status and the access.add_connectoraction permission."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm(RUN_PERMISSION))


class ActionRunSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ActionKind.choices)
    db = serializers.CharField(max_length=64)
    username = serializers.CharField(max_length=255)
    params = serializers.DictField(required=False, default=dict)


class ConnectorActionSerializer(serializers.ModelSerializer):
    """An action record: what was done, to whom, the before-image and result (never a password)."""

    resource = serializers.SlugRelatedField(slug_field="name", read_only=True)
    account = serializers.SerializerMethodField()
    actor = serializers.CharField(source="actor_name", read_only=True)
    can_roll_back = serializers.BooleanField(read_only=True)

    class Meta:
        model = ConnectorAction
        fields = [
            "id",
            "resource",
            "kind",
            "db",
            "username",
            "account",
            "params",
            "before_image",
            "result",
            "state",
            "error",
            "actor",
            "created_at",
            "finished_at",
            "can_roll_back",
            "rolled_back_at",
            "rolled_back_by",
        ]
        read_only_fields = fields

    def get_account(self, action: ConnectorAction) -> dict | None:
        return {"id": action.account.pk, "name": action.account.name} if action.account else None


def _answer(action: ConnectorAction, *, ok_status: int) -> Response:
    body = ConnectorActionSerializer(action).data
    if action.state in (ActionState.FAILED, ActionState.ROLLBACK_FAILED):
        error = {"message": action.error, "field": None}
        return Response({"error": error, "action": body}, status=status.HTTP_502_BAD_GATEWAY)
    return Response(body, status=ok_status)


def _resource(name: str) -> Resource:
    return get_object_or_404(Resource, name=name)


class ConnectorActionListCreateApi(APIView):
    """GET: the resource's actions, newest first. POST {"kind", "db", "username", "params"}: run one."""

    permission_classes = [CanRunConnectorActions]

    @extend_schema(responses=ConnectorActionSerializer(many=True))
    def get(self, request, resource: str):
        queryset = connector_actions(resource=_resource(resource))
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(ConnectorActionSerializer(page, many=True).data)

    @extend_schema(request=ActionRunSerializer, responses={201: ConnectorActionSerializer})
    def post(self, request, resource: str):
        target = _resource(resource)
        serializer = ActionRunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        action = action_run(resource=target, actor=request.user, **serializer.validated_data)
        return _answer(action, ok_status=status.HTTP_201_CREATED)


class ConnectorActionDetailApi(APIView):
    """GET one action of the resource."""

    permission_classes = [CanRunConnectorActions]

    @extend_schema(responses=ConnectorActionSerializer)
    def get(self, request, resource: str, pk: int):
        action = get_object_or_404(connector_actions(resource=_resource(resource)), pk=pk)
        return Response(ConnectorActionSerializer(action).data)


class ConnectorActionRollbackApi(APIView):
    """POST: roll the action back from its before-image (grant, revoke, create read-only user, lock)."""

    permission_classes = [CanRunConnectorActions]

    @extend_schema(request=None, responses={200: ConnectorActionSerializer})
    def post(self, request, resource: str, pk: int):
        action = get_object_or_404(connector_actions(resource=_resource(resource)), pk=pk)
        return _answer(action_rollback(action=action, actor=request.user), ok_status=status.HTTP_200_OK)
