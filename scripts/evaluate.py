"""Evaluate stage: answers ArenaHard / AlpacaEval 2 / MT-Bench questions with the policy, judges them (API or local
judge) and scores them as the official tools do. See docs/evaluation.md.

    python scripts/evaluate.py --spec <outputDir>/spec.json

inputs:  policy (model dir, else params.models.policy), baseline (optional model dir), data (optional eval folder)
outputs: summary (summary.json) + each benchmark's answer and judgment files in its official tool's format.

Shards (params.shard = {index, count}; ratioloop_py/evals/answer_shards.py): a shard generates its range of the answer
batches into answers.jsonl and judges nothing; the merge (RATIOLOOP_MERGE_SHARDS, the unsharded spec) judges the
shards' answers and writes the outputs above, as an unsharded run would.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.evals import alpaca_eval, data, mt_bench  # noqa: E402
from ratioloop_py.evals import answer_shards  # noqa: E402
from ratioloop_py.evals.answers import AnswerModel, answer_all, plan_batches  # noqa: E402
from ratioloop_py.evals.arena_answers import answer_row as arena_answer_row  # noqa: E402
from ratioloop_py.evals.official_prompts import prompt_set  # noqa: E402
from ratioloop_py.evals import run_alpaca_eval, run_arena_hard, run_mt_bench  # noqa: E402
from ratioloop_py.evals.outputs import answer_id as _answer_id, maybe_int as _maybe_int  # noqa: E402
from ratioloop_py.evals.outputs import write_json as _write_json  # noqa: E402
from ratioloop_py.evals.judges import ApiJudge, Judge, JudgeCache, LocalJudge  # noqa: E402
from ratioloop_py.io import atomic_write_text, sha256_file  # noqa: E402
from ratioloop_py.shards import Shard, merge_list, shard_of  # noqa: E402
from ratioloop_py.stage import Stage, run_stage  # noqa: E402

BENCHMARKS = ("arena_hard", "alpaca_eval", "mt_bench")
# The official protocols' judges and baselines: any other judge or data makes a result not leaderboard-comparable.
OFFICIAL_JUDGE = {"arena_hard": "gpt-4-1106-preview", "alpaca_eval": "gpt-4-1106-preview", "mt_bench": "gpt-4"}
OFFICIAL_MAX_TOKENS = {"arena_hard": 4096, "alpaca_eval": 1, "mt_bench": 2048}
# Answer length limits of the official generation scripts (arena-hard-auto gen_answer_config max_tokens, FastChat
# gen_model_answer --max-new-token); AlpacaEval has none of its own: each model answers up to its own limit (None).
OFFICIAL_GEN_LIMIT: dict[str, int | None] = {"arena_hard": 4096, "alpaca_eval": None, "mt_bench": 1024}

DEFAULTS: dict[str, Any] = {
    "benchmarks": list(BENCHMARKS), "limit": None, "max_new_tokens": None, "batch_size": 8, "backend": "auto",
    "top_p": 1.0, "bootstrap_rounds": 100, "bootstrap_seed": 42, "model_name": None, "cache_dir": None,
    "arena_hard": {"questions": None, "baseline_answers": None, "bradley_terry": False, "verdict_parser": "v0.1",
                   "prompts": "ratioloop", "judge": None},
    "alpaca_eval": {"instructions": None, "reference_outputs": None, "instruction_difficulty": None, "gamed": None,
                    "judge_temperature": 1.0, "prompts": "ratioloop", "judge": None},
    "mt_bench": {"questions": None, "reference_answers": None, "prompts": "ratioloop", "judge": None},
    "judge": {"max_tokens": None, "concurrency": 4, "max_retries": 5, "backoff_s": 1.0, "timeout_s": 120.0,
              "cache": True, "cache_path": None, "max_invalid_share": 0.1, "position_debias": "auto",
              "calibrate": False, "max_dominant_share": 0.9, "consistency_check": False},
}


def resolve_params(raw: dict[str, Any]) -> dict[str, Any]:
    p: dict[str, Any] = {}
    for k, v in DEFAULTS.items():
        if isinstance(v, dict):
            sub = raw.get(k) or {}
            if not isinstance(sub, dict):
                raise BadInput(f"params.{k}: expected an object")
            p[k] = {**v, **sub}
        else:
            p[k] = raw.get(k, v) if raw.get(k, v) is not None else v
    benches = p["benchmarks"]
    if isinstance(benches, str):
        benches = [benches]
    for b in benches:
        if b not in BENCHMARKS:
            raise BadInput(f"params.benchmarks: unknown benchmark {b!r} (choose from {', '.join(BENCHMARKS)})")
    p["benchmarks"] = [b for b in BENCHMARKS if b in benches]
    if p["backend"] not in ("auto", "hf", "vllm"):
        raise BadInput("params.backend: must be auto, hf or vllm")
    lim = p["limit"]
    if lim is not None and not isinstance(lim, (int, dict)):
        raise BadInput("params.limit: an integer, null, or {benchmark: integer}")
    if not isinstance(p["batch_size"], int) or p["batch_size"] < 1:
        raise BadInput("params.batch_size: must be a positive integer")
    mnt = p["max_new_tokens"]
    for v in (mnt.values() if isinstance(mnt, dict) else [mnt]):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise BadInput("params.max_new_tokens: a positive integer, null (the official limits), or "
                           "{benchmark: integer}")
    for b in BENCHMARKS:
        pr = p[b]["prompts"]
        if not isinstance(pr, (str, type(None))) or pr == "":
            raise BadInput(f"params.{b}.prompts: ratioloop, official, or a path to the official prompt file")
        if p[b]["judge"] is not None and not isinstance(p[b]["judge"], dict):
            raise BadInput(f"params.{b}.judge: a model spec or {{endpoint: {{base_url, model, api_key_env}}}}")
    if p["arena_hard"]["verdict_parser"] not in ("v0.1", "latest"):
        raise BadInput("params.arena_hard.verdict_parser: v0.1 or latest")
    j = p["judge"]
    for key in ("max_invalid_share", "max_dominant_share"):
        if isinstance(j[key], bool) or not isinstance(j[key], (int, float)) or not 0 <= j[key] <= 1:
            raise BadInput(f"params.judge.{key}: a number in [0, 1]")
    if j["position_debias"] not in ("auto", "on", "off"):
        raise BadInput("params.judge.position_debias: auto, on or off")
    return p


def gen_limit(p: dict[str, Any], bench: str) -> int | None:
    """Answer limit (new tokens per turn) for a benchmark: the set number, else the official one (None: the
    model's own length limit)."""
    m = p["max_new_tokens"]
    if isinstance(m, dict):
        m = m.get(bench)
    return OFFICIAL_GEN_LIMIT[bench] if m is None else int(m)


def limit_of(p: dict[str, Any], bench: str) -> int | None:
    lim = p["limit"]
    if isinstance(lim, dict):
        lim = lim.get(bench)
    return None if lim is None else int(lim)


def _has_model(stage: Stage, name: str) -> bool:
    return (stage.spec.get("inputs") or {}).get(name) is not None or bool((stage.params.get("models") or {}).get(name))


def _same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    pa, pb = a.get("path") or a.get("hub"), b.get("path") or b.get("hub")
    same = pa == pb or (a.get("path") and b.get("path") and os.path.realpath(pa) == os.path.realpath(pb))
    return bool(same) and a.get("template", "chat") == b.get("template", "chat")


def _data_ref(path: Path | None, official: bool) -> dict[str, Any] | None:
    return None if path is None else {"path": str(path), "sha256": sha256_file(path), "official": official}


class Evaluation:
    def __init__(self, stage: Stage):
        self.stage = stage
        self.p = resolve_params(stage.params)
        self.out = stage.output_dir
        self.partial = stage.partial_dir
        self.cache_dir = Path(self.p["cache_dir"]) if self.p["cache_dir"] else data.default_cache_dir()
        ref = (stage.spec.get("inputs") or {}).get("data")
        self.data_dir = Path(ref["path"]) if ref else data.MINI_DIR
        self.policy_spec = stage.model_spec("policy")
        self.baseline_spec = stage.model_spec("baseline") if _has_model(stage, "baseline") else None
        self.model_name = self.p["model_name"] or f"ratioloop-iter{stage.iteration}"
        self.baseline_name = (Path(str(self.baseline_spec.get("path") or self.baseline_spec.get("hub"))).name
                              if self.baseline_spec else None)
        if self.baseline_name == self.model_name:
            self.baseline_name += "-baseline"
        judge_spec = (stage.params.get("models") or {}).get("judge")
        if (stage.spec.get("inputs") or {}).get("judge") is not None or (judge_spec and not judge_spec.get("endpoint")):
            judge_spec = stage.model_spec("judge")
        if not judge_spec:
            raise BadInput("params.models.judge: missing (a local model spec or {endpoint: {base_url, model, api_key_env}})")
        self.judge_spec = judge_spec
        self.outputs: dict[str, Path] = {}
        self.summary: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.too_many_invalid: list[str] = []
        self.first_judge_error: str | None = None
        self.t0 = time.time()
        self.prompt_sets: dict[str, Any] = {}
        self.answer_rows: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ data
    def _default(self, rel: str) -> Path | None:
        p = self.data_dir / rel
        return p if p.exists() else None

    def load_sets(self) -> dict[str, Any]:
        p, sets = self.p, {}
        if "arena_hard" in p["benchmarks"]:
            a = p["arena_hard"]
            qpath, qoff = data.resolve(a["questions"], "arena_hard.questions", self.cache_dir,
                                       self._default("arena_hard/question.jsonl"))
            if qpath is None:
                raise BadInput("params.arena_hard.questions: no question file (none in the data folder either)")
            qs = data.load_arena_questions(qpath)
            full = len(qs)
            if limit_of(p, "arena_hard") is not None:
                qs = qs[:limit_of(p, "arena_hard")]
            bpath, boff = None, False
            if a["baseline_answers"] or not self.baseline_spec:
                bpath, boff = data.resolve(a["baseline_answers"], "arena_hard.baseline_answers", self.cache_dir,
                                           self._default("arena_hard/baseline_answers.jsonl"))
                if bpath is None:
                    raise BadInput("params.arena_hard.baseline_answers: none given and no baseline model "
                                   "(inputs.baseline / params.models.baseline)")
            sets["arena_hard"] = {"questions": qs, "q_ref": _data_ref(qpath, qoff), "b_ref": _data_ref(bpath, boff),
                                  "full": len(qs) == full}
        if "alpaca_eval" in p["benchmarks"]:
            a = p["alpaca_eval"]
            ipath, ioff = data.resolve(a["instructions"], "alpaca_eval.reference_outputs", self.cache_dir,
                                       self._default("alpaca_eval/instructions.json"), param="alpaca_eval.instructions")
            if ipath is None:
                raise BadInput("params.alpaca_eval.instructions: no instruction file (none in the data folder either)")
            items = data.load_alpaca(ipath)
            full = len(items)
            rpath, roff = None, False
            if a["reference_outputs"] or not self.baseline_spec:
                rpath, roff = data.resolve(a["reference_outputs"], "alpaca_eval.reference_outputs", self.cache_dir,
                                           self._default("alpaca_eval/reference_outputs.json"))
                if rpath is None and not all("output" in it for it in items):
                    raise BadInput("params.alpaca_eval.reference_outputs: none given and no baseline model")
            if limit_of(p, "alpaca_eval") is not None:
                items = items[:limit_of(p, "alpaca_eval")]
            diff = gamed = None
            goff = False
            if a["instruction_difficulty"]:
                dpath, _ = data.resolve(a["instruction_difficulty"], "alpaca_eval.instruction_difficulty",
                                        self.cache_dir, None)
                diff = data.load_instruction_difficulty(dpath)[:len(items)]
                if len(diff) != len(items):
                    raise BadInput("params.alpaca_eval.instruction_difficulty: fewer rows than instructions")
            if a["gamed"]:  # df_gamed.csv: the leaderboard's LC GLM (length_controlled_v1) needs it
                gpath, goff = data.resolve(a["gamed"], "alpaca_eval.df_gamed", self.cache_dir, None,
                                        param="alpaca_eval.gamed")
                gamed = data.load_df_gamed(gpath)
                alpaca_eval.difficulty_by_label(gamed, len(items))  # fails now, not after judging
            sets["alpaca_eval"] = {"items": items, "i_ref": _data_ref(ipath, ioff), "r_ref": _data_ref(rpath, roff),
                                   "difficulty": diff, "gamed": gamed, "gamed_official": goff,
                                   "full": full == data.OFFICIAL_ALPACA_INSTRUCTIONS and len(items) == full}
        if "mt_bench" in p["benchmarks"]:
            a = p["mt_bench"]
            qpath, qoff = data.resolve(a["questions"], "mt_bench.questions", self.cache_dir,
                                       self._default("mt_bench/question.jsonl"))
            if qpath is None:
                raise BadInput("params.mt_bench.questions: no question file (none in the data folder either)")
            qs = data.load_mt_questions(qpath)
            full = len(qs)
            # FastChat grades with the GPT-4 reference answers: the official ones go with the official questions.
            ref_value = a["reference_answers"] or ("official" if qoff else None)
            rpath, roff = data.resolve(ref_value, "mt_bench.reference_answers", self.cache_dir,
                                       self._default("mt_bench/reference_answer.jsonl"))
            if rpath:  # a reference file replaces the questions' own short `reference` strings, as in FastChat
                refs = data.load_mt_reference(rpath)
                for q in qs:
                    q.pop("reference", None)
                    if q["id"] in refs:
                        q["reference"] = refs[q["id"]]
            if limit_of(p, "mt_bench") is not None:
                qs = qs[:limit_of(p, "mt_bench")]
            missing = mt_bench.missing_references(qs)
            if missing:
                raise BadInput(f"params.mt_bench.reference_answers: no reference answer for question(s) "
                               f"{', '.join(missing[:5])} (category {next(q['category'] for q in qs if q['id'] == missing[0])}"
                               f"; FastChat grades {', '.join(mt_bench.NEED_REF_CATS)} only against a reference)"
                               + (f" in {rpath}" if rpath else ""))
            sets["mt_bench"] = {"questions": qs, "q_ref": _data_ref(qpath, qoff), "r_ref": _data_ref(rpath, roff),
                                "full": len(qs) == full,
                                "reference_source": "file" if rpath else "question file 'reference' fields"}
        for b in sets:
            sets[b]["prompts"] = prompt_set(b, p[b]["prompts"], self.cache_dir)
        return sets

    # ------------------------------------------------------------------ answers
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
        reuse = self.baseline_spec is not None and _same_model(self.policy_spec, self.baseline_spec)
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
            ranges = None
            if shard is not None:
                ranges, self.shard_units = answer_shards.batch_ranges(self.answer_plan, self.p["batch_size"], shard)
            results = self._generate(groups, ranges)
        for bench in baseline_benches if reuse else []:
            results.setdefault("baseline", {})[bench] = results["policy"][bench]
        return results

    def _generate(self, groups: list[tuple[str, dict[str, Any], list]],
                  ranges: dict[tuple[str, str], tuple[int, int]] | None) -> dict[str, Any]:
        """Answers of each group's model (loaded once, and only when something is left to answer); `ranges`: only
        those batches of each (who, benchmark), as a shard."""
        p = self.p

        def count(who: str, bench: str, items: list) -> int:
            if ranges is None:
                return len(items)
            lo, hi = ranges.get((who, bench), (0, 0))
            return sum(len(b) for b in plan_batches(items, p["batch_size"])[lo:hi])

        total = sum(count(who, b, items) for who, _, jobs in groups for b, items in jobs)
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
                if ranges is not None and (who, bench) not in ranges:
                    continue
                current["limit"] = gen_limit(p, bench)
                if "m" in holder:
                    holder["m"].max_new_tokens = current["limit"]
                base = done
                results[who][bench] = answer_all(
                    factory, items, self.partial / f"{who}_answers_{bench}.jsonl", batch_size=p["batch_size"],
                    tag=f"{who}:{bench}", tstamp=self._answers_tstamp(),
                    batches=None if ranges is None else ranges[(who, bench)],
                    on_progress=lambda d, _t, b=base: self.stage.progress(b + d, total, "answers"))
                done = base + count(who, bench, items)
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

    # ------------------------------------------------------------------ judge
    def make_judge(self, spec: dict[str, Any] | None = None) -> Judge:
        """The stage's judge, or (spec) a benchmark's own `<bench>.judge`; all share one verdict cache (its keys
        hold the judge's identity)."""
        j = self.p["judge"]
        if getattr(self, "_judge_cache", None) is None:
            shared = None
            if j["cache"]:
                shared_path = Path(j["cache_path"]) if j["cache_path"] else self.cache_dir / "judge_cache.jsonl"
                shared = JudgeCache(shared_path)
            self._judge_cache = JudgeCache(self.partial / "judge_cache.jsonl", shared=shared)
        cache = self._judge_cache
        spec = spec or self.judge_spec
        if spec.get("endpoint"):
            return ApiJudge(spec["endpoint"], concurrency=j["concurrency"], max_retries=j["max_retries"],
                            backoff_s=j["backoff_s"], timeout_s=j["timeout_s"], cache=cache)
        self.stage.log("loading the local judge")
        with self.stage.phase("loading the local judge"):  # alive lines while it loads (stall watchdog)
            return LocalJudge(spec, cache=cache)

    def _comparable(self, bench: str, judge: Judge, official_data: bool, extra: list[str]) -> dict[str, Any]:
        """Whether the official judge, prompts, data and limits were used (then the number may be set beside the
        leaderboard's), with every reason it may not; also the benchmark's answer limit and truncation count."""
        reasons = list(extra)
        if judge.identity.get("type") != "api" or judge.name != OFFICIAL_JUDGE[bench]:
            reasons.append(f"judge is {judge.name}, the leaderboard's is {OFFICIAL_JUDGE[bench]}")
        if not official_data:
            reasons.append("questions or baseline/reference answers are not the official, complete set")
        ps = self.prompt_sets.get(bench)
        if ps is None or ps.kind == "ratioloop":
            reasons.append(f"judge prompts are ratioloop's own wording of the official structure "
                           f"({bench}.prompts: ratioloop)")
        elif ps.kind != "official":
            reasons.append(f"judge prompts from {ps.source['path']} are not the pinned official file")
        if bench == "arena_hard" and ps is not None and ps.kind != "ratioloop":
            if ps.continue_text is None:
                reasons.append("no gen_judgment.py beside the judge config: no second judgment attempt")
            elif not (ps.source or {}).get("judge_code", {}).get("official"):
                reasons.append("the second-attempt text is not from the pinned gen_judgment.py")
        if bench != "alpaca_eval" and self.max_tokens(bench) != OFFICIAL_MAX_TOKENS[bench]:
            reasons.append(f"judge max_tokens {self.max_tokens(bench)} (official: {OFFICIAL_MAX_TOKENS[bench]})")
        limit, official_limit = gen_limit(self.p, bench), OFFICIAL_GEN_LIMIT[bench]
        if limit is not None and (official_limit is None or limit < official_limit):
            reasons.append(f"answers limited to {limit} new tokens per turn (official: "
                           + (f"{official_limit})" if official_limit else "the model's own limit)"))
        rows = self.answer_rows.get(bench, {})
        n_trunc = sum(1 for r in rows.values() for f in r.get("finish_reasons", []) if f == "length")
        return {"leaderboard_comparable": not reasons, "not_comparable_because": reasons,
                "max_new_tokens": limit, "n_truncated": n_trunc,
                "n_answer_turns": sum(len(r.get("finish_reasons", [])) for r in rows.values()),
                "judge_prompts": {"kind": ps.kind if ps else "ratioloop", "source": ps.source if ps else None}}

    def max_tokens(self, bench: str) -> int:
        m = self.p["judge"]["max_tokens"]
        if isinstance(m, dict):
            m = m.get(bench)
        return int(m) if m else OFFICIAL_MAX_TOKENS[bench]

    def debias(self, judge: Judge) -> bool:
        """Combine both orders (changes verdicts): local judges by default, API judges only when asked."""
        mode = self.p["judge"]["position_debias"]
        return mode == "on" or (mode == "auto" and judge.identity.get("type") == "local")

    def _judge_health(self, bench: str, judge: Judge, errors_before: int, n_invalid: int, n_total: int,
                      stats: dict[str, Any]) -> dict[str, Any]:
        """Invalid-judgment counts and informativeness for one benchmark's summary; notes a share above the limit."""
        share = n_invalid / n_total if n_total else 0.0
        self.first_judge_error = self.first_judge_error or judge.first_error
        limit = float(self.p["judge"]["max_invalid_share"])
        if share > limit:
            self.too_many_invalid.append(f"{bench}: {n_invalid} of {n_total} judgments invalid "
                                         f"({100 * share:.1f}% > judge.max_invalid_share {100 * limit:g}%)")
        self.metrics[f"{bench}.judge_informative"] = int(bool(stats["judge_informative"]))
        if stats.get("position_consistency") is not None:
            self.metrics[f"{bench}.position_consistency"] = stats["position_consistency"]
        return {"n_judge_errors": judge.n_errors - errors_before, "invalid_share": share,
                "judge_informative": stats["judge_informative"], "judge_stats": stats}

    def _inf(self) -> dict[str, Any]:
        return {"max_dominant_share": float(self.p["judge"]["max_dominant_share"])}

    def run_arena(self, judge: Judge, s: dict[str, Any], ans: dict[str, Any]) -> None:
        run_arena_hard.run(self, judge, s, ans)

    def run_alpaca(self, judge: Judge, s: dict[str, Any], ans: dict[str, Any]) -> None:
        run_alpaca_eval.run(self, judge, s, ans)

    _alpaca_lc = staticmethod(run_alpaca_eval.lc_result)

    def run_mt(self, judge: Judge, s: dict[str, Any], ans: dict[str, Any]) -> None:
        run_mt_bench.run(self, judge, s, ans)

    def _arena_answer(self, qid: str, row: dict[str, Any], model: str) -> dict:
        """A v0.1 answer row (evals/arena_answers.py) from a cached answer row."""
        text = row["turns"][0]
        lens = row.get("token_lens") or row.get("n_tokens")
        return arena_answer_row(_maybe_int(qid), _answer_id(model, qid, text), model, text,
                                lens[0] if lens else None, row.get("tstamp"))

    def _fastchat_answer(self, qid: str, turns: list[str], model: str, n_tokens: list[int] | None = None) -> dict:
        choice: dict[str, Any] = {"index": 0, "turns": turns}
        row = {"question_id": _maybe_int(qid), "answer_id": _answer_id(model, qid, *turns), "model_id": model,
               "choices": [choice]}
        if n_tokens is not None:
            row["conv_metadata"] = {"token_len": int(sum(n_tokens))}
        return row

    def run_shard(self, shard: Shard) -> None:
        """A shard of a sharded evaluate stage: its range of answer batches into answers.jsonl, no judging."""
        answers = self.answer(self.load_sets(), shard=shard)
        path = self.out / f"{answer_shards.OUTPUT}.jsonl"
        n = answer_shards.write_shard_answers(path, answers, self.answer_plan)
        self.stage.write_manifest(outputs={answer_shards.OUTPUT: path},
                                  metrics={"answers": n, "answer_seconds": round(time.time() - self.t0, 2)},
                                  extra={"evaluate": {"shard": {"index": shard.index, "count": shard.count,
                                                                "batches": list(self.shard_units)},
                                                      "backend_choice": self.backend_choices}})

    def run(self) -> None:
        shard, shards = shard_of(self.stage.params), merge_list()
        if shard is not None:
            return self.run_shard(shard)
        sets = self.load_sets()
        answers = self.answer(sets, shards=shards)
        self.prompt_sets = {b: s["prompts"] for b, s in sets.items()}
        self.answer_rows = answers["policy"]
        # <bench>.judge overrides the stage's judge for one benchmark (FastChat's MT-Bench judge is gpt-4)
        judges = {b: self.make_judge(self.p[b]["judge"]) for b in sets if self.p[b]["judge"]}
        judge = self.make_judge() if len(judges) < len(sets) else next(iter(judges.values()))
        for b in sets:
            judges.setdefault(b, judge)
        t_judge = time.time()
        try:
            if "arena_hard" in sets:
                self.run_arena(judges["arena_hard"], sets["arena_hard"], answers)
            if "alpaca_eval" in sets:
                self.run_alpaca(judges["alpaca_eval"], sets["alpaca_eval"], answers)
            if "mt_bench" in sets:
                self.run_mt(judges["mt_bench"], sets["mt_bench"], answers)
        finally:
            self._judge_cache.close()
        for b in sets:
            self.summary[b]["judge"] = judges[b].identity
        self.stage.metric("judge_seconds", round(time.time() - t_judge, 2))
        summary = {
            "model": self.model_name,
            "policy": {k: self.policy_spec.get(k) for k in ("path", "hub", "template") if self.policy_spec.get(k)},
            "baseline_model": self.baseline_name,
            "judge": judge.identity,
            "generation": {"max_new_tokens": {b: gen_limit(self.p, b) for b in sets}, "backend": self.p["backend"],
                           "backend_choice": getattr(self, "backend_choices", {}),  # per model: what auto picked, why
                           "seed": self.stage.seed,
                           # token_len in the ArenaHard answer files (the official files count with tiktoken)
                           "token_len_tokenizer": str(self.policy_spec.get("tokenizer") or self.policy_spec.get("path")
                                                      or self.policy_spec.get("hub"))},
            "benchmarks": self.summary,
            "leaderboard_comparable": all(b["leaderboard_comparable"] for b in self.summary.values()),
            "judge_informative": all(b["judge_informative"] for b in self.summary.values()),
            "judge_errors": sum(b.get("n_judge_errors", 0) for b in self.summary.values()),
            "first_judge_error": self.first_judge_error,
        }
        _write_json(self.out / "summary.json", summary)
        if self.too_many_invalid:
            # Not cached, so a retry asks only the failed judgments again.
            raise RuntimeError("too many invalid judgments: " + "; ".join(self.too_many_invalid)
                               + (f" (first judge error: {self.first_judge_error})" if self.first_judge_error else ""))
        self.outputs = {"summary": self.out / "summary.json", **self.outputs}
        for k, v in self.metrics.items():
            if v is not None:
                self.stage.metric(k, v)
        self.stage.write_manifest(outputs=self.outputs, metrics=self.metrics)


def main(stage: Stage) -> None:
    from ratioloop_py.models import setup_threads

    setup_threads()
    Evaluation(stage).run()


if __name__ == "__main__":
    run_stage(main)
