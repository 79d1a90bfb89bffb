"""The README's demo command works: the whole stack plays the demo scenario and reports what it raised."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures.gateway_proc import REPO


def test_the_demo_raises_the_scripted_alerts_and_records_what_it_would_send(tmp_path):
    work = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "gateway.demo", "--speed", "0", "--workdir", str(work)],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    alerts = [line.split() for line in run.stdout.split("== Alerts ==")[1].split("==")[0].splitlines() if line.strip()]
    raised = {(a[0], a[1]) for a in alerts if a[0] in ("red", "orange", "yellow")}
    assert {("red", "sos"), ("red", "fall"), ("yellow", "service_call"), ("orange", "overexertion")} <= raised
    sent = [json.loads(line) for line in (work / "notifications.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(n["channel"] == "voice" and n["to"] == "+15555550100" for n in sent), sent  # the duty line is called
    assert "bad_json" in run.stdout.split("== Dead letters")[1]
