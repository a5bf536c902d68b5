"""Small helpers the evaluate stage and its benchmark runners share for naming and writing output files."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_text


def answer_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:22]


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def maybe_int(x: str) -> Any:
    return int(x) if isinstance(x, str) and x.isdigit() else x


def mean_of(xs: list[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_leaderboard(path: Path, name: str, res: dict[str, Any]) -> None:
    """One row in the column layout of alpaca_eval's leaderboard csv."""
    cols = ["win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate",
            "mode", "avg_length", "length_controlled_winrate", "lc_standard_error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([""] + cols)
    w.writerow([name] + ["" if res.get(c) is None else res.get(c, "") for c in cols])
    atomic_write_text(path, buf.getvalue())
