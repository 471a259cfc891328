"""The access domain's models; every model of the project lives here."""

from access.models.actions import ConnectorAction
from access.models.audit import AuditAction, AuditEvent
from access.models.leases import DynamicRole, Lease
from access.models.locks import BackgroundLock
from access.models.notifications import Notification, NotificationTarget
from access.models.policies import AccessPolicy, AccessRequest
from access.models.profiles import UserProfile
from access.models.resources import Account, Gateway, Resource
from access.models.sessions import Session, SessionCommand, SessionRevocation
from access.models.sinks import Sink, SinkCursor
from access.models.sso import IdpMfaDevice, SsoGroupMapping, SsoIdentity
from access.models.tokens import ApiToken

__all__ = [
    "AccessPolicy",
    "AccessRequest",
    "Account",
    "ApiToken",
    "AuditAction",
    "AuditEvent",
    "BackgroundLock",
    "ConnectorAction",
    "DynamicRole",
    "Gateway",
    "IdpMfaDevice",
    "Lease",
    "Notification",
    "NotificationTarget",
    "Resource",
    "Session",
    "SessionCommand",
    "SessionRevocation",
    "Sink",
    "SinkCursor",
    "SsoGroupMapping",
    "SsoIdentity",
    "UserProfile",
]
