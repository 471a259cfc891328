"""API for the person at the terminal: who am I, my leases, a fresh one-time code check, and ending my CLI login."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models.leases import LeaseState
from access.models.policies import user_may_approve
from access.selectors.leases import leases_held_by
from access.services.cli import cli_login_revoke
from access.services.mfa import mfa_code_verify, mfa_method_for


class MeApi(APIView):
    """Who the token belongs to, and whether they approve requests."""

    @extend_schema(operation_id="me_read", responses={200: dict})
    def get(self, request):
        user = request.user
        return Response(
            {
                "username": user.get_username(),
                "email": user.email,
                "approver": user_may_approve(user),
                "mfa_method": mfa_method_for(user),
                "auth": "cli" if isinstance(request.auth, get_access_token_model()) else "api_token",
            }
        )


class OtpSerializer(serializers.Serializer):
    otp = serializers.CharField(write_only=True)


class MfaVerifyApi(APIView):
    """Check a one-time code (authenticator app or backup code): 204 when right, 403 naming `otp` otherwise."""

    @extend_schema(operation_id="mfa_verify", request=OtpSerializer, responses={204: None})
    def post(self, request):
        serializer = OtpSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if mfa_code_verify(user=request.user, code=serializer.validated_data["otp"]):
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            {"error": {"message": "That one-time code is not right: try the current one.", "field": "otp"}},
            status=status.HTTP_403_FORBIDDEN,
        )


class CliLogoutApi(APIView):
    """End the CLI login whose access token calls this (`pam logout`): its tokens stop working at once."""

    @extend_schema(operation_id="cli_logout", request=None, responses={204: None})
    def post(self, request):
        if not isinstance(request.auth, get_access_token_model()):
            return Response(
                {"error": {"message": "Only a CLI login (from `pam login`) can log out.", "field": None}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        refresh = get_refresh_token_model().objects.filter(access_token=request.auth).first()
        if refresh is not None:
            cli_login_revoke(refresh_token=refresh, actor=request.user)
        else:
            request.auth.revoke()
        return Response(status=status.HTTP_204_NO_CONTENT)


def lease_data(lease) -> dict:
    return {
        "lease_id": lease.lease_id,
        "resource": lease.resource.name,
        "role": lease.role.name if lease.role_id else None,
        "db": lease.db,
        "username": lease.username,
        "state": lease.state,
        "issued_at": lease.issued_at,
        "expires_at": lease.expires_at,
        "max_expires_at": lease.max_expires_at,
        "ttl": lease.ttl_seconds if lease.state == LeaseState.ACTIVE else 0,
        "renewable": lease.renewable,
    }


class MyLeasesApi(APIView):
    """The caller's own leases, newest first (`?all=1` includes ended ones); never a password."""

    @extend_schema(operation_id="my_leases", responses={200: dict})
    def get(self, request):
        leases = leases_held_by(request.user)
        if not request.query_params.get("all"):
            leases = leases.filter(state__in=[LeaseState.ACTIVE, LeaseState.REVOKING, LeaseState.REVOKE_FAILED])
        return Response({"results": [lease_data(lease) for lease in leases[:200]]})
