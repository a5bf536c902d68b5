"""SimPO step: the train stage's trainer vs TRL's CPOTrainer(loss_type="simpo"), same pairs, same model, one run.

(a) ratioloop – the train stage's own pieces (train_simpo.resolve_params, tokenized_pairs, training_args, load_policy,
                simpo.SimPOTrainer and PairCollator), in process, on CPU;
(b) TRL       – trl.experimental.cpo.CPOTrainer with loss_type="simpo", cpo_alpha=0 (pure SimPO), simpo_gamma =
                beta·gamma_beta_ratio, given the same pairs as text: prompt = the rendered chat prompt, chosen/rejected
                = the rest of the rendered conversation (response + end of turn), which TRL tokenizes jointly itself.
Both start from the same weights with the same seed, batch size and learning rate and run the same steps.
Printed: whether both tokenized every pair to the same ids, both first-step losses and their difference (they must
agree to 1e-5), the largest loss difference over all steps (the optimizers' steps too), and the tokens/s of each (non-pad tokens of chosen + rejected per second of train()) and their ratio.

    python bench/simpo_vs_trl.py [--model DIR] [--pairs P] [--batch-size B] [--epochs E] [--repeats R] [--threads 2]
                                 [--json]

Without --model a tiny random Llama (ratioloop_py.tiny) is built; README records SmolLM2-135M
(.ratioloop/models/smollm2-135m-instruct).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

CHOSEN = ["Here is a careful answer. First, look at what the question asks; then work through it step by step.",
          "Sure. The short answer is 42, because 12 + 30 = 42.",
          "I would not help with anything that could hurt someone, but here is a safer alternative."]
REJECTED = ["No.", "I think it is 41, but I am not sure at all about that.", "Whatever."]


def build_pairs(n: int) -> list[dict[str, Any]]:
    """n pairs in the pairs stage's format (TRL conversational), on the demo prompts; texts are fixed, varied lengths."""
    rows = [json.loads(line) for line in (ROOT / "configs/prompts/demo.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        out.append({"prompt_id": r["id"], "prompt": r["messages"],
                    "chosen": [{"role": "assistant", "content": CHOSEN[i % len(CHOSEN)] * (1 + i % 2)}],
                    "rejected": [{"role": "assistant", "content": REJECTED[i % len(REJECTED)]}]})
    return out


def stage_params(beta: float, gamma_beta_ratio: float, batch: int, epochs: float, lr: float) -> dict[str, Any]:
    from train_simpo import resolve_params

    return resolve_params({"beta": beta, "gamma_beta_ratio": gamma_beta_ratio, "per_device_train_batch_size": batch,
                           "num_train_epochs": epochs, "learning_rate": lr, "warmup_ratio": 0.0,
                           "lr_scheduler_type": "constant", "save_steps": 10**9, "max_length": 1024,
                           "max_prompt_length": 512}, spec_seed=0)


def _tokens(rows: list[dict[str, Any]]) -> int:
    return sum(len(r["chosen_input_ids"]) + len(r["rejected_input_ids"]) for r in rows)


def run_ours(model_dir: Path, pairs_path: Path, p: dict[str, Any], out: Path) -> dict[str, Any]:
    from train_simpo import _Rows, load_policy, tokenized_pairs, train_dtype, training_args
    from ratioloop_py.launch import resolve_launch
    from ratioloop_py.models import load_tokenizer
    from ratioloop_py.simpo import PairCollator, SimPOTrainer
    from transformers import PrinterCallback

    spec = {"path": str(model_dir), "template": "chat"}
    tok = load_tokenizer(spec)
    L = resolve_launch({})
    rows, _ = tokenized_pairs(tok, pairs_path, p, "chat")
    trainer = SimPOTrainer(model=load_policy(spec, train_dtype(p, L)), args=training_args(p, L, out, p["save_steps"]),
                           train_dataset=_Rows(rows), data_collator=PairCollator(tok.pad_token_id),
                           processing_class=tok, beta=p["beta"], gamma_beta_ratio=p["gamma_beta_ratio"])
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"ids": [(r["chosen_input_ids"], r["rejected_input_ids"]) for r in rows], "losses": losses,
            "seconds": seconds, "tokens": _tokens(rows) * p["num_train_epochs"], "steps": trainer.state.global_step}


def run_trl(model_dir: Path, pairs: list[dict[str, Any]], p: dict[str, Any], out: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from ratioloop_py.models import load_tokenizer, render_with_response

    tok = load_tokenizer({"path": str(model_dir), "template": "chat"})
    data = []
    for r in pairs:
        ctx, full_c = render_with_response(tok, r["prompt"], r["chosen"][0]["content"], "chat")
        _, full_r = render_with_response(tok, r["prompt"], r["rejected"][0]["content"], "chat")
        data.append({"prompt": ctx, "chosen": full_c[len(ctx):], "rejected": full_r[len(ctx):]})
    args = CPOConfig(output_dir=str(out), loss_type="simpo", cpo_alpha=0.0, beta=p["beta"],
                     simpo_gamma=p["beta"] * p["gamma_beta_ratio"], learning_rate=p["learning_rate"],
                     lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=p["per_device_train_batch_size"],
                     num_train_epochs=p["num_train_epochs"], max_length=p["max_length"], seed=p["seed"],
                     data_seed=p["seed"], logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
                     use_cpu=True, bf16=False, optim="adamw_torch", dataloader_num_workers=0)  # CPOConfig defaults to bf16
    # autocast; the stage trains fp32 on CPU (bf16 mixed precision only on GPU), so both run fp32 here
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trainer = CPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok)
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    ds = trainer.train_dataset
    ids = [(list(ds[i]["chosen_input_ids"]), list(ds[i]["rejected_input_ids"])) for i in range(len(ds))]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"ids": ids, "losses": losses, "seconds": seconds,
            "tokens": sum(len(c) + len(r) for c, r in ids) * p["num_train_epochs"], "steps": trainer.state.global_step}


def compare(model_dir: Path, n_pairs: int, batch: int, epochs: float = 1, beta: float = 2.0,
            gamma_beta_ratio: float = 0.5, lr: float = 1e-6, repeats: int = 1) -> dict[str, Any]:
    """Both trainers `repeats` times, alternating (a, b, b, a, a, b, …) so neither always runs warm; the fastest run of
    each counts for tokens/s (a shared machine only ever slows a run down). Losses are from the first runs."""
    p = stage_params(beta, gamma_beta_ratio, batch, epochs, lr)
    pairs = build_pairs(n_pairs)
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        pairs_path = Path(tmp) / "train.jsonl"
        pairs_path.write_text("".join(json.dumps(r) + "\n" for r in pairs))
        for k in range(repeats):
            for who in ("ab" if k % 2 == 0 else "ba"):
                out = Path(tmp) / f"{who}{k}"
                runs[who].append(run_ours(model_dir, pairs_path, p, out) if who == "a" else
                                 run_trl(model_dir, pairs, p, out))
    a, b = runs["a"][0], runs["b"][0]
    ra = max(x["tokens"] / x["seconds"] for x in runs["a"])
    rb = max(x["tokens"] / x["seconds"] for x in runs["b"])
    return {"pairs": n_pairs, "batch": batch, "steps": [a["steps"], b["steps"]], "same_ids": a["ids"] == b["ids"],
            "first_loss": [a["losses"][0], b["losses"][0]], "first_loss_diff": abs(a["losses"][0] - b["losses"][0]),
            "max_loss_diff": max((abs(x - y) for x, y in zip(a["losses"], b["losses"])), default=0.0),
            "tokens_per_s": [ra, rb], "ratio": ra / rb, "losses": [a["losses"], b["losses"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="a model folder (default: a tiny random Llama)")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each trainer, alternating; the fastest counts")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads or int(os.environ.get("RATIOLOOP_THREADS", "0")) or (os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from ratioloop_py import tiny

            model = tiny.build(Path(tmp) / "tiny", seed=1)
        r = compare(model, args.pairs, args.batch_size, args.epochs, repeats=args.repeats)
    if args.json:
        print(json.dumps(r))
        return
    print(f"model {model.name}, {r['pairs']} pairs, batch {r['batch']}, steps ratioloop {r['steps'][0]} / TRL "
          f"{r['steps'][1]}, {torch.get_num_threads()} threads")
    print(f"same token ids for every pair: {'yes' if r['same_ids'] else 'NO'}")
    print(f"first-step loss: ratioloop {r['first_loss'][0]:.8f}  TRL {r['first_loss'][1]:.8f}  "
          f"|diff| {r['first_loss_diff']:.2e}; every step's loss: max |diff| {r['max_loss_diff']:.2e}")
    print(f"tokens/s (fastest of {args.repeats}): ratioloop {r['tokens_per_s'][0]:.1f}  TRL {r['tokens_per_s'][1]:.1f}  "
          f"ratio {r['ratio']:.2f}")


if __name__ == "__main__":
    main()
