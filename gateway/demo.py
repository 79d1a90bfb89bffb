"""The demo: the whole stack on this machine, a scripted morning of device traffic, and what came of it.

Starts Mosquitto and VictoriaMetrics (as child processes with their own data
under var/demo), registers the demo scenario's watches and machines (gateway
registry and broker accounts), runs the gateway with its alert engine (dry-run
notifier unless Twilio settings are in the environment) and web API, plays the
`demo` scenario through the simulator with one MQTT account per device, and
prints the alerts, the notifications and the dead letters.

    scripts/demo                 # x60: the scenario's hour in a minute
    scripts/demo --keep-running  # then leave everything up to try the operator API
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from device_sim.scenario import load_scenario
from gateway.localservices import REPO_ROOT, LocalGateway, LocalMosquitto, LocalVictoriaMetrics, free_port
from gateway.store import OperationalStore

API_TOKEN = "demo-operator-token-0123456789abcdef"   # the gateway refuses tokens shorter than 32 characters


def _port(preferred: int) -> int:
    """The usual port if it is free (so the README's URLs work), else any free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _gateway_settings(work: Path, broker, tsdb, web_port: int) -> dict:
    return {
        "instance": "demo",
        "mqtt": {"port": broker.port, "password": broker.gateway.password},
        "sink": {"url": tsdb.url, "spool_dir": work / "spool"},
        "store": {"path": work / "gateway.db"},
        "alerts": {"db_path": work / "alerts.db", "community_file": REPO_ROOT / "examples" / "community.toml",
                   "dry_run_log": work / "notifications.jsonl", "public_base_url": f"http://127.0.0.1:{web_port}"},
        "web": {"port": web_port, "api_token": API_TOKEN},
    }


def _register(work: Path, broker, scenario) -> Path:
    """Every scenario device in the gateway's registry and with its own broker account."""
    store = OperationalStore(work / "gateway.db")
    passwords = {}
    now = int(time.time() * 1000)
    for device_id, kind in scenario.devices:
        store.register_device(device_id, kind, now, label=f"demo {kind.value}")
        passwords[device_id] = broker.add_device(device_id).password
    path = work / "device-passwords.json"
    path.write_text(json.dumps(passwords))
    return path


def _series_count(tsdb) -> int:
    with urllib.request.urlopen(f"{tsdb.url}/api/v1/series/count", timeout=5) as r:
        return int(json.load(r)["data"][0])


def _summary(work: Path, tsdb, web_port: int) -> None:
    db = sqlite3.connect(f"file:{work / 'alerts.db'}?mode=ro", uri=True)
    print("\n== Alerts ==")
    for sev, kind, state, subject, step, esc in db.execute(
            "SELECT severity, alert_type, state, subject, step, escalation FROM alerts ORDER BY id"):
        print(f"  {sev:<6} {kind:<16} {subject:<12} {state:<12} escalation step {step} ({esc})")
    repeats = db.execute("SELECT COUNT(*) FROM alert_events WHERE kind='repeated'").fetchone()[0]
    print(f"  repeat presses recorded on open alerts: {repeats}")
    print("\n== Notifications (dry run: recorded, not sent) ==")
    log = work / "notifications.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        n = json.loads(line)
        print(f"  {n['channel']:<5} to {n['to']}: {n['text'][:100]}")
    print("\n== Dead letters (bad input kept with its reason) ==")
    gw = sqlite3.connect(f"file:{work / 'gateway.db'}?mode=ro", uri=True)
    for reason, count in gw.execute("SELECT reason, COUNT(*) FROM dead_letter GROUP BY reason ORDER BY reason"):
        print(f"  {reason:<16} {count}")
    seen = gw.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    tsdb.flush()
    print(f"\n== Stored ==\n  {seen} accepted messages; {_series_count(tsdb)} time series in VictoriaMetrics ({tsdb.url})")
    print(f"\nOperator API: curl -H 'Authorization: Bearer {API_TOKEN}' http://127.0.0.1:{web_port}/api/alerts")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    ap.add_argument("--speed", type=float, default=60, help="times real time (default 60: the hour in a minute)")
    ap.add_argument("--scenario", default="demo", help="simulator scenario (see `python -m device_sim list`)")
    ap.add_argument("--workdir", type=Path, default=REPO_ROOT / "var" / "demo", help="where the demo keeps its data")
    ap.add_argument("--keep-running", action="store_true", help="after the summary, keep everything up until Ctrl-C")
    args = ap.parse_args(argv)

    scenario = load_scenario(args.scenario)
    shutil.rmtree(args.workdir, ignore_errors=True)
    work = args.workdir
    web_port = _port(8000)
    with LocalMosquitto(work / "mosquitto", port=_port(1883)) as broker, \
            LocalVictoriaMetrics(work / "vm", port=_port(8428)) as tsdb:
        print(f"Mosquitto on 127.0.0.1:{broker.port}, VictoriaMetrics on {tsdb.url}")
        passwords = _register(work, broker, scenario)
        gateway = LocalGateway(work / "gateway", _gateway_settings(work, broker, tsdb, web_port))
        gateway.start()
        print(f"gateway running (log: {gateway.log_file}); playing scenario {scenario.name!r} at x{args.speed:g}")
        try:
            subprocess.run([sys.executable, "-m", "device_sim", "run", "--scenario", args.scenario,
                            "--speed", str(args.speed), "--port", str(broker.port),
                            "--credentials-file", str(passwords)], cwd=REPO_ROOT, check=True)
            time.sleep(3)  # let the last batch and the alert ticks settle before reading the stores
            _summary(work, tsdb, web_port)
            if args.keep_running:
                print("Everything keeps running; Ctrl-C stops it.")
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
