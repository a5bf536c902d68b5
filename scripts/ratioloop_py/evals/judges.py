"""Judges: an OpenAI-compatible chat endpoint, and a local HF model that chooses among the allowed verdicts by
log-probability (so even a small local judge always yields a valid verdict).

Both take JudgeRequests and return JudgeReplies; a cache (jsonl, keyed by the judge's identity and the whole
request, i.e. prompt and answers) makes retries and reruns free. A local judge's identity carries a fingerprint of
its files, so a judge retrained in place never reuses its old verdicts.

A judge error that cannot be retried (a 4xx other than 401/403, or retries exhausted) becomes an *invalid* reply
(`error` set, empty text), as the official tools record an invalid judgment; it is never cached, so a rerun asks
again. The evaluate stage counts them and fails only above `judge.max_invalid_share`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..chat_api import ApiError, ChatEndpoint  # noqa: F401 - ApiError is part of this module's API
from ..io import JsonlAppender, read_partial_jsonl


@dataclass
class JudgeRequest:
    messages: list[dict[str, str]]
    choices: list[str]                 # the allowed verdicts (what a local judge chooses among)
    cue: str = ""                      # local judge: text the verdict follows, e.g. "Rating: [["
    close: str = ""                    # local judge: text after the verdict, e.g. "]]"
    max_tokens: int = 2048             # API judge
    temperature: float = 0.0           # API judge
    logprobs: bool = False             # API judge: one token, read the top log-probs (AlpacaEval)
    body: dict[str, Any] = field(default_factory=dict)  # API judge: extra body keys an official tool sends (n, top_p)


@dataclass
class JudgeReply:
    text: str
    probs: dict[str, float] | None = None   # local: normalized over choices; API logprobs mode: top-token probs
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None                 # set on an invalid judgment (the judge could not answer)

    @property
    def invalid(self) -> bool:
        return self.error is not None


# Files hashed whole for a local judge's fingerprint; bigger ones (weights) by name, size and mtime, which changes
# whenever a training run writes them, without reading gigabytes.
_HASH_WHOLE_BELOW = 4 << 20


def files_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 over every file under a model folder: content of small files (config, tokenizer, chat template),
    name + size + mtime of large ones (weights)."""
    root = Path(path)
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        rel = f.name if f == root else f.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        if st.st_size < _HASH_WHOLE_BELOW:
            h.update(b"c" + hashlib.sha256(f.read_bytes()).digest())
        else:
            h.update(f"s{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class JudgeCache:
    """Append-only jsonl of {key, reply}; thread-safe; the last row for a key wins."""

    def __init__(self, path: str | os.PathLike[str] | None, shared: "JudgeCache | None" = None):
        self.path = Path(path) if path else None
        self.shared = shared  # a cross-run cache consulted on a miss and written on every put
        self._lock = threading.Lock()
        self._mem: dict[str, dict[str, Any]] = {}
        self._app: JsonlAppender | None = None
        if self.path is not None:
            for row in read_partial_jsonl(self.path):
                if "key" in row and "reply" in row:
                    self._mem[row["key"]] = row["reply"]
            self._app = JsonlAppender(self.path)
        self.hits = 0

    def get(self, key: str) -> JudgeReply | None:
        with self._lock:
            r = self._mem.get(key)
        if r is None and self.shared is not None:
            hit = self.shared.get(key)
            if hit is not None:
                self.put(key, hit, _local_only=True)
                r = self._mem.get(key)
        if r is None:
            return None
        with self._lock:
            self.hits += 1
        return JudgeReply(text=r["text"], probs=r.get("probs"), cached=True, extra=r.get("extra") or {})

    def put(self, key: str, reply: JudgeReply, _local_only: bool = False) -> None:
        row = {"text": reply.text, "probs": reply.probs, "extra": reply.extra}
        with self._lock:
            self._mem[key] = row
            if self._app is not None:
                self._app.write_batch([{"key": key, "reply": row}])
        if self.shared is not None and not _local_only:
            self.shared.put(key, reply)

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
        if self.shared is not None:
            self.shared.close()


_ERR_LOCK = threading.Lock()


class Judge:
    identity: dict[str, Any]
    cache: "JudgeCache | None" = None
    n_errors: int = 0                  # invalid judgments so far (judge errors, never cached)
    first_error: str | None = None

    @property
    def name(self) -> str:
        return str(self.identity.get("model") or self.identity.get("name"))

    def key(self, req: JudgeRequest) -> str:
        return hashlib.sha256(_canonical({"judge": self.identity, "request": self._payload_id(req)}).encode()).hexdigest()

    def _payload_id(self, req: JudgeRequest) -> dict[str, Any]:
        return asdict(req)

    def one(self, req: JudgeRequest) -> JudgeReply:
        """One verdict; from the cache when this judge already answered this exact request. Judge errors raise."""
        key = self.key(req)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        reply = self._ask(req)
        if self.cache is not None:
            self.cache.put(key, reply)
        return reply

    def one_or_invalid(self, req: JudgeRequest) -> JudgeReply:
        """What the benchmarks ask for: a judge error that retrying cannot fix (ApiError) comes back as an invalid
        reply, counted and not cached. BadInput (e.g. a wrong key) still stops the stage: no judgment could
        succeed."""
        try:
            return self.one(req)
        except ApiError as e:
            with _ERR_LOCK:
                self.n_errors += 1
                if self.first_error is None:
                    self.first_error = str(e)
            return JudgeReply(text="", error=str(e))

    def _ask(self, req: JudgeRequest) -> JudgeReply:
        raise NotImplementedError

    def judge(self, reqs: list[JudgeRequest], on_done: Callable[[int], None] | None = None) -> list[JudgeReply]:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------ API judge
class ApiJudge(Judge):
    """Any OpenAI-compatible /chat/completions endpoint.

    The API key is read from the environment variable named by endpoint.api_key_env and never logged or cached.
    429, 5xx and connection errors are retried with exponential backoff (honouring Retry-After); other 4xx fail.
    """

    def __init__(self, endpoint: dict[str, Any], *, concurrency: int = 4, max_retries: int = 5,
                 backoff_s: float = 1.0, timeout_s: float = 120.0, cache: JudgeCache | None = None,
                 extra_body: dict[str, Any] | None = None):
        self.api = ChatEndpoint(endpoint, role="judge", max_retries=max_retries, backoff_s=backoff_s,
                                timeout_s=timeout_s)
        self.url = self.api.url
        self.model = self.api.model
        self.identity = self.api.identity
        self.concurrency = max(1, int(concurrency))
        self.cache = cache
        self.extra_body = extra_body or {}

    @property
    def n_requests(self) -> int:
        return self.api.n_requests

    @property
    def n_retries(self) -> int:
        return self.api.n_retries

    def _payload_id(self, req: JudgeRequest) -> dict[str, Any]:
        return self.payload(req)

    def payload(self, req: JudgeRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": req.messages, "temperature": req.temperature,
                                "max_tokens": 1 if req.logprobs else req.max_tokens, **self.extra_body}
        if req.logprobs:
            body.update(logprobs=True, top_logprobs=5)
        body.update(req.body)
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.api.post(body)

    def _ask(self, req: JudgeRequest) -> JudgeReply:
        resp = self._post(self.payload(req))
        try:
            choice = resp["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError):
            raise ApiError(f"judge endpoint {self.url}: unexpected response shape") from None
        probs = None
        if req.logprobs:
            probs = {}
            content = ((choice.get("logprobs") or {}).get("content") or [])
            if content:
                for t in content[0].get("top_logprobs") or []:
                    probs[t["token"]] = probs.get(t["token"], 0.0) + math.exp(t["logprob"])
        return JudgeReply(text=text, probs=probs)

    def judge(self, reqs, on_done=None):
        out: list[JudgeReply | None] = [None] * len(reqs)
        done = 0
        with ThreadPoolExecutor(max_workers=self.concurrency) as ex:
            futs = {ex.submit(self.one_or_invalid, r): i for i, r in enumerate(reqs)}
            from concurrent.futures import as_completed

            for f in as_completed(futs):
                out[futs[f]] = f.result()
                done += 1
                if on_done:
                    on_done(done)
        return out  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ local judge
def local_fingerprint(spec: dict[str, Any]) -> str:
    """What makes a local judge's verdicts: its files (weights, config, tokenizer) where they are on disk, else
    the hub id and revision; plus the dtype asked for."""
    parts = []
    for key in ("path", "tokenizer"):
        v = spec.get(key)
        if v and Path(str(v)).exists():
            parts.append(f"{key}={files_fingerprint(v)}")
    if not parts:
        parts.append(f"hub={spec.get('hub') or spec.get('path')}@{spec.get('revision') or ''}")
    parts.append(f"dtype={spec.get('dtype') or ''}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class LocalJudge(Judge):
    """A local causal LM that scores each allowed verdict: log p(cue + verdict + close | rendered judge prompt).

    The context (prompt + cue) is run once; the candidates then continue from its KV cache in one batch.
    """

    def __init__(self, spec: dict[str, Any], *, model=None, tok=None, cache: JudgeCache | None = None):
        from ..models import load_model, load_tokenizer

        self.spec = spec
        self.tok = tok if tok is not None else load_tokenizer(spec)
        self.model = model if model is not None else load_model(spec)
        self.template = spec.get("template", "chat")
        src = spec.get("path") or spec.get("hub")
        self.identity = {"type": "local", "name": Path(str(src)).name, "path": str(src), "template": self.template,
                         "method": "verdict log-probs", "fingerprint": local_fingerprint(spec)}
        self.cache = cache

    def _payload_id(self, req):
        # sampling settings do not matter to a log-prob judge
        return {"messages": req.messages, "choices": req.choices, "cue": req.cue, "close": req.close}

    def context_text(self, req: JudgeRequest) -> str:
        from ..models import render_prompt

        return render_prompt(self.tok, req.messages, self.template) + req.cue

    def candidate_ids(self, ctx_text: str, ctx_ids: list[int], choices: list[str], close: str) -> list[list[int]]:
        from ..models import encode, model_ids

        out = []
        for c in choices:
            full = model_ids(self.tok, ctx_text + c + close)  # the one BOS rule, as ctx_ids
            # Tokenize in context when the boundary is stable, else on its own.
            cont = full[len(ctx_ids):] if full[:len(ctx_ids)] == ctx_ids else encode(self.tok, c + close)
            out.append(cont or encode(self.tok, c))
        return out

    def choice_logprobs(self, req: JudgeRequest) -> list[float]:
        import torch

        from ..models import model_ids

        ctx_text = self.context_text(req)
        ctx_ids = model_ids(self.tok, ctx_text)  # the one BOS rule (models.model_ids), as every stage
        conts = self.candidate_ids(ctx_text, ctx_ids, req.choices, req.close)
        dev = self.model.device
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ctx_ids], device=dev), use_cache=True)
            first_lp = torch.log_softmax(out.logits[0, -1].float(), -1)
            scores = [float(first_lp[c[0]]) for c in conts]
            if any(len(c) > 1 for c in conts):
                rest = [c[:-1] for c in conts]  # inputs that predict tokens 2..n of each candidate
                width = max(len(r) for r in rest)
                n = len(conts)
                ids = torch.full((n, width), int(self.tok.pad_token_id or 0), device=dev)
                mask = torch.zeros((n, len(ctx_ids) + width), dtype=torch.long, device=dev)
                mask[:, :len(ctx_ids)] = 1
                for i, r in enumerate(rest):
                    ids[i, :len(r)] = torch.tensor(r, device=dev)
                    mask[i, len(ctx_ids):len(ctx_ids) + len(r)] = 1
                past = out.past_key_values
                past.batch_repeat_interleave(n)
                pos = torch.arange(len(ctx_ids), len(ctx_ids) + width, device=dev).unsqueeze(0).expand(n, -1)
                o2 = self.model(input_ids=ids, attention_mask=mask, past_key_values=past, position_ids=pos,
                                use_cache=True)
                lp = torch.log_softmax(o2.logits.float(), -1)
                for i, c in enumerate(conts):
                    for j in range(1, len(c)):
                        scores[i] += float(lp[i, j - 1, c[j]])
        return scores

    def _ask(self, req: JudgeRequest) -> JudgeReply:
        scores = self.choice_logprobs(req)
        m = max(scores)
        z = sum(math.exp(s - m) for s in scores)
        probs = {c: math.exp(s - m) / z for c, s in zip(req.choices, scores)}
        best = req.choices[max(range(len(scores)), key=lambda i: scores[i])]
        return JudgeReply(text=req.cue + best + req.close, probs=probs,
                          extra={"logprobs": {c: s for c, s in zip(req.choices, scores)}})

    def judge(self, reqs, on_done=None):
        out = []
        for i, r in enumerate(reqs):
            out.append(self.one_or_invalid(r))
            if on_done:
                on_done(i + 1)
        return out
