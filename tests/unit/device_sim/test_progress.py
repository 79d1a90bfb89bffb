"""Progress lines: rewritten in place on a terminal, separate lines (not one run-on line) in a log."""
from __future__ import annotations

import io

from device_sim.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_each_report_is_a_line_of_its_own_and_reports_are_spaced_out():
    log = io.StringIO()
    p = Progress(log, every_s=0)
    for n in (99, 199):
        p.show(f"{n} acknowledged")
    p.done()
    assert log.getvalue() == "99 acknowledged\n199 acknowledged\n"
    quiet = io.StringIO()
    p = Progress(quiet, every_s=3600)
    for n in (99, 199, 299):
        p.show(f"{n} acknowledged")
    assert quiet.getvalue() == "99 acknowledged\n"


def test_on_a_terminal_the_line_is_rewritten_and_ended_once():
    tty = Terminal()
    p = Progress(tty)
    p.show("99 acknowledged")
    p.show("199 acknowledged")
    p.done()
    p.done()
    assert tty.getvalue() == "\r99 acknowledged\r199 acknowledged\n"
