"""AlpacaEval 2: per-instruction preference against reference outputs, win rate with standard error, discrete win
rate, and the length-controlled (LC) win rate by the official GLM, implemented here.

Annotation rows follow alpaca_eval: output_1/generator_1 = the reference (baseline), output_2/generator_2 = the
evaluated model, preference in [1, 2] with 2 = the model preferred (2 − P(m)/(P(m)+P(M)) from the judge's
log-probs, m naming output_1 as the judge saw it).
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Sequence

import numpy as np

from . import prompts
from .judges import Judge, JudgeRequest


def is_swapped(instruction: str, seed: int) -> bool:
    """Whether the judge sees the model's output first; decided per instruction, seeded, to spread position bias."""
    return hashlib.sha256(f"{seed}:{instruction}".encode()).digest()[0] % 2 == 1


def preference_from_probs(probs: dict[str, float] | None, text: str = "") -> float | None:
    """2 − P(m)/(P(m)+P(M)) in the judge's own order; None when neither token was seen."""
    pm = (probs or {}).get("m", 0.0)
    pM = (probs or {}).get("M", 0.0)
    if pm + pM > 0:
        return 2.0 - pm / (pm + pM)
    t = (text or "").strip()
    if t == "m":
        return 1.0
    if t == "M":
        return 2.0
    return None


def judge_items(judge: Judge, items: list[dict[str, Any]], *, seed: int, temperature: float = 1.0,
                on_done: Callable[[int], None] | None = None,
                prompt_set: prompts.AlpacaPrompts | None = None) -> list[dict[str, Any]]:
    """items: {instruction, output (model), reference}. Returns {preference, raw_completion, swapped} per item,
    preference already mapped back to output_1 = reference."""
    ps = prompt_set or prompts.ratioloop_alpaca()
    reqs, swaps = [], []
    for it in items:
        sw = is_swapped(it["instruction"], seed)
        o1, o2 = (it["output"], it["reference"]) if sw else (it["reference"], it["output"])
        reqs.append(JudgeRequest(messages=ps.messages(it["instruction"], o1, o2),
                                 choices=list(prompts.ALPACA_TOKENS), cue="", close="", max_tokens=1,
                                 temperature=temperature, logprobs=True, body=dict(ps.body)))
        swaps.append(sw)
    out = []
    for r, sw in zip(judge.judge(reqs, on_done=on_done), swaps):
        p = preference_from_probs(r.probs, r.text)
        if p is not None and sw:
            p = 3.0 - p
        out.append({"preference": p, "raw_completion": {"text": r.text, "probs": r.probs}, "swapped": sw})
    return out


def win_rate(preferences: Sequence[float | None], model_lengths: Sequence[int] | None = None) -> dict[str, Any]:
    """The leaderboard's numbers from preferences in [1, 2]: win_rate = 100·mean(p − 1), standard_error with
    ddof=1 over n, wins/losses/draws at 1.5, discrete_win_rate; avg_length = int(mean chars) when lengths are given.
    None preferences are excluded and counted."""
    vals = np.asarray([p for p in preferences if p is not None], dtype=float)
    n = len(vals)
    res: dict[str, Any] = {"n_total": n, "n_invalid": len(preferences) - n}
    if n == 0:
        res.update(win_rate=None, standard_error=None, n_wins=0, n_wins_base=0, n_draws=0, discrete_win_rate=None)
    else:
        x = 100.0 * (vals - 1.0)
        res["win_rate"] = float(x.mean())
        res["standard_error"] = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        res["n_wins"] = int((vals > 1.5).sum())
        res["n_wins_base"] = int((vals < 1.5).sum())
        res["n_draws"] = int((vals == 1.5).sum())
        res["discrete_win_rate"] = 100.0 * (res["n_wins"] + 0.5 * res["n_draws"]) / n
    if model_lengths is not None and len(model_lengths):
        res["avg_length"] = int(float(np.mean(model_lengths)))
    return res


def _logistic(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x))


def _weighted_logloss(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    ll = y * np.log(p) + (1 - y) * np.log(1 - p)
    if w is not None:
        ll = ll * w
    return float(-ll.mean())


def fit_l1_logistic_proba(X: np.ndarray, y: np.ndarray, *, sample_weight: np.ndarray | None = None,
                          n_splits: int = 5, Cs: int | Sequence[float] = 10, random_state: int = 123) -> np.ndarray:
    """L1 logistic regression without intercept on probabilistic targets y in [0, 1]; returns the coefficients.

    Each row is duplicated as a label-1 copy weighted y and a label-0 copy weighted 1 − y (times any sample
    weight); C is chosen from a log grid (1e-4..1e4, like LogisticRegressionCV) by grouped k-fold cross-validated
    log-loss on the continuous targets, then the model is refit on all rows — the recipe of alpaca_eval's GLM.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    n = len(y)
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    Xd = np.vstack([X, X])
    yd = np.concatenate([np.ones(n), np.zeros(n)])
    prob = np.concatenate([y, 1 - y])
    wd = prob * np.concatenate([sw, sw])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    grid = np.logspace(-4, 4, Cs) if isinstance(Cs, int) else np.asarray(Cs, dtype=float)

    def make(C: float):
        return LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", fit_intercept=False,
                                  random_state=random_state)

    def fit(model, idx):
        keep = idx[wd[idx] > 0]
        if len(np.unique(yd[keep])) < 2:
            return None
        return model.fit(Xd[keep], yd[keep], sample_weight=wd[keep])

    k = min(n_splits, n)
    best_C = grid[len(grid) // 2]
    if k >= 2 and len(grid) > 1:
        losses = np.zeros(len(grid))
        for tr, te in GroupKFold(n_splits=k).split(Xd, yd, groups):
            for ci, C in enumerate(grid):
                m = fit(make(C), tr)
                p = m.predict_proba(Xd[te])[:, 1] if m is not None else np.full(len(te), 0.5)
                # continuous log-loss: label-1 copies carry y, label-0 copies 1 − y, weighted by the sample weight
                ytrue = np.where(yd[te] == 1, prob[te], 1 - prob[te])
                losses[ci] += _weighted_logloss(ytrue, p, np.concatenate([sw, sw])[te])
        best_C = grid[int(np.argmin(losses))]  # first best on ties, as sklearn
    m = fit(make(best_C), np.arange(2 * n))
    return np.zeros(X.shape[1]) if m is None else m.coef_[0].copy()


def length_controlled(preferences: Sequence[float | None], len_reference: Sequence[int], len_model: Sequence[int],
                      instruction_difficulty: Sequence[float] | None = None, *, n_splits: int = 5,
                      gamed: dict[str, np.ndarray] | None = None, regularize_lambda: float = 0.2) -> dict[str, Any]:
    """The AlpacaEval `length_controlled_v1` GLM.

    p(model preferred) = σ(θ_len·tanh(Δ/std Δ) + θ_diff·difficulty + θ_base), Δ = len(reference) − len(model) in
    characters, fitted by L1 logistic regression on the preferences (mapped to [0, 1]); LC = 100 · mean prediction
    with the length term set to 0. Without instruction difficulties the difficulty column is dropped (then the
    LC rate is not the leaderboard's). `gamed` rows ({X: [n, 3], y: [n]}) regularize towards the baseline with
    weight λ/2 as upstream; without them no such regularization is applied.
    """
    pref = np.asarray([np.nan if p is None else float(p) for p in preferences], dtype=float)
    pref = np.where(pref == 0.0, 1.5, pref) - 1.0
    l1 = np.asarray(len_reference, dtype=float)
    l2 = np.asarray(len_model, dtype=float)
    delta = l1 - l2
    sd = delta.std(ddof=1) if len(delta) > 1 else 0.0
    std_delta = delta / sd if sd > 0 else np.zeros_like(delta)
    cols = [np.tanh(std_delta)]
    names = ["np.tanh(std_delta_len)"]
    if instruction_difficulty is not None:
        cols.append(np.asarray(instruction_difficulty, dtype=float))
        names.append("instruction_difficulty")
    cols.append(np.ones_like(delta))
    names.append("not_gamed_baseline.astype(float)")
    X = np.stack(cols, axis=1)
    ok = ~np.isnan(pref)
    Xtr, ytr, sw = X[ok], pref[ok], None
    if gamed is not None and regularize_lambda:
        gX = np.asarray(gamed["X"], dtype=float)
        Xtr = np.vstack([Xtr, gX])
        ytr = np.concatenate([ytr, np.asarray(gamed["y"], dtype=float)])
        sw = np.concatenate([np.ones(ok.sum()), np.full(len(gX), regularize_lambda / 2)])
    res: dict[str, Any] = {"glm": "length_controlled_v1", "features": names,
                           "instruction_difficulty": instruction_difficulty is not None,
                           "gamed_regularization": gamed is not None}
    if ok.sum() < 2:
        res.update(lc_win_rate=None, weights=None)
        return res
    coef = fit_l1_logistic_proba(Xtr, ytr, sample_weight=sw, n_splits=n_splits)
    Xt = X.copy()
    Xt[:, 0] = 0.0
    pred = _logistic(Xt @ coef)
    res["lc_win_rate"] = float(100.0 * pred.mean())
    res["weights"] = dict(zip(names, map(float, coef)))
    return res


def lc_from_weights(weights: dict[str, float], instruction_difficulty: Sequence[float],
                    baseline_weights: dict[str, float] | None = None) -> float:
    """LC win rate from saved GLM weights (the glm_weights csv) and instruction difficulties, as upstream
    predict_winrate: 100 · mean σ(Δθ_base + Δθ_diff · difficulty), Δ against the baseline's row (zeros)."""
    b = baseline_weights or {}
    d_base = weights["not_gamed_baseline.astype(float)"] - b.get("not_gamed_baseline.astype(float)", 0.0)
    d_diff = weights["instruction_difficulty"] - b.get("instruction_difficulty", 0.0)
    diff = np.asarray(instruction_difficulty, dtype=float)
    return float(100.0 * _logistic(d_base + d_diff * diff).mean())
