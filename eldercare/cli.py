"""Command line: run the gateway, check its configuration, register devices, read dead letters,
create console admins and integrators' API tokens."""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alerts.directory import DirectoryError, load_directory
from eldercare.logs import configure as configure_logging
from eldercare.settings import ConfigError, Settings, load_settings
from gateway.broker_accounts import acl_text, device_account_problem, new_password, set_password
from gateway.db import DatabaseUnavailable, describe, is_postgres
from gateway.models import DeviceKind
from gateway.store import OperationalStore

if TYPE_CHECKING:
    from eldercare.wiring import ProcessProbe
    from gateway.active import ActiveLock


class _RefusedOnCommandLine(argparse.Action):
    """A password in the arguments shows in `ps` and the shell history; say where it goes instead."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        parser.error(f"{option_string} is not accepted on the command line: use --password-stdin or --device-password-file")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eldercare-gateway",
        description="Eldercare IoT gateway: MQTT ingest from smartwatches and fitness equipment.",
        epilog="Settings come from --config (TOML) and ELDERCARE_* environment variables, "
               "e.g. ELDERCARE_MQTT__PASSWORD; the environment wins.",
    )
    p.add_argument("--config", type=Path, help="TOML settings file (see examples/gateway.toml)")
    p.add_argument("--validate-config", action="store_true", help="check the settings, print them (secrets hidden) and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("run", help="run the gateway until interrupted (the default)")
    reg = sub.add_parser("register-device", help="register a device and create its broker account")
    reg.add_argument("device_id")
    reg.add_argument("--kind", choices=[k.value for k in DeviceKind], required=True)
    reg.add_argument("--label", help="a name operators recognise, e.g. the resident or the machine's spot")
    reg.add_argument("--password-file", type=Path, metavar="MOSQUITTO_PASSWD",
                     help="Mosquitto password file to add the device's account to (reload the broker afterwards)")
    given = reg.add_mutually_exclusive_group()
    given.add_argument("--password-stdin", action="store_true",
                       help="read the device's broker password from the first line of standard input "
                            "(default: a new random one, printed)")
    given.add_argument("--device-password-file", type=Path, metavar="PATH",
                       help="read the device's broker password from the first line of this file "
                            "(not the Mosquitto file: that is --password-file)")
    reg.add_argument("--password", action=_RefusedOnCommandLine, help=argparse.SUPPRESS)
    dl = sub.add_parser("dead-letters", help="show rejected messages and why")
    dl.add_argument("--reason", help="only this reason, e.g. invalid_field")
    dl.add_argument("--counts", action="store_true", help="only the count per reason")
    adm = sub.add_parser("create-admin", help="create an admin account for the operator console (the first one, or another)")
    adm.add_argument("username")
    adm.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input (default: ask twice at the terminal)")
    adm.add_argument("--password", action=_RefusedOnCommandLine, help=argparse.SUPPRESS)
    tok = sub.add_parser("create-token", help="create a named API token for an integrator (printed once)")
    tok.add_argument("name")
    tok.add_argument("--role", choices=["operator", "admin"], default="operator")
    rev = sub.add_parser("revoke-token", help="revoke a named API token at once")
    rev.add_argument("name")
    links = sub.add_parser("revoke-record-links",
                           help="stop a resident's exercise-record links at once (a lost phone, a forwarded SMS)")
    links.add_argument("resident_id")
    acl = sub.add_parser("acl", help="print the production broker ACL for this topic prefix (no simulator account)")
    acl.set_defaults(func=None)
    return p


def _run(settings: Settings) -> int:
    from eldercare.wiring import ProcessProbe, WebServerError, build_observer, console_server
    from gateway.priority import Priority
    from gateway.runner import Gateway

    # Several busy threads share the GIL; a shorter switch interval lets the critical lane's
    # network thread and the dispatcher run sooner while telemetry batches are being judged.
    sys.setswitchinterval(0.001)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    probe = ProcessProbe()
    try:
        directory = load_directory(settings.alerts.community_file)   # before waiting: a standby is warm
        lock = _become_active(settings, probe, stop)
    except (DirectoryError, WebServerError) as e:
        print(f"eldercare-gateway: {e}", file=sys.stderr)
        return 2
    if stop.is_set():
        return 0
    # A press on its way to a person comes before telemetry (gateway/priority.py): ingest and dispatch share it.
    priority = Priority()
    alerts = build_observer(settings, directory, priority)
    gateway = Gateway(settings, observer=alerts, priority=priority)   # built, not started: nothing is received yet
    # The dispatcher starts first: it settles rows a crash left mid-send before new messages arrive.
    # The rules read the registry ingest loaded, rather than a second copy of a million device ids.
    alerts.start(gateway.registry.known())
    web = console_server(settings, alerts, probe) if settings.web.enabled else None
    if web:
        try:
            web.start()
        except WebServerError as e:
            print(f"eldercare-gateway: {e}", file=sys.stderr)
            alerts.close()
            return 2
    gateway.store.fence = lock.check if lock else None
    probe.gateway = gateway
    # What startup made (libraries, the registry, restored rule state) lives as long as the process:
    # frozen out of the collector's sight, and young objects collected every 20,000 allocations rather
    # than 700 (a batch in flight is then mostly freed before it is looked at), the collector's pauses
    # under load went from 29 full collections of up to 217 ms (3.0 s in all, in bench/sos_latency.py's
    # 300 presses) to a dozen of at most 38 ms; each pause stops every thread, an SOS's too.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    gateway.start()
    logging.getLogger("gateway").info(
        "gateway %s running: broker %s:%s, store %s, sink %s, alerts %s", settings.instance, settings.mqtt.host,
        settings.mqtt.port, describe(settings.store.database), settings.sink.url,
        describe(settings.alerts_database),
    )
    stop.wait()
    gateway.stop()
    if web:
        web.stop()
    alerts.close()
    if lock:
        lock.release()   # the standby takes over now rather than when this session ends
    logging.getLogger("gateway").info("gateway %s stopped", settings.instance)
    return 0


def _become_active(settings: Settings, probe: ProcessProbe, stop: threading.Event) -> ActiveLock | None:
    """With a PostgreSQL store, wait as standby until this process holds the active lock (returned);
    with SQLite files, one process is the only one, and active at once (None)."""
    if not is_postgres(settings.store.url):
        return None
    from eldercare.wiring import standby_server
    from gateway.active import ActiveLock

    probe.active = False
    standby = standby_server(settings, probe) if settings.web.enabled else None
    if standby:
        standby.start()
    lock = ActiveLock(settings.store.url, on_lost=_fence)
    try:
        if not lock.wait(stop):
            return None
    finally:
        if standby:
            standby.stop()
    probe.active = True
    logging.getLogger("gateway").info("active: gateway %s holds the active lock and takes over", settings.instance)
    return lock


def _fence(reason: str) -> None:
    """The active role is lost: stop consuming and acknowledging at once, by starting this program afresh.
    The new process waits as standby, and becomes active again by itself once it can hold the lock."""
    logging.getLogger("gateway").critical("fenced: %s; acknowledging nothing more and starting again as standby", reason)
    logging.shutdown()
    try:
        os.execv(sys.executable, sys.orig_argv)
    finally:   # never carry on as the active one: without a new image, end (a supervisor starts it again)
        os._exit(75)


def _given_password(args: argparse.Namespace) -> str | None:
    """The device password from standard input or a file, if one was asked for; ValueError if unreadable or empty."""
    if args.password_stdin:
        line, source = sys.stdin.readline(), "standard input"
    elif args.device_password_file:
        try:
            with open(args.device_password_file, encoding="utf-8") as f:
                line, source = f.readline(), str(args.device_password_file)
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read {args.device_password_file}: {e}") from None
    else:
        return None
    password = line.rstrip("\r\n")
    if not password:
        raise ValueError(f"no password on the first line of {source}")
    return password


def _register(settings: Settings, args: argparse.Namespace) -> int:
    # The device id becomes the broker username that the ACL's %u patterns substitute.
    problem = device_account_problem(args.device_id, reserved=[settings.mqtt.username])
    if problem is not None:
        print(f"eldercare-gateway: {problem}; nothing registered", file=sys.stderr)
        return 2
    try:
        given = _given_password(args)
    except ValueError as e:
        print(f"eldercare-gateway: {e}", file=sys.stderr)
        return 2
    if given is not None and not args.password_file:
        print("eldercare-gateway: a device password needs --password-file (the Mosquitto file to add it to)", file=sys.stderr)
        return 2
    store = OperationalStore(settings.store.database)
    store.register_device(args.device_id, DeviceKind(args.kind), int(time.time() * 1000), label=args.label)
    print(f"registered {args.kind} {args.device_id} in {describe(settings.store.database)}")
    if args.password_file:
        password = given or new_password()
        set_password(args.password_file, args.device_id, password)
        print(f"broker account {args.device_id!r} added to {args.password_file}; reload Mosquitto (SIGHUP) to apply")
        if given is None:
            print(f"password: {password}")
    return 0


def _new_password(args: argparse.Namespace) -> str:
    """The new account's password from standard input, or asked twice at the terminal; ValueError if none."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        raise ValueError("no terminal to ask for a password: use --password-stdin")
    if not password:
        raise ValueError("no password given")
    return password


def _accounts(settings: Settings, args: argparse.Namespace) -> int:
    """create-admin, create-token and revoke-token, on the web layer's account file."""
    from dashboards.accounts import AccountError, AccountStore, Role

    accounts = AccountStore(settings.accounts_database, settings.web.session_hours)
    now = int(time.time() * 1000)
    try:
        if args.command == "create-admin":
            accounts.create_account(args.username, _new_password(args), Role.ADMIN, now)
            print(f"admin account {args.username!r} created in {describe(settings.accounts_database)}; log in at "
                  f"http://{settings.web.host}:{settings.web.port}/login")
        elif args.command == "create-token":
            token = accounts.create_token(args.name, Role(args.role), "command line", now)
            print(f"API token {args.name!r} ({args.role}); it is shown only this once:", file=sys.stderr)
            print(token)
        else:
            accounts.revoke_token(args.name, now)
            print(f"API token {args.name!r} revoked")
    except (AccountError, ValueError) as e:
        print(f"eldercare-gateway: {e}", file=sys.stderr)
        return 2
    finally:
        accounts.close()
    return 0


def _revoke_record_links(settings: Settings, args: argparse.Namespace) -> int:
    from dashboards.record_links import RecordLinks

    directory = load_directory(settings.alerts.community_file)
    if directory.resident(args.resident_id) is None:
        print(f"eldercare-gateway: no resident {args.resident_id!r} in {settings.alerts.community_file}", file=sys.stderr)
        return 2
    links = RecordLinks(settings.accounts_database)
    try:
        n = links.revoke(args.resident_id, int(time.time() * 1000))
    finally:
        links.close()
    print(f"{n} record link(s) of {args.resident_id} stopped; their next claim on a machine brings a new one")
    return 0


def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    store = OperationalStore(settings.store.database)
    if args.counts:
        print(json.dumps(store.dead_letter_counts(), indent=2))
        return 0
    for d in store.dead_letters(args.reason):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.received_ms / 1000))
        print(f"{stamp}  {d.reason:<15} {d.topic}  {d.detail}  ({d.payload_size} B) {d.payload[:80]!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("text", args.verbose)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        for line in str(e).splitlines():
            print(f"eldercare-gateway: {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log.format, args.verbose)
    if args.validate_config:
        try:
            load_directory(settings.alerts.community_file)
        except DirectoryError as e:
            print(f"eldercare-gateway: {e}", file=sys.stderr)
            return 2
        print(settings.model_dump_json(indent=2))
        print("configuration is valid", file=sys.stderr)
        return 0
    try:
        return _command(settings, args)
    except DatabaseUnavailable as e:   # only [store] url names a server; a SQLite file is always there to open
        print(f"eldercare-gateway: store.url: {e}", file=sys.stderr)
        return 2


def _command(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "register-device":
        return _register(settings, args)
    if args.command == "dead-letters":
        return _dead_letters(settings, args)
    if args.command in ("create-admin", "create-token", "revoke-token"):
        return _accounts(settings, args)
    if args.command == "revoke-record-links":
        return _revoke_record_links(settings, args)
    if args.command == "acl":
        print(acl_text(settings.mqtt.topic_prefix), end="")
        return 0
    return _run(settings)


if __name__ == "__main__":
    sys.exit(main())
