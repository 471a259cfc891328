"""Model and form fields: encrypted secrets and human-friendly durations."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.db import models
from django.db.models.query_utils import DeferredAttribute

from access.crypto import Secret
from access.durations import format_duration, parse_duration


class SecretAttribute(DeferredAttribute):
    """Wraps whatever is assigned in a `Secret`, so plain text never sits unmasked on a model instance."""

    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = Secret.of(value)


class EncryptedTextField(models.TextField):
    """Stores a `Secret` encrypted with the configured Fernet keys; reads back a masked `Secret`.

    Assign a plain string or a Secret; read a Secret and call `.reveal()` where the plain text is
    really needed. The column only ever holds ciphertext.
    """

    description = "An encrypted secret"
    descriptor_class = SecretAttribute

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("blank", True)
        kwargs.setdefault("default", "")
        kwargs.setdefault("editable", True)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return Secret(token=value) if value else Secret(plain="")

    def to_python(self, value):
        if value is None or isinstance(value, Secret):
            return value
        return Secret(plain=str(value))

    def get_prep_value(self, value):
        if value is None:
            return None
        if not isinstance(value, Secret):
            value = Secret(plain=str(value))
        return value.token

    def value_to_string(self, obj):
        value = self.value_from_object(obj)
        return value.token if isinstance(value, Secret) else ""

    def save_form_data(self, instance, data):
        # A blank secret input means "keep the stored value", so editing a record never erases it.
        if data is not None:
            super().save_form_data(instance, data)

    def formfield(self, **kwargs):
        return SecretFormField(required=False, label=self.verbose_name, help_text=self.help_text)


class SecretFormField(forms.CharField):
    """A write-only input: never renders the stored value; blank means "keep the current one"."""

    widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})

    def __init__(self, **kwargs):
        kwargs.setdefault("strip", False)
        kwargs.pop("max_length", None)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return ""

    def to_python(self, value):
        return super().to_python(value) or None

    def has_changed(self, initial, data):
        return bool(data)


class DurationFormField(forms.Field):
    """Accepts 90s, 30m, 1h, 1h30m, 2d or a number of seconds."""

    widget = forms.TextInput(attrs={"placeholder": "e.g. 30m, 1h, 3600"})

    def prepare_value(self, value):
        return format_duration(value) if isinstance(value, timedelta) else value

    def to_python(self, value):
        if value in self.empty_values:
            return None
        return parse_duration(value)


class HumanDurationField(models.DurationField):
    """A DurationField whose admin input takes human durations."""

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": DurationFormField, **kwargs})
