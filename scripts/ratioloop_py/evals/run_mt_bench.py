"""The evaluate stage's MT-Bench runner: grade every answered turn, write FastChat's answer and judgment files,
average, and fill the summary and metrics of `ev`."""
from __future__ import annotations

from typing import Any

from ..io import atomic_write_jsonl
from . import informative, mt_bench
from .judges import Judge
from .outputs import maybe_int, safe_name


def run(ev: Any, judge: Judge, s: dict[str, Any], ans: dict[str, Any]) -> None:
    qs = s["questions"]
    pol = ans["policy"]["mt_bench"]
    items = [{"id": q["id"], "category": q["category"], "turns": q["turns"], "answers": pol[q["id"]]["turns"],
              "reference": q.get("reference")} for q in qs]
    n = sum(min(len(q["turns"]), len(pol[q["id"]]["turns"])) for q in qs)
    err0 = judge.n_errors
    rows = mt_bench.judge_turns(judge, items, max_tokens=ev.max_tokens("mt_bench"),
                                on_done=lambda k: ev.stage.progress(k, n, "mt_bench judgments"),
                                prompt_set=s["prompts"])
    d = ev.out / "mt_bench"
    ans_path = d / "model_answer" / f"{ev.model_name}.jsonl"
    atomic_write_jsonl(ans_path, [ev._fastchat_answer(q["id"], pol[q["id"]]["turns"], ev.model_name,
                                                        pol[q["id"]]["n_tokens"]) for q in qs])
    judgments = []
    for r in rows:
        row = {"question_id": maybe_int(r["id"]), "model": ev.model_name, "judge": [judge.name, r["prompt_name"]],
               "user_prompt": r["user_prompt"], "judgment": r["judgment"], "score": r["score"], "turn": r["turn"]}
        if "probs" in r:
            row["probs"] = r["probs"]
        judgments.append(row)
    jpath = d / "model_judgment" / f"{safe_name(judge.name)}_single.jsonl"
    atomic_write_jsonl(jpath, judgments)
    ev.outputs["mt_bench_answers"] = ans_path
    ev.outputs["mt_bench_judgments"] = jpath
    res = mt_bench.summarize(rows, {q["id"]: q["category"] for q in qs})
    official = bool(s["q_ref"]["official"] and s["full"] and s["r_ref"] and s["r_ref"]["official"])
    extra = ["local judge scores are expected ratings over 1..10"] if judge.identity.get("type") == "local" else []
    jstats = informative.rating_stats(informative.mt_ratings(rows), **ev._inf())
    res.update(questions=s["q_ref"], reference_answers=s["r_ref"],
               **ev._comparable("mt_bench", judge, official, extra),
               **ev._judge_health("mt_bench", judge, err0, res["n_excluded"], res["n_judgments"], jstats))
    ev.summary["mt_bench"] = res
    ev.metrics["mt_bench.score"] = res["score"]
    for t, v in res["per_turn"].items():
        ev.metrics[f"mt_bench.turn{t}"] = v
    ev.metrics["mt_bench.n_excluded"] = res["n_excluded"]
