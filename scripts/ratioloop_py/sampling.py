"""Helpers of the sample stage: params, prompt loading (JSONL or a `datasets` source), validation,
de-duplication, rendering with truncation (ids by the one BOS rule, models.model_ids), batching plans, shard merging, metrics.

Everything here is pure or file-only, so it is unit-tested without a model where possible.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import BadInput
from .io import read_jsonl

ROLES = ("system", "user", "assistant")

DEFAULTS: dict[str, Any] = {
    "n": 4,
    "seeds": None,
    "temperature": 0.8,
    "top_p": 0.95,
    "top_k": 0,
    "max_new_tokens": 256,
    "max_prompt_tokens": 1024,
    "truncation": "middle",
    "stop": [],
    "stop_token_ids": [],
    "batch_size": 8,
    "backend": "auto",
    "tensor_parallel_size": 1,
    "num_processes": 1,
    "system_prompt": None,
    "on_bad_row": "error",
    "prompts": {"hf": None, "limit": None},
}


@dataclass
class SampleParams:
    n: int
    seeds: list[int]
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    max_prompt_tokens: int
    truncation: str
    stop: list[str]
    stop_token_ids: list[int]
    batch_size: int
    backend: str
    tensor_parallel_size: int
    num_processes: int
    system_prompt: str | None
    on_bad_row: str
    hf: dict[str, Any] | None
    limit: int | None


def _int(params: dict, key: str, lo: int | None = None) -> int:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInput(f"params.{key}: expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise BadInput(f"params.{key}: must be >= {lo}, got {v}")
    return v


def _num(params: dict, key: str, lo: float, hi: float) -> float:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
        raise BadInput(f"params.{key}: expected a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def _choice(params: dict, key: str, choices: tuple[str, ...]) -> str:
    v = params[key]
    if v not in choices:
        raise BadInput(f"params.{key}: expected one of {', '.join(choices)}, got {v!r}")
    return v


def derive_seeds(n: int, run_seed: int, iteration: int) -> list[int]:
    """One seed per response, distinct across iterations of a run (for n <= 100)."""
    return [run_seed * 1000 + iteration * 100 + i for i in range(n)]


def resolve_params(raw: dict[str, Any], run_seed: int, iteration: int) -> SampleParams:
    """Apply the defaults (the same as the TS schema's) and check types; errors name params.<key>."""
    p = {**DEFAULTS, **{k: v for k, v in (raw or {}).items() if v is not None or k in ("seeds", "system_prompt")}}
    prompts = {**DEFAULTS["prompts"], **(p.get("prompts") or {})}
    n = _int(p, "n", 1)
    seeds = p.get("seeds")
    if seeds is None:
        seeds = derive_seeds(n, run_seed, iteration)
    else:
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise BadInput(f"params.seeds: expected a non-empty list of integers or null, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise BadInput(f"params.seeds: seeds must be distinct (a repeated seed repeats its responses), got {seeds}")
        n = len(seeds)
    stop = p.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise BadInput(f"params.stop: expected a list of non-empty strings, got {stop!r}")
    stop_ids = p.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in stop_ids):
        raise BadInput(f"params.stop_token_ids: expected a list of integers, got {stop_ids!r}")
    sp = p.get("system_prompt")
    if sp is not None and not isinstance(sp, str):
        raise BadInput(f"params.system_prompt: expected a string or null, got {sp!r}")
    hf = prompts.get("hf")
    if hf is not None:
        if not isinstance(hf, dict) or not isinstance(hf.get("name"), str) or not hf["name"]:
            raise BadInput("params.prompts.hf: expected {name, split, config?, columns?} with a dataset name or local path")
        cols = hf.get("columns") or {}
        if not isinstance(cols, dict) or not all(isinstance(v, str) for v in cols.values()):
            raise BadInput(f"params.prompts.hf.columns: expected a map of column names, got {cols!r}")
        unknown = set(cols) - {"id", "prompt", "messages", "domain"}
        if unknown:
            raise BadInput(f"params.prompts.hf.columns: unknown keys {sorted(unknown)} (id, prompt, messages, domain)")
    limit = prompts.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BadInput(f"params.prompts.limit: expected a positive integer or null, got {limit!r}")
    return SampleParams(
        n=n, seeds=list(seeds),
        temperature=_num(p, "temperature", 0.0, 100.0), top_p=_num(p, "top_p", 1e-9, 1.0), top_k=_int(p, "top_k", 0),
        max_new_tokens=_int(p, "max_new_tokens", 1), max_prompt_tokens=_int(p, "max_prompt_tokens", 8),
        truncation=_choice(p, "truncation", ("left", "middle")), stop=list(stop), stop_token_ids=list(stop_ids),
        batch_size=_int(p, "batch_size", 1), backend=_choice(p, "backend", ("auto", "hf", "vllm")),
        tensor_parallel_size=_int(p, "tensor_parallel_size", 1), num_processes=_int(p, "num_processes", 1),
        system_prompt=sp,
        on_bad_row=_choice(p, "on_bad_row", ("error", "skip")), hf=hf, limit=limit,
    )


# --- prompts --------------------------------------------------------------------------------------------

@dataclass
class Prompt:
    id: str
    messages: list[dict[str, str]]
    domain: str | None = None
    where: str = ""  # "file:line" or "dataset[split] row i", for error messages


@dataclass
class LoadStats:
    rows: int = 0
    skipped: list[str] = field(default_factory=list)  # "where: why"
    duplicates: int = 0


class BadRows:
    """Applies on_bad_row: 'error' raises BadInput naming the row; 'skip' records it (counted in metrics)."""

    def __init__(self, mode: str, stats: LoadStats, log: Callable[[str], None] | None = None):
        self.mode, self.stats, self.log = mode, stats, log

    def __call__(self, where: str, why: str) -> None:
        if self.mode == "error":
            raise BadInput(f"{where}: {why} (set on_bad_row: skip to drop such rows)")
        self.stats.skipped.append(f"{where}: {why}")
        if self.log:
            self.log(f"skipped bad row {where}: {why}")


def _check_messages(messages: Any) -> str | None:
    """Why these messages cannot be a prompt, or None."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {role, content}"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            return f"messages[{i}] must be {{role: system|user|assistant, content: string}}"
    if messages[-1]["role"] != "user":
        return f"the last message is a {messages[-1]['role']!r} turn, not a user turn"
    if not messages[-1]["content"].strip():
        return "the last user message is empty"
    return None


def _clean(messages: list[dict]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _row_to_prompt(row: dict, where: str, bad: BadRows, *, id_key: str | None = "id", msg_key: str | None = "messages",
                   prompt_key: str | None = "prompt", domain_key: str | None = "domain") -> Prompt | None:
    messages = row.get(msg_key) if msg_key else None
    if messages is None and prompt_key and prompt_key in row:
        text = row[prompt_key]
        # A prompt column holds either a string (one user turn) or a message list.
        messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
    why = _check_messages(messages)
    if why:
        bad(where, why)
        return None
    pid = row.get(id_key) if id_key else None
    if pid is None:
        if id_key == "id":
            bad(where, "missing 'id'")
            return None
        pid = content_id(messages)  # sources without ids: a stable id from the content
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or str(pid) == "":
        bad(where, f"'id' must be a non-empty string, got {pid!r}")
        return None
    domain = row.get(domain_key) if domain_key else None
    if domain is not None and not isinstance(domain, str):
        bad(where, f"'domain' must be a string, got {domain!r}")
        return None
    return Prompt(id=str(pid), messages=_clean(messages), domain=domain, where=where)


def content_id(messages: list[dict]) -> str:
    h = hashlib.sha256(json.dumps(_clean(messages), sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"p-{h[:16]}"


def load_prompts_jsonl(path: Path, bad: BadRows) -> list[Prompt]:
    out = []
    for lineno, row in read_jsonl(path):
        bad.stats.rows += 1
        p = _row_to_prompt(row, f"{path}:{lineno}", bad)
        if p:
            out.append(p)
    return out


def _open_dataset(name: str, split: str, config: str | None):
    import datasets

    p = Path(name)
    try:
        if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()
                           or (p / "state.json").exists()):
            ds = datasets.load_from_disk(str(p))  # a save_to_disk folder
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise BadInput(f"params.prompts.hf: {name} has no split {split!r} (has {sorted(ds)})")
                ds = ds[split]
            return ds
        if p.is_file():
            builder = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}.get(p.suffix)
            if builder is None:
                raise BadInput(f"params.prompts.hf.name: {name}: unsupported file type (json, jsonl, csv, parquet)")
            return datasets.load_dataset(builder, data_files={split: str(p)}, split=split)
        return datasets.load_dataset(name, config, split=split)
    except BadInput:
        raise
    except Exception as e:  # noqa: BLE001 - offline hub misses, bad splits, bad files: not retryable
        if "Connection" in type(e).__name__ or "Timeout" in type(e).__name__:
            raise  # a network hiccup: let the runner retry
        raise BadInput(f"params.prompts.hf: cannot load dataset {name!r} split {split!r}: {type(e).__name__}: {e}") from None


def load_prompts_hf(hf: dict[str, Any], bad: BadRows) -> list[Prompt]:
    name, split, config = hf["name"], hf.get("split") or "train", hf.get("config")
    ds = _open_dataset(name, split, config)
    cols = dict(hf.get("columns") or {})
    names = set(ds.column_names)
    for k, c in cols.items():
        if c not in names:
            raise BadInput(f"params.prompts.hf.columns.{k}: column {c!r} not in dataset {name} (has {sorted(names)})")
    # Without a mapping: a 'prompt' column wins over 'messages' (UltraFeedback's messages hold the answer too).
    if "prompt" not in cols and "messages" not in cols:
        if "prompt" in names:
            cols["prompt"] = "prompt"
        elif "messages" in names:
            cols["messages"] = "messages"
        else:
            raise BadInput(f"params.prompts.hf.columns: dataset {name} has no 'prompt' or 'messages' column; "
                           f"map one (has {sorted(names)})")
    if "id" not in cols:
        cols["id"] = next((c for c in ("id", "prompt_id") if c in names), None)  # type: ignore[assignment]
    if "domain" not in cols and "domain" in names:
        cols["domain"] = "domain"
    out = []
    for i, row in enumerate(ds):
        bad.stats.rows += 1
        p = _row_to_prompt(row, f"{name}[{split}] row {i}", bad, id_key=cols.get("id") or None,
                           msg_key=cols.get("messages"), prompt_key=cols.get("prompt"), domain_key=cols.get("domain"))
        if p:
            out.append(p)
    return out


def dedup_sort(prompts: list[Prompt], bad: BadRows, limit: int | None = None) -> list[Prompt]:
    """Order stably by id so every seed's shard lines up; drop repeats (same id or same messages).

    The same id with different messages is a bad row (the later one); the same messages under another id
    are a duplicate and dropped (the smallest id is kept), as SimPO de-duplicates its prompt list.
    """
    by_id: dict[str, Prompt] = {}
    for p in prompts:
        prev = by_id.get(p.id)
        if prev is None:
            by_id[p.id] = p
        elif prev.messages == p.messages:
            bad.stats.duplicates += 1
        else:
            bad(p.where, f"id {p.id!r} repeats {prev.where} with different messages")
    seen: set[str] = set()
    out = []
    for pid in sorted(by_id):
        p = by_id[pid]
        key = json.dumps(p.messages, sort_keys=True, ensure_ascii=False)
        if key in seen:
            bad.stats.duplicates += 1
            continue
        seen.add(key)
        out.append(p)
    return out[:limit] if limit else out


def with_system(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """Prepend the configured system prompt unless the row brings its own."""
    if system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}] + messages


# --- rendering, truncation ----------------------------------------------------------------------------

def cut_ids(ids: list[int], keep: int, mode: str) -> list[int]:
    """Keep `keep` ids: 'left' drops from the start, 'middle' keeps the head and the tail."""
    if keep >= len(ids):
        return list(ids)
    if keep <= 0:
        return []
    if mode == "left":
        return list(ids[len(ids) - keep:])
    head = (keep + 1) // 2
    tail = keep - head
    return list(ids[:head]) + (list(ids[len(ids) - tail:]) if tail else [])


@dataclass
class Rendered:
    text: str
    ids: list[int]  # what the model is fed: models.model_ids(text), the one BOS rule
    n_tokens: int
    messages: list[dict[str, str]]
    truncated: bool


def _drop_oldest_turn(msgs: list[dict[str, str]]) -> bool:
    """Remove the oldest non-system turn before the last message (a user/assistant pair where possible)."""
    first = next((i for i, m in enumerate(msgs[:-1]) if m["role"] != "system"), None)
    if first is None:
        return False
    n = 2 if first + 1 < len(msgs) - 1 and msgs[first + 1]["role"] == "assistant" else 1
    del msgs[first:first + n]
    return True


def render_fit(tok, messages: list[dict[str, str]], template: str, max_tokens: int, mode: str) -> Rendered:
    """Render, encode with the BOS rule (models.model_ids) and fit into max_tokens, keeping the template's framing.

    Truncation works on message contents, never on the rendered ids, so the BOS, role headers and the
    generation prompt survive. 'middle' cuts the middle of the last user message (its head and tail are
    usually the instruction and the question) and drops the oldest turns only if that is not enough;
    'left' drops the oldest turns first, then the start of the last user message.
    Raises ValueError when even an almost empty last message does not fit.
    """
    from .models import encode, model_ids, render_prompt

    def render(ms):
        text = render_prompt(tok, ms, template)
        ids = model_ids(tok, text)
        return text, ids, len(ids)

    text, ids, n = render(messages)
    if n <= max_tokens:
        return Rendered(text, ids, n, messages, False)
    msgs = [dict(m) for m in messages]
    if mode == "left":
        while n > max_tokens and _drop_oldest_turn(msgs):
            text, ids, n = render(msgs)
    for attempt in range(12):
        if n <= max_tokens:
            break
        content = encode(tok, msgs[-1]["content"])
        keep = len(content) - (n - max_tokens) - attempt  # re-tokenizing a cut can merge differently: shrink more
        if keep < 1:
            if _drop_oldest_turn(msgs):
                text, ids, n = render(msgs)
                continue
            raise ValueError(f"prompt needs {n} tokens and its framing alone exceeds max_prompt_tokens={max_tokens}")
        msgs[-1]["content"] = tok.decode(cut_ids(content, keep, mode))
        text, ids, n = render(msgs)
    if n > max_tokens:
        raise ValueError(f"could not fit the prompt into max_prompt_tokens={max_tokens} ({n} tokens)")
    return Rendered(text, ids, n, msgs, True)


# --- plans, shards, merge ------------------------------------------------------------------------------

def rank_slice(items: list, rank: int, world_size: int) -> list:
    """Strided slice: with items ordered by length, every rank gets a similar mix of long and short prompts."""
    return items[rank::world_size]


def plan_batches(ids: list[str], batch_size: int) -> list[list[str]]:
    return [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]


def batch_key(ids: list[str]) -> str:
    """A batch's RNG key is its content, so the same batch draws the same text in any run or rank."""
    return hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:16]


def shard_name(seed: int, rank: int, world_size: int) -> str:
    return f"seed-{seed}.jsonl" if world_size == 1 else f"seed-{seed}.rank-{rank}-of-{world_size}.jsonl"


def merge(prompts: list[Prompt], rendered: dict[str, Rendered], seeds: list[int],
          shard_rows: dict[int, Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """samples.jsonl rows, ordered by prompt id, responses in seed order (DESIGN §5)."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {s: {} for s in seeds}
    for s, rows in shard_rows.items():
        for r in rows:
            by_seed[s][r["prompt_id"]] = r
    out = []
    for p in prompts:
        responses = []
        for s in seeds:
            r = by_seed[s].get(p.id)
            if r is None:
                raise RuntimeError(f"shard for seed {s} has no response for prompt {p.id}")
            responses.append({"text": r["text"], "seed": s, "finish_reason": r["finish_reason"],
                              "n_tokens": r["n_tokens"]})
        row: dict[str, Any] = {"prompt_id": p.id, "messages": rendered[p.id].messages}
        if p.domain is not None:
            row["domain"] = p.domain
        row["responses"] = responses
        row["all_identical"] = len(responses) > 1 and len({r["text"] for r in responses}) == 1
        out.append(row)
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: a length that actually occurred)."""
    if not values:
        return 0.0
    v = sorted(values)
    return float(v[max(0, math.ceil(q / 100 * len(v)) - 1)])


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    lens = [r["n_tokens"] for row in rows for r in row["responses"]]
    cut = sum(1 for row in rows for r in row["responses"] if r["finish_reason"] == "length")
    empty = sum(1 for row in rows for r in row["responses"] if not r["text"])
    return {
        "prompts": len(rows),
        "responses": len(lens),
        "response_tokens_mean": round(sum(lens) / len(lens), 3) if lens else 0.0,
        "response_tokens_p95": percentile(lens, 95),
        "frac_cut_at_max_new_tokens": round(cut / len(lens), 6) if lens else 0.0,
        "empty_responses": empty,
        "identical_response_prompts": sum(1 for row in rows if row["all_identical"]),
    }
