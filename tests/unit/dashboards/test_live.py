"""The live push: events committed on any thread reach every connected console's stream."""
from __future__ import annotations

import asyncio
import threading

from alerts.lifecycle import AlertEvent
from dashboards.live import Broadcaster


def run(coro):
    """asyncio.run in a thread of its own: a browser test earlier in the session may own this thread's loop."""
    result: list = []
    t = threading.Thread(target=lambda: result.append(asyncio.run(coro)))
    t.start()
    t.join(30)
    return result[0]


def test_an_event_published_from_another_thread_reaches_every_subscriber_and_leaving_unsubscribes():
    b = Broadcaster()

    async def main() -> list[bytes]:
        async with b.subscribe() as first, b.subscribe() as second:
            assert b.connected == 2
            t = threading.Thread(target=b.publish, args=(AlertEvent(7, 1000, "acknowledged", "chen"),))
            t.start()
            got = [await asyncio.wait_for(first.get(), 5), await asyncio.wait_for(second.get(), 5)]
            t.join()
        assert b.connected == 0
        return got

    frames = run(main())
    assert frames[0] == frames[1]
    assert frames[0].startswith(b"event: alert\ndata: ") and b'"alert_id":7' in frames[0] and frames[0].endswith(b"\n\n")


def test_a_console_that_falls_behind_loses_frames_but_never_blocks_the_engine():
    b = Broadcaster()

    async def main() -> int:
        async with b.subscribe() as q:
            for i in range(1000):
                b.publish(AlertEvent(i, i, "repeated", "w1"))   # from the loop's own thread: queued callbacks
            await asyncio.sleep(0.05)
            return q.qsize()

    assert 0 < run(main()) <= 256


def test_the_stream_says_hello_first_so_a_reconnecting_console_reads_the_queue_at_once():
    b = Broadcaster()

    async def main() -> bytes:
        stream = b.stream()
        first = await stream.__anext__()
        await stream.aclose()
        return first

    assert run(main()).startswith(b"retry: 1000\nevent: hello")
