"""``manage.py runproxy``: run this host's MongoDB gateway (``gatewayproxy.server``; several worker processes with
``--workers``: ``gatewayproxy.workers``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from access.gateway_bridge import GatewayBridge
from access.services.gateway import gateway_register
from gatewayproxy.commandlog import WriterProcess
from gatewayproxy.metrics import serve_metrics
from gatewayproxy.server import GatewayServer, raise_open_file_limit
from gatewayproxy.workers import Supervisor, default_workers


def host_port(value: str, *, default_port: int) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too); a bare host gets ``default_port``."""
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        host, port = value, str(default_port)
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise CommandError(f"{value!r} is not HOST:PORT") from None
    if not host or not 0 <= number <= 65535:
        raise CommandError(f"{value!r} is not HOST:PORT")
    return host, number


class Command(BaseCommand):
    help = "Run the MongoDB gateway: accept session logins and relay them to their deployments."
    # The gateway serves no URLs or templates; skipping the checks keeps its start fast.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--listen", default="127.0.0.1:27018", help="HOST:PORT to listen on.")
        parser.add_argument("--gateway", default="default", help="Name of the Gateway record to run as.")
        parser.add_argument("--public-host", default=None, help="Host clients connect to (default: the listen host).")
        parser.add_argument("--public-port", type=int, default=None, help="Port clients connect to.")
        parser.add_argument("--metrics", default=None, help="HOST:PORT for Prometheus metrics (off by default).")
        parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="Worker processes sharing the port (default: one per core; one without the C extension).",
        )

    def handle(self, *args, **options):
        host, port = host_port(options["listen"], default_port=27018)
        logging.basicConfig(
            level=options["log_level"],
            format="time=%(asctime)s level=%(levelname)s logger=%(name)s pid=%(process)d %(message)s",
            stream=sys.stderr,
            force=True,
        )
        limit = raise_open_file_limit()
        # The command log is written by a worker thread; hand the GIL back to the relay's loop sooner.
        sys.setswitchinterval(0.0005)
        gateway = gateway_register(
            name=options["gateway"],
            public_host=options["public_host"] or host,
            public_port=options["public_port"] or port,
        )
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        metrics_address = host_port(options["metrics"], default_port=9216) if options["metrics"] else None
        logging.getLogger("gatewayproxy").info(
            "event=starting gateway=%s gateway_id=%s listen=%s:%s open_files=%s",
            gateway.name,
            gateway.pk,
            host,
            port,
            limit,
        )
        bridge = GatewayBridge(gateway.pk)
        workers = options["workers"] or default_workers()
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        # Fork the command log writer (and the workers) now: before any event loop or thread exists, with no
        # open database connection; what is alive now is frozen out of the garbage collector's passes.
        connections.close_all()
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)  # the relay allocates a few small objects per message, none cyclic
        writer = WriterProcess(bridge.record_commands, inputs=workers)
        writer.start()
        try:
            if workers > 1:
                supervisor = Supervisor(
                    bridge,
                    host=host,
                    port=port,
                    workers=workers,
                    writer=writer,
                    metrics_address=metrics_address,
                    announce=self._announce,
                )
                supervisor.run()
            else:
                server = GatewayServer(bridge, host=host, port=port, log_output=writer.input(0))
                asyncio.run(self._serve(server, metrics_address))
        finally:
            writer.close()

    def _announce(self, line: str) -> None:
        self.stdout.write(line, ending="\n")
        self.stdout.flush()

    async def _serve(self, server: GatewayServer, metrics_address: tuple[str, int] | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        metrics_server = await serve_metrics(server.metrics, *metrics_address) if metrics_address else None
        await server.start()
        self.stdout.write(f"gateway listening on {server.host}:{server.port}", ending="\n")
        self.stdout.flush()
        await stop.wait()
        await server.stop()
        if metrics_server is not None:
            metrics_server.close()
