"""Progress of a long run: one line rewritten in place on a terminal, a line every few seconds in a log."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO = sys.stderr, every_s: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s
        self._last = float("-inf")
        self._shown = False

    def show(self, text: str) -> None:
        """On a terminal: replace the line. Elsewhere (a pipe, a CI log): a new line at most every `every_s`."""
        if self.tty:
            print(f"\r{text}", end="", file=self.stream, flush=True)
            self._shown = True
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            print(text, file=self.stream, flush=True)

    def done(self) -> None:
        """End the rewritten line, so what follows starts on a line of its own."""
        if self._shown:
            print(file=self.stream, flush=True)
            self._shown = False
