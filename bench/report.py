"""Writes one benchmark's results into BENCHMARKS.md, replacing that section's previous run."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nEach section is rewritten by the command shown in it. "
          "Figures vary by ±30 % between runs on a shared 2-core machine.\n")


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        mosq = "mosquitto ?"
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Python {platform.python_version()}, {mosq}"


def record(section: str, command: str, rows: list[tuple[str, str]], notes: str = "") -> None:
    table = "\n".join(["| measure | result |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
    body = (
        f"## {section}\n\n"
        f"Command: `{command}`  \n"
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {_machine()}; "
        "broker, store and load on the same machine.\n\n"
        f"{table}\n" + (f"\n{notes.strip()}\n" if notes.strip() else "") + "\n"
    )
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: body, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    BENCHMARKS.write_text(text)
    print(f"recorded in {BENCHMARKS}")
