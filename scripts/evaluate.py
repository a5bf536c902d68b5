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

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.evals import answer_shards, data  # noqa: E402
from ratioloop_py.evals.answering import OFFICIAL_GEN_LIMIT, Answering, gen_limit  # noqa: E402
from ratioloop_py.evals.arena_answers import answer_row as arena_answer_row  # noqa: E402
from ratioloop_py.evals import run_alpaca_eval, run_arena_hard, run_mt_bench  # noqa: E402
from ratioloop_py.evals.outputs import answer_id as _answer_id, maybe_int as _maybe_int  # noqa: E402
from ratioloop_py.evals.outputs import write_json as _write_json  # noqa: E402
from ratioloop_py.evals.judges import ApiJudge, Judge, JudgeCache, LocalJudge  # noqa: E402
from ratioloop_py.evals.sets import load_sets  # noqa: E402
from ratioloop_py.shards import Shard, merge_list, shard_of  # noqa: E402
from ratioloop_py.stage import Stage, run_stage  # noqa: E402

BENCHMARKS = ("arena_hard", "alpaca_eval", "mt_bench")
# The official protocols' judges and baselines: any other judge or data makes a result not leaderboard-comparable.
OFFICIAL_JUDGE = {"arena_hard": "gpt-4-1106-preview", "alpaca_eval": "gpt-4-1106-preview", "mt_bench": "gpt-4"}
OFFICIAL_MAX_TOKENS = {"arena_hard": 4096, "alpaca_eval": 1, "mt_bench": 2048}

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


def _has_model(stage: Stage, name: str) -> bool:
    return (stage.spec.get("inputs") or {}).get(name) is not None or bool((stage.params.get("models") or {}).get(name))


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
        self.answering = Answering(stage, self.p, self.policy_spec, self.baseline_spec,
                                   plan_batch_size=resolve_params(stage.planned_params)["batch_size"])

    def load_sets(self) -> dict[str, Any]:
        return load_sets(self.p, self.data_dir, self.cache_dir, self.baseline_spec is not None)

    def answer(self, sets: dict[str, Any], shard: Shard | None = None,
               shards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return self.answering.answer(sets, shard=shard, shards=shards)


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
        n = answer_shards.write_shard_answers(path, answers, self.answering.answer_plan)
        self.stage.write_manifest(outputs={answer_shards.OUTPUT: path},
                                  metrics={"answers": n, "answer_seconds": round(time.time() - self.t0, 2)},
                                  extra={"evaluate": {"shard": {"index": shard.index, "count": shard.count,
                                                                "batches": list(self.answering.shard_units)},
                                                      "backend_choice": self.answering.backend_choices}})

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
                           "backend_choice": self.answering.backend_choices,  # per model: what auto picked, why
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
