"""`prompts: official`: the official judge prompt files, read at run time (ratioloop ships none of their text).

The files come from a pinned download (evals/data.py OFFICIAL, commit + sha256, cached) or a local path in the
official layout; this module only parses them and renders requests the way the official code does:

  ArenaHard v0.1   config/judge_config.yaml (system_prompt, prompt_template, temperature, max_tokens) and, for the
                   text of the second judgment attempt, the string literal gen_judgment.py sends.
  MT-Bench         FastChat fastchat/llm_judge/data/judge_prompts.jsonl (one JSON object per prompt name).
  AlpacaEval 2     alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt (a ChatML text), as weighted_alpaca_eval_gpt4_turbo
                   uses it.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..io import read_yaml
from .prompts import MT_PROMPT_NAMES, AlpacaPrompts, ArenaPrompts, MtPrompts

ALPACA_KEYS = ("instruction", "output_1", "output_2")


def load_arena(config: Path, code: Path | None, source: dict[str, Any], kind: str) -> ArenaPrompts:
    cfg = read_yaml(config)
    if not isinstance(cfg, dict):
        raise BadInput(f"{config}: expected arena-hard-auto's judge_config.yaml (a mapping)")
    for k in ("system_prompt", "prompt_template"):
        if k not in cfg:
            raise BadInput(f"{config}: missing key '{k}' (not an arena-hard-auto judge config)")
    templates = cfg["prompt_template"]
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, list) or len(templates) != 1 or not isinstance(templates[0], str):
        raise BadInput(f"{config}: prompt_template must hold one template (single-turn v0.1)")
    for key in ("{question_1}", "{answer_1}", "{answer_2}"):
        if key not in templates[0]:
            raise BadInput(f"{config}: prompt_template has no {key}")
    return ArenaPrompts(system=str(cfg["system_prompt"]), template=templates[0],
                        continue_text=continue_text(code) if code is not None else None, kind=kind, source=source,
                        temperature=cfg.get("temperature", 0),
                        max_tokens=int(cfg["max_tokens"]) if cfg.get("max_tokens") else None, judgment_prefix="\n")


def continue_text(code: Path) -> str:
    """The user message v0.1's gen_judgment.py appends before its second attempt: the one string literal given as
    the content of a {"role": "user", ...} message."""
    try:
        tree = ast.parse(code.read_text(encoding="utf-8"))
    except SyntaxError as e:
        raise BadInput(f"{code}: not Python ({e.msg})") from None
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        d = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
        role, content = d.get("role"), d.get("content")
        if (isinstance(role, ast.Constant) and role.value == "user" and isinstance(content, ast.Constant)
                and isinstance(content.value, str)):
            found.append(content.value)
    if len(set(found)) != 1:
        raise BadInput(f"{code}: expected one literal follow-up user message, found {len(set(found))}")
    return found[0]


def load_mt(path: Path, source: dict[str, Any], kind: str) -> MtPrompts:
    rows: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(r, dict) or "name" not in r:
            raise BadInput(f"{path}:{n}: a judge prompt needs a 'name'")
        rows[str(r["name"])] = r  # FastChat load_judge_prompts: the last row of a name wins
    by_name = {}
    for name in MT_PROMPT_NAMES.values():
        r = rows.get(name)
        if r is None:
            raise BadInput(f"{path}: no judge prompt named {name!r}")
        if r.get("output_format") != "[[rating]]":
            raise BadInput(f"{path}: {name} has output_format {r.get('output_format')!r}, expected '[[rating]]'")
        by_name[name] = (str(r.get("system_prompt") or ""), str(_need(r, "prompt_template", f"{path}: {name}")))
    # FastChat's run_judge_single: chat_completion_openai(model, conv, temperature=0, max_tokens=2048), n=1
    return MtPrompts(by_name=by_name, kind=kind, source=source, body={"n": 1, "temperature": 0})


def load_alpaca(path: Path, source: dict[str, Any], kind: str) -> AlpacaPrompts:
    text = path.read_text(encoding="utf-8")
    if not text.strip().startswith("<|im_start|>") or not text.strip().endswith("<|im_end|>"):
        raise BadInput(f"{path}: expected a ChatML prompt (<|im_start|> … <|im_end|>) as alpaca_eval's")
    keys = set(re.findall(r"{([^ \s]+?)}", text))
    if keys != set(ALPACA_KEYS):
        raise BadInput(f"{path}: placeholders {sorted(keys)}, expected {list(ALPACA_KEYS)}")
    return AlpacaPrompts(chatml=text, kind=kind, source=source, body={"top_p": 1.0})


def render_chatml(template: str, values: dict[str, str]) -> list[dict[str, str]]:
    """alpaca_eval's rendering: make_prompts (each placeholder, in order of first appearance, replaced once, in turn,
    which is not str.format), then prompt_to_chatml (strip; one message per <|im_start|> block: role = first line,
    content = the rest up to <|im_end|>, stripped)."""
    text = template
    for key in dict.fromkeys(re.findall(r"{([^ \s]+?)}", template)):
        text = text.replace("{" + key + "}", str(values[key]), 1)
    text = text.strip()
    out = []
    for block in text.split("<|im_start|>")[1:]:
        head, _, rest = block.partition("\n")
        role = head.strip()
        if role.startswith("system") and role != "system":
            raise BadInput("ChatML system blocks with parameters are not supported")
        out.append({"content": rest.split("<|im_end|>", 1)[0].strip(), "role": role})
    return out


def _need(row: dict[str, Any], key: str, where: str) -> Any:
    if key not in row:
        raise BadInput(f"{where}: missing key '{key}'")
    return row[key]


def prompt_set(bench: str, value: str | None, cache_dir: Path) -> ArenaPrompts | MtPrompts | AlpacaPrompts:
    """The prompts of `params.<bench>.prompts`: "ratioloop" (or null), "official" (pinned download), or a local file
    in the official layout (counted as official when its sha256 is the pinned one)."""
    from . import data, prompts

    if value in (None, "ratioloop"):
        return {"arena_hard": prompts.ratioloop_arena, "mt_bench": prompts.ratioloop_mt,
                "alpaca_eval": prompts.ratioloop_alpaca}[bench]()
    key = f"{bench}.prompts"
    path, _ = data.resolve(value, key, cache_dir, None, param=key)
    assert path is not None
    sha = data.sha256_file(path)
    official = sha == data.OFFICIAL[key]["sha256"]
    source = {"path": str(path), "sha256": sha, "official": official}
    kind = "official" if official else "file"
    if bench == "arena_hard":
        code: Path | None
        if value == "official":
            code, _ = data.resolve("official", "arena_hard.judge_code", cache_dir, None)
        else:  # the official repository's layout: config/judge_config.yaml beside ../gen_judgment.py
            code = next((c for c in (path.parent / "gen_judgment.py", path.parent.parent / "gen_judgment.py")
                         if c.is_file()), None)
        if code is not None:
            source["judge_code"] = {"path": str(code), "sha256": data.sha256_file(code),
                                    "official": data.sha256_file(code) == data.OFFICIAL["arena_hard.judge_code"]["sha256"]}
        return load_arena(path, code, source, kind)
    if bench == "mt_bench":
        return load_mt(path, source, kind)
    return load_alpaca(path, source, kind)
