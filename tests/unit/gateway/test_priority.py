"""Priority: background work waits while a hold is live, and never longer than the hold lasts."""
from __future__ import annotations

import threading
import time

from gateway.priority import Priority


def _yield_in_thread(priority: Priority) -> threading.Event:
    done = threading.Event()

    def run() -> None:
        priority.yield_to_urgent()
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return done


def test_nothing_held_means_background_work_goes_on_at_once() -> None:
    priority = Priority()
    priority.yield_to_urgent()
    assert priority.yielded == 0 and not priority.urgent()


def test_background_work_waits_until_the_hold_is_released() -> None:
    priority = Priority(hold_s=30)
    priority.hold("critical")
    done = _yield_in_thread(priority)
    assert not done.wait(0.2)          # still held: it waits
    priority.release("critical")
    assert done.wait(5)
    assert priority.yielded == 1


def test_it_waits_for_every_holder_not_only_the_first_released() -> None:
    priority = Priority(hold_s=30)
    priority.hold("critical")
    priority.hold("send-7")
    done = _yield_in_thread(priority)
    priority.release("critical")
    assert not done.wait(0.2)
    priority.release("send-7")
    assert done.wait(5)


def test_a_hold_never_released_expires_by_itself() -> None:
    priority = Priority(hold_s=0.2)
    priority.hold("dispatch")           # e.g. a dispatch round that never came
    started = time.monotonic()
    priority.yield_to_urgent()
    waited = time.monotonic() - started
    assert 0.1 <= waited < 5
    assert not priority.urgent()


def test_holding_again_moves_the_deadline_on() -> None:
    now = [100.0]
    priority = Priority(hold_s=1.0, clock=lambda: now[0])
    priority.hold("critical")
    now[0] = 100.8
    priority.hold("critical")           # a second press arrived
    now[0] = 101.5                      # past the first deadline, not the second
    assert priority.urgent()
    now[0] = 102.0
    assert not priority.urgent()


def test_releasing_a_holder_that_holds_nothing_is_harmless() -> None:
    priority = Priority()
    priority.release("send-1")
    assert not priority.urgent()


def test_a_storm_of_presses_renewing_the_hold_still_lets_background_work_move_on() -> None:
    priority = Priority(hold_s=0.3)
    storm_over = threading.Event()

    def storm() -> None:   # a press every 10 ms for up to 5 s: the hold never lapses
        for _ in range(500):
            priority.hold("critical")
            if storm_over.wait(0.01):
                return

    presses = threading.Thread(target=storm, daemon=True)
    presses.start()
    try:
        threading.Event().wait(0.05)
        assert priority.urgent()
        done = _yield_in_thread(priority)
        assert done.wait(3)          # it gave up waiting after about 0.3 s, not after the storm
        assert priority.urgent()     # the storm was still going on
    finally:
        storm_over.set()
        presses.join(5)
