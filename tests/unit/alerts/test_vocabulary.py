"""The typed alert vocabulary: every alert type has a grade and an audience, and grades order both in code and in SQL."""
from __future__ import annotations

import sqlite3

from alerts.vocabulary import ALERT_TYPES, AlertType, Audience, Severity


def test_every_alert_type_has_a_grade_and_an_audience():
    assert set(ALERT_TYPES) == set(AlertType)
    assert {t for t in AlertType if t.audience == Audience.MAINTENANCE} == {
        AlertType.EQUIPMENT_SILENT, AlertType.EQUIPMENT_FAULT, AlertType.DEVICE_CLOCK_WRONG}


def test_only_the_keys_a_person_presses_ask_again_after_acknowledgement():
    assert {t for t in AlertType if t.is_a_press} == {AlertType.SOS, AlertType.FALL, AlertType.SERVICE_CALL}


def test_red_outranks_orange_outranks_yellow():
    assert Severity.RED.rank > Severity.ORANGE.rank > Severity.YELLOW.rank


def test_the_sql_urgency_orders_rows_red_first_and_unknown_grades_last():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE a (severity TEXT)")
    db.executemany("INSERT INTO a VALUES (?)", [("yellow",), ("bogus",), ("red",), ("orange",)])
    order = [r[0] for r in db.execute(f"SELECT severity FROM a ORDER BY {Severity.sql_urgency('severity')}")]
    assert order == ["red", "orange", "yellow", "bogus"]


def test_members_are_stored_and_compared_as_their_plain_values():
    assert AlertType.SOS == "sos" and f"{Severity.RED}" == "red"
