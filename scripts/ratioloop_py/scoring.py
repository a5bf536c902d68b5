"""Log-probabilities of responses under a causal LM: span finding, truncation, context-KV reuse, batching.

The guided density ratio (arXiv 2411.02481) needs, for every (context, response), the sum of
log p(token | everything before it) over exactly the response tokens — the tokens after the rendered prompt
(which ends with the generation prompt), up to and including the end-of-turn/EOS token the template closes
the turn with. Each model renders and tokenizes the text itself (per-model rendering), so a pair may mix
template styles or tokenizers.

Speed (CPU and GPU): no autograd; for the N responses of one prompt the context is run once and its KV
cache is reused for every response; the remaining items (fallbacks, prompts with one response) are batched
by length. Right padding needs no attention mask: under causal attention a real token never sees the pads
that follow it, and the pads' own outputs are never read.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import BadInput
from .models import ChatMessages, encode, load_model, load_tokenizer, pick_device, pick_dtype, render_with_response


@dataclass
class ScoringModel:
    """One model as used for one role (strong, weak, router): weights + its own tokenizer and template."""

    name: str
    spec: dict[str, Any]
    model: Any
    tok: Any
    template: str
    device: str
    backend: str = "hf"  # "hf" (transformers forward) or "vllm" (prompt log-probs)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _model_key(spec: dict[str, Any]) -> tuple[str, str, str]:
    device = pick_device(spec)
    src = spec.get("path") or spec.get("hub") or ""
    if spec.get("path"):
        src = str(Path(src).resolve())
    return src, str(pick_dtype(spec, device)), device


def load_scoring_models(specs: dict[str, dict[str, Any]]) -> dict[str, ScoringModel]:
    """Load each named spec once. Specs with the same weights, dtype and device share one model object
    (the embedded default scores strong = SmolLM2 with its chat template against weak = the same weights
    rendered without it); each keeps its own tokenizer, since a Jinja template is set on the tokenizer."""
    cache: dict[tuple[str, str, str], Any] = {}
    out: dict[str, ScoringModel] = {}
    for name, spec in specs.items():
        key = _model_key(spec)
        if key not in cache:
            cache[key] = load_model(spec, device=key[2])
        out[name] = ScoringModel(name=name, spec=spec, model=cache[key], tok=load_tokenizer(spec),
                                 template=str(spec.get("template", "chat")), device=key[2])
    return out


@dataclass
class Item:
    """One tokenized (context, response) for one model."""

    ctx: list[int]
    resp: list[int]
    reusable: bool  # full tokens begin with the context's own tokens: the context KV cache may be reused
    prompt_truncated: bool = False
    response_truncated: bool = False


def span_start(tok, context: str, full: str, ctx_ids: list[int], full_ids: list[int]) -> tuple[int, bool]:
    """Index of the first response token in full_ids, and whether full_ids begins with ctx_ids.

    When tokenization merges across the context/response boundary, the response starts at the first token
    that ends after the context's characters (so a straddling token counts as response)."""
    if full_ids[: len(ctx_ids)] == ctx_ids:
        return len(ctx_ids), True
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    start = 0
    for i, (_, end) in enumerate(offsets):
        if end > len(context):
            break
        start = i + 1
    return start, False


def make_item(sm: ScoringModel, messages: ChatMessages, response: str, max_prompt_tokens: int,
              max_response_tokens: int) -> Item:
    context, full = render_with_response(sm.tok, messages, response, sm.template)
    ctx_ids = encode(sm.tok, context)
    full_ids = encode(sm.tok, full)
    start, reusable = span_start(sm.tok, context, full, ctx_ids, full_ids)
    ctx, resp = full_ids[:start], full_ids[start:]
    if not ctx:
        raise BadInput("rendered context is empty: the first response token would have nothing to condition on")
    item = Item(ctx=ctx, resp=resp, reusable=reusable)
    if len(ctx) > max_prompt_tokens:  # left truncation, as in the paper's annotation runs
        item.ctx = ctx[-max_prompt_tokens:]
        item.prompt_truncated = True
    if len(resp) > max_response_tokens:  # right truncation
        item.resp = resp[:max_response_tokens]
        item.response_truncated = True
    return item


@dataclass
class LogpResult:
    sum: float
    n_tokens: int
    token_logps: list[float] | None = None


@dataclass
class ScoreStats:
    forward_tokens: int = 0  # tokens actually fed through the model (what the FLOPs are spent on)
    scored_tokens: int = 0
    reused_contexts: int = 0
    full_passes: int = 0
    by_model: dict[str, int] = field(default_factory=dict)


def _token_logps(logits, targets):
    """log softmax(logits)[targets], row by row in float32 (bounded memory, stable)."""
    import torch

    out = torch.empty(targets.shape[0], dtype=torch.float32, device=logits.device)
    step = 1024
    for i in range(0, targets.shape[0], step):
        lg = logits[i: i + step].float()
        out[i: i + step] = lg.gather(-1, targets[i: i + step, None])[:, 0] - torch.logsumexp(lg, dim=-1)
    return out


def _chunks(n_rows: list[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Split indices (already in the wanted order) into batches of ≤ batch_size rows and
    ≤ max_batch_tokens padded tokens."""
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for idx, length in enumerate(n_rows):
        new_max = max(cur_max, length)
        if cur and (len(cur) + 1 > batch_size or new_max * (len(cur) + 1) > max_batch_tokens):
            batches.append(cur)
            cur, new_max = [], length
        cur.append(idx)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


class LogpScorer:
    """Sums of response-token log-probs for groups of items under one model."""

    def __init__(self, sm: ScoringModel, batch_size: int = 8, max_batch_tokens: int = 8192,
                 reuse_context: bool = True, keep_token_logps: bool = False):
        self.sm = sm
        self.batch_size = max(1, int(batch_size))
        self.max_batch_tokens = max(1, int(max_batch_tokens))
        self.reuse_context = reuse_context
        self.keep_token_logps = keep_token_logps
        self.stats = ScoreStats()

    def score_prompts(self, groups: Sequence[Sequence[Item]]) -> list[list[LogpResult]]:
        """groups[p] = items of prompt p (the same context). Returns results in the same shape."""
        import torch

        results: list[list[LogpResult | None]] = [[None] * len(g) for g in groups]
        pool: list[tuple[int, int]] = []
        with torch.inference_mode():
            for p, items in enumerate(groups):
                reuse = [j for j, it in enumerate(items) if it.reusable and it.resp]
                if self.reuse_context and len(reuse) >= 2:
                    for j, r in zip(reuse, self._reuse_pass(items[reuse[0]].ctx, [items[j] for j in reuse])):
                        results[p][j] = r
                    rest = [j for j in range(len(items)) if j not in set(reuse)]
                else:
                    rest = list(range(len(items)))
                for j in rest:
                    if not items[j].resp:
                        results[p][j] = LogpResult(0.0, 0, [] if self.keep_token_logps else None)
                    else:
                        pool.append((p, j))
            if pool:
                # Longest first: the first batch shows an out-of-memory at once; similar lengths pad little.
                pool.sort(key=lambda pj: -(len(groups[pj[0]][pj[1]].ctx) + len(groups[pj[0]][pj[1]].resp)))
                lengths = [len(groups[p][j].ctx) + len(groups[p][j].resp) for p, j in pool]
                for batch in _chunks(lengths, self.batch_size, self.max_batch_tokens):
                    items = [groups[pool[b][0]][pool[b][1]] for b in batch]
                    for b, r in zip(batch, self._full_pass(items)):
                        p, j = pool[b]
                        results[p][j] = r
        return results  # type: ignore[return-value]

    def _result(self, lp) -> LogpResult:
        vals = lp.double()
        total = float(vals.sum().item())
        n = int(lp.shape[0])
        self.stats.scored_tokens += n
        return LogpResult(total, n, [float(x) for x in lp.tolist()] if self.keep_token_logps else None)

    def _forward(self, input_ids, past=None, logits_to_keep: int = 0, use_cache: bool = False):
        kw: dict[str, Any] = {"input_ids": input_ids, "use_cache": use_cache or past is not None}
        if past is not None:
            kw["past_key_values"] = past
        if logits_to_keep:
            kw["logits_to_keep"] = logits_to_keep
        self.stats.forward_tokens += int(input_ids.numel())
        return self.sm.model(**kw)

    def _reuse_pass(self, ctx: list[int], items: list[Item]) -> list[LogpResult]:
        """Run the shared context once; then each response on top of a copy of its KV cache."""
        import torch

        dev = self.sm.device
        out = self._forward(torch.tensor([ctx], device=dev), logits_to_keep=1, use_cache=True)
        self.stats.reused_contexts += 1
        cache = out.past_key_values
        last = out.logits[0, -1:]  # predicts each response's first token
        results: list[LogpResult | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(items[i].resp))
        budget = max(1, self.max_batch_tokens)
        for batch in _chunks([len(items[i].resp) for i in order], self.batch_size, budget):
            rows = [order[b] for b in batch]
            width = max(len(items[i].resp) for i in rows) - 1  # the last token predicts nothing
            first_lp = _token_logps(last.expand(len(rows), -1),
                                    torch.tensor([items[i].resp[0] for i in rows], device=dev))
            if width > 0:
                ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long, device=dev)
                for r, i in enumerate(rows):
                    seq = items[i].resp[:-1]
                    ids[r, : len(seq)] = torch.tensor(seq, device=dev)
                past = copy.deepcopy(cache)
                if len(rows) > 1:
                    past.batch_repeat_interleave(len(rows))
                logits = self._forward(ids, past=past).logits
            for r, i in enumerate(rows):
                n = len(items[i].resp)
                if n > 1:
                    rest = _token_logps(logits[r, : n - 1], torch.tensor(items[i].resp[1:], device=dev))
                    lp = torch.cat([first_lp[r: r + 1], rest])
                else:
                    lp = first_lp[r: r + 1]
                results[i] = self._result(lp)
        return results  # type: ignore[return-value]

    def _full_pass(self, items: list[Item]) -> list[LogpResult]:
        """Whole (context + response) sequences, right-padded, one forward."""
        import torch

        dev = self.sm.device
        seqs = [it.ctx + it.resp for it in items]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id(), dtype=torch.long, device=dev)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, device=dev)
        # Only positions from the earliest response start onward are needed: skip the lm_head elsewhere.
        first = min(len(it.ctx) for it in items) - 1
        keep = width - first
        logits = self._forward(ids, logits_to_keep=keep).logits
        self.stats.full_passes += len(items)
        results = []
        for r, it in enumerate(items):
            a = len(it.ctx) - 1 - first
            lp = _token_logps(logits[r, a: a + len(it.resp)], torch.tensor(it.resp, device=dev))
            results.append(self._result(lp))
        return results

    def _pad_id(self) -> int:
        tok = self.sm.tok
        for cand in (tok.pad_token_id, tok.eos_token_id, 0):
            if cand is not None:
                return int(cand)
        return 0


def scorer_for(sm: ScoringModel, batch_size: int = 8, max_batch_tokens: int = 8192):
    if sm.backend == "vllm":
        return VllmScorer(sm)
    return LogpScorer(sm, batch_size=batch_size, max_batch_tokens=max_batch_tokens)


# --- vLLM backend (GPU): prompt log-probs of context + response; vLLM's prefix cache does the context reuse.
# vLLM is not installed on the development machine, so this path is exercised only where it is (see tests).

def load_vllm_models(specs: dict[str, dict[str, Any]], gpu_memory_utilization: float = 0.85) -> dict[str, ScoringModel]:
    from vllm import LLM

    keys = {name: _model_key(spec) for name, spec in specs.items()}
    distinct = list(dict.fromkeys(keys.values()))
    share = gpu_memory_utilization / max(1, len(distinct))
    llms: dict[tuple[str, str, str], Any] = {}
    out: dict[str, ScoringModel] = {}
    for name, spec in specs.items():
        key = keys[name]
        if key not in llms:
            dtype = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}[key[1]]
            llms[key] = LLM(model=key[0], tokenizer=spec.get("tokenizer") or key[0], dtype=dtype,
                            gpu_memory_utilization=share, enable_prefix_caching=True, seed=0)
        out[name] = ScoringModel(name=name, spec=spec, model=llms[key], tok=load_tokenizer(spec),
                                 template=str(spec.get("template", "chat")), device=key[2], backend="vllm")
    return out


class VllmScorer:
    def __init__(self, sm: ScoringModel):
        self.sm = sm
        self.stats = ScoreStats()

    def score_prompts(self, groups: Sequence[Sequence[Item]]) -> list[list[LogpResult]]:
        from vllm import SamplingParams

        flat = [(p, j) for p, g in enumerate(groups) for j in range(len(g))]
        prompts = [{"prompt_token_ids": groups[p][j].ctx + groups[p][j].resp} for p, j in flat]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.sm.model.generate(prompts, params, use_tqdm=False) if prompts else []
        results: list[list[LogpResult | None]] = [[None] * len(g) for g in groups]
        for (p, j), o in zip(flat, outs):
            it = groups[p][j]
            start = len(it.ctx)
            vals = []
            for k, t in enumerate(it.resp):
                entry = o.prompt_logprobs[start + k]
                vals.append(float(entry[t].logprob) if entry and t in entry else float("nan"))
            self.stats.forward_tokens += start + len(it.resp)
            self.stats.scored_tokens += len(vals)
            results[p][j] = LogpResult(math.fsum(vals), len(vals), None)
        return results  # type: ignore[return-value]


def naive_logp(sm: ScoringModel, item: Item) -> LogpResult:
    """Reference: one full sequence, full logits, plain log_softmax. Used by tests and the benchmark."""
    import torch

    with torch.inference_mode():
        ids = torch.tensor([item.ctx + item.resp], device=sm.device)
        logits = sm.model(input_ids=ids).logits[0].float()
        lps = torch.log_softmax(logits, dim=-1)
        start = len(item.ctx)
        vals = [float(lps[start - 1 + k, t]) for k, t in enumerate(item.resp)]
    return LogpResult(math.fsum(vals), len(vals), vals)


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def default_threads_note() -> str:
    import torch

    return f"torch threads={torch.get_num_threads()} (cores={os.cpu_count()})"
