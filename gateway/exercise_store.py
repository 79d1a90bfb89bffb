"""Exercise sessions in the operational store: folded in the ingest's own transaction, closed when idle,
claimed by residents through a single-use code, read back as records and usage.

Each session row carries its claim code from the moment it is first seen, so a resident can claim it
during the workout or up to `claim_ttl` after it ends. Codes are 10 characters of Crockford's base 32
(50 bits): with a few hundred codes live at once, one guess in 10^12 finds one, and guesses are
throttled on top of that (dashboards/exercise.py).
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.db import Connection
from gateway.exercise import ClosedBy, Tally, by_session, fold_all
from gateway.models import DeviceMessage

SCHEMA = """
CREATE TABLE IF NOT EXISTS exercise_session (
    device_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    equipment_type TEXT,
    start_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    end_ts INTEGER,
    closed_by TEXT,
    closed_ms INTEGER,
    elapsed_s INTEGER NOT NULL,
    reps INTEGER NOT NULL,
    distance_m DOUBLE PRECISION NOT NULL,
    energy_kcal DOUBLE PRECISION NOT NULL,
    hr_avg DOUBLE PRECISION,
    hr_max INTEGER,
    power_avg DOUBLE PRECISION,
    fold TEXT NOT NULL,
    last_received_ms INTEGER NOT NULL,
    claim_code TEXT NOT NULL UNIQUE,
    resident_id TEXT,
    claimed_ms INTEGER,
    PRIMARY KEY (device_id, session_id)
);
CREATE INDEX IF NOT EXISTS exercise_open ON exercise_session (closed_by, last_received_ms);
CREATE INDEX IF NOT EXISTS exercise_by_resident ON exercise_session (resident_id, start_ts);
CREATE INDEX IF NOT EXISTS exercise_by_start ON exercise_session (start_ts);
"""

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"   # Crockford: no I, L, O, U to misread
CODE_LENGTH = 10
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})

_COLUMNS = ("device_id", "session_id", "equipment_type", "start_ts", "last_ts", "end_ts", "closed_by", "closed_ms", "elapsed_s",
            "reps", "distance_m", "energy_kcal", "hr_avg", "hr_max", "power_avg", "last_received_ms", "claim_code",
            "resident_id", "claimed_ms")


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str | None:
    """What a person typed or a QR link carried, as a stored code; None if it cannot be one."""
    code = "".join(text.split()).replace("-", "").upper().translate(_READ_AS)
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def spaced(code: str) -> str:
    """A code as shown and read out: two groups of five."""
    return f"{code[:5]}-{code[5:]}"


@dataclass(frozen=True, slots=True)
class ExerciseSession:
    """One session as the record, the claim page and the usage views see it."""

    device_id: str
    session_id: str
    equipment_type: str | None
    start_ts: int
    last_ts: int
    end_ts: int | None
    closed_by: ClosedBy | None
    closed_ms: int | None
    elapsed_s: int
    reps: int
    distance_m: float
    energy_kcal: float
    hr_avg: float | None
    hr_max: int | None
    power_avg: float | None
    last_received_ms: int
    claim_code: str
    resident_id: str | None
    claimed_ms: int | None

    @property
    def open(self) -> bool:
        return self.closed_by is None


@dataclass(frozen=True, slots=True)
class SessionNews:
    """A session that opened or closed in a batch: the machine is told its claim code."""

    device_id: str
    session_id: str
    claim_code: str
    closed: bool
    claimable_until_ms: int | None


def _row(t: Tally, closed_ms: int | None, code: str) -> tuple[Any, ...]:
    n = t.totals
    return (t.device_id, t.session_id, t.equipment_type, t.start_ts, t.last_ts, t.end_ts, t.closed_by, closed_ms,
            t.duration_s, n.count, n.distance_m, n.energy_kcal, t.hr_avg, t.hr_max, t.power_avg,
            json.dumps(t.state()), t.last_received_ms, code)


_UPSERT = """
INSERT INTO exercise_session (device_id, session_id, equipment_type, start_ts, last_ts, end_ts, closed_by, closed_ms, elapsed_s,
    reps, distance_m, energy_kcal, hr_avg, hr_max, power_avg, fold, last_received_ms, claim_code)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, session_id) DO UPDATE SET equipment_type = excluded.equipment_type,
    start_ts = excluded.start_ts, last_ts = excluded.last_ts, end_ts = excluded.end_ts, closed_by = excluded.closed_by,
    closed_ms = excluded.closed_ms, elapsed_s = excluded.elapsed_s, reps = excluded.reps,
    distance_m = excluded.distance_m, energy_kcal = excluded.energy_kcal, hr_avg = excluded.hr_avg,
    hr_max = excluded.hr_max, power_avg = excluded.power_avg, fold = excluded.fold,
    last_received_ms = excluded.last_received_ms
"""


def record_sessions(db: Connection, accepted: Sequence[DeviceMessage], received_ms: int,
                    claim_ttl_ms: int) -> list[SessionNews]:
    """Fold a batch's exercise messages into their sessions (inside the caller's transaction).

    A session seen for the first time gets its claim code; a session that ends (or a machine starting
    a new one while another is open, which closes that one as "idle") is news for the machine's display.
    """
    groups = by_session(accepted)
    if not groups:
        return []
    news: list[SessionNews] = []
    for (device_id, session_id), messages in sorted(groups.items()):
        row = db.execute("SELECT start_ts, last_received_ms, equipment_type, end_ts, closed_by, hr_max, fold,"
                         " claim_code, closed_ms FROM exercise_session WHERE device_id = ? AND session_id = ?",
                         (device_id, session_id)).fetchone()
        before = None if row is None else Tally.restore(device_id, session_id, row[0], row[1], row[2], row[3], row[4],
                                                        row[5], json.loads(row[6]))
        t = fold_all(before, device_id, session_id, messages, received_ms)
        code = new_code() if row is None else row[7]
        closed_ms = row[8] if row is not None else None
        if row is None:
            news.extend(_close_others(db, device_id, session_id, received_ms, claim_ttl_ms))
            news.append(SessionNews(device_id, session_id, code, False, None))
        if t.closed_by is not None and (before is None or before.closed_by is None):
            closed_ms = received_ms
            news.append(SessionNews(device_id, session_id, code, True, received_ms + claim_ttl_ms))
        db.execute(_UPSERT, _row(t, closed_ms, code))
    return news


def _close_others(db: Connection, device_id: str, session_id: str, now_ms: int, claim_ttl_ms: int) -> list[SessionNews]:
    """A machine that starts a session has left its earlier open one without an `end`."""
    rows = db.execute("SELECT session_id, claim_code FROM exercise_session"
                      " WHERE device_id = ? AND closed_by IS NULL AND session_id <> ?", (device_id, session_id)).fetchall()
    for sid, _ in rows:
        _close_idle_row(db, device_id, sid, now_ms)
    return [SessionNews(device_id, sid, code, True, now_ms + claim_ttl_ms) for sid, code in rows]


def _close_idle_row(db: Connection, device_id: str, session_id: str, now_ms: int) -> None:
    db.execute("UPDATE exercise_session SET closed_by = 'idle', closed_ms = ?,"
               " end_ts = coalesce(end_ts, last_ts)"
               " WHERE device_id = ? AND session_id = ? AND closed_by IS NULL", (now_ms, device_id, session_id))


def close_idle(db: Connection, now_ms: int, idle_ms: int, claim_ttl_ms: int) -> list[SessionNews]:
    """Close sessions with nothing heard for `idle_ms` (gateway time): the machine never sent `end`."""
    with db.transaction():
        rows = db.execute("SELECT device_id, session_id, claim_code FROM exercise_session"
                          " WHERE closed_by IS NULL AND last_received_ms < ? ORDER BY device_id, session_id",
                          (now_ms - idle_ms,)).fetchall()
        for device_id, session_id, _ in rows:
            _close_idle_row(db, device_id, session_id, now_ms)
    return [SessionNews(d, s, c, True, now_ms + claim_ttl_ms) for d, s, c in rows]


def _session(row: Sequence[Any]) -> ExerciseSession:
    return ExerciseSession(*row)


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM exercise_session"


def session(db: Connection, device_id: str, session_id: str) -> ExerciseSession | None:
    row = db.execute(_SELECT + " WHERE device_id = ? AND session_id = ?", (device_id, session_id)).fetchone()
    return _session(row) if row else None


def session_by_code(db: Connection, code: str) -> ExerciseSession | None:
    row = db.execute(_SELECT + " WHERE claim_code = ?", (code,)).fetchone()
    return _session(row) if row else None


def claim(db: Connection, code: str, resident_id: str, now_ms: int) -> bool:
    """Give the session to the resident, once; False if it was claimed already (by anyone)."""
    with db.transaction():
        cur = db.execute("UPDATE exercise_session SET resident_id = ?, claimed_ms = ?"
                         " WHERE claim_code = ? AND resident_id IS NULL", (resident_id, now_ms, code))
        return cur.rowcount == 1


def sessions_of(db: Connection, resident_id: str, since_ts: int = 0) -> list[ExerciseSession]:
    """A resident's claimed sessions since `since_ts` (device time), newest first."""
    rows = db.execute(_SELECT + " WHERE resident_id = ? AND start_ts >= ? ORDER BY start_ts DESC",
                      (resident_id, since_ts)).fetchall()
    return [_session(r) for r in rows]


def sessions_between(db: Connection, since_ts: int, until_ts: int) -> list[ExerciseSession]:
    """Every session that started in [since_ts, until_ts), oldest first (usage views and CSV export)."""
    rows = db.execute(_SELECT + " WHERE start_ts >= ? AND start_ts < ? ORDER BY start_ts, device_id",
                      (since_ts, until_ts)).fetchall()
    return [_session(r) for r in rows]


def last_session_starts(db: Connection) -> dict[str, int]:
    """Each machine's newest session start (device time)."""
    return dict(db.execute("SELECT device_id, max(start_ts) FROM exercise_session GROUP BY device_id").fetchall())
