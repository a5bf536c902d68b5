"""Scoring, HF vs vLLM side by side in one run: the same items (prompts, responses, both models) through both scorers.

    python bench/score_vllm.py [--prompts P] [--n N] [--response-tokens T] [--json]

(a) HF    – ratioloop_py.scoring.LogpScorer, the score stage's hf backend (shared-prefix KV reuse, lm_head only on
            response positions);
(b) vLLM  – the score stage's vllm backend: prompt log-probs of context + response from one engine with prefix
            caching (the reference CDR code scores this way), strong and weak sharing it as in the embedded default.
Inputs are bench/score_throughput.py's (configs/tiny.yaml's prompts, guidance and seed, synthetic responses).
Prints both rates (scored tokens/s, warm: after one warm-up prompt each), b/a, vLLM's load time, and the largest
difference between the two scorers' per-response sums. Needs vLLM (`npm run setup -- --with-vllm`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    import yaml
    from score_throughput import responses

    from ratioloop_py.guidance import apply_guidance, exemplar_chars, load_library
    from ratioloop_py.io import read_jsonl_rows
    from ratioloop_py.models import setup_threads
    from ratioloop_py.scoring import LogpScorer, ScoringModel, load_scoring_models, make_item, scorer_for
    from ratioloop_py.vllm_engine import load_engine

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    ap.add_argument("--model", type=Path, default=ROOT / ".ratioloop" / "models" / "smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=0, help="first P prompts of the prompt file (default: all)")
    ap.add_argument("--n", type=int, default=0, help="responses per prompt (default: the config's sample.n)")
    ap.add_argument("--response-tokens", type=int, default=0, help="response cap (default: sample.max_new_tokens)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cfg = yaml.safe_load(args.config.read_text())
    n = args.n or int(cfg["sample"]["n"])
    cap = args.response_tokens or int(cfg["sample"]["max_new_tokens"])
    seed = int(cfg.get("seed", 0))
    prompts = read_jsonl_rows(args.config.parent / cfg["prompts"]["path"])[: args.prompts or None]
    setup_threads()
    spec = {"path": str(args.model), "dtype": "float32", "device": "cpu"}
    hf = load_scoring_models({"strong": {**spec, "template": "chat"}, "weak": {**spec, "template": "none"}})
    lib = load_library(ROOT / "configs" / "guidance")
    groups: dict[str, list] = {"strong": [], "weak": []}
    for k, row in enumerate(prompts):
        msgs, _ = apply_guidance(lib, row["domain"], row["messages"], seed=seed, prompt_id=row["id"])
        shared = exemplar_chars(row["messages"], msgs)
        for name in groups:
            groups[name].append([make_item(hf[name], msgs, t, 2048, 2048, shared_chars=shared)
                                 for t in responses(hf[name].tok, k, n, cap)])
    scored = sum(len(it.resp) for g in groups.values() for items in g for it in items)
    longest = max(len(it.ctx) + len(it.resp) for g in groups.values() for items in g for it in items)

    LogpScorer(hf["strong"]).score_prompts(groups["strong"][:1])  # warm-up
    t = time.perf_counter()
    a = {name: [[r.sum for r in row] for row in LogpScorer(hf[name]).score_prompts(g)] for name, g in groups.items()}
    t_a = time.perf_counter() - t

    t = time.perf_counter()
    llm = load_engine({**spec, "template": "chat"}, seed=0, max_model_len=longest + 8, prefix_caching=True)
    load_s = time.perf_counter() - t
    vs = {name: ScoringModel(name=name, spec=hf[name].spec, model=llm, tok=hf[name].tok, template=hf[name].template,
                             device="cpu", backend="vllm") for name in groups}
    scorer_for(vs["strong"]).score_prompts(groups["strong"][:1])  # warm-up
    t = time.perf_counter()
    b = {name: [[r.sum for r in row] for row in scorer_for(vs[name]).score_prompts(g)] for name, g in groups.items()}
    t_b = time.perf_counter() - t
    diff = max(abs(x - y) for name in groups for ra, rb in zip(a[name], b[name]) for x, y in zip(ra, rb))

    res = {"prompts": len(prompts), "n": n, "response_tokens_cap": cap, "scored_tokens": scored,
           "hf_seconds": round(t_a, 2), "vllm_seconds": round(t_b, 2), "vllm_load_s": round(load_s, 1),
           "hf_tok_s": round(scored / t_a, 1), "vllm_tok_s": round(scored / t_b, 1),
           "ratio_vllm_over_hf": round(t_a / t_b, 2), "max_abs_diff": diff}
    if args.json:
        print(json.dumps(res))
        return
    print(f"{len(prompts)} prompts x N={n}, responses <= {cap} tokens; {scored} scored tokens over both models")
    print(f"(a) HF scorer : {t_a:7.2f} s  {res['hf_tok_s']:8.1f} scored tok/s")
    print(f"(b) vLLM      : {t_b:7.2f} s  {res['vllm_tok_s']:8.1f} scored tok/s  (engine load {load_s:.1f} s)")
    print(f"b/a = {t_a / t_b:.2f}   max |a-b| per response sum = {diff:.2e} nats")


if __name__ == "__main__":
    main()
