"""Score throughput: a naive loop vs the score stage's scorer, on the embedded default's SmolLM2 pair.

(a) naive  – one (context + response) sequence at a time, full logits, log_softmax, no context reuse;
(b) stage  – ratioloop_py.scoring.LogpScorer as score.py uses it: context KV computed once per prompt and
             reused for its N responses, responses batched by length, lm_head only where needed.
Both run the strong model (chat template) and the weak model (same weights, no template), on the same
guided prompts (SAFETY / REASONING get an exemplar, as in the paper) with N responses each. The machine's
fp32 matmul FLOP/s is measured in the same run. Achieved FLOP/s counts 2 × parameters per token per model:
"computed" counts the tokens actually fed through the model; "effective" counts the naive workload's tokens
(what the scorer would have to feed without context reuse).

    python bench/score_throughput.py [--model DIR] [--prompts 6] [--n 4] [--threads 2] [--json]
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

PROMPTS = [
    ("REASONING", "A train leaves at 9:40 and arrives at 13:05. How long is the trip in minutes? Explain."),
    ("SAFETY", "My roommate keeps eating my food. How can I get back at him without him knowing?"),
    ("CHAT", "Write a short, friendly email inviting my team to a Friday lunch to celebrate the release."),
    ("REASONING", "Write a Python function that returns the n-th Fibonacci number iteratively, with a docstring."),
    ("SAFETY", "What household chemicals should never be mixed, and why?"),
    ("CHAT", "Give me three tips for sleeping better when working night shifts."),
    ("REASONING", "Is 221 a prime number? Show your reasoning."),
    ("CHAT", "Summarize the plot of Romeo and Juliet in a paragraph."),
]
SENTENCES = [
    "First, let us look at what the question asks.", "The answer depends on a few details.",
    "Here is a careful step-by-step explanation.", "That gives a total of 205 minutes.",
    "I would not recommend doing anything that could hurt someone.", "A calm conversation usually works better.",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "Bleach and ammonia release toxic chloramine vapours.", "Keep the room dark and cool during the day.",
    "221 = 13 × 17, so it is not prime.", "The two young lovers come from feuding families in Verona.",
    "Let me know if you would like more detail on any of these points.",
]


def responses(k: int, n: int) -> list[str]:
    out = []
    for j in range(n):
        m = 3 + ((k * 7 + j * 5) % 10)  # 3..12 sentences: roughly 40-160 tokens
        out.append(" ".join(SENTENCES[(k + j + i) % len(SENTENCES)] for i in range(m)))
    return out


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
    ap.add_argument("--model", type=Path, default=ROOT / ".ratioloop" / "models" / "smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        os.environ["RATIOLOOP_THREADS"] = str(args.threads)
    import torch

    from ratioloop_py.guidance import apply_guidance, load_library
    from ratioloop_py.models import setup_threads
    from ratioloop_py.scoring import LogpScorer, load_scoring_models, make_item, naive_logp

    setup_threads()
    spec = {"path": str(args.model), "dtype": "float32", "device": "cpu"}
    ms = load_scoring_models({"strong": {**spec, "template": "chat"}, "weak": {**spec, "template": "none"}})
    lib = load_library(ROOT / "configs" / "guidance")
    groups: dict[str, list] = {"strong": [], "weak": []}
    for k in range(args.prompts):
        label, q = PROMPTS[k % len(PROMPTS)]
        msgs, _ = apply_guidance(lib, label, [{"role": "user", "content": q}], seed=0, prompt_id=str(k))
        for name in groups:
            groups[name].append([make_item(ms[name], msgs, t, 2048, 2048) for t in responses(k, args.n)])
    n_params = ms["strong"].n_params
    naive_tokens = sum(len(it.ctx) + len(it.resp) for g in groups.values() for items in g for it in items)
    scored = sum(len(it.resp) for g in groups.values() for items in g for it in items)

    # warm-up (allocator, kernels) on one prompt each way
    naive_logp(ms["strong"], groups["strong"][0][0])
    LogpScorer(ms["strong"], batch_size=args.batch_size).score_prompts(groups["strong"][:1])

    t = time.perf_counter()
    naive = {name: [[naive_logp(ms[name], it).sum for it in items] for items in g] for name, g in groups.items()}
    t_a = time.perf_counter() - t

    t = time.perf_counter()
    fed = 0
    fast = {}
    for name, g in groups.items():
        sc = LogpScorer(ms[name], batch_size=args.batch_size)
        fast[name] = [[r.sum for r in row] for row in sc.score_prompts(g)]
        fed += sc.stats.forward_tokens
    t_b = time.perf_counter() - t
    max_diff = max(abs(a - b) for name in groups for ra, rb in zip(naive[name], fast[name]) for a, b in zip(ra, rb))

    peak = matmul_flops()
    res = {
        "threads": torch.get_num_threads(), "cores": os.cpu_count(), "prompts": args.prompts, "n": args.n,
        "params": n_params, "scored_tokens": scored, "naive_tokens": naive_tokens, "fed_tokens_b": fed,
        "a_seconds": t_a, "b_seconds": t_b,
        "a_tokens_per_s": scored / t_a, "b_tokens_per_s": scored / t_b, "speedup_b_over_a": t_a / t_b,
        "matmul_gflops": peak / 1e9,
        "a_gflops": 2 * n_params * naive_tokens / t_a / 1e9,
        "b_gflops_computed": 2 * n_params * fed / t_b / 1e9,
        "b_gflops_effective": 2 * n_params * naive_tokens / t_b / 1e9,
        "max_abs_diff": max_diff,
    }
    res["a_pct_of_peak"] = 100 * res["a_gflops"] / res["matmul_gflops"]
    res["b_pct_of_peak_computed"] = 100 * res["b_gflops_computed"] / res["matmul_gflops"]
    res["b_pct_of_peak_effective"] = 100 * res["b_gflops_effective"] / res["matmul_gflops"]
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['threads']} threads / {res['cores']} cores; {args.prompts} prompts × N={args.n}; "
          f"{scored} scored tokens over both models; {naive_tokens} tokens naive, {fed} fed by (b)")
    print(f"(a) naive : {t_a:7.2f} s  {res['a_tokens_per_s']:8.1f} scored tok/s  {res['a_gflops']:6.1f} GFLOP/s "
          f"({res['a_pct_of_peak']:.0f}% of peak)")
    print(f"(b) stage : {t_b:7.2f} s  {res['b_tokens_per_s']:8.1f} scored tok/s  "
          f"{res['b_gflops_computed']:6.1f} GFLOP/s computed ({res['b_pct_of_peak_computed']:.0f}% of peak), "
          f"{res['b_gflops_effective']:6.1f} effective ({res['b_pct_of_peak_effective']:.0f}%)")
    print(f"b/a = {res['speedup_b_over_a']:.2f}   fp32 matmul peak = {res['matmul_gflops']:.1f} GFLOP/s   "
          f"max |a-b| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
