"""The stage-folder lease on the Python side: src/stageLease.ts takes and renews it; the stage process checks it.

The lease is `<stage>/.lease/<generation>.json`; the highest generation owns the folder (format in stageLease.ts).
The activity passes its generation and token in RATIOLOOP_LEASE_DIR/_GENERATION/_TOKEN. A stage whose lease was
taken over (its worker partitioned, its renewals stopped, a successor judged it stale) must stop writing at once:
`watch` checks every RATIOLOOP_LEASE_CHECK_S seconds and calls `on_lost` (the stage kills its process group).
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

_GEN_RE = re.compile(r"^(\d{12})\.json$")


@dataclass(frozen=True)
class Held:
    lease_dir: Path
    generation: int
    token: str


def from_env(env: dict[str, str] | None = None) -> Held | None:
    """The lease this process runs under, or None when it was started without one (a stage run by hand)."""
    e = os.environ if env is None else env
    d, g, t = e.get("RATIOLOOP_LEASE_DIR"), e.get("RATIOLOOP_LEASE_GENERATION"), e.get("RATIOLOOP_LEASE_TOKEN")
    if not d or not g or not t:
        return None
    return Held(Path(d), int(g), t)


def generations(lease_dir: Path) -> list[int]:
    try:
        names = os.listdir(lease_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _GEN_RE.match(n)))


def read_record(lease_dir: Path, generation: int) -> dict[str, Any] | None:
    try:
        return json.loads((lease_dir / f"{generation:012d}.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"generation": generation, "owner": {"token": "?"}}  # unreadable: not ours


def current(lease_dir: Path) -> dict[str, Any] | None:
    """The owner's record (highest generation), or None if the folder was never leased."""
    gens = generations(lease_dir)
    return read_record(lease_dir, gens[-1]) if gens else None


def is_stale(record: dict[str, Any], now_ms: float, skew_ms: float) -> bool:
    """Same rule as isStale in stageLease.ts: released, or expired by more than the clock-skew margin."""
    return bool(record.get("released")) or now_ms > float(record.get("expiresAtMs", 0)) + skew_ms


def superseded_by(held: Held) -> dict[str, Any] | None:
    """None while `held` is still the owner; else the record that replaced it ({} when the lease folder is gone)."""
    gens = generations(held.lease_dir)
    if not gens or gens[-1] < held.generation:
        return {}
    rec = read_record(held.lease_dir, gens[-1])
    if gens[-1] == held.generation and rec is not None and (rec.get("owner") or {}).get("token") == held.token:
        return None
    return rec or {}


def describe(rec: dict[str, Any]) -> str:
    o = rec.get("owner") or {}
    if not o:
        return "the lease folder was removed"
    attempt = f", attempt {o['attempt']}" if o.get("attempt") else ""
    return f"host {o.get('host', '?')}, pid {o.get('pid', '?')}{attempt} (generation {rec.get('generation', '?')})"


def watch(held: Held, every_s: float, on_lost: Callable[[dict[str, Any]], None]) -> threading.Event:
    """Check the lease every `every_s` in a daemon thread; call `on_lost(record)` once when it is gone. A read error
    (storage hiccup) is not a loss: only a higher generation, a foreign token or a removed lease folder is.
    Returns an event that stops the watch."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                by = superseded_by(held)
            except OSError:
                continue
            if by is not None:
                on_lost(by)
                return

    threading.Thread(target=loop, name="lease-watch", daemon=True).start()
    return stop
