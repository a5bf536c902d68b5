"""MT-Bench: two-turn answers with FastChat's per-category temperatures, single-answer grading 1–10 (with a
reference answer for math, reasoning and coding; turn 2 graded on the whole dialogue), unparseable judgments
excluded and counted, score = mean over all graded turns, also per turn and per category.

Judgment rows follow FastChat's single mode: {question_id, model, judge: [judge, prompt name], user_prompt,
judgment, score, turn}; score −1 marks an unparseable judgment.
"""
from __future__ import annotations

import ast
import re
from typing import Any, Callable

from . import prompts
from .judges import Judge, JudgeRequest

# FastChat llm_judge: generation temperatures per category and the categories judged with a reference.
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
                "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")
SCORE_PATTERN = re.compile(r"\[\[(\d+\.?\d*)\]\]")
SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def temperature_of(category: str) -> float:
    t = TEMPERATURES.get(category, 0.7)
    return 0.0 if t < 1e-4 else t  # FastChat: below 1e-4 means greedy


def parse_rating(judgment: str) -> float:
    """The rating in [[x]] (then [x]); −1 when there is none, as FastChat."""
    m = SCORE_PATTERN.search(judgment) or SCORE_BACKUP.search(judgment)
    if not m:
        return -1
    try:
        return float(ast.literal_eval(m.group(1)))
    except (ValueError, SyntaxError):
        return -1


def expected_rating(probs: dict[str, float]) -> float:
    return float(sum(float(k) * p for k, p in probs.items()))


def missing_references(questions: list[dict[str, Any]]) -> list[str]:
    """Ids of questions FastChat grades with a reference (math, reasoning, coding) that have none."""
    return [q["id"] for q in questions if q["category"] in NEED_REF_CATS and not q.get("reference")]


def judge_turns(judge: Judge, items: list[dict[str, Any]], *, max_tokens: int,
                on_done: Callable[[int], None] | None = None,
                prompt_set: prompts.MtPrompts | None = None) -> list[dict[str, Any]]:
    """items: {id, category, turns, answers, reference?}; one grading per answered turn.
    Returns {id, turn, prompt_name, user_prompt, judgment, score, probs?} rows in item, turn order."""
    ps = prompt_set or prompts.ratioloop_mt()
    reqs, meta = [], []
    for it in items:
        ref = it.get("reference") if it["category"] in NEED_REF_CATS else None
        for turn in range(1, min(len(it["turns"]), len(it["answers"])) + 1):
            msgs, name = ps.messages(it["turns"], it["answers"], turn, ref)
            reqs.append(JudgeRequest(messages=msgs, choices=list(prompts.MT_RATINGS), cue=prompts.MT_CUE,
                                     close=prompts.MT_CLOSE, max_tokens=max_tokens, temperature=0.0,
                                     body=dict(ps.body)))
            meta.append((it["id"], turn, name))
    out = []
    for (qid, turn, name), req, r in zip(meta, reqs, judge.judge(reqs, on_done=on_done)):
        row = {"id": qid, "turn": turn, "prompt_name": name, "user_prompt": req.messages[-1]["content"],
               "judgment": r.text}
        if r.probs is not None and set(r.probs) <= set(prompts.MT_RATINGS) and r.probs:
            row["score"] = expected_rating(r.probs)  # local judge: the expected rating
            row["probs"] = r.probs
        else:
            row["score"] = parse_rating(r.text)
        out.append(row)
    return out


def summarize(rows: list[dict[str, Any]], categories: dict[str, str]) -> dict[str, Any]:
    """rows: {id (question), turn, score}; categories: question id → category. −1 scores are excluded."""
    valid = [r for r in rows if r["score"] is not None and r["score"] != -1]
    res: dict[str, Any] = {"n_judgments": len(rows), "n_valid": len(valid), "n_excluded": len(rows) - len(valid)}

    def mean(xs: list[float]) -> float | None:
        return float(sum(xs) / len(xs)) if xs else None

    res["score"] = mean([r["score"] for r in valid])
    res["per_turn"] = {str(t): mean([r["score"] for r in valid if r["turn"] == t])
                       for t in sorted({r["turn"] for r in rows})}
    cats = []
    for r in rows:
        c = categories.get(str(r["id"]), "")
        if c not in cats:
            cats.append(c)
    res["per_category"] = {c: mean([r["score"] for r in valid if categories.get(str(r["id"]), "") == c]) for c in cats}
    return res
