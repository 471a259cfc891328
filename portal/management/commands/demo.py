"""`manage.py demo` (what `make run` runs): the whole system on embedded defaults, until Ctrl+C."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

from access.generators import new_token
from access.otp import terminal_qr
from portal import demo


class Command(BaseCommand):
    help = "Start a demo server, daphne, a qcluster and a gateway with a demo security-team user; Ctrl+C stops all."

    def add_arguments(self, parser):
        parser.add_argument("--http", default="127.0.0.1:8000", help="daphne's address (default 127.0.0.1:8000)")
        parser.add_argument("--gateway", default="127.0.0.1:27018", help="the gateway's address")

    def handle(self, *args, http, gateway, **options):
        self.processes = []
        self.ferretdb = None
        self.new_user = None
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            admin_uri, server_name = self._start_server()
            user = self.new_user = demo.demo_user_ensure()
            target = demo.split_admin_uri(admin_uri)
            resource = demo.demo_resource_ensure(target, tls="tls=true" in admin_uri.lower())
            account = demo.demo_account_ensure(resource, get_user_model().objects.get(username=user.username))
            if "setup_schedules" in get_commands():
                call_command("setup_schedules", verbosity=0)
            self._start_processes(http, gateway)
            self._print_welcome(user, server_name, resource, account, http, gateway)
            self._wait()
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_all()
            if self.new_user is not None and self.new_user.password:
                # Should start-up fail after the user was made, its one-time credentials are not lost.
                self._print_credentials(self.new_user)

    def _start_server(self) -> tuple[str, str]:
        if os.environ.get("MONGODB_URI"):
            return os.environ["MONGODB_URI"], "MongoDB at $MONGODB_URI"
        from tests.mongo.ferretdb import FerretDB

        state = Path(settings.VAR_DIR) / "demo"
        state.mkdir(parents=True, exist_ok=True)
        password_file = state / "ferretdb-admin-password"
        if not password_file.exists():
            password_file.write_text(new_token(nbytes=24))
            password_file.chmod(0o600)
        self.stdout.write("Starting FerretDB (the demo MongoDB-compatible server)…")
        self.ferretdb = FerretDB(state / "ferretdb", password=password_file.read_text().strip()).start()
        return self.ferretdb.uri, f"FerretDB on 127.0.0.1:{self.ferretdb.port}"

    def _start_processes(self, http: str, gateway: str) -> None:
        log_dir = Path(settings.VAR_DIR) / "log"
        host, _, port = http.rpartition(":")
        self.processes.append(
            (
                "daphne",
                demo.spawn(
                    [demo.sys.executable, "-m", "daphne", "-b", host, "-p", port, "portal.asgi:application"],
                    name="daphne",
                    log_dir=log_dir,
                ),
            )
        )
        self.processes.append(("qcluster", demo.spawn(demo.manage("qcluster"), name="qcluster", log_dir=log_dir)))
        if "runproxy" in get_commands():
            self.processes.append(
                (
                    "runproxy",
                    demo.spawn(
                        demo.manage("runproxy", "--listen", gateway, "--gateway", "local"),
                        name="runproxy",
                        log_dir=log_dir,
                    ),
                )
            )
        time.sleep(1.5)
        for name, process in self.processes:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited at start (code {process.returncode}); see {log_dir / name}.log")

    def _print_welcome(self, user, server_name, resource, account, http, gateway) -> None:
        out = self.stdout.write
        out("")
        out(self.style.SUCCESS("The MongoDB access portal is running."))
        out(f"  Portal:  http://{http}/")
        out(f"  Admin:   http://{http}/admin/   (user {user.username!r}, password + TOTP code)")
        out(f"  API:     http://{http}/api/docs/")
        out(f"  Gateway: {gateway}")
        out(f"  Server:  {server_name}, registered as resource {resource.name!r} with account {account.name!r}")
        if user.password:
            self._print_credentials(user)
            self.new_user = None
        else:
            out(
                f"  (demo user {user.username!r} exists; `manage.py changepassword {user.username}` and "
                f"`manage.py add_totp {user.username}` reset its login)"
            )
        out("")
        out(f"Logs are in {Path(settings.VAR_DIR) / 'log'}. Press Ctrl+C to stop everything.")

    def _print_credentials(self, user) -> None:
        out = self.stdout.write
        out("")
        out(self.style.WARNING("Demo user created. Its password is shown this once:"))
        out(f"  username: {user.username}")
        out(f"  password: {user.password}")
        out("Scan this TOTP QR code with an authenticator app (or enter the URI below):")
        out(terminal_qr(user.otpauth_uri))
        out(f"  {user.otpauth_uri}")

    def _wait(self) -> None:
        while True:
            for name, process in self.processes:
                if process.poll() is not None:
                    self.stderr.write(f"{name} stopped (code {process.returncode}); shutting down.")
                    return
            time.sleep(1)

    def _stop_all(self) -> None:
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _name, process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:
                process.kill()
        if self.ferretdb is not None:
            self.ferretdb.stop()
        self.stdout.write("Stopped.")
