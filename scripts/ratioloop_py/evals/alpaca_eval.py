"""AlpacaEval 2: per-instruction preference against reference outputs, the leaderboard's win-rate numbers, and the
length-controlled (LC) win rate by alpaca_eval's GLMs — each computed the way alpaca_eval 0.6.x computes it, so the
same annotations give the same numbers (the tests hold this against the `alpaca-eval` package itself).

Annotation rows follow alpaca_eval: output_1/generator_1 = the reference (baseline), output_2/generator_2 = the
evaluated model, preference in [1, 2] with 2 = the model preferred (2 − P(m)/(P(m)+P(M)) from the judge's
log-probs, m naming output_1 as the judge saw it). Identical outputs get 1.5 without a judge call; a reply with
neither m nor M among its log-probs gives no preference (None, dropped), as the official parser's NaN.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Sequence

import numpy as np

from . import prompts
from .judges import Judge, JudgeRequest

# alpaca_eval's pairwise annotator: output order switched per instruction by a string-seeded draw. The seed is the
# outer annotator's (0 by default, passed down to each single annotator, whose own default 123 never applies); with
# it the rule gives exactly the mirrored rows of the published annotations (801/801 and 802/802 checked).
ANNOTATOR_SEED = 0
_SWITCH_KEY = "is_switched_outputs"
TIE = 1.5

# alpaca_eval's GLMs (metrics/glm_winrate.py GLM_INFO): features in the order of their patsy formulas.
GLMS: dict[str, dict[str, Any]] = {
    "length_controlled_v1": {"difficulty": True, "regularize_to_baseline_lambda": 0.2},
    "length_controlled_noreg": {"difficulty": True, "regularize_to_baseline_lambda": None},
    "length_controlled_minimal": {"difficulty": False, "regularize_to_baseline_lambda": None},
}
F_LEN, F_DIFF, F_BASE = "np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline.astype(float)"


def is_swapped(instruction: str, annotator_seed: int = ANNOTATOR_SEED) -> bool:
    """Whether the judge sees the model's output first: alpaca_eval's rule, a function of the instruction alone
    (never of the stage seed), so the same rows are mirrored as on the leaderboard."""
    return random.Random(f"{_SWITCH_KEY}{instruction}{annotator_seed}").choices([False, True], k=1)[0]


def preference_from_top_logprobs(top_logprobs: Sequence[dict[str, Any]]) -> float | None:
    """The official logprob parser on one token's top log-probs ([{token, logprob}]): 2 − P(m)/(P(m)+P(M)), a
    repeated token's last entry counting; None (official: NaN) when neither m nor M is listed."""
    from scipy.special import logsumexp

    lp = {t["token"]: float(t["logprob"]) for t in top_logprobs if t["token"] in ("m", "M")}
    if not lp:
        return None
    m = lp.get("m", float("-inf"))
    return float(2 - np.exp(m - logsumexp([m, lp.get("M", float("-inf"))])))


def preference_from_probs(probs: dict[str, float] | None) -> float | None:
    """2 − P(m)/(P(m)+P(M)) in the judge's own order from token probabilities; None when neither token was seen
    (the sampled text is not a preference: the official parser gives NaN)."""
    probs = probs or {}
    if "m" not in probs and "M" not in probs:
        return None
    pm, pM = float(probs.get("m", 0.0)), float(probs.get("M", 0.0))
    if pm + pM <= 0:
        return None
    return 2.0 - pm / (pm + pM)


def judge_items(judge: Judge, items: list[dict[str, Any]], *, temperature: float = 1.0,
                annotator_seed: int = ANNOTATOR_SEED, on_done: Callable[[int], None] | None = None,
                prompt_set: prompts.AlpacaPrompts | None = None) -> list[dict[str, Any]]:
    """items: {instruction, output (model), reference}. Returns {preference, raw_completion, swapped} per item,
    preference already mapped back to output_1 = reference. Identical outputs are a tie, not judged."""
    ps = prompt_set or prompts.ratioloop_alpaca()
    reqs, where = [], []
    for i, it in enumerate(items):
        if it["output"] == it["reference"]:
            continue
        sw = is_swapped(it["instruction"], annotator_seed)
        o1, o2 = (it["output"], it["reference"]) if sw else (it["reference"], it["output"])
        reqs.append(JudgeRequest(messages=ps.messages(it["instruction"], o1, o2),
                                 choices=list(prompts.ALPACA_TOKENS), cue="", close="", max_tokens=1,
                                 temperature=ps.wire_temperature(temperature), logprobs=True, body=dict(ps.body)))
        where.append(i)
    out: list[dict[str, Any]] = [{"preference": TIE, "raw_completion": None, "swapped": False,
                                  "identical_outputs": True} for _ in items]
    n_same = len(items) - len(where)
    progress = None if on_done is None else (lambda k: on_done(n_same + k))
    for i, r in zip(where, judge.judge(reqs, on_done=progress) if reqs else []):
        sw = is_swapped(items[i]["instruction"], annotator_seed)
        p = preference_from_probs(r.probs)
        if p is not None and sw:
            p = 3.0 - p
        out[i] = {"preference": p, "raw_completion": {"text": r.text, "probs": r.probs}, "swapped": sw}
    if on_done is not None and not reqs:
        on_done(len(items))
    return out


def _valid(p: float | None) -> bool:
    return p is not None and not math.isnan(p) and 1.0 <= p <= 2.0


def win_rate(preferences: Sequence[float | None], model_lengths: Sequence[int] | None = None) -> dict[str, Any]:
    """The leaderboard's numbers, as alpaca_eval's get_winrate: 0 means a tie (1.5); draws counted before invalid
    values (None/NaN, outside [1, 2]) are dropped; win_rate = 100·mean(p − 1), standard_error = 100·sem (ddof=1),
    discrete_win_rate the same on rounded preferences (a tie counting ½); avg_length = int(mean chars)."""
    raw = [None if p is None else (TIE if float(p) == 0.0 else float(p)) for p in preferences]
    vals = np.asarray([p for p in raw if _valid(p)], dtype=float) - 1.0
    n = len(vals)
    res: dict[str, Any] = {"n_total": n, "n_invalid": len(raw) - n,
                           "n_draws": sum(1 for p in raw if p == TIE)}
    if n == 0:
        res.update(win_rate=None, standard_error=None, n_wins=0, n_wins_base=0, discrete_win_rate=None)
    else:
        res["win_rate"] = float(vals.mean() * 100)
        res["standard_error"] = float(vals.std(ddof=1) / np.sqrt(n) * 100) if n > 1 else None
        res["n_wins"] = int((vals > 0.5).sum())
        res["n_wins_base"] = int((vals < 0.5).sum())
        discrete = np.where(vals == 0.5, 0.5, np.round(vals + 1.0) - 1.0)
        res["discrete_win_rate"] = float(discrete.mean() * 100)
    if model_lengths is not None and len(model_lengths):
        res["avg_length"] = int(float(np.mean(model_lengths)))
    return res


def _weighted_logloss(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    ll = y * np.log(p) + (1 - y) * np.log(1 - p)
    if w is not None:
        ll = ll * w
    return float(-np.mean(ll))


def fit_glm(X: np.ndarray, y: np.ndarray, *, sample_weight: np.ndarray | None = None, n_splits: int = 5,
            Cs: int | Sequence[float] = 10, random_state: int = 123):
    """L1 logistic regression without intercept on probabilistic targets y in [0, 1], C chosen by cross-validation
    as alpaca_eval's fit_LogisticRegressionCV does with sklearn's LogisticRegressionCV; returns the fitted model.

    Each row becomes a label-1 copy weighted y and a label-0 copy weighted 1 − y (times the sample weight); C comes
    from a log grid (1e-4..1e4) by GroupKFold (a row's two copies in one fold) on the continuous log-loss, the first
    best on ties; then one refit on all rows. Seeding as LogisticRegressionCV: one RandomState(random_state) per fold
    shared over the C grid (liblinear draws its seed from it per fit), a fresh one for the refit.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    n = len(y)
    y = np.asarray(y, dtype=float)
    Xd = np.ascontiguousarray(np.vstack([X, X]), dtype=float)
    yd = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    prob = np.concatenate([y, 1 - y])
    tsw = None if sample_weight is None else np.concatenate([sample_weight, sample_weight]).astype(float)
    wd = prob if tsw is None else prob * tsw
    groups = np.concatenate([np.arange(n), np.arange(n)])
    grid = np.logspace(-4, 4, Cs) if isinstance(Cs, int) else np.asarray(Cs, dtype=float)

    def make(C: float, rs: Any) -> Any:
        return LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", fit_intercept=False, random_state=rs)

    k = min(n_splits, n)
    best_C = grid[0]
    if len(grid) > 1:
        losses = np.zeros(len(grid))
        for tr, te in GroupKFold(n_splits=k).split(Xd, yd, groups):
            rs = np.random.RandomState(random_state)
            ytrue = np.where(yd[te] == 1, prob[te], 1 - prob[te])
            for ci, C in enumerate(grid):
                m = make(C, rs).fit(Xd[tr], yd[tr], sample_weight=wd[tr])
                losses[ci] += _weighted_logloss(ytrue, m.predict_proba(Xd[te])[:, 1],
                                                None if tsw is None else tsw[te])
        best_C = grid[int(np.argmin(losses))]
    model = make(best_C, random_state).fit(Xd, yd, sample_weight=wd)
    model.C_chosen = float(best_C)
    return model


def length_controlled(preferences: Sequence[float | None], len_reference: Sequence[int], len_model: Sequence[int],
                      *, glm: str = "length_controlled_v1", gamed: dict[str, list[Any]] | None = None,
                      instruction_difficulty: Sequence[float] | None = None, n_splits: int = 5) -> dict[str, Any]:
    """An alpaca_eval LC GLM, fitted as get_length_controlled_winrate does.

    p(model preferred) = σ(θ_len·tanh(Δ/sd Δ) [+ θ_diff·difficulty] + θ_base), Δ = len(reference) − len(model) in
    characters (sd with ddof=1 over all rows); LC = 100 · mean prediction over all rows with the length term at 0,
    lc_standard_error = 100 · its sem. `length_controlled_v1` (the leaderboard's) needs `gamed`, the rows of
    df_gamed.csv (data.load_df_gamed): they come first in the training set with weight λ/2 (λ = 0.2), and row i's
    difficulty is the one df_gamed.csv gives at row label i, as upstream looks it up. `length_controlled_noreg`
    takes the difficulties from `gamed` or `instruction_difficulty`; `length_controlled_minimal` needs neither.
    Rows whose preference is None are predicted but not trained on.
    """
    info = GLMS[glm]
    n = len(preferences)
    pref = np.asarray([np.nan if p is None else float(p) for p in preferences], dtype=float)
    pref = np.where(pref == 0.0, TIE, pref) - 1.0
    delta = np.asarray(len_reference, dtype=float) - np.asarray(len_model, dtype=float)
    names = [F_LEN] + ([F_DIFF] if info["difficulty"] else []) + [F_BASE]
    res: dict[str, Any] = {"glm": glm, "features": names, "lc_win_rate": None, "lc_standard_error": None,
                           "weights": None}
    if info["regularize_to_baseline_lambda"] and gamed is None:
        return {**res, "reason": f"{glm} needs df_gamed.csv (the gamed-baseline annotations)"}
    diff = None
    if info["difficulty"]:
        if gamed is not None:
            diff = difficulty_by_label(gamed, n)
        elif instruction_difficulty is not None:
            diff = np.asarray(instruction_difficulty, dtype=float)[:n]
            if len(diff) < n:
                return {**res, "reason": "instruction_difficulty has fewer rows than the annotations"}
        else:
            return {**res, "reason": f"{glm} needs instruction difficulties"}
    sd = delta.std(ddof=1) if n > 1 else 0.0
    ok = ~np.isnan(pref)
    if not sd > 0 or ok.sum() < 2:
        return {**res, "reason": "fewer than 2 judged rows, or all length differences equal"}
    tanh_len = np.tanh(delta / sd)
    cols = [tanh_len] + ([diff] if diff is not None else []) + [np.ones(n)]
    X = np.stack(cols, axis=1)
    Xtr, ytr, sw = X, pref, None
    lam = info["regularize_to_baseline_lambda"]
    if lam:
        g = gamed
        gX = np.stack([np.tanh(np.asarray(g["std_delta_len"], dtype=float)),
                       np.asarray(g["instruction_difficulty"], dtype=float),
                       np.asarray(g["not_gamed_baseline"], dtype=float)], axis=1)
        gnot = np.asarray(g["not_gamed_baseline"], dtype=bool)
        Xtr = np.vstack([gX, X])
        ytr = np.concatenate([np.asarray(g["preference"], dtype=float), pref])
        sw = np.concatenate([gnot.astype(float) + (lam * ~gnot).astype(float) / 2, np.ones(n)])
    keep = ~np.isnan(ytr)
    model = fit_glm(Xtr[keep], ytr[keep], sample_weight=None if sw is None else sw[keep], n_splits=n_splits)
    Xt = X.copy()
    Xt[:, 0] = 0.0
    pred = model.predict_proba(Xt)[:, 1]
    res.update(lc_win_rate=float(pred.mean() * 100),
               lc_standard_error=float(pred.std(ddof=1) / np.sqrt(n) * 100) if n > 1 else None,
               weights=dict(zip(names, map(float, model.coef_[0]))), C=model.C_chosen,
               n_train=int(keep.sum()))
    return res


def difficulty_by_label(gamed: dict[str, list[Any]], n: int) -> np.ndarray:
    """Row i's instruction difficulty as upstream reads it from df_gamed.csv: among the rows that first show each
    instruction `index`, the one at row label (csv position) i."""
    from ..errors import BadInput

    first: dict[int, float] = {}
    seen: set[Any] = set()
    for pos, (idx, d) in enumerate(zip(gamed["index"], gamed["instruction_difficulty"])):
        if idx not in seen:
            seen.add(idx)
            first[pos] = float(d)
    missing = [i for i in range(n) if i not in first]
    if missing:
        raise BadInput(f"df_gamed.csv: no instruction difficulty at row {missing[0]} "
                       f"({len(first)} instructions, {n} annotations)")
    return np.asarray([first[i] for i in range(n)], dtype=float)


def lc_from_weights(weights: dict[str, float], instruction_difficulty: Sequence[float],
                    baseline_weights: dict[str, float] | None = None) -> float:
    """LC win rate from saved GLM weights (the glm_weights csv) and instruction difficulties, as upstream
    predict_winrate: 100 · mean σ(Δθ_base + Δθ_diff · difficulty), Δ against the baseline's row (zeros)."""
    b = baseline_weights or {}
    d_base = weights[F_BASE] - b.get(F_BASE, 0.0)
    d_diff = weights[F_DIFF] - b.get(F_DIFF, 0.0)
    diff = np.asarray(instruction_difficulty, dtype=float)
    return float(100.0 * np.exp(-np.logaddexp(0, -(d_base + d_diff * diff))).mean())
