"""`eldercare-gateway run` refuses to start, with one clear line, when it could not do its job."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.fixtures.gateway_proc import REPO


def _run(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {"ELDERCARE_STORE__PATH": str(tmp_path / "gateway.db"), "ELDERCARE_ALERTS__DB_PATH": str(tmp_path / "alerts.db"),
            "ELDERCARE_ALERTS__DRY_RUN_LOG": str(tmp_path / "n.jsonl"), "ELDERCARE_MQTT__PORT": "1"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")}
    return subprocess.run([sys.executable, "-m", "eldercare", "run"], cwd=REPO, env=clean | base | env,
                          capture_output=True, text=True, timeout=60)


def test_a_taken_web_port_stops_the_gateway_with_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _run(tmp_path, ELDERCARE_WEB__PORT=str(port))
    assert run.returncode == 2
    assert f"cannot serve on http://127.0.0.1:{port}" in run.stderr.splitlines()[-1]


def test_a_missing_community_file_is_named(tmp_path):
    run = _run(tmp_path, ELDERCARE_ALERTS__COMMUNITY_FILE=str(tmp_path / "nowhere.toml"))
    assert run.returncode == 2
    assert "nowhere.toml" in run.stderr.splitlines()[-1]


TWILIO_ACCOUNT = {"ELDERCARE_ALERTS__TWILIO__ACCOUNT_SID": "AC" + "0123456789abcdef" * 2,
                  "ELDERCARE_ALERTS__TWILIO__FROM_NUMBER": "+15555550199"}


@pytest.mark.parametrize("env, line", [
    ({"ELDERCARE_ALERTS__TIMEZONE": "Mars/Base"}, "alerts.timezone: unknown time zone 'Mars/Base'"),
    ({"ELDERCARE_ALERT__TWILIO__AUTH_TOKEN": "a-real-looking-auth-token"},
     "ELDERCARE_ALERT__TWILIO__AUTH_TOKEN: names no setting (did you mean ELDERCARE_ALERTS__TWILIO__AUTH_TOKEN?)"),
    (TWILIO_ACCOUNT, "alerts.twilio: auth_token missing while the rest of the account is set"),
    (TWILIO_ACCOUNT | {"ELDERCARE_ALERTS__TWILIO__AUTH_TOKEN": "a-real-looking-auth-token"},
     "alerts.public_base_url: http://127.0.0.1:8000 is this machine"),
    ({"ELDERCARE_ALERTS__DEFAULT_HEART_RATE_RANGE": "[-10, 5]"}, "alerts.default_heart_rate_range.0: "),
], ids=["timezone", "env-typo", "partial-twilio", "loopback-callbacks", "heart-rate-range"])
def test_a_setting_that_would_disable_safety_stops_run_naming_it_without_a_traceback(tmp_path, env, line):
    run = _run(tmp_path, **env)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    first = run.stderr.splitlines()[0]
    assert first.startswith(f"eldercare-gateway: invalid configuration: {line}"), run.stderr
