"""Where access leads: gateways, MongoDB deployments and Atlas projects, and the accounts stored for them."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from access.fields import EncryptedTextField, HumanDurationField
from access.validators import (
    URI_TLS_INSECURE_OPTIONS,
    split_mongodb_uri,
    uri_option_is_true,
    validate_resource_uri,
)


class GatewayQuerySet(models.QuerySet):
    def alive(self, now=None, *, grace: timedelta = timedelta(seconds=60)):
        """Gateways whose heartbeat is recent enough to trust."""
        now = now or timezone.now()
        return self.filter(last_heartbeat__gte=now - grace)


class Gateway(models.Model):
    """A host that runs `manage.py runproxy`; clients connect to its public address with session credentials."""

    name = models.SlugField(max_length=64, unique=True)
    public_host = models.CharField(max_length=255, default="127.0.0.1", help_text="Host name clients connect to.")
    public_port = models.PositiveIntegerField(
        default=27018, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    description = models.TextField(blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = GatewayQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"{host}:{self.public_port}"


def default_command_deny_list() -> list[str]:
    return [
        "dropDatabase",
        "shutdown",
        "createUser",
        "dropUser",
        "updateUser",
        "grantRolesToUser",
        "revokeRolesFromUser",
        "dropAllUsersFromDatabase",
        "createRole",
        "dropRole",
        "setParameter",
    ]


class ResourceKind(models.TextChoices):
    MONGODB = "mongodb", "MongoDB deployment"
    ATLAS = "atlas", "MongoDB Atlas project"


class ResourceQuerySet(models.QuerySet):
    def mongodb(self):
        return self.filter(kind=ResourceKind.MONGODB)

    def atlas(self):
        return self.filter(kind=ResourceKind.ATLAS)


class Resource(models.Model):
    """A MongoDB deployment (URI without credentials) or an Atlas project, with the admin account connectors use.

    The admin account's password and the Atlas private key are stored encrypted; `default_ttl` and
    `max_ttl` are the lease defaults (Vault's `config/lease`), overridable per role.
    """

    name = models.SlugField(max_length=64, unique=True, help_text="Used in URLs, e.g. /api/v1/mongodb/NAME/creds/ROLE.")
    kind = models.CharField(max_length=16, choices=ResourceKind.choices, default=ResourceKind.MONGODB)
    description = models.TextField(blank=True)
    uri = models.CharField(
        "URI",
        max_length=1024,
        blank=True,
        validators=[validate_resource_uri],
        help_text="mongodb:// or mongodb+srv:// with hosts and options only: no credentials, no database.",
    )
    auth_database = models.CharField(max_length=64, default="admin")
    tls = models.BooleanField("TLS", default=True)
    tls_verify = models.BooleanField("verify TLS certificates", default=True)
    ca_certificate = models.TextField("CA certificate (PEM)", blank=True)
    gateway = models.ForeignKey(Gateway, null=True, blank=True, on_delete=models.SET_NULL, related_name="resources")
    admin_username = models.CharField(max_length=255, blank=True)
    admin_password = EncryptedTextField(help_text="Write-only. Leave blank to keep the stored password.")
    atlas_group_id = models.CharField("Atlas project (group) id", max_length=64, blank=True)
    atlas_public_key = models.CharField("Atlas API public key", max_length=64, blank=True)
    atlas_private_key = EncryptedTextField("Atlas API private key", help_text="Write-only.")
    atlas_base_url = models.URLField("Atlas base URL", default="https://cloud.mongodb.com")
    default_ttl = HumanDurationField(default=timedelta(hours=1), help_text="Lease TTL when a role sets none.")
    max_ttl = HumanDurationField(default=timedelta(hours=24), help_text="Longest a lease may live, renewals included.")
    full_command_logging = models.BooleanField(
        default=False,
        help_text="Record document values in session command logs (otherwise they are redacted).",
    )
    allow_secondary_reads = models.BooleanField(
        default=False,
        help_text="Gateway sessions on a replica set: reads with a secondary or secondaryPreferred read preference "
        "go to a secondary (otherwise every command goes to the primary).",
    )
    command_deny_list = models.JSONField(
        default=default_command_deny_list,
        blank=True,
        help_text="Commands the gateway refuses in every session on this resource.",
    )
    root_rotation_error = models.TextField(blank=True, help_text="Last root rotation problem, if any.")
    pending_admin_password = EncryptedTextField(
        help_text="A new admin password set on the server but not yet verified (root rotation); write-only."
    )
    verified_fingerprint = models.CharField(
        max_length=64,
        blank=True,
        editable=False,
        help_text="The connection settings (hosts, options, TLS) stored credentials may be sent to: those of the "
        "resource's creation or of its last successful verification.",
    )
    verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ResourceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(default_ttl__lte=F("max_ttl")), name="resource_ttl_within_max"),
            models.CheckConstraint(condition=Q(kind=ResourceKind.ATLAS) | ~Q(uri=""), name="resource_mongodb_has_uri"),
            models.CheckConstraint(
                condition=Q(kind=ResourceKind.MONGODB) | ~Q(atlas_group_id=""),
                name="resource_atlas_has_group",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        # A new resource's credentials come with its settings: they are trusted as created. A later change of
        # hosts or TLS is trusted only once verified (access.services.connections).
        if self._state.adding and not self.verified_fingerprint:
            self.verified_fingerprint = self.connection_fingerprint()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        errors = {}
        if self.kind == ResourceKind.MONGODB and not self.uri:
            errors["uri"] = "A MongoDB resource needs a URI, for example mongodb://db1.example.com:27017."
        if self.kind == ResourceKind.ATLAS and not self.atlas_group_id:
            errors["atlas_group_id"] = "An Atlas resource needs its project (group) id."
        if self.default_ttl and self.max_ttl and self.default_ttl > self.max_ttl:
            errors["default_ttl"] = "The default TTL cannot be longer than the max TTL."
        if self.kind == ResourceKind.MONGODB and self.uri and "uri" not in errors:
            tls_problem = self._uri_tls_contradiction()
            if tls_problem:
                errors["uri"] = tls_problem
        if errors:
            raise ValidationError(errors)

    def _uri_tls_contradiction(self) -> str:
        """Words for a TLS option of the URI that says otherwise than the resource's TLS fields, or ""."""
        try:
            options = split_mongodb_uri(self.uri)[4]
            tls = [uri_option_is_true(options, name) for name in ("tls", "ssl")]
            insecure = [uri_option_is_true(options, name) for name in sorted(URI_TLS_INSECURE_OPTIONS)]
        except ValidationError:
            return ""  # the URI's own validator says what is wrong with it
        if any(value is not None and value != bool(self.tls) for value in tls):
            return "The URI's tls option says otherwise than the resource's TLS setting: set TLS with its checkbox."
        if self.tls and self.tls_verify and any(insecure):
            return (
                "The URI turns certificate checks off while the resource verifies TLS certificates: "
                "untick 'verify TLS certificates' instead (it is recorded and shown)."
            )
        return ""

    def connection_fingerprint(self) -> str:
        """A digest of where and how stored credentials are sent: the URI (hosts, options), TLS and its CA.

        For an Atlas project, the Admin API's base URL (where the API key signs in).
        """
        if self.kind == ResourceKind.ATLAS:
            settings = {"kind": self.kind, "atlas_base_url": (self.atlas_base_url or "").strip()}
        else:
            settings = {
                "kind": self.kind,
                "uri": (self.uri or "").strip(),
                "tls": bool(self.tls),
                "tls_verify": bool(self.tls_verify),
                "ca_certificate": (self.ca_certificate or "").strip(),
            }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    @property
    def connection_verified(self) -> bool:
        """Whether the current connection settings are those created with or last verified (credentials may go)."""
        return bool(self.verified_fingerprint) and self.verified_fingerprint == self.connection_fingerprint()

    @property
    def is_atlas(self) -> bool:
        return self.kind == ResourceKind.ATLAS


class AccountQuerySet(models.QuerySet):
    def for_resource(self, resource):
        return self.filter(resource=resource)

    def granted_to(self, user):
        """Accounts an enabled policy names for `user` (directly or through a group): what they may ask to use."""
        from access.models.policies import AccessPolicy  # policies refer to accounts: imported when asked

        return self.filter(
            pk__in=AccessPolicy.objects.granted_to(user).filter(account__isnull=False).values("account_id")
        )


class Account(models.Model):
    """Stored credentials for one database user on a resource (a PAM account); users never see the password."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="accounts")
    name = models.SlugField(max_length=64)
    description = models.TextField(blank=True)
    username = models.CharField(max_length=255)
    password = EncryptedTextField(help_text="Write-only. Leave blank to keep the stored password.")
    require_mfa = models.BooleanField("require MFA", default=False)
    rotation_period = HumanDurationField(null=True, blank=True, help_text="Rotate the password this often.")
    last_rotated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AccountQuerySet.as_manager()

    class Meta:
        ordering = ["resource__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["resource", "name"], name="account_unique_name"),
            models.UniqueConstraint(fields=["resource", "username"], name="account_unique_username"),
        ]

    def __str__(self) -> str:
        return f"{self.resource.name}/{self.name}"

    def clean(self) -> None:
        # Without its password an account cannot log in upstream: every door refuses one (a blank input on an
        # existing account keeps the stored password, so this bites only on creation).
        if not self.password:
            raise ValidationError({"password": "An account needs the database user's password."})
