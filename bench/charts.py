"""The charts benches draw into docs/bench, with matplotlib (in the dev extra)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.procs import say


def pyplot() -> Any | None:
    """matplotlib.pyplot drawing to files, or None (said) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed (it is in the dev extra: pip install -e '.[dev]'): no chart")
        return None
    return plt


def save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    say(f"chart written to {path}")
