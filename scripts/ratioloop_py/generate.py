"""Batched generation shared by the sample and evaluate stages: HF `generate` and vLLM.

HF: each batch is seeded from (seed, batch key), not from what ran before it, so a resumed run draws the
same text as an uninterrupted one (on CPU, for the same batch composition and thread count).
vLLM: each request carries its own seed, so a response depends only on (prompt, seed), not on batching.

Prompts are already rendered; given as token ids (models.model_ids: the one BOS rule) they are fed as they are,
and neither backend adds special tokens of its own.
"""
from __future__ import annotations

import hashlib
from typing import Any


def batch_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def eos_ids_of(model, tok, extra: list[int] | None = None) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS, the generation config's (Llama-3 lists several), extras."""
    ids: list[int] = []
    cands: list[Any] = [tok.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None) if model is not None else None
    cands.extend(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    cands.extend(extra or [])
    for i in cands:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    return ids


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Cut text at the earliest stop string; (text, whether one was found)."""
    best = -1
    for s in stop or []:
        if s:
            i = text.find(s)
            if i >= 0 and (best < 0 or i < best):
                best = i
    return (text, False) if best < 0 else (text[:best], True)


def _parse_row(row: list[int], eos: set[int], pad: int | None, max_new_tokens: int) -> tuple[int, str]:
    """(number of response tokens, finish_reason) of one generated row.

    HF pads a finished row with pad_token_id until the whole batch is done. A row without an EOS either
    ran to max_new_tokens or was ended by a stop string (then only padding follows).
    """
    for i, t in enumerate(row):
        if t in eos:
            return i, "stop"
    n = len(row)
    if pad is not None and pad not in eos:
        while n > 0 and row[n - 1] == pad:
            n -= 1
    return n, ("length" if n >= max_new_tokens else "stop")


def generate_batch(model, tok, prompts: list[str] | list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
                   top_p: float = 1.0, top_k: int = 0, seed: int = 0, key: str = "",
                   stop: list[str] | None = None, stop_token_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Generate one response per rendered prompt. Returns [{text, finish_reason, n_tokens}].

    Left padding keeps every prompt's last token next to its first generated token. `finish_reason` is
    "stop" (an end-of-turn id, a stop id or a stop string) or "length" (cut at max_new_tokens); `n_tokens`
    counts generated tokens before the end-of-turn id.
    """
    import torch

    tok.padding_side = "left"
    if prompts and not isinstance(prompts[0], str):  # token ids (with the BOS rule applied): left-pad them
        enc = tok.pad({"input_ids": [list(p) for p in prompts]}, padding=True, return_tensors="pt").to(model.device)
    else:
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    eos = eos_ids_of(model, tok, stop_token_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    do_sample = temperature > 0
    gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      pad_token_id=pad, eos_token_id=eos)
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
    eos_set = set(eos)
    for row in new.tolist():
        n, finish = _parse_row(row, eos_set, pad, max_new_tokens)
        text, hit = cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), stop)
        if hit:
            finish = "stop"
        results.append({"text": text.strip(), "finish_reason": finish, "n_tokens": n})
    return results


# --- vLLM (engines: vllm_engine.load_engine) ---------------------------------------------------------

def generate_vllm(llm, tok, prompt_ids: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
                  top_p: float = 1.0, top_k: int = 0, seeds: list[int], stop: list[str] | None = None,
                  stop_token_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """One response per pre-tokenized prompt, each request with its own seed. Same result shape as
    generate_batch. Token ids are passed directly so vLLM adds no BOS of its own."""
    from vllm import SamplingParams

    eos = eos_ids_of(None, tok, stop_token_ids)
    params = []
    for s in seeds:
        params.append(SamplingParams(
            n=1, temperature=float(temperature), top_p=float(top_p) if temperature > 0 else 1.0,
            top_k=int(top_k) if (top_k and temperature > 0) else -1, max_tokens=int(max_new_tokens),
            seed=int(s), stop=list(stop or []) or None, stop_token_ids=eos, skip_special_tokens=True))
    outs = llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
    results = []
    eos_set = set(eos)
    for o in outs:
        c = o.outputs[0]
        ids = list(c.token_ids)
        n = len(ids) - (1 if ids and ids[-1] in eos_set else 0)
        finish = "length" if c.finish_reason == "length" else "stop"
        text, hit = cut_at_stop(c.text, stop)
        results.append({"text": text.strip(), "finish_reason": "stop" if hit else finish, "n_tokens": n})
    return results
