"""Command line: run a scenario against a broker, generate load, list scenarios, dump a stream."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from device_sim.progress import Progress
from device_sim.scenario import ScenarioError, load_scenario, parse_duration, scenario_names
from device_sim.stream import generate, window
from gateway.broker_accounts import SIMULATOR_USER, Credentials
from gateway.tls import TlsFiles

DUMP_START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z: a fixed start keeps dumps comparable
_PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}

_EPILOG = """\
credentials:
  run, realistic mode (each device connects as itself: client id and username = device id):
    --credentials-file devices.toml   a flat table: watch-0001 = "password" (or a JSON object)
    --password-for-all PW            dev shortcut: every device account has password PW
  run, shared mode (all devices over one connection), and load:
    --username / --password          default username: none for run (anonymous), "simulator" for load;
                                     the password also comes from ELDERCARE_SIM_PASSWORD
  TLS (run and load), e.g. against the broker's port 8883:
    --cafile CA.crt                  connect over TLS and verify the broker by this CA
    --cert DEVICE.crt --key DEVICE.key   the client certificate a listener with require_certificate asks for
examples:
  python -m device_sim list
  python -m device_sim run --scenario demo --speed 60 --username simulator
  python -m device_sim run --scenario safety --from 12m --until 40m --start-ms 1767225600000 ...
                                                    # one part of a run (the demo plays the safety scenario so)
  python -m device_sim dump --scenario sos_and_fall --seed 1 | head
  python -m device_sim devices --scenario demo      # ids and kinds, to register them with the gateway
  python -m device_sim load --devices 100000 --rate 5000 --duration 60
"""


def _broker_args(p: argparse.ArgumentParser, default_user: str | None) -> None:
    p.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    p.add_argument("--username", default=default_user, help=f"shared account (default {default_user or 'anonymous'})")
    p.add_argument("--password", default=os.environ.get("ELDERCARE_SIM_PASSWORD"),
                   help="its password (default: $ELDERCARE_SIM_PASSWORD)")
    p.add_argument("--prefix", default="eldercare", help="topic prefix (default eldercare)")
    p.add_argument("--cafile", type=Path, help="connect over TLS, verifying the broker by this CA certificate (PEM)")
    p.add_argument("--cert", type=Path, help="with --cafile: the client certificate to present (PEM)")
    p.add_argument("--key", type=Path, help="with --cert: its private key (PEM)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m device_sim", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="Simulated smartwatches and outdoor fitness equipment publishing MQTT (QoS 1).")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="play a scenario onto a broker, paced in real time or faster")
    run.add_argument("--scenario", default="demo", help="a shipped scenario name (see `list`) or a .toml path")
    run.add_argument("--speed", type=float, default=1.0, help="x real time, e.g. 60; 0 = as fast as possible")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--from", dest="from_s", type=_scenario_time, default=0.0, metavar="TIME",
                     help='play from this scenario time on, e.g. "12m" (default: the start)')
    run.add_argument("--until", dest="until_s", type=_scenario_time, metavar="TIME",
                     help="stop before this scenario time (default: the end)")
    run.add_argument("--start-ms", type=int, help="device time (epoch ms) at the scenario's offset 0; give every part "
                                                  "of a run the same (default: placed so that the run ends now)")
    _broker_args(run, None)
    run.add_argument("--protocol", choices=_PROTOCOLS, default="5", help="MQTT version (default 5)")
    who = run.add_mutually_exclusive_group()
    who.add_argument("--credentials-file", help="realistic mode: TOML/JSON table device_id -> password")
    who.add_argument("--password-for-all", help="realistic mode, dev shortcut: one password for every device")
    load = sub.add_parser("load", help="publish a fixed total rate from many devices for a fixed time")
    load.add_argument("--devices", type=int, default=1000)
    load.add_argument("--rate", type=float, default=1000.0, help="messages per second in total")
    load.add_argument("--duration", type=float, default=10.0, help="seconds")
    load.add_argument("--processes", type=int, help="worker processes (default min(2, CPUs))")
    load.add_argument("--max-inflight", type=int, default=500, help="unacknowledged messages per connection")
    load.add_argument("--protocol", choices=_PROTOCOLS, default="3.1.1", help="MQTT version (default 3.1.1)")
    _broker_args(load, SIMULATOR_USER)
    sub.add_parser("list", help="the shipped scenarios")
    devs = sub.add_parser("devices", help="a scenario's device ids and kinds, one per line (to register them)")
    devs.add_argument("--scenario", default="demo")
    dump = sub.add_parser("dump", help="print a scenario's message stream as JSON lines, no broker needed")
    dump.add_argument("--scenario", default="demo")
    dump.add_argument("--seed", type=int, default=1)
    dump.add_argument("--start-ms", type=int, default=DUMP_START_MS, help="epoch ms at offset 0 (default 2026-01-01)")
    dump.add_argument("--prefix", default="eldercare")
    return p


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    """The TLS files from --cafile, --cert and --key; ValueError if they do not make a whole."""
    if args.cafile is None:
        if args.cert or args.key:
            raise ValueError("--cert and --key are sent over TLS only: give --cafile too")
        return None
    files = TlsFiles(args.cafile, args.cert, args.key)
    files.context()  # a file that does not load is named here, not in each connection or load worker
    return files


def _run(args: argparse.Namespace) -> int:
    from device_sim.publisher import load_device_passwords, publish_stream

    scenario = load_scenario(args.scenario)
    devices = [d for d, _ in scenario.devices]
    passwords = None
    if args.credentials_file:
        passwords = load_device_passwords(args.credentials_file)
    elif args.password_for_all:
        passwords = {d: args.password_for_all for d in devices}
    shared = Credentials(args.username, args.password or "") if args.username else None
    mode = "one connection per device" if passwords else f"one connection as {args.username or 'anonymous'}"
    until_s = scenario.duration_s if args.until_s is None else min(args.until_s, scenario.duration_s)
    played_s = max(0.0, until_s - args.from_s)
    part = f" ({args.from_s:g} s to {until_s:g} s)" if played_s < scenario.duration_s else ""
    print(f"{scenario.name}{part}: {len(devices)} devices, {played_s / args.speed if args.speed else 0:.0f} s "
          f"at x{args.speed:g}, {mode}, to {args.host}:{args.port}", file=sys.stderr)
    start_ms = run_start_ms(time.time(), scenario.duration_s, args.speed) if args.start_ms is None else args.start_ms
    stream = window(generate(scenario, args.seed, start_ms, args.prefix), round(args.from_s * 1000), round(until_s * 1000))
    progress = Progress(sys.stderr)
    report = publish_stream(stream, devices, args.host, args.port, shared=shared, passwords=passwords,
                            speed=args.speed, prefix=args.prefix, protocol=_PROTOCOLS[args.protocol],
                            on_progress=lambda n: progress.show(f"{n} acknowledged"), tls=_tls(args))
    progress.done()
    print(f"published {report.published}, errors {report.errors}, {report.elapsed_s:.1f} s", file=sys.stderr)
    return 1 if report.errors else 0


def run_start_ms(now_s: float, duration_s: float, speed: float) -> int:
    """Device time at the scenario's offset 0. A run faster than real time is placed in the recent past
    so that it ends now: a real watch's clock is never ahead of the gateway's, which dead-letters
    messages from the future (`ts_in_future`)."""
    behind = 1.0 if speed <= 0 else max(0.0, 1 - 1 / speed)
    return int((now_s - duration_s * behind) * 1000)


def _scenario_time(text: str) -> float:
    """Seconds into a scenario, from the command line: "720" or "12m"."""
    try:
        seconds: object = float(text)
    except ValueError:
        seconds = text
    try:
        return parse_duration(seconds, "scenario time")
    except ScenarioError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _load(args: argparse.Namespace) -> int:
    from device_sim.load import run_load

    report = run_load(args.host, args.port, args.username, args.password, args.devices, args.rate, args.duration,
                      args.processes, args.prefix, args.max_inflight, _PROTOCOLS[args.protocol], progress=sys.stderr,
                      tls=_tls(args))
    print(json.dumps({"published": report.published, "errors": report.errors, "elapsed_s": round(report.elapsed_s, 3),
                      "achieved_rate": round(report.achieved_rate, 1), "requested_rate": report.requested_rate,
                      "devices": report.devices}))
    return 1 if report.errors else 0


def _dump(args: argparse.Namespace) -> int:
    for e in generate(load_scenario(args.scenario), args.seed, args.start_ms, args.prefix):
        print(json.dumps({"t_ms": e.t_ms, "topic": e.topic, "qos": e.qos,
                          "payload": e.payload.decode("utf-8", "backslashreplace")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            for name in scenario_names():
                print(f"{name:16} {load_scenario(name).description}")
            return 0
        if args.command == "devices":
            for device, kind in load_scenario(args.scenario).devices:
                print(device, kind.value)
            return 0
        return {"run": _run, "load": _load, "dump": _dump}[args.command](args)
    except BrokenPipeError:  # `dump | head`: stop quietly, and keep the interpreter's final flush quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ScenarioError, ValueError, ConnectionError) as e:
        print(f"device_sim: {e}", file=sys.stderr)
        return 2
