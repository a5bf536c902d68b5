"""The evaluate stage's answers: who answers what (the policy every benchmark; a baseline model where it stands in for
the official baseline/reference answers, unless it is the policy itself), each benchmark's answer limit, and the
answers themselves: generated (a shard: only its range of batches, evals/answer_shards.py) or taken from the shards."""
from __future__ import annotations

import json
import os
import time
from typing import Any

from ..io import atomic_write_text
from ..shards import Shard
from . import answer_shards, mt_bench
from .answers import AnswerModel, answer_all

# Answer length limits of the official generation scripts (arena-hard-auto gen_answer_config max_tokens, FastChat
# gen_model_answer --max-new-token); AlpacaEval has none of its own: each model answers up to its own limit (None).
OFFICIAL_GEN_LIMIT: dict[str, int | None] = {"arena_hard": 4096, "alpaca_eval": None, "mt_bench": 1024}


def gen_limit(p: dict[str, Any], bench: str) -> int | None:
    """Answer limit (new tokens per turn) for a benchmark: the set number, else the official one (None: the
    model's own length limit)."""
    m = p["max_new_tokens"]
    if isinstance(m, dict):
        m = m.get(bench)
    return OFFICIAL_GEN_LIMIT[bench] if m is None else int(m)


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    pa, pb = a.get("path") or a.get("hub"), b.get("path") or b.get("hub")
    same = pa == pb or (a.get("path") and b.get("path") and os.path.realpath(pa) == os.path.realpath(pb))
    return bool(same) and a.get("template", "chat") == b.get("template", "chat")


class Answering:
    """The answers of one evaluate stage (attempt): `answer(sets)` once, then what it planned and picked."""

    def __init__(self, stage, p: dict[str, Any], policy_spec: dict[str, Any], baseline_spec: dict[str, Any] | None,
                 plan_batch_size: int | None = None):
        self.stage = stage
        self.p = p
        # A shard's range is cut from the batches as planned, even when an out-of-memory retry halved its own.
        self.plan_batch_size = int(plan_batch_size or p["batch_size"])
        self.policy_spec = policy_spec
        self.baseline_spec = baseline_spec
        self.partial = stage.partial_dir
        self.t0 = time.time()
        self.answer_plan: list[answer_shards.Job] = []
        self.backend_choices: dict[str, Any] = {}  # per model: what backend auto picked, and why
        self.shard_units: tuple[int, int] = (0, 0)

    def answer_jobs(self, sets: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any], list]], list[str], bool]:
        """What to answer, in order: (who, model spec, [(benchmark, items)]) for the policy on every benchmark, then
        the baseline where it stands in for the official answers; those benchmarks; and whether the baseline is the
        policy itself (then it answers nothing: the policy's answers are its answers)."""
        jobs = []
        if "arena_hard" in sets:
            jobs.append(("arena_hard", [{"id": q["id"], "turns": [q["prompt"]], "temperature": 0.0}
                                        for q in sets["arena_hard"]["questions"]]))
        if "alpaca_eval" in sets:
            jobs.append(("alpaca_eval", [{"id": str(i), "turns": [it["instruction"]], "temperature": 0.0}
                                         for i, it in enumerate(sets["alpaca_eval"]["items"])]))
        if "mt_bench" in sets:
            jobs.append(("mt_bench", [{"id": q["id"], "turns": q["turns"],
                                       "temperature": mt_bench.temperature_of(q["category"])}
                                      for q in sets["mt_bench"]["questions"]]))
        baseline_benches = []
        if self.baseline_spec:
            if "arena_hard" in sets and sets["arena_hard"]["b_ref"] is None:
                baseline_benches.append("arena_hard")
            if "alpaca_eval" in sets and sets["alpaca_eval"]["r_ref"] is None:
                baseline_benches.append("alpaca_eval")
        reuse = self.baseline_spec is not None and same_model(self.policy_spec, self.baseline_spec)
        groups = [("policy", self.policy_spec, jobs)]
        if baseline_benches and not reuse:
            groups.append(("baseline", self.baseline_spec, [j for j in jobs if j[0] in baseline_benches]))
        return groups, baseline_benches, reuse

    def answer(self, sets: dict[str, Any], shard: Shard | None = None,
               shards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Policy answers for every benchmark, then baseline answers where a baseline model stands in for the
        official ones: generated here (a shard: only its range of batches), or (shards) taken from the shards."""
        groups, baseline_benches, reuse = self.answer_jobs(sets)
        self.answer_plan = [(who, bench, items) for who, _, jobs in groups for bench, items in jobs]
        self.backend_choices: dict[str, Any] = {}
        if shards is not None:
            results = answer_shards.merged_answers(shards, self.answer_plan)
            self.backend_choices, seconds = answer_shards.shard_facts(shards)
            self.stage.metric("answer_seconds", round(seconds, 2))
        else:
            subsets = None
            if shard is not None:
                subsets, self.shard_units = answer_shards.shard_questions(self.answer_plan, self.plan_batch_size, shard)
            results = self._generate(groups, subsets)
        for bench in baseline_benches if reuse else []:
            results.setdefault("baseline", {})[bench] = results["policy"][bench]
        return results

    def _generate(self, groups: list[tuple[str, dict[str, Any], list]],
                  subsets: dict[tuple[str, str], list[dict[str, Any]]] | None) -> dict[str, Any]:
        """Answers of each group's model (loaded once, and only when something is left to answer); `subsets`: only
        those questions of each (who, benchmark), as a shard. (A shard's questions are whole batches of the plan, so
        answers.plan_batches cuts them into the very same batches again.)"""
        p = self.p

        def mine(who: str, bench: str, items: list) -> list:
            return items if subsets is None else subsets.get((who, bench), [])

        total = sum(len(mine(who, b, items)) for who, _, jobs in groups for b, items in jobs)
        results: dict[str, Any] = {"policy": {}, "baseline": {}}
        done = 0
        for who, spec, job_list in groups:
            holder: dict[str, AnswerModel] = {}
            current: dict[str, int | None] = {}

            def factory(who=who, spec=spec, job_list=job_list, holder=holder, current=current) -> AnswerModel:
                if "m" not in holder:
                    self.stage.log(f"loading the {who} model for answers")
                    with self.stage.phase(f"loading the {who} model for answers"):  # alive lines (stall watchdog)
                        # work_tokens over the whole job, not a shard's share: every shard picks the same backend
                        holder["m"] = AnswerModel(spec, backend=p["backend"], seed=self.stage.seed,
                                                  max_new_tokens=current["limit"], top_p=p["top_p"],
                                                  work_tokens=sum(len(it["turns"]) * int(gen_limit(p, b) or 2048)
                                                                  for b, its in job_list for it in its))
                    self.backend_choices[who] = holder["m"].choice.manifest()
                    self.stage.log(f"{who} answers backend: {holder['m'].backend} ({holder['m'].choice.reason})")
                holder["m"].max_new_tokens = current["limit"]  # one model, each benchmark's own limit
                return holder["m"]

            for bench, items in job_list:
                if subsets is not None and (who, bench) not in subsets:
                    continue
                current["limit"] = gen_limit(p, bench)
                if "m" in holder:
                    holder["m"].max_new_tokens = current["limit"]
                base = done
                results[who][bench] = answer_all(
                    factory, mine(who, bench, items), self.partial / f"{who}_answers_{bench}.jsonl",
                    batch_size=p["batch_size"], tag=f"{who}:{bench}", tstamp=self._answers_tstamp(),
                    on_progress=lambda d, _t, b=base: self.stage.progress(b + d, total, "answers"))
                done = base + len(mine(who, bench, items))
            if "m" in holder:
                holder["m"].close()
        self.stage.progress(total, total, "answers")
        self.stage.metric("answer_seconds", round(time.time() - self.t0, 2))
        return results

    def _answers_tstamp(self) -> float:
        """When this stage first began answering (the answer rows' tstamp), kept in partial/ for resumed runs."""
        f = self.partial / "answers_tstamp.json"
        if f.exists():
            return float(json.loads(f.read_text())["tstamp"])
        t = time.time()
        atomic_write_text(f, json.dumps({"tstamp": t}) + "\n")
        return t
