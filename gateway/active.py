"""Which of two gateway processes sharing a PostgreSQL store is active: the one holding a session advisory lock.

The standby polls for the lock; the active's lock lasts exactly as long as its database session. When the
active dies (kill -9, a dead host: TCP keepalives notice within seconds), PostgreSQL ends the session and
the standby takes the lock. An active that can no longer reach PostgreSQL cannot know whether the standby
has taken over, so it fences itself: its watchdog calls `on_lost`, and every ingest transaction first checks,
in the same transaction, that the lock is still held by this process's lock session. So nothing is
acknowledged to the broker without a committed transaction under the lock.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import zlib
from collections.abc import Callable

from gateway.db import Connection, DatabaseUnavailable, connect, describe

log = logging.getLogger(__name__)

# pg_advisory_lock(int, int): the two keys name this lock in pg_locks (classid, objid, objsubid = 2). Advisory
# locks belong to the whole database, so the second key is taken from the schema the store's tables live in:
# two deployments in two schemas of one database each have their own active gateway.
LOCK_CLASS = 0x454C4443   # "ELDC", the gateway's active role
WATCH_INTERVAL_S = 1.0


class Fenced(RuntimeError):
    """This process no longer holds the active lock: it must not commit or acknowledge anything."""


class ActiveLock:
    """The active role. `wait()` blocks until this process holds it; `on_lost` runs (once) when it is lost."""

    def __init__(self, url: str, on_lost: Callable[[str], None], *, poll_s: float = 0.5) -> None:
        self.url = url
        self.on_lost = on_lost
        self.poll_s = poll_s
        self.conn: Connection | None = None
        self.backend_pid = 0
        self.lock_id = 0
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._watchdog: threading.Thread | None = None

    def wait(self, stop: threading.Event) -> bool:
        """Poll for the lock until it is ours (True) or `stop` is set (False)."""
        said = ""   # what the log last said: each state is logged once, not every half second
        while not stop.is_set():
            try:
                if self._try():
                    self._watchdog = threading.Thread(target=self._watch, name="active-lock", daemon=True)
                    self._watchdog.start()
                    return True
                now = f"standby: another gateway is active; waiting to take over (store {describe(self.url)})"
            except DatabaseUnavailable as e:
                now = f"standby: {e}; trying again every {self.poll_s:g} s"
                self._drop()
            except Exception as e:   # a broken connection: open a new one next round
                now = f"standby: lost the store while waiting ({type(e).__name__}); trying again every {self.poll_s:g} s"
                self._drop()
            if now != said:
                log.log(logging.INFO if now.startswith("standby: another") else logging.WARNING, "%s", now)
                said = now
            stop.wait(self.poll_s)
        return False

    def _try(self) -> bool:
        if self.conn is None:
            self.conn = connect(self.url)
            pid, schema = self.conn.execute("SELECT pg_backend_pid(), current_schema()").fetchone()
            self.backend_pid, self.lock_id = int(pid), zlib.crc32(str(schema).encode()) & 0x7FFFFFFF
        got = bool(self.conn.execute("SELECT pg_try_advisory_lock(?, ?)", (LOCK_CLASS, self.lock_id)).fetchone()[0])
        return got

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def _watch(self) -> None:
        """Ask the lock's own session, every second, whether it still holds the lock."""
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                assert self.conn is not None
                held = self.conn.execute(_HELD, (self.backend_pid, LOCK_CLASS, self.lock_id)).fetchone() is not None
                reason = "" if held else "the lock is no longer held by this process"
            except Exception as e:
                reason = f"the store stopped answering the lock's session ({type(e).__name__}: {e})"
            if reason:
                self._lose(reason)
                return

    def _lose(self, reason: str) -> None:
        if not self._lost.is_set():
            self._lost.set()
            self.on_lost(reason)

    def check(self, conn: Connection) -> None:
        """Raise Fenced unless this process's lock session still holds the lock; run it inside a transaction."""
        if self._lost.is_set():
            raise Fenced("this process lost the active role")
        if conn.execute(_HELD, (self.backend_pid, LOCK_CLASS, self.lock_id)).fetchone() is None:
            self._lose("an ingest transaction found the lock held by no session of this process")
            raise Fenced("this process lost the active role")

    def release(self) -> None:
        """Give the role up (a clean stop): the standby takes over at once instead of after the session ends."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        self._drop()


_HELD = ("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = ? AND classid = ? AND objid = ?"
         " AND objsubid = 2")
