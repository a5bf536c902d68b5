"""vLLM for real (CPU build in CI): sampling reproducible per seed, score sums equal to the HF scorer's, the sample
and score stages and benchmark answers through vLLM. SmolLM2-135M; one engine for the whole module (loading and
compiling one costs tens of seconds), handed to the stages in place of the ones they would build."""
from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPTS, make_spec, run_script

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed "
                                "(npm run setup -- --with-vllm; npm test installs it)")

SMOL = ROOT / ".ratioloop" / "models" / "smollm2-135m-instruct"
QUESTIONS = ["What is 12 + 30?", "Name the capital of France.", "Write one sentence about the sea.",
             "Why is the sky blue? Answer briefly.", "List three prime numbers."]
RESPONSES = ["12 + 30 = 42.", "Paris is the capital of France.", "I am not sure, but it might be Lyon.", "",
             "The sea is wide and deep, and its waves never stop moving.", "2, 3 and 5."]


def smol_spec(**kw) -> dict:
    return {"path": str(SMOL), "dtype": "float32", "device": "cpu", "template": "chat", **kw}


@pytest.fixture(scope="module")
def engine():
    if not (SMOL / "config.json").exists():
        pytest.skip("SmolLM2-135M is not prepared (npm run setup)")
    from ratioloop_py import vllm_engine

    old = os.environ.get("RATIOLOOP_VLLM_EAGER")
    os.environ["RATIOLOOP_VLLM_EAGER"] = "1"  # no graph compilation: the module starts in seconds, not minutes
    try:
        # As the sample stage builds its engine (no prefix caching), so in-process runs equal separate processes'.
        llm = vllm_engine.load_engine(smol_spec(), seed=0, max_model_len=1024)
    finally:
        if old is None:
            os.environ.pop("RATIOLOOP_VLLM_EAGER", None)
        else:
            os.environ["RATIOLOOP_VLLM_EAGER"] = old
    yield llm
    del llm


@pytest.fixture
def stage_engine(engine, monkeypatch):
    """Stages run in this process get the module's engine instead of building their own."""
    from ratioloop_py import vllm_engine

    built = []

    def fake_load(spec, **kw):
        assert Path(spec["path"]).resolve() == SMOL.resolve()
        built.append(kw)
        return engine

    monkeypatch.setattr(vllm_engine, "load_engine", fake_load)
    monkeypatch.setenv("RATIOLOOP_NO_LOCK", "1")
    return built


@pytest.fixture(scope="module")
def tok():
    from ratioloop_py.models import load_tokenizer

    return load_tokenizer(smol_spec())


def prompt_ids(tok, questions):
    from ratioloop_py.models import model_ids, render_prompt

    return [model_ids(tok, render_prompt(tok, [{"role": "user", "content": q}])) for q in questions]


def test_sampling_reproducible_per_seed(engine, tok):
    from ratioloop_py.generate import batch_seed, generate_vllm

    ids = prompt_ids(tok, QUESTIONS)
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.95, top_k=50)
    seeds = [batch_seed(7, f"q{i}") for i in range(len(ids))]
    a = generate_vllm(engine, tok, ids, seeds=seeds, **kw)
    b = generate_vllm(engine, tok, ids, seeds=seeds, **kw)
    assert a == b
    # A response depends on (prompt, seed) only, not on what else is in the batch or in which order.
    sub = generate_vllm(engine, tok, [ids[3], ids[1]], seeds=[seeds[3], seeds[1]], **kw)
    assert sub == [a[3], a[1]]
    other = generate_vllm(engine, tok, ids, seeds=[s + 1 for s in seeds], **kw)
    assert [r["text"] for r in other] != [r["text"] for r in a]
    assert all(r["finish_reason"] in ("stop", "length") and 0 < r["n_tokens"] <= 16 for r in a)


def test_score_sums_equal_hf_scorer(engine, tok):
    """vLLM prompt log-probs vs the HF stage scorer on the same items: within 1e-3 nats per response sum."""
    from ratioloop_py.scoring import LogpScorer, ScoringModel, load_scoring_models, make_item, scorer_for

    hf = load_scoring_models({"strong": smol_spec(), "weak": smol_spec(template="none")})
    worst = 0.0
    n = 0
    for name in ("strong", "weak"):
        hsm = hf[name]
        vsm = ScoringModel(name=name, spec=hsm.spec, model=engine, tok=hsm.tok, template=hsm.template,
                           device="cpu", backend="vllm")
        groups_h = [[make_item(hsm, [{"role": "user", "content": q}], r, 512, 128) for r in RESPONSES]
                    for q in QUESTIONS]
        groups_v = [[make_item(vsm, [{"role": "user", "content": q}], r, 512, 128) for r in RESPONSES]
                    for q in QUESTIONS]
        assert [[(i.ctx, i.resp) for i in g] for g in groups_h] == [[(i.ctx, i.resp) for i in g] for g in groups_v]
        h = LogpScorer(hsm).score_prompts(groups_h)
        v = scorer_for(vsm).score_prompts(groups_v)
        for gh, gv in zip(h, v):
            for rh, rv in zip(gh, gv):
                assert rh.n_tokens == rv.n_tokens > 0
                worst = max(worst, abs(rh.sum - rv.sum))
                n += 1
    assert n == 2 * len(QUESTIONS) * len(RESPONSES)
    assert worst <= 1e-3, f"max |HF - vLLM| = {worst:.2e} nats"


def run_stage_inproc(script: str, spec: Path) -> None:
    import importlib.util as iu

    from ratioloop_py.stage import run_stage

    mod_spec = iu.spec_from_file_location(f"stage_{Path(script).stem}", SCRIPTS / script)
    mod = iu.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    try:
        run_stage(mod.main, ["--spec", str(spec)])
    except SystemExit as e:
        assert not e.code, f"{script} exited {e.code}"


def write_prompts(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": q}]}) + "\n"
                            for i, q in enumerate(QUESTIONS)))
    return path


def test_sample_and_score_stages_through_vllm(stage_engine, tmp_path):
    sample = {"n": 2, "seeds": [1, 2], "max_new_tokens": 12, "temperature": 0.8, "top_p": 0.95, "top_k": 50,
              "max_prompt_tokens": 256, "backend": "vllm", "models": {"policy": smol_spec()}}
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    outs = []
    for name in ("a", "b"):
        spec = make_spec(tmp_path, "sample", sample, {"prompts": prompts}, out=tmp_path / name)
        run_stage_inproc("sample.py", spec)
        outs.append(tmp_path / name)
    assert (outs[0] / "samples.jsonl").read_bytes() == (outs[1] / "samples.jsonl").read_bytes()
    m = json.loads((outs[0] / "manifest.json").read_text())
    assert m["sample"]["backend"] == "vllm" and m["sample"]["backend_choice"]["requested"] == "vllm"
    assert stage_engine[0]["max_model_len"] == 256 + 12
    rows = [json.loads(x) for x in (outs[0] / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len(QUESTIONS) and all(len(r["responses"]) == 2 for r in rows)

    # Score those samples with both backends: same routes, rewards equal within 2e-3 (two sums, 1e-3 each).
    rewards = {}
    for backend in ("hf", "vllm"):
        prm = {"backend": backend, "router": {"kind": "fixed", "label": "CHAT"}, "batch_size": 4,
               "max_prompt_tokens": 512, "max_response_tokens": 64,
               "models": {"strong": smol_spec(), "weak": smol_spec(template="none")}}
        spec = make_spec(tmp_path, "score", prm, {"samples": outs[0] / "samples.jsonl"}, out=tmp_path / f"s-{backend}")
        run_stage_inproc("score.py", spec)
        sm = json.loads((tmp_path / f"s-{backend}" / "manifest.json").read_text())
        assert sm["backend_choice"]["backend"] == backend
        rewards[backend] = [json.loads(x)["rewards"] for x in
                            (tmp_path / f"s-{backend}" / "scores.jsonl").read_text().splitlines()]
    flat_h = [x for r in rewards["hf"] for x in r]
    flat_v = [x for r in rewards["vllm"] for x in r]
    assert len(flat_h) == len(flat_v) == 2 * len(QUESTIONS)
    assert max(abs(a - b) for a, b in zip(flat_h, flat_v)) <= 2e-3


def test_evaluate_answers_through_vllm(stage_engine, tmp_path):
    from ratioloop_py.evals.answers import AnswerModel, answer_all

    model = AnswerModel(smol_spec(), backend="vllm", seed=5, max_new_tokens=12)
    assert model.backend == "vllm"
    items = [{"id": f"q{i}", "turns": [q] + (["And why?"] if i == 0 else []), "temperature": 0.0}
             for i, q in enumerate(QUESTIONS[:3])]
    got = answer_all(lambda: model, items, tmp_path / "answers.jsonl", batch_size=2, tag="t")
    assert [len(got[f"q{i}"]["turns"]) for i in range(3)] == [2, 1, 1]
    assert all(t.strip() for r in got.values() for t in r["turns"])
    # Greedy answers are what HF's greedy generate gives for the same rendered prompt (first turn, fp32).
    from ratioloop_py.generate import generate_batch
    from ratioloop_py.models import load_model

    hf = load_model(smol_spec(), "cpu")
    ref = generate_batch(hf, model.tok, [model.render([{"role": "user", "content": q}]) for q in QUESTIONS[1:3]],
                         max_new_tokens=12, temperature=0.0)
    assert [got["q1"]["turns"][0], got["q2"]["turns"][0]] == [r["text"] for r in ref]


def test_data_parallel_ranks_each_run_an_engine(stage_engine, tmp_path):
    """sample.num_processes: 2 with vLLM: two torchrun ranks, each with its own one-process engine on its own
    cores (CPU here; one GPU each on a GPU machine), whose merged samples equal one process's byte for byte."""
    sample = {"n": 2, "seeds": [1, 2], "max_new_tokens": 8, "temperature": 0.8, "top_p": 0.95,
              "max_prompt_tokens": 128, "backend": "vllm", "models": {"policy": smol_spec()}}
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    one = make_spec(tmp_path, "sample", sample, {"prompts": prompts}, out=tmp_path / "one")
    run_stage_inproc("sample.py", one)
    two = make_spec(tmp_path, "sample", {**sample, "num_processes": 2}, {"prompts": prompts}, out=tmp_path / "two")
    res = run_script("sample.py", two, env={"RATIOLOOP_VLLM_EAGER": "1", "RATIOLOOP_MERGE_TIMEOUT_S": "600",
                                            "RATIOLOOP_NO_LOCK": ""})
    out = res.stdout + res.stderr
    assert "launching 2 data-parallel ranks" in out
    binds = set(re.findall(r"VLLM_CPU_OMP_THREADS_BIND='([^']+)'", out))
    assert len(binds) == 2 or len(os.sched_getaffinity(0)) < 2, binds  # each rank's engine on its own cores
    m = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert m["sample"]["world_size"] == 2 and m["sample"]["backend"] == "vllm"
    assert (tmp_path / "two" / "samples.jsonl").read_bytes() == (tmp_path / "one" / "samples.jsonl").read_bytes()
