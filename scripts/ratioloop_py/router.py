"""The prompt router: SAFETY, REASONING (math and code) or CHAT.

kinds
  llm   – a local instruct model picks the label whose answer "[START]LABEL[END]" it finds most likely
          after the classification prompt (sum of log-probs; robust even for small models, no parsing), or,
          when the router model spec has `endpoint`, an OpenAI-compatible chat endpoint answers greedily and
          the reply is parsed for "[START]…[END]" (anything unparseable → CHAT, as in the paper).
  field – the prompt's own `domain` field.
  fixed – one label for every prompt.
Unlike the paper's released script, the classification prompt is always sent.
"""
from __future__ import annotations

import re
from typing import Any

from .chat_api import ChatEndpoint
from .guidance import LABELS

CLASSIFY_INSTRUCTIONS = (
    "You sort user requests into exactly one of three categories.\n"
    "SAFETY: the request asks for something harmful, dangerous, illegal, unethical or privacy-violating, or it "
    "touches a sensitive topic where the answer must be careful about harm.\n"
    "REASONING: the request needs mathematics, logic puzzles, step-by-step calculation, or writing, reading or "
    "fixing computer code.\n"
    "CHAT: everything else (general questions, advice, writing, conversation, knowledge).\n"
    "Answer with the category name only, wrapped as [START]CATEGORY[END], for example [START]CHAT[END].\n\n"
)
MAX_QUERY_CHARS = 4000

_LABEL_RE = re.compile(r"\[START\]\s*\**\s*([A-Za-z_]+)\s*\**\s*\[END\]", re.IGNORECASE)
_ALIASES = {"chat": "CHAT", "safety": "SAFETY", "reasoning": "REASONING", "math": "REASONING",
            "code": "REASONING", "coding": "REASONING"}


def conversation_text(messages: list[dict[str, str]]) -> str:
    """The prompt as the router sees it: the last user turn (earlier turns only as far as room allows)."""
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    text = users[-1] if users else (messages[-1].get("content", "") if messages else "")
    if len(text) > MAX_QUERY_CHARS:  # keep the start and the end of very long requests
        half = MAX_QUERY_CHARS // 2
        text = text[:half] + "\n[...]\n" + text[-half:]
    return text


REQUEST_OPEN = "Request:\n<<<\n"


def classification_prompt(messages: list[dict[str, str]]) -> str:
    return CLASSIFY_INSTRUCTIONS + REQUEST_OPEN + conversation_text(messages) + "\n>>>\n\nCategory:"


def parse_label(reply: Any) -> str | None:
    """The label inside the first [START]…[END] of a reply, or None."""
    if not isinstance(reply, str):
        return None
    m = _LABEL_RE.search(reply)
    if not m:
        return None
    return _ALIASES.get(m.group(1).strip().lower())


def normalize_label(value: Any) -> str | None:
    """A prompt's `domain` field as a label (case-insensitive; math/code count as REASONING)."""
    if not isinstance(value, str):
        return None
    return _ALIASES.get(value.strip().lower())


class EndpointRouter:
    """[START]label[END] over an OpenAI-compatible /chat/completions endpoint, greedy."""

    def __init__(self, endpoint: dict[str, Any], max_new_tokens: int = 16, timeout_s: float = 60.0,
                 retries: int = 3):
        self.api = ChatEndpoint(endpoint, role="router", max_retries=retries - 1, backoff_s=0.5, timeout_s=timeout_s)
        self.max_new_tokens = max_new_tokens

    @property
    def retries(self) -> int:
        return self.api.max_retries + 1

    @retries.setter
    def retries(self, n: int) -> None:
        self.api.max_retries = n - 1

    def ask(self, messages: list[dict[str, str]]) -> str:
        # Failures after the retries raise (a retryable stage error), never a silent CHAT.
        data = self.api.post({
            "model": self.api.model,
            "messages": [{"role": "user", "content": classification_prompt(messages)}],
            "temperature": 0,
            "max_tokens": self.max_new_tokens,
        })
        try:
            return data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return ""  # a malformed answer is unparseable → CHAT, like any other garbage

    def route(self, messages: list[dict[str, str]]) -> tuple[str, str]:
        label = parse_label(self.ask(messages))
        return (label, "endpoint") if label else ("CHAT", "endpoint-unparsed")


class LocalRouter:
    """Compare log p("[START]LABEL[END]" + end of turn | classification prompt) across the labels."""

    def __init__(self, sm, batch_size: int = 8, max_prompt_tokens: int = 2048):
        from .scoring import scorer_for

        self.sm = sm
        self.scorer = scorer_for(sm, batch_size=max(batch_size, len(LABELS)))
        self.max_prompt_tokens = max_prompt_tokens

    def route_many(self, batch: list[list[dict[str, str]]]) -> list[tuple[str, str, dict[str, float]]]:
        from .scoring import make_item

        groups = []
        for messages in batch:
            cls = [{"role": "user", "content": classification_prompt(messages)}]
            # The instructions are the same for every prompt: their KV is computed once (shared prefix).
            groups.append([make_item(self.sm, cls, f"[START]{lab}[END]", self.max_prompt_tokens, 64,
                                     shared_chars=len(CLASSIFY_INSTRUCTIONS) + len(REQUEST_OPEN)) for lab in LABELS])
        out = []
        for res in self.scorer.score_prompts(groups):
            lps = {lab: r.sum for lab, r in zip(LABELS, res)}
            best = max(LABELS, key=lambda lab: (lps[lab], -LABELS.index(lab)))  # ties → earlier label (CHAT)
            out.append((best, "llm-logprob", lps))
        return out
