"""scripts/verify_eval.py --reference-dir over a project-written folder in the official layout
(test/fixtures/reference_results, written by test/fixtures/make_reference_results.py with the official alpaca-eval
computing its published AlpacaEval numbers): everything matches; each kind of error makes it fail."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import verify_eval

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_results"
BOARD = "alpaca_eval/leaderboards/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
ANN_A = "alpaca_eval/results/model-a/weighted_alpaca_eval_gpt4_turbo/annotations.json"


def _run(root: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    rc = verify_eval.main(["--reference-dir", str(root), *extra])
    return rc, capsys.readouterr().out.strip().splitlines()


@pytest.fixture()
def ref(tmp_path) -> Path:
    dst = tmp_path / "ref"
    shutil.copytree(FIXTURE, dst)
    return dst


def _edit_board(root: Path, model: str, col: str | None, value: str | None) -> None:
    p = root / BOARD
    rows = list(csv.reader(p.open()))
    head = rows[0]
    out = [head]
    for r in rows[1:]:
        if r[0] == model and col is None:
            continue  # drop the model
        if r[0] == model:
            r[head.index(col)] = value
        out.append(r)
    with p.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(out)


def test_fixture_matches_everything(capsys):
    rc, lines = _run(FIXTURE, capsys, "--json")
    assert rc == 0, "\n".join(lines)
    assert lines[-1].startswith("32/32 comparisons match; 0 failures")
    text = "\n".join(lines)
    checks = json.loads(text[: text.index("\nnot compared")])["checks"]
    lc = [c for c in checks if c["metric"] == "length_controlled_winrate"]
    assert {c["source"] for c in lc} == {"refit (df_gamed.csv)", "saved GLM weights"} and len(lc) == 4
    assert len([c for c in checks if c["metric"].startswith("glm ")]) == 6  # 3 refit coefficients × 2 models
    order = [c for c in checks if c["metric"] == "order rule"]
    assert order == [{**order[0], "ours": 39, "published": 39, "ok": True}]
    arena = {c["metric"]: c for c in checks if c["benchmark"] == "arena_hard"}
    assert arena["score"]["published"] == 58.82 and arena["score"]["ours"] == pytest.approx(1000 / 17)


def test_order_must_be_the_official_rule_not_either(ref, capsys):
    # Exchange m and M in one row's raw log-probs: the stored preference is then the other orientation's.
    rows = json.loads((ref / ANN_A).read_text())
    top = rows[0]["raw_completion"]["logprobs"]["content"][0]["top_logprobs"]
    for t in top:
        t["token"] = {"m": "M", "M": "m"}.get(t["token"], t["token"])
    (ref / ANN_A).write_text(json.dumps(rows))
    rc, lines = _run(ref, capsys)
    assert rc == 1 and any(ln.startswith("FAIL: alpaca_eval model-a order rule: 38/39") for ln in lines)


def test_tolerances(ref, capsys):
    pub = {r[0]: r for r in csv.reader((ref / BOARD).open())}
    head = pub[""]
    wr = float(pub["model-b"][head.index("win_rate")])
    _edit_board(ref, "model-b", "win_rate", repr(wr + 1e-10))  # within 1e-9
    assert _run(ref, capsys)[0] == 0
    _edit_board(ref, "model-b", "win_rate", repr(wr + 1e-8))
    rc, lines = _run(ref, capsys)
    assert rc == 1 and any("model-b win_rate" in ln for ln in lines if ln.startswith("FAIL"))
    # ArenaHard: published rounded to 2 decimals; 58.82 matches 58.8235…, 58.83 does not
    p = ref / "arena_hard_v0.1/leaderboard/arena_hard_leaderboard_fixture.csv"
    p.write_text(p.read_text().replace("model-x,58.82,", "model-x,58.83,"))
    _edit_board(ref, "model-b", "win_rate", repr(wr))
    rc, lines = _run(ref, capsys)
    assert rc == 1 and [ln for ln in lines if ln.startswith("FAIL")] == [
        "FAIL: arena_hard model-x score: ours 58.82 vs published 58.83 (diff -0.01 > 1e-09)"]


def test_missing_model_and_nothing_compared(ref, tmp_path, capsys):
    _edit_board(ref, "model-a", None, None)
    rc, lines = _run(ref, capsys)
    assert rc == 1 and "FAIL: alpaca_eval model-a: missing from leaderboard " \
        "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv" in lines
    empty = tmp_path / "empty"
    (empty / "alpaca_eval").mkdir(parents=True)
    rc, lines = _run(empty, capsys)
    assert rc == 1 and any("nothing compared" in ln for ln in lines)
    assert verify_eval.main(["--reference-dir", str(tmp_path / "nope")]) == 2


def test_without_lc_files_lc_is_not_compared(ref, capsys):
    (ref / "alpaca_eval/df_gamed.csv").unlink()
    (ref / "alpaca_eval/instruction_difficulty.csv").unlink()
    rc, lines = _run(ref, capsys)
    assert rc == 0 and lines[-1].startswith("20/20 comparisons match")
    assert any(ln.startswith("not compared: alpaca_eval model-a: LC") for ln in lines)
