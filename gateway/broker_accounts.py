"""Broker credentials and the ACL that keeps each device under its own id."""
from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.topics import valid_device_id

GATEWAY_USER = "gateway"
SIMULATOR_USER = "simulator"
# Accounts that are not devices: a device registered under one of these names would get its rights.
RESERVED_USERNAMES = frozenset({GATEWAY_USER, SIMULATOR_USER})


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


def acl_text(prefix: str = "eldercare") -> str:
    """The production broker ACL: the gateway reads and writes every device topic; a device
    writes only its own topics, at the scheme's depth, and reads only its own `cmd` topic."""
    return (
        f"user {GATEWAY_USER}\n"
        f"topic readwrite {prefix}/#\n"
        f"\n"
        f"# Every device account: its username is its device id.\n"
        f"pattern write {prefix}/+/%u/+\n"
        f"pattern read {prefix}/+/%u/cmd\n"
    )


def device_account_problem(device_id: str, reserved: Iterable[str] = ()) -> str | None:
    """Why `device_id` cannot be a device's broker account (its username), or None if it can."""
    if any(c in device_id for c in "/+#"):
        return f"device id {device_id!r} contains '/', '+' or '#', which would change what the ACL's %u patterns match"
    taken = {name.casefold() for name in (*RESERVED_USERNAMES, *reserved)}
    if device_id.casefold() in taken:
        return f"device id {device_id!r} is reserved for a broker account that is not a device"
    if not valid_device_id(device_id):
        return f"device id {device_id!r} is not 1 to 64 letters, digits, '_', '.', ':' or '-'"
    return None


def new_password() -> str:
    return secrets.token_urlsafe(18)


def set_password(password_file: Path, username: str, password: str) -> None:
    """Add or replace one account in a Mosquitto password file (hashed by mosquitto_passwd)."""
    password_file = Path(password_file)
    if not password_file.exists():
        password_file.touch(mode=0o600)
    try:
        subprocess.run(
            ["mosquitto_passwd", "-b", str(password_file), username, password],
            check=True,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as e:
        raise RuntimeError("mosquitto_passwd not found: apt-get install mosquitto") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"mosquitto_passwd failed for {username!r}: {e.stderr.strip()}") from e
