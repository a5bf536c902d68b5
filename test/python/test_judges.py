"""Judges: errors become invalid judgments (counted, never cached, stage fails only above a share), local-judge cache
keyed on a fingerprint of the weights, and judges that say when they know nothing (position consistency, verdict
histograms, both-orders combination). Fake judges and tiny models only."""
from __future__ import annotations

import json
import math
import os
import shutil

import pytest
from conftest import make_spec, model_spec, run_script
from fake_chat import FakeChatServer

from ratioloop_py.errors import BadInput
from ratioloop_py.evals import alpaca_eval, arena_hard, informative, mt_bench, prompts
from ratioloop_py.evals import judges as judges_mod
from ratioloop_py.evals.judges import (ApiJudge, Judge, JudgeCache, JudgeReply, JudgeRequest, LocalJudge,
                                       local_fingerprint)

GOOD, BAD = "zzgoodzz", "zzbadzz"  # markers a fake judge can find in any rendering of the prompt


# ------------------------------------------------------------------ fake judges
class FakeJudge(Judge):
    """Judges by a rule on the last user message; `local` fakes give verdict probabilities like LocalJudge."""

    def __init__(self, rule, local: bool = False, name: str = "fake"):
        self.rule, self.local = rule, local
        self.identity = {"type": "local" if local else "api", "model": name}
        self.calls = 0

    def _ask(self, req):
        self.calls += 1
        text = req.messages[-1]["content"]
        return self.rule(req, text)

    def judge(self, reqs, on_done=None):
        return [self.one(r) for r in reqs]


def _good_first(text: str) -> bool:
    return 0 <= text.find(GOOD) < text.find(BAD) or (GOOD in text and BAD not in text)


def always_a(req, text):  # position bias only: the embedded SmolLM2 judge's behaviour
    if req.logprobs:
        return JudgeReply(text="m", probs={"m": 0.9, "M": 0.1})
    return JudgeReply(text="[[A>>B]]")


def reads_answers(req, text):  # names the GOOD answer the winner wherever it stands
    first = _good_first(text)
    if req.logprobs:
        return JudgeReply(text="m" if first else "M", probs={"m": 0.8, "M": 0.2} if first else {"m": 0.2, "M": 0.8})
    return JudgeReply(text="[[A>B]]" if first else "[[B>A]]")


def biased_local(req, text):
    """Verdict log-probs = content signal + a large additive position bias: the raw verdict is always 'A wins'."""
    s = 1.0 if _good_first(text) else -1.0
    if req.logprobs:
        lp = {"m": s + 3.0, "M": -s}
    else:
        sig = {"A>>B": 2 * s, "A>B": s, "A=B": 0.0, "B>A": -s, "B>>A": -2 * s}
        bias = {"A>>B": 5.0, "A>B": 3.0, "A=B": 1.0, "B>A": 0.0, "B>>A": 0.0}
        lp = {v: sig[v] + bias[v] for v in prompts.ARENA_VERDICTS}
    z = math.log(sum(math.exp(v) for v in lp.values()))
    probs = {k: math.exp(v - z) for k, v in lp.items()}
    best = max(probs, key=probs.get)
    return JudgeReply(text=best if req.logprobs else f"[[{best}]]", probs=probs)


def _arena_items(n: int):
    # the model (answer) is GOOD on even questions, BAD on odd ones
    return [{"id": str(i), "question": f"question {i}?", "answer": f"{GOOD} {i}" if i % 2 == 0 else f"{BAD} {i}",
             "baseline": f"{BAD} {i}" if i % 2 == 0 else f"{GOOD} {i}"} for i in range(n)]


def _alpaca_items(n: int):
    return [{"instruction": f"instruction {i}", "output": f"{GOOD} {i}" if i % 3 else f"{BAD} {i}",
             "reference": f"{BAD} {i}" if i % 3 else f"{GOOD} {i}"} for i in range(n)]


# ------------------------------------------------------------------ informativeness
def test_always_a_judge_is_uninformative_on_arena():
    games = arena_hard.judge_games(FakeJudge(always_a), _arena_items(20), max_tokens=10)
    st = informative.pairwise_stats(*informative.arena_positions(games)[:2],
                                    labels=informative.arena_positions(games)[2])
    assert st["judge_informative"] is False
    assert st["position_consistency"] == 0.0 and st["chance_consistency"] == 0.0 and st["consistency_p_value"] == 1.0
    assert st["verdicts"] == {"A>>B": 40} and st["positions"] == {"first": 40, "tie": 0, "second": 0}
    assert len(st["uninformative_because"]) == 2
    # and the score it produces is exactly the 50.00 that looked like a result
    judgments = [{"games": g} for g in games]
    assert arena_hard.score(judgments, rounds=10)["score"] == 50.0


def test_reading_judge_is_informative_on_arena():
    games = arena_hard.judge_games(FakeJudge(reads_answers), _arena_items(20), max_tokens=10)
    o1, o2, labels = informative.arena_positions(games)
    st = informative.pairwise_stats(o1, o2, labels=labels)
    assert st["judge_informative"] is True and st["uninformative_because"] == []
    assert st["position_consistency"] == 1.0 and st["chance_consistency"] == pytest.approx(0.5)
    assert st["consistency_p_value"] == pytest.approx(0.5 ** 20)


def test_chance_level_and_small_samples():
    # a judge whose two orders agree as often as chance (half) is not informative, even without dominance
    o1 = [1, -1] * 10
    o2 = [-1, -1, 1, 1] * 5
    st = informative.pairwise_stats(o1, o2)
    assert st["position_consistency"] == 0.5 and st["chance_consistency"] == pytest.approx(0.5)
    assert st["judge_informative"] is False and "not above chance" in st["uninformative_because"][0]
    # 3 consistent pairs of 3 at chance 1/2: p = 1/8, not enough evidence
    assert informative.pairwise_stats([1, -1, 1], [-1, 1, -1])["judge_informative"] is False
    assert informative.binom_sf(3, 3, 0.5) == pytest.approx(0.125)
    assert informative.binom_sf(0, 5, 0.3) == 1.0 and informative.binom_sf(6, 5, 0.3) == 0.0
    # hand-computed: P(X >= 2 | n = 3, p = 0.4) = 3·0.16·0.6 + 0.064 = 0.352
    assert informative.binom_sf(2, 3, 0.4) == pytest.approx(0.352)


def test_one_order_only_checks_dominance():
    st = informative.pairwise_stats([1, -1, 1, -1], [None] * 4)
    assert st["judge_informative"] is True and st["position_consistency"] is None
    assert st["consistency_not_measured"].startswith("one order")
    st = informative.pairwise_stats([1] * 10, [None] * 10)
    assert st["judge_informative"] is False and "one position wins" in st["uninformative_because"][0]
    assert informative.pairwise_stats([None], [None])["judge_informative"] is False


def test_alpaca_stats_and_combination():
    items = _alpaca_items(24)
    for rule, expect in ((always_a, False), (reads_answers, True)):
        j = FakeJudge(rule)
        rows = alpaca_eval.judge_items(j, items)
        mirror = alpaca_eval.judge_items(j, informative.exchanged(items))
        st = informative.pairwise_stats(*informative.alpaca_orders(rows, mirror)[:2])
        assert st["judge_informative"] is expect, rule.__name__
        if expect:
            assert st["position_consistency"] == 1.0
    # a local judge with an additive position bias: raw preferences follow the position, combined ones the content
    j = FakeJudge(biased_local, local=True)
    rows = alpaca_eval.judge_items(j, items)
    mirror = alpaca_eval.judge_items(j, informative.exchanged(items))
    o1, o2, labels = informative.alpaca_orders(rows, mirror)
    assert informative.pairwise_stats(o1, o2, labels=labels)["verdicts"] == {"m": 48}
    comb = informative.alpaca_combine(rows, mirror)
    for it, r in zip(items, comb):
        model_good = it["output"].startswith(GOOD)
        assert (r["preference"] > 1.5) == model_good
        # logit(first preferred) = 2s + 3 in each order (s = ±1 content, +3 position): the mean over both orders
        # of logit(reference preferred) is 2·s_reference, so P(model preferred) = σ(±2)
        assert r["preference"] == pytest.approx(2.0 - 1 / (1 + math.exp(2.0 if model_good else -2.0)))
        assert r["raw_preference"] is not None and "mirrored" in r["raw_completion"]


def test_arena_combination_cancels_position_bias():
    items = _arena_items(8)
    j = FakeJudge(biased_local, local=True)
    games = arena_hard.judge_games(j, items, max_tokens=10)
    o1, o2, labels = informative.arena_positions(games)
    assert informative.pairwise_stats(o1, o2, labels=labels)["judge_informative"] is False
    assert set(labels) == {"A>>B"}
    assert informative.arena_combine(games) == 8
    for it, g in zip(items, games):
        model_good = it["answer"].startswith(GOOD)
        # game 1 shows the baseline as A: the model winning is B>>A (strong: content gap 2·s on the strong verdicts,
        # bias symmetric part 2.5 on the strong ones beats 2.0 on the weak ones)
        assert g[0]["score"] == ("B>>A" if model_good else "A>>B")
        assert g[1]["score"] == informative.ARENA_FLIP[g[0]["score"]] and g[0]["raw_score"] == "A>>B"
    res = arena_hard.score([{"games": g} for g in games], rounds=10)
    assert res["score"] == 50.0  # half the questions each way, now for the right reason
    # hand-computed combination of one question (model GOOD): mean of log-probs over the two frames
    lp1 = {"A>>B": -2 + 5, "A>B": -1 + 3, "A=B": 1, "B>A": 1, "B>>A": 2}  # unnormalised: constants do not matter
    lp2 = {"A>>B": 2 + 5, "A>B": 1 + 3, "A=B": 1, "B>A": -1, "B>>A": -2}
    c = informative.combine_pairwise(lp1, lp2, informative.ARENA_FLIP)
    assert c == {"A>>B": 0.5, "A>B": 0.5, "A=B": 1.0, "B>A": 2.5, "B>>A": 4.5}
    # with a content-free pair's log-probs (the pure bias) subtracted, the symmetric part goes too
    cal = {"A>>B": 5.0, "A>B": 3.0, "A=B": 1.0, "B>A": 0.0, "B>>A": 0.0}
    c2 = informative.combine_pairwise(lp1, lp2, informative.ARENA_FLIP, cal)
    assert c2 == {"A>>B": -2.0, "A>B": -1.0, "A=B": 0.0, "B>A": 1.0, "B>>A": 2.0}


def test_mt_bench_rating_histogram():
    st = informative.rating_stats([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    assert st["judge_informative"] is False and st["verdicts"] == {"1": 10, "2": 1}
    st = informative.rating_stats([3, 7, 9, -1, None, 7.5])
    assert st["judge_informative"] is True and st["n_judgments"] == 4 and st["verdicts"]["7.5"] == 1
    rows = [{"score": 4.2, "probs": {"1": 0.1, "5": 0.9}}, {"score": 8}, {"score": -1}]
    assert informative.mt_ratings(rows) == [5.0, 8.0, None]


# ------------------------------------------------------------------ invalid judgments
class _Server(FakeChatServer):
    """Chat endpoint: a request whose prompt holds 'FAIL' gets HTTP `fail_status`, the rest a fixed verdict."""

    def __init__(self, verdict="[[A>>B]]", alpaca_token="m", fail_status=400):
        def respond(body, _req):
            if "FAIL" in json.dumps(body["messages"]):
                return fail_status, {"error": {"message": "bad request"}}
            msg = {"role": "assistant", "content": alpaca_token if body.get("logprobs") else verdict}
            choice = {"index": 0, "message": msg}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": alpaca_token, "logprob": 0.0, "top_logprobs": [
                    {"token": alpaca_token, "logprob": math.log(0.9)},
                    {"token": "M" if alpaca_token == "m" else "m", "logprob": math.log(0.1)}]}]}
            return 200, {"choices": [choice]}

        super().__init__(respond)


def test_judge_errors_become_invalid_and_are_not_cached(tmp_path):
    srv = _Server(fail_status=400)
    try:
        cache = JudgeCache(tmp_path / "c.jsonl")
        j = ApiJudge({"base_url": srv.url, "model": "x"}, concurrency=2, backoff_s=0.001, cache=cache)
        items = [{"id": "1", "question": "q1", "answer": "a", "baseline": "b"},
                 {"id": "2", "question": "FAIL q2", "answer": "a", "baseline": "b"}]
        games = arena_hard.judge_games(j, items, max_tokens=10)
        assert [g["score"] for g in games[0]] == ["A>>B", "A>>B"]
        assert [g["score"] for g in games[1]] == [None, None]
        assert j.n_errors == 2 and "HTTP 400" in j.first_error
        assert len(srv.requests) == 4  # an invalid reply is not asked to go on (no continuation turn)
        res = arena_hard.score([{"games": g} for g in games], rounds=5)
        assert res["n_invalid_games"] == 2 and res["n_valid_games"] == 2
        # not cached: asking again goes to the endpoint again; valid replies are hits
        arena_hard.judge_games(j, items, max_tokens=10)
        assert len(srv.requests) == 6
        cache.close()
        assert "FAIL" not in (tmp_path / "c.jsonl").read_text()
    finally:
        srv.close()


def test_retries_exhausted_is_invalid_but_bad_key_stops():
    srv = _Server(fail_status=503)
    try:
        j = ApiJudge({"base_url": srv.url, "model": "x"}, max_retries=1, backoff_s=0.001)
        req = JudgeRequest(messages=[{"role": "user", "content": "FAIL"}], choices=["1"])
        with pytest.raises(judges_mod.ApiError, match="gave up after 2"):
            j.one(req)  # one() raises; the benchmarks' judge() turns it into an invalid judgment
        (r,) = j.judge([req])
        assert r.invalid and "gave up after 2" in r.error and r.text == ""
        assert mt_bench.parse_rating(r.text) == -1 and alpaca_eval.preference_from_probs(r.probs) is None
    finally:
        srv.close()
    srv = _Server(fail_status=401)
    try:
        j = ApiJudge({"base_url": srv.url, "model": "x"}, max_retries=1, backoff_s=0.001)
        with pytest.raises(BadInput, match="HTTP 401"):
            j.judge([JudgeRequest(messages=[{"role": "user", "content": "FAIL"}], choices=["1"])])
    finally:
        srv.close()


# ------------------------------------------------------------------ the stage: shares, summary, metrics
def _stage_params(tmp, tiny_models, url, **judge):
    return {"benchmarks": ["arena_hard"], "max_new_tokens": 3, "batch_size": 2, "limit": 2, "bootstrap_rounds": 5, "cache_dir": str(tmp / "cache"),
            "judge": {"cache": False, "backoff_s": 0.001, "max_retries": 0, **judge},
            "models": {"policy": model_spec(tiny_models["strong"]), "judge": {"endpoint": {"base_url": url,
                                                                                         "model": "fake-judge"}}}}


def _data_dir(tmp):
    """Mini sets with one ArenaHard question the fake endpoint refuses (HTTP 400)."""
    d = tmp / "eval"
    (d / "arena_hard").mkdir(parents=True)
    qs = [{"question_id": "q1", "category": "c", "turns": [{"content": "Say hi"}]},
          {"question_id": "q2", "category": "c", "turns": [{"content": "FAIL this one"}]}]
    (d / "arena_hard" / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    return d


def test_stage_counts_invalid_and_flags_biased_judge(tmp_path, tiny_models):
    """In process: the ArenaHard step with an API judge that refuses one question and always says A>>B."""
    import evaluate
    from ratioloop_py.stage import load_stage

    srv = _Server(verdict="[[A>>B]]")
    try:
        p = _stage_params(tmp_path, tiny_models, srv.url, max_invalid_share=0.5)
        spec = make_spec(tmp_path, "evaluate", p, {"baseline": tiny_models["weak"], "data": _data_dir(tmp_path)})
        ev = evaluate.Evaluation(load_stage(["--spec", str(spec)]))
        s = ev.load_sets()["arena_hard"]
        rows = {q["id"]: {"turns": [f"answer {q['id']}"], "n_tokens": [2]} for q in s["questions"]}
        ans = {"policy": {"arena_hard": rows}, "baseline": {"arena_hard": rows}}
        judge = ev.make_judge()
        ev.run_arena(judge, s, ans)
        ah = ev.summary["arena_hard"]
        assert ah["n_judge_errors"] == 2 and ah["n_invalid_games"] == 2 and ah["invalid_share"] == 0.5
        assert ev.first_judge_error and "HTTP 400" in ev.first_judge_error
        assert ev.too_many_invalid == []  # 50% is not above 0.5
        assert ah["judge_informative"] is False and ev.metrics["arena_hard.judge_informative"] == 0
        st = ah["judge_stats"]
        assert st["verdicts"] == {"A>>B": 2} and st["position_consistency"] == 0.0 and "combined_orders" not in st
        assert ev.metrics["arena_hard.position_consistency"] == 0.0
        ev.p["judge"]["max_invalid_share"] = 0.25
        ev.run_arena(judge, s, ans)
        assert ev.too_many_invalid == ["arena_hard: 2 of 4 judgments invalid (50.0% > judge.max_invalid_share 25%)"]
        judge.cache.close()
    finally:
        srv.close()


def test_stage_fails_above_the_invalid_share(tmp_path, tiny_models):
    """The stage program: summary.json with the counts, exit 1 with the reason, no manifest."""
    srv = _Server(verdict="[[A>>B]]")
    try:
        p = _stage_params(tmp_path, tiny_models, srv.url, max_invalid_share=0.25)
        spec = make_spec(tmp_path, "evaluate", p, {"baseline": tiny_models["weak"], "data": _data_dir(tmp_path)},
                         out=tmp_path / "fail")
        res = run_script("evaluate.py", spec, check=False)
        assert res.returncode == 1
        assert "arena_hard: 2 of 4 judgments invalid (50.0% > judge.max_invalid_share 25%)" in res.stderr
        assert "HTTP 400" in res.stderr
        assert not (tmp_path / "fail" / "manifest.json").exists()
        s = json.loads((tmp_path / "fail" / "summary.json").read_text())
        ah = s["benchmarks"]["arena_hard"]
        assert s["judge_errors"] == 2 and ah["n_invalid_games"] == 2 and s["judge_informative"] is False
    finally:
        srv.close()


def test_judge_params_checked():
    import evaluate

    p = evaluate.resolve_params({})
    assert p["judge"]["max_invalid_share"] == 0.1 and p["judge"]["position_debias"] == "auto"
    for bad in ({"max_invalid_share": 2}, {"max_dominant_share": True}, {"position_debias": "sometimes"}):
        with pytest.raises(BadInput, match="params.judge." + next(iter(bad))):
            evaluate.resolve_params({"judge": bad})


# ------------------------------------------------------------------ local-judge fingerprint
def test_local_judge_fingerprint_follows_the_weights(tmp_path, tiny_models, monkeypatch):
    d = tmp_path / "judge"
    shutil.copytree(tiny_models["weak"], d)
    spec = model_spec(d)
    f0 = local_fingerprint(spec)
    assert f0 == local_fingerprint(spec) and f0 != local_fingerprint(model_spec(tiny_models["strong"]))
    cfg = json.loads((d / "config.json").read_text())
    cfg["retrained_marker"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    f1 = local_fingerprint(spec)
    assert f1 != f0
    # weights above the whole-file limit count by size and mtime: a rewrite in place changes the key
    monkeypatch.setattr(judges_mod, "_HASH_WHOLE_BELOW", 0)
    f2 = local_fingerprint(spec)
    w = next(p for p in d.iterdir() if p.suffix in (".safetensors", ".bin"))
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert local_fingerprint(spec) != f2
    # the cache key carries it: same request, retrained judge → a different key
    a, b = FakeJudge(always_a), FakeJudge(always_a)
    a.identity = {"type": "local", "path": str(d), "fingerprint": f0}
    b.identity = {"type": "local", "path": str(d), "fingerprint": f1}
    req = JudgeRequest(messages=[{"role": "user", "content": "x"}], choices=["1"])
    assert a.key(req) != b.key(req)
    assert LocalJudge(spec).identity["fingerprint"] == local_fingerprint(spec)


# ------------------------------------------------------------------ the stage's ArenaHard step, in process
def test_stage_arena_step_combines_and_calibrates_local_judge(tmp_path, tiny_models):
    """Evaluation.run_arena with a local-style judge whose verdicts are all position bias plus a content signal:
    the judge's own verdicts are reported uninformative, the written games carry the combined verdicts, and
    calibration costs one content-free call per question."""
    import evaluate
    from ratioloop_py.stage import load_stage

    params = {"benchmarks": ["arena_hard"], "limit": 6, "cache_dir": str(tmp_path / "cache"),
              "judge": {"cache": False, "calibrate": True},
              "models": {"policy": model_spec(tiny_models["strong"]), "judge": model_spec(tiny_models["weak"])}}
    spec = make_spec(tmp_path, "evaluate", params, {"baseline": tiny_models["weak"]})
    ev = evaluate.Evaluation(load_stage(["--spec", str(spec)]))
    s = ev.load_sets()["arena_hard"]
    qs = s["questions"]
    good = {q["id"]: i % 2 == 0 for i, q in enumerate(qs)}  # the model is GOOD on every other question

    def row(text):
        return {"turns": [text], "n_tokens": [3]}

    ans = {"policy": {"arena_hard": {q["id"]: row(f"{GOOD if good[q['id']] else BAD} {q['id']}") for q in qs}},
           "baseline": {"arena_hard": {q["id"]: row(f"{BAD if good[q['id']] else GOOD} {q['id']}") for q in qs}}}
    j = FakeJudge(biased_local, local=True)
    j.cache = JudgeCache(tmp_path / "partial_cache.jsonl")  # as make_judge gives every judge
    ev.run_arena(j, s, ans)
    res = ev.summary["arena_hard"]
    # two games + one content-free pair per question (its two games are the same request: the second a cache hit)
    assert j.calls == 3 * len(qs)
    assert res["judge_informative"] is False and ev.metrics["arena_hard.judge_informative"] == 0
    st = res["judge_stats"]
    assert st["verdicts"] == {"A>>B": 2 * len(qs)} and st["combined_orders"] == len(qs) and st["calibrated"]
    assert any("combine both orders" in r for r in res["not_comparable_because"])
    rows = [json.loads(x) for x in (ev.out / "arena_hard/model_judgment/fake" / f"{ev.model_name}.jsonl")
            .read_text().splitlines()]
    for r in rows:
        g1, g2 = r["games"]
        assert g1["raw_score"] == "A>>B" and g2["raw_score"] == "A>>B"
        # calibrated: content −s..+s per verdict, the bias gone: the model's answer wins (B>>A in game 1) or loses
        assert g1["score"] == ("B>>A" if good[str(r["question_id"])] else "A>>B")
        assert g2["score"] == informative.ARENA_FLIP[g1["score"]]
    assert res["score"] == 50.0 and res["n_invalid_games"] == 0
    # a judge that reads the answers, on the same 6 questions: consistent 6/6 at chance 1/2, p = 1/64
    ev.run_arena(FakeJudge(reads_answers, name="reader"), s, ans)
    res = ev.summary["arena_hard"]
    assert res["judge_informative"] is True and ev.metrics["arena_hard.judge_informative"] == 1
    assert res["judge_stats"]["consistency_p_value"] == pytest.approx(1 / 64)


def test_stage_alpaca_step_consistency_check_keeps_api_verdicts(tmp_path, tiny_models):
    """judge.consistency_check: an API-style judge is asked the other order too, only for the statistics: its
    preferences (and the official protocol's numbers) stay the ones of the primary order."""
    import evaluate
    from ratioloop_py.stage import load_stage

    def run(check: bool, out: str):
        params = {"benchmarks": ["alpaca_eval"], "limit": 8, "cache_dir": str(tmp_path / "cache"),
                  "judge": {"cache": False, "consistency_check": check},
                  "models": {"policy": model_spec(tiny_models["strong"]), "judge": model_spec(tiny_models["weak"])}}
        spec = make_spec(tmp_path, "evaluate", params, {"baseline": tiny_models["weak"]}, out=tmp_path / out)
        ev = evaluate.Evaluation(load_stage(["--spec", str(spec)]))
        s = ev.load_sets()["alpaca_eval"]
        n = len(s["items"])
        pol = {str(i): {"turns": [f"{GOOD if i % 2 == 0 else BAD} {i}"], "n_tokens": [2]} for i in range(n)}
        base = {str(i): {"turns": [f"{BAD if i % 2 == 0 else GOOD} {i}"], "n_tokens": [2]} for i in range(n)}
        j = FakeJudge(reads_answers, name="api-reader")
        ev.run_alpaca(j, s, {"policy": {"alpaca_eval": pol}, "baseline": {"alpaca_eval": base}})
        return ev, j, n

    ev0, j0, n = run(False, "plain")
    ev1, j1, _ = run(True, "checked")
    a0, a1 = ev0.summary["alpaca_eval"], ev1.summary["alpaca_eval"]
    assert j0.calls == n and j1.calls == 2 * n
    assert a0["judge_stats"]["position_consistency"] is None and a0["judge_stats"]["consistency_not_measured"]
    assert a1["judge_stats"]["position_consistency"] == 1.0 and a1["judge_informative"] is True
    assert a1["win_rate"] == a0["win_rate"] and "combined_orders" not in a1["judge_stats"]
    assert not any("combine both orders" in r for r in a1["not_comparable_because"])
