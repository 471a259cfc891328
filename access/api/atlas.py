"""The Atlas branch of the Vault-shaped roles API: what `mongodb/{resource}/roles/{name}` takes for an Atlas project.

An Atlas role names Atlas roles as `{"roleName", "databaseName", "collectionName"?}` documents and may limit
the clusters with `scopes` `[{"name", "type": CLUSTER|DATA_LAKE|STREAM}]` (empty: every cluster). Leased
users always authenticate against `admin` (Atlas SCRAM users), so there is no `db` to choose. Called by
access.api.vault (RoleApi picks the serializer by the resource's kind; _role_data adds `scopes`).
"""

from __future__ import annotations

from rest_framework import serializers

from access.api.serializers import RoleTermsSerializer, ValidatedListField
from access.models.leases import ATLAS_USERS_DB_MESSAGE
from access.validators import validate_atlas_roles, validate_atlas_scopes


class AtlasRoleSerializer(RoleTermsSerializer):
    """Fields of an Atlas dynamic role; `db` is not accepted (Atlas users live in `admin`)."""

    roles = ValidatedListField(validate_atlas_roles, required=False)
    scopes = ValidatedListField(validate_atlas_scopes, required=False)

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if "db" in unknown:
            raise serializers.ValidationError({"db": ATLAS_USERS_DB_MESSAGE})
        return {"db": "admin", **attrs}
