"""Sinks: where the audit trail and the gateway command log are streamed to (a SIEM, a log shipper, a webhook).

A sink is one destination (syslog over TLS or RELP over TLS, Splunk HEC, a signed webhook, a JSON-lines file). Each
of its two streams (audit events, session commands) has a `SinkCursor`: the last record the destination confirmed,
so delivery resumes after any restart where it stopped (at least once, in order per stream). The delivery worker
(access.services.sinks) is the only writer of cursors; the admin shows their lag, last delivered id and error.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from access.fields import EncryptedTextField


def sink_file_path(name: str) -> Path:
    """The file a JSON-lines sink appends to: `name` inside `settings.PAM_SINK_FILE_DIR`, never outside it.

    Raises ValueError for an empty name or one that leaves the directory (an absolute path, `..`).
    """
    if not name or not name.strip():
        raise ValueError("A file sink needs a file name.")
    base = Path(settings.PAM_SINK_FILE_DIR).resolve()
    target = (base / name).resolve()
    if base not in target.parents:
        raise ValueError(f"The file must be inside {base} (PAM_SINK_FILE_DIR).")
    return target


class SinkKind(models.TextChoices):
    SYSLOG = "syslog", "Syslog over TLS (RFC 5424/5425, octet counting)"
    HEC = "hec", "Splunk HTTP Event Collector"
    WEBHOOK = "webhook", "Webhook (JSON, HMAC-SHA256 signed)"
    FILE = "file", "JSON-lines file"


class SyslogProtocol(models.TextChoices):
    TLS = "tls", "Syslog over TLS (RFC 5425): no acknowledgement"
    RELP = "relp", "RELP over TLS (rsyslog imrelp): each message acknowledged"


class SinkStream(models.TextChoices):
    AUDIT = "audit", "Audit events"
    COMMANDS = "commands", "Session commands"


class Sink(models.Model):
    """One destination for the audit trail and/or the gateway command log, with its transport's settings.

    Secrets (the HEC token, the webhook's HMAC key) are encrypted at rest and never shown again once saved.
    """

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=SinkKind.choices)
    enabled = models.BooleanField(default=True)
    stream_audit = models.BooleanField("send audit events", default=True)
    stream_commands = models.BooleanField("send session commands", default=False)
    # syslog
    syslog_protocol = models.CharField(
        max_length=8,
        choices=SyslogProtocol.choices,
        default=SyslogProtocol.TLS,
        help_text="RELP confirms every message, so a receiver crash loses nothing; plain TLS syslog cannot confirm.",
    )
    host = models.CharField(max_length=255, blank=True, help_text="Syslog receiver host.")
    port = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text="Usually 6514 for TLS syslog; the imrelp input's port for RELP (often 2514 or 20514).",
    )
    syslog_facility = models.PositiveSmallIntegerField(
        default=13, validators=[MaxValueValidator(23)], help_text="RFC 5424 facility; 13 is 'log audit'."
    )
    # HTTP (HEC, webhook)
    url = models.URLField(
        max_length=500, blank=True, help_text="HEC: https://splunk:8088/services/collector/event; webhook: its URL."
    )
    hec_token = EncryptedTextField("HEC token", help_text="Sent as 'Authorization: Splunk <token>'. Write-only.")
    hec_index = models.CharField("HEC index", max_length=100, blank=True)
    hec_sourcetype = models.CharField("HEC sourcetype", max_length=100, blank=True, help_text="Default: pam:<stream>.")
    hmac_key = EncryptedTextField(
        "HMAC key", help_text="Signs each webhook body (X-PAM-Signature: sha256=...). At least 16 characters."
    )
    # TLS for syslog and https
    ca_certificate = models.TextField(
        "CA certificate",
        blank=True,
        help_text="PEM of the CA that signed the receiver's certificate (else system CAs).",
    )
    tls_verify = models.BooleanField("verify the receiver's certificate", default=True)
    # file
    path = models.CharField(
        max_length=255, blank=True, help_text="File name under PAM_SINK_FILE_DIR; one JSON object per line."
    )
    batch_size = models.PositiveIntegerField(default=500, validators=[MinValueValidator(1), MaxValueValidator(10000)])
    timeout_seconds = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1), MaxValueValidator(300)])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.kind == SinkKind.SYSLOG:
            if not self.host:
                errors["host"] = "A syslog sink needs the receiver's host."
            if not self.port:
                errors["port"] = "A syslog sink needs the receiver's port (usually 6514, or the RELP input's port)."
        if self.kind in (SinkKind.HEC, SinkKind.WEBHOOK) and not self.url:
            errors["url"] = "An HTTP sink needs a URL."
        if self.kind == SinkKind.HEC and not (self.hec_token and self.hec_token.reveal()):
            errors["hec_token"] = "A HEC sink needs its token."
        if self.kind == SinkKind.WEBHOOK and len(self.hmac_key.reveal() if self.hmac_key else "") < 16:
            errors["hmac_key"] = "A webhook sink needs an HMAC key of at least 16 characters."
        if self.kind == SinkKind.FILE:
            try:
                sink_file_path(self.path)
            except ValueError as exc:
                errors["path"] = str(exc)
        if self.ca_certificate and "BEGIN CERTIFICATE" not in self.ca_certificate:
            errors["ca_certificate"] = "Paste the CA certificate in PEM form (-----BEGIN CERTIFICATE-----)."
        if not (self.stream_audit or self.stream_commands):
            errors["stream_audit"] = "Send at least one stream."
        if errors:
            raise ValidationError(errors)

    def streams(self) -> list[str]:
        """The streams this sink sends, in a fixed order."""
        return [
            stream
            for stream, wanted in ((SinkStream.AUDIT, self.stream_audit), (SinkStream.COMMANDS, self.stream_commands))
            if wanted
        ]


class SinkCursor(models.Model):
    """How far one stream of one sink got: the last position the destination confirmed, and how it is going.

    `position` is the audit event's `seq` (audit stream) or the SessionCommand's pk (commands stream); the
    worker advances it only after the destination accepted the batch, so a crash resends, never skips.
    """

    sink = models.ForeignKey(Sink, on_delete=models.CASCADE, related_name="cursors")
    stream = models.CharField(max_length=16, choices=SinkStream.choices)
    position = models.BigIntegerField(default=0)
    last_delivered_id = models.CharField(max_length=64, blank=True)
    last_delivered_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True, help_text="When the position last moved (or started).")
    delivered_total = models.BigIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0, help_text="Failed attempts since the last success.")
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    gap_since = models.DateTimeField(null=True, blank=True, help_text="A missing id is being waited for since then.")

    class Meta:
        ordering = ["sink", "stream"]
        constraints = [models.UniqueConstraint(fields=["sink", "stream"], name="sinkcursor_one_per_stream")]

    def __str__(self) -> str:
        return f"{self.sink} / {self.stream} @ {self.position}"
