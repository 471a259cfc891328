"""factory-boy factories for the domain models, and `resource_on(server)`: a Resource on a MongoDB test server."""

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from access.models import AccessPolicy, Account, DynamicRole, Gateway, Lease, Resource, Session


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class GatewayFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Gateway

    name = factory.Sequence(lambda n: f"gw{n}")


class ResourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Resource

    name = factory.Sequence(lambda n: f"mongo{n}")
    uri = "mongodb://127.0.0.1:27017"
    tls = False
    admin_username = "admin"
    admin_password = factory.Sequence(lambda n: f"admin-secret-{n}-Zq8")


def resource_on(server, **fields) -> Resource:
    """A Resource whose admin account is the test server's own: the in-repo wire server or FerretDB."""
    if hasattr(server, "admin_user"):  # tests.mongo.wireserver.WireServer
        host_port, username, password = server.host_port, server.admin_user, server.admin_password
    else:  # tests.mongo.ferretdb.FerretDB
        host_port, username, password = f"127.0.0.1:{server.port}", server.username, server.password
    return ResourceFactory(
        uri=f"mongodb://{host_port}/?directConnection=true",
        admin_username=username,
        admin_password=password,
        **fields,
    )


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account

    resource = factory.SubFactory(ResourceFactory)
    name = factory.Sequence(lambda n: f"app{n}")
    username = factory.Sequence(lambda n: f"app_user{n}")
    password = factory.Sequence(lambda n: f"account-secret-{n}-Kp3")


class DynamicRoleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DynamicRole

    resource = factory.SubFactory(ResourceFactory)
    name = factory.Sequence(lambda n: f"role{n}")
    db = "app"
    roles = factory.LazyFunction(lambda: ["readWrite"])


class LeaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lease

    role = factory.SubFactory(DynamicRoleFactory)
    resource = factory.SelfAttribute("role.resource")
    lease_id = factory.Sequence(lambda n: f"mongodb/creds/role/{n:08d}")
    holder = factory.SubFactory(UserFactory)
    holder_name = factory.SelfAttribute("holder.username")
    db = "app"
    username = factory.Sequence(lambda n: f"v-user-role-{n}")
    password = factory.Sequence(lambda n: f"lease-secret-{n}-Xy7")
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))
    max_expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=24))


class AccessPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AccessPolicy

    name = factory.Sequence(lambda n: f"policy{n}")
    user = factory.SubFactory(UserFactory)
    account = factory.SubFactory(AccountFactory)


class SessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Session

    user = factory.SubFactory(UserFactory)
    account = factory.SubFactory(AccountFactory)
    username = factory.Sequence(lambda n: f"s-{n:06d}")
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))
