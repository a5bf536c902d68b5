#!/usr/bin/env python
"""pairs stage: scores + samples → preference pairs in TRL's conversational preference format.

For each prompt, chosen = the response with the highest reward and rejected = the one with the lowest (ties broken
by the lower response index, so the result does not depend on sort stability). An empty response (whitespace only)
is never chosen or rejected: it is dropped as a candidate, not the whole prompt, and counted (empty_candidates). A
prompt is dropped, and counted by the first reason that applies, when:
  no_valid_reward – fewer than two responses have a (non-null, finite) reward,
  empty           – fewer than two of those are non-empty,
  tie             – the highest reward equals the lowest,
  identical_text  – chosen and rejected texts are the same (after trimming whitespace),
  below_margin    – score_chosen − score_rejected < params.min_margin (when set).
The kept pairs are split into train/test with a seeded shuffle; both files are sorted by prompt_id so that the
output does not depend on the order the score shards were written in.

Inputs:  scores (scores.jsonl), samples (samples.jsonl).
Outputs: train.jsonl (manifest name "pairs"), test.jsonl ("pairs_test").
Params:  min_margin (float|null, null), test_fraction (float, 0.1), test_count (int|null, overrides the fraction),
         reward ("sum"|"mean", "sum": rank by `rewards` or by `mean_rewards`).
"""
from __future__ import annotations

import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.io import atomic_write_jsonl, read_jsonl  # noqa: E402
from ratioloop_py.stage import Stage, run_stage  # noqa: E402

DEFAULTS: dict[str, Any] = {"min_margin": None, "test_fraction": 0.1, "test_count": None, "reward": "sum"}
DROP_REASONS = ("no_valid_reward", "empty", "tie", "identical_text", "below_margin")


def resolve_params(raw: dict[str, Any]) -> dict[str, Any]:
    p = {**DEFAULTS, **{k: v for k, v in raw.items() if k != "models"}}
    if p["reward"] not in ("sum", "mean"):
        raise BadInput(f"params.reward: expected 'sum' or 'mean', got {p['reward']!r}")
    if p["min_margin"] is not None and not isinstance(p["min_margin"], (int, float)):
        raise BadInput(f"params.min_margin: expected a number or null, got {p['min_margin']!r}")
    tf = p["test_fraction"]
    if not isinstance(tf, (int, float)) or not 0 <= tf < 1:
        raise BadInput(f"params.test_fraction: expected a number in [0, 1), got {tf!r}")
    tc = p["test_count"]
    if tc is not None and (not isinstance(tc, int) or isinstance(tc, bool) or tc < 0):
        raise BadInput(f"params.test_count: expected a non-negative integer or null, got {tc!r}")
    return p


def _valid(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_samples(path: Path) -> dict[str, tuple[int, dict[str, Any]]]:
    by_id: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, row in read_jsonl(path):
        pid = row.get("prompt_id")
        if pid is None:
            raise BadInput(f"{path}:{line}: missing 'prompt_id'")
        if not isinstance(row.get("messages"), list) or not isinstance(row.get("responses"), list):
            raise BadInput(f"{path}:{line}: expected 'messages' and 'responses' lists")
        if str(pid) in by_id:
            raise BadInput(f"{path}:{line}: duplicate prompt_id {pid!r} (first at line {by_id[str(pid)][0]})")
        by_id[str(pid)] = (line, row)
    return by_id


def ranking_rewards(row: dict[str, Any], reward: str, where: str) -> list[Any]:
    if reward == "sum":
        rewards = row.get("rewards")
        if not isinstance(rewards, list):
            raise BadInput(f"{where}: missing 'rewards' list")
        return rewards
    mean = row.get("mean_rewards")
    if isinstance(mean, list):
        return mean
    # Older score files: derive the per-token mean from the sum and the token counts.
    rewards, n_tokens = row.get("rewards"), row.get("n_tokens")
    if isinstance(rewards, list) and isinstance(n_tokens, list) and len(rewards) == len(n_tokens):
        return [r / n if _valid(r) and isinstance(n, int) and n > 0 else None for r, n in zip(rewards, n_tokens)]
    raise BadInput(f"{where}: params.reward is 'mean' but the row has no 'mean_rewards' list")


def make_pair(score_row: dict[str, Any], sample_row: dict[str, Any], p: dict[str, Any],
              where: str) -> tuple[dict[str, Any] | None, str | None, dict[str, Any]]:
    """(pair, None, info) or (None, drop_reason, info) for one prompt."""
    rewards = ranking_rewards(score_row, p["reward"], where)
    responses = sample_row["responses"]
    if len(rewards) != len(responses):
        raise BadInput(f"{where}: {len(rewards)} rewards for {len(responses)} responses of prompt "
                       f"{score_row.get('prompt_id')!r} (they must match one to one, in order)")
    info = {"n_null": sum(1 for r in rewards if not _valid(r)), "n_empty": 0}
    valid = [i for i, r in enumerate(rewards) if _valid(r)]
    if len(valid) < 2:
        return None, "no_valid_reward", info
    # An empty best or worst response drops that candidate only (the next one takes its place); removing
    # every empty candidate up front gives the same pair, since one that is neither best nor worst never counts.
    texts = {i: str(responses[i].get("text") or "") for i in valid}
    nonempty = [i for i in valid if texts[i].strip()]
    info["n_empty"] = len(valid) - len(nonempty)
    if len(nonempty) < 2:
        return None, "empty", info
    hi = max(nonempty, key=lambda i: (rewards[i], -i))
    lo = min(nonempty, key=lambda i: (rewards[i], i))
    if rewards[hi] == rewards[lo]:
        return None, "tie", info
    c_text, r_text = texts[hi], texts[lo]
    if c_text.strip() == r_text.strip():
        return None, "identical_text", info
    margin = float(rewards[hi]) - float(rewards[lo])
    if p["min_margin"] is not None and margin < float(p["min_margin"]):
        return None, "below_margin", info
    n_tok = score_row.get("n_tokens")

    def tokens(i: int) -> int | None:
        if isinstance(n_tok, list) and i < len(n_tok) and isinstance(n_tok[i], int):
            return n_tok[i]
        n = responses[i].get("n_tokens")
        return n if isinstance(n, int) else None

    info.update(chosen_tokens=tokens(hi), rejected_tokens=tokens(lo), chosen_chars=len(c_text),
                rejected_chars=len(r_text))
    pair = {
        "prompt": sample_row["messages"],
        "chosen": [{"role": "assistant", "content": c_text}],
        "rejected": [{"role": "assistant", "content": r_text}],
        "score_chosen": float(rewards[hi]),
        "score_rejected": float(rewards[lo]),
        "margin": margin,
        "prompt_id": score_row["prompt_id"],
        "domain": score_row.get("domain") or sample_row.get("domain"),
    }
    return pair, None, info


def split(pairs: list[dict[str, Any]], p: dict[str, Any], seed: int) -> tuple[list[dict], list[dict]]:
    n = len(pairs)
    n_test = p["test_count"] if p["test_count"] is not None else int(round(n * p["test_fraction"]))
    n_test = max(0, min(n_test, n - 1))  # training needs at least one pair
    order = sorted(range(n), key=lambda i: str(pairs[i]["prompt_id"]))
    shuffled = list(order)
    random.Random(seed).shuffle(shuffled)
    test_ids = set(shuffled[:n_test])
    train = [pairs[i] for i in order if i not in test_ids]
    test = [pairs[i] for i in order if i in test_ids]
    return train, test


def _mean(xs: list[float]) -> float | None:
    return float(statistics.fmean(xs)) if xs else None


def main(stage: Stage) -> None:
    p = resolve_params(stage.params)
    scores_path = stage.input_path("scores")
    samples = load_samples(stage.input_path("samples"))
    score_rows = list(read_jsonl(scores_path))
    total = len(score_rows)
    dropped = {r: 0 for r in DROP_REASONS}
    kept: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    n_null = 0
    n_empty = 0
    n_score_errors = 0
    seen: set[str] = set()
    for k, (line, row) in enumerate(score_rows, start=1):
        where = f"{scores_path}:{line}"
        pid = row.get("prompt_id")
        if pid is None:
            raise BadInput(f"{where}: missing 'prompt_id'")
        if str(pid) in seen:
            raise BadInput(f"{where}: duplicate prompt_id {pid!r}")
        seen.add(str(pid))
        if str(pid) not in samples:
            raise BadInput(f"{where}: prompt_id {pid!r} has no row in the samples input")
        if row.get("errors"):
            n_score_errors += 1
        pair, reason, info = make_pair(row, samples[str(pid)][1], p, where)
        n_null += info["n_null"]
        n_empty += info["n_empty"]
        if pair is None:
            dropped[reason] += 1
        else:
            kept.append(pair)
            infos.append(info)
        if k % 1000 == 0 or k == total:
            stage.progress(k, total, "prompts")

    if not kept:
        detail = ", ".join(f"{r}={n}" for r, n in dropped.items() if n) or "the scores input is empty"
        raise BadInput(f"{scores_path}: no preference pairs remain out of {total} prompts ({detail}); "
                       "training needs at least one pair")

    train, test = split(kept, p, stage.seed)
    out = stage.output_dir
    atomic_write_jsonl(out / "train.jsonl", train)
    atomic_write_jsonl(out / "test.jsonl", test)

    margins = [x["margin"] for x in kept]
    ct = [i["chosen_tokens"] for i in infos if i["chosen_tokens"] is not None]
    rt = [i["rejected_tokens"] for i in infos if i["rejected_tokens"] is not None]
    longer = [i["chosen_tokens"] > i["rejected_tokens"] for i in infos
              if i["chosen_tokens"] is not None and i["rejected_tokens"] is not None]
    metrics: dict[str, Any] = {
        "prompts": total,
        "kept": len(kept),
        "train_rows": len(train),
        "test_rows": len(test),
        "dropped": sum(dropped.values()),
        **{f"dropped_{r}": n for r, n in dropped.items()},
        "null_rewards": n_null,
        "empty_candidates": n_empty,  # empty responses left out of a prompt's ranking (the prompt may still pair)
        "prompts_with_score_errors": n_score_errors,
        "reward": p["reward"],
        "margin_mean": _mean(margins),
        "margin_median": float(statistics.median(margins)),
        "margin_min": min(margins),
        "margin_max": max(margins),
        "margin_std": float(statistics.pstdev(margins)),
        # Per routed domain: does guidance (SAFETY/REASONING) separate responses more than plain chat?
        "margin_by_domain": {d: _mean([x["margin"] for x in kept if (x.get("domain") or "UNKNOWN") == d])
                             for d in sorted({x.get("domain") or "UNKNOWN" for x in kept})},
        "kept_by_domain": {d: sum(1 for x in kept if (x.get("domain") or "UNKNOWN") == d)
                           for d in sorted({x.get("domain") or "UNKNOWN" for x in kept})},
        # Length bias of the summed reward shows up as chosen responses being longer than rejected ones.
        "chosen_tokens_mean": _mean(ct),
        "rejected_tokens_mean": _mean(rt),
        "chosen_chars_mean": _mean([i["chosen_chars"] for i in infos]),
        "rejected_chars_mean": _mean([i["rejected_chars"] for i in infos]),
        "chosen_longer_fraction": _mean([float(b) for b in longer]),
    }
    for name in ("kept", "dropped", "margin_mean"):
        stage.metric(name, metrics[name])
    stage.log(f"{len(kept)}/{total} prompts kept ({len(train)} train, {len(test)} test); dropped "
              + ", ".join(f"{r}={n}" for r, n in dropped.items()))
    stage.write_manifest(outputs={"pairs": out / "train.jsonl", "pairs_test": out / "test.jsonl"},
                         metrics=metrics)


if __name__ == "__main__":
    run_stage(main)
