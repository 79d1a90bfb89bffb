"""The processes a bench starts: their CPU time and memory from /proc, stopping their groups, progress lines."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f} s] {text}", file=sys.stderr, flush=True)


# ---- CPU and memory of a process group -----------------------------------------------------------------------------

class Usage:
    """CPU seconds and peak RSS of every process in the watched sessions (each consumer starts its own)."""

    TICK = os.sysconf("SC_CLK_TCK")
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self) -> None:
        self.sessions: set[int] = set()
        self.ticks: dict[tuple[int, int], int] = {}   # (pid, start time) -> utime + stime last seen
        self.rss = 0        # the last sample's sum
        self.peak_rss = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        with self._lock:
            self.sessions.add(pid)
        self.sample()

    def sample(self) -> None:
        rss = 0
        with self._lock:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    stat = Path(entry.path, "stat").read_text()
                    fields = stat[stat.rindex(")") + 2:].split()
                    if int(fields[3]) not in self.sessions:
                        continue
                    self.ticks[int(entry.name), int(fields[19])] = int(fields[11]) + int(fields[12])
                    rss += int(Path(entry.path, "statm").read_text().split()[1]) * self.PAGE
                except (OSError, ValueError, IndexError):
                    continue   # the process left between listing and reading
            self.rss = rss
            self.peak_rss = max(self.peak_rss, rss)

    def cpu_s(self) -> float:
        self.sample()
        return sum(self.ticks.values()) / self.TICK

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


# ---- stopping what a bench started ---------------------------------------------------------------------------------

def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the process group this harness started for a consumer (its leader's pid is the group id)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_group(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM the leader, SIGKILL the group if it has not left in time, or if children outlived it."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
    kill_group(proc)
