"""Judge prompts, `prompts: ratioloop`: written for ratioloop in its own words; each follows the structure of the
official tool's prompt (what the judge is shown, in which order, and the exact verdict format its parser expects), so
that verdicts parse with the official regexes. The wording differs from the official prompts, so results with these
prompts are never marked leaderboard-comparable. `prompts: official` loads the official files at run time instead
(evals/official_prompts.py); both kinds are PromptSets with the same interface (see the end of this module).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------- ArenaHard v0.1 (pairwise, judge answers first)
ARENA_SYSTEM = (
    "You are an impartial judge. Two AI assistants, A and B, have answered the same user prompt; decide which answer "
    "is better.\n\n"
    "Start by writing your own answer to the prompt, before you read the assistants' answers. Then assess both answers "
    "against yours: point out any errors or inaccurate statements and correct them.\n\n"
    "Judge whether each answer is helpful (it addresses the prompt and follows its instructions; where the prompt is "
    "ambiguous or open to several readings, asking the user for clarification is better than guessing), relevant "
    "(every part bears on the request) and concise (clear and not wordy). Where it matters, also weigh creativity and "
    "novelty. Note any important information that an answer leaves out but that would help the user.\n\n"
    "Finish with exactly one of these verdict labels:\n"
    "1. A is much better: [[A>>B]]\n"
    "2. A is a little better: [[A>B]]\n"
    "3. About the same, a tie: [[A=B]]\n"
    "4. B is a little better: [[B>A]]\n"
    "5. B is much better: [[B>>A]]\n\n"
    'For example: "My final verdict is a tie: [[A=B]]".'
)
ARENA_USER = (
    "[User prompt]\n{question_1}\n\n"
    "[Start of Assistant A's answer]\n{answer_1}\n[End of Assistant A's answer]\n\n"
    "[Start of Assistant B's answer]\n{answer_2}\n[End of Assistant B's answer]"
)
# v0.1 asked the judge to go on once when no verdict could be parsed.
ARENA_CONTINUE = "Please go on with your judgment and end it with a final verdict label."
ARENA_VERDICTS = ["A>>B", "A>B", "A=B", "B>A", "B>>A"]
ARENA_CUE = "My final verdict is: [["  # local judge: the verdict is scored right after this text
ARENA_CLOSE = "]]"

# ---------------------------------------------------------------- AlpacaEval 2 (one token, m = output_1, M = output_2)
ALPACA_SYSTEM = (
    "You are a careful and efficient evaluator of large language models. You pick which of two models answered an "
    "instruction better, and your choices are used to rank models the way people would."
)
ALPACA_USER = (
    "We are ranking language models. Below is an instruction that was given to two models, followed by what each "
    "model wrote. Decide which output a person would prefer.\n\n"
    "## Instruction\n\n"
    "{{\n    \"instruction\": \"\"\"{instruction}\"\"\",\n}}\n\n"
    "## Model outputs\n\n"
    "The outputs are listed in no particular order. Each has a model identifier.\n\n"
    "{{\n    {{\n        \"model_identifier\": \"m\",\n        \"output\": \"\"\"{output_1}\"\"\"\n    }},\n"
    "    {{\n        \"model_identifier\": \"M\",\n        \"output\": \"\"\"{output_2}\"\"\"\n    }}\n}}\n\n"
    "## Task\n\n"
    "Judge the outputs for quality and relevance and choose the better one. Reply with its model identifier only: "
    "your reply is read as the name of the best model, so it must be exactly m or M, with nothing else (no quotes, "
    "spaces or line breaks).\n\n"
    "## Best model identifier"
)
ALPACA_TOKENS = ["m", "M"]

# ---------------------------------------------------------------- MT-Bench single-answer grading, 1–10
MT_SYSTEM = "You are a helpful assistant."
MT_SYSTEM_MULTI = (
    "Act as an impartial judge of an AI assistant's replies in the conversation shown below. Weigh helpfulness, "
    "relevance, accuracy, depth, creativity and level of detail. Your evaluation is about the assistant's "
    "reply to the second user question. Begin with a short explanation and be as objective as you can. Then rate the "
    "reply from 1 to 10 in exactly this format: \"[[rating]]\", e.g. \"Rating: [[5]]\"."
)
MT_SYSTEM_MULTI_MATH = (
    "Act as an impartial judge of an AI assistant's replies in the conversation shown below. Weigh correctness and "
    "helpfulness. A reference answer is given; compare the assistant's reply with it and point out and correct any "
    "mistakes. Your evaluation is about the assistant's reply to the second user question. Begin with a short "
    "explanation and be as objective as you can. Then rate the reply from 1 to 10 in exactly this format: "
    "\"[[rating]]\", e.g. \"Rating: [[5]]\"."
)
MT_USER = (
    "[Instruction]\n"
    "Act as an impartial judge of the AI assistant's reply to the user question below. Weigh helpfulness, relevance, "
    "accuracy, depth, creativity and level of detail. Begin with a short explanation and be as objective as you can. "
    "Then rate the reply from 1 to 10 in exactly this format: \"[[rating]]\", e.g. \"Rating: [[5]]\".\n\n"
    "[Question]\n{question}\n\n"
    "[Start of the assistant's answer]\n{answer}\n[End of the assistant's answer]"
)
MT_USER_MATH = (
    "[Instruction]\n"
    "Act as an impartial judge of the AI assistant's reply to the user question below. Weigh correctness and "
    "helpfulness. A reference answer and the assistant's answer follow. Compare the two, point out and correct any "
    "mistakes, and be as objective as you can. Then rate the reply from 1 to 10 in exactly this format: "
    "\"[[rating]]\", e.g. \"Rating: [[5]]\".\n\n"
    "[Question]\n{question}\n\n"
    "[Start of the reference answer]\n{ref_answer_1}\n[End of the reference answer]\n\n"
    "[Start of the assistant's answer]\n{answer}\n[End of the assistant's answer]"
)
MT_USER_MULTI = (
    "<|Start of the assistant's conversation with the user|>\n\n"
    "### User:\n{question_1}\n\n### Assistant:\n{answer_1}\n\n"
    "### User:\n{question_2}\n\n### Assistant:\n{answer_2}\n\n"
    "<|End of the assistant's conversation with the user|>"
)
MT_USER_MULTI_MATH = (
    "<|Start of the reference answer|>\n\n"
    "### User:\n{question_1}\n\n### Reference answer:\n{ref_answer_1}\n\n"
    "### User:\n{question_2}\n\n### Reference answer:\n{ref_answer_2}\n\n"
    "<|End of the reference answer|>\n\n\n"
    "<|Start of the assistant's conversation with the user|>\n\n"
    "### User:\n{question_1}\n\n### Assistant:\n{answer_1}\n\n"
    "### User:\n{question_2}\n\n### Assistant:\n{answer_2}\n\n"
    "<|End of the assistant's conversation with the user|>"
)
MT_RATINGS = [str(i) for i in range(1, 11)]
MT_CUE = "Rating: [["
MT_CLOSE = "]]"
# FastChat's names for the four single-grading kinds, kept so judgment files read like FastChat's.
MT_PROMPT_NAMES = {(False, 1): "single-v1", (True, 1): "single-math-v1",
                   (False, 2): "single-v1-multi-turn", (True, 2): "single-math-v1-multi-turn"}


def arena_messages(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": ARENA_SYSTEM},
            {"role": "user", "content": ARENA_USER.format(question_1=question, answer_1=answer_a, answer_2=answer_b)}]


def alpaca_messages(instruction: str, output_1: str, output_2: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": ALPACA_SYSTEM},
            {"role": "user", "content": ALPACA_USER.format(instruction=instruction, output_1=output_1,
                                                           output_2=output_2)}]


def mt_messages(turns: list[str], answers: list[str], turn: int,
                reference: list[str] | None = None) -> tuple[list[dict[str, str]], str]:
    """(messages, FastChat prompt name) for grading `turn` (1 or 2) with ratioloop's wording; a reference selects
    the math kind."""
    return ratioloop_mt().messages(turns, answers, turn, reference)


# ---------------------------------------------------------------- prompt sets (one per benchmark)
@dataclass
class ArenaPrompts:
    """ArenaHard judge prompts: system prompt + user template (keys question_1, answer_1, answer_2, as v0.1)."""
    system: str
    template: str
    continue_text: str | None          # asked once more when no verdict label was found; None: no second attempt
    kind: str = "ratioloop"            # ratioloop | official | file (a local file that is not the pinned one)
    source: dict[str, Any] | None = None
    temperature: float = 0.0           # official: the config's value as written (YAML `0`, an integer on the wire)
    max_tokens: int | None = None      # None: the stage's judge.max_tokens or the official 4096
    judgment_prefix: str = ""          # v0.1 writes every judgment as "" + "\n" + reply

    def messages(self, question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        user = self.template.format(question_1=question, answer_1=answer_a, answer_2=answer_b)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


@dataclass
class MtPrompts:
    """MT-Bench single-grading prompts by FastChat name: {name: (system prompt, user template)}."""
    by_name: dict[str, tuple[str, str]]
    kind: str = "ratioloop"
    source: dict[str, Any] | None = None
    body: dict[str, Any] = field(default_factory=dict)   # official: FastChat sends n=1 and the integer temperature 0

    def messages(self, turns: list[str], answers: list[str], turn: int,
                 reference: list[str] | None = None) -> tuple[list[dict[str, str]], str]:
        """FastChat's rendering: the template formatted with question/answer (turn 1) or question_1/answer_1/
        question_2/answer_2 (turn 2), plus ref_answer_1 (and _2 for turn 2) when graded with a reference; the system
        message is left out when the system prompt is empty (Conversation.to_openai_api_messages)."""
        name = MT_PROMPT_NAMES[(reference is not None, turn)]
        system, template = self.by_name[name]
        kw: dict[str, str] = {}
        if reference is not None:
            kw["ref_answer_1"] = reference[0]
            if turn == 2:
                kw["ref_answer_2"] = reference[1] if len(reference) > 1 else ""
        if turn == 1:
            user = template.format(question=turns[0], answer=answers[0], **kw)
        else:
            user = template.format(question_1=turns[0], question_2=turns[1], answer_1=answers[0],
                                   answer_2=answers[1], **kw)
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + [{"role": "user", "content": user}], name


@dataclass
class AlpacaPrompts:
    """AlpacaEval judge prompt. `chatml` (official): a ChatML text whose {instruction}, {output_1}, {output_2} are
    filled in by alpaca_eval's make_prompts rule, then split into messages as its prompt_to_chatml does."""
    chatml: str | None = None
    kind: str = "ratioloop"
    source: dict[str, Any] | None = None
    body: dict[str, Any] = field(default_factory=dict)   # official: the annotator also sends top_p=1.0

    def wire_temperature(self, t: float) -> float:
        """The temperature as the official request writes it: its config's `temperature: 1` goes out as the integer 1."""
        return int(t) if self.chatml is not None and float(t).is_integer() else t

    def messages(self, instruction: str, output_1: str, output_2: str) -> list[dict[str, str]]:
        if self.chatml is None:
            return alpaca_messages(instruction, output_1, output_2)
        from .official_prompts import render_chatml

        return render_chatml(self.chatml, {"instruction": instruction, "output_1": output_1, "output_2": output_2})


def ratioloop_arena() -> ArenaPrompts:
    return ArenaPrompts(system=ARENA_SYSTEM, template=ARENA_USER, continue_text=ARENA_CONTINUE)


def ratioloop_mt() -> MtPrompts:
    return MtPrompts(by_name={"single-v1": (MT_SYSTEM, MT_USER), "single-math-v1": (MT_SYSTEM, MT_USER_MATH),
                              "single-v1-multi-turn": (MT_SYSTEM_MULTI, MT_USER_MULTI),
                              "single-math-v1-multi-turn": (MT_SYSTEM_MULTI_MATH, MT_USER_MULTI_MATH)})


def ratioloop_alpaca() -> AlpacaPrompts:
    return AlpacaPrompts()
