"""Broker credentials and the ACL that keeps each device under its own id."""
from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

GATEWAY_USER = "gateway"
SIMULATOR_USER = "simulator"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


def acl_text(prefix: str = "eldercare") -> str:
    """The broker ACL: devices write only under their own id and read their own `cmd`."""
    return (
        f"user {GATEWAY_USER}\n"
        f"topic readwrite {prefix}/#\n"
        f"\n"
        f"# Load-mode simulator: many devices over a few connections.\n"
        f"user {SIMULATOR_USER}\n"
        f"topic write {prefix}/+/+/+\n"
        f"\n"
        f"# Every device account: its username is its device id.\n"
        f"pattern write {prefix}/+/%u/#\n"
        f"pattern read {prefix}/+/%u/cmd\n"
    )


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
