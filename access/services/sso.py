"""Single sign-on's writes: the person an identity provider signed in, their groups, the mapping table, the trail.

- `sso_user_sign_in` runs once the callback verified the identity provider's claims (access.sso_backend): it finds
  the person by (issuer, subject), or creates them (or links a pre-provisioned account that has no password),
  refreshes their name and email, brings their groups in line with the groups claim (`sso_groups_sync`) and
  records the sign-in. A deactivated person, or a name a local password account holds, is refused.
- `sso_groups_sync` is where the identity provider's groups become Django groups: a group some mapping names is
  added when the claim carries a value mapped to it and removed when it does not; groups no mapping names are left
  as they are. A removal ends at once what the person's remaining grants no longer explain (their gateway
  sessions end, their leases are revoked: access.services.offboarding), in the same transaction, audited.
- `sso_group_mapping_create/update/delete`: the admin's edits of the mapping table, audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from access.models import AuditAction, IdpMfaDevice, SsoGroupMapping, SsoIdentity
from access.services.audit import audit_record
from access.services.changes import changes_save
from access.services.offboarding import AccessEndReport, access_grants_reconcile
from access.sso_backend import SsoError, idp_asserts_mfa

# Who ends sessions and revokes leases when the identity provider takes a group away (the audit rows' actor).
SSO_ACTOR = "single sign-on"
_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")
NAME_MAX = 150


@dataclass
class GroupSyncReport:
    """The groups a sign-in added and removed (by name), and what the removal ended."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ended: AccessEndReport = field(default_factory=AccessEndReport)

    def as_dict(self) -> dict:
        return {"groups_added": self.added, "groups_removed": self.removed, **self.ended.as_dict()}


@dataclass
class SsoSignIn:
    """One accepted sign-in: the person, whether they are new, their groups' changes, the IdP's second factor."""

    user: Any
    identity: SsoIdentity
    created: bool
    groups: GroupSyncReport
    mfa_asserted: bool


def _claim_groups(claims: dict) -> list[str]:
    """The groups claim as a list of strings (a single string counts as one group; anything else as none).

    A missing claim counts as no group: many providers leave it out for people in none, and a person whose groups
    cannot be read must not keep what the groups granted (the sign-in row says whether the claim was there).
    """
    value = claims.get(settings.PAM_OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _username_from(claims: dict) -> str:
    """A user name for a new person: the configured claim, else the email, else the subject; made safe for Django."""
    for name in (settings.PAM_OIDC_USERNAME_CLAIM, "email", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return _USERNAME_UNSAFE.sub("_", value.strip())[:NAME_MAX]
    raise SsoError("the identity provider gave no name, email or subject for this person")


def _profile_fields(claims: dict) -> dict[str, str]:
    """Email and names from the standard claims, cut to Django's column widths; absent claims change nothing."""
    fields = {}
    if isinstance(claims.get("email"), str):
        fields["email"] = claims["email"][:254]
    given, family = claims.get("given_name"), claims.get("family_name")
    if isinstance(given, str) or isinstance(family, str):
        fields["first_name"] = (given or "")[:150]
        fields["last_name"] = (family or "")[:150]
    elif isinstance(claims.get("name"), str):
        first, _, last = claims["name"].partition(" ")
        fields["first_name"], fields["last_name"] = first[:150], last[:150]
    return fields


def _identity_for(*, issuer: str, subject: str, claims: dict) -> tuple[SsoIdentity, bool]:
    """The person this (issuer, subject) is: known, a pre-provisioned account without password, or a new one."""
    identity = SsoIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
    if identity is not None:
        return identity, False
    User = get_user_model()
    username = _username_from(claims)
    user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
    created = user is None
    if user is None:
        user = User.objects.create_user(username=username)  # no password: this person signs in through SSO
    elif user.has_usable_password() or SsoIdentity.objects.filter(user=user).exists():
        # Never take over a local account by its name: the identity provider may let anyone choose theirs.
        raise SsoError(
            f"a local account named {username!r} already exists: an administrator links it by removing its "
            "password (Set unusable password), or the identity provider gives another name"
        )
    identity = SsoIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    return identity, created


def sso_user_sign_in(*, issuer: str, claims: dict) -> SsoSignIn:
    """Accept a verified sign-in: the person found or created, updated, their groups synced; audited.

    Raises SsoError (nothing changed) for a deactivated person or a name a local password account holds.
    """
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise SsoError("the ID token has no subject")
    with transaction.atomic():
        identity, created = _identity_for(issuer=issuer, subject=subject, claims=claims)
        user = identity.user
        if not user.is_active:
            raise SsoError(f"the account {user.get_username()!r} is deactivated here")
        profile = _profile_fields(claims)
        changed = [name for name, value in profile.items() if getattr(user, name) != value]
        for name in changed:
            setattr(user, name, profile[name])
        if changed:
            user.save(update_fields=changed)
        claim_groups = _claim_groups(claims)
        groups = sso_groups_sync(user=user, claim_groups=claim_groups)
        identity.last_login_at = timezone.now()
        identity.last_claim_groups = claim_groups
        identity.save(update_fields=["last_login_at", "last_claim_groups"])
        mfa_asserted = idp_asserts_mfa(claims)
        audit_record(
            action=AuditAction.AUTH_SSO_LOGIN,
            actor=user,
            target=user,
            data={
                "via": "sso",
                "issuer": issuer,
                "subject": subject,
                "created": created,
                "profile_changed": changed,
                "claim_groups": claim_groups,
                "groups_claim_present": settings.PAM_OIDC_GROUPS_CLAIM in claims,
                "amr": claims.get("amr") if isinstance(claims.get("amr"), list) else [],
                "acr": claims.get("acr") if isinstance(claims.get("acr"), str) else "",
                "idp_mfa": mfa_asserted,
                **groups.as_dict(),
            },
        )
    return SsoSignIn(user=user, identity=identity, created=created, groups=groups, mfa_asserted=mfa_asserted)


def sso_groups_sync(*, user, claim_groups: list[str]) -> GroupSyncReport:
    """Make `user`'s SSO-managed groups those the claim maps to; a removal ends what no grant explains any more.

    A group is SSO-managed when some mapping names it. Audited (one row) when anything changed.
    """
    report = GroupSyncReport()
    with transaction.atomic():
        mappings = list(SsoGroupMapping.objects.select_related("group"))
        managed = {mapping.group_id: mapping.group for mapping in mappings}
        wanted = {mapping.group_id for mapping in mappings if mapping.claim_value in set(claim_groups)}
        current = set(user.groups.values_list("pk", flat=True))
        to_add, to_remove = sorted(wanted - current), sorted((current & managed.keys()) - wanted)
        if to_add:
            user.groups.add(*to_add)
        if to_remove:
            # Through the membership table rather than user.groups.remove(): the membership hook (access.receivers)
            # would reconcile under its own name; here the identity provider is the cause, named in the audit rows.
            get_user_model().groups.through.objects.filter(user=user, group_id__in=to_remove).delete()
            report.ended = access_grants_reconcile(user_ids=[user.pk], actor=SSO_ACTOR)
        report.added = sorted(managed[pk].name for pk in to_add)
        report.removed = sorted(managed[pk].name for pk in to_remove)
        if to_add or to_remove:
            audit_record(
                action=AuditAction.SSO_GROUPS_SYNC,
                actor=SSO_ACTOR,
                target=user,
                data={"claim_groups": list(claim_groups), **report.as_dict()},
            )
    return report


def idp_mfa_device_for(*, user) -> IdpMfaDevice:
    """The user's stand-in device for a second factor the identity provider asserted (made on first use)."""
    device = IdpMfaDevice.objects.filter(user=user).first()
    if device is None:
        device = IdpMfaDevice.objects.create(user=user, name="identity provider", confirmed=True)
    return device


def sso_sign_in_failed(*, reason: str, user=None, step_up: bool = False) -> None:
    """A sign-in (or a signed-in person's step-up) through the identity provider was refused: why, in words."""
    audit_record(
        action=AuditAction.AUTH_SSO_FAILED,
        actor=user if user is not None else "anonymous",
        target=user,
        data={"via": "sso", "reason": reason[:200], "step_up": step_up},
    )


def sso_step_up_passed(*, user, claims: dict) -> None:
    """The identity provider signed the person in again with a second factor: a step-up, recorded as such."""
    audit_record(
        action=AuditAction.AUTH_STEP_UP,
        actor=user,
        target=user,
        data={
            "via": "sso",
            "device": "identity provider",
            "amr": claims.get("amr") if isinstance(claims.get("amr"), list) else [],
            "acr": claims.get("acr") if isinstance(claims.get("acr"), str) else "",
        },
    )


# -- the mapping table (the admin's edits) --------------------------------------------------------------------------
def sso_group_mapping_create(*, actor, **fields: Any) -> SsoGroupMapping:
    """Map a value of the groups claim to a Django group (applied at each person's next sign-in)."""
    with transaction.atomic():
        mapping = SsoGroupMapping()
        changes_save(mapping, fields, action=AuditAction.SSO_GROUP_MAPPING_CREATE, actor=actor)
    return mapping


def sso_group_mapping_update(*, actor, mapping: SsoGroupMapping, **fields: Any) -> SsoGroupMapping:
    with transaction.atomic():
        changes_save(mapping, fields, action=AuditAction.SSO_GROUP_MAPPING_UPDATE, actor=actor)
    return mapping


def sso_group_mapping_delete(*, actor, mapping: SsoGroupMapping) -> None:
    """Delete a mapping: its group is no longer managed by SSO, and its members keep it until someone removes them."""
    with transaction.atomic():
        audit_record(
            action=AuditAction.SSO_GROUP_MAPPING_DELETE,
            actor=actor,
            target=mapping,
            data={"claim_value": mapping.claim_value, "group": mapping.group.name},
        )
        mapping.delete()
