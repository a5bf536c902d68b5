"""Score throughput: a naive loop vs the score stage's scorer, on the embedded default's SmolLM2 pair and inputs.

(a) naive  – one (context + response) sequence at a time, full logits, log_softmax, no context reuse;
(b) stage  – ratioloop_py.scoring.LogpScorer as score.py uses it: context KV computed once per prompt and
             reused for its N responses, kept prefixes shared across prompts (the same guidance exemplar or
             system prompt runs once), responses batched by length, lm_head only where needed.
Inputs follow the embedded default (configs/tiny.yaml): its prompt file (all 54 demo prompts, or the first
--prompts; routed by their domain field), its guidance library and seed (SAFETY / REASONING get an exemplar, as in the paper),
N responses each, strong = chat template, weak = the same weights without it. Response texts are synthetic;
their lengths are drawn between half of and the full response cap (tiny.yaml's max_new_tokens unless
--response-tokens is given), since only lengths matter for speed. The machine's fp32 matmul FLOP/s is measured
in the same run. FLOPs are counted exactly: 2 × body parameters per token fed + 2 × lm_head parameters per
logit row; "effective" divides the naive workload's FLOPs by (b)'s time.

    python bench/score_throughput.py [--prompts P] [--n N] [--response-tokens T] [--threads 2] [--json]

The gain grows with the number of prompts that share an exemplar (in a real run: thousands of prompts, 3-10
exemplars per domain) and with the context's share of the tokens; README.md records both ends.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

SENTENCES = [
    "First, let us look at what the question asks.", "The answer depends on a few details.",
    "Here is a careful step-by-step explanation.", "That gives a total of 205 minutes.",
    "I would not recommend doing anything that could hurt someone.", "A calm conversation usually works better.",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "Bleach and ammonia release toxic chloramine vapours.", "Keep the room dark and cool during the day.",
    "221 = 13 × 17, so it is not prime.", "The two young lovers come from feuding families in Verona.",
    "Let me know if you would like more detail on any of these points.",
]


def responses(tok, k: int, n: int, cap: int) -> list[str]:
    """n texts for prompt k, each cut to a length between cap/2 and cap tokens (deterministic)."""
    out = []
    for j in range(n):
        text = " ".join(SENTENCES[(k + j + i) % len(SENTENCES)] for i in range(40))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        length = cap // 2 + ((k * 7 + j * 5) % (cap - cap // 2 + 1))
        out.append(tok.decode(ids[:length]))
    return out


def flop_split(model) -> tuple[int, int]:
    """(body parameters, lm_head parameters): the lm_head runs only on logit rows."""
    head = model.get_output_embeddings().weight
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    tied = head.data_ptr() == emb.data_ptr()
    return total - emb.numel() - (0 if tied else head.numel()), head.numel()


def matmul_flops(size: int = 1536, reps: int = 8) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 * reps / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    ap.add_argument("--model", type=Path, default=ROOT / ".ratioloop" / "models" / "smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=0, help="first P prompts of the prompt file (default: all)")
    ap.add_argument("--n", type=int, default=0, help="responses per prompt (default: the config's sample.n)")
    ap.add_argument("--response-tokens", type=int, default=0,
                    help="response length cap (default: the config's sample.max_new_tokens)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        os.environ["RATIOLOOP_THREADS"] = str(args.threads)
    import torch
    import yaml

    from ratioloop_py.guidance import apply_guidance, exemplar_chars, load_library
    from ratioloop_py.io import read_jsonl_rows
    from ratioloop_py.models import setup_threads
    from ratioloop_py.scoring import LogpScorer, load_scoring_models, make_item, naive_logp

    cfg = yaml.safe_load(args.config.read_text())
    n = args.n or int(cfg["sample"]["n"])
    cap = args.response_tokens or int(cfg["sample"]["max_new_tokens"])
    seed = int(cfg.get("seed", 0))
    prompts = read_jsonl_rows(args.config.parent / cfg["prompts"]["path"])[: args.prompts or None]
    setup_threads()
    spec = {"path": str(args.model), "dtype": "float32", "device": "cpu"}
    ms = load_scoring_models({"strong": {**spec, "template": "chat"}, "weak": {**spec, "template": "none"}})
    lib = load_library(ROOT / "configs" / "guidance")
    groups: dict[str, list] = {"strong": [], "weak": []}
    for k, row in enumerate(prompts):
        msgs, _ = apply_guidance(lib, row["domain"], row["messages"], seed=seed, prompt_id=row["id"])
        shared = exemplar_chars(row["messages"], msgs)
        for name in groups:
            groups[name].append([make_item(ms[name], msgs, t, 2048, 2048, shared_chars=shared)
                                 for t in responses(ms[name].tok, k, n, cap)])
    body, head = flop_split(ms["strong"].model)
    naive_tokens = sum(len(it.ctx) + len(it.resp) for g in groups.values() for items in g for it in items)
    scored = sum(len(it.resp) for g in groups.values() for items in g for it in items)
    naive_flops = 2 * (body + head) * naive_tokens

    # warm-up (allocator, kernels) on one prompt each way, with a scorer of its own (its kept prefixes are not reused)
    naive_logp(ms["strong"], groups["strong"][0][0])
    LogpScorer(ms["strong"], batch_size=args.batch_size).score_prompts(groups["strong"][:1])

    t = time.perf_counter()
    naive = {name: [[naive_logp(ms[name], it).sum for it in items] for items in g] for name, g in groups.items()}
    t_a = time.perf_counter() - t

    t = time.perf_counter()
    fed = rows = saved = 0
    fast = {}
    for name, g in groups.items():
        sc = LogpScorer(ms[name], batch_size=args.batch_size)
        fast[name] = [[r.sum for r in row] for row in sc.score_prompts(g)]
        fed += sc.stats.forward_tokens
        rows += sc.stats.logit_rows
        saved += sc.stats.prefix_tokens_saved
    t_b = time.perf_counter() - t
    max_diff = max(abs(a - b) for name in groups for ra, rb in zip(naive[name], fast[name]) for a, b in zip(ra, rb))
    b_flops = 2 * body * fed + 2 * head * rows

    peak = matmul_flops()
    res = {
        "threads": torch.get_num_threads(), "cores": os.cpu_count(), "prompts": len(prompts), "n": n,
        "response_tokens_cap": cap, "body_params": body, "lm_head_params": head,
        "scored_tokens": scored, "naive_tokens": naive_tokens, "fed_tokens_b": fed, "logit_rows_b": rows,
        "prefix_tokens_saved_b": saved, "a_seconds": t_a, "b_seconds": t_b,
        "a_tokens_per_s": scored / t_a, "b_tokens_per_s": scored / t_b, "speedup_b_over_a": t_a / t_b,
        "matmul_gflops": peak / 1e9,
        "a_gflops": naive_flops / t_a / 1e9,
        "b_gflops_computed": b_flops / t_b / 1e9,
        "b_gflops_effective": naive_flops / t_b / 1e9,
        "max_abs_diff": max_diff,
    }
    res["a_pct_of_peak"] = 100 * res["a_gflops"] / res["matmul_gflops"]
    res["b_pct_of_peak_computed"] = 100 * res["b_gflops_computed"] / res["matmul_gflops"]
    res["b_pct_of_peak_effective"] = 100 * res["b_gflops_effective"] / res["matmul_gflops"]
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['threads']} threads / {res['cores']} cores; {len(prompts)} prompts × N={n}, responses ≤ {cap} tokens; "
          f"{scored} scored tokens over both models")
    print(f"work: naive feeds {naive_tokens} tokens (all through the lm_head); (b) feeds {fed} "
          f"({saved} context tokens came from kept prefixes), {rows} lm_head rows")
    print(f"(a) naive : {t_a:7.2f} s  {res['a_tokens_per_s']:8.1f} scored tok/s  {res['a_gflops']:6.1f} GFLOP/s "
          f"({res['a_pct_of_peak']:.0f}% of peak)")
    print(f"(b) stage : {t_b:7.2f} s  {res['b_tokens_per_s']:8.1f} scored tok/s  "
          f"{res['b_gflops_computed']:6.1f} GFLOP/s computed ({res['b_pct_of_peak_computed']:.0f}% of peak), "
          f"{res['b_gflops_effective']:6.1f} effective ({res['b_pct_of_peak_effective']:.0f}%)")
    print(f"b/a = {res['speedup_b_over_a']:.2f}   fp32 matmul peak = {res['matmul_gflops']:.1f} GFLOP/s   "
          f"max |a-b| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
