"""An on-disk queue of line-protocol batches for while the time-series store is away.

Each batch is one file, written to a temporary name, fsynced and renamed,
so a crash leaves either the whole batch or nothing. Files are replayed in
the order they were written.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

_SUFFIX = ".lp"


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink()  # a batch whose write never finished was never acknowledged
        self._lock = threading.Lock()
        existing = self._segments()
        self._next = int(existing[-1].stem) + 1 if existing else 1

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("*" + _SUFFIX))

    def append(self, lines: Sequence[str]) -> None:
        """Durably add one batch; it is on disk when this returns."""
        with self._lock:
            number = self._next
            self._next += 1
        final = self.directory / f"{number:016d}{_SUFFIX}"
        temp = final.with_suffix(".tmp")
        with open(temp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def oldest(self) -> tuple[Path, list[str]] | None:
        segments = self._segments()
        if not segments:
            return None
        return segments[0], segments[0].read_text(encoding="utf-8").splitlines()

    def remove(self, segment: Path) -> None:
        segment.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._segments())

    def prune_rejected(self, now_s: float, keep_s: float) -> int:
        """Delete batches the store refused (kept aside for an operator) older than `keep_s`; returns how many."""
        removed = 0
        for path in self.directory.glob("*.rejected"):
            if path.stat().st_mtime < now_s - keep_s:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def line_count(self) -> int:
        return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in self._segments())
