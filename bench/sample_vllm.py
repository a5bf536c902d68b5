"""Sampling, HF vs vLLM side by side in one run: the same prompts, model and sampling settings through both backends.

    python bench/sample_vllm.py [--prompts 16] [--n 1] [--max-new-tokens T] [--json]

(a) HF     – ratioloop_py.generate.generate_batch at the config's batch size, as scripts/sample.py's hf backend;
(b) vLLM   – ratioloop_py.generate.generate_vllm with one seed per request, as scripts/sample.py's vllm backend
             (all requests at once: vLLM schedules its own batches).
Prints each backend's load time, generated tokens/s (warm, after a short warm-up call), the ratio b/a, and the
break-even workload: how many generated tokens a stage must draw before vLLM's longer start-up pays off
(`backend: auto` uses it on CPU, see scripts/ratioloop_py/vllm_engine.py). Needs vLLM (`npm run setup -- --with-vllm`).
A benchmark, not a test: numbers depend on the machine and its load.
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
    from sample_throughput import sample_section

    from ratioloop_py.generate import batch_seed, generate_batch, generate_vllm
    from ratioloop_py.io import read_jsonl_rows
    from ratioloop_py.models import load_model, load_tokenizer, setup_threads
    from ratioloop_py.sampling import batch_key, render_fit
    from ratioloop_py.vllm_engine import load_engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / ".ratioloop/models/smollm2-135m-instruct")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/tiny.yaml", help="read its `sample` section")
    ap.add_argument("--prompts-file", type=Path, default=ROOT / "configs/prompts/demo.jsonl")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=1, help="responses per prompt (seeds 0..n-1)")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    sec = {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "max_new_tokens": 64, "max_prompt_tokens": 512,
           "batch_size": 8, **sample_section(args.config)}
    if args.max_new_tokens:
        sec["max_new_tokens"] = args.max_new_tokens
    setup_threads()
    spec = {"path": str(args.model), "dtype": "auto", "device": "auto", "template": "chat"}
    tok = load_tokenizer(spec)
    rows = read_jsonl_rows(args.prompts_file)[: args.prompts]
    rendered = [(r["id"], render_fit(tok, r["messages"], "chat", sec["max_prompt_tokens"], "middle")) for r in rows]
    rendered.sort(key=lambda x: (-x[1].n_tokens, x[0]))
    ids = [i for i, _ in rendered]
    texts = [r.text for _, r in rendered]
    prompt_ids = [r.ids for _, r in rendered]
    seeds = list(range(args.n))
    gen = dict(max_new_tokens=sec["max_new_tokens"], temperature=sec["temperature"], top_p=sec["top_p"],
               top_k=sec.get("top_k") or 0)

    t0 = time.perf_counter()
    model = load_model(spec)
    hf_load = time.perf_counter() - t0
    generate_batch(model, tok, texts[:1], **{**gen, "max_new_tokens": 4}, seed=0, key="warm")
    b = int(sec["batch_size"])
    hf_tokens, t0 = 0, time.perf_counter()
    for s in seeds:
        for i in range(0, len(texts), b):
            out = generate_batch(model, tok, texts[i:i + b], **gen, seed=s, key=batch_key(ids[i:i + b]))
            hf_tokens += sum(r["n_tokens"] for r in out)
    hf_s = time.perf_counter() - t0
    del model

    t0 = time.perf_counter()
    llm = load_engine(spec, seed=0, max_model_len=sec["max_prompt_tokens"] + sec["max_new_tokens"])
    v_load = time.perf_counter() - t0
    generate_vllm(llm, tok, prompt_ids[:1], **{**gen, "max_new_tokens": 4}, seeds=[0])
    v_tokens, t0 = 0, time.perf_counter()
    for s in seeds:
        out = generate_vllm(llm, tok, prompt_ids, **gen, seeds=[batch_seed(s, pid) for pid in ids])
        v_tokens += sum(r["n_tokens"] for r in out)
    v_s = time.perf_counter() - t0

    hf_rate, v_rate = hf_tokens / hf_s, v_tokens / v_s
    # Tokens after which vLLM's (load + generate) beats HF's: extra load time / time saved per token.
    saved = 1 / hf_rate - 1 / v_rate
    break_even = (v_load - hf_load) / saved if saved > 0 else None
    res = {"prompts": len(texts), "n": args.n, "max_new_tokens": sec["max_new_tokens"], "hf_batch": b,
           "hf": {"load_s": round(hf_load, 1), "tokens": hf_tokens, "seconds": round(hf_s, 2), "tok_s": round(hf_rate, 1)},
           "vllm": {"load_s": round(v_load, 1), "tokens": v_tokens, "seconds": round(v_s, 2), "tok_s": round(v_rate, 1)},
           "ratio_vllm_over_hf": round(v_rate / hf_rate, 2),
           "break_even_tokens": round(break_even) if break_even is not None else None}
    if args.json:
        print(json.dumps(res))
        return
    print(f"model {args.model.name}, {len(texts)} prompts x {args.n}, max_new_tokens {sec['max_new_tokens']}, "
          f"temperature {sec['temperature']}, top_p {sec['top_p']}")
    print(f"(a) HF   batch {b}: load {hf_load:.1f} s, {hf_tokens} tokens in {hf_s:.1f} s = {hf_rate:.1f} tokens/s")
    print(f"(b) vLLM          : load {v_load:.1f} s, {v_tokens} tokens in {v_s:.1f} s = {v_rate:.1f} tokens/s")
    print(f"ratio b/a: {v_rate / hf_rate:.2f}x; vLLM pays off after "
          + (f"{break_even:.0f} generated tokens" if break_even is not None else "never (not faster)"))


if __name__ == "__main__":
    main()
