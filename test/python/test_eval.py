"""Unit tests of the evaluate stage's protocols: verdict parsing, swap/weights, bootstrap, LC GLM, MT-Bench
averaging, local and API judges, pinned downloads. Synthetic data only."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fake_chat import FakeChatServer
from ratioloop_py.errors import BadInput
from ratioloop_py.evals import alpaca_eval, arena_hard, data, mt_bench, prompts
from ratioloop_py.evals.judges import ApiJudge, JudgeCache, JudgeRequest, LocalJudge


# ------------------------------------------------------------------ ArenaHard
@pytest.mark.parametrize("text,expected", [
    ("Both answers are correct, but B explains the edge cases.\n\nMy final verdict is: [[B>A]]", ("B>A", False)),
    ("Assistant A is much better: [[A>>B]]. Final verdict: [[A>>B]]", ("A>>B", False)),  # same label twice
    ("I first thought [[A>B]] but on reflection [[A=B]]", (None, False)),  # conflicting labels: no verdict
    ("Both are fine. My final verdict is a tie.", (None, True)),  # no label: ask again
    ("My final verdict is [A>B]", (None, True)),  # v0.1 accepts only double brackets
])
def test_parse_verdict_v01(text, expected):
    assert arena_hard.parse_verdict(text) == expected


def test_parse_verdict_latest_takes_last_and_upper():
    assert arena_hard.parse_verdict("first [[a>b]] then [[B>A]]", "latest") == ("B>A", False)
    assert arena_hard.parse_verdict("verdict [a=b]", "latest") == ("A=B", False)


def _row(g1, g2):
    return {"question_id": "q", "model": "m", "games": [{"score": g1}, {"score": g2}]}


def test_swap_and_weights():
    # game 1: baseline is A; game 2: the model is A. B>>A in game 1 and A>>B in game 2 both favour the model.
    b = arena_hard.battles([_row("B>>A", "A>>B")])
    assert list(b) == [1.0] * 6
    b = arena_hard.battles([_row("A>B", "B>A")])  # baseline wins both, weight 1
    assert list(b) == [0.0, 0.0]
    b = arena_hard.battles([_row("A=B", None), _row("garbage", "A>>B")])  # tie = half; invalid counts nothing
    assert list(b) == [0.5, 1.0, 1.0, 1.0]
    res = arena_hard.score([_row("A=B", None), _row("garbage", "A>>B")], rounds=10)
    assert res["score"] == pytest.approx(100 * 3.5 / 4)
    assert res["n_invalid_games"] == 2 and res["n_valid_games"] == 2


def test_bootstrap_fixed_seed():
    rows = [_row(v1, v2) for v1, v2 in [("B>A", "A>B"), ("A>B", "A=B"), ("B>>A", "B>A"), ("A=B", "A=B"),
                                         ("A>>B", "B>>A"), ("B>A", "A>B")]]
    r1 = arena_hard.score(rows, rounds=100, seed=42)
    r2 = arena_hard.score(rows, rounds=100, seed=42)
    assert r1 == r2
    b = arena_hard.battles(rows)
    rs = np.random.RandomState(42)  # the draws of pandas sample(frac=1, replace=True) after np.random.seed(42)
    boot = [b[rs.randint(0, len(b), size=len(b))].mean() for _ in range(100)]
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert r1["ci_low"] == pytest.approx(100 * lo) and r1["ci_high"] == pytest.approx(100 * hi)
    assert r1["ci_low"] <= r1["score"] <= r1["ci_high"]
    assert arena_hard.score(rows, rounds=100, seed=7)["ci_low"] != r1["ci_low"] or True  # other seeds allowed equal
    bt = arena_hard.score(rows, rounds=20, seed=42, bradley_terry=True)
    assert bt["score"] == pytest.approx(r1["score"], abs=1e-3)  # BT point estimate = weighted win fraction


# ------------------------------------------------------------------ AlpacaEval
def test_win_rate_formulas():
    prefs = [2.0, 1.0, 1.5, 1.75, None]
    r = alpaca_eval.win_rate(prefs, [10, 11, 12, 13, 14])
    x = np.array([100, 0, 50, 75.0])
    assert r["win_rate"] == pytest.approx(x.mean())
    assert r["standard_error"] == pytest.approx(x.std(ddof=1) / 2)
    assert (r["n_wins"], r["n_wins_base"], r["n_draws"], r["n_invalid"]) == (2, 1, 1, 1)
    assert r["discrete_win_rate"] == pytest.approx(100 * 2.5 / 4)
    assert r["avg_length"] == 12
    assert alpaca_eval.win_rate([0.0, 2.0])["n_draws"] == 1  # 0 is the old encoding of a tie


def test_preference_from_probs_and_swap():
    assert alpaca_eval.preference_from_probs({"m": 0.25, "M": 0.75}) == pytest.approx(1.75)
    assert alpaca_eval.preference_from_probs({"The": 1.0}) is None
    assert alpaca_eval.preference_from_probs(None) is None  # no log-probs: no preference, whatever the text
    flips = [alpaca_eval.is_swapped(f"instr {i}") for i in range(20)]
    assert set(flips) == {True, False}
    assert flips == [alpaca_eval.is_swapped(f"instr {i}") for i in range(20)]  # a function of the instruction only


class _CountingJudge:
    name = "counting"

    def __init__(self, probs):
        self.probs, self.seen = probs, []

    def judge(self, reqs, on_done=None):
        from ratioloop_py.evals.judges import JudgeReply

        self.seen.extend(reqs)
        return [JudgeReply(text="", probs=dict(self.probs)) for _ in reqs]


def test_identical_outputs_tie_without_judge_and_no_logprobs_dropped():
    items = [{"instruction": "same", "output": "x", "reference": "x"},
             {"instruction": "differs", "output": "long answer", "reference": "short"}]
    j = _CountingJudge({"m": 0.2, "M": 0.8})
    out = alpaca_eval.judge_items(j, items)
    assert len(j.seen) == 1 and out[0]["preference"] == 1.5 and out[0]["identical_outputs"]
    assert out[1]["preference"] == pytest.approx(1.2 if out[1]["swapped"] else 1.8)
    out = alpaca_eval.judge_items(_CountingJudge({"Both": 1.0}), items)
    assert out[1]["preference"] is None
    r = alpaca_eval.win_rate([o["preference"] for o in out])
    assert (r["n_total"], r["n_invalid"], r["n_draws"]) == (1, 1, 1)


def _synthetic_lc(theta_len, theta_base, n=300, seed=0):
    rng = np.random.default_rng(seed)
    len_ref = rng.integers(200, 2000, n)
    len_model = rng.integers(200, 2000, n)
    delta = len_ref - len_model
    sd = delta.std(ddof=1)
    p = 1 / (1 + np.exp(-(theta_len * np.tanh(delta / sd) + theta_base)))
    return list(1 + p), list(len_ref), list(len_model)


def test_lc_glm_recovers_known_answer():
    # The model wins only by being longer (θ_base = 0): LC must come back to 50 while the raw win rate does not.
    prefs, lr, lm = _synthetic_lc(-2.0, 0.0)
    res = alpaca_eval.length_controlled(prefs, lr, lm, glm="length_controlled_minimal")
    assert res["lc_win_rate"] == pytest.approx(50.0, abs=1.0)
    assert res["weights"]["np.tanh(std_delta_len)"] == pytest.approx(-2.0, abs=0.2)
    # A real advantage θ_base = 1: LC = 100·σ(1) ≈ 73.1 whatever the lengths.
    prefs, lr, lm = _synthetic_lc(-1.5, 1.0, seed=1)
    res = alpaca_eval.length_controlled(prefs, lr, lm, glm="length_controlled_minimal")
    assert res["lc_win_rate"] == pytest.approx(100 / (1 + math.exp(-1)), abs=1.0)
    # The leaderboard's GLM needs df_gamed.csv: without it no number, and the reason.
    res = alpaca_eval.length_controlled(prefs, lr, lm)
    assert res["lc_win_rate"] is None and "df_gamed.csv" in res["reason"]


def test_lc_with_difficulty_and_saved_weights():
    rng = np.random.default_rng(3)
    n = 300
    diff = rng.normal(0, 1, n)
    len_ref, len_model = rng.integers(200, 2000, n), rng.integers(200, 2000, n)
    delta = len_ref - len_model
    z = -1.0 * np.tanh(delta / delta.std(ddof=1)) + 0.8 * diff + 0.5
    prefs = list(1 + 1 / (1 + np.exp(-z)))
    res = alpaca_eval.length_controlled(prefs, list(len_ref), list(len_model), glm="length_controlled_noreg",
                                        instruction_difficulty=list(diff))
    expect = 100 * np.mean(1 / (1 + np.exp(-(0.8 * diff + 0.5))))
    assert res["lc_win_rate"] == pytest.approx(expect, abs=1.0)
    w = {"np.tanh(std_delta_len)": -1.0, "instruction_difficulty": 0.8, "not_gamed_baseline.astype(float)": 0.5}
    assert alpaca_eval.lc_from_weights(w, diff) == pytest.approx(expect)


def test_stage_lc_official_with_gamed_file_else_null_and_named_fit(tmp_path):
    """evaluate.py's LC: with df_gamed.csv the official GLM under the official key; without it null, the reason,
    and the simpler fit under its own name; a df_gamed.csv that is not one is a clear error."""
    import evaluate

    fixture = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "reference_results"
    rows = json.loads((fixture / "alpaca_eval/results/model-b/weighted_alpaca_eval_gpt4_turbo/annotations.json").read_text())
    prefs = [r["preference"] for r in rows]
    lr, lm = [len(r["output_1"]) for r in rows], [len(r["output_2"]) for r in rows]
    gamed = data.load_df_gamed(fixture / "alpaca_eval/df_gamed.csv")
    res = evaluate.Evaluation._alpaca_lc(prefs, lr, lm, {"gamed": gamed, "difficulty": None})
    board = {r[0]: r for r in __import__("csv").reader(
        (fixture / "alpaca_eval/leaderboards/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv").open())}
    head = board[""]
    assert res["length_controlled_winrate"] == pytest.approx(float(board["model-b"][head.index("length_controlled_winrate")]), abs=1e-9)
    assert res["lc_standard_error"] == pytest.approx(float(board["model-b"][head.index("lc_standard_error")]), abs=1e-9)
    assert "length_controlled_minimal_winrate" not in res
    res = evaluate.Evaluation._alpaca_lc(prefs, lr, lm, {"gamed": None, "difficulty": None})
    assert res["length_controlled_winrate"] is None and res["lc_standard_error"] is None
    assert "df_gamed.csv" in res["lc_unavailable_because"] and isinstance(res["length_controlled_minimal_winrate"], float)
    res = evaluate.Evaluation._alpaca_lc(prefs, lr, lm, {"gamed": None, "difficulty": [0.1 * i for i in range(len(prefs))]})
    assert res["length_controlled_winrate"] is None and isinstance(res["length_controlled_noreg_winrate"], float)
    bad = tmp_path / "df_gamed.csv"
    bad.write_text("model,index,preference\nx,0,0.5\n")
    with pytest.raises(BadInput, match="missing column 'std_delta_len'"):
        data.load_df_gamed(bad)
    with pytest.raises(BadInput, match="no instruction difficulty at row 40"):
        alpaca_eval.difficulty_by_label(gamed, 41)
    assert {"alpaca_eval.df_gamed", "alpaca_eval.instruction_difficulty"} <= set(data.OFFICIAL)


def test_stage_reads_gamed_param(tmp_path):
    """params.alpaca_eval.gamed: a path is read when the sets load (before any answer or judgment); a missing or
    short file fails there, naming the key."""
    import types

    import evaluate

    fixture = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "reference_results"

    def evaluation(gamed):
        params = {"benchmarks": ["alpaca_eval"], "cache_dir": str(tmp_path / "cache"),
                  "alpaca_eval": {"gamed": gamed, "reference_outputs": str(data.MINI_DIR / "alpaca_eval/reference_outputs.json")},
                  "models": {"judge": {"endpoint": {"base_url": "http://127.0.0.1:9", "model": "j"}}}}
        stage = types.SimpleNamespace(params=params, output_dir=tmp_path / "out", partial_dir=tmp_path / "out/partial",
                                      spec={"inputs": {}}, iteration=1, model_spec=lambda name: {"path": "policy"},
                                      planned_params=params)
        return evaluate.Evaluation(stage).load_sets()["alpaca_eval"]

    s = evaluation(str(fixture / "alpaca_eval/df_gamed.csv"))
    assert len(s["gamed"]["index"]) == 80 and s["gamed_official"] is False
    assert evaluation(None)["gamed"] is None
    with pytest.raises(BadInput, match="params.alpaca_eval.gamed"):
        evaluation(str(tmp_path / "nope.csv"))
    short = tmp_path / "short.csv"
    short.write_text("\n".join((fixture / "alpaca_eval/df_gamed.csv").read_text().splitlines()[:4]) + "\n")
    with pytest.raises(BadInput, match="no instruction difficulty at row 3"):
        evaluation(str(short))


# ------------------------------------------------------------------ MT-Bench
@pytest.mark.parametrize("text,score", [
    ("The answer is accurate and detailed.\n\nRating: [[8]]", 8.0),
    ("Mostly right. Rating: [[6.5]]", 6.5),
    ("Rating: [7]", 7.0),  # FastChat's fallback pattern
    ("I would rate this answer a seven.", -1),
])
def test_parse_rating(text, score):
    assert mt_bench.parse_rating(text) == score


def test_mt_summary_excludes_and_averages():
    rows = [{"id": "1", "turn": 1, "score": 8.0}, {"id": "1", "turn": 2, "score": 6.0},
            {"id": "2", "turn": 1, "score": 4.0}, {"id": "2", "turn": 2, "score": -1}]
    r = mt_bench.summarize(rows, {"1": "writing", "2": "math"})
    assert r["score"] == pytest.approx(6.0)
    assert r["n_excluded"] == 1 and r["n_valid"] == 3
    assert r["per_turn"] == {"1": pytest.approx(6.0), "2": pytest.approx(6.0)}
    assert r["per_category"] == {"writing": pytest.approx(7.0), "math": pytest.approx(4.0)}


def test_mt_prompt_kinds_and_temperatures():
    msgs, name = prompts.mt_messages(["q1", "q2"], ["a1", "a2"], 2, ["r1", "r2"])
    assert name == "single-math-v1-multi-turn"
    assert "q1" in msgs[1]["content"] and "a2" in msgs[1]["content"] and "r2" in msgs[1]["content"]
    assert prompts.mt_messages(["q1"], ["a1"], 1)[1] == "single-v1"
    assert mt_bench.temperature_of("writing") == 0.7 and mt_bench.temperature_of("math") == 0.0
    assert mt_bench.temperature_of("stem") == 0.1


# ------------------------------------------------------------------ local judge
@pytest.fixture(scope="module")
def local_judge(tiny_models):
    from conftest import model_spec

    return LocalJudge(model_spec(tiny_models["strong"]))


def test_local_judge_always_valid(local_judge):
    import torch

    from ratioloop_py.models import encode

    reqs = [
        JudgeRequest(messages=prompts.arena_messages("What is 12 + 30?", "42", "It is 41."),
                     choices=list(prompts.ARENA_VERDICTS), cue=prompts.ARENA_CUE, close=prompts.ARENA_CLOSE),
        JudgeRequest(messages=prompts.mt_messages(["Say hi"], ["hi"], 1)[0], choices=list(prompts.MT_RATINGS),
                     cue=prompts.MT_CUE, close=prompts.MT_CLOSE),
        JudgeRequest(messages=prompts.alpaca_messages("Say hi", "hi", "hello"), choices=["m", "M"], logprobs=True),
    ]
    for req in reqs:
        r = local_judge.one(req)
        assert set(r.probs) == set(req.choices) and sum(r.probs.values()) == pytest.approx(1.0)
        if req.choices == list(prompts.ARENA_VERDICTS):
            assert arena_hard.parse_verdict(r.text)[0] in prompts.ARENA_VERDICTS
        if req.choices == list(prompts.MT_RATINGS):
            assert 1 <= mt_bench.parse_rating(r.text) <= 10
            assert 1 <= mt_bench.expected_rating(r.probs) <= 10
    # the KV-cache shortcut gives the same log-probs as scoring each full sequence
    req = reqs[1]
    fast = local_judge.choice_logprobs(req)
    ctx = local_judge.context_text(req)
    ids = encode(local_judge.tok, ctx)
    for c, f in zip(local_judge.candidate_ids(ctx, ids, req.choices, req.close), fast):
        with torch.no_grad():
            lp = torch.log_softmax(local_judge.model(torch.tensor([ids + c])).logits[0].float(), -1)
        assert f == pytest.approx(sum(float(lp[len(ids) - 1 + k, c[k]]) for k in range(len(c))), abs=1e-4)


# ------------------------------------------------------------------ API judge against a local server
class _Server(FakeChatServer):
    """Answers from `script` ((status, payload) pairs) first, then with reply(body)."""

    def __init__(self, script):
        self.script = list(script)
        super().__init__(lambda body, _req: self.script.pop(0) if self.script else (200, self.reply(body)))

    def reply(self, body):
        msg = {"role": "assistant", "content": "Both fine. My final verdict is: [[B>A]]"}
        choice = {"index": 0, "message": msg, "finish_reason": "stop"}
        if body.get("logprobs"):
            msg["content"] = "M"
            choice["logprobs"] = {"content": [{"token": "M", "logprob": math.log(0.75), "top_logprobs": [
                {"token": "M", "logprob": math.log(0.75)}, {"token": "m", "logprob": math.log(0.25)}]}]}
        return {"choices": [choice]}


def test_api_judge_shape_retries_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_TEST_KEY", "sk-secret-123")
    srv = _Server([(429, {"error": "slow down"}), (500, {"error": "oops"})])
    try:
        cache = JudgeCache(tmp_path / "cache.jsonl")
        j = ApiJudge({"base_url": srv.url, "model": "judge-x", "api_key_env": "RL_TEST_KEY"}, concurrency=2,
                     max_retries=3, backoff_s=0.01, cache=cache)
        req = JudgeRequest(messages=prompts.arena_messages("q", "a", "b"), choices=list(prompts.ARENA_VERDICTS),
                           max_tokens=4096, temperature=0.0)
        r = j.one(req)
        assert arena_hard.parse_verdict(r.text)[0] == "B>A"
        assert len(srv.requests) == 3 and j.n_retries == 2  # 429, 500, then 200
        q = srv.requests[-1]
        assert q["path"] == "/v1/chat/completions" and q["auth"] == "Bearer sk-secret-123"
        assert q["body"]["model"] == "judge-x" and q["body"]["temperature"] == 0.0
        assert q["body"]["max_tokens"] == 4096 and q["body"]["messages"][0]["role"] == "system"
        # cache hit: no new request; a different answer is a new key
        assert j.one(req).cached and len(srv.requests) == 3
        req2 = JudgeRequest(messages=prompts.arena_messages("q", "a", "other"), choices=req.choices)
        j.one(req2)
        assert len(srv.requests) == 4
        # AlpacaEval mode: one token, top log-probs → preference
        out = alpaca_eval.judge_items(j, [{"instruction": "i", "output": "o", "reference": "r"}])
        body = srv.requests[-1]["body"]
        assert body["logprobs"] is True and body["top_logprobs"] == 5 and body["max_tokens"] == 1
        p = out[0]["preference"]
        assert p == pytest.approx(1.75 if not out[0]["swapped"] else 1.25)
        cache.close()
        assert "sk-secret" not in (tmp_path / "cache.jsonl").read_text()
        # a fresh judge on the same cache file: all hits
        j2 = ApiJudge({"base_url": srv.url, "model": "judge-x", "api_key_env": "RL_TEST_KEY"},
                      cache=JudgeCache(tmp_path / "cache.jsonl"))
        n = len(srv.requests)
        assert j2.one(req).cached and len(srv.requests) == n
    finally:
        srv.close()


def test_api_judge_gives_up_and_missing_key(monkeypatch):
    srv = _Server([(503, {})] * 3)
    try:
        j = ApiJudge({"base_url": srv.url, "model": "x"}, max_retries=2, backoff_s=0.001)
        with pytest.raises(Exception, match="gave up after 3"):
            j.one(JudgeRequest(messages=[{"role": "user", "content": "hi"}], choices=["1"]))
    finally:
        srv.close()
    monkeypatch.delenv("RL_MISSING_KEY", raising=False)
    with pytest.raises(BadInput, match="RL_MISSING_KEY"):
        ApiJudge({"base_url": "http://x", "model": "m", "api_key_env": "RL_MISSING_KEY"})


def test_arena_api_retry_when_no_verdict():
    srv = _Server([(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Let me think."}}]})])
    try:
        j = ApiJudge({"base_url": srv.url, "model": "x"}, concurrency=1, backoff_s=0.001)
        games = arena_hard.judge_games(j, [{"id": "1", "question": "q", "answer": "a", "baseline": "b"}],
                                       max_tokens=100)
        scores = [g["score"] for g in games[0]]
        assert scores == ["B>A", "B>A"]
        assert len(srv.requests) == 3  # one game needed a second turn
        cont = [r for r in srv.requests if len(r["body"]["messages"]) == 4]
        assert cont and cont[0]["body"]["messages"][2] == {"role": "assistant", "content": "Let me think."}
    finally:
        srv.close()


# ------------------------------------------------------------------ data
def test_fetch_pinned_checks_sha(tmp_path):
    src = tmp_path / "src.jsonl"
    src.write_text('{"question_id": 1}\n')
    from ratioloop_py.io import sha256_file

    good = sha256_file(src)
    cache = tmp_path / "cache"
    p = data.fetch_pinned(src.as_uri(), good, cache, "q.jsonl")
    assert p.read_text() == src.read_text()
    src.write_text("tampered\n")
    assert data.fetch_pinned(src.as_uri(), good, cache, "q.jsonl") == p  # cached copy, no re-download
    with pytest.raises(BadInput, match="does not match"):
        data.fetch_pinned(src.as_uri(), good, cache, "other.jsonl")
    assert not (cache / "other.jsonl").exists() and not list(cache.glob(".*"))


def test_loaders_both_layouts(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"question_id": "a1", "category": "c", "cluster": "k", "turns": [{"content": "Q?"}]}) + "\n")
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"uid": "a1", "category": "c", "cluster": "k", "prompt": "Q?"}) + "\n")
    assert data.load_arena_questions(old) == data.load_arena_questions(new)
    ans_old = tmp_path / "ans_old.jsonl"
    ans_old.write_text(json.dumps({"question_id": "a1", "model_id": "g", "choices": [{"index": 0, "turns": [{"content": "A"}]}]}) + "\n")
    ans_new = tmp_path / "ans_new.jsonl"
    ans_new.write_text(json.dumps({"uid": "a1", "model": "g", "messages": [{"role": "user", "content": "Q?"},
                                                                          {"role": "assistant", "content": {"answer": "A"}}]}) + "\n")
    assert data.load_arena_answers(ans_old) == data.load_arena_answers(ans_new) == ({"a1": "A"}, "g")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["x"]}\n')
    with pytest.raises(BadInput, match=r"bad.jsonl:1: missing key 'category'"):
        data.load_mt_questions(bad)


def test_mini_sets_load():
    assert len(data.load_arena_questions(data.MINI_DIR / "arena_hard/question.jsonl")) == 6
    assert len(data.load_alpaca(data.MINI_DIR / "alpaca_eval/instructions.json")) == 8
    qs = data.load_mt_questions(data.MINI_DIR / "mt_bench/question.jsonl")
    assert len(qs) == 4 and all(len(q["turns"]) == 2 for q in qs)
    assert any(q["category"] == "math" and q.get("reference") for q in qs)

