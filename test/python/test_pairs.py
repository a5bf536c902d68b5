"""pairs stage: selection rules, drop reasons, seeded split, TRL/datasets compatibility."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import make_spec, run_script, stdout_events


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _prompt(pid: str, texts: list[str], rewards: list, *, mean=None, n_tokens=None, domain="chat"):
    sample = {"prompt_id": pid, "messages": [{"role": "user", "content": f"question {pid}"}],
              "responses": [{"text": t, "seed": i, "finish_reason": "stop", "n_tokens": len(t.split())}
                            for i, t in enumerate(texts)]}
    score = {"prompt_id": pid, "domain": domain, "rewards": rewards,
             "n_tokens": n_tokens or [len(t.split()) for t in texts],
             "strong_logp": [0.0] * len(texts), "weak_logp": [0.0] * len(texts)}
    if mean is not None:
        score["mean_rewards"] = mean
    return sample, score


def _run(tmp: Path, prompts: list[tuple[dict, dict]], params: dict | None = None, *, seed: int = 0,
         out: str = "pairs", check: bool = True):
    samples = _write(tmp / "samples.jsonl", [s for s, _ in prompts])
    scores = _write(tmp / "scores.jsonl", [s for _, s in prompts])
    spec = make_spec(tmp, "pairs", params or {}, {"scores": scores, "samples": samples}, seed=seed, out=tmp / out)
    return run_script("pairs.py", spec, check=check), tmp / out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


RULES = [
    _prompt("ok", ["short bad", "the best answer", "middle one"], [1.0, 3.0, 2.0]),
    _prompt("tie", ["a b", "c d"], [2.0, 2.0]),
    _prompt("ident", ["same text", " same text "], [1.0, 4.0]),
    _prompt("empty", ["   ", "fine answer"], [5.0, 1.0]),
    _prompt("margin", ["x y", "y z"], [1.0, 1.5]),
    _prompt("nulls", ["only one", "none", "none2"], [None, 2.0, None]),
    _prompt("null_ok", ["best but null", "good", "worse"], [None, 4.0, -1.0]),
    _prompt("multi_max", ["first max", "second max", "low"], [3.0, 3.0, 0.0]),
    # the best and the worst responses are empty: those two candidates go, the prompt pairs the others
    _prompt("empty_ends", ["", "good", " \n", "middle", "worse"], [9.0, 4.0, -9.0, 2.0, 0.5]),
]


def test_pair_rules_and_drop_counts(tmp_path):
    res, out = _run(tmp_path, RULES, {"min_margin": 1.0, "test_fraction": 0.0})
    rows = {r["prompt_id"]: r for r in _rows(out / "train.jsonl")}
    assert set(rows) == {"ok", "null_ok", "multi_max", "empty_ends"}
    ends = rows["empty_ends"]
    assert (ends["chosen"][0]["content"], ends["rejected"][0]["content"], ends["margin"]) == ("good", "worse", 3.5)
    ok = rows["ok"]
    assert ok["chosen"] == [{"role": "assistant", "content": "the best answer"}]
    assert ok["rejected"] == [{"role": "assistant", "content": "short bad"}]
    assert (ok["score_chosen"], ok["score_rejected"], ok["margin"]) == (3.0, 1.0, 2.0)
    assert ok["prompt"] == [{"role": "user", "content": "question ok"}] and ok["domain"] == "chat"
    # a null reward is never ranked, even where it would otherwise be the best
    assert rows["null_ok"]["chosen"][0]["content"] == "good"
    # equal best rewards: the lower index wins, deterministically
    assert rows["multi_max"]["chosen"][0]["content"] == "first max"
    man = json.loads((out / "manifest.json").read_text())
    m = man["metrics"]
    assert (m["dropped_tie"], m["dropped_identical_text"], m["dropped_empty"], m["dropped_below_margin"],
            m["dropped_no_valid_reward"]) == (1, 1, 1, 1, 1)
    assert m["kept"] == 4 and m["dropped"] == 5 and m["prompts"] == 9
    assert m["null_rewards"] == 3
    assert m["empty_candidates"] == 1 + 2  # "empty" (one of its two) and "empty_ends" (two of five)
    assert m["margin_min"] == 2.0 and m["margin_max"] == 5.0
    assert m["chosen_tokens_mean"] == (3 + 1 + 2 + 1) / 4 and m["rejected_tokens_mean"] == (2 + 1 + 1 + 1) / 4
    assert {o["name"] for o in man["outputs"]} == {"pairs", "pairs_test"}
    assert all(e["type"] in ("progress", "metric", "log") for e in stdout_events(res))


def test_min_margin_unset_keeps_small_margins(tmp_path):
    _, out = _run(tmp_path, RULES, {"test_fraction": 0.0})
    assert "margin" in {r["prompt_id"] for r in _rows(out / "train.jsonl")}


def test_mean_reward_ranks_by_mean_rewards(tmp_path):
    p = [_prompt("m", ["long but low per token", "short"], [4.0, 3.0], mean=[1.0, 3.0])]
    _, out = _run(tmp_path, p, {"reward": "mean"})
    (row,) = _rows(out / "train.jsonl")
    assert row["chosen"][0]["content"] == "short" and row["margin"] == 2.0


def _many(n: int) -> list:
    return [_prompt(f"p{i:02d}", [f"good {i}", f"bad {i}"], [float(i + 1), 0.0]) for i in range(n)]


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    prompts = _many(20)
    _, a = _run(tmp_path, prompts, {"test_fraction": 0.25}, seed=7, out="a")
    _, b = _run(tmp_path, prompts, {"test_fraction": 0.25}, seed=7, out="b")
    _, c = _run(tmp_path, prompts, {"test_fraction": 0.25}, seed=8, out="c")
    assert (a / "train.jsonl").read_bytes() == (b / "train.jsonl").read_bytes()
    assert (a / "test.jsonl").read_bytes() == (b / "test.jsonl").read_bytes()
    tr, te = {r["prompt_id"] for r in _rows(a / "train.jsonl")}, {r["prompt_id"] for r in _rows(a / "test.jsonl")}
    assert len(te) == 5 and len(tr) == 15 and not tr & te and len(tr | te) == 20
    assert te != {r["prompt_id"] for r in _rows(c / "test.jsonl")}
    # the input order of the score rows does not change the result
    _, d = _run(tmp_path, list(reversed(prompts)), {"test_fraction": 0.25}, seed=7, out="d")
    assert (a / "test.jsonl").read_bytes() == (d / "test.jsonl").read_bytes()
    _, e = _run(tmp_path, prompts, {"test_fraction": 0.25, "test_count": 3}, seed=7, out="e")
    assert len(_rows(e / "test.jsonl")) == 3


def test_output_loads_with_datasets_and_trl(tmp_path):
    from datasets import load_dataset
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from ratioloop_py import tiny

    _, out = _run(tmp_path, _many(6), {"test_count": 2})
    ds = load_dataset("json", data_files={"train": str(out / "train.jsonl"), "test": str(out / "test.jsonl")})
    assert ds["train"].num_rows == 4 and ds["test"].num_rows == 2
    row = ds["train"][0]
    assert is_conversational(row)
    tok = tiny.build_tokenizer()
    rendered = maybe_apply_chat_template({k: row[k] for k in ("prompt", "chosen", "rejected")}, tok)
    assert rendered["prompt"].endswith("<|im_start|>assistant\n")
    assert rendered["chosen"].startswith("good") and rendered["rejected"].startswith("bad")


def test_all_dropped_fails_clearly(tmp_path):
    res, _ = _run(tmp_path, [RULES[1], RULES[2]], check=False)
    assert res.returncode == 2
    assert "no preference pairs remain" in res.stderr and "tie=1" in res.stderr and "identical_text=1" in res.stderr


def test_mismatched_rewards_is_bad_input(tmp_path):
    s, sc = _prompt("x", ["a", "b"], [1.0, 2.0, 3.0])
    res, _ = _run(tmp_path, [(s, sc)], check=False)
    assert res.returncode == 2 and "scores.jsonl:1" in res.stderr and "3 rewards for 2 responses" in res.stderr


def test_missing_sample_is_bad_input(tmp_path):
    s, _ = _prompt("x", ["a", "b"], [1.0, 2.0])
    _, sc = _prompt("y", ["a", "b"], [1.0, 2.0])
    res, _ = _run(tmp_path, [(s, sc)], check=False)
    assert res.returncode == 2 and "'y' has no row in the samples" in res.stderr
