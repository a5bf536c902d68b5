"""Answers to benchmark questions from a model spec, batched and cached per question id in a partial shard.

Batches are planned from the full, ordered question list (not from what is left), and each batch is seeded from
its own key, so a resumed run reproduces exactly the text an uninterrupted run would have written.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput
from ..io import JsonlAppender, read_partial_jsonl


class AnswerModel:
    """A policy or baseline model behind one generate() call: HF or vLLM as vllm_engine.choose_backend picks
    (backend: auto → vLLM where it is installed and faster for answering on the device)."""

    def __init__(self, spec: dict[str, Any], *, backend: str = "auto", seed: int = 0,
                 max_new_tokens: int | None = 256, top_p: float = 1.0, work_tokens: int | None = None):
        from ..models import load_tokenizer

        self.spec = spec
        self.seed = int(seed)
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        self.top_p = float(top_p)
        self.template = spec.get("template", "chat")
        self.tok = load_tokenizer(spec)
        from .. import vllm_engine

        # work_tokens (questions x max_new_tokens) decides `auto` on CPU: vLLM's start-up must pay off there
        self.choice = vllm_engine.choose_backend(backend, "answers", vllm_engine.device_of(spec), work_tokens=work_tokens)
        self.backend = self.choice.backend
        self.model = None
        self.llm = None
        if self.backend == "vllm":
            self.llm = vllm_engine.load_engine(spec, seed=self.seed)
        else:
            from ..models import load_model

            self.model = load_model(spec)

    def render(self, messages: list[dict[str, str]]) -> str:
        from ..models import render_prompt

        return render_prompt(self.tok, messages, self.template)

    def context_length(self) -> int:
        """The model's own length limit (prompt + answer): its config's max_position_embeddings, else the
        tokenizer's model_max_length."""
        cfg = getattr(self.model, "config", None)
        if self.llm is not None:
            return int(self.llm.llm_engine.model_config.max_model_len)
        n = getattr(cfg, "max_position_embeddings", None) or getattr(self.tok, "model_max_length", None)
        if not n or n > 10**7:  # transformers' "no limit" sentinel
            raise BadInput("params.max_new_tokens: the model states no length limit (AlpacaEval's default is the "
                           "model's own); set a number")
        return int(n)

    def limit_for(self, prompt_lens: list[int]) -> int:
        """max_new_tokens of one batch: the set limit, or (None, AlpacaEval's rule) whatever the model's own length
        limit leaves after the batch's longest prompt."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return max(1, self.context_length() - max(prompt_lens, default=0))

    def token_len(self, text: str) -> int:
        """Tokens of an answer text by this model's tokenizer (no special tokens): the answer files' token_len."""
        return len(self.tok.encode(text, add_special_tokens=False))

    def generate(self, messages_list: list[list[dict[str, str]]], *, temperature: float, key: str) -> list[dict]:
        from .. import generate as gen
        from ..models import model_ids

        prompts = [self.render(m) for m in messages_list]
        ids = [model_ids(self.tok, p) for p in prompts]  # the BOS rule, as in sample/score/train
        limit = self.limit_for([len(i) for i in ids])
        if self.backend == "vllm":
            seeds = [gen.batch_seed(self.seed, f"{key}:{i}") for i in range(len(prompts))]
            return gen.generate_vllm(self.llm, self.tok, ids, max_new_tokens=limit, temperature=temperature,
                                     top_p=self.top_p, seeds=seeds)
        return gen.generate_batch(self.model, self.tok, ids, max_new_tokens=limit,
                                  temperature=temperature, top_p=self.top_p, seed=self.seed, key=key)

    def close(self) -> None:
        self.model = None
        self.llm = None
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass


def plan_batches(items: list[dict[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
    """Fixed batches: grouped by temperature (MT-Bench categories differ), in question order within a group."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for it in items:
        groups.setdefault(float(it.get("temperature", 0.0)), []).append(it)
    batches = []
    for temp in sorted(groups):
        g = groups[temp]
        batches.extend(g[i:i + batch_size] for i in range(0, len(g), batch_size))
    return batches


def answer_all(model_factory: Callable[[], AnswerModel], items: list[dict[str, Any]], partial: Path, *,
               batch_size: int, tag: str, on_progress: Callable[[int, int], None] | None = None,
               tstamp: float | None = None) -> dict[str, dict[str, Any]]:
    """Answer every item {id, turns: [user texts], temperature}; rows {id, turns, finish_reasons, n_tokens,
    token_lens, tstamp} (token_lens: the answer texts re-counted by the model's tokenizer; tstamp: the given time,
    e.g. when the stage began answering, so that a resumed run writes the same files; else when the row was answered).

    Multi-turn items are answered turn by turn, each turn seeing the model's own earlier answers. The factory is
    only called when something is left to answer; the caller owns (and closes) the model.
    """
    done = {str(r["id"]): r for r in read_partial_jsonl(partial) if "id" in r}
    plan = plan_batches(items, max(1, int(batch_size)))
    total = len(items)
    model: AnswerModel | None = None
    with JsonlAppender(partial) as app:
        for b in plan:
            if all(it["id"] in done for it in b):
                continue
            if model is None:
                model = model_factory()
            key = tag + ":" + hashlib.sha256("\x1f".join(it["id"] for it in b).encode()).hexdigest()[:16]
            n_turns = max(len(it["turns"]) for it in b)
            convs: list[list[dict[str, str]]] = [[] for _ in b]
            outs: list[list[dict[str, Any]]] = [[] for _ in b]
            for t in range(n_turns):
                idx = [i for i, it in enumerate(b) if t < len(it["turns"])]
                for i in idx:
                    convs[i].append({"role": "user", "content": b[i]["turns"][t]})
                res = model.generate([convs[i] for i in idx], temperature=float(b[idx[0]].get("temperature", 0.0)),
                                     key=f"{key}:t{t}")
                for i, r in zip(idx, res):
                    convs[i].append({"role": "assistant", "content": r["text"]})
                    outs[i].append(r)
            now = time.time() if tstamp is None else float(tstamp)
            rows = [{"id": it["id"], "turns": [r["text"] for r in o], "finish_reasons": [r["finish_reason"] for r in o],
                     "n_tokens": [r["n_tokens"] for r in o], "token_lens": [model.token_len(r["text"]) for r in o],
                     "tstamp": now} for it, o in zip(b, outs)]
            app.write_batch(rows)
            for r in rows:
                done[r["id"]] = r
            if on_progress:
                on_progress(sum(1 for it in items if it["id"] in done), total)
    return {it["id"]: done[it["id"]] for it in items}
