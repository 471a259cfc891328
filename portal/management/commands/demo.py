"""`manage.py demo` (what `make run` runs): the whole system on embedded defaults, until Ctrl+C.

It says "running" only once every listener (daphne, the gateway) accepts connections; an address that cannot be
bound stops it with the reason on the terminal and a non-zero exit; Ctrl+C stops every child (and their own
children) and "Stopped." is printed only once none is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError

from access.generators import new_token
from access.otp import terminal_qr
from portal import demo

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def host_port(address: str, *, option: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) or CommandError naming the option."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"{option} {address!r} is not HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port)


def bind_error(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on now (in use, not an address of this machine), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as daphne and the gateway bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` is still running (zombies, already dead, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class Command(BaseCommand):
    help = (
        "Start a demo server, daphne, a qcluster and a gateway with demo users (a superuser, an engineer and an "
        "approver); Ctrl+C stops all."
    )

    def add_arguments(self, parser):
        parser.add_argument("--http", default="127.0.0.1:8000", help="daphne's address (default 127.0.0.1:8000)")
        parser.add_argument("--gateway", default="127.0.0.1:27018", help="the gateway's address (default :27018)")

    def handle(self, *args, http, gateway, **options):
        self.processes: list[tuple[str, object]] = []
        self.ferretdb = None
        self.new_people: list[demo.DemoUser] = []
        http_address = host_port(http, option="--http (HTTP=)")
        gateway_address = host_port(gateway, option="--gateway (GATEWAY=)")
        for name, (host, port) in (("HTTP", http_address), ("GATEWAY", gateway_address)):
            problem = bind_error(host, port)
            if problem:
                raise CommandError(
                    f"Cannot listen on {host}:{port} ({name}={host}:{port}): {problem}. Choose "
                    f"another address, e.g. make run {name}={host}:{port + 1}"
                )
        # Children build links and connection strings from these (emails, the portal's session page).
        os.environ["PAM_PORTAL_URL"] = f"http://{http}"
        os.environ["PAM_GATEWAY_HOST"] = gateway
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        failure = None
        try:
            admin_uri, server_name = self._start_server()
            people = demo.demo_people_ensure()
            self.new_people = [person for person in people if person.password]
            target = demo.split_admin_uri(admin_uri)
            resource = demo.demo_resource_ensure(target, tls="tls=true" in admin_uri.lower())
            admin = get_user_model().objects.get(username=demo.DEMO_USERNAME)
            account = demo.demo_account_ensure(resource, admin)
            if "setup_schedules" in get_commands():
                call_command("setup_schedules", verbosity=0)
            self._start_processes(http, gateway)
            self._wait_until_listening(http_address, gateway_address)
            self._print_credentials()
            self._print_welcome(people, server_name, resource, account, http, gateway)
            self._wait()
        except KeyboardInterrupt:
            pass
        except CommandError as exc:
            failure = exc
        finally:
            self._stop_all()
            # Should start-up fail after the people were made, their one-time credentials are not lost.
            self._print_credentials()
        if failure is not None:
            raise failure

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
        return self.ferretdb.uri, f"FerretDB on 127.0.0.1:{self.ferretdb.port} (no authorization: see role notes)"

    def _start_processes(self, http: str, gateway: str) -> None:
        log_dir = Path(settings.VAR_DIR) / "log"
        self.log_dir = log_dir
        host, port = host_port(http, option="--http")
        daphne = [demo.sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "portal.asgi:application"]
        self.processes.append(("daphne", demo.spawn(daphne, name="daphne", log_dir=log_dir)))
        self.processes.append(("qcluster", demo.spawn(demo.manage("qcluster"), name="qcluster", log_dir=log_dir)))
        if "runproxy" in get_commands():
            command = demo.manage("runproxy", "--listen", gateway, "--gateway", "local")
            self.processes.append(("gateway", demo.spawn(command, name="runproxy", log_dir=log_dir)))

    def _log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{'runproxy' if name == 'gateway' else name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])

    def _exited(self) -> tuple[str, int] | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def _wait_until_listening(self, http_address, gateway_address) -> None:
        """Return once daphne and the gateway accept connections; CommandError (with the child's log) otherwise."""
        listeners = {"daphne": http_address}
        if any(name == "gateway" for name, _ in self.processes):
            listeners["gateway"] = gateway_address
        deadline = time.monotonic() + START_TIMEOUT
        waiting = dict(listeners)
        while waiting:
            exited = self._exited()
            if exited is not None:
                name, code = exited
                raise CommandError(
                    f"{name} exited at start (code {code}):\n{self._log_tail(name)}\n"
                    f"  (full log: {self.log_dir / ('runproxy' if name == 'gateway' else name)}.log)"
                )
            for name, address in list(waiting.items()):
                if accepts(*address):
                    del waiting[name]
            if time.monotonic() > deadline:
                names = ", ".join(f"{name} on {h}:{p}" for name, (h, p) in waiting.items())
                raise CommandError(f"Not listening after {START_TIMEOUT:.0f} s: {names}. Logs: {self.log_dir}")
            time.sleep(0.1)
        # The qcluster has no listener: it must at least still be alive.
        exited = self._exited()
        if exited is not None:
            raise CommandError(f"{exited[0]} exited at start (code {exited[1]}):\n{self._log_tail(exited[0])}")

    def _print_welcome(self, people, server_name, resource, account, http, gateway) -> None:
        out = self.stdout.write
        role = resource.roles.filter(name=demo.DEMO_ROLE).first()
        out("")
        out(self.style.SUCCESS("The MongoDB access portal is running."))
        out(f"  Portal:   http://{http}/          (engineer, approver: password + TOTP code)")
        out(f"  Admin:    http://{http}/admin/    (admin: password + TOTP code)")
        out(f"  API docs: http://{http}/api/docs/  and  http://{http}/api/redoc/")
        out(f"  Gateway:  {gateway}")
        out(f"  Server:   {server_name}, registered as resource {resource.name!r} with account {account.name!r}")
        if role is not None:
            out(f"  Role:     {role.name!r}: {role.description}")
        out("  Try it:   sign in as engineer, request access in the Catalogue; sign in as approver (another")
        out("            browser) and approve it; as engineer open a session and run the mongosh line shown.")
        out(f"  Terminal: .venv/bin/pam login --portal http://{http}   then   .venv/bin/pam db access --resource")
        out(f"            {resource.name} --account {account.name} --reason '…'   (a local proxy: no password)")
        if not self.new_people:
            names = ", ".join(person.username for person in people)
            out(f"  (the demo users {names} exist; `manage.py changepassword NAME` and `manage.py add_totp NAME` reset")
            out("   a login)")
        out("")
        out(f"Logs are in {self.log_dir}. Press Ctrl+C to stop everything.")

    def _print_credentials(self) -> None:
        """The new demo people's passwords and TOTP URIs, printed once (with a QR code of each URI)."""
        if not self.new_people:
            return
        out = self.stdout.write
        out("")
        out(self.style.WARNING("Demo users created. Their passwords are shown this once:"))
        for person in self.new_people:
            out("")
            out(f"  username: {person.username}   ({person.what})")
            out(f"  password: {person.password}")
            out("  TOTP (scan the QR code with an authenticator app, or enter the URI):")
            out(terminal_qr(person.otpauth_uri))
            out(f"  {person.otpauth_uri}")
        self.new_people = []

    def _wait(self) -> None:
        while True:
            exited = self._exited()
            if exited is not None:
                self.stderr.write(f"{exited[0]} stopped (code {exited[1]}); shutting down.")
                return
            time.sleep(0.5)

    def _stop_all(self) -> None:
        """SIGTERM every child, SIGKILL its process group if anything is left after STOP_TIMEOUT, and wait until
        none runs.

        Only the child itself is sent SIGTERM, not its group: each stops its own processes (the qcluster its
        workers, runproxy its workers), and the qcluster hangs when its sentinel is killed under it, which a
        SIGTERM to the whole group does.
        """
        if self.processes:
            self.stdout.write("Stopping… (the background tasks finish the run in hand: up to 10 s)")
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for _name, process in self.processes:
            while time.monotonic() < deadline and (process.poll() is None or group_alive(process.pid)):
                time.sleep(0.1)
        for name, process in self.processes:
            if process.poll() is None or group_alive(process.pid):
                self.stderr.write(f"{name} did not stop in {STOP_TIMEOUT:.0f} s: killed.")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                while group_alive(process.pid):
                    time.sleep(0.05)
        if self.ferretdb is not None:
            self.ferretdb.stop()
        if self.processes or self.ferretdb is not None:
            self.stdout.write("Stopped.")
