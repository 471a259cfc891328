"""API views for resources and accounts: validation in serializers, writes in services."""

from __future__ import annotations

from rest_framework import permissions, viewsets

from access.api.serializers import AccountSerializer, ResourceSerializer
from access.models import Account, Resource
from access.services import resources as resource_services


class ModelPermissions(permissions.DjangoModelPermissions):
    """Django model permissions, with read access requiring the view permission too."""

    perms_map = {**permissions.DjangoModelPermissions.perms_map, "GET": ["%(app_label)s.view_%(model_name)s"]}


class ResourceViewSet(viewsets.ModelViewSet):
    """MongoDB deployments and Atlas projects. Secrets are write-only."""

    queryset = Resource.objects.select_related("gateway").order_by("name")
    serializer_class = ResourceSerializer
    permission_classes = [ModelPermissions]
    lookup_field = "name"

    def perform_create(self, serializer):
        serializer.instance = resource_services.resource_create(actor=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = resource_services.resource_update(
            actor=self.request.user, resource=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        resource_services.resource_delete(actor=self.request.user, resource=instance)


class AccountViewSet(viewsets.ModelViewSet):
    """Stored database accounts. The password is write-only and never returned."""

    queryset = Account.objects.select_related("resource").order_by("resource__name", "name")
    serializer_class = AccountSerializer
    permission_classes = [ModelPermissions]

    def perform_create(self, serializer):
        serializer.instance = resource_services.account_create(actor=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = resource_services.account_update(
            actor=self.request.user, account=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        resource_services.account_delete(actor=self.request.user, account=instance)
