"""The sample stage (issue 3): N responses per prompt per seed, determinism, resume after a crash, truncation,
single BOS, on_bad_row, a `datasets` prompt source, multi-process slicing and merge. Tiny models only."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SCRIPTS, make_spec, model_spec, run_script

sys.path.insert(0, str(SCRIPTS))
from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.generate import _parse_row, cut_at_stop  # noqa: E402
from ratioloop_py.models import encode, model_ids, tokenizer_adds_bos  # noqa: E402
from ratioloop_py.sampling import (BadRows, LoadStats, Prompt, cut_ids, dedup_sort, derive_seeds,  # noqa: E402
                                   load_prompts_hf, merge, plan_batches, rank_slice, render_fit, resolve_params,
                                   summarize)

PROMPTS = [
    {"id": "p-03", "messages": [{"role": "user", "content": "What is 12 + 30?"}], "domain": "REASONING"},
    {"id": "p-01", "messages": [{"role": "user", "content": "Explain step by step why water boils."}], "domain": "CHAT"},
    {"id": "p-02", "messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "def add(a, b): what does it return?"}]},
    {"id": "p-05", "messages": [{"role": "user", "content": "Paris is the capital of which country?"}], "domain": "CHAT"},
    {"id": "p-04", "messages": [{"role": "user", "content": "Please help with a safer alternative."}], "domain": "SAFETY"},
    {"id": "p-06", "messages": [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 12}]},
]
FAST = {"max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0, "batch_size": 2, "max_prompt_tokens": 96}


def write_prompts(path: Path, rows: list[dict] | None = None, raw_lines: list[str] | None = None) -> Path:
    lines = [json.dumps(r) for r in (rows if rows is not None else PROMPTS)] + (raw_lines or [])
    path.write_text("".join(line + "\n" for line in lines))
    return path


def params(tiny_models, **kw) -> dict:
    return {**FAST, **kw, "models": {"policy": model_spec(tiny_models["strong"])}}


def _load_sample_module():
    spec = importlib.util.spec_from_file_location("sample_stage", SCRIPTS / "sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SAMPLE = _load_sample_module()


def run_inproc(spec: Path) -> int:
    """Run the stage in this process (no interpreter start-up: keeps the suite fast); returns the exit code."""
    from ratioloop_py.stage import run_stage

    # The stage's output-dir lock is held for a process's life; in-process reruns must not take it again.
    old = os.environ.get("RATIOLOOP_NO_LOCK")
    os.environ["RATIOLOOP_NO_LOCK"] = "1"
    try:
        run_stage(SAMPLE.main, ["--spec", str(spec)])
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        if old is None:
            os.environ.pop("RATIOLOOP_NO_LOCK", None)
        else:
            os.environ["RATIOLOOP_NO_LOCK"] = old
    return 0


def read_rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# --- the stage end to end --------------------------------------------------------------------------------

def test_n_responses_per_seed_same_seed_same_text(tmp_path, tiny_models):
    prompts = write_prompts(tmp_path / "p.jsonl")
    seeds = [11, 12, 13]
    outs = []
    for name in ("a", "b"):
        spec = make_spec(tmp_path, "sample", params(tiny_models, seeds=seeds, n=99), {"prompts": prompts},
                         out=tmp_path / name)
        assert run_inproc(spec) == 0
        outs.append(tmp_path / name)
    a, b = outs
    assert (a / "samples.jsonl").read_bytes() == (b / "samples.jsonl").read_bytes()  # same seeds, same text
    rows = read_rows(a)
    assert [r["prompt_id"] for r in rows] == sorted(p["id"] for p in PROMPTS)
    for r in rows:
        assert [x["seed"] for x in r["responses"]] == seeds  # len(seeds) overrides n
        for x in r["responses"]:
            assert x["finish_reason"] in ("stop", "length") and 0 <= x["n_tokens"] <= 6
            assert x["text"] == x["text"].strip()
            if x["finish_reason"] == "length":
                assert x["n_tokens"] == 6
        assert r["all_identical"] == (len({x["text"] for x in r["responses"]}) == 1)
    # Different seeds draw different text from a random model at temperature 1.
    assert any(len({x["text"] for x in r["responses"]}) > 1 for r in rows)
    by_id = {r["prompt_id"]: r for r in rows}
    assert by_id["p-01"]["domain"] == "CHAT" and "domain" not in by_id["p-02"]
    assert by_id["p-02"]["messages"][0] == {"role": "system", "content": "Be brief."}
    for s in seeds:
        shard = [json.loads(x) for x in (a / "partial" / f"seed-{s}.jsonl").read_text().splitlines()]
        assert sorted(x["prompt_id"] for x in shard) == sorted(p["id"] for p in PROMPTS)
    m = manifest(a)
    assert m["outputs"][0]["name"] == "samples" and m["outputs"][0]["rows"] == len(PROMPTS)
    met = m["metrics"]
    assert met["responses"] == 3 * len(PROMPTS) and met["prompts"] == len(PROMPTS)
    assert met["tokens_per_s"] > 0 and 0 <= met["frac_cut_at_max_new_tokens"] <= 1
    assert met["identical_response_prompts"] == sum(r["all_identical"] for r in rows)
    assert met["truncated_prompts"] == 1  # p-06 is longer than max_prompt_tokens=96
    assert m["sample"]["seeds"] == seeds and m["sample"]["backend"] == "hf"


def test_default_seeds_derived_from_run_seed_and_iteration(tmp_path, tiny_models):
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:2])
    spec = make_spec(tmp_path, "sample", params(tiny_models, n=2, temperature=0.0), {"prompts": prompts},
                     seed=5, iteration=3)
    assert run_inproc(spec) == 0
    rows = read_rows(tmp_path / "sample")
    assert [x["seed"] for x in rows[0]["responses"]] == [5300, 5301]
    # Greedy decoding makes every seed say the same thing: flagged for pairing to drop.
    assert all(r["all_identical"] for r in rows)
    assert manifest(tmp_path / "sample")["metrics"]["identical_response_prompts"] == 2


def test_resume_after_crash_mid_shard_equals_uninterrupted_run(tmp_path, tiny_models):
    prompts = write_prompts(tmp_path / "p.jsonl")
    prm = params(tiny_models, seeds=[1, 2])  # 6 prompts / batch 2 = 3 batches per seed
    full = make_spec(tmp_path, "sample", prm, {"prompts": prompts}, out=tmp_path / "full")
    assert run_inproc(full) == 0
    crash = make_spec(tmp_path, "sample", prm, {"prompts": prompts}, out=tmp_path / "crash")
    res = run_script("sample.py", crash, check=False, env={"RATIOLOOP_TEST_CRASH_AFTER_BATCHES": "2"})
    assert res.returncode == 1, res.stderr[-2000:]
    out = tmp_path / "crash"
    assert not (out / "manifest.json").exists() and not (out / "samples.jsonl").exists()
    shard = out / "partial" / "seed-1.jsonl"
    assert len(shard.read_text().splitlines()) == 4  # two batches of the first seed were flushed
    with shard.open("a") as f:
        f.write('{"prompt_id": "p-0')  # and a kill tore the next write
    res = run_script("sample.py", crash)  # the retry, as the runner would start it
    assert (out / "samples.jsonl").read_bytes() == (tmp_path / "full" / "samples.jsonl").read_bytes()
    # The rerun only generated what was missing (4 of 12 responses were kept).
    assert manifest(out)["metrics"]["generated_tokens"] < manifest(tmp_path / "full")["metrics"]["generated_tokens"]
    done = [e for e in map(json.loads, res.stdout.splitlines()) if e["type"] == "progress"]
    assert done[-1]["done"] == done[-1]["total"] == 12


def test_partial_shards_of_another_spec_are_not_reused(tmp_path, tiny_models):
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:3])
    out = tmp_path / "s"
    spec = make_spec(tmp_path, "sample", params(tiny_models, seeds=[4]), {"prompts": prompts}, out=out)
    assert run_inproc(spec) == 0
    fresh = tmp_path / "fresh"
    for o in (out, fresh):  # same dir with changed params vs a clean dir
        spec = make_spec(tmp_path, "sample", params(tiny_models, seeds=[4], max_new_tokens=3), {"prompts": prompts}, out=o)
        assert run_inproc(spec) == 0
    assert (out / "samples.jsonl").read_bytes() == (fresh / "samples.jsonl").read_bytes()
    assert all(x["n_tokens"] <= 3 for r in read_rows(out) for x in r["responses"])


def test_on_bad_row_error_names_the_line_and_skip_counts(tmp_path, tiny_models):
    bad_lines = [
        json.dumps({"id": "b-1", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
        json.dumps({"id": "b-2", "messages": [{"role": "user", "content": "   "}]}),
    ]
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:2], bad_lines)
    spec = make_spec(tmp_path, "sample", params(tiny_models, n=1), {"prompts": prompts}, out=tmp_path / "err")
    res = run_script("sample.py", spec, check=False)
    assert res.returncode == 2
    assert f"{prompts}:3" in res.stderr and "not a user turn" in res.stderr
    assert not (tmp_path / "err" / "manifest.json").exists()

    spec = make_spec(tmp_path, "sample", params(tiny_models, n=1, on_bad_row="skip"), {"prompts": prompts},
                     out=tmp_path / "skip")
    assert run_inproc(spec) == 0
    assert [r["prompt_id"] for r in read_rows(tmp_path / "skip")] == ["p-01", "p-03"]
    m = manifest(tmp_path / "skip")
    assert m["metrics"]["skipped_bad_rows"] == 2 and m["metrics"]["input_rows"] == 4
    assert any(f"{prompts}:4" in s and "empty" in s for s in m["sample"]["skipped_rows"])


def test_hf_dataset_source_saved_to_disk(tmp_path, tiny_models):
    import datasets

    ds = datasets.Dataset.from_dict({
        "prompt_id": ["u-2", "u-1", "u-3", "u-1"],
        "prompt": ["What is 12 + 30?", "Why is the sky blue?", "Name a fruit.", "Why is the sky blue?"],
        "messages": [[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]] * 4,
    })
    ds.save_to_disk(str(tmp_path / "ds"))
    prm = params(tiny_models, n=1, prompts={"hf": {"name": str(tmp_path / "ds"), "split": "train"}, "limit": 2})
    spec = make_spec(tmp_path, "sample", prm, {})
    assert run_inproc(spec) == 0
    rows = read_rows(tmp_path / "sample")
    # 'prompt' wins over 'messages' (UltraFeedback-style); de-duplicated, ordered by id, limited.
    assert [r["prompt_id"] for r in rows] == ["u-1", "u-2"]
    assert rows[0]["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert manifest(tmp_path / "sample")["metrics"]["duplicate_prompts_dropped"] == 1


def test_hf_json_file_with_column_mapping_and_bad_row(tmp_path):
    f = tmp_path / "qs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [
        {"qid": 7, "question": "Add 2 and 2.", "kind": "REASONING"},
        {"qid": 8, "question": "", "kind": "CHAT"},
    ]))
    hf = {"name": str(f), "split": "test", "columns": {"id": "qid", "prompt": "question", "domain": "kind"}}
    with pytest.raises(BadInput, match=r"qs.jsonl\[test\] row 1: the last user message is empty"):
        load_prompts_hf(hf, BadRows("error", LoadStats()))
    stats = LoadStats()
    got = load_prompts_hf(hf, BadRows("skip", stats))
    assert [(p.id, p.domain, p.messages[0]["content"]) for p in got] == [("7", "REASONING", "Add 2 and 2.")]
    assert len(stats.skipped) == 1 and stats.rows == 2
    with pytest.raises(BadInput, match="columns.prompt"):
        load_prompts_hf({**hf, "columns": {"prompt": "nope"}}, BadRows("error", LoadStats()))


def test_two_processes_slice_and_merge_like_one(tmp_path, tiny_models):
    """Under torchrun/accelerate each rank takes a slice and rank 0 merges. With batch_size 1 every batch is
    one prompt, so two ranks draw exactly what one process draws."""
    prompts = write_prompts(tmp_path / "p.jsonl")
    prm = params(tiny_models, seeds=[3, 4], batch_size=1, max_new_tokens=4)
    one = make_spec(tmp_path, "sample", prm, {"prompts": prompts}, out=tmp_path / "one")
    assert run_inproc(one) == 0
    two = make_spec(tmp_path, "sample", prm, {"prompts": prompts}, out=tmp_path / "two")
    procs = [subprocess.Popen([sys.executable, str(SCRIPTS / "sample.py"), "--spec", str(two)],
                              env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "RATIOLOOP_MERGE_TIMEOUT_S": "120"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert results[1][0] == ""  # only rank 0 speaks on stdout
    out = tmp_path / "two"
    assert (out / "samples.jsonl").read_bytes() == (tmp_path / "one" / "samples.jsonl").read_bytes()
    for r in (0, 1):
        rows = (out / "partial" / f"seed-3.rank-{r}-of-2.jsonl").read_text().splitlines()
        assert len(rows) == 3
    assert manifest(out)["sample"]["world_size"] == 2


def test_num_processes_runs_torchrun_ranks(tiny_models, tmp_path):
    """sample.num_processes: 2 launches the stage as 2 torchrun ranks; same samples as one process."""
    prompts = write_prompts(tmp_path / "p.jsonl")
    prm = params(tiny_models, seeds=[3, 4], batch_size=1, max_new_tokens=4)
    one = make_spec(tmp_path, "sample", prm, {"prompts": prompts}, out=tmp_path / "one")
    assert run_inproc(one) == 0
    two = make_spec(tmp_path, "sample", {**prm, "num_processes": 2}, {"prompts": prompts}, out=tmp_path / "two")
    res = run_script("sample.py", two, env={"RATIOLOOP_THREADS": "1", "RATIOLOOP_MERGE_TIMEOUT_S": "120"})
    assert "launching 2 data-parallel ranks" in res.stdout + res.stderr
    assert (tmp_path / "two" / "samples.jsonl").read_bytes() == (tmp_path / "one" / "samples.jsonl").read_bytes()
    assert manifest(tmp_path / "two")["sample"]["world_size"] == 2
    if importlib.util.find_spec("vllm") is None:  # backend vllm where it is missing: bad input, before launching
        bad = make_spec(tmp_path, "sample", {**prm, "num_processes": 2, "backend": "vllm"}, {"prompts": prompts},
                        out=tmp_path / "bad")
        res = run_script("sample.py", bad, check=False)
        assert res.returncode == 2 and "launching" not in res.stdout + res.stderr


# --- rendering: truncation and BOS -----------------------------------------------------------------------

def test_cut_ids_modes():
    ids = list(range(10))
    assert cut_ids(ids, 4, "left") == [6, 7, 8, 9]
    assert cut_ids(ids, 4, "middle") == [0, 1, 8, 9]
    assert cut_ids(ids, 5, "middle") == [0, 1, 2, 8, 9]
    assert cut_ids(ids, 12, "middle") == ids and cut_ids(ids, 0, "left") == []


@pytest.fixture(scope="module")
def tiny_tok(tiny_models):
    from ratioloop_py.models import load_tokenizer

    return load_tokenizer(model_spec(tiny_models["strong"]))


def test_truncation_keeps_framing_left_and_middle(tiny_tok):
    tok = tiny_tok
    words = " ".join(f"w{i}" for i in range(60))
    msgs = [{"role": "user", "content": "HEAD " + words + " TAIL?"}]
    full = render_fit(tok, msgs, "chat", 10_000, "middle")
    assert not full.truncated and full.messages == msgs
    limit = full.n_tokens // 2
    for mode in ("left", "middle"):
        r = render_fit(tok, msgs, "chat", limit, mode)
        assert r.truncated and r.n_tokens <= limit and r.n_tokens == len(r.ids) and r.ids == model_ids(tok, r.text)
        assert r.text.startswith("<|im_start|>user\n") and r.text.endswith("<|im_end|>\n<|im_start|>assistant\n")
        content = r.messages[0]["content"]
        assert content.endswith("TAIL?")
        assert content.startswith("HEAD") == (mode == "middle")
    assert msgs[0]["content"].startswith("HEAD w0")  # the caller's messages are not modified


def test_truncation_drops_oldest_turns_first_in_left_mode(tiny_tok):
    tok = tiny_tok
    old = "The quick brown fox jumps over the lazy dog. " * 6
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": old},
            {"role": "assistant", "content": old}, {"role": "user", "content": "What is 12 + 30?"}]
    r = render_fit(tok, msgs, "chat", 40, "left")
    assert [m["role"] for m in r.messages] == ["system", "user"]
    assert r.messages[-1]["content"] == "What is 12 + 30?" and r.n_tokens <= 40
    with pytest.raises(ValueError, match="framing"):
        render_fit(tok, [{"role": "system", "content": old * 3}, {"role": "user", "content": "hi"}], "chat", 40,
                   "middle")


def test_single_bos(tiny_tok):
    """models.model_ids, the BOS rule every stage uses (cross-stage parity: test_bos.py)."""
    from tokenizers.processors import TemplateProcessing

    tok = tiny_tok
    bos = tok.bos_token
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert not tokenizer_adds_bos(tok)  # ChatML whose BOS is <|im_start|>: the template's tokens as they are
    assert model_ids(tok, rendered) == encode(tok, rendered)

    # A Llama-3-like setup: the tokenizer adds a BOS to plain text AND the template writes one.
    import copy

    llama3 = copy.deepcopy(tok)
    llama3.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)])
    assert tokenizer_adds_bos(llama3)
    text = bos + "hello"
    assert llama3(text)["input_ids"][:2] == [tok.bos_token_id] * 2  # the trap, with default encoding
    ids = model_ids(llama3, text)
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    # A plain rendering ("none") gets the BOS the tokenizer would have added, once, as the tokenizer adds it.
    plain = "User: hi\n\nAssistant:"
    assert model_ids(llama3, plain) == llama3(plain)["input_ids"] == [tok.bos_token_id] + encode(llama3, plain)
    # A template that writes a BOS in front of ChatML's own is rejected.
    with pytest.raises(BadInput, match="two BOS"):
        model_ids(tok, bos + rendered)


# --- units ----------------------------------------------------------------------------------------------

def test_resolve_params_defaults_and_errors():
    p = resolve_params({}, run_seed=2, iteration=1)
    assert (p.n, p.seeds, p.temperature, p.top_p, p.top_k) == (4, [2100, 2101, 2102, 2103], 0.8, 0.95, 0)
    assert (p.max_new_tokens, p.max_prompt_tokens, p.truncation, p.batch_size) == (256, 1024, "middle", 8)
    assert (p.backend, p.tensor_parallel_size, p.on_bad_row, p.hf, p.limit) == ("auto", 1, "error", None, None)
    assert derive_seeds(2, 0, 4) == [400, 401]
    for bad, msg in [({"n": 0}, "params.n"), ({"seeds": [1, 1]}, "distinct"), ({"truncation": "right"}, "truncation"),
                     ({"top_p": 0}, "top_p"), ({"backend": "tgi"}, "backend"), ({"stop": [""]}, "stop"),
                     ({"prompts": {"hf": {"name": "x", "columns": {"text": "t"}}}}, "unknown keys"),
                     ({"prompts": {"limit": 0}}, "limit")]:
        with pytest.raises(BadInput, match=msg):
            resolve_params(bad, 0, 1)


def test_dedup_sort_and_limit():
    u = lambda t: [{"role": "user", "content": t}]  # noqa: E731
    stats = LoadStats()
    ps = [Prompt("b", u("x"), where="f:1"), Prompt("a", u("y"), where="f:2"), Prompt("b", u("x"), where="f:3"),
          Prompt("c", u("y"), where="f:4"), Prompt("d", u("z"), where="f:5")]
    out = dedup_sort(ps, BadRows("error", stats))
    assert [p.id for p in out] == ["a", "b", "d"] and stats.duplicates == 2
    assert [p.id for p in dedup_sort(ps, BadRows("error", LoadStats()), limit=2)] == ["a", "b"]
    with pytest.raises(BadInput, match="f:2: id 'b' repeats f:1"):
        dedup_sort([Prompt("b", u("x"), where="f:1"), Prompt("b", u("q"), where="f:2")], BadRows("error", LoadStats()))


def test_slices_cover_everything_once_and_merge_orders_by_id():
    ids = [f"p{i}" for i in range(7)]
    slices = [rank_slice(ids, r, 3) for r in range(3)]
    assert sorted(sum(slices, [])) == sorted(ids) and [len(s) for s in slices] == [3, 2, 2]
    assert plan_batches(ids, 3) == [ids[:3], ids[3:6], ids[6:]]
    from ratioloop_py.sampling import Rendered

    prompts = [Prompt("a", [{"role": "user", "content": "1"}]), Prompt("b", [{"role": "user", "content": "2"}], "CHAT")]
    rendered = {p.id: Rendered("", [], 1, p.messages, False) for p in prompts}
    shard = lambda s, t: [{"prompt_id": pid, "seed": s, "text": t, "finish_reason": "stop", "n_tokens": 3}  # noqa: E731
                          for pid in ("b", "a")]
    rows = merge(prompts, rendered, [9, 8], {9: shard(9, "x"), 8: shard(8, "x")})
    assert [r["prompt_id"] for r in rows] == ["a", "b"] and "domain" not in rows[0] and rows[1]["domain"] == "CHAT"
    assert [x["seed"] for x in rows[0]["responses"]] == [9, 8] and rows[0]["all_identical"]
    assert summarize(rows)["identical_response_prompts"] == 2
    with pytest.raises(RuntimeError, match="seed 7"):
        merge(prompts, rendered, [7], {7: []})


def test_parse_generated_rows():
    eos, pad = {2}, 0
    assert _parse_row([5, 6, 2, 2], eos, pad, 4) == (2, "stop")
    assert _parse_row([5, 6, 7, 8], eos, pad, 4) == (4, "length")
    assert _parse_row([5, 6, 0, 0], eos, pad, 4) == (2, "stop")  # ended by a stop string, then padded
    assert _parse_row([5, 0, 6, 7], eos, pad, 4) == (4, "length")  # a generated pad mid-text is text
    assert cut_at_stop("a END b STOP", ["STOP", "END"]) == ("a ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_stop_strings_cut_responses(tmp_path, tiny_models, tiny_tok):
    from ratioloop_py.generate import generate_batch
    from ratioloop_py.models import load_model

    model = load_model(model_spec(tiny_models["strong"]))
    text = tiny_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    free = generate_batch(model, tiny_tok, [text], max_new_tokens=8, temperature=0.0)[0]
    assert free["text"], "the greedy continuation is expected to be non-empty"
    stop = free["text"].strip()[1:3] or free["text"].strip()[:1]
    cut = generate_batch(model, tiny_tok, [text], max_new_tokens=8, temperature=0.0, stop=[stop])[0]
    assert stop not in cut["text"] and cut["finish_reason"] == "stop"
    assert free["text"].startswith(cut["text"])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_backend(tmp_path, tiny_models):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:4])
    outs = []
    for name in ("a", "b"):
        prm = params(tiny_models, seeds=[1, 2], backend="vllm")
        prm["models"]["policy"]["device"] = "auto"
        spec = make_spec(tmp_path, "sample", prm, {"prompts": prompts}, out=tmp_path / name)
        run_script("sample.py", spec)
        outs.append(tmp_path / name)
    assert (outs[0] / "samples.jsonl").read_bytes() == (outs[1] / "samples.jsonl").read_bytes()
    rows = read_rows(outs[0])
    assert len(rows) == 4 and all(len(r["responses"]) == 2 for r in rows)
    assert manifest(outs[0])["sample"]["backend"] == "vllm"
