"""Sharded evaluate (issue 15): K answer shards + the judging merge write what one unsharded run writes (the answer
rows' tstamp aside: it is when the stage began answering), the shards split batches exactly as the unsharded plan, and a
merge over answers of other questions is bad input. Tiny models, mini sets, local judge, as the TS runner calls them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_spec, model_spec, run_script
from test_eval_stage import _finals, _params
from test_shards import halved

from ratioloop_py.shards import MERGE_ENV


def _run_sharded(tmp: Path, params: dict, inputs: dict, k: int, halve: dict[int, dict] | None = None) -> Path:
    out = tmp / f"sharded-{k}{'-halved' if halve else ''}"
    listed = []
    for i in range(k):
        d = out / f"shard-{i:04d}-of-{k:04d}"
        spec = make_spec(tmp, "evaluate", {**params, "shard": {"index": i, "count": k}}, inputs, out=d)
        run_script("evaluate.py", halved(spec, halve[i]) if halve and i in halve else spec)
        man = json.loads((d / "manifest.json").read_text())
        assert [o["name"] for o in man["outputs"]] == ["answers"] and not (d / "summary.json").exists()
        listed.append({"index": i, "count": k, "outputDir": str(d),
                       "outputs": {o["name"]: {"path": o["path"], "sha256": o["sha256"]} for o in man["outputs"]}})
    (out / "shards.json").write_text(json.dumps({"shards": listed}))
    run_script("evaluate.py", make_spec(tmp, "evaluate", params, inputs, out=out), env={MERGE_ENV: str(out / "shards.json")})
    return out


def _untimed(files: dict[str, bytes]) -> dict[str, bytes]:
    """ArenaHard answer rows without their tstamp (wall time); every other file as it is."""
    def strip(name: str, b: bytes) -> bytes:
        if not name.startswith("arena_hard/model_answer/"):
            return b
        return b"".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "tstamp"}).encode() + b"\n"
                        for line in b.splitlines())
    return {n: strip(n, b) for n, b in files.items()}


def test_sharded_evaluate_equals_unsharded(tmp_path, tiny_models):
    params, inputs = _params(tmp_path, tiny_models), {"baseline": tiny_models["weak"]}
    one = tmp_path / "one"
    run_script("evaluate.py", make_spec(tmp_path, "evaluate", params, inputs, out=one))
    many = _run_sharded(tmp_path, params, inputs, 3)
    a, b = _finals(one), _finals(many)
    b = {n: v for n, v in b.items() if not n.startswith("shard-") and n != "shards.json"}
    assert set(a) == set(b)
    ua, ub = _untimed(a), _untimed(b)
    for name in a:
        assert ua[name] == ub[name], name
    # the merged rows carry one tstamp: the earliest shard's
    rows = [json.loads(x) for x in b["arena_hard/model_answer/ratioloop-iter1.jsonl"].splitlines()]
    shard_t = [json.loads(x)["tstamp"] for i in range(3)
               for x in (many / f"shard-{i:04d}-of-0003" / "answers.jsonl").read_text().splitlines()]
    assert {r["tstamp"] for r in rows} == {min(shard_t)}
    # 3 shards over the unsharded plan's batches (batch_size 2: policy 1 + 2 + 2, baseline 1 + 2 = 8 units)
    ranges = [json.loads((many / f"shard-{i:04d}-of-0003" / "manifest.json").read_text())["evaluate"]["shard"]["batches"]
              for i in range(3)]
    assert ranges == [[0, 2], [2, 5], [5, 8]]
    man = json.loads((many / "manifest.json").read_text())
    shard_s = [json.loads((many / f"shard-{i:04d}-of-0003" / "manifest.json").read_text())["metrics"]["answer_seconds"]
               for i in range(3)]
    assert all(t > 0 for t in shard_s)  # the stage's answer time is its slowest shard's (the merge's event)
    assert man["specHash"] == json.loads((one / "manifest.json").read_text())["specHash"]


def test_merge_of_other_answers_is_bad_input(tmp_path, tiny_models):
    params = {**_params(tmp_path, tiny_models), "benchmarks": ["arena_hard"]}
    inputs = {"baseline": tiny_models["weak"]}
    many = _run_sharded(tmp_path, params, inputs, 2)
    # a shard whose batch an out-of-memory retry halved still answers its own questions: the merge judges them all
    # (2 questions in batches of 2, policy and baseline: 2 units over 3 shards, shard 0 has none; cut from batches
    # of 1 it would take the policy's first question, which shard 1 answers too)
    assert (_run_sharded(tmp_path, params, inputs, 3, halve={0: {"batch_size": 1}}) / "summary.json").exists()
    # the same shards, merged for a longer question list: the missing answers are named, nothing is judged
    more = {**params, "limit": {"arena_hard": 3}}
    out = tmp_path / "other"
    res = run_script("evaluate.py", make_spec(tmp_path, "evaluate", more, inputs, out=out), check=False,
                     env={MERGE_ENV: str(many / "shards.json")})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "the shards hold no policy answer to arena_hard question" in res.stderr + res.stdout
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("k", [1, 20])
def test_shard_ranges_cover_the_plan_once(k):
    from ratioloop_py.evals.answer_shards import shard_questions
    from ratioloop_py.shards import Shard

    items = [{"id": f"q{i}", "turns": ["x"], "temperature": (0.0, 0.7)[i % 2]} for i in range(9)]
    jobs = [("policy", "a", items), ("policy", "b", items[:3]), ("baseline", "a", items)]
    seen = []
    for i in range(k):
        mine, _ = shard_questions(jobs, 2, Shard(i, k))
        seen.extend((who, bench, it["id"]) for (who, bench), items in mine.items() for it in items)
    assert sorted(seen) == sorted((w, b, it["id"]) for w, b, its in jobs for it in its)
