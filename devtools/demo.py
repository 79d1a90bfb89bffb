"""The demo: the whole stack on this machine, a scripted morning of device traffic, and what came of it.

Starts Mosquitto and VictoriaMetrics (as child processes with their own data
under var/demo), registers the demo scenario's watches and machines (gateway
registry and broker accounts), runs the gateway with its alert engine (dry-run
notifier: notifications are recorded in notifications.jsonl, not sent) and web
API, plays the `demo` scenario through the simulator with one MQTT account per
device, and prints the alerts, the notifications and the dead letters.

A scenario's `[[operations]]` (acknowledging an alert through the operator
API, restarting the gateway) happen at their scenario times: the devices play
up to that time, the gateway settles, the operation is done (and recorded in
operations.jsonl), and play goes on.

    scripts/demo                     # x60: the scenario's hour in a minute
    scripts/demo --scenario safety   # a reboot, SOS after acknowledgement, silence across a restart, ...
    scripts/demo --keep-running      # then leave everything up to try the operator API
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.config import AlertSettings
from alerts.directory import load_directory
from dashboards.accounts import AccountStore, Role
from device_sim.cli import run_start_ms
from device_sim.scenario import Operation, Scenario, load_scenario
from devtools.localservices import REPO_ROOT, LocalGateway, LocalMosquitto, LocalVictoriaMetrics, free_port
from gateway.store import OperationalStore

DEMO_LOGINS = (("chen", Role.OPERATOR), ("admin", Role.ADMIN))
DEMO_PASSWORD = "sunny-garden-demo"   # demo only: a real install creates its admin with `eldercare-gateway create-admin`
OPERATIONS_TOKEN = "demo-operations"  # the API token the scenario's operations act with
DEFAULT_SPEED = 60.0
SETTLE_QUIET_S = 1.0      # no new message handled for this long: the gateway has taken in what was sent
SETTLE_TIMEOUT_S = 30.0


def _port(preferred: int) -> int:
    """The usual port if it is free (so the README's URLs work), else any free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _gateway_settings(work: Path, broker: LocalMosquitto, tsdb: LocalVictoriaMetrics, web_port: int,
                      scenario: Scenario) -> dict[str, Any]:
    """The demo's gateway settings, with the scenario's own (`[gateway]`) laid over them."""
    return _merged({
        "instance": "demo",
        "mqtt": {"port": broker.port, "password": broker.gateway.password},
        "sink": {"url": tsdb.url, "spool_dir": work / "spool"},
        "store": {"path": work / "gateway.db"},
        "alerts": {"db_path": work / "alerts.db", "community_file": REPO_ROOT / "examples" / "community.toml",
                   "dry_run_log": work / "notifications.jsonl", "public_base_url": f"http://127.0.0.1:{web_port}"},
        "web": {"port": web_port, "db_path": work / "web.db"},
    }, scenario.gateway)


def _accounts(work: Path) -> str:
    """The demo's console logins, and an API token for the scenario's operations (returned)."""
    accounts = AccountStore(work / "web.db")
    try:
        now = int(time.time() * 1000)
        for name, role in DEMO_LOGINS:
            accounts.create_account(name, DEMO_PASSWORD, role, now)
        return accounts.create_token(OPERATIONS_TOKEN, Role.OPERATOR, "demo", now)
    finally:
        accounts.close()


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, Mapping) else value
    return out


def _register(work: Path, broker: LocalMosquitto, scenario: Scenario) -> Path:
    """Every scenario device in the gateway's registry and with its own broker account."""
    store = OperationalStore(work / "gateway.db")
    passwords: dict[str, str] = {}
    now = int(time.time() * 1000)
    for device_id, kind in scenario.devices:
        store.register_device(device_id, kind, now, label=f"demo {kind.value}")
        passwords[device_id] = broker.add_device(device_id).password
    path = work / "device-passwords.json"
    path.write_text(json.dumps(passwords))
    return path


def _series_count(tsdb: LocalVictoriaMetrics) -> int:
    with urllib.request.urlopen(f"{tsdb.url}/api/v1/series/count", timeout=5) as r:
        return int(json.load(r)["data"][0])


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


class MachineDisplays:
    """What each fitness machine's screen shows: the claim notices the gateway sends on its `cmd` topic,
    heard with the machine's own broker account (the ACL lets a device read only its own commands)."""

    def __init__(self, broker: LocalMosquitto, passwords: Mapping[str, str], machines: Sequence[str]) -> None:
        self.notices: dict[str, list[dict[str, Any]]] = {m: [] for m in machines}
        self.clients: list[mqtt.Client] = []
        for machine in machines:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{machine}-display", protocol=mqtt.MQTTv5)
            c.username_pw_set(machine, passwords[machine])
            topic = f"eldercare/equipment/{machine}/cmd"
            c.on_connect = lambda c, u, f, rc, p, topic=topic: c.subscribe(topic, qos=1)
            c.on_message = lambda c, u, m, machine=machine: self.notices[machine].append(json.loads(m.payload))
            c.connect("127.0.0.1", broker.port)
            c.loop_start()
            self.clients.append(c)

    def last_session(self, machine: str) -> dict[str, Any] | None:
        """The notice of the session the machine showed last, its closing one if it has closed."""
        notices = self.notices.get(machine) or []
        return notices[-1] if notices else None

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Playback:
    """Plays a scenario onto the broker part by part, and does its operations in between."""

    def __init__(self, scenario: Scenario, scenario_arg: str, speed: float, work: Path, broker: LocalMosquitto,
                 gateway: LocalGateway, passwords: Path, web_port: int, api_token: str) -> None:
        self.scenario, self.scenario_arg, self.speed = scenario, scenario_arg, speed
        self.api_token = api_token
        self.work, self.broker, self.gateway, self.passwords, self.web_port = work, broker, gateway, passwords, web_port
        # One device time for every part, placed so that no device's clock is ahead of the gateway's.
        self.start_ms = run_start_ms(time.time(), scenario.duration_s, speed)
        alerts = AlertSettings.model_validate(gateway.settings["alerts"])
        self.grace_s, self.tick_s = alerts.restart_grace_s, alerts.tick_interval_s
        self.judged_after = 0.0  # monotonic time by which a restarted gateway has judged silence again
        self.displays = MachineDisplays(broker, json.loads(passwords.read_text()), [m for m, _ in scenario.equipment])

    def run(self) -> None:
        at_s = 0.0
        for op in self.scenario.operations:
            self._play(at_s, op.at_s)
            self._settle()
            {"acknowledge": self._acknowledge, "restart_gateway": self._restart, "claim": self._claim}[op.action](op)
            at_s = op.at_s + op.down_s
        self._play(at_s, None)
        self._settle()

    def keep_playing(self) -> None:
        """Play the scenario again and again at real time, so the console keeps showing devices that move."""
        cmd = [sys.executable, "-m", "device_sim", "run", "--scenario", self.scenario_arg, "--speed", "1",
               "--port", str(self.broker.port), "--credentials-file", str(self.passwords)]
        while True:
            subprocess.run(cmd, cwd=REPO_ROOT, check=True)

    def _play(self, from_s: float, until_s: float | None) -> None:
        cmd = [sys.executable, "-m", "device_sim", "run", "--scenario", self.scenario_arg, "--speed", str(self.speed),
               "--port", str(self.broker.port), "--credentials-file", str(self.passwords),
               "--start-ms", str(self.start_ms), "--from", str(from_s)]
        subprocess.run(cmd + (["--until", str(until_s)] if until_s is not None else []), cwd=REPO_ROOT, check=True)

    def _settle(self) -> None:
        """Wait until the gateway has taken in what the devices sent and sent what that queued (and, after a
        restart, until its grace is over and silence has been judged), so the next step sees the outcome."""
        time.sleep(max(0.0, self.judged_after - time.monotonic()))
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        last, quiet_since = None, time.monotonic()
        while time.monotonic() < deadline:
            handled, unsent = self._progress()
            if handled != last:
                last, quiet_since = handled, time.monotonic()
            elif not unsent and time.monotonic() - quiet_since >= SETTLE_QUIET_S:
                return
            time.sleep(0.1)
        print(f"  (the gateway had not settled after {SETTLE_TIMEOUT_S:g} s; going on)")

    def _progress(self) -> tuple[int, int]:
        """(messages the gateway has handled, notifications due but not sent yet), from its stores."""
        gw, db = _read_only(self.work / "gateway.db"), _read_only(self.work / "alerts.db")
        try:
            handled = gw.execute("SELECT (SELECT COUNT(*) FROM seen) + (SELECT COUNT(*) FROM dead_letter)").fetchone()[0]
            unsent = db.execute("SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending') AND due_ms <= ?",
                                (int(time.time() * 1000),)).fetchone()[0]
        finally:
            gw.close()
            db.close()
        return handled, unsent

    def _acknowledge(self, op: Operation) -> None:
        """What an operator does in the console: accept the device's open alerts, through the operator API."""
        mine = [a for a in self._api("GET", "/api/alerts?state=open") if a["device_id"] == op.device]
        for a in mine:
            self._api("POST", f"/api/alerts/{a['id']}/ack")
        what = ", ".join(f"{a['alert_type']} alert {a['id']}" for a in mine) or "nothing (no open alert)"
        self._say(op.at_s, f"an operator acknowledges {op.device}'s {what}")
        self._record(op, alerts=[a["id"] for a in mine], done_ms=int(time.time() * 1000))

    def _restart(self, op: Operation) -> None:
        """Stop the gateway while the devices carry on (the broker keeps their messages for its session), then
        start it again. At speed 0 the down time still passes, at x60: silence is judged by the gateway's
        clock, so a silence across the restart has to be long by that clock too."""
        self._say(op.at_s, f"the gateway stops for {op.down_s / 60:g} min; the devices carry on")
        self.gateway.stop()
        stopped_ms = int(time.time() * 1000)
        back = time.monotonic() + op.down_s / (self.speed or DEFAULT_SPEED)
        self._play(op.at_s, op.at_s + op.down_s)
        time.sleep(max(0.0, back - time.monotonic()))
        self.gateway.start()
        self.judged_after = time.monotonic() + self.grace_s + 2 * self.tick_s
        self._say(op.at_s + op.down_s, "the gateway is back; the broker hands over what it kept")
        self._record(op, stopped_ms=stopped_ms, started_ms=int(time.time() * 1000))

    def _claim(self, op: Operation) -> None:
        """What a resident does at the machine: scan the code on its screen, give their phone number, type
        the code the text message brings (here read from the dry-run log), and land on their record."""
        assert op.device is not None and op.resident is not None   # parse_scenario makes sure of both
        notice = self.displays.last_session(op.device)
        resident = load_directory(Path(self.gateway.settings["alerts"]["community_file"])).resident(op.resident)
        if notice is None or resident is None or resident.phone is None:
            why = "no session shown" if notice is None else f"no resident {op.resident} with a phone"
            self._say(op.at_s, f"nothing to claim on {op.device} ({why})")
            self._record(op, claimed=False, why=why)
            return
        opener = urllib.request.build_opener(_NoRedirect)
        opener.open(urllib.request.Request(f"{notice['url']}/phone", urllib.parse.urlencode(
            {"phone": resident.phone}).encode()), timeout=10).read()
        otp = self._texted_code(resident.phone)
        try:
            opener.open(urllib.request.Request(f"{notice['url']}/verify", urllib.parse.urlencode(
                {"phone": resident.phone, "otp": otp}).encode()), timeout=10)
            raise RuntimeError("the claim did not lead to the record")
        except urllib.error.HTTPError as e:
            if e.code != 303:
                raise
            record = f"http://127.0.0.1:{self.web_port}{e.headers['Location'].split('?')[0]}"
        self._say(op.at_s, f"{resident.name} scans {op.device}'s code {notice['code']} and claims the session; "
                           f"the exercise record: {record}")
        self._record(op, claimed=True, code=notice["code"], resident=resident.id, record=record)

    def _texted_code(self, phone: str) -> str:
        """The one-time code in the newest text to `phone` (the dry run records it instead of sending it)."""
        lines = (self.work / "notifications.jsonl").read_text(encoding="utf-8").splitlines()
        texts = [json.loads(line)["text"] for line in lines if json.loads(line)["to"] == phone]
        found = re.search(r"\b(\d{6})\b", texts[-1]) if texts else None
        if found is None:
            raise RuntimeError(f"no one-time code was texted to {phone}")
        return found[1]

    def _api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:   # the API's JSON answer
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.api_token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.load(r)

    def _say(self, at_s: float, what: str) -> None:
        print(f"  {self._local_time(at_s)} {what}", flush=True)

    def _record(self, op: Operation, **facts: object) -> None:
        """One line of operations.jsonl: what was done, at which scenario time, and when (epoch ms)."""
        entry = {"action": op.action, "device": op.device, "scenario_time": self._local_time(op.at_s)} | facts
        with open(self.work / "operations.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def _local_time(self, at_s: float) -> str:
        minutes = int(self.scenario.start_time_s + at_s) // 60
        return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


def _summary(work: Path, tsdb: LocalVictoriaMetrics, web_port: int) -> None:
    db = _read_only(work / "alerts.db")
    print("\n== Alerts ==")
    for sev, kind, state, subject, step, esc in db.execute(
            "SELECT severity, alert_type, state, subject, step, escalation FROM alerts ORDER BY id"):
        print(f"  {sev:<6} {kind:<18} {subject:<12} {state:<12} escalation step {step} ({esc})")
    repeats = db.execute("SELECT COUNT(*) FROM alert_events WHERE kind='repeated'").fetchone()[0]
    reopened = db.execute("SELECT COUNT(*) FROM alert_events WHERE kind='reopened'").fetchone()[0]
    print(f"  repeat presses recorded on open alerts: {repeats}; alerts opened again by a later press: {reopened}")
    print("\n== Notifications (dry run: recorded, not sent) ==")
    log = work / "notifications.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        n = json.loads(line)
        print(f"  {n['channel']:<5} to {n['to']}: {n['text'][:100]}")
    print("\n== Dead letters (bad input kept with its reason) ==")
    gw = _read_only(work / "gateway.db")
    for reason, count in gw.execute("SELECT reason, COUNT(*) FROM dead_letter GROUP BY reason ORDER BY reason"):
        print(f"  {reason:<16} {count}")
    print("\n== Exercise sessions ==")
    for closed_by, count, claimed in gw.execute(
            "SELECT coalesce(closed_by, 'open'), COUNT(*), COUNT(resident_id) FROM exercise_session GROUP BY 1 ORDER BY 1"):
        how = {"end": "ended by the machine", "idle": "closed as idle (no end)", "open": "still going"}[closed_by]
        print(f"  {count:>3} {how}, {claimed} claimed by a resident")
    seen = gw.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    tsdb.flush()
    print(f"\n== Stored ==\n  {seen} accepted messages; {_series_count(tsdb)} time series in VictoriaMetrics ({tsdb.url})")
    print(f"\n{_console_line(web_port)}")


def _console_line(web_port: int) -> str:
    return (f"Operator console: http://127.0.0.1:{web_port}/console  "
            f"(log in as {DEMO_LOGINS[0][0]} / {DEMO_PASSWORD}; {DEMO_LOGINS[1][0]} / {DEMO_PASSWORD} for admin)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    ap.add_argument("--speed", type=float, default=DEFAULT_SPEED, help="times real time (default 60: the hour in a minute)")
    ap.add_argument("--scenario", default="demo", help="simulator scenario (see `python -m device_sim list`)")
    ap.add_argument("--workdir", type=Path, default=REPO_ROOT / "var" / "demo", help="where the demo keeps its data")
    ap.add_argument("--keep-running", action="store_true", help="after the summary, keep everything up until Ctrl-C")
    args = ap.parse_args(argv)
    # Ctrl-C stops it all, however it was started: a shell's background job, nohup or a CI runner starts
    # programs with SIGINT ignored, the setting is inherited, and Python then raises no KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    scenario = load_scenario(args.scenario)
    shutil.rmtree(args.workdir, ignore_errors=True)
    work = args.workdir
    web_port = _port(8000)
    with LocalMosquitto(work / "mosquitto", port=_port(1883)) as broker, \
            LocalVictoriaMetrics(work / "vm", port=_port(8428)) as tsdb:
        print(f"Mosquitto on 127.0.0.1:{broker.port}, VictoriaMetrics on {tsdb.url}")
        passwords = _register(work, broker, scenario)
        api_token = _accounts(work)
        gateway = LocalGateway(work / "gateway", _gateway_settings(work, broker, tsdb, web_port, scenario))
        gateway.start()
        print(f"gateway running (log: {gateway.log_file}); playing scenario {scenario.name!r} at x{args.speed:g}")
        print(_console_line(web_port), flush=True)
        try:
            playback = Playback(scenario, args.scenario, args.speed, work, broker, gateway, passwords, web_port, api_token)
            playback.run()
            _summary(work, tsdb, web_port)
            playback.displays.close()
            if args.keep_running:
                print("Everything keeps running, and the devices play the scenario again at real time; "
                      "Ctrl-C stops it all.", flush=True)
                playback.keep_playing()
        except KeyboardInterrupt:
            pass
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
