"""The security team's admin (behind OTP, see portal.admin_site): one module per area, every model registered here.

Configuration (gateways, resources, accounts, dynamic roles, access policies, permission levels, sinks, notification
targets) is saved and deleted through the same services as the API (access.services.*): the same validation, the
same audit row, the same side effects. Records (leases, sessions, session commands, audit events, connector
actions, access requests, API tokens, notifications sent) are read-only: no add, no save, no delete; the actions on
them (revoke, kill, roll back, approve) call services.
"""

from axes.models import AccessAttempt
from django.contrib.admin import site as admin_site
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from oauth2_provider.models import get_refresh_token_model

from access.admin.accounts import AccountAdmin
from access.admin.actions import ConnectorActionAdmin
from access.admin.audit import AuditEventAdmin
from access.admin.cli import CliLoginAdmin, unregister_toolkit_token_admins
from access.admin.gateways import GatewayAdmin
from access.admin.leases import LeaseAdmin
from access.admin.policies import AccessPolicyAdmin
from access.admin.requests import AccessRequestAdmin
from access.admin.resources import ResourceAdmin
from access.admin.roles import DynamicRoleAdmin
from access.admin.scoped import PermissionLevelAdmin
from access.admin.sessions import SessionAdmin, SessionCommandAdmin
from access.admin.sinks import NotificationAdmin, NotificationTargetAdmin, SinkAdmin
from access.admin.sso import SsoGroupMappingAdmin, SsoIdentityAdmin
from access.admin.tokens import ApiTokenAdmin
from access.admin.users import LockoutAdmin, PamGroupAdmin, PamUserAdmin
from access.models import (
    AccessPolicy,
    AccessRequest,
    Account,
    ApiToken,
    AuditEvent,
    ConnectorAction,
    DynamicRole,
    Gateway,
    Lease,
    Notification,
    NotificationTarget,
    PermissionLevel,
    Resource,
    Session,
    SessionCommand,
    Sink,
    SsoGroupMapping,
    SsoIdentity,
)

# `admin.site` is the OTP admin site (portal.apps.PamAdminConfig.default_site).
admin_site.register(Gateway, GatewayAdmin)
admin_site.register(Resource, ResourceAdmin)
admin_site.register(Account, AccountAdmin)
admin_site.register(DynamicRole, DynamicRoleAdmin)
admin_site.register(AccessPolicy, AccessPolicyAdmin)
admin_site.register(PermissionLevel, PermissionLevelAdmin)
admin_site.register(AccessRequest, AccessRequestAdmin)
admin_site.register(Lease, LeaseAdmin)
admin_site.register(Session, SessionAdmin)
admin_site.register(SessionCommand, SessionCommandAdmin)
admin_site.register(AuditEvent, AuditEventAdmin)
admin_site.register(ConnectorAction, ConnectorActionAdmin)
admin_site.register(ApiToken, ApiTokenAdmin)
admin_site.register(Sink, SinkAdmin)
admin_site.register(NotificationTarget, NotificationTargetAdmin)
admin_site.register(Notification, NotificationAdmin)
admin_site.register(SsoGroupMapping, SsoGroupMappingAdmin)
admin_site.register(SsoIdentity, SsoIdentityAdmin)

# People, groups and lockouts replace the admins Django and django-axes register, so that deactivating or deleting
# a person, deleting a group and clearing a lockout go through the services (access/admin/users.py).
for model, model_admin in ((get_user_model(), PamUserAdmin), (Group, PamGroupAdmin), (AccessAttempt, LockoutAdmin)):
    if admin_site.is_registered(model):
        admin_site.unregister(model)
    admin_site.register(model, model_admin)
unregister_toolkit_token_admins(admin_site)
if admin_site.is_registered(get_refresh_token_model()):
    admin_site.unregister(get_refresh_token_model())
admin_site.register(get_refresh_token_model(), CliLoginAdmin)
