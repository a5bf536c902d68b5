"""The prompt router: SAFETY, REASONING (math and code) or CHAT.

kinds
  llm   – a local instruct model picks the label whose answer "[START]LABEL[END]" it finds most likely
          after the classification prompt (sum of log-probs; robust even for small models, no parsing), or,
          when the router model spec has `endpoint`, an OpenAI-compatible chat endpoint answers greedily and
          the reply is parsed for "[START]…[END]" (anything unparseable → CHAT, as in the paper).
  label – the prompt's own `domain` label when it has one (how: label), else the llm router (how: llm-…/endpoint…).
  field – the prompt's own `domain` field (missing → CHAT).
  fixed – one label for every prompt.
prompts
  ratioloop – ratioloop's own instructions (below), the request between <<< >>> in one user turn.
  cdr       – the reference's CLASSIFY_PROMPT (read at run time from the reference repository, see cdr_reference)
              as the system turn and the request as the user turn, its answer read by the reference's rule.
Either way the router sees the conversation's user turns (not only the last one), and a long request is cut in
its middle inside the prompt, never the instructions. Unlike the paper's released script, the classification
prompt is always sent.
"""
from __future__ import annotations

import re
from typing import Any

from .chat_api import ChatEndpoint
from .errors import BadInput
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


def truncate_middle(text: str, max_chars: int) -> str:
    """The start and the end of a long text (the last question stays), with a marker where the middle was."""
    if len(text) <= max_chars:
        return text
    half = max(0, max_chars // 2)
    return text[:half] + "\n[...]\n" + (text[-half:] if half else "")


def user_turns_text(messages: list[dict[str, str]]) -> str:
    """The conversation's user turns, oldest first, separated by blank lines (a prompt without a user turn:
    its last message)."""
    users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
    if not users:
        return str(messages[-1].get("content", "")) if messages else ""
    return "\n\n".join(users)


def conversation_text(messages: list[dict[str, str]], max_chars: int = MAX_QUERY_CHARS) -> str:
    """The request as the router sees it: every user turn, cut in the middle when very long."""
    return truncate_middle(user_turns_text(messages), max_chars)


REQUEST_OPEN = "Request:\n<<<\n"


def classification_prompt(messages: list[dict[str, str]], max_chars: int = MAX_QUERY_CHARS) -> str:
    return CLASSIFY_INSTRUCTIONS + REQUEST_OPEN + conversation_text(messages, max_chars) + "\n>>>\n\nCategory:"


class RouterPrompt:
    """How a request becomes the router's chat messages, and how an answer becomes a label."""

    name = "ratioloop"
    shared_chars = len(CLASSIFY_INSTRUCTIONS) + len(REQUEST_OPEN)  # leading user-turn text every prompt shares

    def messages(self, conv: list[dict[str, str]], max_chars: int = MAX_QUERY_CHARS) -> list[dict[str, str]]:
        return [{"role": "user", "content": classification_prompt(conv, max_chars)}]

    def parse(self, reply: Any) -> str | None:
        return parse_label(reply)


class CdrRouterPrompt(RouterPrompt):
    """The reference's CLASSIFY_PROMPT as the system turn (as its domain_annotate.py meant to send it), the
    request as the user turn."""

    name = "cdr"
    shared_chars = 0  # the shared part is the system turn, before the user turn

    def __init__(self, classify_prompt: str):
        self.system = classify_prompt

    def messages(self, conv: list[dict[str, str]], max_chars: int = MAX_QUERY_CHARS) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": conversation_text(conv, max_chars)}]

    def parse(self, reply: Any) -> str | None:
        from .cdr_reference import extract_label

        label = extract_label(reply)
        # extract_label answers CHAT for garbage too; None marks that case as unparsed.
        if label == "CHAT" and not (isinstance(reply, str) and "[START]" in reply and "[END]" in reply
                                    and reply.split("[START]")[1].split("[END]")[0].strip() == "CHAT"):
            return None
        return label


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


def router_prompt(name: str, cdr_repo: str | None = None, cdr_cache: str | None = None
                  ) -> tuple[RouterPrompt, dict[str, Any]]:
    """(the prompt, what was loaded: for the manifest)."""
    if name == "ratioloop":
        return RouterPrompt(), {"prompt": "ratioloop"}
    if name != "cdr":
        raise BadInput(f"params.router.prompt must be ratioloop or cdr, got {name!r}")
    from .cdr_reference import COMMIT, REPO, locate, parse_classify_prompt

    ref = locate("scripts/domain_annotate.py", repo_dir=cdr_repo, cache_dir=cdr_cache)
    return CdrRouterPrompt(parse_classify_prompt(ref.path)), {
        "prompt": "cdr", "repo": REPO, "pinned_commit": COMMIT, "local_clone": cdr_repo, **ref.record()}


class EndpointRouter:
    """[START]label[END] over an OpenAI-compatible /chat/completions endpoint, greedy."""

    def __init__(self, endpoint: dict[str, Any], max_new_tokens: int = 16, timeout_s: float = 60.0,
                 retries: int = 3, prompt: RouterPrompt | None = None):
        self.api = ChatEndpoint(endpoint, role="router", max_retries=retries - 1, backoff_s=0.5, timeout_s=timeout_s)
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt or RouterPrompt()

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
            "messages": self.prompt.messages(messages),
            "temperature": 0,
            "max_tokens": self.max_new_tokens,
        })
        try:
            return data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return ""  # a malformed answer is unparseable → CHAT, like any other garbage

    def route(self, messages: list[dict[str, str]]) -> tuple[str, str]:
        label = self.prompt.parse(self.ask(messages))
        return (label, "endpoint") if label else ("CHAT", "endpoint-unparsed")


class LocalRouter:
    """Compare log p("[START]LABEL[END]" + end of turn | classification prompt) across the labels."""

    def __init__(self, sm, batch_size: int = 8, max_prompt_tokens: int = 2048, prompt: RouterPrompt | None = None):
        from .scoring import scorer_for

        self.sm = sm
        self.scorer = scorer_for(sm, batch_size=max(batch_size, len(LABELS)))
        self.max_prompt_tokens = max_prompt_tokens
        self.prompt = prompt or RouterPrompt()

    def _context_len(self, cls: list[dict[str, str]]) -> int:
        from .scoring import make_item

        return len(make_item(self.sm, cls, "[START]CHAT[END]", 1 << 40, 64).ctx)

    def fit(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The classification messages, the request shortened (in its middle) until the whole prompt fits
        max_prompt_tokens, so that the scorer's left truncation never cuts the instructions."""
        cls = self.prompt.messages(messages)
        n = self._context_len(cls)
        if n <= self.max_prompt_tokens:
            return cls
        base = self._context_len(self.prompt.messages([{"role": "user", "content": ""}]))
        room = self.max_prompt_tokens - base - 8  # the cut marker and token merges at the seams
        if room <= 0:
            raise BadInput(f"the router's instructions alone take {base} tokens, more than score.max_prompt_tokens "
                           f"= {self.max_prompt_tokens}")
        chars = min(len(user_turns_text(messages)), MAX_QUERY_CHARS)
        for _ in range(20):
            chars = max(0, min(chars - 1, int(chars * room / max(1, n - base))))
            cls = self.prompt.messages(messages, chars)
            n = self._context_len(cls)
            if n <= self.max_prompt_tokens or chars == 0:
                break
        return cls

    def route_many(self, batch: list[list[dict[str, str]]]) -> list[tuple[str, str, dict[str, float]]]:
        from .scoring import make_item

        groups = []
        for messages in batch:
            cls = self.fit(messages)
            # The instructions are the same for every prompt: their KV is computed once (shared prefix).
            groups.append([make_item(self.sm, cls, f"[START]{lab}[END]", self.max_prompt_tokens, 64,
                                     shared_chars=self.prompt.shared_chars) for lab in LABELS])
        out = []
        for res in self.scorer.score_prompts(groups):
            lps = {lab: r.sum for lab, r in zip(LABELS, res)}
            best = max(LABELS, key=lambda lab: (lps[lab], -LABELS.index(lab)))  # ties → earlier label (CHAT)
            out.append((best, "llm-logprob", lps))
        return out
