"""Sharded answer generation of the evaluate stage (issue 15): which answer batches a shard generates, the file it
writes, and how the judging run (the merge) takes the shards' answers.

Units are the answer batches of every (model, benchmark) job in answering order, planned exactly as an unsharded run
plans them (answers.plan_batches; each batch seeded from its own ids), so a split changes no answer text. A shard
generates a contiguous range of units into its folder's answers.jsonl and judges nothing; the merge is the evaluate
stage itself under the unsharded spec: it answers nothing, judges the shards' answers and writes every output.

Rows get the earliest shard's tstamp (when the stage began answering): an unsharded run gives all its rows one
tstamp, and so does a sharded one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..io import atomic_write_text
from ..shards import Shard, output_lines, shard_manifest
from .answers import plan_batches

# (who: "policy" | "baseline", benchmark, items) in answering order
Job = tuple[str, str, list[dict[str, Any]]]
Results = dict[str, dict[str, dict[str, dict[str, Any]]]]  # who → benchmark → question id → answer row

OUTPUT = "answers"


def shard_questions(jobs: list[Job], batch_size: int, shard: Shard) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], tuple[int, int]]:
    """The shard's questions per (who, benchmark): whole batches of that job's plan, and its range of all units."""
    units = [(who, bench, batch) for who, bench, items in jobs for batch in plan_batches(items, batch_size)]
    lo, hi = shard.range(len(units))
    mine: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for who, bench, batch in units[lo:hi]:
        mine.setdefault((who, bench), []).extend(batch)
    return mine, (lo, hi)


def write_shard_answers(path: Path, results: Results, jobs: list[Job]) -> int:
    """answers.jsonl of a shard: {model, benchmark, ...row} for each question it answered, in answering order."""
    lines = [json.dumps({"model": who, "benchmark": bench, **results[who][bench][it["id"]]}, ensure_ascii=False)
             for who, bench, items in jobs for it in items if it["id"] in results.get(who, {}).get(bench, {})]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def merged_answers(shards: list[dict[str, Any]], jobs: list[Job]) -> Results:
    """Every job's rows from the shards' answers, checked: each question answered by exactly one shard, none missing."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in shards:
        for line in output_lines(s, OUTPUT):
            r = json.loads(line)
            key = (r.pop("model"), r.pop("benchmark"), str(r["id"]))
            if key in rows:
                raise BadInput(f"shard {s['index']}: {key[0]} {key[1]} question {key[2]} was answered by another shard too")
            rows[key] = r
    tstamp = min((float(r["tstamp"]) for r in rows.values() if r.get("tstamp") is not None), default=None)
    results: Results = {}
    wanted = set()
    for who, bench, items in jobs:
        missing = [it["id"] for it in items if (who, bench, it["id"]) not in rows]
        if missing:
            raise BadInput(f"the shards hold no {who} answer to {bench} question(s) {', '.join(missing[:5])}: "
                           "were they made for other questions?")
        wanted.update((who, bench, it["id"]) for it in items)
        results.setdefault(who, {})[bench] = {it["id"]: {**rows[(who, bench, it["id"])], "tstamp": tstamp} for it in items}
    extra = sorted(set(rows) - wanted)
    if extra:
        raise BadInput(f"the shards answered questions this evaluation does not ask: {extra[:3]}")
    return results


def shard_facts(shards: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
    """What each model's backend choice was (the first shard that loaded it) and the longest shard's answer seconds."""
    choices: dict[str, Any] = {}
    seconds = 0.0
    for s in shards:
        m = shard_manifest(s)
        for who, c in ((m.get("evaluate") or {}).get("backend_choice") or {}).items():
            choices.setdefault(who, c)
        seconds = max(seconds, float((m.get("metrics") or {}).get("answer_seconds") or 0.0))
    return dict(sorted(choices.items(), key=lambda kv: kv[0] != "policy")), seconds
