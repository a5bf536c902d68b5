"""Log-probabilities of responses under a causal LM: span finding, truncation, context-KV reuse, batching.

The guided density ratio (arXiv 2411.02481) needs, for every (context, response), the sum of
log p(token | everything before it) over exactly the response tokens — the tokens after the rendered prompt
(which ends with the generation prompt), up to and including the end-of-turn/EOS token the template closes
the turn with. Each model renders and tokenizes the text itself (per-model rendering), so a pair may mix
template styles or tokenizers.

Speed (CPU and GPU): no autograd; a context is split into a shared prefix (the chat template's header and system
prompt, plus a guidance exemplar: the same for many prompts) and the rest. Each distinct prefix runs once, alone,
and its KV cache is kept (PrefixCache); the rests of several prompts then run in one batch on top of their
prefixes, and the N responses of those prompts in one more batch on top of their contexts, so weights are read
once per batch rather than once per sequence. Because a prefix always runs alone, a result never depends on
whether its prefix was already kept (a resumed run rounds exactly like an uninterrupted one). Items whose full
text does not begin with the context's tokens, and models whose cache is not plain keys/values, fall back to
whole-sequence passes, batched by length.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import BadInput
from .models import (ChatMessages, keep_tail, load_model, load_tokenizer, model_ids, pick_device, pick_dtype,
                     render_prompt, tokenize_turn)


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
    prefix: int = 0  # leading ctx tokens that other prompts share (template header, system prompt, exemplar)


SPLIT = "\u2063\u2063split\u2063\u2063"  # invisible separators: never in a real prompt's text


def shared_prefix_text(sm: ScoringModel, messages: ChatMessages, context: str, shared_chars: int) -> str:
    """The rendered text before the first user message's content, plus its first shared_chars characters
    (a guidance exemplar), if the context begins with it; else ""."""
    first = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    if first is None:
        return ""
    msgs = [dict(m) for m in messages[: first + 1]]
    msgs[first]["content"] = str(msgs[first].get("content", ""))[:shared_chars] + SPLIT
    if sm.template == "none":
        text = render_prompt(sm.tok, msgs, "none")
    else:
        text = sm.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    cut = text.find(SPLIT)
    pre = text[:cut] if cut >= 0 else ""
    return pre if context.startswith(pre) else ""


def _shared_len(sm: ScoringModel, messages: ChatMessages, ctx_ids: list[int], shared_chars: int) -> int:
    context = render_prompt(sm.tok, messages, sm.template)
    pre = shared_prefix_text(sm, messages, context, shared_chars)
    if not pre:
        return 0
    # The last token of the prefix may merge with what follows, differently per prompt: leave it out, so that
    # prompts sharing the text share the same tokens. Count only tokens both tokenizations agree on.
    pre_ids = model_ids(sm.tok, pre)
    return min(_common_prefix(pre_ids, ctx_ids), len(pre_ids) - 1, len(ctx_ids) - 1)


def make_item(sm: ScoringModel, messages: ChatMessages, response: str, max_prompt_tokens: int,
              max_response_tokens: int, shared_chars: int = 0) -> Item:
    """Tokenize (context, response) for one model. shared_chars: how many leading characters of the first
    user message other prompts share (a guidance exemplar), so their KV can be computed once."""
    ctx, resp, reusable = tokenize_turn(sm.tok, messages, response, sm.template)
    if not ctx:
        raise BadInput("rendered context is empty: the first response token would have nothing to condition on")
    item = Item(ctx=ctx, resp=resp, reusable=reusable)
    if len(ctx) > max_prompt_tokens:  # left truncation, as in the paper's annotation runs (the BOS is kept)
        item.ctx = keep_tail(sm.tok, ctx, max_prompt_tokens)
        item.prompt_truncated = True
    elif reusable:
        item.prefix = _shared_len(sm, messages, ctx, shared_chars)
    if len(resp) > max_response_tokens:  # right truncation
        item.resp = resp[:max_response_tokens]
        item.response_truncated = True
    return item


def context_head(tok, template: str, messages: ChatMessages, n: int = 4) -> dict[str, Any]:
    """How a model's scored context begins (for the score manifest): its first tokens, whether its tokenizer adds
    a BOS, and whether the context leads with a sequence BOS (a BOS id first that does not recur: ChatML tokenizers
    whose BOS is <|im_start|> open every turn with it, which is template text, not a sequence start)."""
    from .models import first_tokens, tokenizer_adds_bos

    ids = model_ids(tok, render_prompt(tok, messages, template))
    bos = tok.bos_token_id
    return {"first_tokens": first_tokens(tok, ids, n), "tokenizer_adds_bos": tokenizer_adds_bos(tok),
            "leading_bos": bool(ids) and bos is not None and ids[0] == bos and ids.count(bos) == 1}


def bos_disagreement(heads: dict[str, dict[str, Any]]) -> str | None:
    """A sentence when the strong and weak contexts disagree on a leading BOS (a per-token bias in a summed
    reward, i.e. a length bias), else None."""
    s, w = heads.get("strong"), heads.get("weak")
    if not s or not w or s["leading_bos"] == w["leading_bos"]:
        return None
    return (f"strong and weak contexts disagree on a leading BOS: strong begins {s['first_tokens']}, weak begins "
            f"{w['first_tokens']}; the reward then carries a per-token bias (check both model specs' tokenizers)")


@dataclass
class LogpResult:
    sum: float
    n_tokens: int
    token_logps: list[float] | None = None


@dataclass
class ScoreStats:
    forward_tokens: int = 0  # tokens actually fed through the model (what the FLOPs are spent on)
    logit_rows: int = 0  # positions that went through the lm_head
    scored_tokens: int = 0
    reused_contexts: int = 0
    full_passes: int = 0
    prefix_hits: int = 0  # contexts that started from a kept prefix
    prefix_tokens_saved: int = 0
    fallback_window: int = 0  # responses scored by whole passes because reuse would exceed the attention window
    fallback_cache: int = 0  # responses scored by whole passes because the KV cache was not as expected


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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """KV caches of shared context prefixes, by their exact tokens; least recently used ones are dropped
    beyond max_tokens cached positions. With guidance pools of 3-10 exemplars and thousands of prompts,
    each exemplar's KV is computed once instead of once per prompt."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max(0, int(max_tokens))
        self.entries: dict[tuple[int, ...], Any] = {}  # insertion order = recency (oldest first)
        self.size = 0

    def get(self, tokens: tuple[int, ...]):
        kv = self.entries.pop(tokens, None)
        if kv is not None:
            self.entries[tokens] = kv
        return kv

    def put(self, tokens: tuple[int, ...], kv) -> None:
        if not self.max_tokens or len(tokens) > self.max_tokens or tokens in self.entries:
            return
        self.entries[tokens] = kv
        self.size += len(tokens)
        while self.size > self.max_tokens:
            old = next(iter(self.entries))
            self.size -= len(old)
            del self.entries[old]


class NoKvReuse(Exception):
    """Context-KV reuse would not be exact here: the items go to whole-sequence passes instead.

    reason "cache": the model's cache is not plain per-layer keys/values of every position fed (recurrent or
    hybrid layers; a sliding-window layer that dropped old positions; any other shape surprise), so no later
    chunk is tried either. reason "window": this chunk's padded layout is wider than the attention window."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _layers_kv(cache, batch: int, positions: int) -> list[tuple[Any, Any]]:
    """Per-layer (keys, values), each [batch, heads, positions, dim], or NoKvReuse("cache")."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(getattr(la, "keys", None) is not None and getattr(la, "values", None) is not None
                             for la in layers):
        raise NoKvReuse("cache", type(cache).__name__)
    kv = [(layer.keys, layer.values) for layer in layers]
    for k, v in kv:
        if k.dim() != 4 or k.shape[0] != batch or k.shape[2] != positions or v.shape[:3] != k.shape[:3]:
            raise NoKvReuse("cache", f"keys {tuple(k.shape)}, values {tuple(v.shape)}, want [{batch}, *, {positions}, *]")
    if any(k.shape[1] != kv[0][0].shape[1] or k.shape[3] != kv[0][0].shape[3] for k, _ in kv[1:]):
        raise NoKvReuse("cache", "layers with different key shapes")
    return kv


def attention_window(model) -> int | None:
    """The smallest attention window (sliding or chunked) any layer of the model has, or None for full attention.

    Reuse pads rows in the middle, so cache columns are not true positions; a window measured in columns is then
    exact only when every row's padded width fits inside it (see LogpScorer._reuse_chunk)."""
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config(decoder=True)
    if cfg is None:
        return None
    sizes = []
    sw = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if isinstance(sw, int) and sw > 0 and getattr(cfg, "use_sliding_window", True) is not False \
            and (types is None or any("sliding" in str(t) for t in types)):
        sizes.append(sw)
    chunk = getattr(cfg, "attention_chunk_size", None)
    if isinstance(chunk, int) and chunk > 0:
        sizes.append(chunk)
    return min(sizes) if sizes else None


def _cache_from(kv: list[tuple[Any, Any]]):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


class LogpScorer:
    """Sums of response-token log-probs for groups of items under one model."""

    def __init__(self, sm: ScoringModel, batch_size: int = 8, max_batch_tokens: int = 8192,
                 reuse_context: bool = True, keep_token_logps: bool = False, prefix_cache_tokens: int = 16384,
                 min_prefix: int = 8):
        self.sm = sm
        self.batch_size = max(1, int(batch_size))
        self.max_batch_tokens = max(1, int(max_batch_tokens))
        self.reuse_context = reuse_context
        self.keep_token_logps = keep_token_logps
        self.prefixes = PrefixCache(prefix_cache_tokens)
        self.min_prefix = max(1, int(min_prefix))  # shorter shared prefixes are not worth a forward of their own
        self.stats = ScoreStats()
        self._split = self._split_head()
        self.window = attention_window(sm.model)

    def score_prompts(self, groups: Sequence[Sequence[Item]]) -> list[list[LogpResult]]:
        """groups[p] = items of prompt p (the same context). Returns results in the same shape."""
        import torch

        results: list[list[LogpResult | None]] = [[None] * len(g) for g in groups]
        pool: list[tuple[int, int]] = []
        reuse_prompts: list[tuple[int, list[int]]] = []
        for p, items in enumerate(groups):
            reuse = [j for j, it in enumerate(items) if it.reusable and it.resp] if self.reuse_context else []
            if reuse:
                reuse_prompts.append((p, reuse))
            for j, it in enumerate(items):
                if not it.resp:
                    results[p][j] = LogpResult(0.0, 0, [] if self.keep_token_logps else None)
                elif j not in reuse:
                    pool.append((p, j))
        with torch.inference_mode():
            for chunk in self._prompt_chunks(reuse_prompts):
                todo = [(p, j) for p, js in chunk for j in js]
                if not self.reuse_context:
                    pool.extend(todo)
                    continue
                try:
                    self._reuse_chunk(groups, chunk, results)
                except NoKvReuse as e:
                    # Checked before any result of the chunk is written: its items simply take whole passes.
                    pool.extend(todo)
                    if e.reason == "window":
                        self.stats.fallback_window += len(todo)
                    else:  # this model's cache cannot be padded and reused: whole passes from here on
                        self.stats.fallback_cache += len(todo)
                        self.reuse_context = False
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

    def _prompt_chunks(self, reuse_prompts):
        """Consecutive prompts whose responses fit one batch (a prompt with more gets a chunk of its own)."""
        chunks, cur, rows = [], [], 0
        for p, js in reuse_prompts:
            if cur and rows + len(js) > self.batch_size:
                chunks.append(cur)
                cur, rows = [], 0
            cur.append((p, js))
            rows += len(js)
        if cur:
            chunks.append(cur)
        return chunks

    def _result(self, lp) -> LogpResult:
        vals = lp.double()
        total = float(vals.sum().item())
        n = int(lp.shape[0])
        self.stats.scored_tokens += n
        return LogpResult(total, n, [float(x) for x in lp.tolist()] if self.keep_token_logps else None)

    def _forward(self, input_ids, logits_to_keep: int = 0, use_cache: bool = False):
        """Whole sequences (no past); logits for the last logits_to_keep positions (0 = all)."""
        kw: dict[str, Any] = {"input_ids": input_ids, "use_cache": use_cache}
        if logits_to_keep:
            kw["logits_to_keep"] = logits_to_keep
        self.stats.forward_tokens += int(input_ids.numel())
        self.stats.logit_rows += int(input_ids.shape[0]) * (logits_to_keep or int(input_ids.shape[1]))
        return self.sm.model(**kw)

    def _split_head(self):
        """(decoder, lm_head) when logits are exactly lm_head(last hidden state), else None (models that scale
        or soft-cap their logits go through the whole model)."""
        m = self.sm.model
        cfg = getattr(m, "config", None)
        odd = any(getattr(cfg, a, None) for a in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
        dec = m.get_decoder() if hasattr(m, "get_decoder") else None
        head = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
        return None if odd or dec is None or head is None or dec is m else (dec, head)

    def _select_forward(self, ids, past, mask, pos, bi, pi):
        """Forward, then logits only at (row bi[k], column pi[k]): no lm_head work on pads or unneeded positions.
        Returns (logits [K, vocab], KV cache)."""
        split = self._split
        kw = {"attention_mask": mask, "position_ids": pos, "use_cache": True}
        if past is not None:
            kw["past_key_values"] = past
        self.stats.forward_tokens += int(ids.numel())
        if split is None:
            cols = sorted(set(pi.tolist()))
            out = self.sm.model(input_ids=ids, logits_to_keep=ids.new_tensor(cols), **kw)
            self.stats.logit_rows += int(ids.shape[0]) * len(cols)
            where = {c: k for k, c in enumerate(cols)}
            return out.logits[bi, ids.new_tensor([where[int(c)] for c in pi])], out.past_key_values
        dec, head = split
        out = dec(input_ids=ids, **kw)
        self.stats.logit_rows += int(bi.numel())
        return head(out.last_hidden_state[bi, pi]), out.past_key_values

    def _prefix_kv(self, tokens: tuple[int, ...]):
        """KV of a shared prefix: kept, or run alone (always alone, so it rounds the same either way)."""
        import torch

        kv = self.prefixes.get(tokens)
        if kv is not None:
            self.stats.prefix_hits += 1
            self.stats.prefix_tokens_saved += len(tokens)
            return kv
        out = self._forward(torch.tensor([list(tokens)], device=self.sm.device), logits_to_keep=1, use_cache=True)
        kv = _layers_kv(out.past_key_values, 1, len(tokens))
        self.prefixes.put(tokens, kv)
        return kv

    def _reuse_chunk(self, groups, chunk, results) -> None:
        """Contexts of the chunk's prompts in one batch (each on top of its prefix's KV), then their
        responses in batches on top of the contexts.

        KV layout of row i: [left pad | prefix_i] (width C) + [rest of context_i | right pad] (width R);
        pads are masked out and positions are given explicitly, so every row computes exactly what it
        would alone (up to floating-point rounding of different matmul shapes).

        Attention windows (sliding or chunked) are applied by cache column, not by the explicit positions, so the
        padded layout is used only when its widest row (C + R + the longest response) fits inside the window, where
        no window can hide a key; otherwise NoKvReuse("window") before anything is computed. A cache that does not
        hold every position fed raises NoKvReuse("cache") before any result is written."""
        import torch

        dev = self.sm.device
        ctxs = [groups[p][js[0]].ctx for p, js in chunk]
        pre_lens = [groups[p][js[0]].prefix if groups[p][js[0]].prefix >= self.min_prefix else 0 for p, js in chunk]
        P, C = len(chunk), max(pre_lens)
        R = max(len(c) - n for c, n in zip(ctxs, pre_lens))
        if self.window is not None:
            longest = max(len(groups[p][j].resp) for p, js in chunk for j in js)
            if C + R + longest > self.window:
                raise NoKvReuse("window", f"{C + R + longest} columns > window {self.window}")
        pre_kvs = [self._prefix_kv(tuple(c[:n])) if n else None for c, n in zip(ctxs, pre_lens)]
        pad = self._pad_id()
        ids = torch.full((P, R), pad, dtype=torch.long, device=dev)
        mask = torch.zeros((P, C + R), dtype=torch.long, device=dev)
        pos = torch.zeros((P, R), dtype=torch.long, device=dev)
        for i, (c, n) in enumerate(zip(ctxs, pre_lens)):
            rest = c[n:]
            ids[i, : len(rest)] = torch.tensor(rest, device=dev)
            mask[i, C - n: C + len(rest)] = 1
            pos[i] = torch.arange(n, n + R, device=dev)
        past = None
        if C:
            ref = next(kv for kv in pre_kvs if kv is not None)
            padded = []
            for layer, (k0, v0) in enumerate(ref):
                k = k0.new_zeros((P, k0.shape[1], C, k0.shape[3]))
                v = v0.new_zeros((P, v0.shape[1], C, v0.shape[3]))
                for i, (kv, n) in enumerate(zip(pre_kvs, pre_lens)):
                    if kv is not None:
                        k[i, :, C - n:] = kv[layer][0][0]
                        v[i, :, C - n:] = kv[layer][1][0]
                padded.append((k, v))
            past = _cache_from(padded)
        last_col = torch.tensor([len(c) - n - 1 for c, n in zip(ctxs, pre_lens)], device=dev)
        last, kv = self._select_forward(ids, past, mask, pos, torch.arange(P, device=dev), last_col)
        ctx_kv = _layers_kv(kv, P, C + R)
        self.stats.reused_contexts += P

        # Responses: every (prompt, response) row, longest first, in batches on top of its prompt's context.
        rows = [(i, p, j) for i, (p, js) in enumerate(chunk) for j in js]
        rows.sort(key=lambda r: -len(groups[r[1]][r[2]].resp))
        for batch in _chunks([len(groups[p][j].resp) for _, p, j in rows], self.batch_size, self.max_batch_tokens):
            sel = [rows[b] for b in batch]
            items = [groups[p][j] for _, p, j in sel]
            src = torch.tensor([i for i, _, _ in sel], device=dev)
            first_lp = _token_logps(last[src], torch.tensor([it.resp[0] for it in items], device=dev))
            width = max(len(it.resp) for it in items) - 1  # the last token predicts nothing
            rest_lp = None
            if width > 0:
                rids = torch.full((len(sel), width), pad, dtype=torch.long, device=dev)
                rpos = torch.zeros((len(sel), width), dtype=torch.long, device=dev)
                for r, it in enumerate(items):
                    seq = it.resp[:-1]
                    rids[r, : len(seq)] = torch.tensor(seq, device=dev)
                    rpos[r] = torch.arange(len(it.ctx), len(it.ctx) + width, device=dev)
                rmask = torch.cat([mask[src], torch.ones((len(sel), width), dtype=torch.long, device=dev)], dim=1)
                rpast = _cache_from([(k.index_select(0, src), v.index_select(0, src)) for k, v in ctx_kv])
                bi = torch.tensor([r for r, it in enumerate(items) for _ in it.resp[1:]], dtype=torch.long, device=dev)
                pi = torch.tensor([t for it in items for t in range(len(it.resp) - 1)], dtype=torch.long, device=dev)
                logits, _ = self._select_forward(rids, rpast, rmask, rpos, bi, pi)
                rest_lp = _token_logps(logits, torch.tensor([t for it in items for t in it.resp[1:]], device=dev))
            at = 0
            for r, ((_, p, j), it) in enumerate(zip(sel, items)):
                n = len(it.resp)
                lp = first_lp[r: r + 1]
                if n > 1:
                    lp = torch.cat([lp, rest_lp[at: at + n - 1]])
                    at += n - 1
                results[p][j] = self._result(lp)

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


def scorer_for(sm: ScoringModel, batch_size: int = 8, max_batch_tokens: int = 8192, prefix_cache_tokens: int = 16384):
    if sm.backend == "vllm":
        return VllmScorer(sm)  # vLLM keeps its own prefix cache (enable_prefix_caching)
    return LogpScorer(sm, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                      prefix_cache_tokens=prefix_cache_tokens)


# --- vLLM backend: prompt log-probs of context + response (the engines come from vllm_engine.load_scoring_engines;
# vLLM's prefix cache does the context reuse). Tested against LogpScorer in test/python/test_vllm.py.

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
