"""Batched HF generation shared by the sample and evaluate stages.

Each batch is seeded from (seed, batch key), not from what ran before it, so a resumed run draws the
same text as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
from typing import Any


def batch_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def generate_batch(model, tok, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0,
                   top_p: float = 1.0, top_k: int = 0, seed: int = 0, key: str = "",
                   stop: list[str] | None = None) -> list[dict[str, Any]]:
    """Generate one response per rendered prompt. Returns [{text, finish_reason, n_tokens}].

    Prompts are already rendered (templates add their own BOS), so no special tokens are added here.
    Left padding keeps every prompt's last token next to its first generated token.
    """
    import torch

    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    do_sample = temperature > 0
    gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k or 0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if stop:
        gen_kwargs.update(stop_strings=stop, tokenizer=tok)
    torch.manual_seed(batch_seed(seed, key))
    with torch.inference_mode():
        out = model.generate(**enc, **gen_kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    results = []
    eos, pad = tok.eos_token_id, tok.pad_token_id
    for row in new.tolist():
        n = 0
        finish = "length"
        for t in row:
            if t == eos:
                finish = "stop"
                break
            if t == pad and pad != eos:
                break
            n += 1
        text = tok.decode(row[:n], skip_special_tokens=True)
        if stop:
            for s in stop:
                if s in text:
                    text = text[: text.index(s)]
                    finish = "stop"
        results.append({"text": text.strip(), "finish_reason": finish, "n_tokens": n})
    return results
