"""`prompts: official` (loading, sha256 pinning, rendering as the official code renders), ArenaHard v0.1 native
answer rows, MT-Bench references and averaging against FastChat (fschat, test-only) where it is installed.

The prompt files used here are project-written files in the official layouts (test/fixtures/eval_prompts/); the
official text is never committed. Where the official file is at hand (alpaca-eval ships its prompt), the real file
is rendered too.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.evals import arena_answers, arena_hard, data, mt_bench, official_prompts  # noqa: E402
from ratioloop_py.evals.judges import ApiJudge  # noqa: E402

FIX = ROOT / "test" / "fixtures" / "eval_prompts"
ARENA_CFG = FIX / "arena-hard-auto" / "config" / "judge_config.yaml"
MT_FILE = FIX / "fastchat" / "judge_prompts.jsonl"
ALPACA_FILE = FIX / "alpaca_eval" / "alpaca_eval_clf.txt"


def _wire(body: dict) -> str:
    """A request body as JSON with sorted keys: values and their JSON types (0 is not 0.0) must match."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


class FakeApi(ApiJudge):
    """An ApiJudge whose POST is recorded and answered from a script (no network)."""

    def __init__(self, model: str, replies: list[str] | None = None):
        super().__init__({"base_url": "http://127.0.0.1:9/v1", "model": model, "api_key_env": "UNUSED_KEY"})
        self.bodies: list[dict] = []
        self.replies = list(replies or [])

    def _post(self, body):
        self.bodies.append(json.loads(json.dumps(body)))
        text = self.replies.pop(0) if self.replies else "My final verdict is tie: [[A=B]]"
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("UNUSED_KEY", "x")


# ------------------------------------------------------------------ loading and pinning
def test_local_files_load_as_file_kind(tmp_path):
    a = official_prompts.prompt_set("arena_hard", str(ARENA_CFG), tmp_path)
    assert a.kind == "file" and a.source["sha256"] == _sha(ARENA_CFG) and not a.source["official"]
    assert a.continue_text == "TEST: please finish with a verdict label"  # from gen_judgment.py beside config/
    assert a.temperature == 0 and a.max_tokens == 4096 and a.judgment_prefix == "\n"
    m = official_prompts.prompt_set("mt_bench", str(MT_FILE), tmp_path)
    assert m.kind == "file" and set(m.by_name) == {"single-v1", "single-math-v1", "single-v1-multi-turn",
                                                    "single-math-v1-multi-turn"} and m.body == {"n": 1, "temperature": 0}
    al = official_prompts.prompt_set("alpaca_eval", str(ALPACA_FILE), tmp_path)
    assert al.kind == "file" and al.body == {"top_p": 1.0}
    assert official_prompts.prompt_set("arena_hard", "ratioloop", tmp_path).kind == "ratioloop"
    assert official_prompts.prompt_set("mt_bench", None, tmp_path).kind == "ratioloop"


def test_official_download_is_sha_checked_and_cached(tmp_path, monkeypatch):
    # Point the pin at the project-written file (file:// through the same urllib path) with its real sha256.
    pin = {"url": MT_FILE.as_uri(), "sha256": _sha(MT_FILE), "filename": "mt_bench_judge_prompts.jsonl"}
    monkeypatch.setitem(data.OFFICIAL, "mt_bench.prompts", pin)
    m = official_prompts.prompt_set("mt_bench", "official", tmp_path / "cache")
    assert m.kind == "official" and m.source["official"]
    cached = tmp_path / "cache" / "mt_bench_judge_prompts.jsonl"
    assert cached.read_bytes() == MT_FILE.read_bytes()
    # a local copy with the pinned sha256 counts as official too
    assert official_prompts.prompt_set("mt_bench", str(cached), tmp_path).kind == "official"
    # a wrong hash never lands in the cache
    monkeypatch.setitem(data.OFFICIAL, "mt_bench.prompts", {**pin, "sha256": "0" * 64, "filename": "other.jsonl"})
    with pytest.raises(BadInput, match="does not match the pinned"):
        official_prompts.prompt_set("mt_bench", "official", tmp_path / "cache")
    assert not (tmp_path / "cache" / "other.jsonl").exists()


def test_bad_prompt_files_are_bad_input(tmp_path):
    bad = tmp_path / "judge_config.yaml"
    bad.write_text("system_prompt: x\nprompt_template: ['{question_1} {answer_1}']\n")
    with pytest.raises(BadInput, match="answer_2"):
        official_prompts.prompt_set("arena_hard", str(bad), tmp_path)
    lines = MT_FILE.read_text().splitlines()
    short = tmp_path / "jp.jsonl"
    short.write_text("\n".join(x for x in lines if "single-math-v1-multi-turn" not in x) + "\n")
    with pytest.raises(BadInput, match="single-math-v1-multi-turn"):
        official_prompts.prompt_set("mt_bench", str(short), tmp_path)
    a = tmp_path / "clf.txt"
    a.write_text("<|im_start|>user\n{instruction} {output_1}\n<|im_end|>\n")
    with pytest.raises(BadInput, match="placeholders"):
        official_prompts.prompt_set("alpaca_eval", str(a), tmp_path)
    with pytest.raises(BadInput, match="does not exist"):
        official_prompts.prompt_set("alpaca_eval", str(tmp_path / "none.txt"), tmp_path)


def test_pins_name_commits_and_hashes():
    for key in ("arena_hard.prompts", "arena_hard.judge_code", "mt_bench.prompts", "alpaca_eval.prompts"):
        o = data.OFFICIAL[key]
        assert len(o["sha256"]) == 64 and "/" in o["url"] and any(len(part) == 40 for part in o["url"].split("/"))


# ------------------------------------------------------------------ rendering
def test_arena_request_as_v01_sends_it(tmp_path):
    """Hand-computed from v0.1's gen_judgment.judgment: system_prompt, then prompt_template.format(question_1=,
    answer_1=baseline, answer_2=model) for game 1 and the swap for game 2; temperature and max_tokens from the
    config; an unlabelled reply gets the literal follow-up and the two replies are joined as "\\n" + r1 + "\\n" + r2."""
    ps = official_prompts.prompt_set("arena_hard", str(ARENA_CFG), tmp_path)
    judge = FakeApi("gpt-4-1106-preview", ["no label yet", "My final verdict is: [[B>A]]",
                                            "My final verdict is: [[A>>B]]"])
    judge.concurrency = 1
    games = arena_hard.judge_games(judge, [{"id": "q1", "question": "What {is} 2+2?", "answer": "4 {x}",
                                            "baseline": "Four."}], max_tokens=4096, prompt_set=ps)
    system = ("TEST SYSTEM. Compare answer A with answer B.\n\nVerdicts: [[A>>B]] [[A>B]] [[A=B]] [[B>A]] [[B>>A]]"
              "\n\nSay \"My final verdict is tie: [[A=B]]\" when tied.")
    g1_user = "<|Q|>\nWhat {is} 2+2?\n\n<|A|>\nFour.\n<|/A|>\n\n<|B|>\n4 {x}\n<|/B|>"
    g2_user = "<|Q|>\nWhat {is} 2+2?\n\n<|A|>\n4 {x}\n<|/A|>\n\n<|B|>\nFour.\n<|/B|>"
    first = {"model": "gpt-4-1106-preview", "messages": [{"role": "system", "content": system},
                                                          {"role": "user", "content": g1_user}],
             "temperature": 0.0, "max_tokens": 4096}
    by_user = {b["messages"][1]["content"]: b for b in judge.bodies if len(b["messages"]) == 2}
    assert _wire(by_user[g1_user]) == _wire({**first, "temperature": 0})  # YAML `temperature: 0`: an integer
    assert by_user[g2_user]["messages"][1]["content"] == g2_user
    retry = [b for b in judge.bodies if len(b["messages"]) == 4]
    assert len(retry) == 1 and retry[0]["messages"][2:] == [
        {"role": "assistant", "content": "no label yet"},
        {"role": "user", "content": "TEST: please finish with a verdict label"}]
    unlabelled = [g for gs in games for g in gs if "no label yet" in g["judgment"]][0]
    assert unlabelled["judgment"] == "\nno label yet\nMy final verdict is: [[A>>B]]" and unlabelled["score"] == "A>>B"
    other = [g for gs in games for g in gs if g is not unlabelled][0]
    assert other["judgment"] == "\nMy final verdict is: [[B>A]]"
    assert unlabelled["user_prompt"] in (g1_user, g2_user)


def _fastchat_messages(template: dict, system_model: str, **fmt) -> list[dict]:
    """FastChat's run_judge_single message building, with FastChat's own Conversation class."""
    from fastchat.conversation import get_conv_template

    conv = get_conv_template("chatgpt")  # get_conversation_template("gpt-4") resolves to this template
    conv.set_system_message(template["system_prompt"])
    conv.append_message(conv.roles[0], template["prompt_template"].format(**fmt))
    conv.append_message(conv.roles[1], None)
    return conv.to_openai_api_messages()


def test_mt_requests_equal_fastchat(tmp_path):
    pytest.importorskip("fastchat.conversation")
    ps = official_prompts.prompt_set("mt_bench", str(MT_FILE), tmp_path)
    raw = {json.loads(x)["name"]: json.loads(x) for x in MT_FILE.read_text().splitlines()}
    judge = FakeApi("gpt-4", ["Rating: [[7]]"] * 8)
    judge.concurrency = 1
    items = [{"id": "81", "category": "writing", "turns": ["Q1 {a}", "Q2"], "answers": ["A1", "A2"]},
             {"id": "111", "category": "math", "turns": ["M1", "M2"], "answers": ["x", "y"],
              "reference": ["R1", "R2"]}]
    rows = mt_bench.judge_turns(judge, items, max_tokens=2048, prompt_set=ps)
    assert [r["prompt_name"] for r in rows] == ["single-v1", "single-v1-multi-turn", "single-math-v1",
                                                "single-math-v1-multi-turn"]
    expect = [
        _fastchat_messages(raw["single-v1"], "gpt-4", question="Q1 {a}", answer="A1"),
        _fastchat_messages(raw["single-v1-multi-turn"], "gpt-4", question_1="Q1 {a}", question_2="Q2",
                           answer_1="A1", answer_2="A2"),
        _fastchat_messages(raw["single-math-v1"], "gpt-4", question="M1", answer="x", ref_answer_1="R1"),
        _fastchat_messages(raw["single-math-v1-multi-turn"], "gpt-4", question_1="M1", question_2="M2",
                           answer_1="x", answer_2="y", ref_answer_1="R1", ref_answer_2="R2"),
    ]
    got = sorted(judge.bodies, key=lambda b: b["messages"][-1]["content"])
    want = sorted([{"model": "gpt-4", "messages": m, "n": 1, "temperature": 0, "max_tokens": 2048} for m in expect],
                  key=lambda b: b["messages"][-1]["content"])
    assert [_wire(g) for g in got] == [_wire(w) for w in want]
    assert all(r["score"] == 7 for r in rows)


def test_mt_math_multi_turn_uses_math_prompt_ratioloop():
    from ratioloop_py.evals import prompts

    msgs, name = prompts.mt_messages(["q1", "q2"], ["a1", "a2"], 2, ["r1", "r2"])
    assert name == "single-math-v1-multi-turn" and "correctness" in msgs[0]["content"]
    assert "creativity" not in msgs[0]["content"]
    assert "[[A=B]]" in prompts.ARENA_SYSTEM.split("For example")[1]  # the example verdict is a tie, as v0.1's


def test_alpaca_rendering_follows_make_prompts_and_chatml(tmp_path):
    """Hand-computed: each placeholder replaced once, in order of first appearance (so an instruction holding
    "{output_1}" takes the output there, as alpaca_eval's make_prompts does), then ChatML split and stripped."""
    ps = official_prompts.prompt_set("alpaca_eval", str(ALPACA_FILE), tmp_path)
    msgs = ps.messages("Say {output_1}", " ref ", "mine")
    assert msgs[0] == {"content": "TEST system: pick the better output.", "role": "system"}
    assert msgs[1]["role"] == "user" and msgs[1]["content"].startswith("TEST task.")
    assert '"instruction": """Say  ref """' in msgs[1]["content"]
    assert '"output": """{output_1}"""' in msgs[1]["content"] and '"output": """mine"""' in msgs[1]["content"]
    assert msgs[1]["content"].endswith("## Answer with m or M")


def _alpaca_real_file() -> Path | None:
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "evaluators_configs" / "alpaca_eval_clf_gpt4_turbo" / \
        "alpaca_eval_clf.txt"
    return p if p.exists() else None


def test_alpaca_real_file_from_the_package(tmp_path):
    real = _alpaca_real_file()
    if real is None:
        pytest.skip("alpaca-eval is not installed (scripts/requirements-test.txt)")
    assert _sha(real) == data.OFFICIAL["alpaca_eval.prompts"]["sha256"]
    ps = official_prompts.prompt_set("alpaca_eval", str(real), tmp_path)
    assert ps.kind == "official"
    got = ps.messages("Name a colour.", "Red.", "Blue {x}.")
    try:
        import pandas as pd
        from alpaca_eval import utils
    except Exception:  # the oracle needs alpaca_eval's own import-time dependencies
        pytest.skip("alpaca_eval.utils does not import here")
    df = pd.DataFrame([{"instruction": "Name a colour.", "output_1": "Red.", "output_2": "Blue {x}."}])
    prompts_, _ = utils.make_prompts(df, real.read_text())
    assert got == utils.prompt_to_chatml(prompts_[0])


# ------------------------------------------------------------------ ArenaHard v0.1 answer rows
MD = ("# Title\n\nIntro with **bold** and __under__.\n\n## Part\n1. one\n2. two\n- a\n* b\n"
      "```python\n# not a header\n- not a list\n```\n   + c\n**x**")


def test_markdown_counts_hand_computed():
    c = arena_answers.markdown_counts(MD)
    assert c["header_count"] == {"h1": 1, "h2": 1, "h3": 0, "h4": 0, "h5": 0, "h6": 0}
    assert c["list_count"] == {"ordered": 2, "unordered": 3}   # "- a", "* b", "   + c"; the code block's line is gone
    assert c["bold_count"] == {"**": 2, "__": 1}


def _read_v01(path: Path) -> dict:
    """A reader written to the v0.1 layout and show_result.py's access pattern (pandas, then row dicts)."""
    import pandas as pd

    df = pd.read_json(path, lines=True)
    meta = df[["question_id", "conv_metadata"]].set_index("question_id").to_dict("index")
    out = {}
    for _, row in df.iterrows():
        turn = row["choices"][0]["turns"][0]
        out[row["question_id"]] = {"content": turn["content"], "token_len": turn.get("token_len"),
                                   "meta_len": meta[row["question_id"]]["conv_metadata"]["token_len"],
                                   "header_count": meta[row["question_id"]]["conv_metadata"]["header_count"],
                                   "list_count": meta[row["question_id"]]["conv_metadata"]["list_count"],
                                   "bold_count": meta[row["question_id"]]["conv_metadata"]["bold_count"],
                                   "tstamp": row["tstamp"], "model_id": row["model_id"]}
    return out


def test_arena_answer_rows_read_back(tmp_path):
    rows = [arena_answers.answer_row("q1", "id1", "m", MD, 17, 1700000000.5),
            arena_answers.answer_row("q2", "id2", "m", "plain", 1, 1700000001.0)]
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    back = _read_v01(p)
    assert back["q1"]["content"] == MD and back["q1"]["token_len"] == back["q1"]["meta_len"] == 17
    assert back["q1"]["list_count"] == {"ordered": 2, "unordered": 3} and back["q2"]["bold_count"]["**"] == 0
    assert back["q2"]["tstamp"] == 1700000001.0 and back["q2"]["model_id"] == "m"
    # the project's own loader reads the rows too
    answers, model = data.load_arena_answers(p)
    assert answers == {"q1": MD, "q2": "plain"} and model == "m"


# ------------------------------------------------------------------ MT-Bench
def test_mt_missing_reference_listed():
    qs = [{"id": "1", "category": "writing"}, {"id": "2", "category": "math"},
          {"id": "3", "category": "coding", "reference": ["r"]}, {"id": "4", "category": "reasoning"}]
    assert mt_bench.missing_references(qs) == ["2", "4"]


def test_mt_average_equals_fastchat_show_result(tmp_path, monkeypatch):
    pytest.importorskip("fastchat.llm_judge.show_result")
    import argparse

    from fastchat.llm_judge import show_result

    rows = [{"id": "81", "turn": 1, "score": 8.0}, {"id": "81", "turn": 2, "score": 6.0},
            {"id": "82", "turn": 1, "score": -1}, {"id": "82", "turn": 2, "score": 3.0},
            {"id": "83", "turn": 1, "score": 10.0}, {"id": "83", "turn": 2, "score": 9.5}]
    p = tmp_path / "gpt-4_single.jsonl"
    p.write_text("".join(json.dumps({"question_id": int(r["id"]), "model": "m", "judge": ["gpt-4", "single-v1"],
                                     "score": r["score"], "turn": r["turn"]}) + "\n" for r in rows))
    shown = []
    monkeypatch.setattr(show_result, "print", lambda *a, **k: shown.append(a[0]), raising=False)
    show_result.display_result_single(argparse.Namespace(input_file=str(p), model_list=None, bench_name="mt_bench",
                                                         judge_model="gpt-4"))
    frames = [x for x in shown if hasattr(x, "loc")]
    turn1, turn2, avg = (float(f["score"].iloc[0]) for f in frames)
    ours = mt_bench.summarize(rows, {"81": "writing", "82": "math", "83": "stem"})
    assert ours["score"] == pytest.approx(avg, abs=1e-12)
    assert ours["per_turn"]["1"] == pytest.approx(turn1, abs=1e-12)
    assert ours["per_turn"]["2"] == pytest.approx(turn2, abs=1e-12)
    assert ours["n_excluded"] == 1



# ------------------------------------------------------------------ leaderboard-comparable
def _evaluation(tmp_path, **params):
    import importlib.util as iu

    from ratioloop_py.stage import Stage

    spec = iu.spec_from_file_location("evaluate_stage", ROOT / "scripts" / "evaluate.py")
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ep = {"base_url": "http://127.0.0.1:9/v1", "model": "gpt-4-1106-preview", "api_key_env": "UNUSED_KEY"}
    models = {"policy": {"path": str(tmp_path)}, "judge": {"endpoint": ep}}
    st = Stage(spec={"stage": "evaluate", "params": {"models": models, **params}, "outputDir": str(tmp_path)},
               spec_path=tmp_path / "spec.json")
    return mod.Evaluation(st)


def test_comparable_only_with_official_judge_prompts_data_and_limits(tmp_path, monkeypatch):
    from ratioloop_py.evals import prompts

    ev = _evaluation(tmp_path)
    gpt4 = FakeApi("gpt-4")
    official_mt = prompts.MtPrompts(by_name={}, kind="official", source={"path": "x", "official": True})
    ev.prompt_sets = {"mt_bench": official_mt}
    ev.answer_rows = {"mt_bench": {"1": {"finish_reasons": ["stop", "length"]}}}
    r = ev._comparable("mt_bench", gpt4, True, [])
    assert r["leaderboard_comparable"] is True and r["not_comparable_because"] == []
    assert r["max_new_tokens"] == 1024 and r["n_truncated"] == 1 and r["n_answer_turns"] == 2
    # each departure is one named reason
    assert not ev._comparable("mt_bench", FakeApi("gpt-4-1106-preview"), True, [])["leaderboard_comparable"]
    assert ev._comparable("mt_bench", gpt4, False, [])["not_comparable_because"] == [
        "questions or baseline/reference answers are not the official, complete set"]
    ev.p["max_new_tokens"] = {"mt_bench": 512}
    assert ev._comparable("mt_bench", gpt4, True, [])["not_comparable_because"] == [
        "answers limited to 512 new tokens per turn (official: 1024)"]
    ev.p["max_new_tokens"] = 2048  # above the official limit: still comparable
    assert ev._comparable("mt_bench", gpt4, True, [])["leaderboard_comparable"] is True
    ev.p["max_new_tokens"] = {"alpaca_eval": 2048}  # AlpacaEval's official limit is the model's own
    ev.prompt_sets["alpaca_eval"] = prompts.AlpacaPrompts(chatml="x", kind="official")
    assert ev._comparable("alpaca_eval", FakeApi("gpt-4-1106-preview"), True, [])["not_comparable_because"] == [
        "answers limited to 2048 new tokens per turn (official: the model's own limit)"]
    ev.prompt_sets["mt_bench"] = prompts.ratioloop_mt()
    ev.p["max_new_tokens"] = None
    assert ev._comparable("mt_bench", gpt4, True, [])["not_comparable_because"] == [
        "judge prompts are ratioloop's own wording of the official structure (mt_bench.prompts: ratioloop)"]
    a = official_prompts.prompt_set("arena_hard", str(ARENA_CFG), tmp_path)
    ev.prompt_sets["arena_hard"] = a
    reasons = ev._comparable("arena_hard", FakeApi("gpt-4-1106-preview"), True, [])["not_comparable_because"]
    assert reasons == [f"judge prompts from {ARENA_CFG} are not the pinned official file",
                       "the second-attempt text is not from the pinned gen_judgment.py"]


def test_alpaca_limit_is_the_models_own(tiny_models):
    """AlpacaEval's default answer limit: what the model's own length limit leaves after the batch's longest prompt."""
    from ratioloop_py.evals.answers import AnswerModel

    from conftest import model_spec

    m = AnswerModel(model_spec(tiny_models["strong"]), backend="hf", max_new_tokens=None)
    ctx = int(m.model.config.max_position_embeddings)
    assert m.context_length() == ctx and m.limit_for([10, 30]) == ctx - 30
    m.max_new_tokens = 7
    assert m.limit_for([10, 30]) == 7
    assert m.token_len("hello world") == len(m.tok.encode("hello world", add_special_tokens=False))
