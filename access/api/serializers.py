"""API representations of resources and accounts; secrets are write-only and validation matches the admin."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from access.durations import format_duration, parse_duration
from access.models import Account, Gateway, Resource
from access.services.connections import resource_changes_need_verification, resource_changes_verify
from access.services.resources import ACCOUNT_FIELDS, ACCOUNT_RECORDED_FIELDS


class DurationField(serializers.Field):
    """Accepts 90s, 30m, 1h, 3600; renders the shortest human form."""

    default_error_messages = {"invalid": "Enter a duration such as 90s, 30m, 1h or 3600 (seconds)."}

    def to_internal_value(self, data):
        try:
            return parse_duration(data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def to_representation(self, value):
        return format_duration(value)


class ValidatedListField(serializers.Field):
    """A list given as JSON or as a JSON string (Vault's form), checked by one of access.validators."""

    def __init__(self, validator, **kwargs):
        self.validator = validator
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        from access.validators import parse_roles

        try:
            value = parse_roles(data)
            self.validator(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value

    def to_representation(self, value):
        return value


def run_model_clean(instance, attrs: dict) -> None:
    """Apply attrs to a throwaway copy and run the model's own validation, mapping errors to fields."""
    for name, value in attrs.items():
        setattr(instance, name, value)
    try:
        instance.full_clean(validate_unique=False, validate_constraints=False)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.message_dict) from None


def secret_field() -> serializers.CharField:
    """A secret the API takes but never returns; blank keeps the stored one (access.services.changes)."""
    return serializers.CharField(
        write_only=True, required=False, allow_blank=True, style={"input_type": "password"}, trim_whitespace=False
    )


class RoleTermsSerializer(serializers.Serializer):
    """The terms every dynamic role has (MongoDB or Atlas): TTLs, how its users are named, password length."""

    default_ttl = DurationField(required=False, allow_null=True)
    max_ttl = DurationField(required=False, allow_null=True)
    username_template = serializers.CharField(max_length=200, required=False)
    password_length = serializers.IntegerField(required=False, min_value=16, max_value=128)
    description = serializers.CharField(required=False, allow_blank=True)


class ResourceSerializer(serializers.ModelSerializer):
    gateway = serializers.SlugRelatedField(
        slug_field="name", queryset=Gateway.objects.all(), required=False, allow_null=True
    )
    admin_password = secret_field()
    atlas_private_key = secret_field()
    default_ttl = DurationField(required=False)
    max_ttl = DurationField(required=False)
    verify_connection = serializers.BooleanField(
        write_only=True,
        required=False,
        default=False,
        help_text="Log in over the new settings before saving (as the admin form does); without it, changed hosts "
        "or TLS settings hold stored credentials back until a verification succeeds.",
    )
    connection_verified = serializers.BooleanField(read_only=True)

    class Meta:
        model = Resource
        fields = [
            "id",
            "name",
            "kind",
            "description",
            "uri",
            "auth_database",
            "tls",
            "tls_verify",
            "ca_certificate",
            "gateway",
            "admin_username",
            "admin_password",
            "atlas_group_id",
            "atlas_public_key",
            "atlas_private_key",
            "atlas_base_url",
            "default_ttl",
            "max_ttl",
            "full_command_logging",
            "allow_secondary_reads",
            "verify_connection",
            "connection_verified",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate(self, attrs):
        verify = attrs.pop("verify_connection", False)
        probe = (
            Resource(**{f.name: getattr(self.instance, f.name) for f in Resource._meta.concrete_fields})
            if self.instance
            else Resource()
        )
        run_model_clean(probe, {k: v for k, v in attrs.items() if k not in ("admin_password", "atlas_private_key")})
        if verify and resource_changes_need_verification(resource=self.instance, fields=attrs):
            # The admin form's verification (access.services.connections): same login, same words.
            try:
                attrs["verified_fingerprint"] = resource_changes_verify(resource=self.instance, fields=attrs)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.message_dict) from None
        return attrs


class AccountSerializer(serializers.ModelSerializer):
    resource = serializers.SlugRelatedField(slug_field="name", queryset=Resource.objects.all())
    password = secret_field()
    rotation_period = DurationField(required=False, allow_null=True)

    class Meta:
        model = Account
        fields = ["id", *ACCOUNT_FIELDS, *ACCOUNT_RECORDED_FIELDS]
        read_only_fields = ["id", *ACCOUNT_RECORDED_FIELDS]
        # An account without a password is refused by the model's own validation (Account.clean), which the
        # service runs: the API and the admin give the same answer.
