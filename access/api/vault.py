"""Vault-shaped API for dynamic MongoDB credentials: config, roles, creds and sys/leases.

Thin views: they check who may do what (model permissions for configuration, AccessPolicy grants for
credentials, holder or `access.change_lease` for leases), validate input with serializers, and call one
service. Resources and roles are named in the path; a role or lease the caller may not see is a 404,
a visible one the caller may not use is a 403, and every error is JSON (see access.api.errors).
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.api.atlas import AtlasRoleSerializer
from access.api.serializers import DurationField, RoleTermsSerializer, ValidatedListField
from access.api.sessions import mfa_needed, mfa_verified_for
from access.models import DynamicRole, Lease, Resource
from access.models.leases import LeaseState
from access.models.visibility import user_sees_every
from access.selectors.leases import lease_connection_string, leases_visible, roles_visible
from access.selectors.policies import GrantNeedsMfa
from access.services import leases as lease_services
from access.services import roles as role_services
from access.services.resources import resource_update
from access.services.usage import access_lease_issue, access_lease_renew, access_lease_revoke
from access.validators import validate_mongodb_roles


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."


class Unavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database server could not be reached."


def _seconds(value) -> int:
    return int(value.total_seconds()) if value else 0


def _require_perms(user, *perms: str) -> None:
    if user.is_superuser:
        return
    if not user.is_staff or not all(user.has_perm(p) for p in perms):
        raise exceptions.PermissionDenied("You do not have permission to change this configuration.")


def _resource(name: str, *, atlas: bool = False) -> Resource:
    """The MongoDB resource `name` (404 otherwise); with `atlas`, an Atlas project too (roles, creds, lease config)."""
    return get_object_or_404(Resource.objects.all() if atlas else Resource.objects.mongodb(), name=name)


def _vault_body(data: dict | None, *, warnings=(), **top) -> dict:
    """Vault's answer shape; `warnings` says in words what changed from what was asked (e.g. a capped TTL)."""
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        **top,
        "data": data,
        "warnings": list(warnings) or None,
    }


# -- config/connection ------------------------------------------------------------------------------------
class ConnectionConfigSerializer(serializers.Serializer):
    uri = serializers.CharField(max_length=2048, trim_whitespace=True)
    verify_connection = serializers.BooleanField(default=True)
    username = serializers.CharField(required=False, allow_blank=True, default="")
    password = serializers.CharField(
        required=False, allow_blank=True, default="", write_only=True, trim_whitespace=False
    )
    tls_verify = serializers.BooleanField(required=False)
    ca_certificate = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)


class ConnectionConfigApi(APIView):
    """`mongodb/{resource}/config/connection`: where the deployment is and which admin account manages it.

    POST accepts a Vault-style URI with credentials; they are stored encrypted as the admin account and removed
    from the URI. GET never returns a secret.
    """

    def get(self, request, resource: str):
        _require_perms(request.user, "access.change_resource")
        target = _resource(resource)
        return Response(
            _vault_body(
                {
                    "uri": target.uri,
                    "auth_database": target.auth_database,
                    "username": target.admin_username,
                    "tls": target.tls,
                    "tls_verify": target.tls_verify,
                    "password_set": bool(target.admin_password and target.admin_password.token),
                }
            )
        )

    def post(self, request, resource: str):
        exists = Resource.objects.filter(name=resource).exists()
        _require_perms(request.user, "access.change_resource" if exists else "access.add_resource")
        serializer = ConnectionConfigSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        _resource_obj, created = role_services.resource_connection_configure(
            actor=request.user,
            name=resource,
            uri=data.pop("uri"),
            verify=data.pop("verify_connection"),
            username=data.pop("username"),
            password=data.pop("password"),
            **data,
        )
        return Response(status=status.HTTP_201_CREATED if created else status.HTTP_204_NO_CONTENT)

    put = post


# -- config/lease ------------------------------------------------------------------------------------------
class LeaseConfigSerializer(serializers.Serializer):
    ttl = DurationField(required=False)
    max_ttl = DurationField(required=False)


class LeaseConfigApi(APIView):
    """`mongodb/{resource}/config/lease`: the default and max TTL of leases whose role sets none."""

    def get(self, request, resource: str):
        _require_perms(request.user, "access.change_resource")
        target = _resource(resource, atlas=True)
        return Response(_vault_body({"ttl": _seconds(target.default_ttl), "max_ttl": _seconds(target.max_ttl)}))

    def post(self, request, resource: str):
        _require_perms(request.user, "access.change_resource")
        target = _resource(resource, atlas=True)
        serializer = LeaseConfigSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = {}
        if "ttl" in serializer.validated_data:
            fields["default_ttl"] = serializer.validated_data["ttl"]
        if "max_ttl" in serializer.validated_data:
            fields["max_ttl"] = serializer.validated_data["max_ttl"]
        try:
            resource_update(actor=request.user, resource=target, **fields)
        except DjangoValidationError as exc:
            errors = exc.message_dict
            if "default_ttl" in errors:
                errors["ttl"] = errors.pop("default_ttl")
            raise exceptions.ValidationError(errors) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    put = post


# -- roles -------------------------------------------------------------------------------------------------
class RoleSerializer(RoleTermsSerializer):
    db = serializers.CharField(max_length=64, required=False)
    roles = ValidatedListField(validate_mongodb_roles, required=False)


def _role_data(role) -> dict:
    data = {
        "db": role.db,
        "roles": role.roles,
        "default_ttl": _seconds(role.default_ttl),
        "max_ttl": _seconds(role.max_ttl),
        "username_template": role.username_template,
        "password_length": role.password_length,
    }
    if role.resource.is_atlas:
        data["scopes"] = role.scopes
    return data


class RoleListApi(APIView):
    """`mongodb/{resource}/roles`: the names of the roles the caller may see (Vault's LIST)."""

    def get(self, request, resource: str):
        target = _resource(resource, atlas=True)
        names = list(
            roles_visible(user=request.user).filter(resource=target).order_by("name").values_list("name", flat=True)
        )
        return Response(_vault_body({"keys": names}))


class RoleApi(APIView):
    """`mongodb/{resource}/roles/{name}`: read, write (create or update) and delete one role."""

    def _visible_role(self, request, resource: str, name: str):
        return _visible_role(request, resource, name)

    def get(self, request, resource: str, name: str):
        return Response(_vault_body(_role_data(self._visible_role(request, resource, name))))

    def post(self, request, resource: str, name: str):
        target = _resource(resource, atlas=True)
        exists = target.roles.filter(name=name).exists()
        _require_perms(request.user, "access.change_dynamicrole" if exists else "access.add_dynamicrole")
        serializer = (AtlasRoleSerializer if target.is_atlas else RoleSerializer)(data=request.data)
        serializer.is_valid(raise_exception=True)
        _role, created = role_services.dynamic_role_save(
            actor=request.user, resource=target, name=name, **serializer.validated_data
        )
        return Response(status=status.HTTP_201_CREATED if created else status.HTTP_204_NO_CONTENT)

    put = post

    def delete(self, request, resource: str, name: str):
        _require_perms(request.user, "access.delete_dynamicrole")
        role = self._visible_role(request, resource, name)
        try:
            role_services.dynamic_role_delete(actor=request.user, role=role)
        except role_services.RoleInUseError as exc:
            raise Conflict(str(exc)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


def _visible_role(request, resource: str, name: str) -> DynamicRole:
    """The role `resource`/`name` if the caller may see it, else 404."""
    return get_object_or_404(roles_visible(user=request.user), resource__name=resource, name=name)


# -- creds -------------------------------------------------------------------------------------------------
class CredsSerializer(serializers.Serializer):
    ttl = DurationField(required=False)
    otp = serializers.CharField(required=False, allow_blank=True, write_only=True)


class CredsApi(APIView):
    """`mongodb/{resource}/creds/{role}`: issue a lease — a new database user and its password, shown once.

    Vault's clients read it with GET (token calls); a browser session must POST it with the CSRF token.
    """

    session_get_refused = True  # access.api.authentication.OtpSessionAuthentication: GET changes state here

    def get(self, request, resource: str, role: str):
        target = _visible_role(request, resource, role)
        source = request.data if request.method == "POST" else request.query_params
        serializer = CredsSerializer(data=source)
        serializer.is_valid(raise_exception=True)
        try:
            issued = access_lease_issue(
                user=request.user,
                role=target,
                ttl=serializer.validated_data.get("ttl"),
                mfa_verified=mfa_verified_for(request, serializer.validated_data.get("otp", "")),
                mark_revealed=True,
            )
        except GrantNeedsMfa as exc:
            return mfa_needed(exc)
        except lease_services.LeaseError as exc:
            raise (Unavailable if exc.code == "unavailable" else exceptions.ValidationError)(exc.message) from None
        lease, password = issued.lease, issued.password
        data = {
            "db": lease.db,
            "auth_database": lease.db,  # the database the user authenticates against (authSource)
            "username": lease.username,
            "password": password,
            "connection_string": lease_connection_string(lease, password) or None,
            "expires_at": lease.expires_at,
        }
        return Response(
            _vault_body(
                data,
                lease_id=lease.lease_id,
                renewable=lease.renewable,
                lease_duration=int((lease.expires_at - lease.issued_at).total_seconds()),
                warnings=issued.warnings,
            ),
            headers={"Cache-Control": "no-store", "X-One-Time-Secret": "1"},  # the one response with the password
        )

    post = get


# -- sys/leases --------------------------------------------------------------------------------------------
class LeaseIdSerializer(serializers.Serializer):
    lease_id = serializers.CharField(max_length=200)


class RenewSerializer(LeaseIdSerializer):
    increment = DurationField(required=False)


def _lease_for(request, lease_id: str) -> Lease:
    """The lease `lease_id` if the caller may see it, else 404 (whether they may change it is the service's call)."""
    return get_object_or_404(leases_visible(user=request.user), lease_id=lease_id)


def _lease_summary(lease: Lease) -> dict:
    return {
        "lease_id": lease.lease_id,
        "renewable": lease.renewable,
        "lease_duration": lease.ttl_seconds if lease.state == LeaseState.ACTIVE else 0,
    }


class LeaseRenewApi(APIView):
    """`sys/leases/renew`: extend a lease by `increment` (default: its role's TTL), up to its max TTL."""

    def put(self, request, lease_id: str | None = None):
        data = {"lease_id": lease_id, **request.data} if lease_id else request.data
        serializer = RenewSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        lease = _lease_for(request, serializer.validated_data["lease_id"])
        try:
            renewed = access_lease_renew(
                user=request.user, lease=lease, increment=serializer.validated_data.get("increment")
            )
        except lease_services.LeaseError as exc:
            if exc.code == "unavailable":  # the target (e.g. the Atlas API) refused or did not answer
                raise Unavailable(exc.message) from None
            raise exceptions.ValidationError({"lease_id": exc.message}) from None
        return Response(_vault_body(None, **_lease_summary(renewed.lease), warnings=renewed.warnings))

    post = put


class LeaseRevokeApi(APIView):
    """`sys/leases/revoke`: drop the lease's user now and confirm it is gone (retried in the background if not)."""

    def put(self, request, lease_id: str | None = None):
        serializer = LeaseIdSerializer(data={"lease_id": lease_id} if lease_id else request.data)
        serializer.is_valid(raise_exception=True)
        lease = _lease_for(request, serializer.validated_data["lease_id"])
        lease = access_lease_revoke(user=request.user, lease=lease, reason="revoked")
        if lease.state in (LeaseState.REVOKED, LeaseState.EXPIRED):
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            {
                "lease_id": lease.lease_id,
                "state": lease.state,
                "message": "The revocation has not completed yet; it is retried until the user is confirmed gone.",
                "last_error": lease.last_error,
                "next_attempt_at": lease.next_attempt_at,
            },
            status=status.HTTP_202_ACCEPTED,
        )

    post = put


class LeaseRevokePrefixApi(APIView):
    """`sys/leases/revoke-prefix/{prefix}`: revoke every live lease whose id starts with the prefix."""

    def put(self, request, prefix: str):
        if not user_sees_every(request.user, Lease, "change"):
            raise exceptions.PermissionDenied("Revoking by prefix needs the access.change_lease permission.")
        leases = lease_services.lease_revoke_prefix(
            prefix=prefix, actor=request.user, queryset=leases_visible(user=request.user, action="change")
        )
        failed = [lease.lease_id for lease in leases if lease.state == LeaseState.REVOKE_FAILED]
        return Response(
            _vault_body({"revoked": len(leases) - len(failed), "failed": failed}),
            status=status.HTTP_202_ACCEPTED if failed else status.HTTP_200_OK,
        )

    post = put


class LeaseLookupApi(APIView):
    """`sys/leases/lookup`: a lease's times and state (never its password)."""

    def put(self, request):
        serializer = LeaseIdSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        lease = _lease_for(request, serializer.validated_data["lease_id"])
        return Response(
            _vault_body(
                {
                    "id": lease.lease_id,
                    "issue_time": lease.issued_at,
                    "expire_time": lease.expires_at,
                    "max_expire_time": lease.max_expires_at,
                    "renewable": lease.renewable,
                    "ttl": lease.ttl_seconds if lease.state == LeaseState.ACTIVE else 0,
                    "state": lease.state,
                    "attempts": lease.attempts,
                    "last_error": lease.last_error,
                    "username": lease.username,
                    "db": lease.db,
                }
            )
        )

    post = put
