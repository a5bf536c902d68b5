"""The progress protocol's phase and alive lines (Stage.phase): what the runner's stall watchdog and `status` read."""
from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

from ratioloop_py.stage import Stage


def _stage(tmp_path: Path) -> Stage:
    return Stage(spec={"stage": "sample", "outputDir": str(tmp_path)}, spec_path=tmp_path / "spec.json")


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in buf.getvalue().splitlines()]


def test_phase_line_then_alive_lines_until_the_block_ends(tmp_path, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    monkeypatch.setenv("RATIOLOOP_ALIVE_S", "0.05")
    st = _stage(tmp_path)
    with st.phase("loading the policy model"):
        time.sleep(0.4)
    quiet = len(buf.getvalue())
    time.sleep(0.2)  # the ticker is gone with the block
    assert len(buf.getvalue()) == quiet
    events = _lines(buf)
    assert events[0] == {"type": "phase", "name": "loading the policy model"}
    assert 3 <= sum(e == {"type": "alive"} for e in events[1:]) <= 9
    assert not [t for t in threading.enumerate() if t.name.startswith("alive:")]


def test_max_s_stops_the_alive_lines_so_a_hung_step_is_caught(tmp_path, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    monkeypatch.setenv("RATIOLOOP_ALIVE_S", "0.05")
    st = _stage(tmp_path)
    with st.phase("saving the trained model", max_s=0.12):
        time.sleep(0.2)
        n = len(_lines(buf))
        time.sleep(0.3)
        assert len(_lines(buf)) == n  # still inside the block, but silent past max_s


def test_lines_from_the_ticker_and_the_main_thread_never_interleave(tmp_path, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    monkeypatch.setenv("RATIOLOOP_ALIVE_S", "0.001")
    st = _stage(tmp_path)
    with st.phase("scoring"):
        for i in range(2000):
            st.progress(i, 2000, "responses")
    events = _lines(buf)  # each line parses on its own
    assert [e["done"] for e in events if e["type"] == "progress"] == list(range(2000))


def test_only_rank_0_speaks(tmp_path, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("RATIOLOOP_ALIVE_S", "0.01")
    with _stage(tmp_path).phase("loading"):
        time.sleep(0.05)
    assert buf.getvalue() == ""
