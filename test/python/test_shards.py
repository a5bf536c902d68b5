"""Sharded sample and score stages (issue 15): K shards + the merge write byte for byte what one unsharded run writes,
with the same spec hash; the shard list is checked before anything is merged. Tiny random models, run in-process."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import SCRIPTS, make_spec, model_spec

sys.path.insert(0, str(SCRIPTS))
from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.io import sha256_path  # noqa: E402
from ratioloop_py.shards import MERGE_ENV, Shard, merge_list, shard_of  # noqa: E402
from ratioloop_py.stage import spec_hash  # noqa: E402

PROMPTS = [
    {"id": f"p-{k:02d}", "messages": [{"role": "user", "content": text}], **({"domain": dom} if dom else {})}
    for k, (text, dom) in enumerate([
        ("What is 12 + 30?", "REASONING"), ("Explain step by step why water boils.", None),
        ("def add(a, b): what does it return?", None), ("Paris is the capital of which country?", "CHAT"),
        ("Please help with a safer alternative.", None), ("The quick brown fox jumps over the lazy dog. " * 6, None),
        ("First, second, third, finally?", None),
    ])
]
OUTPUTS = {"sample": ["samples"], "score": ["scores", "routes"]}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_stage_shards", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MODULES: dict[str, object] = {}


def run_inproc(stage: str, spec: Path, env: dict[str, str] | None = None) -> None:
    """The stage in this process (no interpreter start-up per shard keeps the test within its budget)."""
    from ratioloop_py.stage import run_stage

    mod = MODULES.setdefault(stage, _load(stage))
    saved = {k: os.environ.get(k) for k in ("RATIOLOOP_NO_LOCK", MERGE_ENV)}
    os.environ.update({"RATIOLOOP_NO_LOCK": "1", **(env or {})})
    try:
        run_stage(mod.main, ["--spec", str(spec)])  # type: ignore[attr-defined]
    except SystemExit as e:
        assert e.code in (0, None), f"{stage} exited {e.code}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def halved(spec: Path, params: dict) -> Path:
    """The spec as the TS activity writes it after an out-of-memory failure: knobs halved outside the spec hash."""
    sp = json.loads(spec.read_text())
    sp["throughput"] = {"params": params, "reason": "test"}
    spec.write_text(json.dumps(sp))
    return spec


def run_sharded(tmp: Path, stage: str, params: dict, inputs: dict[str, Path], k: int, seed: int = 5,
                halve: dict[int, dict] | None = None, name: str | None = None) -> Path:
    """K shard specs in folders of their own, then the merge under the unsharded spec; returns the stage folder.
    halve: {shard index: knobs} that shard runs with, as after an out-of-memory retry."""
    out = tmp / (name or f"{stage}-k{k}")
    listed = []
    for i in range(k):
        d = out / f"shard-{i:04d}-of-{k:04d}"
        spec = make_spec(tmp, stage, {**params, "shard": {"index": i, "count": k}}, inputs, seed=seed, out=d)
        run_inproc(stage, halved(spec, halve[i]) if halve and i in halve else spec)
        outputs = {o["name"]: {"path": o["path"], "sha256": o["sha256"]} for o in manifest(d)["outputs"]}
        listed.append({"index": i, "count": k, "outputDir": str(d), "outputs": outputs})
    (out / "shards.json").write_text(json.dumps({"shards": listed}))
    run_inproc(stage, make_spec(tmp, stage, params, inputs, seed=seed, out=out), {MERGE_ENV: str(out / "shards.json")})
    return out


def manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def same_output(a: Path, b: Path, stage: str) -> None:
    for name in OUTPUTS[stage]:
        fa, fb = a / f"{name}.jsonl", b / f"{name}.jsonl"
        assert fa.read_bytes() == fb.read_bytes(), f"{stage} {name}.jsonl differs"
    ma, mb = manifest(a), manifest(b)
    assert ma["specHash"] == mb["specHash"] == spec_hash(json.loads((a / "spec.json").read_text()))
    assert [o["sha256"] for o in ma["outputs"]] == [o["sha256"] for o in mb["outputs"]]
    skip = {"tokens_per_s"}  # a rate: time-dependent
    assert {k: v for k, v in ma["metrics"].items() if k not in skip} == {k: v for k, v in mb["metrics"].items() if k not in skip}


def test_sharded_sample_and_score_equal_one_run_byte_for_byte(tmp_path, tiny_models):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    sp = {"max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0, "batch_size": 2, "max_prompt_tokens": 96,
          "seeds": [1, 2], "backend": "hf", "models": {"policy": model_spec(tiny_models["strong"])}}
    one = tmp_path / "sample-k1"
    run_inproc("sample", make_spec(tmp_path, "sample", sp, {"prompts": prompts}, seed=5, out=one))
    # 7 prompts in 4 batches: 3 shards split them 1/1/2; 5 shards leave one shard empty.
    for k in (3, 5):
        same_output(one, run_sharded(tmp_path, "sample", sp, {"prompts": prompts}, k), "sample")
    assert manifest(tmp_path / "sample-k3")["sample"]["shards"] == 3

    # A local LLM router too: its batches come from the scoring groups, so labels cannot depend on the split.
    cp = {"router": {"kind": "llm"}, "batch_size": 3, "backend": "hf",
          "models": {"strong": model_spec(tiny_models["strong"]), "weak": model_spec(tiny_models["weak"]),
                     "router": model_spec(tiny_models["strong"])}}
    samples = one / "samples.jsonl"
    s1 = tmp_path / "score-k1"
    run_inproc("score", make_spec(tmp_path, "score", cp, {"samples": samples}, seed=5, out=s1))
    same_output(s1, run_sharded(tmp_path, "score", cp, {"samples": samples}, 3), "score")


def test_a_shard_with_a_halved_batch_still_takes_its_own_prompts(tmp_path, tiny_models):
    # An out-of-memory retry halves one shard's batch_size: its range is still cut from the planned batches, so
    # the shards cover every prompt once and merge (its own rows come from smaller batches, so differ in content).
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    sp = {"max_new_tokens": 4, "temperature": 1.0, "top_p": 1.0, "batch_size": 4, "max_prompt_tokens": 96,
          "seeds": [1], "backend": "hf", "models": {"policy": model_spec(tiny_models["strong"])}}
    # 7 prompts in batches of 4: shard 1 of 3 has the first batch; cut from batches of 1 it would have prompts 3-4
    out = run_sharded(tmp_path, "sample", sp, {"prompts": prompts}, 3, halve={1: {"batch_size": 1}}, name="sample-half")
    ids = [json.loads(x)["prompt_id"] for x in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(p["id"] for p in PROMPTS)
    cp = {"router": {"kind": "label"}, "batch_size": 4, "backend": "hf",
          "models": {"strong": model_spec(tiny_models["strong"]), "weak": model_spec(tiny_models["weak"])}}
    scored = run_sharded(tmp_path, "score", cp, {"samples": out / "samples.jsonl"}, 2, halve={0: {"batch_size": 1}},
                         name="score-half")
    assert sorted(json.loads(x)["prompt_id"] for x in (scored / "scores.jsonl").read_text().splitlines()) == sorted(ids)


def test_shard_ranges_cover_every_unit_once():
    for n in range(0, 12):
        for k in range(1, 7):
            got = [u for i in range(k) for u in range(*Shard(i, k).range(n))]
            assert got == list(range(n))
    assert shard_of({}) is None and shard_of({"shard": {"index": 1, "count": 2}}) == Shard(1, 2)
    for bad in ({"index": 2, "count": 2}, {"index": 0, "count": 0}, {"index": True, "count": 2}, [0, 2]):
        with pytest.raises(BadInput, match="params.shard"):
            shard_of({"shard": bad})


def test_merge_list_rejects_gaps_and_changed_outputs(tmp_path, monkeypatch):
    f = tmp_path / "part.jsonl"
    f.write_text('{"prompt_id": "a"}\n')
    ref = {"path": str(f), "sha256": sha256_path(f)}
    listed = tmp_path / "shards.json"
    monkeypatch.setenv(MERGE_ENV, str(listed))
    listed.write_text(json.dumps({"shards": [{"index": 0, "count": 2, "outputDir": str(tmp_path), "outputs": {"x": ref}}]}))
    with pytest.raises(BadInput, match="shards 0..K-1"):
        merge_list()
    listed.write_text(json.dumps({"shards": [{"index": 0, "count": 1, "outputDir": str(tmp_path), "outputs": {"x": ref}}]}))
    assert [s["index"] for s in merge_list()] == [0]
    f.write_text('{"prompt_id": "b"}\n')
    with pytest.raises(BadInput, match="changed after the shard finished"):
        merge_list()
