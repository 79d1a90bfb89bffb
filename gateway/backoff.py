"""Exponential backoff: how long to wait before trying again, for every retry loop in the project.

The delays are pure functions of the attempt number and a random draw, so a
test injects the draw instead of patching `random`. `Backoff` is the small
stateful wrapper a retry loop keeps: `next_s()` after each failure,
`reset()` after a success.

Each caller keeps its own jitter, because they want different things:
reconnecting gateways and the spool replayer want to spread out but never
wait longer than the step (`jitter_down_to_half`); notification retries
spread both ways around the step (`jitter_either_way`); a batch retried in
ingest waits exactly the step (no jitter).
"""
from __future__ import annotations

import random
from collections.abc import Callable

# 2.0 ** n overflows a float past n = 1023; any sane cap is reached long before.
_MAX_DOUBLINGS = 1000

Jitter = Callable[[float, float], float]
"""(step in seconds, a random draw in [0, 1)) -> the delay to wait, in seconds."""


def exponential_s(attempt: int, base_s: float, max_s: float) -> float:
    """The step after failed attempt 1, 2, 3 ...: base_s, 2 x base_s, 4 x base_s ... capped at max_s."""
    return min(max_s, base_s * 2.0 ** min(max(0, attempt - 1), _MAX_DOUBLINGS))


def jitter_down_to_half(step_s: float, r: float) -> float:
    """Anywhere from half the step to all of it (AWS's "equal jitter"): spread out, never longer than the step."""
    return step_s / 2 + (step_s - step_s / 2) * r   # random.uniform(step_s / 2, step_s), with r injected


def jitter_either_way(step_s: float, r: float, share: float) -> float:
    """The step plus or minus up to `share` of it."""
    return step_s * (1 + share * (2 * r - 1))


class Backoff:
    """The delays of one retry loop: exponential from `base_s`, capped at `max_s`, jittered."""

    def __init__(self, base_s: float, max_s: float, jitter: Jitter | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.jitter = jitter
        self.rand = rand
        self.failures = 0

    def next_s(self) -> float:
        """The wait after one more failure."""
        self.failures += 1
        step = exponential_s(self.failures, self.base_s, self.max_s)
        return step if self.jitter is None else self.jitter(step, self.rand())

    def reset(self) -> None:
        """After a success: the next failure waits `base_s` again."""
        self.failures = 0
