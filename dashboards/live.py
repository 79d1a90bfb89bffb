"""Live push to connected consoles: every committed alert event, as a server-sent event.

The engine calls `publish` from whichever thread committed (ingest, dispatch, tick, web);
each connected console has an asyncio queue on the web server's loop. An event only tells
a console *that* something changed; the console then reads the queue from the store, so a
console that missed events (a full queue, a dropped connection) catches up on its next read.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import orjson

from alerts.lifecycle import AlertEvent

_QUEUE_SIZE = 256
KEEPALIVE_S = 15.0


class Broadcaster:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[bytes]]] = set()

    @property
    def connected(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, ev: AlertEvent) -> None:
        """An AlertService listener: never blocks the committing thread."""
        frame = b"event: alert\ndata: " + orjson.dumps({"alert_id": ev.alert_id, "kind": ev.kind, "at_ms": ev.at_ms}) + b"\n\n"
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, q in subscribers:
            with suppress(RuntimeError):   # that loop has closed: the server is stopping
                loop.call_soon_threadsafe(_offer, q, frame)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[bytes]]:
        q: asyncio.Queue[bytes] = asyncio.Queue(_QUEUE_SIZE)
        entry = (asyncio.get_running_loop(), q)
        with self._lock:
            self._subscribers.add(entry)
        try:
            yield q
        finally:
            with self._lock:
                self._subscribers.discard(entry)

    async def stream(self) -> AsyncIterator[bytes]:
        """The text/event-stream body: a hello (the console reads the queue at once), events, keep-alives."""
        async with self.subscribe() as q:
            yield b"retry: 1000\nevent: hello\ndata: {}\n\n"
            while True:
                try:
                    yield await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"


def _offer(q: asyncio.Queue[bytes], frame: bytes) -> None:
    # A console too slow to take 256 frames loses some; any later frame makes it read the whole queue anyway.
    with suppress(asyncio.QueueFull):
        q.put_nowait(frame)
