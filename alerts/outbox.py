"""The durable outbox: one row per notification attempt, keyed (alert_id, step, recipient).

Row states are `OutboxStatus` (alerts/vocabulary.py). `delivery` holds the
provider's status from callbacks and only moves forward.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alerts.store import Database
from alerts.vocabulary import AlertState, Channel, Escalation, OutboxStatus, Severity

_COLS = "id, alert_id, step, recipient, channel, language, text, status, attempts, due_ms, provider_id, delivery, last_error"
# Steps of the escalation plan are numbers; follow-ups are named.
_ESCALATION_STEP = "substr(step, 1, 1) IN ('0', '1', '2', '3', '4', '5', '6', '7', '8', '9')"
_O_COLS = ", ".join(f"o.{c.strip()}" for c in _COLS.split(","))  # the same, qualified, for joins


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    alert_id: int
    step: str
    recipient: str
    channel: str
    language: str
    text: str
    status: str
    attempts: int
    due_ms: int
    provider_id: str | None
    delivery: str | None
    last_error: str | None


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, alert_id: int, step: str, recipient: str, channel: str, language: str, text: str, now_ms: int) -> bool:
        """Queue an attempt; False if that (alert, step, recipient) was already queued."""
        with self.db.transaction() as c:
            cur = c.execute(
                "INSERT INTO outbox (alert_id, step, recipient, channel, language, text, status, due_ms, updated_ms)"
                " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (alert_id, step, recipient, channel, language, text, OutboxStatus.PENDING, now_ms, now_ms))
            return cur.rowcount == 1

    def get(self, attempt_id: int) -> OutboxRow | None:
        with self.db.snapshot() as c:
            row = c.execute(f"SELECT {_COLS} FROM outbox WHERE id=?", (attempt_id,)).fetchone()
        return OutboxRow(*row) if row else None

    def of_alert(self, alert_id: int) -> list[OutboxRow]:
        with self.db.snapshot() as c:
            rows = c.execute(f"SELECT {_COLS} FROM outbox WHERE alert_id=? ORDER BY id", (alert_id,)).fetchall()
        return [OutboxRow(*r) for r in rows]

    def needing_operator(self) -> dict[int, int]:
        """Alerts with attempts whose outcome only a person can settle: alert id -> how many."""
        with self.db.snapshot() as c:
            rows = c.execute("SELECT alert_id, count(*) FROM outbox WHERE status=? GROUP BY alert_id",
                             (OutboxStatus.OPERATOR,)).fetchall()
        return dict(rows)

    def counts(self) -> dict[tuple[str, str], int]:
        """(status, channel) -> rows (for monitoring)."""
        with self.db.snapshot() as c:
            rows = c.execute("SELECT status, channel, count(*) FROM outbox GROUP BY status, channel").fetchall()
        return {(status, channel): n for status, channel, n in rows}

    def outcomes(self, alert_id: int, step: int) -> list[tuple[str, str | None]]:
        """(status, delivery) of every attempt of one step."""
        with self.db.snapshot() as c:
            rows = c.execute("SELECT status, delivery FROM outbox WHERE alert_id=? AND step=?", (alert_id, str(step))).fetchall()
        return rows

    def running_outcomes(self) -> dict[int, list[tuple[str, str | None]]]:
        """(status, delivery) of every attempt of each running alert's current step, by alert id, in one query."""
        with self.db.snapshot() as c:
            rows = c.execute(
                "SELECT o.alert_id, o.status, o.delivery FROM outbox o JOIN alerts a ON a.id = o.alert_id"
                " AND o.step = CAST(a.step AS TEXT) WHERE a.escalation=? AND a.state=?",
                (Escalation.RUNNING, AlertState.OPEN)).fetchall()
        out: dict[int, list[tuple[str, str | None]]] = {}
        for alert_id, status, delivery in rows:
            out.setdefault(alert_id, []).append((status, delivery))
        return out

    def claim(self, attempt_id: int, now_ms: int) -> bool:
        """Mark a pending row `sending` (committed before the request goes out); False if someone else has it."""
        with self.db.transaction() as c:
            cur = c.execute("UPDATE outbox SET status=?, attempts=attempts+1, updated_ms=? WHERE id=? AND status=?",
                            (OutboxStatus.SENDING, now_ms, attempt_id, OutboxStatus.PENDING))
            return cur.rowcount == 1

    def set_status(self, attempt_id: int, status: str, now_ms: int, *, error: str | None = None,
                   provider_id: str | None = None, delivery: str | None = None, due_ms: int | None = None) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE outbox SET status=?, updated_ms=?, last_error=COALESCE(?, last_error),"
                      " provider_id=COALESCE(?, provider_id), delivery=COALESCE(?, delivery), due_ms=COALESCE(?, due_ms)"
                      " WHERE id=?", (status, now_ms, error, provider_id, delivery, due_ms, attempt_id))

    def record_delivery(self, attempt_id: int, delivery: str, now_ms: int, provider_id: str | None,
                        moves_forward: Callable[[str, str | None, str], bool]) -> OutboxRow | None:
        """Apply a provider status if `moves_forward(channel, current, new)` says it advances the attempt;
        returns the updated row, or None if it was ignored (stale, unknown, or no such attempt)."""
        with self.db.transaction():
            row = self.get(attempt_id)
            if row is None or not moves_forward(row.channel, row.delivery, delivery):
                return None
            # Any callback proves the request reached the provider, which settles an unknown outcome.
            unsettled = (OutboxStatus.SENDING, OutboxStatus.UNKNOWN, OutboxStatus.OPERATOR, OutboxStatus.PENDING)
            status = OutboxStatus.SENT if row.status in unsettled else row.status
            self.set_status(attempt_id, status, now_ms, provider_id=provider_id, delivery=delivery)
            return self.get(attempt_id)

    def recover_after_crash(self, now_ms: int) -> list[OutboxRow]:
        """Rows left `sending` by a crash may have reached Twilio: they become `unknown`, never resent."""
        with self.db.transaction() as c:
            rows = c.execute(f"SELECT {_COLS} FROM outbox WHERE status=?", (OutboxStatus.SENDING,)).fetchall()
            c.execute("UPDATE outbox SET status=?, updated_ms=?, last_error='process stopped mid-send' WHERE status=?",
                      (OutboxStatus.UNKNOWN, now_ms, OutboxStatus.SENDING))
        return [OutboxRow(*r) for r in rows]

    def expire_unknown(self, now_ms: int, window_ms: int) -> list[OutboxRow]:
        """Unknown outcomes no callback settled within the window go to an operator."""
        with self.db.transaction() as c:
            rows = c.execute(f"SELECT {_COLS} FROM outbox WHERE status=? AND updated_ms<=?",
                             (OutboxStatus.UNKNOWN, now_ms - window_ms)).fetchall()
            c.executemany("UPDATE outbox SET status=?, updated_ms=? WHERE id=?",
                          [(OutboxStatus.OPERATOR, now_ms, r[0]) for r in rows])
        return [OutboxRow(*r) for r in rows]

    # -- dispatch order and reconciliation of unknown outcomes -------------------------

    def due_ranked(self, now_ms: int, limit: int) -> list[tuple[OutboxRow, Severity]]:
        """Pending rows due now with their alert's severity, red first, then orange, then the rest."""
        return self._ranked("o.status=? AND o.due_ms<=?", (OutboxStatus.PENDING, now_ms), "o.due_ms, o.id", limit)

    def unknown_ranked(self, settled_ms: int, limit: int) -> list[tuple[OutboxRow, Severity]]:
        """Unknown outcomes marked at or before `settled_ms`, with severity, red first: the ones to ask Twilio about."""
        return self._ranked("o.status=? AND o.updated_ms<=?", (OutboxStatus.UNKNOWN, settled_ms), "o.updated_ms, o.id",
                            limit)

    def _ranked(self, where: str, args: tuple[object, ...], order: str, limit: int) -> list[tuple[OutboxRow, Severity]]:
        with self.db.snapshot() as c:
            rows = c.execute(
                f"SELECT {_O_COLS}, a.severity FROM outbox o JOIN alerts a ON a.id = o.alert_id WHERE {where}"
                f" ORDER BY {Severity.sql_urgency('a.severity')}, {order} LIMIT ?",
                (*args, limit)).fetchall()
        return [(OutboxRow(*r[:-1]), Severity(r[-1])) for r in rows]

    def next_due_after(self, after_ms: int) -> int | None:
        """The earliest due time of a pending row still in the future of `after_ms`."""
        with self.db.snapshot() as c:
            due: int | None = c.execute("SELECT MIN(due_ms) FROM outbox WHERE status=? AND due_ms>?",
                                        (OutboxStatus.PENDING, after_ms)).fetchone()[0]
        return due

    def attempts_to(self, recipient: str, channel: str, since_ms: int) -> list[OutboxRow]:
        """Every attempt to this recipient on this channel changed since `since_ms`, to tell Twilio's records apart."""
        with self.db.snapshot() as c:
            rows = c.execute(f"SELECT {_COLS} FROM outbox WHERE recipient=? AND channel=? AND updated_ms>=? ORDER BY id",
                             (recipient, channel, since_ms)).fetchall()
        return [OutboxRow(*r) for r in rows]

    def transition(self, attempt_id: int, from_statuses: tuple[str, ...], status: str, now_ms: int, *,
                   error: str | None = None, provider_id: str | None = None, due_ms: int | None = None) -> bool:
        """Move a row to `status` only if it is still in one of `from_statuses`; False if something else settled it first."""
        marks = ",".join("?" * len(from_statuses))
        with self.db.transaction() as c:
            cur = c.execute("UPDATE outbox SET status=?, updated_ms=?, last_error=COALESCE(?, last_error),"
                            " provider_id=COALESCE(?, provider_id), due_ms=COALESCE(?, due_ms)"
                            f" WHERE id=? AND status IN ({marks})",
                            (status, now_ms, error, provider_id, due_ms, attempt_id, *from_statuses))
            return cur.rowcount == 1

    def sms_recipients(self, alert_id: int) -> list[tuple[str, str]]:
        """(phone, language) of everyone an SMS for this alert went out to, for follow-ups."""
        with self.db.snapshot() as c:
            return c.execute("SELECT DISTINCT recipient, language FROM outbox WHERE alert_id=? AND channel=?"
                             f" AND status=? AND {_ESCALATION_STEP}", (alert_id, Channel.SMS, OutboxStatus.SENT)).fetchall()

    def cancel_pending(self, alert_id: int, now_ms: int) -> int:
        """Cancel the escalation's attempts still waiting to go out (not follow-ups); returns how many."""
        with self.db.transaction() as c:
            return c.execute(f"UPDATE outbox SET status=?, updated_ms=? WHERE alert_id=? AND status=? AND {_ESCALATION_STEP}",
                             (OutboxStatus.CANCELLED, now_ms, alert_id, OutboxStatus.PENDING)).rowcount
