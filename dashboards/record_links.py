"""Residents' personal links to their exercise record, kept beside the operator accounts.

A link is `/me/<key>`: 192 random bits that exist only in the resident's SMS and their phone's cookie;
the store keeps a SHA-256 of the key, so neither a copy of the database nor the server's logs can
open a record. Anyone holding the link sees that one resident's record and nothing else. The service
centre revokes a resident's links (a lost phone, a forwarded SMS) with
`eldercare-gateway revoke-record-links RESIDENT_ID`; a new one comes with their next claim.
"""
from __future__ import annotations

import hashlib
import secrets
import threading

from dashboards.web_db import MIGRATIONS
from gateway.db import Target, connect, migrate


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class RecordLinks:
    """Safe to share between threads: one connection, serialised by a lock."""

    def __init__(self, target: Target) -> None:
        self._conn = connect(target)
        migrate(self._conn, "accounts", MIGRATIONS)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def create(self, resident_id: str, now_ms: int) -> str:
        """A new link key for the resident (their older links keep working until revoked)."""
        key = secrets.token_urlsafe(24)
        with self._lock:
            self._conn.execute("INSERT INTO record_links (key_hash, resident_id, created_ms) VALUES (?, ?, ?)",
                               (_hash(key), resident_id, now_ms))
        return key

    def resident_of(self, key: str) -> str | None:
        """Whose record a key opens; None for an unknown or revoked key."""
        if not key or len(key) > 100:
            return None
        with self._lock:
            row = self._conn.execute("SELECT resident_id FROM record_links WHERE key_hash = ? AND revoked_ms IS NULL",
                                     (_hash(key),)).fetchone()
        return row[0] if row else None

    def has_link(self, resident_id: str) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM record_links WHERE resident_id = ? AND revoked_ms IS NULL",
                                     (resident_id,)).fetchone()
        return row is not None

    def revoke(self, resident_id: str, now_ms: int) -> int:
        """Stop every live link of the resident; returns how many."""
        with self._lock, self._conn.transaction():
            return self._conn.execute("UPDATE record_links SET revoked_ms = ? WHERE resident_id = ? AND revoked_ms IS NULL",
                                      (now_ms, resident_id)).rowcount
