"""ArenaHard v0.1: pairwise judging against a baseline, two games per question (positions swapped), verdict
weights (strong = 3 battles, tie = half a win), score with a seeded bootstrap CI, and the v0.1-era Bradley–Terry fit.

Judgment rows follow arena-hard-auto v0.1: {question_id, model, judge, games: [{user_prompt, judgment, score}, x2]},
where game 1 shows the baseline as A and the model as B, and game 2 the other way round.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np

from . import prompts
from .judges import ApiJudge, Judge, JudgeRequest

PATTERN_V01 = re.compile(r"\[\[([AB<>=]+)\]\]")
PATTERN_BACKUP = re.compile(r"\[([AB<>=]+)\]")
STRONG_WEIGHT = 3
VALID = set(prompts.ARENA_VERDICTS)


def parse_verdict(judgment: str, mode: str = "v0.1") -> tuple[str | None, bool]:
    """(verdict or None, whether asking the judge to go on could help).

    v0.1: every [[...]] label in the text; exactly one distinct label is the verdict, none means "try again",
    several different ones mean no verdict. "latest": upper-cased text, [[..]] then [..], the last match wins.
    """
    if mode == "latest":
        up = judgment.upper()
        for pat in (PATTERN_V01, PATTERN_BACKUP):
            found = [m for m in pat.findall(up) if m]
            if found:
                return found[-1].strip("\n"), False
        return None, True
    found = {m for m in PATTERN_V01.findall(judgment) if m}
    if not found:
        return None, True
    if len(found) == 1:
        return found.pop().strip("\n"), False
    return None, False


# outcome for the evaluated model (1 win, 0 loss, 0.5 tie) and the number of battles a verdict counts for
_GAME1 = {"A>>B": (0.0, STRONG_WEIGHT), "A>B": (0.0, 1), "A=B": (0.5, 1), "B>A": (1.0, 1), "B>>A": (1.0, STRONG_WEIGHT)}
_GAME2 = {"A>>B": (1.0, STRONG_WEIGHT), "A>B": (1.0, 1), "A=B": (0.5, 1), "B>A": (0.0, 1), "B>>A": (0.0, STRONG_WEIGHT)}


def battles(judgments: list[dict[str, Any]], weight: int = STRONG_WEIGHT) -> np.ndarray:
    """The model's outcome in every battle, in file order (game 1 then game 2 of each row), weights expanded.

    A missing or unparsed verdict counts for nothing, as in the official show_result.
    """
    out: list[float] = []
    for row in judgments:
        games = row.get("games") or []
        for gi, table in ((0, _GAME1), (1, _GAME2)):
            if gi >= len(games) or games[gi] is None:
                continue
            v = games[gi].get("score")
            if v not in table:
                continue
            outcome, w = table[v]
            out.extend([outcome] * (weight if w > 1 else 1))
    return np.asarray(out, dtype=float)


def _winrate(outcomes: np.ndarray) -> float:
    return float(outcomes.mean()) if len(outcomes) else float("nan")


def bt_rating(outcomes: np.ndarray, scale: float = 400.0, base: float = 10.0, init: float = 1000.0) -> float:
    """The v0.1 Bradley–Terry fit (model vs the baseline anchored at `init`): rating of the model.

    As in show_result: battles duplicated, a tie counted as a win for A in one copy and for B in the other,
    unpenalized logistic regression without intercept on ±log(base) design columns.
    """
    from sklearn.linear_model import LogisticRegression

    n = len(outcomes)
    if n == 0:
        return float("nan")
    # model_a = baseline (column 0), model_b = evaluated model (column 1); Y = 1 when A wins
    X = np.zeros((2 * n, 2))
    X[:, 0] = math.log(base)
    X[:, 1] = -math.log(base)
    y = np.concatenate([(outcomes == 0.0).astype(float), (outcomes == 0.0).astype(float)])
    ties = np.concatenate([outcomes == 0.5, np.zeros(n, dtype=bool)])
    y[ties] = 1.0
    if y.min() == y.max():  # one class only: the rating is unbounded; return the limit's direction
        return init + (-1e4 if y[0] == 1 else 1e4)
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8)
    lr.fit(X, y)
    elo = scale * lr.coef_[0] + init
    elo = elo + (init - elo[0])  # anchor the baseline
    return float(elo[1])


def rating_to_winrate(rating: float, baseline: float = 1000.0, scale: float = 400.0, base: float = 10.0) -> float:
    return 1.0 / (1.0 + base ** ((baseline - rating) / scale))


def score(judgments: list[dict[str, Any]], *, rounds: int = 100, seed: int = 42, bradley_terry: bool = False,
          weight: int = STRONG_WEIGHT) -> dict[str, Any]:
    """Score (win rate vs the baseline, ×100) with a bootstrap percentile CI over battles.

    Each round draws len(battles) battles with replacement from np.random.RandomState(seed), the same draws as
    the official pandas `sample(frac=1, replace=True)` after `np.random.seed(seed)`. Since every battle involves
    the baseline, the BT point estimate equals the weighted win fraction; bradley_terry=True fits it anyway
    and takes the percentiles in rating space, as v0.1 did.
    """
    b = battles(judgments, weight)
    n_games = sum(len(r.get("games") or []) for r in judgments)
    n_valid = sum(1 for r in judgments for g in (r.get("games") or []) if g and g.get("score") in VALID)
    counts = {v: 0 for v in prompts.ARENA_VERDICTS}
    for r in judgments:
        for g in r.get("games") or []:
            if g and g.get("score") in counts:
                counts[g["score"]] += 1
    res: dict[str, Any] = {"n_questions": len(judgments), "n_games": n_games, "n_valid_games": n_valid,
                           "n_invalid_games": n_games - n_valid, "n_battles": int(len(b)), "verdicts": counts,
                           "bootstrap_rounds": int(rounds), "bootstrap_seed": int(seed),
                           "method": "bradley_terry" if bradley_terry else "win_fraction"}
    if len(b) == 0:
        res.update(score=None, ci_low=None, ci_high=None)
        return res
    rs = np.random.RandomState(seed)
    if bradley_terry:
        point_r = bt_rating(b)
        boot = [bt_rating(b[rs.randint(0, len(b), size=len(b))]) for _ in range(rounds)]
        lo_r, hi_r = np.quantile(boot, [0.025, 0.975]) if rounds else (point_r, point_r)
        point, lo, hi = (rating_to_winrate(x) for x in (point_r, lo_r, hi_r))
        res["rating"] = point_r
    else:
        point = _winrate(b)
        boot = [_winrate(b[rs.randint(0, len(b), size=len(b))]) for _ in range(rounds)]
        lo, hi = np.quantile(boot, [0.025, 0.975]) if rounds else (point, point)
    res.update(score=100 * float(point), ci_low=100 * float(lo), ci_high=100 * float(hi))
    return res


def _game_request(ps: prompts.ArenaPrompts, question: str, a: str, b: str, max_tokens: int) -> JudgeRequest:
    return JudgeRequest(messages=ps.messages(question, a, b), choices=list(prompts.ARENA_VERDICTS),
                        cue=prompts.ARENA_CUE, close=prompts.ARENA_CLOSE, max_tokens=max_tokens,
                        temperature=ps.temperature)


def judge_games(judge: Judge, items: list[dict[str, Any]], *, max_tokens: int, attempts: int = 2,
                parse_mode: str = "v0.1", on_done: Callable[[int], None] | None = None,
                prompt_set: prompts.ArenaPrompts | None = None) -> list[dict[str, Any]]:
    """items: {id, question, answer, baseline}. Returns per item its two games
    [{user_prompt, judgment, score, probs?}, ...] (game 1: baseline = A)."""
    ps = prompt_set or prompts.ratioloop_arena()
    if ps.continue_text is None:
        attempts = 1
    reqs = []
    for it in items:
        reqs.append(_game_request(ps, it["question"], it["baseline"], it["answer"], max_tokens))
        reqs.append(_game_request(ps, it["question"], it["answer"], it["baseline"], max_tokens))
    replies = judge.judge(reqs, on_done=(lambda k: on_done(k)) if on_done else None)
    texts = [ps.judgment_prefix + r.text for r in replies]
    verdicts = [parse_verdict(t, parse_mode) for t in texts]
    # v0.1: an API judge that gave no label is asked once more to finish (number_of_judgment_attempts = 2)
    if isinstance(judge, ApiJudge):
        for _ in range(attempts - 1):
            # an invalid reply (judge error) is not asked to go on: there is nothing to continue
            todo = [i for i, (v, again) in enumerate(verdicts) if v is None and again and not replies[i].invalid]
            if not todo:
                break
            more = []
            for i in todo:
                m = list(reqs[i].messages) + [{"role": "assistant", "content": replies[i].text},
                                              {"role": "user", "content": ps.continue_text}]
                more.append(JudgeRequest(messages=m, choices=reqs[i].choices, max_tokens=max_tokens,
                                         temperature=ps.temperature))
            for i, r in zip(todo, judge.judge(more)):
                texts[i] = texts[i] + "\n" + r.text
                verdicts[i] = parse_verdict(texts[i], parse_mode)
    out = []
    for k, it in enumerate(items):
        games = []
        for g in (0, 1):
            i = 2 * k + g
            game = {"user_prompt": reqs[i].messages[-1]["content"], "judgment": texts[i], "score": verdicts[i][0]}
            if replies[i].probs is not None:
                game["probs"] = replies[i].probs
            games.append(game)
        out.append(games)
    return out
