"""The evaluate stage's ArenaHard v0.1 runner: judge both games per question, write the v0.1 answer and
judgment files, score, and fill the summary and metrics of the Evaluation `ev` (scripts/evaluate.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..io import atomic_write_jsonl
from . import arena_hard, data, informative
from .judges import Judge
from .outputs import mean_of, safe_name


def run(ev: Any, judge: Judge, s: dict[str, Any], ans: dict[str, Any]) -> None:
    qs = s["questions"]
    pol = ans["policy"]["arena_hard"]
    if s["b_ref"]:
        base_answers, bname = data.load_arena_answers(Path(s["b_ref"]["path"]))
        bname = bname or "baseline"
        missing = [q["id"] for q in qs if q["id"] not in base_answers]
        if missing:
            raise BadInput(f"{s['b_ref']['path']}: no baseline answer for question {missing[0]}")
    else:
        bname = ev.baseline_name or "baseline"
        base_answers = {qid: r["turns"][0] for qid, r in ans["baseline"]["arena_hard"].items()}
    items = [{"id": q["id"], "question": q["prompt"], "answer": pol[q["id"]]["turns"][0],
              "baseline": base_answers[q["id"]]} for q in qs]
    n = 2 * len(items)
    err0 = judge.n_errors
    games = arena_hard.judge_games(judge, items, max_tokens=ev.max_tokens("arena_hard"),
                                   parse_mode=ev.p["arena_hard"]["verdict_parser"],
                                   on_done=lambda k: ev.stage.progress(k, n, "arena_hard judgments"),
                                   prompt_set=s["prompts"])
    o1, o2, labels = informative.arena_positions(games)  # the judge's own verdicts, before any combination
    jstats = informative.pairwise_stats(o1, o2, labels=labels, **ev._inf())
    debiased: list[str] = []
    if ev.debias(judge):
        calib = None
        if ev.p["judge"]["calibrate"]:
            cf = [{**it, "answer": informative.CONTENT_FREE, "baseline": informative.CONTENT_FREE} for it in items]
            calib = [g[0].get("probs") for g in arena_hard.judge_games(
                judge, cf, max_tokens=ev.max_tokens("arena_hard"),
                parse_mode=ev.p["arena_hard"]["verdict_parser"], prompt_set=s["prompts"])]
        jstats["combined_orders"] = informative.arena_combine(games, calib)
        jstats["calibrated"] = calib is not None
        if jstats["combined_orders"]:
            debiased.append("verdicts combine both orders (judge.position_debias)")
    judgments = [{"question_id": it["id"], "model": ev.model_name, "judge": judge.name, "games": g}
                 for it, g in zip(items, games)]
    d = ev.out / "arena_hard"
    ans_path = d / "model_answer" / f"{ev.model_name}.jsonl"
    atomic_write_jsonl(ans_path, [ev._arena_answer(q["id"], pol[q["id"]], ev.model_name) for q in qs])
    ev.outputs["arena_hard_answers"] = ans_path
    if not s["b_ref"]:
        bpath = d / "model_answer" / f"{bname}.jsonl"
        base_rows = ans["baseline"]["arena_hard"]
        atomic_write_jsonl(bpath, [ev._arena_answer(q["id"], base_rows[q["id"]], bname) for q in qs])
        ev.outputs["arena_hard_baseline_answers"] = bpath
    jpath = d / "model_judgment" / safe_name(judge.name) / f"{ev.model_name}.jsonl"
    atomic_write_jsonl(jpath, judgments)
    ev.outputs["arena_hard_judgments"] = jpath
    res = arena_hard.score(judgments, rounds=int(ev.p["bootstrap_rounds"]), seed=int(ev.p["bootstrap_seed"]),
                           bradley_terry=bool(ev.p["arena_hard"]["bradley_terry"]))
    official = bool(s["q_ref"]["official"] and s["full"] and s["b_ref"] and s["b_ref"]["official"])
    res.update(baseline=bname, questions=s["q_ref"], baseline_answers=s["b_ref"],
               # show_result's avg_tokens: the answer files' token_len (here: the policy's tokenizer)
               avg_tokens=mean_of([(pol[q["id"]].get("token_lens") or pol[q["id"]]["n_tokens"])[0] for q in qs]),
               **ev._comparable("arena_hard", judge, official, debiased),
               **ev._judge_health("arena_hard", judge, err0, res["n_invalid_games"], res["n_games"], jstats))
    ev.summary["arena_hard"] = res
    for k in ("score", "ci_low", "ci_high"):
        ev.metrics[f"arena_hard.{k}"] = res[k]
    ev.metrics["arena_hard.n_invalid_games"] = res["n_invalid_games"]
