"""ArenaHard v0.1 answer rows as arena-hard-auto's gen_answer.py writes them, so its show_result.py (including
style control) reads ratioloop's files:

  {question_id, answer_id, model_id, choices: [{index: 0, turns: [{content, token_len}]}], tstamp,
   conv_metadata: {token_len, header_count: {h1..h6}, list_count: {ordered, unordered}, bold_count: {"**", "__"}}}

token_len: the official files count with tiktoken's gpt-3.5-turbo encoding; ratioloop counts with the answering
model's own tokenizer (recorded in summary.json as `token_len_tokenizer`), since tiktoken's vocabulary is a download.
The markdown counts follow the official rule: code blocks' contents removed first, then per-line regexes.
"""
from __future__ import annotations

import re
from typing import Any

_CODE = re.compile("```([^`]*)```")
_HEADERS = {f"h{k}": re.compile(rf"^#{{{k}}}\s", re.MULTILINE) for k in range(1, 7)}
_ORDERED = re.compile(r"^\s*\d+\.\s", re.MULTILINE)
_UNORDERED = re.compile(r"^\s*[-*+]\s", re.MULTILINE)
_BOLD_STARS = re.compile(r"\*\*[^*\n]+\*\*")
_BOLD_UNDERSCORES = re.compile(r"__[^_\n]+__")


def strip_code(text: str) -> str:
    """Every code block's inner text removed (the fences stay), each found text removed everywhere it occurs."""
    for inner in _CODE.findall(text):
        text = text.replace(inner, "")
    return text


def markdown_counts(text: str) -> dict[str, dict[str, int]]:
    t = strip_code(text)
    return {
        "header_count": {h: len(p.findall(t)) for h, p in _HEADERS.items()},
        "list_count": {"ordered": len(_ORDERED.findall(t)), "unordered": len(_UNORDERED.findall(t))},
        "bold_count": {"**": len(_BOLD_STARS.findall(t)), "__": len(_BOLD_UNDERSCORES.findall(t))},
    }


def answer_row(question_id: Any, answer_id: str, model: str, text: str, token_len: int | None,
               tstamp: float | None) -> dict[str, Any]:
    """One v0.1 answer row for a single-turn answer. token_len None (an answer file without counts, e.g. official
    baseline answers re-written) leaves it out of the turn and conv_metadata, as older official files do."""
    turn: dict[str, Any] = {"content": text}
    if token_len is not None:
        turn["token_len"] = int(token_len)
    row: dict[str, Any] = {"question_id": question_id, "answer_id": answer_id, "model_id": model,
                           "choices": [{"index": 0, "turns": [turn]}]}
    if tstamp is not None:
        row["tstamp"] = float(tstamp)
    meta: dict[str, Any] = {"token_len": int(token_len)} if token_len is not None else {}
    row["conv_metadata"] = {**meta, **markdown_counts(text)}
    return row
