"""Sample stage: N on-policy responses per prompt, one seeded pass (shard) per response seed, resumable.

    python scripts/sample.py --spec <outputDir>/spec.json

inputs:  prompts (JSONL {id, messages, domain?}; or params.prompts.hf instead), policy (optional model dir
         that overrides params.models.policy, e.g. the previous iteration's trained model)
outputs: samples.jsonl (manifest output "samples"): {prompt_id, messages, domain?, responses: [{text, seed,
         finish_reason, n_tokens}], all_identical}, ordered by prompt id; shards partial/seed-<s>.jsonl.

Resume: every seed's shard is appended and fsynced per batch; a rerun skips the batches already there, and
each batch is seeded from its own content, so the merged output equals an uninterrupted run byte for byte.
Scale: under accelerate/torchrun each rank generates a strided slice of the prompts into its own shards
(partial/seed-<s>.rank-<r>-of-<w>.jsonl), marks itself done, and rank 0 merges.

Shards (params.shard = {index, count}, ratioloop_py/shards.py): a shard plans the whole stage's batches as an
unsharded run does and generates a contiguous range of them into its own folder's samples.jsonl; the merge mode
(RATIOLOOP_MERGE_SHARDS) orders the shards' rows by prompt id into the stage's samples.jsonl, byte for byte what
an unsharded run writes.

Test hook: RATIOLOOP_TEST_CRASH_AFTER_BATCHES=k makes the process exit with status 1 right after its k-th
generated batch is flushed (to test resume without racing a kill). Never set it outside tests.
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
from ratioloop_py.generate import batch_seed, generate_batch, generate_vllm  # noqa: E402
from ratioloop_py.io import (JsonlAppender, atomic_write_json, atomic_write_jsonl, atomic_write_text,  # noqa: E402
                             read_partial_jsonl)
from ratioloop_py.launch import run_data_parallel, under_launcher  # noqa: E402
from ratioloop_py.models import load_model, load_tokenizer, pick_device, setup_threads  # noqa: E402
from ratioloop_py.sampling import (BadRows, LoadStats, Rendered, SampleParams, batch_key, dedup_sort,  # noqa: E402
                                   load_prompts_hf, load_prompts_jsonl, merge, plan_batches, rank_slice, render_fit,
                                   resolve_params, shard_name, summarize, with_system)
from ratioloop_py.shards import merge_list, output_lines, shard_manifest, shard_of  # noqa: E402
from ratioloop_py.stage import Stage, run_stage, spec_hash, world  # noqa: E402

VLLM_CHUNK = 256  # vLLM schedules its own batches; chunks only set how often a shard is flushed


def local_engines(world_size: int) -> int:
    """Engines sharing this machine's memory: on a GPU machine each rank has a GPU of its own; on CPU the ranks
    share the host RAM."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))


class HFBackend:
    name = "hf"

    def __init__(self, spec: dict[str, Any], tok, prm: SampleParams, device: str):
        self.model = load_model(spec, device)
        self.tok, self.prm = tok, prm

    def generate(self, prompt_ids: list[list[int]], ids: list[str], seed: int) -> list[dict[str, Any]]:
        p = self.prm
        return generate_batch(self.model, self.tok, prompt_ids, max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                              top_p=p.top_p, top_k=p.top_k, seed=seed, key=batch_key(ids), stop=p.stop,
                              stop_token_ids=p.stop_token_ids)


class VllmBackend:
    name = "vllm"

    def __init__(self, spec: dict[str, Any], tok, prm: SampleParams, run_seed: int, world_size: int = 1):
        from ratioloop_py.vllm_engine import load_engine

        self.llm = load_engine(spec, tensor_parallel_size=prm.tensor_parallel_size, seed=run_seed,
                               max_model_len=prm.max_prompt_tokens + prm.max_new_tokens,
                               engines=local_engines(world_size))
        self.tok, self.prm = tok, prm

    def generate(self, prompt_ids: list[list[int]], ids: list[str], seed: int) -> list[dict[str, Any]]:
        p = self.prm
        # One seed per request, from (response seed, prompt id): batching never changes a response.
        return generate_vllm(self.llm, self.tok, prompt_ids, max_new_tokens=p.max_new_tokens,
                             temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                             seeds=[batch_seed(seed, pid) for pid in ids], stop=p.stop,
                             stop_token_ids=p.stop_token_ids)


def choose_backend(prm: SampleParams, spec: dict[str, Any], n_prompts: int):
    """hf or vllm (vllm_engine.choose_backend: what is installed and faster on this device for this much
    generation). Under several data-parallel ranks each rank runs its own engine on its own GPU."""
    from ratioloop_py.vllm_engine import choose_backend as choose, device_of

    return choose(prm.backend, "sample", device_of(spec), work_tokens=n_prompts * len(prm.seeds) * prm.max_new_tokens)


def load_prompts(stage: Stage, prm: SampleParams, bad: BadRows):
    path = stage.input_path("prompts", required=False)
    if path is not None and prm.hf is not None:
        raise BadInput("give either spec.inputs.prompts (a JSONL file) or params.prompts.hf (a dataset), not both")
    if path is not None:
        prompts = load_prompts_jsonl(path, bad)
    elif prm.hf is not None:
        prompts = load_prompts_hf(prm.hf, bad)
    else:
        raise BadInput("spec.inputs.prompts: missing, and params.prompts.hf is not set (the stage needs prompts)")
    return dedup_sort(prompts, bad, prm.limit)


def reset_if_stale(partial: Path, stage: Stage, seeds: list[int], rank: int, world_size: int) -> None:
    """Shards left by a different spec (changed params, prompts or model) must not be resumed from."""
    state = partial / ("state.json" if world_size == 1 else f"state.rank-{rank}-of-{world_size}.json")
    want = spec_hash(stage.spec)
    try:
        have = json.loads(state.read_text())["specHash"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        have = None
    if have == want:
        return
    for s in seeds:
        (partial / shard_name(s, rank, world_size)).unlink(missing_ok=True)
    done_marker(partial, rank, world_size).unlink(missing_ok=True)
    if have is not None:
        stage.log("partial shards were made by another spec; starting this rank's shards afresh", level="warn")
    atomic_write_json(state, {"specHash": want})


def done_marker(partial: Path, rank: int, world_size: int) -> Path:
    return partial / f"rank-{rank}-of-{world_size}.done.json"


def wait_for_ranks(partial: Path, stage: Stage, world_size: int) -> list[dict[str, Any]]:
    """Rank 0 waits until every rank has marked its shards complete for this spec."""
    want = spec_hash(stage.spec)
    timeout = float(os.environ.get("RATIOLOOP_MERGE_TIMEOUT_S", "86400"))
    t0 = time.monotonic()
    while True:
        marks = []
        for r in range(world_size):
            try:
                m = json.loads(done_marker(partial, r, world_size).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                break
            if m.get("specHash") != want:
                break
            marks.append(m)
        if len(marks) == world_size:
            return marks
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"ranks did not finish within {timeout:.0f}s (have {len(marks)}/{world_size} done markers)")
        time.sleep(1.0)


def merge_shards(stage: Stage, prm: SampleParams, shards: list[dict[str, Any]]) -> None:
    """The stage's samples.jsonl and manifest from its shards' rows: ordered by prompt id, as an unsharded run."""
    keyed: list[tuple[str, str]] = []
    for s in shards:
        keyed.extend((str(json.loads(line)["prompt_id"]), line) for line in output_lines(s, "samples"))
    keyed.sort(key=lambda x: x[0])
    dup = next((a for (a, _), (b, _) in zip(keyed, keyed[1:]) if a == b), None)
    if dup is not None:
        raise BadInput(f"prompt {dup!r} is in more than one shard")
    out = stage.output_dir / "samples.jsonl"
    atomic_write_text(out, "".join(line + "\n" for _, line in keyed))
    rows = [json.loads(line) for _, line in keyed]
    ms = [shard_manifest(s) for s in shards]
    tokens = sum(int(m["metrics"].get("generated_tokens") or 0) for m in ms)
    seconds = max(float(m["sample"]["shard"].get("seconds") or 0.0) for m in ms)
    first = ms[0]["metrics"]
    metrics: dict[str, Any] = {
        **summarize(rows),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2) if tokens and seconds > 0 else None,
        # Every shard loads (and counts) the whole prompt source; each truncates only its own prompts.
        "input_rows": first["input_rows"],
        "skipped_bad_rows": first["skipped_bad_rows"],
        "duplicate_prompts_dropped": first["duplicate_prompts_dropped"],
        "truncated_prompts": sum(int(m["metrics"]["truncated_prompts"]) for m in ms),
        "n": len(prm.seeds),
    }
    sample = {k: v for k, v in ms[0]["sample"].items() if k != "shard"}
    stage.write_manifest(outputs={"samples": out}, metrics=metrics, extra={"sample": {**sample, "shards": len(shards)}})


def main(stage: Stage) -> None:
    setup_threads()
    prm = resolve_params(stage.params, stage.seed, stage.iteration)
    shards = merge_list()
    if shards is not None:
        merge_shards(stage, prm, shards)
        return
    shard = shard_of(stage.params)
    rank, world_size = world()
    spec = stage.model_spec("policy")
    template = spec.get("template", "chat")

    stats = LoadStats()
    bad = BadRows(prm.on_bad_row, stats, log=lambda m: stage.log(m, level="warn"))
    prompts = load_prompts(stage, prm, bad)

    tok = load_tokenizer(spec)
    rendered: dict[str, Rendered] = {}
    kept = []
    for p in prompts:
        try:
            rendered[p.id] = render_fit(tok, with_system(p.messages, prm.system_prompt), template,
                                        prm.max_prompt_tokens, prm.truncation)
            kept.append(p)
        except ValueError as e:
            bad(p.where, str(e))
    prompts = kept
    if not prompts:
        raise BadInput("no usable prompts (every row was skipped or the source is empty)")

    if prm.num_processes > 1 and not under_launcher():
        choose_backend(prm, spec, len(prompts))  # vllm asked for but missing: bad input, said before launching
        run_data_parallel(stage, Path(__file__).resolve(), prm.num_processes)
        return
    choice = choose_backend(prm, spec, len(prompts))  # the whole stage's work, the same pick on every rank
    backend_name = choice.backend
    stage.log(f"sampling backend: {backend_name} ({choice.reason})")
    partial = stage.partial_dir
    reset_if_stale(partial, stage, prm.seeds, rank, world_size)

    # Longest first (memory problems show up at once; batches pad little), then by id for a stable plan.
    order = sorted(prompts, key=lambda p: (-rendered[p.id].n_tokens, p.id))
    batch_size = max(prm.batch_size, VLLM_CHUNK) if backend_name == "vllm" else prm.batch_size
    ids = [p.id for p in order]
    shard_batches = (0, 0)
    if shard is not None:
        # The unsharded plan's batches, a contiguous range of them: each batch as (and seeded as) without shards. Cut
        # at the planned batch size, so a shard whose batch an out-of-memory retry halved still takes its own prompts.
        planned = resolve_params(stage.planned_params, stage.seed, stage.iteration).batch_size
        every = plan_batches(ids, max(planned, VLLM_CHUNK) if backend_name == "vllm" else planned)
        shard_batches = shard.range(len(every))
        ids = [pid for b in every[shard_batches[0]:shard_batches[1]] for pid in b]
        shard_ids = set(ids)
        prompts = [p for p in prompts if p.id in shard_ids]
    mine = rank_slice(ids, rank, world_size)
    batches = plan_batches(mine, batch_size)

    crash_after = int(os.environ.get("RATIOLOOP_TEST_CRASH_AFTER_BATCHES", "0") or 0)
    backend = None
    total, done = len(mine) * len(prm.seeds), 0
    gen_tokens, gen_seconds, gen_batches = 0, 0.0, 0
    stage.progress(0, total, "responses")
    for s in prm.seeds:
        # Opening the appender first cuts a torn last line, so what is read back is exactly what is kept.
        with JsonlAppender(partial / shard_name(s, rank, world_size)) as app:
            have = {r["prompt_id"] for r in read_partial_jsonl(app.path)}
            for batch in batches:
                todo = [pid for pid in batch if pid not in have]
                if todo:
                    if backend is None:
                        with stage.phase("loading the policy model"):  # alive lines while it loads (stall watchdog)
                            if backend_name == "vllm":
                                backend = VllmBackend(spec, tok, prm, stage.seed, world_size)
                            else:
                                device = pick_device(spec)
                                if device == "cuda" and world_size > 1:
                                    device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
                                backend = HFBackend(spec, tok, prm, device)
                        stage.progress(done, total, "responses")
                    t0 = time.perf_counter()
                    # The whole batch is regenerated even if a torn write kept part of it: its draw depends on it.
                    results = backend.generate([rendered[pid].ids for pid in batch], batch, s)
                    gen_seconds += time.perf_counter() - t0
                    gen_tokens += sum(r["n_tokens"] for r in results)
                    app.write_batch([{"prompt_id": pid, "seed": s, **r} for pid, r in zip(batch, results) if pid in todo])
                    have.update(todo)
                    gen_batches += 1
                    if gen_batches % 10 == 0:
                        stage.metric("tokens_per_s", round(gen_tokens / max(gen_seconds, 1e-9), 2), step=gen_batches)
                    if crash_after and gen_batches >= crash_after:
                        print(f"RATIOLOOP_TEST_CRASH_AFTER_BATCHES={crash_after}: exiting after batch {gen_batches}",
                              file=sys.stderr)
                        raise SystemExit(1)
                done += len(batch)
                stage.progress(done, total, "responses")

    mark = {"specHash": spec_hash(stage.spec), "tokens": gen_tokens, "seconds": gen_seconds}
    if world_size > 1:
        atomic_write_json(done_marker(partial, rank, world_size), mark)
        if rank != 0:
            return
        marks = wait_for_ranks(partial, stage, world_size)
    else:
        marks = [mark]

    shard_rows = {s: [row for r in range(world_size) for row in read_partial_jsonl(partial / shard_name(s, r, world_size))]
                  for s in prm.seeds}
    rows = merge(prompts, rendered, prm.seeds, shard_rows)
    out = stage.output_dir / "samples.jsonl"
    atomic_write_jsonl(out, rows)

    tokens = sum(m["tokens"] for m in marks)
    seconds = max(m["seconds"] for m in marks)
    metrics: dict[str, Any] = {
        **summarize(rows),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2) if tokens and seconds > 0 else None,
        "input_rows": stats.rows,
        "skipped_bad_rows": len(stats.skipped),
        "duplicate_prompts_dropped": stats.duplicates,
        "truncated_prompts": sum(1 for p in prompts if rendered[p.id].truncated),
        "n": len(prm.seeds),
    }
    for k in ("tokens_per_s", "response_tokens_mean", "response_tokens_p95", "frac_cut_at_max_new_tokens",
              "identical_response_prompts", "skipped_bad_rows"):
        if metrics[k] is not None:
            stage.metric(k, metrics[k])
    extra: dict[str, Any] = {
        "backend": backend_name, "backend_choice": choice.manifest(), "seeds": prm.seeds, "world_size": world_size,
        "skipped_rows": stats.skipped[:50],
    }
    if shard is not None:
        extra["shard"] = {"index": shard.index, "count": shard.count, "batches": list(shard_batches),
                          "prompts": len(prompts), "seconds": seconds}
    stage.write_manifest(outputs={"samples": out}, metrics=metrics, extra={"sample": extra})


if __name__ == "__main__":
    run_stage(main)
