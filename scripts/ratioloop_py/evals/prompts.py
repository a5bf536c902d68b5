"""Judge prompts. Written for ratioloop in its own words; each follows the structure of the official tool's prompt
(what the judge is shown, in which order, and the exact verdict format its parser expects), so that verdicts parse
with the official regexes. The wording differs from the official prompts, so results with these prompts are
never marked leaderboard-comparable (see docs/evaluation.md).
"""
from __future__ import annotations

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
    'For example: "My final verdict is: [[A>B]]".'
)
ARENA_USER = (
    "[User prompt]\n{question}\n\n"
    "[Start of Assistant A's answer]\n{answer_a}\n[End of Assistant A's answer]\n\n"
    "[Start of Assistant B's answer]\n{answer_b}\n[End of Assistant B's answer]"
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
    "relevance, accuracy, depth, creativity and level of detail. {ref_clause}Your evaluation is about the assistant's "
    "reply to the second user question. Begin with a short explanation and be as objective as you can. Then rate the "
    "reply from 1 to 10 in exactly this format: \"[[rating]]\", e.g. \"Rating: [[5]]\"."
)
MT_REF_CLAUSE_MULTI = (
    "A reference answer is given; compare the assistant's reply with it and point out and correct any mistakes. "
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
            {"role": "user", "content": ARENA_USER.format(question=question, answer_a=answer_a, answer_b=answer_b)}]


def alpaca_messages(instruction: str, output_1: str, output_2: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": ALPACA_SYSTEM},
            {"role": "user", "content": ALPACA_USER.format(instruction=instruction, output_1=output_1,
                                                           output_2=output_2)}]


def mt_messages(turns: list[str], answers: list[str], turn: int,
                reference: list[str] | None = None) -> tuple[list[dict[str, str]], str]:
    """(messages, FastChat prompt name) for grading `turn` (1 or 2); a reference selects the math kind."""
    with_ref = reference is not None
    name = MT_PROMPT_NAMES[(with_ref, turn)]
    if turn == 1:
        if with_ref:
            user = MT_USER_MATH.format(question=turns[0], answer=answers[0], ref_answer_1=reference[0])
        else:
            user = MT_USER.format(question=turns[0], answer=answers[0])
        return [{"role": "system", "content": MT_SYSTEM}, {"role": "user", "content": user}], name
    kw = dict(question_1=turns[0], answer_1=answers[0], question_2=turns[1], answer_2=answers[1])
    if with_ref:
        ref2 = reference[1] if len(reference) > 1 else ""
        user = MT_USER_MULTI_MATH.format(ref_answer_1=reference[0], ref_answer_2=ref2, **kw)
        system = MT_SYSTEM_MULTI.format(ref_clause=MT_REF_CLAUSE_MULTI)
    else:
        user = MT_USER_MULTI.format(**kw)
        system = MT_SYSTEM_MULTI.format(ref_clause="")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}], name
