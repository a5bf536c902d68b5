"""Fault injection for the fault suite (test/faults.test.ts); inert unless $RATIOLOOP_FAULT is set.

Same syntax as activities/faultHooks.ts: `hold@POINT[:STAGE[:ITERATION]]` appends "reached POINT STAGE ITERATION PID"
to <runDir>/faults.log and waits ($RATIOLOOP_FAULT_HOLD_S, default 120 s), so the suite can kill -9 the worker with
the stage at exactly that point. Points here: before-manifest-rename (every output written, the manifest not yet),
after-manifest-rename (the stage is done; its worker has not reported it).
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def _holds(point: str, stage: str, iteration: int) -> bool:
    for rule in (os.environ.get("RATIOLOOP_FAULT") or "").split(","):
        rule = rule.strip()
        if not rule.startswith("hold@"):
            continue
        parts = rule[len("hold@"):].split(":")
        if parts[0] != point:
            continue
        if len(parts) > 1 and parts[1] and parts[1] != stage:
            continue
        if len(parts) > 2 and parts[2] and int(parts[2]) != iteration:
            continue
        return True
    return False


def reached(point: str, stage: str, iteration: int, output_dir: Path) -> None:
    """Hold at `point` if $RATIOLOOP_FAULT asks to; otherwise return at once."""
    if not os.environ.get("RATIOLOOP_FAULT") or not _holds(point, stage, iteration):
        return
    run_dir = Path(output_dir).parents[1]
    with open(run_dir / "faults.log", "a", encoding="utf-8") as f:
        f.write(f"reached {point} {stage} {iteration} {os.getpid()}\n")
    time.sleep(float(os.environ.get("RATIOLOOP_FAULT_HOLD_S") or 120))
