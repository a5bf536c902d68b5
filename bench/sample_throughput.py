"""Sample-stage throughput: generated tokens/s at batch 1 and at the configured batch size (HF backend).

    python bench/sample_throughput.py [--config configs/tiny.yaml] [--prompts N] [--max-new-tokens T]

Uses the embedded default model (SmolLM2-135M-Instruct), the demo prompts and the sample section of the config
(temperature, top_p, max_new_tokens, batch_size), the same rendering and generation code as scripts/sample.py.
Prints both rates and their ratio. A benchmark, not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from ratioloop_py.generate import generate_batch  # noqa: E402
from ratioloop_py.io import read_jsonl_rows  # noqa: E402
from ratioloop_py.models import load_model, load_tokenizer, setup_threads  # noqa: E402
from ratioloop_py.sampling import batch_key, render_fit  # noqa: E402


def sample_section(config: Path) -> dict:
    try:
        import yaml

        return (yaml.safe_load(config.read_text()) or {}).get("sample") or {}
    except FileNotFoundError:
        return {}


def run(model, tok, texts: list[list[int]], ids: list[str], batch: int, sec: dict) -> tuple[int, float]:
    tokens, t0 = 0, time.perf_counter()
    for i in range(0, len(texts), batch):
        out = generate_batch(model, tok, texts[i:i + batch], max_new_tokens=sec["max_new_tokens"],
                             temperature=sec["temperature"], top_p=sec["top_p"], top_k=sec.get("top_k", 0),
                             seed=0, key=batch_key(ids[i:i + batch]))
        tokens += sum(r["n_tokens"] for r in out)
    return tokens, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / ".ratioloop/models/smollm2-135m-instruct")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/tiny.yaml", help="read its `sample` section")
    ap.add_argument("--prompts-file", type=Path, default=ROOT / "configs/prompts/demo.jsonl")
    ap.add_argument("--prompts", type=int, default=16, help="how many prompts (the same ones at both batch sizes)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the config's sample.batch_size")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="override the config's sample.max_new_tokens")
    args = ap.parse_args()

    sec = {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 64, "max_prompt_tokens": 512, "batch_size": 8,
           **sample_section(args.config)}
    if args.batch_size:
        sec["batch_size"] = args.batch_size
    if args.max_new_tokens:
        sec["max_new_tokens"] = args.max_new_tokens
    setup_threads()
    spec = {"path": str(args.model), "dtype": "auto", "device": "auto", "template": "chat"}
    tok, model = load_tokenizer(spec), load_model(spec)
    rows = read_jsonl_rows(args.prompts_file)[: args.prompts]
    rendered = [(r["id"], render_fit(tok, r["messages"], "chat", sec["max_prompt_tokens"], "middle"))
                for r in rows]
    rendered.sort(key=lambda x: (-x[1].n_tokens, x[0]))  # as the stage orders its batches
    ids, texts = [i for i, _ in rendered], [r.ids for _, r in rendered]  # token ids, as the stage feeds them

    run(model, tok, texts[:1], ids[:1], 1, {**sec, "max_new_tokens": 4})  # warm-up: first-call overheads
    b = int(sec["batch_size"])
    t1, s1 = run(model, tok, texts, ids, 1, sec)
    tb, sb = run(model, tok, texts, ids, b, sec)
    r1, rb = t1 / s1, tb / sb
    print(f"model {args.model.name} on {model.device}, {len(texts)} prompts, max_new_tokens {sec['max_new_tokens']}, "
          f"temperature {sec['temperature']}, top_p {sec['top_p']}")
    print(f"batch 1:  {t1} tokens in {s1:.1f} s = {r1:.1f} tokens/s")
    print(f"batch {b}:  {tb} tokens in {sb:.1f} s = {rb:.1f} tokens/s")
    print(f"ratio (batch {b} / batch 1): {rb / r1:.2f}x")


if __name__ == "__main__":
    main()
