"""Start a real Mosquitto and VictoriaMetrics on loopback, for the demo and the tests.

Production runs these as system services; this module runs the same
programs from Debian's packages as child processes with their own data
directories, so a newcomer's demo and the test suite use the real thing.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AnyStr, Self

from gateway.broker_accounts import GATEWAY_USER, SIMULATOR_USER, Credentials, acl_text, new_password, set_password

REPO_ROOT = Path(__file__).resolve().parent.parent
_OVERRIDDEN = re.compile(r"^\s*(listener|persistence_location|password_file|acl_file|log_dest|pid_file|user)\b")
# The TLS listener's own options; its files are replaced by the caller's, the rest is kept as written.
_TLS_FILES = re.compile(r"^\s*(cafile|capath|certfile|keyfile|crlfile)\b")
_TLS_OPTIONS = re.compile(r"^\s*(require_certificate|use_identity_as_username|use_subject_as_username|tls_version|ciphers)\b")


class ServiceMissing(RuntimeError):
    """A program the service needs is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[AnyStr], timeout_s: float = 15.0, what: str = "service") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s} s")


def terminate(proc: subprocess.Popen[AnyStr] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM a child we started, and SIGKILL it if it has not left within the timeout."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _require(program: str, package: str) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise ServiceMissing(f"{program} is not installed: apt-get install {package}")
    return path


class _ChildService:
    """A child process that can be stopped, killed and started again on the same port."""

    name = "service"
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path   # set by each service's __init__
    port: int

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.workdir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.proc, what=self.name)

    stop_timeout_s = 10.0

    def stop(self) -> None:
        terminate(self.proc, self.stop_timeout_s)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dev_acl_text(prefix: str = "eldercare") -> str:
    """The production ACL plus the dev/test `simulator` account, which may write as any device.

    Load mode, the benchmarks and shared-connection scenarios need it; a
    production broker never has it (`eldercare-gateway acl` prints the ACL without it).
    """
    return acl_text(prefix) + (
        f"\n"
        f"# Dev and test only: the load-mode simulator, many devices over a few connections.\n"
        f"user {SIMULATOR_USER}\n"
        f"topic write {prefix}/+/+/+\n"
    )


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """What the broker's TLS listener uses: the CA that signs the devices' certificates, and its own certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class LocalMosquitto(_ChildService):
    """Mosquitto with the repo's mosquitto.conf, pointed at a directory of its own.

    Its ACL is the dev/test variant with the `simulator` account, unless
    `production_acl` asks for the ACL a production broker gets. With `tls`,
    the file's TLS listener runs too, on `tls_port`, with these files.
    """

    name = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, prefix: str = "eldercare",
                 config: Path = REPO_ROOT / "mosquitto.conf", production_acl: bool = False,
                 tls: BrokerTls | None = None) -> None:
        self.binary = _require("mosquitto", "mosquitto")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password_file = self.workdir / "passwd"
        self.acl_file = self.workdir / "acl"
        self.acl_file.write_text(acl_text(prefix) if production_acl else dev_acl_text(prefix))
        self.gateway = self._account(GATEWAY_USER)
        self.simulator = self._account(SIMULATOR_USER)
        self.config_file = self.workdir / "mosquitto.conf"
        lines = config.read_text().splitlines()
        tls_options = [line for line in lines if _TLS_OPTIONS.match(line)]
        kept = [line for line in lines if not (_OVERRIDDEN.match(line) or _TLS_FILES.match(line) or _TLS_OPTIONS.match(line))]
        (self.workdir / "data").mkdir(exist_ok=True)
        kept += [
            f"listener {self.port} 127.0.0.1",
            f"persistence_location {self.workdir / 'data'}/",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            "log_dest stdout",
        ]
        if os.geteuid() == 0:
            # A child of the caller: keep the caller's user so the broker can
            # read files in the caller's private directories.
            kept.append("user root")
        self.tls_port: int | None = None
        if tls is not None:
            self.tls_port = free_port()
            # Last, as in the file: listener options apply to the listener above them.
            kept += [f"listener {self.tls_port} 127.0.0.1", f"cafile {tls.ca_file}", f"certfile {tls.cert_file}",
                     f"keyfile {tls.key_file}", *tls_options]
        self.config_file.write_text("\n".join(kept) + "\n")

    def _account(self, username: str, password: str | None = None) -> Credentials:
        creds = Credentials(username, password or new_password())
        set_password(self.password_file, creds.username, creds.password)
        return creds

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_file)]

    def add_device(self, device_id: str, password: str | None = None) -> Credentials:
        """A broker account for one device; the running broker reloads its password file."""
        creds = self._account(device_id, password)
        self.reload()
        if self.proc and self.proc.poll() is None:
            self._wait_until_accepted(creds)
        return creds

    def reload(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def _wait_until_accepted(self, creds: Credentials, timeout_s: float = 10.0) -> None:
        """Mosquitto re-reads its password file on a later loop: wait until the account logs in."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{creds.username}"[:64])
            probe.username_pw_set(creds.username, creds.password)
            accepted: list[bool] = []
            probe.on_connect = lambda c, u, f, rc, p, accepted=accepted: accepted.append(not rc.is_failure)
            try:
                probe.connect(self.host, self.port)
                while not accepted and time.monotonic() < deadline:
                    probe.loop(timeout=0.05)
            except OSError:
                pass
            probe.disconnect()
            if accepted and accepted[0]:
                return
            time.sleep(0.05)
        raise TimeoutError(f"broker did not accept the new account {creds.username!r} within {timeout_s} s")


class LocalVictoriaMetrics(_ChildService):
    """VictoriaMetrics accepting InfluxDB line protocol on /api/v2/write."""

    name = "victoria-metrics"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = _require("victoria-metrics", "victoria-metrics")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            # InfluxDB keeps one point per series and timestamp; with this
            # VictoriaMetrics does the same, so a re-sent point is not doubled.
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",
            "-loggerLevel=WARN",
        ]

    def flush(self) -> None:
        """Make everything written so far visible to queries."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()


def settings_env(settings: Mapping[str, Any], prefix: str = "ELDERCARE") -> dict[str, str]:
    """Nested settings as the environment variables the gateway reads (ELDERCARE_ALERTS__TWILIO__API_BASE_URL)."""
    env: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}_{key.upper()}" if prefix == "ELDERCARE" else f"{prefix}__{key.upper()}"
        if isinstance(value, dict):
            env |= settings_env(value, name)
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class LocalGateway(_ChildService):
    """`python -m eldercare run` as a child process, configured through the environment."""

    name = "gateway"
    stop_timeout_s = 20.0

    def __init__(self, workdir: Path, settings: dict[str, Any]) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.log_file = self.workdir / f"{self.name}.log"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "eldercare", "run"]

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")} | settings_env(self.settings)

    def start(self, timeout_s: float = 60.0, until: tuple[str, ...] = ("critical: connected", "telemetry: connected"),
              ) -> None:
        """Start it and wait until its log says each of `until` (by default: both MQTT sessions are connected;
        a standby says "standby: ")."""
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(self._command(), cwd=REPO_ROOT, env=self._env(),
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log_file.read_bytes()[offset:].decode(errors="replace")
            if all(line in text for line in until):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"gateway did not connect; its log ends:\n{text[-3000:]}")
            time.sleep(0.1)
