"""The telemetry lane's commits to the operational store, made in a process of their own.

The gateway's main process runs on one core: every step of a telemetry message holds its interpreter
lock, and the store's commit (three B-tree writes a message: the dedup key, the last state, the track)
was the largest of them. Here a child process commits the rows the parent made (`store.BatchRows`)
and answers with what the commit returned. The parent's committing thread waits for that answer
before it acknowledges the batch to the broker, exactly as it waits for a commit in its own process:
nothing is acknowledged that is not committed.

If the child dies, the call that was waiting raises, the batch stays unacknowledged and its commit is
tried again (in a new child): it may have committed already, and every row of it is written so that a
second commit changes nothing (ON CONFLICT), which `IngestPipeline.record` relies on for any retry.
If the parent dies the pipe closes and the child leaves.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from gateway.db import Target
from gateway.exercise_store import SessionNews
from gateway.store import BatchRows, OperationalStore

log = logging.getLogger(__name__)


class StoreProcessError(RuntimeError):
    """The commit failed in the store process (the message says why), or the process ended during it."""


def _serve(target: Target, claim_ttl_s: float, checkpoint_pages: int, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the process group; the parent decides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = OperationalStore(target, claim_ttl_s)
    store.checkpoint_after(checkpoint_pages)
    try:
        while (rows := conn.recv()) is not None:
            try:
                reply: tuple[str, object] = ("ok", store.commit_rows(rows))
            except Exception as e:   # the store's trouble is the parent's to report and retry
                reply = ("error", f"{type(e).__name__}: {e}")
            conn.send(reply)
    except (EOFError, OSError):
        pass   # the parent is gone
    finally:
        store.close()


class StoreProcess:
    """`commit(rows)` as `OperationalStore.commit_rows`, run in a child process."""

    # What the child runs; a test may put a stand-in speaking the same pipe protocol here.
    child_main = staticmethod(_serve)

    def __init__(self, target: Target, claim_ttl_s: float, checkpoint_pages: int) -> None:
        self.args = (target, claim_ttl_s, checkpoint_pages)
        self._ctx = mp.get_context("spawn")   # never fork a process that already runs threads
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: BaseProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        with self._lock:
            self._spawn()

    def _spawn(self) -> None:
        parent_end, child_end = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=self.child_main, name="store", daemon=True,
                                       args=(*self.args, child_end))
        self._proc.start()
        child_end.close()
        self._conn = parent_end

    def commit(self, rows: BatchRows) -> list[SessionNews]:
        """Commit in the child; raises StoreProcessError if it failed or the child ended (a new one is then
        started for the next call)."""
        with self._lock:
            if self._conn is None:
                raise StoreProcessError("the store process is not running")
            try:
                self._conn.send(rows)
                status, answer = self._conn.recv()
            except (EOFError, OSError) as e:
                code = self._restart()
                raise StoreProcessError(f"the store process ended during a commit (exit code {code}); "
                                        "a new one takes the retry") from e
        if status != "ok":
            raise StoreProcessError(str(answer))
        news: list[SessionNews] = answer
        return news

    def _restart(self) -> int | None:
        proc = self._proc
        if proc is not None:
            proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        code = proc.exitcode if proc is not None else None
        log.error("store process ended (exit code %s); starting another", code)
        self._spawn()
        return code

    def stop(self) -> None:
        with self._lock:
            conn, proc, self._conn = self._conn, self._proc, None
            if conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(None)
                conn.close()
            if proc is not None:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
