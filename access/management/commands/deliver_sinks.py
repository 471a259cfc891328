"""`manage.py deliver_sinks [--run-for SECONDS] [--sink NAME]`: a dedicated sink delivery worker.

The qcluster already runs the delivery loop (access.tasks_sinks.deliver_sinks); this command runs the same loop
in the foreground, for a host that should do only that (deploy/systemd/pam-sinks.service) or for a one-off
catch-up. Several may run: each sink is served by whichever worker holds its lock. SIGTERM stops it after the
batch in hand, releasing its locks.
"""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandError

from access.models import Sink
from access.services.sinks import sinks_deliver_run


class Command(BaseCommand):
    help = "Deliver the audit trail and the command log to the configured sinks (at least once, in order)."

    def add_arguments(self, parser):
        parser.add_argument("--run-for", type=float, default=0.0, help="Stop after this many seconds (0: run on).")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between rounds when idle.")
        parser.add_argument("--sink", action="append", help="Serve only this sink (by name); repeatable.")

    def handle(self, *args, run_for=0.0, interval=1.0, sink=None, **options):
        sink_ids = None
        if sink:
            found = dict(Sink.objects.filter(name__in=sink).values_list("name", "pk"))
            missing = sorted(set(sink) - set(found))
            if missing:
                raise CommandError(f"No sink named {missing[0]!r}.")
            sink_ids = list(found.values())
        stopping = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.append(True))
        report = sinks_deliver_run(
            run_for=run_for, interval=interval, sink_ids=sink_ids, stop=lambda: bool(stopping), exit_when_idle=False
        )
        self.stdout.write(
            f"delivered {report.delivered} record(s) to {len(report.sinks)} sink(s) in {report.rounds} round(s); "
            f"{report.failures} failed attempt(s)"
        )
