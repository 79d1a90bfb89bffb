"""`eldercare-gateway run` refuses to start, with one clear line, when it could not do its job."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.fixtures.gateway_proc import REPO


def _run(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {"ELDERCARE_STORE__PATH": str(tmp_path / "gateway.db"), "ELDERCARE_ALERTS__DB_PATH": str(tmp_path / "alerts.db"),
            "ELDERCARE_ALERTS__DRY_RUN_LOG": str(tmp_path / "n.jsonl"), "ELDERCARE_MQTT__PORT": "1"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")}
    return subprocess.run([sys.executable, "-m", "gateway", "run"], cwd=REPO, env=clean | base | env,
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
