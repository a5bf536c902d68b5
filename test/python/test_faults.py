"""ratioloop_py.faults: inert without $RATIOLOOP_FAULT; holds only where it names (the fault suite's hooks)."""
from __future__ import annotations

import os
import time

from ratioloop_py import faults


def test_inert_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("RATIOLOOP_FAULT", raising=False)
    out = tmp_path / "iter-1" / "score"
    t = time.monotonic()
    faults.reached("before-manifest-rename", "score", 1, out)
    assert time.monotonic() - t < 0.05
    assert not (tmp_path / "faults.log").exists()


def test_holds_only_at_the_named_point_stage_and_iteration(tmp_path, monkeypatch):
    monkeypatch.setenv("RATIOLOOP_FAULT", "hide@/nowhere, hold@before-manifest-rename:score:1")
    monkeypatch.setenv("RATIOLOOP_FAULT_HOLD_S", "0.2")
    out = tmp_path / "iter-1" / "score"
    faults.reached("after-manifest-rename", "score", 1, out)
    faults.reached("before-manifest-rename", "sample", 1, out)
    faults.reached("before-manifest-rename", "score", 2, out)
    assert not (tmp_path / "faults.log").exists()
    t = time.monotonic()
    faults.reached("before-manifest-rename", "score", 1, out)
    assert time.monotonic() - t >= 0.19
    assert (tmp_path / "faults.log").read_text() == f"reached before-manifest-rename score 1 {os.getpid()}\n"
