"""What a running gateway (`manage.py runproxy`) asks of and tells the domain, through `sync_to_async`.

The proxy never touches models: it registers itself and heartbeats, looks up the session a client
logs in as (verifiers to check the client's SCRAM proof, and the upstream target with the real
account password to log in upstream), reports connections and batches of redacted commands, and
polls which of its sessions must close. Everything here is synchronous Django code, cheap enough
to call from the proxy's event loop through a thread, and never on the per-message path.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
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
from access.models import AuditAction, Gateway, Session, SessionCommand, SessionRevocation
from access.models.leases import LeaseState
from access.models.sessions import SessionEndReason, SessionState, session_end_words
from access.services.audit import audit_record
from access.services.connections import resource_credentials_may_go
from access.services.offboarding import session_access_problem
from access.services.sessions import _session_end_if_open, session_end_many
from gatewayproxy.commandlog import CommandRecord
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
    """The session logging in as `username`, or None when no session has that name.

    A session that may no longer log in (ended, expired, its account, lease or verified settings gone) is still
    returned, with its verifiers and `refusal` saying why in words and no upstream target (no password is
    decrypted for it), so that a client who proves the secret learns why ("the session was killed by alice").
    Otherwise the account's (or lease's) password is decrypted here, in the caller's worker thread, and handed to
    the gateway as a `gatewayproxy.host.Password`, which keeps it out of every repr.
    """
    session = Session.objects.select_related("account__resource", "lease__resource").filter(username=username).first()
    if session is None:
        return None
    refusal, upstream, resource = "", None, None
    if session.state != SessionState.OPEN or session.expires_at <= timezone.now():
        refusal = session_access_problem(session_id=session.pk) or session_end_words(SessionEndReason.EXPIRED)
    elif session.account is not None:
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
        refusal = "the session's account or lease was revoked"
    if resource is not None:
        if password is None:
            refusal = "the account has no stored password"
        elif not resource_credentials_may_go(resource):
            # settings changed since verified: the stored password is not sent (access.services.connections)
            refusal = "the resource's connection settings are not verified: its stored credentials are held back"
        else:
            upstream = UpstreamTarget(
                uri=resource.uri,
                auth_database=auth_database,
                tls=resource.tls,
                tls_verify=resource.tls_verify,
                ca_certificate=resource.ca_certificate,
                username=username_upstream,
                password=Password(password.reveal()),
                secondary_reads=resource.allow_secondary_reads,
            )
    return SessionLogin(
        session_id=session.pk,
        public_id=session.public_id,
        username=session.username,
        verifiers=dict(session.verifiers),
        expires_at=session.expires_at,
        read_only=session.read_only,
        database_allow_list=list(session.database_allow_list or []),
        command_deny_list=list(resource.command_deny_list or []) if resource is not None else [],
        full_command_logging=resource.full_command_logging if resource is not None else False,
        upstream=upstream,
        privileged_commands=list(session.privileged_commands or []),
        refusal=refusal,
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


_SECRET_SUMMARY_KEYS = {"pwd", "password", "payload", "speculativeauthenticate", "secret"}


def _scrub_summary(value: Any, memo: dict[int, tuple[Any, Any]] | None = None) -> Any:
    """A last guard behind the proxy's redaction: drop values of keys that may carry credentials.

    With `memo` (id -> (value, result)), a batch scrubs a document that many summaries share (the gateway's
    summary cache hands out shared ones) once.
    """
    if isinstance(value, dict | list | tuple):
        if memo is not None and (found := memo.get(id(value))) is not None:
            return found[1]
        if isinstance(value, dict):
            result: Any = {
                key: "[redacted]" if str(key).lower() in _SECRET_SUMMARY_KEYS else _scrub_summary(item, memo)
                for key, item in value.items()
            }
        else:
            result = [_scrub_summary(item, memo) for item in value]
        if memo is not None:
            memo[id(value)] = (value, result)  # the value is kept so that its id is not reused within the batch
        return result
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


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


@functools.cache
def _width(column: str) -> int | None:
    return SessionCommand._meta.get_field(column).max_length


def _cut(value: str | None, column: str) -> str:
    """`value` cut to the width of SessionCommand's `column` (the only place a logged value is shortened)."""
    return str(value or "")[: _width(column)]


def _command_row(record: CommandRecord, memo: dict[int, tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """The one place a gateway command becomes SessionCommand column values: bounded, scrubbed, typed.

    `memo` is a batch's (see `_scrub_summary`)."""
    return {
        "session_id": int(record.session_id),
        "at": _as_datetime(record.at),
        "connection_id": max(int(record.connection_id or 0), 0),
        "database": _cut(record.database, "database"),
        "collection": _cut(record.collection, "collection"),
        "command": _cut(record.command, "command"),
        "summary": _scrub_summary(record.summary or {}, memo),
        "ok": bool(record.ok),
        "n": _int_or_none(record.n),
        "error_code": _int_or_none(record.error_code),
        "error_message": _cut(record.error_message, "error_message"),
        "refused": bool(record.refused),
        "latency_us": min(max(int(record.latency_us or 0), 0), 2**31 - 1),
    }


def _insert_commands(rows: list[dict[str, Any]]) -> None:
    """Insert command rows with one executemany: about ten times faster than bulk_create, and the gateway's
    flusher shares the CPU with the relay. Values are adapted by the fields, as the ORM would."""
    names = list(rows[0])  # the columns are _command_row's keys
    fields = [SessionCommand._meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    # Only the model's own table and column names are interpolated; every value is a bound parameter.
    table, columns = quote(SessionCommand._meta.db_table), ", ".join(quote(f.column) for f in fields)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
    # The datetime and the JSON need their fields' adaptation (aware datetimes: the backend's own; a summary
    # shared by many rows is encoded once); the other values are plain str/int/bool/None.
    adapt_datetime, summary_field = connection.ops.adapt_datetimefield_value, SessionCommand._meta.get_field("summary")
    at, summary = names.index("at"), names.index("summary")
    encoded: dict[int, Any] = {}
    params = []
    for row in rows:
        values = list(row.values())
        values[at] = adapt_datetime(values[at])
        key = id(values[summary])
        if key not in encoded:
            encoded[key] = summary_field.get_db_prep_save(values[summary], connection)
        values[summary] = encoded[key]
        params.append(values)
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def session_commands_record(*, commands: Sequence[CommandRecord | Mapping[str, Any]]) -> None:
    """Store a batch of commands the gateway logged, add them to the sessions' counters, and publish them live.

    Each item is a completed `gatewayproxy.commandlog.CommandRecord` (the gateway's writer sends those); a
    mapping with the same field names (`session_id` and `command` required) is read as one, for scripts and
    tests. A record without `command` only adds its `bytes_in`/`bytes_out`. Commands of sessions that no
    longer exist are dropped. Rows are inserted with one executemany; only when events travel through a
    channel layer (which needs the new rows' ids) are they created with bulk_create.
    """
    if not commands:
        return
    records = [item if isinstance(item, CommandRecord) else CommandRecord(**item) for item in commands]
    with transaction.atomic():
        known = set(
            Session.objects.filter(pk__in={int(record.session_id) for record in records}).values_list("pk", flat=True)
        )
        records = [record for record in records if int(record.session_id) in known]
        memo: dict[int, tuple[Any, Any]] = {}
        rows = [_command_row(record, memo) for record in records if record.command]
        if rows and session_events_use_channel_layer():
            created = SessionCommand.objects.bulk_create([SessionCommand(**row) for row in rows])
            transaction.on_commit(lambda: _publish_commands(created))
        elif rows:
            _insert_commands(rows)
        totals: dict[int, list[int]] = {}
        for record in records:
            total = totals.setdefault(int(record.session_id), [0, 0, 0])
            total[0] += 1 if record.command else 0
            total[1] += int(record.bytes_in or 0)
            total[2] += int(record.bytes_out or 0)
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


def sessions_to_close(*, gateway_id: int | None, session_ids: list[int], in_words: bool = False) -> dict[int, str]:
    """Which of the gateway's sessions must close now, with the reason; due sessions are ended here as expired.

    A session closes when it has ended (any reason), expired, lost its account or lease, or no longer
    exists (reported as `killed`). With `in_words` the reason is what the gateway tells the clients, as its ended-
    session notices do ("the session was killed by alice"; "the session no longer exists").
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
    if in_words:
        return _closing_words(closing, found)
    return closing


def _closing_words(closing: dict[int, str], found: dict[int, Session]) -> dict[int, str]:
    """The reasons of `sessions_to_close` in words: each session's last end notice, else its end reason's words."""
    notices = dict(
        SessionRevocation.objects.filter(session_id__in=list(closing))
        .order_by("id")
        .values_list("session_id", "description")
    )  # the last notice of each session wins
    return {
        pk: notices.get(pk) or (session_end_words(code) if pk in found else "the session no longer exists")
        for pk, code in closing.items()
    }


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
