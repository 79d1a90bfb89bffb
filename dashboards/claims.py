"""What keeps claiming an exercise session safe: guesses are throttled, and a resident proves their
phone with a one-time SMS code. Pure of the web framework; the clock is passed in.

Why a one-time SMS code and not a PIN: residents are in their seventies and eighties and forget PINs,
a PIN in the community file would be a secret every administrator can read, and the phone that
receives the code is the phone that then holds the record link. A second claim from the same phone
needs no code at all: the phone keeps the resident's record link in a cookie.
"""
from __future__ import annotations

import re
import secrets
from collections import deque
from dataclasses import dataclass, field

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def normalise_phone(text: str, prefix: str) -> str | None:
    """A number as people type it ('138 0013 8000', '0138-0013-8000', '+86 138...', '0086 138...') in
    E.164, with `prefix` (the country code, e.g. '+86') for a number typed without one; None if it cannot be one."""
    digits = re.sub(r"[\s().-]", "", text)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    elif not digits.startswith("+"):
        digits = prefix + digits.lstrip("0")
    return digits if E164.match(digits) else None


@dataclass
class Throttle:
    """Failures per client (unknown codes, wrong one-time codes, unknown phones): after `limit` in
    `window_ms`, every claim request from that client is refused until the oldest failure ages out."""

    limit: int = 10
    window_ms: int = 10 * 60_000
    _failures: dict[str, deque[int]] = field(default_factory=dict)

    def _recent(self, client: str, now_ms: int) -> deque[int]:
        seen = self._failures.get(client)
        if seen is None:
            return deque()
        while seen and seen[0] <= now_ms - self.window_ms:
            seen.popleft()
        if not seen:
            del self._failures[client]
        return seen

    def retry_after_s(self, client: str, now_ms: int) -> int:
        """0 if the client may try; otherwise seconds until it may."""
        seen = self._recent(client, now_ms)
        if len(seen) < self.limit:
            return 0
        return max(1, (seen[0] + self.window_ms - now_ms + 999) // 1000)

    def fail(self, client: str, now_ms: int) -> None:
        self._recent(client, now_ms)
        self._failures.setdefault(client, deque()).append(now_ms)
        if len(self._failures) > 100_000:   # a flood of clients: forget the quietest rather than grow for ever
            self._failures.pop(next(iter(self._failures)))


@dataclass
class _Pending:
    code: str
    expires_ms: int
    tries: int = 0


@dataclass
class OneTimeCodes:
    """Six-digit codes sent by SMS, one live code per phone: valid `valid_ms`, `max_tries` guesses each,
    and a phone gets a new one at most every `resend_ms`. Kept in memory: a restart of the gateway only
    means asking for a new code."""

    valid_ms: int = 5 * 60_000
    max_tries: int = 5
    resend_ms: int = 60_000
    _pending: dict[str, _Pending] = field(default_factory=dict)

    def wait_s(self, phone: str, now_ms: int) -> int:
        """Seconds before this phone may be sent another code (0: now)."""
        p = self._pending.get(phone)
        if p is None:
            return 0
        sent_ms = p.expires_ms - self.valid_ms
        return max(0, (sent_ms + self.resend_ms - now_ms + 999) // 1000)

    def issue(self, phone: str, now_ms: int) -> str:
        for stale in [k for k, v in self._pending.items() if v.expires_ms <= now_ms]:
            del self._pending[stale]
        code = f"{secrets.randbelow(1_000_000):06d}"
        self._pending[phone] = _Pending(code, now_ms + self.valid_ms)
        return code

    def check(self, phone: str, code: str, now_ms: int) -> bool:
        """Whether `code` is the phone's live code; a right code is used up, and so is a code guessed at too often."""
        p = self._pending.get(phone)
        if p is None or p.expires_ms <= now_ms:
            return False
        p.tries += 1
        if secrets.compare_digest(p.code, code.strip()):
            del self._pending[phone]
            return True
        if p.tries >= self.max_tries:
            del self._pending[phone]
        return False
