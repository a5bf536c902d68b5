"""Eval data: official sets (pinned revision + sha256, downloaded into a cache when online), local files, mini sets.

Every loader accepts both the current and the older layout of the official files, and returns plain dicts:
  ArenaHard question   {id, prompt, category, cluster}
  AlpacaEval item      {instruction, dataset, output?, generator?}
  MT-Bench question    {id, category, turns: [t1, t2], reference?: [r1, r2]}
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..io import read_json, read_jsonl, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[3]
MINI_DIR = REPO_ROOT / "configs" / "eval"

# Official files, pinned to a commit and a content hash. The hashes were computed on the files at these commits.
_GH = "https://raw.githubusercontent.com"
_HF = "https://huggingface.co/datasets/tatsu-lab/alpaca_eval/resolve/2edc6fad8be6b14ea7230aabfd08188da6b8b814"
OFFICIAL: dict[str, dict[str, str]] = {
    "arena_hard.questions": {
        "url": f"{_GH}/lmarena/arena-hard-auto/e0a8ea1df42c1df76451a6cd04b14e31ff992b87/data/arena-hard-v0.1/question.jsonl",
        "sha256": "4daad38811161c3ba5c248f26b90c3cef89634f4c772002ed9138c1e13f63e9f",
        "filename": "arena_hard_v0.1_question.jsonl",
    },
    "arena_hard.baseline_answers": {
        "url": f"{_GH}/lmarena/arena-hard-auto/e0a8ea1df42c1df76451a6cd04b14e31ff992b87/data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl",
        "sha256": "245109b8fe7c3bef0304f1c559d29da377f97f61535ad1170b46a61a08eb9ac7",
        "filename": "arena_hard_v0.1_gpt-4-0314.jsonl",
        "model": "gpt-4-0314",
    },
    # The reference outputs file carries the 805 instructions too (same order as the eval set).
    "alpaca_eval.reference_outputs": {
        "url": f"{_GH}/tatsu-lab/alpaca_eval/cd543a149df89434d8a54582c0151c0b945c3d20/results/gpt4_1106_preview/model_outputs.json",
        "sha256": "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4",
        "filename": "alpaca_eval_gpt4_1106_preview.json",
        "model": "gpt4_1106_preview",
    },
    # The LC GLM's two files exist only in the Hugging Face dataset tatsu-lab/alpaca_eval (not on GitHub, not in the
    # alpaca-eval wheel). Revision and hashes as another public harness pins them; that pin's hash of the dataset's
    # alpaca_eval_gpt4_baseline.json equals the reference-outputs hash above, which we checked.
    "alpaca_eval.df_gamed": {
        "url": f"{_HF}/df_gamed.csv",
        "sha256": "97aeec3f1c7de6dee6fd31fe66f1702623f4614c3efe1c6fc5f4927cd5fd674d",
        "filename": "alpaca_eval_df_gamed.csv",
    },
    "alpaca_eval.instruction_difficulty": {
        "url": f"{_HF}/instruction_difficulty.csv",
        "sha256": "e28d875bb334f75e17acd1e4ed659b261860e3db379cf5de29060301bed0a18b",
        "filename": "alpaca_eval_instruction_difficulty.csv",
    },
    "mt_bench.questions": {
        "url": f"{_GH}/lm-sys/FastChat/0e6d3e4beaab66f4d3f93db72541a4abab8af28d/fastchat/llm_judge/data/mt_bench/question.jsonl",
        "sha256": "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
        "filename": "mt_bench_question.jsonl",
    },
    "mt_bench.reference_answers": {
        "url": f"{_GH}/lm-sys/FastChat/0e6d3e4beaab66f4d3f93db72541a4abab8af28d/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
        "sha256": "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f",
        "filename": "mt_bench_reference_gpt-4.jsonl",
    },
    # Judge prompts (`prompts: official`), at the same commits as the data where the file existed there.
    "arena_hard.prompts": {
        "url": f"{_GH}/lmarena/arena-hard-auto/e0a8ea1df42c1df76451a6cd04b14e31ff992b87/config/judge_config.yaml",
        "sha256": "8f6e2a641676ae1453ae6be149b549d92b739564a23a8db27b86c50999fa607e",
        "filename": "arena_hard_v0.1_judge_config.yaml",
    },
    # gen_judgment.py holds the text of v0.1's second judgment attempt.
    "arena_hard.judge_code": {
        "url": f"{_GH}/lmarena/arena-hard-auto/e0a8ea1df42c1df76451a6cd04b14e31ff992b87/gen_judgment.py",
        "sha256": "c9da0736c812ebd07e58870178ce2fd73e276f2c16448c165629675ab00c94a6",
        "filename": "arena_hard_v0.1_gen_judgment.py",
    },
    "mt_bench.prompts": {
        "url": f"{_GH}/lm-sys/FastChat/0e6d3e4beaab66f4d3f93db72541a4abab8af28d/fastchat/llm_judge/data/judge_prompts.jsonl",
        "sha256": "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6",
        "filename": "mt_bench_judge_prompts.jsonl",
    },
    # weighted_alpaca_eval_gpt4_turbo's prompt_template; the alpaca-eval 0.6.6 wheel ships the same bytes.
    "alpaca_eval.prompts": {
        "url": f"{_GH}/tatsu-lab/alpaca_eval/cd543a149df89434d8a54582c0151c0b945c3d20/src/alpaca_eval/evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt",
        "sha256": "784227e6dc2832fc08c43d2c8ea3a308e7523780187a1aaad2f85e30bac85f62",
        "filename": "alpaca_eval_clf_gpt4_turbo.txt",
    },
}
OFFICIAL_SHA = {v["sha256"] for v in OFFICIAL.values()}
OFFICIAL_ALPACA_INSTRUCTIONS = 805


def default_cache_dir() -> Path:
    return Path(os.environ.get("RATIOLOOP_EVAL_CACHE") or (REPO_ROOT / ".ratioloop" / "cache" / "eval"))


def fetch_pinned(url: str, sha256: str, cache_dir: str | os.PathLike[str], filename: str | None = None,
                 timeout: float = 60.0) -> Path:
    """The cached file if its hash matches, else download (urllib), check the sha256, then move into place.

    A mismatch never lands in the cache: it is a BadInput naming both hashes.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / (filename or hashlib.sha256(url.encode()).hexdigest()[:16] + "_" + url.rsplit("/", 1)[-1])
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=cache)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            shutil.copyfileobj(r, f)
        got = sha256_file(tmp)
        if got != sha256:
            raise BadInput(f"{url}: sha256 {got} does not match the pinned {sha256}")
        os.replace(tmp, dest)
    except OSError as e:
        raise BadInput(f"{url}: download failed ({e}); give a local path instead of 'official' when offline") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def resolve(value: str | None, official_key: str, cache_dir: Path, default: Path | None,
            param: str | None = None) -> tuple[Path | None, bool]:
    """(path, is_official) for a config value: "official" → pinned download, a path → itself, None → default.

    `param` names the config key in errors when it differs from the official file's key (AlpacaEval's
    instructions come from the official reference-outputs file, which holds them)."""
    if value == "official":
        o = OFFICIAL[official_key]
        return fetch_pinned(o["url"], o["sha256"], cache_dir, o["filename"]), True
    if value:
        p = Path(value)
        if not p.exists():
            raise BadInput(f"params.{param or official_key}: {p} does not exist")
        return p, is_official_file(p)
    if default is not None and default.exists():
        return default, is_official_file(default)
    return None, False


def is_official_file(p: Path) -> bool:
    return p.is_file() and sha256_file(p) in OFFICIAL_SHA


def _read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for a .json list or a .jsonl file."""
    if path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise BadInput(f"{path}: expected a JSON list")
        return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    return [(f"{path}:{n}", r) for n, r in read_jsonl(path)]


def _need(row: dict, key: str, where: str) -> Any:
    if key not in row:
        raise BadInput(f"{where}: missing key '{key}'")
    return row[key]


def _text(content: Any) -> str:
    """Answer text in either ArenaHard layout: a string, {content}, or {answer} (current layout)."""
    if isinstance(content, dict):
        content = content.get("answer", content.get("content"))
        return _text(content)
    return "" if content is None else str(content)


def load_arena_questions(path: Path) -> list[dict[str, Any]]:
    out = []
    for where, r in _read_rows(path):
        if "uid" in r:  # current layout
            qid, prompt = str(r["uid"]), _need(r, "prompt", where)
        else:  # v0.1 layout
            qid = str(_need(r, "question_id", where))
            turns = _need(r, "turns", where)
            prompt = _text(turns[0])
        out.append({"id": qid, "prompt": prompt, "category": r.get("category", ""), "cluster": r.get("cluster", "")})
    _check_unique([q["id"] for q in out], path)
    return out


def load_arena_answers(path: Path) -> tuple[dict[str, str], str | None]:
    """({question id: answer text}, model name) from either ArenaHard answer layout."""
    answers: dict[str, str] = {}
    model = None
    for where, r in _read_rows(path):
        if "uid" in r:
            msgs = _need(r, "messages", where)
            answers[str(r["uid"])] = _text(msgs[-1]["content"])
            model = model or r.get("model")
        else:
            qid = str(_need(r, "question_id", where))
            choices = _need(r, "choices", where)
            answers[qid] = _text(choices[0]["turns"][0])
            model = model or r.get("model_id")
    return answers, model


def load_alpaca(path: Path) -> list[dict[str, Any]]:
    out = []
    for where, r in _read_rows(path):
        item = {"instruction": str(_need(r, "instruction", where)), "dataset": r.get("dataset", "")}
        if "output" in r:
            item["output"] = "" if r["output"] is None else str(r["output"])
            item["generator"] = r.get("generator", "")
        out.append(item)
    return out


def load_mt_questions(path: Path) -> list[dict[str, Any]]:
    out = []
    for where, r in _read_rows(path):
        turns = _need(r, "turns", where)
        if not isinstance(turns, list) or not turns:
            raise BadInput(f"{where}: 'turns' must be a non-empty list")
        q = {"id": str(_need(r, "question_id", where)), "category": str(_need(r, "category", where)),
             "turns": [str(t) for t in turns]}
        if r.get("reference"):
            q["reference"] = [str(t) for t in r["reference"]]
        out.append(q)
    _check_unique([q["id"] for q in out], path)
    return out


def load_mt_reference(path: Path) -> dict[str, list[str]]:
    """FastChat reference answers: {question id: [turn1, turn2]}."""
    refs = {}
    for where, r in _read_rows(path):
        choices = _need(r, "choices", where)
        refs[str(_need(r, "question_id", where))] = [_text(t) for t in choices[0]["turns"]]
    return refs


def load_instruction_difficulty(path: Path) -> list[float]:
    """AlpacaEval's instruction_difficulty.csv (index, instruction_difficulty): values in row order."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise BadInput(f"{path}: empty")
    head = rows[0]
    col = head.index("instruction_difficulty") if "instruction_difficulty" in head else len(head) - 1
    try:
        return [float(r[col]) for r in rows[1:] if r]
    except (ValueError, IndexError):
        raise BadInput(f"{path}: instruction_difficulty column is not numeric") from None


GAMED_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")


def load_df_gamed(path: Path) -> dict[str, list[Any]]:
    """AlpacaEval's df_gamed.csv (annotations of the gamed baselines, the LC GLM's regularizer) as columns in row
    order: index (instruction), preference (in [0, 1]; empty = NaN), std_delta_len, instruction_difficulty,
    not_gamed_baseline (bool). Other columns (model, a saved index) are ignored, as upstream drops them."""
    import csv
    import math

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise BadInput(f"{path}: empty")
    head = rows[0]
    missing = [c for c in GAMED_COLUMNS if c not in head]
    if missing:
        raise BadInput(f"{path}: not a df_gamed.csv (missing column {missing[0]!r})")
    col = {c: head.index(c) for c in GAMED_COLUMNS}
    out: dict[str, list[Any]] = {c: [] for c in GAMED_COLUMNS}
    bools = {"true": True, "false": False}
    for n, r in enumerate(rows[1:], start=2):
        if not r:
            continue
        try:
            out["index"].append(int(r[col["index"]]))
            pref = r[col["preference"]].strip()
            out["preference"].append(math.nan if pref in ("", "nan", "NaN") else float(pref))
            out["std_delta_len"].append(float(r[col["std_delta_len"]]))
            out["instruction_difficulty"].append(float(r[col["instruction_difficulty"]]))
            out["not_gamed_baseline"].append(bools[r[col["not_gamed_baseline"]].strip().lower()])
        except (ValueError, IndexError, KeyError):
            raise BadInput(f"{path}:{n}: a value of {', '.join(GAMED_COLUMNS)} is missing or not a number/bool") from None
    if not out["index"]:
        raise BadInput(f"{path}: no rows")
    return out


def _check_unique(ids: list[str], path: Path) -> None:
    seen = set()
    for i in ids:
        if i in seen:
            raise BadInput(f"{path}: duplicate question id {i}")
        seen.add(i)
