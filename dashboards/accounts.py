"""Operator accounts, login sessions and integrators' API tokens, in the web layer's own SQLite file
or in the PostgreSQL database (`[store] url`), so every gateway sharing it knows the same operators.

Passwords are hashed with argon2. Session and API tokens are 256 random bits, so a
SHA-256 of them is enough to store (nothing to brute-force); the plain token exists
only in the operator's cookie or the integrator's hands. After `THROTTLE_AFTER`
failed logins in a row an account refuses every login, right or wrong, for
`THROTTLE_S`, and again after each further failure.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dashboards.web_db import MIGRATIONS
from gateway.db import Target, connect, migrate

THROTTLE_AFTER = 10
THROTTLE_S = 15 * 60
MIN_PASSWORD_CHARS = 10
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{2,40}$")
TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{2,60}$")



class Role(StrEnum):
    OPERATOR = "operator"   # works the alert queue
    ADMIN = "admin"         # also manages accounts and API tokens


class AccountError(ValueError):
    """A request about accounts that cannot be done; the message says why, for the person asking."""


class LoginThrottled(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: Role
    created_ms: int
    disabled: bool
    throttled_until_ms: int


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is making a request: a logged-in operator (with the session's CSRF token) or an API token."""

    name: str
    role: Role
    csrf: str | None = None   # None for API tokens, which are not sent by browsers on their own

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    role: Role
    created_by: str
    created_ms: int
    revoked_ms: int | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def throttled_until(failures: int, failed_at_ms: int) -> int:
    """When an account may try again after `failures` failures in a row, the last at `failed_at_ms` (0: now)."""
    return failed_at_ms + THROTTLE_S * 1000 if failures >= THROTTLE_AFTER else 0


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")


class AccountStore:
    """Safe to share between threads: one connection, serialised by a lock."""

    def __init__(self, target: Target, session_hours: float = 12.0) -> None:
        self.target = target
        self._conn = connect(target)
        migrate(self._conn, "accounts", MIGRATIONS)
        self._lock = threading.Lock()
        self._hasher = PasswordHasher()
        self.session_ms = int(session_hours * 3_600_000)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- accounts ------------------------------------------------------------

    def create_account(self, username: str, password: str, role: Role, now_ms: int) -> Account:
        if not USERNAME.match(username):
            raise AccountError("a username is 2-40 letters, digits, '.', '_' or '-'")
        check_password_rules(password)
        hashed = self._hasher.hash(password)
        with self._lock:
            try:
                self._conn.execute("INSERT INTO accounts (username, password_hash, role, created_ms) VALUES (?,?,?,?)",
                                   (username, hashed, role, now_ms))
            except self._conn.integrity_error:
                raise AccountError(f"an account named {username!r} already exists") from None
        return Account(username, role, now_ms, False, 0)

    def accounts(self) -> list[Account]:
        with self._lock:
            rows = self._conn.execute("SELECT username, role, created_ms, disabled, throttled_until_ms FROM accounts "
                                      "ORDER BY username").fetchall()
        return [Account(u, Role(r), c, bool(d), t) for u, r, c, d, t in rows]

    def has_admin(self) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM accounts WHERE role=? AND disabled=0", (Role.ADMIN,)).fetchone() is not None

    def set_password(self, username: str, password: str) -> None:
        check_password_rules(password)
        hashed = self._hasher.hash(password)
        with self._lock:
            if not self._conn.execute("UPDATE accounts SET password_hash=?, failures=0, throttled_until_ms=0 WHERE username=?",
                                      (hashed, username)).rowcount:
                raise AccountError(f"no account named {username!r}")
            self._conn.execute("DELETE FROM sessions WHERE username=?", (username,))

    def set_disabled(self, username: str, disabled: bool) -> None:
        with self._lock:
            if not self._conn.execute("UPDATE accounts SET disabled=? WHERE username=?", (int(disabled), username)).rowcount:
                raise AccountError(f"no account named {username!r}")
            if disabled:
                self._conn.execute("DELETE FROM sessions WHERE username=?", (username,))

    def verify_login(self, username: str, password: str, now_ms: int) -> Account | None:
        """The account if the password is right; None otherwise. Raises LoginThrottled while throttled,
        whatever the password, so a throttled account tells a guesser nothing."""
        with self._lock:
            row = self._conn.execute("SELECT password_hash, role, created_ms, disabled, failures, throttled_until_ms "
                                     "FROM accounts WHERE username=?", (username,)).fetchone()
        if row is None:
            self._hasher.hash(password)  # the same work as a real check: timing does not tell which names exist
            return None
        hashed, role, created_ms, disabled, failures, until_ms = row
        if until_ms > now_ms:
            raise LoginThrottled((until_ms - now_ms + 999) // 1000)
        try:
            self._hasher.verify(hashed, password)
            ok = not disabled
        except (VerificationError, InvalidHashError):
            ok = False
        with self._lock:
            if ok:
                self._conn.execute("UPDATE accounts SET failures=0, throttled_until_ms=0 WHERE username=?", (username,))
            else:
                failures += 1
                self._conn.execute("UPDATE accounts SET failures=?, throttled_until_ms=? WHERE username=?",
                                   (failures, throttled_until(failures, now_ms), username))
        return Account(username, Role(role), created_ms, bool(disabled), 0) if ok else None

    # -- sessions ------------------------------------------------------------

    def start_session(self, username: str, now_ms: int) -> str:
        """A new session for the account; returns the token for the cookie."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._conn.execute("DELETE FROM sessions WHERE expires_ms < ?", (now_ms,))
            self._conn.execute("INSERT INTO sessions VALUES (?,?,?,?,?)",
                               (_digest(token), username, secrets.token_urlsafe(32), now_ms, now_ms + self.session_ms))
        return token

    def session_actor(self, token: str, now_ms: int) -> Actor | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT a.username, a.role, s.csrf FROM sessions s JOIN accounts a USING (username) "
                "WHERE s.token_hash=? AND s.expires_ms > ? AND a.disabled=0", (_digest(token), now_ms)).fetchone()
        return Actor(row[0], Role(row[1]), row[2]) if row else None

    def end_session(self, token: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM sessions WHERE token_hash=?", (_digest(token),))

    # -- API tokens ----------------------------------------------------------

    def create_token(self, name: str, role: Role, created_by: str, now_ms: int) -> str:
        """A new named token; the plain token is returned once and never stored."""
        if not TOKEN_NAME.match(name):
            raise AccountError("a token name is 2-60 letters, digits, '.', '_' or '-'")
        token = "ect_" + secrets.token_urlsafe(32)
        with self._lock:
            try:
                self._conn.execute("INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)",
                                   (name, _digest(token), role, created_by, now_ms))
            except self._conn.integrity_error:
                raise AccountError(f"a token named {name!r} already exists (revoked ones keep their name)") from None
        return token

    def revoke_token(self, name: str, now_ms: int) -> None:
        with self._lock:
            if not self._conn.execute("UPDATE api_tokens SET revoked_ms=? WHERE name=? AND revoked_ms IS NULL",
                                      (now_ms, name)).rowcount:
                raise AccountError(f"no live token named {name!r}")

    def tokens(self) -> list[ApiToken]:
        with self._lock:
            rows = self._conn.execute("SELECT name, role, created_by, created_ms, revoked_ms FROM api_tokens "
                                      "ORDER BY created_ms").fetchall()
        return [ApiToken(n, Role(r), b, c, v) for n, r, b, c, v in rows]

    def token_actor(self, token: str) -> Actor | None:
        with self._lock:
            row = self._conn.execute("SELECT name, role FROM api_tokens WHERE token_hash=? AND revoked_ms IS NULL",
                                     (_digest(token),)).fetchone()
        return Actor(f"token:{row[0]}", Role(row[1])) if row else None
