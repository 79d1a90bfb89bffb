"""Start a real PostgreSQL from Debian's `postgresql` package in a temporary data directory, for the tests.

The server runs as the `postgres` user when we are root (PostgreSQL refuses to run as root), listens
on a free loopback port with its socket in the temporary directory, trusts local connections, and is
stopped by its process id. `fsync` is off by default: the data is thrown away afterwards.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from devtools.localservices import ServiceMissing, free_port

INSTALL = "apt-get install postgresql"
SUPERUSER = "postgres"


def postgres_bin() -> Path:
    """The newest installed server's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise ServiceMissing(f"PostgreSQL is not installed: {INSTALL}")
    return Path(found[-1]).parent


class LocalPostgres:
    """One PostgreSQL server in its own temporary directory; `url(name)` reaches a database on it."""

    def __init__(self, fsync: bool = False) -> None:
        self.bin = postgres_bin()
        self.fsync = fsync
        self.port = free_port()
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout_s: float = 30.0) -> None:
        # Not under pytest's tmp_path: that sits in root's private directory, which the postgres user cannot enter.
        self.workdir = Path(tempfile.mkdtemp(prefix="eldercare-pg-"))
        data, sockets = self.workdir / "data", self.workdir / "sockets"
        sockets.mkdir()
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceMissing(f"there is no postgres user to run the server as: {INSTALL}") from None
            for path in (self.workdir, sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        log = (self.workdir / "initdb.log").open("wb")
        with log:
            subprocess.run([str(self.bin / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                            "--locale=C.UTF-8", "--no-sync"], check=True, stdout=log, stderr=subprocess.STDOUT, **self._as)
        self.resume(timeout_s)

    def resume(self, timeout_s: float = 30.0) -> None:
        """Run the server on its data directory and port (again, after `halt`)."""
        assert self.workdir is not None, "start() first"
        with (self.workdir / "server.log").open("ab") as server_log:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.workdir / "data"), "-p", str(self.port),
                 "-k", str(self.workdir / "sockets"),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"fsync={'on' if self.fsync else 'off'}",
                 "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
                stdout=server_log, stderr=subprocess.STDOUT, **self._as)
        self._wait_ready(timeout_s)

    def halt(self, timeout_s: float = 15.0) -> None:
        """Stop the server and keep its data (an outage; `resume` ends it). Sessions are rolled back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with code {self.proc.returncode}: see {self.workdir}/server.log")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Fast shutdown (SIGINT: roll back open sessions, then exit), by the server's own process id; the data goes."""
        self.halt(timeout_s)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
