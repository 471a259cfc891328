"""What a running gateway (`manage.py runproxy`) asks of and tells the domain, through `sync_to_async`.

The proxy never touches models: it registers itself and heartbeats, looks up the session a client
logs in as (verifiers to check the client's SCRAM proof, and the upstream target with the real
account password to log in upstream), reports connections and batches of redacted commands, and
polls which of its sessions must close. Everything here is synchronous Django code, cheap enough
to call from the proxy's event loop through a thread, and never on the per-message path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from access.events import (
    COMMAND_EVENT,
    command_event_fields,
    publish_session_event,
    session_events_use_channel_layer,
)
from access.models import AuditAction, Gateway, Session, SessionCommand
from access.models.leases import LeaseState
from access.models.sessions import SessionEndReason, SessionState
from access.services.audit import audit_record
from access.services.sessions import _session_end_if_open, session_end_many
from gatewayproxy.host import Password, SessionLogin, UpstreamTarget


def gateway_register(*, name: str, public_host: str, public_port: int) -> Gateway:
    """Create or update the Gateway row a starting runproxy runs as, and mark it alive."""
    with transaction.atomic():
        gateway, created = Gateway.objects.select_for_update().get_or_create(
            name=name, defaults={"public_host": public_host, "public_port": public_port}
        )
        changed = {}
        if not created and (gateway.public_host, gateway.public_port) != (public_host, public_port):
            changed = {"public_host": public_host, "public_port": public_port}
            gateway.public_host, gateway.public_port = public_host, public_port
        gateway.last_heartbeat = timezone.now()
        gateway.save()
        audit_record(
            action=AuditAction.GATEWAY_REGISTER,
            actor="gateway",
            target=gateway,
            data={"created": created, "address": gateway.address, "changed": changed},
        )
    return gateway


def gateway_heartbeat(*, gateway_id: int) -> None:
    """Record that the gateway is alive (telemetry, not audited). Raises Gateway.DoesNotExist if it was deleted."""
    if not Gateway.objects.filter(pk=gateway_id).update(last_heartbeat=timezone.now()):
        raise Gateway.DoesNotExist(f"Gateway {gateway_id} no longer exists.")


def session_login_lookup(*, username: str) -> SessionLogin | None:
    """The live session logging in as `username`, or None (unknown, ended, expired, or its target is gone).

    The account's (or lease's) password is decrypted here, in the caller's worker thread, and handed to the
    gateway as a `gatewayproxy.host.Password`, which keeps it out of every repr.
    """
    session = (
        Session.objects.live().select_related("account__resource", "lease__resource").filter(username=username).first()
    )
    if session is None:
        return None
    if session.account is not None:
        resource = session.account.resource
        username_upstream, password, auth_database = (
            session.account.username,
            session.account.password,
            resource.auth_database,
        )
    elif session.lease is not None and session.lease.state == LeaseState.ACTIVE:
        resource = session.lease.resource
        username_upstream, password, auth_database = session.lease.username, session.lease.password, session.lease.db
    else:
        return None
    if password is None:
        return None
    return SessionLogin(
        session_id=session.pk,
        public_id=session.public_id,
        username=session.username,
        verifiers=dict(session.verifiers),
        expires_at=session.expires_at,
        read_only=session.read_only,
        database_allow_list=list(session.database_allow_list or []),
        command_deny_list=list(resource.command_deny_list or []),
        full_command_logging=resource.full_command_logging,
        upstream=UpstreamTarget(
            uri=resource.uri,
            auth_database=auth_database,
            tls=resource.tls,
            tls_verify=resource.tls_verify,
            ca_certificate=resource.ca_certificate,
            username=username_upstream,
            password=Password(password.reveal()),
        ),
    )


def session_connected(*, session_id: int, gateway_id: int | None, client_address: str) -> None:
    """Count a client connection that logged in; the first one is audited and stamps `first_connected_at`."""
    now = timezone.now()
    with transaction.atomic():
        Session.objects.filter(pk=session_id).update(
            connections=F("connections") + 1, client_address=client_address[:64]
        )
        if gateway_id is not None:
            Session.objects.filter(pk=session_id).exclude(gateway_id=gateway_id).update(gateway_id=gateway_id)
        first = Session.objects.filter(pk=session_id, first_connected_at__isnull=True).update(first_connected_at=now)
        if first:
            session = Session.objects.get(pk=session_id)
            audit_record(
                action=AuditAction.SESSION_CONNECT,
                actor=session.user or session.user_name or "system",
                target=session,
                data={"client_address": client_address[:64], "gateway_id": gateway_id},
            )


_LIMITS = {"database": 128, "collection": 255, "command": 64, "error_message": 500}
_SECRET_SUMMARY_KEYS = {"pwd", "password", "payload", "speculativeauthenticate", "secret"}


def _scrub_summary(value: Any) -> Any:
    """A last guard behind the proxy's redaction: drop values of keys that may carry credentials."""
    if isinstance(value, dict):
        return {
            key: "[redacted]" if str(key).lower() in _SECRET_SUMMARY_KEYS else _scrub_summary(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub_summary(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # an ObjectId, a datetime, bytes...: the log stores JSON


def _as_datetime(value: Any) -> datetime:
    if value is None:
        return timezone.now()
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = parse_datetime(str(value))
    return parsed if parsed is not None else timezone.now()


_COLUMNS = (
    "session_id",
    "at",
    "connection_id",
    "database",
    "collection",
    "command",
    "summary",
    "ok",
    "n",
    "error_code",
    "error_message",
    "refused",
    "latency_us",
)


def _command_values(item: dict) -> dict[str, Any]:
    """One command dict from the gateway, bounded and scrubbed, as SessionCommand field values."""
    return {
        "session_id": int(item["session_id"]),
        "at": _as_datetime(item.get("at")),
        "connection_id": max(int(item.get("connection_id") or 0), 0),
        "database": str(item.get("database") or "")[: _LIMITS["database"]],
        "collection": str(item.get("collection") or "")[: _LIMITS["collection"]],
        "command": str(item.get("command") or "")[: _LIMITS["command"]],
        "summary": _scrub_summary(item.get("summary") or {}),
        "ok": bool(item.get("ok", True)),
        "n": _int_or_none(item.get("n")),
        "error_code": _int_or_none(item.get("error_code")),
        "error_message": str(item.get("error_message") or "")[: _LIMITS["error_message"]],
        "refused": bool(item.get("refused", False)),
        "latency_us": max(int(item.get("latency_us") or 0), 0),
    }


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _insert_commands(values: list[dict[str, Any]]) -> None:
    """Insert command rows with one executemany: about ten times faster than bulk_create, and the gateway's
    flusher thread shares the CPU with the relay. Values are adapted by the fields, as the ORM would."""
    fields = [SessionCommand._meta.get_field(name) for name in _COLUMNS]
    at_field, summary_field = SessionCommand._meta.get_field("at"), SessionCommand._meta.get_field("summary")
    quote = connection.ops.quote_name
    # Only the model's own table and column names are interpolated; every value is a bound parameter.
    table, columns = quote(SessionCommand._meta.db_table), ", ".join(quote(f.column) for f in fields)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
    params = []
    for row in values:
        row = {
            **row,
            "at": at_field.get_db_prep_save(row["at"], connection),
            "summary": summary_field.get_db_prep_save(row["summary"], connection),
        }
        params.append([row[name] for name in _COLUMNS])
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def session_commands_record(*, commands: list[dict]) -> None:
    """Store a batch of redacted commands, add them to the sessions' counters, and publish them live.

    Each dict has `session_id` and `command`, optionally `at` (datetime, ISO text or epoch seconds),
    `connection_id`, `database`, `collection`, `summary`, `ok`, `n`, `error_code`, `error_message`,
    `refused`, `latency_us`, and the connection's traffic since the last batch, `bytes_in`/`bytes_out`.
    A dict without `command` only adds its bytes. Commands of sessions that no longer exist are dropped.
    Rows are inserted with one executemany; only when events travel through a channel layer (which
    needs the new rows' ids) are they created with bulk_create.
    """
    if not commands:
        return
    session_ids = {int(item["session_id"]) for item in commands}
    with transaction.atomic():
        known = set(Session.objects.filter(pk__in=session_ids).values_list("pk", flat=True))
        items = [item for item in commands if int(item["session_id"]) in known]
        values = [_command_values(item) for item in items if item.get("command")]
        if values and session_events_use_channel_layer():
            rows = SessionCommand.objects.bulk_create([SessionCommand(**row) for row in values])
            transaction.on_commit(lambda: _publish_commands(rows))
        elif values:
            _insert_commands(values)
        totals: dict[int, list[int]] = {}
        for item in items:
            total = totals.setdefault(int(item["session_id"]), [0, 0, 0])
            total[0] += 1 if item.get("command") else 0
            total[1] += int(item.get("bytes_in") or 0)
            total[2] += int(item.get("bytes_out") or 0)
        for session_id, (count, bytes_in, bytes_out) in totals.items():
            Session.objects.filter(pk=session_id).update(
                commands_count=F("commands_count") + count,
                bytes_in=F("bytes_in") + bytes_in,
                bytes_out=F("bytes_out") + bytes_out,
            )


def _publish_commands(rows: list[SessionCommand]) -> None:
    sessions = {session.pk: session for session in Session.objects.filter(pk__in={row.session_id for row in rows})}
    for row in rows:
        publish_session_event(sessions[row.session_id], {"type": COMMAND_EVENT, "command": command_event_fields(row)})


def sessions_to_close(*, gateway_id: int | None, session_ids: list[int]) -> dict[int, str]:
    """Which of the gateway's sessions must close now, with the reason; due sessions are ended here as expired.

    A session closes when it has ended (any reason), expired, lost its account or lease, or no longer
    exists (reported as `killed`).
    """
    wanted = {int(pk) for pk in session_ids}
    if not wanted:
        return {}
    now = timezone.now()
    found = {
        session.pk: session
        for session in Session.objects.filter(pk__in=wanted)
        .select_related("lease")
        .only("pk", "state", "end_reason", "expires_at", "account_id", "lease_id", "lease__state", "username")
    }
    closing: dict[int, str] = {}
    for pk in wanted:
        session = found.get(pk)
        if session is None:
            closing[pk] = SessionEndReason.KILLED.value
            continue
        if session.state == SessionState.OPEN:
            reason = _end_reason_now(session, now)
            if reason is None:
                continue
            _session_end_if_open(session=session, reason=reason, actor="gateway")
        closing[pk] = session.end_reason or SessionEndReason.KILLED.value
    return closing


def _end_reason_now(session: Session, now: datetime) -> SessionEndReason | None:
    if session.expires_at <= now:
        return SessionEndReason.EXPIRED
    if session.account_id is None and (session.lease_id is None or session.lease.state != LeaseState.ACTIVE):
        return SessionEndReason.ACCOUNT_REVOKED
    return None


def gateway_sessions_end(*, gateway_id: int, reason: SessionEndReason | str) -> int:
    """End every open session on the gateway (it is stopping); return how many ended."""
    return session_end_many(sessions=Session.objects.filter(gateway_id=gateway_id), reason=reason, actor="gateway")


def gateways_lost_sweep(*, grace: timedelta) -> int:
    """End the open sessions of gateways whose heartbeat is older than `grace` (reason gateway_lost)."""
    cutoff = timezone.now() - grace
    lost = Gateway.objects.filter(last_heartbeat__lt=cutoff)
    return session_end_many(
        sessions=Session.objects.filter(gateway__in=lost), reason=SessionEndReason.GATEWAY_LOST, actor="system"
    )
