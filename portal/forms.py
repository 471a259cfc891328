"""Forms of the requester portal: one-time codes, access requests, decisions, and durations people type."""

from __future__ import annotations

import re
from datetime import timedelta

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import MaxValueValidator

from access.durations import format_duration, parse_duration
from access.models.profiles import MfaMethod
from portal.sso_forms import SsoOnlyPasswordCheck


class HumanDurationFormField(forms.Field):
    """A duration typed as `30m`, `1h`, `1h30m` or seconds; bounded by `max_value` when given."""

    widget = forms.TextInput(attrs={"maxlength": 32, "size": 10})

    def __init__(self, *, max_value: timedelta | None = None, **kwargs):
        self.max_value = max_value
        kwargs.setdefault("help_text", "e.g. 30m, 1h, 2h30m")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return format_duration(value) if isinstance(value, timedelta) else value

    def to_python(self, value):
        value = (value or "").strip() if isinstance(value, str) else value
        if value in self.empty_values:
            return None
        duration = parse_duration(value)
        if self.max_value is not None and duration > self.max_value:
            raise forms.ValidationError(f"At most {format_duration(self.max_value)}.")
        return duration


class LoginForm(SsoOnlyPasswordCheck, AuthenticationForm):
    """Username and password (the first factor); refused outright for most names when PAM_SSO_ONLY is on."""

    username = forms.CharField(widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "username"}))
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))


class TokenForm(forms.Form):
    """A one-time code: six digits from the app or email, or a backup code."""

    token = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "text", "autofocus": True, "spellcheck": "false"}
        ),
    )

    def clean_token(self):
        return self.cleaned_data["token"].strip().replace(" ", "")


class MfaMethodForm(forms.Form):
    method = forms.ChoiceField(choices=MfaMethod.choices, widget=forms.RadioSelect)


class DatabaseNamesField(forms.CharField):
    """Database names typed with commas or spaces, read as a list."""

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [name for name in re.split(r"[\s,]+", text) if name]


class AccessRequestForm(forms.Form):
    """Reason and duration for a request under one policy; break-glass only where the policy allows it; for a
    gateway session, optionally fewer databases than the policy allows."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)
    duration = HumanDurationFormField()
    databases = DatabaseNamesField(label="Databases", required=False, max_length=2000)
    break_glass = forms.BooleanField(
        required=False,
        label="Break glass: emergency access now, without approval (approvers are told and will review it)",
    )

    def __init__(self, *args, policy, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy = policy
        self.fields["duration"].max_value = policy.max_duration
        self.fields["duration"].help_text = f"Up to {format_duration(policy.max_duration)}, e.g. 30m or 1h."
        self.fields["duration"].initial = min(policy.max_duration, timedelta(hours=1))
        if not policy.break_glass_allowed:
            del self.fields["break_glass"]
        if policy.account_id:
            allowed = ", ".join(policy.database_allow_list or []) or "every database"
            self.fields[
                "databases"
            ].help_text = f"Optional: only these databases, separated by commas (this policy allows {allowed})."
        else:
            del self.fields["databases"]


class DecisionForm(forms.Form):
    """An approver's decision with an optional comment."""

    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class LeaseForm(forms.Form):
    """How long the generated credentials should live (capped by the grant and the role's maximum)."""

    ttl = HumanDurationFormField(label="Lifetime", required=False)


class RenewForm(forms.Form):
    increment = HumanDurationFormField(label="Extend by", required=False)


class SessionForm(forms.Form):
    """How long a gateway session may last, whether it only reads, and optionally fewer databases than the grant."""

    duration = HumanDurationFormField()
    read_only = forms.BooleanField(required=False, label="Read-only session")
    databases = DatabaseNamesField(label="Databases", required=False, max_length=2000)


class ApiTokenForm(forms.Form):
    """A new API token: what it is for, and how many days it lives (at most PAM_API_TOKEN_MAX_DAYS)."""

    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'CI pipeline' or 'pam CLI'.")
    days = forms.IntegerField(label="Valid for (days)", min_value=1)

    def __init__(self, *args, max_days: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["days"].max_value = max_days
        self.fields["days"].validators.append(MaxValueValidator(max_days))
        self.fields["days"].widget.attrs.update({"min": 1, "max": max_days})
        self.fields["days"].help_text = f"At most {max_days} days."


class ScopedRequestForm(forms.Form):
    """Scoped access: databases and collections (from the server's list, and typed ones the envelope allows), a
    level, a duration and a reason. What falls outside the envelope is refused by the request service."""

    resources = forms.MultipleChoiceField(
        label="Databases and collections", required=False, widget=forms.CheckboxSelectMultiple
    )
    other = DatabaseNamesField(
        label="Other databases or collections",
        required=False,
        max_length=2000,
        help_text="Typed as db or db.collection, separated by commas, within what the policy allows.",
    )
    level = forms.ChoiceField(label="Permission level", widget=forms.RadioSelect)
    duration = HumanDurationFormField()
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)
    break_glass = forms.BooleanField(
        required=False,
        label="Break glass: emergency access now, without approval (approvers are told and will review it)",
    )

    def __init__(self, *args, policy, choices, **kwargs):
        super().__init__(*args, **kwargs)
        groups = []
        for database in choices.databases:
            options = [(database.name, f"{database.name} (whole database)")] if database.whole else []
            options += [(f"{database.name}.{name}", f"{database.name}.{name}") for name in database.collections]
            if options:
                groups.append((database.name, options))
        self.fields["resources"].choices = groups
        self.fields["level"].choices = [
            (level["name"], f"{level['name']} — {', '.join(level['actions'])}") for level in choices.levels
        ]
        if len(choices.levels) == 1:
            self.fields["level"].initial = choices.levels[0]["name"]
        self.fields["duration"].max_value = policy.max_duration
        self.fields["duration"].help_text = f"Up to {format_duration(policy.max_duration)}, e.g. 30m or 1h."
        self.fields["duration"].initial = min(policy.max_duration, timedelta(hours=1))
        if not policy.break_glass_allowed:
            del self.fields["break_glass"]

    def clean(self):
        cleaned = super().clean()
        chosen = list(cleaned.get("resources") or []) + list(cleaned.get("other") or [])
        if not chosen:
            self.add_error("resources", "Choose at least one database or collection.")
        cleaned["chosen"] = chosen
        return cleaned


class ScopedDecisionForm(forms.Form):
    """An approver's decision on a scoped request: what was asked may be narrowed (fewer resources, a lesser
    level, less time), never widened — the request service refuses anything wider."""

    resources = forms.MultipleChoiceField(label="Grant these", required=False, widget=forms.CheckboxSelectMultiple)
    level = forms.ChoiceField(label="Level")
    duration = HumanDurationFormField(label="For")
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])

    def __init__(self, *args, access_request, levels, **kwargs):
        super().__init__(*args, **kwargs)
        asked = access_request.scope_requested or access_request.scope
        names = [f"{r['db']}.{r['collection']}" if r.get("collection") else r["db"] for r in asked.get("resources", [])]
        self.fields["resources"].choices = [(name, name) for name in names]
        self.fields["resources"].initial = names
        self.fields["level"].choices = [(name, name) for name in levels]
        self.fields["level"].initial = asked.get("level")
        self.fields["duration"].initial = access_request.duration
