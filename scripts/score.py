"""Score stage: the guided density-ratio reward of every (prompt, response) in the samples.

reward = Σ over the response tokens of log p_strong − log p_weak (arXiv 2411.02481), where the response tokens
run from after the rendered generation prompt up to and including the end-of-turn token. Prompts are routed to
CHAT / SAFETY / REASONING; guided domains put their guidance into both models' context.

Routing and guidance: docs/guidance.md (params.router.kind/prompt, params.guidance.source/system_policy, cdr_repo).
inputs:  samples (samples.jsonl), guidance (folder, default configs/guidance), optional strong/weak/router
         (model dirs overriding params.models.*), optional routes (an earlier routes.jsonl to reuse labels).
outputs: scores (scores.jsonl, one row per sample row, same order), routes (routes.jsonl).
Resumable: finished groups of prompts are appended to outputDir/partial/ per rank; a retry skips them.
Shards (params.shard = {index, count}, ratioloop_py/shards.py): a shard forms the whole stage's groups as an
unsharded run does and scores (and routes) a contiguous range of them into its own folder; the merge mode
(RATIOLOOP_MERGE_SHARDS) puts the shards' rows back in samples order, byte for byte what an unsharded run writes.
Local-router batches are cut from the same groups, so labels do not depend on the split either.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.guidance import LABELS, apply_guidance, exemplar_chars, load_guidance  # noqa: E402
from ratioloop_py.io import (JsonlAppender, atomic_write_json, atomic_write_jsonl, atomic_write_text,  # noqa: E402
                             read_jsonl, read_partial_jsonl)
from ratioloop_py.launch import run_data_parallel, under_launcher  # noqa: E402
from ratioloop_py.router import EndpointRouter, LocalRouter, normalize_label, router_prompt  # noqa: E402
from ratioloop_py.shards import merge_list, output_lines, shard_manifest, shard_of  # noqa: E402
from ratioloop_py.stage import Stage, run_stage, world  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GUIDANCE = ROOT / "configs" / "guidance"

DEFAULTS: dict[str, Any] = {
    "reward": "sum",
    "max_prompt_tokens": 2048,
    "max_response_tokens": 2048,
    "batch_size": 8,
    "max_batch_tokens": 8192,
    "prefix_cache_tokens": 16384,
    "num_processes": 1,
    "backend": "auto",
    "router": {"kind": "llm", "label": "CHAT", "max_new_tokens": 16, "prompt": "ratioloop"},
    "guidance": {"enabled": True, "source": "ratioloop", "system_policy": None},
    "cdr_repo": None,  # a local clone of the CDR reference repository; None = the pinned download
}


def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """The score section with defaults applied and checked (the TS schema mirrors these keys)."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    p["router"] = {**DEFAULTS["router"], **(params.get("router") or {})}
    p["guidance"] = {**DEFAULTS["guidance"], **(params.get("guidance") or {})}
    if p["reward"] not in ("sum", "mean"):
        raise BadInput(f"params.reward must be 'sum' or 'mean', got {p['reward']!r}")
    for key in ("max_prompt_tokens", "max_response_tokens", "batch_size", "max_batch_tokens", "num_processes"):
        if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 1:
            raise BadInput(f"params.{key} must be a positive integer, got {p[key]!r}")
    pc = p["prefix_cache_tokens"]
    if not isinstance(pc, int) or isinstance(pc, bool) or pc < 0:
        raise BadInput(f"params.prefix_cache_tokens must be a non-negative integer (0 = off), got {pc!r}")
    if p["backend"] not in ("auto", "hf", "vllm"):
        raise BadInput(f"params.backend must be auto, hf or vllm, got {p['backend']!r}")
    kind = p["router"]["kind"]
    if kind not in ("llm", "label", "field", "fixed"):
        raise BadInput(f"params.router.kind must be llm, label, field or fixed, got {kind!r}")
    if p["router"]["prompt"] not in ("ratioloop", "cdr"):
        raise BadInput(f"params.router.prompt must be ratioloop or cdr, got {p['router']['prompt']!r}")
    if p["guidance"]["source"] not in ("ratioloop", "cdr"):
        raise BadInput(f"params.guidance.source must be ratioloop or cdr, got {p['guidance']['source']!r}")
    if p["guidance"]["system_policy"] not in (None, "keep", "replace"):
        raise BadInput(f"params.guidance.system_policy must be keep, replace or null, "
                       f"got {p['guidance']['system_policy']!r}")
    if p["cdr_repo"] is not None and not Path(str(p["cdr_repo"])).is_dir():
        raise BadInput(f"params.cdr_repo: {p['cdr_repo']} is not a folder (a clone of the CDR reference repository)")
    if kind == "fixed":
        lab = normalize_label(p["router"].get("label"))
        if lab is None:
            raise BadInput(f"params.router.label must be one of {', '.join(LABELS)}")
        p["router"]["label"] = lab
    return p


def read_samples(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, row in read_jsonl(path):
        where = f"{path}:{lineno}"
        pid = row.get("prompt_id")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise BadInput(f"{where}: prompt_id missing or not a string")
        pid = str(pid)
        if pid in seen:
            raise BadInput(f"{where}: duplicate prompt_id {pid!r} (first at line {seen[pid]})")
        seen[pid] = lineno
        msgs = row.get("messages")
        if (not isinstance(msgs, list) or not msgs
                or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                           for m in msgs)):
            raise BadInput(f"{where}: messages must be a non-empty list of {{role, content}} strings")
        resps = row.get("responses")
        if not isinstance(resps, list) or not all(isinstance(r, dict) and isinstance(r.get("text"), str) for r in resps):
            raise BadInput(f"{where}: responses must be a list of objects with a string 'text'")
        rows.append({"prompt_id": pid, "messages": msgs, "domain": row.get("domain"),
                     "texts": [r["text"] for r in resps]})
    return rows


def shard_name(rank: int, world_size: int) -> str:
    return f"rank{rank}-of{world_size}"


def make_groups(indices: list[int], rows: list[dict[str, Any]], batch_size: int) -> list[list[int]]:
    """Consecutive prompts in length order, about batch_size distinct responses per group.

    Groups depend only on the input, never on what a previous try finished, so a resumed run batches (and
    therefore rounds) exactly like an uninterrupted one."""
    def size(i: int) -> int:
        r = rows[i]
        return sum(len(m["content"]) for m in r["messages"]) + max((len(t) for t in r["texts"]), default=0)

    order = sorted(indices, key=lambda i: (-size(i), i))
    groups: list[list[int]] = []
    cur: list[int] = []
    n = 0
    for i in order:
        cur.append(i)
        n += len(set(rows[i]["texts"]))
        if n >= batch_size:
            groups.append(cur)
            cur, n = [], 0
    if cur:
        groups.append(cur)
    return groups


class Routing:
    """Labels per prompt: from a cache (earlier routes file / partial), else the configured router."""

    def __init__(self, stage: Stage, p: dict[str, Any], partial: Path, get_models):
        self.kind = p["router"]["kind"]
        self.p = p
        self.stage = stage
        self.partial = partial
        self.get_models = get_models
        self.routes: dict[str, dict[str, Any]] = {}
        self.groups: list[list[int]] = []
        self.prompt_record: dict[str, Any] | None = None
        self._prompt: Any = None
        prev = stage.input_path("routes", required=False)
        if prev is not None:
            for _, r in read_jsonl(prev):
                lab = normalize_label(r.get("label"))
                if lab and r.get("prompt_id") is not None:
                    self.routes[str(r["prompt_id"])] = {"prompt_id": str(r["prompt_id"]), "label": lab, "how": "cache"}
        for f in sorted(partial.glob("routes.*.jsonl")):
            for r in read_partial_jsonl(f):
                self.routes[r["prompt_id"]] = r

    def route_all(self, rows: list[dict[str, Any]], indices: list[int], rank: int, world_size: int,
                  groups: list[list[int]] | None = None) -> None:
        """Route the prompts `indices` not routed yet; a local router's batches are cut from `groups` (the scoring
        groups), so a prompt is routed in the same batch however the stage is split into shards or ranks."""
        self.groups = groups or [indices]
        todo = [i for i in indices if rows[i]["prompt_id"] not in self.routes]
        if not todo:
            return
        with JsonlAppender(self.partial / f"routes.{shard_name(rank, world_size)}.jsonl") as out:
            if self.kind == "fixed":
                new = [{"prompt_id": rows[i]["prompt_id"], "label": self.p["router"]["label"], "how": "fixed"}
                       for i in todo]
                out.write_batch(new)
            elif self.kind == "field":
                new = []
                for i in todo:
                    lab = normalize_label(rows[i]["domain"])
                    new.append({"prompt_id": rows[i]["prompt_id"], "label": lab or "CHAT",
                                "how": "field" if lab else "field-missing"})
                out.write_batch(new)
            elif self.kind == "label":
                # The prompt's own domain label where it has one; the configured router for the others.
                new = [{"prompt_id": rows[i]["prompt_id"], "label": normalize_label(rows[i]["domain"]), "how": "label"}
                       for i in todo if normalize_label(rows[i]["domain"])]
                out.write_batch(new)
                rest = [i for i in todo if not normalize_label(rows[i]["domain"])]
                if rest:
                    new = new + self._route_llm(rows, rest, out)
            else:
                new = self._route_llm(rows, todo, out)
        for r in new:
            self.routes[r["prompt_id"]] = r

    def prompt(self):
        """The router's prompt, loaded once (the cdr prompt is read from the reference repository)."""
        if self._prompt is None:
            self._prompt, self.prompt_record = router_prompt(self.p["router"]["prompt"], self.p.get("cdr_repo"))
        return self._prompt

    def _route_llm(self, rows, todo, out) -> list[dict[str, Any]]:
        spec = (self.p.get("models") or {}).get("router") or {}
        new: list[dict[str, Any]] = []
        prompt = self.prompt()
        if spec.get("endpoint"):
            router = EndpointRouter(spec["endpoint"], max_new_tokens=int(self.p["router"].get("max_new_tokens") or 16),
                                    prompt=prompt)
            for k, i in enumerate(todo):
                label, how = router.route(rows[i]["messages"])
                r = {"prompt_id": rows[i]["prompt_id"], "label": label, "how": how}
                out.write_batch([r])
                new.append(r)
                self.stage.progress(k + 1, len(todo), "routed")
            return new
        local = LocalRouter(self.get_models()["router"], batch_size=self.p["batch_size"],
                            max_prompt_tokens=self.p["max_prompt_tokens"], prompt=prompt)
        step = max(1, self.p["batch_size"])
        wanted = set(todo)
        chunks = [c[a: a + step] for g in self.groups for c in [[i for i in g if i in wanted]] for a in range(0, len(c), step)]
        n_done = 0
        for chunk in chunks:
            batch = []
            for i, (label, how, lps) in zip(chunk, local.route_many([rows[i]["messages"] for i in chunk])):
                if not all(math.isfinite(v) for v in lps.values()):
                    label, how = "CHAT", "llm-nonfinite"
                batch.append({"prompt_id": rows[i]["prompt_id"], "label": label, "how": how})
            out.write_batch(batch)
            new.extend(batch)
            n_done += len(chunk)
            self.stage.progress(n_done, len(todo), "routed")
        return new


def finite(x: float) -> bool:
    return x is not None and math.isfinite(x)


def build_row(pid: str, label: str, gid: str | None, texts: list[str], strong: dict[str, Any],
              weak: dict[str, Any], reward_kind: str) -> dict[str, Any]:
    """One scores row. strong/weak map text → (sum, n_tokens, prompt_truncated, response_truncated)."""
    rewards, mean_rewards, s_lp, w_lp, n_tok, w_n, errors = [], [], [], [], [], [], []
    for k, t in enumerate(texts):
        s_sum, s_n = strong[t][0], strong[t][1]
        w_sum, w_n_k = weak[t][0], weak[t][1]
        n_tok.append(s_n)
        w_n.append(w_n_k)
        s_lp.append(s_sum if finite(s_sum) else None)
        w_lp.append(w_sum if finite(w_sum) else None)
        if finite(s_sum) and finite(w_sum) and s_n > 0 and w_n_k > 0:
            total = s_sum - w_sum
            mean = s_sum / s_n - w_sum / w_n_k
            rewards.append(total if reward_kind == "sum" else mean)
            mean_rewards.append(mean)
        else:
            bad = [f"{name} log-prob is {v}" for name, v in (("strong", s_sum), ("weak", w_sum)) if not finite(v)]
            errors.append({"index": k, "error": "; ".join(bad) or "no response tokens"})
            rewards.append(None)
            mean_rewards.append(None)
    row: dict[str, Any] = {"prompt_id": pid, "domain": label, "guidance_id": gid, "rewards": rewards,
                           "strong_logp": s_lp, "weak_logp": w_lp, "n_tokens": n_tok, "mean_rewards": mean_rewards}
    if w_n != n_tok:
        row["weak_n_tokens"] = w_n  # per-model tokenizers: token counts differ between the two models
    if errors:
        row["errors"] = errors
    return row


def merge_shards(stage: Stage, p: dict[str, Any], rows: list[dict[str, Any]], shards: list[dict[str, Any]]) -> None:
    """The stage's scores.jsonl, routes.jsonl and manifest from its shards' rows, in samples order."""
    lines: dict[str, dict[str, str]] = {"scores": {}, "routes": {}}
    for s in shards:
        for name, by_id in lines.items():
            for line in output_lines(s, name):
                pid = str(json.loads(line)["prompt_id"])
                if pid in by_id:
                    raise BadInput(f"prompt {pid!r} is in more than one shard's {name}")
                by_id[pid] = line
    missing = [r["prompt_id"] for r in rows if r["prompt_id"] not in lines["scores"] or r["prompt_id"] not in lines["routes"]]
    if missing or len(lines["scores"]) != len(rows):
        raise BadInput(f"the shards do not cover the samples exactly ({len(missing)} missing, e.g. {missing[:1]}; "
                       f"{len(lines['scores'])} scored of {len(rows)})")
    for name, by_id in lines.items():
        atomic_write_text(stage.output_dir / f"{name}.jsonl", "".join(by_id[r["prompt_id"]] + "\n" for r in rows))
    ms = [shard_manifest(s) for s in shards]
    metrics = compute_metrics([json.loads(lines["scores"][r["prompt_id"]]) for r in rows], p,
                              [json.loads(lines["routes"][r["prompt_id"]]) for r in rows])
    # Truncation is known per scored row only inside a shard (not kept in scores.jsonl): the shards' counts add up.
    for k in ("truncated_prompts", "truncated_responses"):
        metrics[k] = sum(int(m["metrics"].get(k, 0)) for m in ms)
    for m in ms:
        for k, v in m["metrics"].items():
            if k.startswith("scorer."):
                metrics[k] = metrics.get(k, 0) + int(v)
    tokens = sum(int(m["shard"].get("scored_tokens", 0)) for m in ms)
    seconds = max(float(m["shard"].get("seconds", 0.0)) for m in ms)
    if tokens and seconds > 0:
        metrics["tokens_per_s"] = tokens / seconds
    first = ms[0]
    stage.write_manifest(outputs={"scores": "scores.jsonl", "routes": "routes.jsonl"}, metrics=metrics,
                         extra={**{k: first.get(k) for k in ("reward", "bos", "guidance", "backend_choice", "router")},
                                "shards": len(shards)})


def main(stage: Stage) -> None:
    from ratioloop_py.models import setup_threads

    setup_threads()
    p = resolve_params(stage.params)
    rows = read_samples(stage.input_path("samples"))
    shards = merge_list()
    if shards is not None:
        merge_shards(stage, p, rows, shards)
        return
    shard = shard_of(stage.params)
    guidance_dir = stage.input_path("guidance", required=False) or DEFAULT_GUIDANCE
    library, guidance_record = load_guidance(p["guidance"]["source"], guidance_dir, p["cdr_repo"])
    if p["num_processes"] > 1 and not under_launcher():
        # Inputs are checked above, once, before any rank starts; the ranks re-read them.
        run_data_parallel(stage, Path(__file__).resolve(), p["num_processes"])
        return
    rank, world_size = world()
    partial = stage.partial_dir
    selected = list(range(len(rows)))
    shard_groups = (0, 0)
    if shard is not None:
        # The unsharded run's groups, a contiguous range of them: every group scored as without shards. Cut at the
        # planned batch size, so a shard whose batch an out-of-memory retry halved still takes its own prompts.
        every = make_groups(selected, rows, resolve_params(stage.planned_params)["batch_size"])
        shard_groups = shard.range(len(every))
        selected = sorted(i for g in every[shard_groups[0]:shard_groups[1]] for i in g)
    mine = [i for k, i in enumerate(selected) if k % world_size == rank]
    groups = make_groups(mine, rows, p["batch_size"])

    done: dict[str, dict[str, Any]] = {}
    for f in sorted(partial.glob("scores.*.jsonl")):
        for r in read_partial_jsonl(f):
            done.setdefault(r["prompt_id"], r)

    models: dict[str, Any] = {}

    def get_models():
        if not models:
            with stage.phase("loading the scoring models"):  # alive lines while they load (stall watchdog)
                models.update(load_models(stage, p, rank))
        return models

    routing = Routing(stage, p, partial, get_models)
    if p["router"]["kind"] in ("llm", "label"):
        routing.prompt()  # a missing or unreadable reference file fails here, before any model loads
    routing.route_all(rows, mine, rank, world_size, groups)

    todo_groups = [g for g in groups if any(rows[i]["prompt_id"] not in done for i in g)]
    total = sum(len(rows[i]["texts"]) for i in mine)
    finished = sum(len(rows[i]["texts"]) for i in mine if rows[i]["prompt_id"] in done)
    t0 = time.perf_counter()
    scored_tokens = 0
    scorers: dict[str, Any] = {}
    if todo_groups:
        m = get_models()
        scorers = make_scorers(m, p)
        stage.progress(finished, total, "responses")
        with JsonlAppender(partial / f"scores.{shard_name(rank, world_size)}.jsonl") as out:
            for g in todo_groups:
                g = [i for i in g if rows[i]["prompt_id"] not in done]
                out_rows = score_group(rows, g, routing.routes, library, p, stage.seed, scorers)
                out.write_batch(out_rows)
                for r in out_rows:
                    done[r["prompt_id"]] = r
                    scored_tokens += sum(r["n_tokens"]) + sum(r.get("weak_n_tokens", r["n_tokens"]))
                finished += sum(len(rows[i]["texts"]) for i in g)
                stage.progress(finished, total, "responses")
    elapsed = time.perf_counter() - t0

    # The done marker carries this rank's work counters (this attempt's), summed into rank 0's metrics.
    atomic_write_json(partial / f"done.{shard_name(rank, world_size)}",
                      {name: scorer_counters(sc) for name, sc in scorers.items()})
    if rank != 0:
        return
    wait_for_ranks(partial, world_size)
    for f in sorted(partial.glob("scores.*.jsonl")):
        for r in read_partial_jsonl(f):
            done.setdefault(r["prompt_id"], r)
    for f in sorted(partial.glob("routes.*.jsonl")):
        for r in read_partial_jsonl(f):
            routing.routes.setdefault(r["prompt_id"], r)
    ours = [rows[i] for i in selected]  # every row, or this shard's
    missing = [r["prompt_id"] for r in ours if r["prompt_id"] not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} prompts have no scores after all ranks finished (e.g. {missing[0]})")
    final = [{k: v for k, v in done[r["prompt_id"]].items() if not k.startswith("_")} for r in ours]
    atomic_write_jsonl(stage.output_dir / "scores.jsonl", final)
    routes = [{"prompt_id": r["prompt_id"], "label": routing.routes[r["prompt_id"]]["label"],
               "how": routing.routes[r["prompt_id"]]["how"]} for r in ours]
    atomic_write_jsonl(stage.output_dir / "routes.jsonl", routes)

    metrics = compute_metrics([done[r["prompt_id"]] for r in ours], p, routes)
    metrics.update(sum_counters(partial, world_size))
    if elapsed > 0 and scored_tokens:
        metrics["tokens_per_s"] = scored_tokens / elapsed
    for k, v in metrics.items():
        if isinstance(v, (int, float)):
            stage.metric(k, v)
    n_err = metrics.get("errors", 0)
    if n_err:
        stage.log(f"{n_err} responses had non-finite log-probs; their reward is null", level="warn")
    bos = bos_record(stage, rows[0]["messages"]) if rows else {}
    stage.write_manifest(outputs={"scores": "scores.jsonl", "routes": "routes.jsonl"}, metrics=metrics,
                         extra={"reward": p["reward"], "bos": bos, "guidance": guidance_record,
                                "backend_choice": p.get("_backend_choice"),
                                "router": {"kind": p["router"]["kind"], **(routing.prompt_record or {})},
                                **({"shard": {"index": shard.index, "count": shard.count, "groups": list(shard_groups),
                                              "prompts": len(ours), "scored_tokens": scored_tokens, "seconds": elapsed}}
                                   if shard is not None else {})})


COUNTERS = ("forward_tokens", "logit_rows", "prefix_hits", "prefix_tokens_saved", "fallback_window", "fallback_cache")


def bos_record(stage: Stage, messages: list[dict[str, str]]) -> dict[str, Any]:
    """Each model's first context tokens (the one BOS rule applied); warns when strong and weak disagree."""
    from ratioloop_py.models import load_tokenizer
    from ratioloop_py.scoring import bos_disagreement, context_head

    heads = {}
    for name in ("strong", "weak"):
        spec = stage.model_spec(name)
        heads[name] = context_head(load_tokenizer(spec), str(spec.get("template", "chat")), messages)
    problem = bos_disagreement(heads)
    if problem:
        stage.log(problem, level="warn")
    return {**heads, "agree": problem is None}


def scorer_counters(sc: Any) -> dict[str, int]:
    st = getattr(sc, "stats", None)
    return {k: int(getattr(st, k, 0)) for k in COUNTERS}


def sum_counters(partial: Path, world_size: int) -> dict[str, int]:
    """scorer.<model>.<counter> summed over ranks: how much work the scorers really did (this attempt)."""
    out: dict[str, int] = {}
    for r in range(world_size):
        try:
            data = json.loads((partial / f"done.{shard_name(r, world_size)}").read_text())
        except (OSError, ValueError):
            continue  # a marker from an older version ("ok") has no counters
        for model, counters in (data.items() if isinstance(data, dict) else ()):
            for k, v in counters.items():
                key = f"scorer.{model}.{k}"
                out[key] = out.get(key, 0) + int(v)
    return out


def wait_for_ranks(partial: Path, world_size: int, poll_s: float = 2.0) -> None:
    while not all((partial / f"done.{shard_name(r, world_size)}").exists() for r in range(world_size)):
        time.sleep(poll_s)


def load_models(stage: Stage, p: dict[str, Any], rank: int) -> dict[str, Any]:
    from ratioloop_py.scoring import load_scoring_models

    specs = {"strong": stage.model_spec("strong"), "weak": stage.model_spec("weak")}
    rspec = (p.get("models") or {}).get("router") or (stage.spec.get("inputs") or {}).get("router")
    if p["router"]["kind"] in ("llm", "label") and not (rspec or {}).get("endpoint"):
        # No router model configured: the strong model (an instruct model) classifies.
        specs["router"] = stage.model_spec("router") if rspec else specs["strong"]
    choice = pick_backend(p["backend"], specs["strong"])
    p["_backend_choice"] = choice.manifest()
    if choice.backend == "vllm":
        from ratioloop_py.vllm_engine import load_scoring_engines

        # Each data-parallel rank runs its own engines on its own GPU (vllm_engine.rank_env).
        return load_scoring_engines(specs, max_model_len=p["max_prompt_tokens"] + p["max_response_tokens"],
                                    world_size=world()[1])
    _select_cuda_device(rank)
    return load_scoring_models(specs)


def _select_cuda_device(rank: int) -> None:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    except Exception:
        pass


def pick_backend(name: str, strong_spec: dict[str, Any]):
    """hf or vllm for scoring, by what is installed and faster on the strong model's device (vllm_engine)."""
    from ratioloop_py.vllm_engine import choose_backend, device_of

    return choose_backend(name, "score", device_of(strong_spec))


def make_scorers(models: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    from ratioloop_py.scoring import scorer_for

    return {name: scorer_for(m, batch_size=p["batch_size"], max_batch_tokens=p["max_batch_tokens"],
                             prefix_cache_tokens=p["prefix_cache_tokens"])
            for name, m in models.items() if name in ("strong", "weak")}


def score_group(rows, group, routes, library, p, seed, scorers) -> list[dict[str, Any]]:
    """Score the distinct responses of a group of prompts under both models; one output row per prompt."""
    from ratioloop_py.scoring import make_item

    prepared = []
    shared: list[int] = []  # exemplar characters each prompt shares with others that drew the same one
    for i in group:
        r = rows[i]
        label = routes[r["prompt_id"]]["label"]
        msgs, gid = apply_guidance(library, label, r["messages"], seed=seed, prompt_id=r["prompt_id"],
                                   enabled=bool(p["guidance"].get("enabled", True)),
                                   system_policy=p["guidance"].get("system_policy"))
        prepared.append((r, label, gid, msgs, list(dict.fromkeys(r["texts"]))))
        shared.append(exemplar_chars(r["messages"], msgs))
    per_model: dict[str, list[dict[str, tuple]]] = {}
    for name in ("strong", "weak"):
        sc = scorers[name]
        groups = [[make_item(sc.sm, msgs, t, p["max_prompt_tokens"], p["max_response_tokens"], shared_chars=n)
                   for t in uniq] for (_, _, _, msgs, uniq), n in zip(prepared, shared)]
        res = sc.score_prompts(groups)
        per_model[name] = [
            {t: (lr.sum, lr.n_tokens, it.prompt_truncated, it.response_truncated)
             for t, it, lr in zip(uniq, items, rs)}
            for (_, _, _, _, uniq), items, rs in zip(prepared, groups, res)]
    out = []
    for k, (r, label, gid, _, uniq) in enumerate(prepared):
        row = build_row(r["prompt_id"], label, gid, r["texts"], per_model["strong"][k], per_model["weak"][k],
                        p["reward"])
        s = per_model["strong"][k]
        w = per_model["weak"][k]
        row["_stats"] = {
            "prompt_truncated": any(v[2] for v in s.values()) or any(v[2] for v in w.values()),
            "responses_truncated": sum(1 for t in r["texts"] if s[t][3] or w[t][3]),
        }
        out.append(row)
    return out


def compute_metrics(rows: list[dict[str, Any]], p: dict[str, Any],
                    routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"prompts": len(rows), "responses": sum(len(r["rewards"]) for r in rows),
                         "reward": p["reward"]}
    by_dom: dict[str, list[float]] = {}
    labels: dict[str, int] = {lab: 0 for lab in LABELS}
    guided_by: dict[str, int] = {lab: 0 for lab in LABELS}
    errors = trunc_p = trunc_r = guided = 0
    for r in rows:
        labels[r["domain"]] = labels.get(r["domain"], 0) + 1
        guided_by[r["domain"]] = guided_by.get(r["domain"], 0) + int(r.get("guidance_id") is not None)
        vals = [x for x in r["rewards"] if x is not None]
        by_dom.setdefault(r["domain"], []).extend(vals)
        by_dom.setdefault("ALL", []).extend(vals)
        errors += len(r.get("errors") or [])
        st = r.get("_stats") or {}
        trunc_p += int(bool(st.get("prompt_truncated")))
        trunc_r += int(st.get("responses_truncated", 0))
        guided += int(r.get("guidance_id") is not None)
    for dom, vals in sorted(by_dom.items()):
        if vals:
            m[f"reward_mean.{dom}"] = statistics.fmean(vals)
            m[f"reward_std.{dom}"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    for lab, n in labels.items():
        m[f"router.{lab}"] = n  # prompts routed to each domain
        m[f"guided.{lab}"] = guided_by.get(lab, 0)  # ... and how many of them were guided
    for r in routes or []:
        m[f"route_how.{r['how']}"] = m.get(f"route_how.{r['how']}", 0) + 1
    m.update({"errors": errors, "truncated_prompts": trunc_p, "truncated_responses": trunc_r, "guided_prompts": guided})
    return m


if __name__ == "__main__":
    run_stage(main)
