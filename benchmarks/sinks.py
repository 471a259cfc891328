"""Sink delivery throughput: records per second per sink, with 100,000 records queued on each stream.

Run: ``.venv/bin/python benchmarks/sinks.py`` (about two minutes; ``--records N`` and ``--batch N`` change the size
and the batch, ``--database-url postgres://...`` runs on PostgreSQL instead of a throwaway SQLite file).

It writes N audit events (a real hash chain, bulk-inserted) and N gateway commands, then for each kind of sink
(syslog over TLS to Debian's rsyslogd, Splunk HEC and a signed webhook to an HTTP receiver in a process of its own,
a JSON-lines file) creates a sink per stream from position 0 and runs the delivery loop
(`sinks_deliver_run`, the code the qcluster task and `manage.py deliver_sinks` run) until both cursors reach the
head, then checks the receiver got every id. It prints one table: seconds and records per second per sink and
stream (one sink per kind and stream, timed from the loop's start until its cursor reaches the head).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _bootstrap(database_url: str | None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="pam-bench-sinks-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["PAM_VAR_DIR"] = str(workdir)
    os.environ["PAM_EMBEDDED"] = "true"
    os.environ["PAM_SINK_FILE_DIR"] = str(workdir / "sinks")
    os.environ.setdefault("PAM_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return workdir


def _fill(records: int) -> None:
    """N audit events on a valid chain and N commands of one session, bulk-inserted in chunks."""
    from django.utils import timezone

    from access.models import AuditEvent, Session, SessionCommand
    from access.models.audit import GENESIS_HASH

    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, prev = last if last else (0, GENESIS_HASH)
    chunk = []
    for n in range(records):
        seq += 1
        event = AuditEvent(
            seq=seq,
            created_at=timezone.now(),
            actor_name="bench",
            action="lease.issue",
            target_type="access.lease",
            target_id=str(n),
            target_name=f"mongodb/bench/creds/role/{n:08d}",
            data={"role": "bench", "username": f"v-bench-{n}", "ttl_seconds": 3600},
            prev_hash=prev,
        )
        event.hash = prev = event.compute_hash()
        chunk.append(event)
        if len(chunk) == 5000:
            AuditEvent.objects.bulk_create(chunk)
            chunk = []
    if chunk:
        AuditEvent.objects.bulk_create(chunk)
    session = Session.objects.create(
        username="bench-session", user_name="bench", expires_at=timezone.now() + timezone.timedelta(hours=1)
    )
    now = timezone.now()
    for start in range(0, records, 5000):
        SessionCommand.objects.bulk_create(
            SessionCommand(
                session=session,
                at=now,
                database="app",
                collection="items",
                command="find",
                summary={"filter": {"status": "[value]"}, "limit": 20},
                latency_us=350,
            )
            for _ in range(start, min(records, start + 5000))
        )


def _serve_http(kwargs: dict, port_queue) -> None:
    from tests.sink_receivers import HttpReceiver

    receiver = HttpReceiver(**kwargs).start()
    port_queue.put(receiver.port)
    while True:
        time.sleep(3600)


def _http_receiver(**kwargs):
    """An HttpReceiver in a process of its own (so it does not share the worker's GIL); returns (url, process)."""
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=_serve_http, args=(kwargs, queue), daemon=True)
    process.start()
    return f"http://127.0.0.1:{queue.get(timeout=10)}", process


def _count(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _deliver(sink, stream: str, head: int) -> float:
    """Run the delivery loop for `sink` until its `stream` cursor reaches `head`; the seconds it took."""
    from access.models import SinkCursor
    from access.services.sinks import sinks_deliver_run

    started = time.monotonic()

    def caught_up() -> bool:
        return SinkCursor.objects.get(sink=sink, stream=stream).position >= head

    report = sinks_deliver_run(run_for=0, interval=0.05, sink_ids=[sink.pk], stop=caught_up)
    if report.failures:
        print(f"  ({sink.name}: {report.failures} failed attempt(s) on the way)", file=sys.stderr)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records queued on each stream")
    parser.add_argument("--batch", type=int, default=500, help="records per batch (the sinks' default)")
    parser.add_argument("--database-url", help="run on this database instead of a throwaway SQLite file")
    parser.add_argument("--only", action="append", help="syslog, hec, webhook or file (repeatable)")
    args = parser.parse_args()
    workdir = _bootstrap(args.database_url)

    from access.generators import new_token
    from access.models.sinks import SinkStream
    from access.selectors.sinks import stream_head
    from access.services.sinks import sink_create
    from tests.sink_receivers import Rsyslog, make_pki

    started = time.monotonic()
    _fill(args.records)
    heads = {stream.value: stream_head(stream) for stream in SinkStream}
    print(f"queued {args.records:,} audit events and {args.records:,} commands in {time.monotonic() - started:.1f} s")

    kinds = args.only or ["syslog", "hec", "webhook", "file"]
    rows = []
    cleanup = []
    try:
        for kind in kinds:
            if kind == "syslog":
                pki = make_pki(workdir / "pki")
                rsyslog = Rsyslog(workdir / "rsyslog", pki).start()
                cleanup.append(rsyslog.stop)
                fields = {"host": "127.0.0.1", "port": rsyslog.port, "ca_certificate": pki["ca"].read_text()}
            elif kind in ("hec", "webhook"):
                secret = new_token(nbytes=24)
                fields = {"hec_token": secret} if kind == "hec" else {"hmac_key": secret}
                url, process = _http_receiver(**fields)
                cleanup.append(process.terminate)
                fields["url"] = f"{url}/in"
            for stream in (SinkStream.AUDIT, SinkStream.COMMANDS):
                name = f"{kind}-{stream.value}"
                if kind == "file":
                    fields = {"path": f"{name}.jsonl"}
                sink = sink_create(
                    actor="bench",
                    name=name,
                    kind=kind,
                    stream_audit=stream == SinkStream.AUDIT,
                    stream_commands=stream == SinkStream.COMMANDS,
                    batch_size=args.batch,
                    **fields,
                )
                seconds = _deliver(sink, stream.value, heads[stream.value])
                rows.append((kind, stream.value, heads[stream.value], seconds, heads[stream.value] / seconds))
            if kind == "syslog":
                received = rsyslog.ids()
            elif kind == "file":
                received = [
                    json.loads(line)["id"]
                    for path in sorted((workdir / "sinks").glob("*.jsonl"))
                    for line in path.read_text().splitlines()
                ]
            receiver = {"unique": len(set(received))} if kind in ("syslog", "file") else _count(url)
            # both streams: every record up to the heads arrived (the audit stream also has the sinks' own events)
            assert receiver["unique"] >= heads["audit"] + heads["commands"], (kind, receiver, heads)
    finally:
        for stop in cleanup:
            stop()

    print()
    print(
        f"Sink delivery, {args.records:,} records queued per stream, batches of {args.batch}, "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}"
    )
    print(f"{'sink':<10} {'stream':<10} {'records':>9} {'seconds':>8} {'records/s':>10}")
    for kind, stream, count, seconds, rate in rows:
        print(f"{kind:<10} {stream:<10} {count:>9,} {seconds:>8.1f} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
