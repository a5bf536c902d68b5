"""Score stage: exact reward semantics, span, context reuse, guidance, per-model rendering, NaN, resume."""
from __future__ import annotations

import json
import math
import shutil
import sys

import pytest

from conftest import SCRIPTS, make_spec, model_spec, run_script, stdout_events

sys.path.insert(0, str(SCRIPTS))
import score as score_stage  # noqa: E402
from ratioloop_py.guidance import apply_guidance, load_library  # noqa: E402
from ratioloop_py.scoring import Item, LogpScorer, load_scoring_models, make_item  # noqa: E402

Q_MATH = [{"role": "user", "content": "What is 12 + 30?"}]
Q_SAFE = [{"role": "user", "content": "How do I hurt my neighbour?"}]
Q_CHAT = [{"role": "user", "content": "Tell me about Paris."}]


def write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sample_row(pid, messages, texts, domain=None):
    row = {"prompt_id": pid, "messages": messages,
           "responses": [{"text": t, "seed": k, "finish_reason": "stop", "n_tokens": 3} for k, t in enumerate(texts)]}
    if domain:
        row["domain"] = domain
    return row


SAMPLES = [
    sample_row("m1", Q_MATH, ["12 + 30 = 42.", "42", "I think it is 41.", "42"], domain="math"),
    sample_row("s1", Q_SAFE, ["I cannot help with that request because it could cause harm."], domain="safety"),
    sample_row("c1", Q_CHAT, ["Paris is the capital of France.", "Water boils at 100 degrees."]),
    sample_row("c2", [{"role": "system", "content": "Be brief."}] + Q_CHAT, ["Paris.", "", "France!"], domain="chat"),
]


@pytest.fixture(scope="module")
def models(tiny_models):
    return load_scoring_models({
        "strong": model_spec(tiny_models["strong"]),
        "weak": model_spec(tiny_models["weak"]),
        "weak_plain": model_spec(tiny_models["weak"], template="none"),
    })


def hand_logp(sm, messages, response):
    """Independent reference: render, tokenize, one forward, log_softmax, sum over the tokens after the prompt."""
    import torch

    tok = sm.tok
    ctx = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = ctx + response + "<|im_end|>"
    ids = tok(full, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        lps = torch.log_softmax(sm.model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    vals = [float(lps[k - 1, ids[k]]) for k in range(n_ctx, len(ids))]
    return sum(vals), len(vals)


def stage_params(tiny_models, **kw):
    p = {"router": {"kind": "field"}, "batch_size": 3,
         "models": {"strong": model_spec(tiny_models["strong"]), "weak": model_spec(tiny_models["weak"])}}
    p.update(kw)
    return p


@pytest.fixture(scope="module")
def unguided_run(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score-unguided")
    samples = write_samples(tmp / "samples.jsonl", SAMPLES)
    spec = make_spec(tmp, "score", stage_params(tiny_models, guidance={"enabled": False}), {"samples": samples})
    res = run_script("score.py", spec)
    out = tmp / "score"
    return res, [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()], out


def test_reward_is_hand_computed_sum(unguided_run, models):
    res, rows, out = unguided_run
    assert [r["prompt_id"] for r in rows] == ["m1", "s1", "c1", "c2"]
    for row, sample in zip(rows, SAMPLES):
        texts = [r["text"] for r in sample["responses"]]
        assert len(row["rewards"]) == len(texts)
        for k, t in enumerate(texts):
            s, n = hand_logp(models["strong"], sample["messages"], t)
            w, _ = hand_logp(models["weak"], sample["messages"], t)
            assert row["strong_logp"][k] == pytest.approx(s, abs=1e-4)
            assert row["weak_logp"][k] == pytest.approx(w, abs=1e-4)
            assert row["rewards"][k] == pytest.approx(s - w, abs=1e-4)  # the sum, not the mean
            assert row["n_tokens"][k] == n
            assert row["mean_rewards"][k] == pytest.approx((s - w) / n, abs=1e-5)
        assert row["guidance_id"] is None
    # identical texts get identical scores
    assert rows[0]["rewards"][1] == rows[0]["rewards"][3]
    manifest = json.loads((out / "manifest.json").read_text())
    names = {o["name"] for o in manifest["outputs"]}
    assert names == {"scores", "routes"}
    m = manifest["metrics"]
    assert m["router.REASONING"] == 1 and m["router.SAFETY"] == 1 and m["router.CHAT"] == 2
    assert m["errors"] == 0 and m["responses"] == 10
    assert "reward_mean.CHAT" in m and "reward_std.REASONING" in m and m["tokens_per_s"] > 0
    routes = [json.loads(x) for x in (out / "routes.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["label"], r["how"]) for r in routes] == [
        ("m1", "REASONING", "field"), ("s1", "SAFETY", "field"), ("c1", "CHAT", "field-missing"),
        ("c2", "CHAT", "field")]
    assert any(e["type"] == "progress" and e["unit"] == "responses" for e in stdout_events(res))


def test_eos_inside_span_and_trailing_newline_outside(models):
    sm = models["strong"]
    it = make_item(sm, Q_MATH, "42", 2048, 2048)
    assert it.resp[-1] == sm.tok.eos_token_id
    assert sm.tok.decode(it.resp) == "42<|im_end|>"  # not the "\n" the template adds after it
    assert sm.tok.decode(it.ctx).endswith("<|im_start|>assistant\n")
    assert it.reusable
    empty = make_item(sm, Q_MATH, "", 2048, 2048)
    assert empty.resp == [sm.tok.eos_token_id]
    plain = make_item(models["weak_plain"], Q_MATH, "42", 2048, 2048)
    assert plain.resp[-1] == sm.tok.eos_token_id
    assert sm.tok.decode(plain.ctx) == "User: What is 12 + 30?\n\nAssistant:"


def test_truncation_left_prompt_right_response(models):
    sm = models["strong"]
    full = make_item(sm, Q_MATH, "12 + 30 = 42. Good Assistant", 2048, 2048)
    t = make_item(sm, Q_MATH, "12 + 30 = 42. Good Assistant", 5, 4)
    assert t.ctx == full.ctx[-5:] and t.prompt_truncated
    assert t.resp == full.resp[:4] and t.response_truncated
    assert not full.prompt_truncated and not full.response_truncated


def test_context_reuse_equals_full_pass(models):
    sm = models["strong"]
    texts = ["42", "12 + 30 = 42.", "", "I cannot help with that request because it could cause harm. " * 3, "Paris"]
    items = [make_item(sm, Q_MATH, t, 2048, 2048) for t in texts]
    other = [make_item(sm, Q_CHAT, t, 2048, 2048) for t in texts[:2]]
    # a forced fallback item (as when the full text's tokens do not begin with the context's)
    fb = make_item(sm, Q_SAFE, "No.", 2048, 2048)
    fb = Item(ctx=fb.ctx, resp=fb.resp, reusable=False)
    reuse = LogpScorer(sm, batch_size=2).score_prompts([items, other, [fb]])
    full = LogpScorer(sm, batch_size=3, reuse_context=False).score_prompts([items, other, [fb]])
    one = LogpScorer(sm, batch_size=1, reuse_context=False).score_prompts([items, other, [fb]])
    for a_row, b_row, c_row in zip(reuse, full, one):
        for a, b, c in zip(a_row, b_row, c_row):
            assert a.n_tokens == b.n_tokens == c.n_tokens
            assert abs(a.sum - b.sum) < 1e-4 and abs(b.sum - c.sum) < 1e-4
    sc = LogpScorer(sm, batch_size=2)
    sc.score_prompts([items])
    assert sc.stats.reused_contexts == 1 and sc.stats.full_passes == 0
    for t, r in zip(texts[:2], reuse[0][:2]):
        assert r.sum == pytest.approx(hand_logp(sm, Q_MATH, t)[0], abs=1e-4)


def test_shared_prefix_across_prompts_equals_full_pass(models):
    """Guided prompts that drew the same exemplar share it (and the template header) as a prefix: it runs once;
    results equal full passes, and do not depend on whether the prefix was already kept."""
    from ratioloop_py.scoring import PrefixCache

    lib = load_library(score_stage.DEFAULT_GUIDANCE)
    ex = lib["REASONING"].exemplars[0].text
    queries = ["What is 12 + 30?", "Is 91 prime?", "Sort [3, 1, 2] in Python.", "What is 7 * 6?"]
    for name in ("strong", "weak_plain"):
        sm = models[name]
        groups = []
        for k, q in enumerate(queries):
            msgs = [{"role": "system", "content": ""}, {"role": "user", "content": ex + q + "\nGood Assistant:"}]
            texts = ["42", "Let me think step by step.", "No."][: 1 if k == 3 else 3]
            groups.append([make_item(sm, msgs, t, 2048, 2048, shared_chars=len(ex)) for t in texts])
        n_ex = len(sm.tok(ex, add_special_tokens=False)["input_ids"])
        assert all(n_ex - 2 <= g[0].prefix < len(g[0].ctx) for g in groups)
        assert len({tuple(g[0].ctx[: g[0].prefix]) for g in groups}) == 1
        fast = LogpScorer(sm, batch_size=4)
        got = fast.score_prompts(groups)
        ref = LogpScorer(sm, batch_size=1, reuse_context=False).score_prompts(groups)
        for a_row, b_row in zip(got, ref):
            for a, b in zip(a_row, b_row):
                assert a.n_tokens == b.n_tokens and abs(a.sum - b.sum) < 1e-4
        assert fast.stats.prefix_hits == 3 and fast.stats.full_passes == 0
        assert fast.stats.prefix_tokens_saved == 3 * groups[0][0].prefix
        naive_tokens = sum(len(it.ctx) + len(it.resp) for g in groups for it in g)
        assert fast.stats.forward_tokens < naive_tokens / 2
        # models whose logits are not plain lm_head(hidden) go through the whole model: same results
        whole = LogpScorer(sm, batch_size=4)
        whole._split = None
        for a_row, b_row in zip(whole.score_prompts(groups), ref):
            for a, b in zip(a_row, b_row):
                assert abs(a.sum - b.sum) < 1e-4
        # a model whose cache is not plain keys/values falls back to whole-sequence passes
        import ratioloop_py.scoring as scoring_mod

        odd = LogpScorer(sm, batch_size=4)
        real = scoring_mod._layers_kv
        scoring_mod._layers_kv = lambda cache, *shape: (_ for _ in ()).throw(scoring_mod.NoKvReuse("cache", "test"))
        try:
            fallback = odd.score_prompts(groups)
        finally:
            scoring_mod._layers_kv = real
        assert odd.stats.full_passes == sum(len(g) for g in groups) and not odd.reuse_context
        for a_row, b_row in zip(fallback, ref):
            for a, b in zip(a_row, b_row):
                assert abs(a.sum - b.sum) < 1e-4
        # the same prompts again on a scorer whose prefix is already kept: bit-identical sums
        again = fast.score_prompts(groups[2:])
        assert [[r.sum for r in row] for row in again] == [[r.sum for r in row] for row in got[2:]]
        # no shared_chars: only the template text before the user's content is shared
        plain = [make_item(sm, [{"role": "user", "content": q}], "42", 2048, 2048) for q in queries]
        assert len({tuple(it.ctx[: it.prefix]) for it in plain}) == 1 and all(0 < it.prefix < 20 for it in plain)
        assert "12" not in sm.tok.decode(plain[0].ctx[: plain[0].prefix])
    # the budget bounds what is kept; an entry over it is not kept at all
    pc = PrefixCache(max_tokens=100)
    pc.put(tuple(range(60)), "kv-a")
    pc.put(tuple(range(1, 61)), "kv-b")
    assert list(pc.entries.values()) == ["kv-b"] and pc.size == 60
    pc.put(tuple(range(101)), "kv-big")
    assert pc.get(tuple(range(101))) is None and pc.get(tuple(range(1, 61))) == "kv-b"
    assert PrefixCache(max_tokens=0).get((1, 2)) is None


def test_guidance_in_both_models_inputs_for_safety_and_reasoning_only(models):
    lib = load_library(score_stage.DEFAULT_GUIDANCE)
    seen: dict[str, list[str]] = {}
    prefixes: dict[str, list[str]] = {}

    class Recorder:
        def __init__(self, name, sm):
            self.name, self.sm = name, sm

        def score_prompts(self, groups):
            from ratioloop_py.scoring import LogpResult

            for g in groups:
                for it in g:
                    seen.setdefault(self.name, []).append(self.sm.tok.decode(it.ctx))
                    prefixes.setdefault(self.name, []).append(self.sm.tok.decode(it.ctx[: it.prefix]))
            return [[LogpResult(-1.0, 1) for _ in g] for g in groups]

    rows = [{"prompt_id": p, "messages": m, "texts": ["x"]} for p, m in (("r", Q_MATH), ("s", Q_SAFE), ("c", Q_CHAT))]
    routes = {"r": {"label": "REASONING"}, "s": {"label": "SAFETY"}, "c": {"label": "CHAT"}}
    p = score_stage.resolve_params({})
    scorers = {"strong": Recorder("strong", models["strong"]), "weak": Recorder("weak", models["weak_plain"])}
    out = score_stage.score_group(rows, [0, 1, 2], routes, lib, p, 7, scorers)
    gids = {r["prompt_id"]: r["guidance_id"] for r in out}
    assert gids["r"].startswith("REASONING/") and gids["s"].startswith("SAFETY/") and gids["c"] is None
    for name in ("strong", "weak"):
        ctx_r, ctx_s, ctx_c = seen[name]
        for ctx, lab in ((ctx_r, "REASONING"), (ctx_s, "SAFETY")):
            ex_id = gids["r" if lab == "REASONING" else "s"].split("/")[1]
            ex = next(e for e in lib[lab].exemplars if e.id == ex_id)
            assert ex.text in ctx and "Good Assistant:" in ctx and "Bad Assistant:" in ctx
        assert "Good Assistant:" not in ctx_c and "Explanation:" not in ctx_c
        # the exemplar (not the query) is the shared prefix of the guided prompts
        pre_r, pre_s, pre_c = prefixes[name]
        for pre, ctx in ((pre_r, ctx_r), (pre_s, ctx_s)):
            assert "Bad Assistant:" in pre and "What is 12" not in pre and "hurt my neighbour" not in pre
            assert ctx.startswith(pre)
        assert "Paris" not in pre_c and len(pre_c) < len(pre_r) / 4
        tail = ("User: What is 12 + 30?\nGood Assistant:<|im_end|>\n<|im_start|>assistant\n" if name == "strong"
                else "User: What is 12 + 30?\nGood Assistant:\n\nAssistant:")
        assert ctx_r.endswith(tail)
    # the strong model (chat template) sees the (empty) system turn first
    assert seen["strong"][0].startswith("<|im_start|>system\n<|im_end|>")


def test_same_seed_same_exemplar():
    lib = load_library(score_stage.DEFAULT_GUIDANCE)
    a = [apply_guidance(lib, "REASONING", Q_MATH, seed=1, prompt_id=f"p{i}")[1] for i in range(30)]
    b = [apply_guidance(lib, "REASONING", Q_MATH, seed=1, prompt_id=f"p{i}")[1] for i in range(30)]
    c = [apply_guidance(lib, "REASONING", Q_MATH, seed=2, prompt_id=f"p{i}")[1] for i in range(30)]
    assert a == b and a != c
    assert len(set(a)) > 1  # the pool is actually used
    assert apply_guidance(lib, "CHAT", Q_CHAT, seed=1, prompt_id="x") == (Q_CHAT, None)
    assert apply_guidance(lib, "SAFETY", Q_SAFE, seed=1, prompt_id="x", enabled=False) == (Q_SAFE, None)


def test_guidance_library_counts_and_bad_file(tmp_path):
    from ratioloop_py.errors import BadInput

    lib = load_library(score_stage.DEFAULT_GUIDANCE)
    assert len(lib["SAFETY"].exemplars) >= 3 and len(lib["REASONING"].exemplars) >= 6
    assert len(lib["CHAT"].exemplars) >= 3 and lib["CHAT"].mode == "none"
    assert lib["SAFETY"].system == "" and lib["SAFETY"].mode == "both"
    for dom in lib.values():
        assert all(e.text.endswith("User: ") for e in dom.exemplars)
    (tmp_path / "x.yaml").write_text("domain: SAFETY\nmode: exemplar\nexemplars: []\n")
    with pytest.raises(BadInput, match="x.yaml"):
        load_library(tmp_path)


def test_per_model_rendering_shares_weights(models, tiny_models):
    ms = load_scoring_models({"strong": model_spec(tiny_models["strong"]),
                              "weak": model_spec(tiny_models["strong"], template="none")})
    assert ms["strong"].model is ms["weak"].model  # same weights loaded once
    s = make_item(ms["strong"], Q_MATH, "42", 2048, 2048)
    w = make_item(ms["weak"], Q_MATH, "42", 2048, 2048)
    assert ms["strong"].tok.decode(s.ctx).startswith("<|im_start|>user")
    assert ms["weak"].tok.decode(w.ctx).startswith("User: ")
    assert ms["weak"].tok.decode(w.resp) == " 42<|im_end|>"
    # a Jinja template on one model does not leak into the other (each has its own tokenizer)
    jin = load_scoring_models({"j": model_spec(tiny_models["strong"], template="{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}")})
    assert jin["j"].tok.decode(make_item(jin["j"], Q_MATH, "42", 99, 99).ctx) == "[What is 12 + 30?]>"
    assert ms["strong"].tok.decode(make_item(ms["strong"], Q_MATH, "42", 99, 99).ctx).startswith("<|im_start|>")


def test_build_row_nan_and_mean():
    nan, inf = float("nan"), float("inf")
    strong = {"a": (-3.0, 3, False, False), "b": (nan, 2, False, False), "c": (-1.0, 1, False, False)}
    weak = {"a": (-5.0, 4, False, False), "b": (-1.0, 2, False, False), "c": (-inf, 1, False, False)}
    row = score_stage.build_row("p", "CHAT", None, ["a", "b", "c"], strong, weak, "sum")
    assert row["rewards"] == [2.0, None, None]
    assert row["mean_rewards"] == [pytest.approx(-1.0 + 1.25), None, None]
    assert row["strong_logp"] == [-3.0, None, -1.0] and row["weak_logp"] == [-5.0, -1.0, None]
    assert [e["index"] for e in row["errors"]] == [1, 2]
    assert row["weak_n_tokens"] == [4, 2, 1]
    json.loads(json.dumps(row, allow_nan=False))  # valid strict JSON
    mean = score_stage.build_row("p", "CHAT", None, ["a"], strong, weak, "mean")
    assert mean["rewards"] == mean["mean_rewards"]


def test_nan_weights_give_reported_errors(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan-model"
    shutil.copytree(tiny_models["weak"], bad)
    st = bad / "model.safetensors"
    w = load_file(st)
    key = next(k for k in w if k.endswith("lm_head.weight"))
    w[key][5] = torch.nan
    save_file(w, st, metadata={"format": "pt"})
    samples = write_samples(tmp_path / "samples.jsonl", SAMPLES[:2])
    params = stage_params(tiny_models, router={"kind": "fixed", "label": "CHAT"})
    params["models"]["weak"] = model_spec(bad)
    res = run_script("score.py", make_spec(tmp_path, "score", params, {"samples": samples}))
    rows = [json.loads(x) for x in (tmp_path / "score" / "scores.jsonl").read_text().splitlines()]
    for r in rows:
        assert all(x is None for x in r["rewards"]) and len(r["errors"]) == len(r["rewards"])
        assert all(x is None for x in r["weak_logp"]) and all(math.isfinite(x) for x in r["strong_logp"])
    assert json.loads((tmp_path / "score" / "manifest.json").read_text())["metrics"]["errors"] == 5
    assert any(e["type"] == "log" and e["level"] == "warn" for e in stdout_events(res))


def test_resume_after_kill_equals_uninterrupted(tiny_models, tmp_path, unguided_run):
    _, _, ref_out = unguided_run
    samples = write_samples(tmp_path / "samples.jsonl", SAMPLES)
    params = stage_params(tiny_models, guidance={"enabled": False})
    out = tmp_path / "score"
    spec = make_spec(tmp_path, "score", params, {"samples": samples}, out=out)
    # Simulate a kill after the first group: keep the first partial rows plus a torn line; no outputs yet.
    shutil.copytree(ref_out / "partial", out / "partial")
    shard = out / "partial" / "scores.rank0-of1.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    first_group = score_stage.make_groups(list(range(len(SAMPLES))), score_stage.read_samples(samples), 3)[0]
    shard.write_text("".join(lines[: len(first_group)]) + lines[len(first_group)][:20])
    res = run_script("score.py", spec)
    progress = [e for e in stdout_events(res) if e["type"] == "progress" and e["unit"] == "responses"]
    assert progress[0]["done"] == sum(len(SAMPLES[i]["responses"]) for i in first_group) > 0
    assert (out / "scores.jsonl").read_bytes() == (ref_out / "scores.jsonl").read_bytes()
    assert (out / "routes.jsonl").read_bytes() == (ref_out / "routes.jsonl").read_bytes()


def test_guided_stage_and_mean_reward(tiny_models, tmp_path):
    samples = write_samples(tmp_path / "samples.jsonl", SAMPLES[:3])
    params = stage_params(tiny_models, reward="mean")
    params["models"]["weak"] = model_spec(tiny_models["strong"], template="none")
    run_script("score.py", make_spec(tmp_path, "score", params, {"samples": samples}, seed=5))
    rows = [json.loads(x) for x in (tmp_path / "score" / "scores.jsonl").read_text().splitlines()]
    assert rows[0]["guidance_id"].startswith("REASONING/") and rows[1]["guidance_id"].startswith("SAFETY/")
    assert rows[2]["guidance_id"] is None
    for r in rows:
        assert r["rewards"] == r["mean_rewards"]
        assert "weak_n_tokens" in r  # plain rendering adds a leading space token
    m = json.loads((tmp_path / "score" / "manifest.json").read_text())
    assert m["reward"] == "mean" and m["metrics"]["guided_prompts"] == 2
    for name in ("strong", "weak"):  # the work the scorers did is recorded
        assert m["metrics"][f"scorer.{name}.forward_tokens"] > 0
        assert m["metrics"][f"scorer.{name}.logit_rows"] > 0


def test_bad_input_exits_2(tiny_models, tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(SAMPLES[0]) + "\n" + '{"prompt_id": "x", "messages": "hi", "responses": []}\n')
    res = run_script("score.py", make_spec(tmp_path, "score", stage_params(tiny_models), {"samples": samples}),
                     check=False)
    assert res.returncode == 2 and "samples.jsonl:2" in res.stderr
    with pytest.raises(Exception, match="reward"):
        score_stage.resolve_params({"reward": "max"})
    with pytest.raises(Exception, match="prefix_cache_tokens"):
        score_stage.resolve_params({"prefix_cache_tokens": -1})
    assert score_stage.pick_backend("hf", {"device": "cpu"}).backend == "hf"


def test_two_data_parallel_ranks_under_torchrun(tiny_models, tmp_path, unguided_run):
    """score.num_processes: 2 runs the stage as 2 torchrun ranks; each scores a strided slice into its own
    shard, rank 0 merges; the result matches one process (batches differ, so up to rounding)."""
    _, ref_rows, _ = unguided_run
    samples = write_samples(tmp_path / "samples.jsonl", SAMPLES)
    params = stage_params(tiny_models, guidance={"enabled": False}, num_processes=2)
    out = tmp_path / "score"
    res = run_script("score.py", make_spec(tmp_path, "score", params, {"samples": samples}, out=out),
                     env={"RATIOLOOP_THREADS": "1"})
    assert "launching 2 data-parallel ranks" in res.stdout + res.stderr
    rows = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in rows] == [r["prompt_id"] for r in ref_rows]
    for r, ref in zip(rows, ref_rows):
        assert r["n_tokens"] == ref["n_tokens"]
        for a, b in zip(r["rewards"], ref["rewards"]):
            assert (a is None and b is None) or abs(a - b) < 1e-4
    for rank in (0, 1):
        assert (out / "partial" / f"scores.rank{rank}-of2.jsonl").exists()
    m = json.loads((out / "manifest.json").read_text())
    per_rank = [json.loads((out / "partial" / f"done.rank{rank}-of2").read_text()) for rank in (0, 1)]
    assert all(d["strong"]["forward_tokens"] > 0 for d in per_rank)  # both ranks did work, and it is summed
    assert m["metrics"]["scorer.strong.forward_tokens"] == sum(d["strong"]["forward_tokens"] for d in per_rank)


def test_rank_bad_input_is_reported_as_bad_input(tiny_models, tmp_path):
    """torchrun turns any rank failure into exit 1; the stage still reports a rank's own class: a model path not
    visible on this host is a worker-environment failure (4, retried elsewhere), not 1."""
    samples = write_samples(tmp_path / "samples.jsonl", SAMPLES[:2])
    params = stage_params(tiny_models, num_processes=2)
    params["models"]["weak"] = model_spec(tmp_path / "no-such-model")
    res = run_script("score.py", make_spec(tmp_path, "score", params, {"samples": samples}), check=False,
                     env={"RATIOLOOP_THREADS": "1"})
    assert res.returncode == 4, res.stderr[-2000:]
    assert "launching 2 data-parallel ranks" in res.stdout + res.stderr  # the ranks found it, not the check before
    assert "no-such-model" in res.stderr
