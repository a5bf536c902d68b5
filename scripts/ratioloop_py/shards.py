"""Sharded stages (sample, score): which part of the stage's work a shard does, and how the shards are merged.

A sharded stage runs K activities, each with `params.shard = {index, count}` and a folder of its own
(`iter-k/<stage>/shard-0003-of-0008/`: spec, partial state, manifest), then one merge on the cpu queue that writes the
stage's one output and manifest under the unsharded spec (same spec hash as an unsharded run).

Byte-identical to an unsharded run: every shard plans the whole stage's batches exactly as an unsharded run does
(the same sort, the same batch composition, each batch seeded from its own content) and runs a contiguous range of
them, so every response or score is computed in the same batch with the same seed, whatever the split.

The merge program is the stage's own script in merge mode: the TS merge activity writes a list of the shards'
outputs (`shards.json`: index, count, outputDir, outputs with sha256) and names it in RATIOLOOP_MERGE_SHARDS.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput
from .io import sha256_path

MERGE_ENV = "RATIOLOOP_MERGE_SHARDS"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def range(self, n_units: int) -> tuple[int, int]:
        """[lo, hi) of n_units in plan order: contiguous, sizes differ by at most one, in index order."""
        return self.index * n_units // self.count, (self.index + 1) * n_units // self.count


def shard_of(params: dict[str, Any]) -> Shard | None:
    """params.shard, checked; None for an unsharded run."""
    raw = params.get("shard")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadInput(f"params.shard: expected {{index, count}}, got {raw!r}")
    i, k = raw.get("index"), raw.get("count")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (i, k)) or k < 1 or not 0 <= i < k:
        raise BadInput(f"params.shard: expected integers 0 <= index < count, got {raw!r}")
    return Shard(i, k)


def merge_list() -> list[dict[str, Any]] | None:
    """The shards to merge (RATIOLOOP_MERGE_SHARDS), checked: one of each index 0..K-1, outputs as hashed."""
    path = os.environ.get(MERGE_ENV)
    if not path:
        return None
    try:
        shards = json.loads(Path(path).read_text(encoding="utf-8"))["shards"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInput(f"{MERGE_ENV}={path}: not a readable shard list ({e})") from None
    counts = {s.get("count") for s in shards}
    if len(counts) != 1 or sorted(s.get("index") for s in shards) != list(range(len(shards))) or counts != {len(shards)}:
        raise BadInput(f"{path}: expected shards 0..K-1 of one count K, got {[(s.get('index'), s.get('count')) for s in shards]}")
    for s in shards:
        for name, ref in (s.get("outputs") or {}).items():
            if sha256_path(ref["path"]) != ref["sha256"]:
                raise BadInput(f"shard {s['index']}: output {name} ({ref['path']}) changed after the shard finished")
    return sorted(shards, key=lambda s: s["index"])


def shard_manifest(shard: dict[str, Any]) -> dict[str, Any]:
    return json.loads((Path(shard["outputDir"]) / "manifest.json").read_text(encoding="utf-8"))


def output_lines(shard: dict[str, Any], name: str) -> list[str]:
    """A shard's JSONL output as its raw lines (re-serializing nothing keeps the merged bytes the shard's bytes)."""
    text = Path(shard["outputs"][name]["path"]).read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line]
