"""Does the judge know anything? Position-consistency, verdict histograms and the both-orders combination.

A judge that ignores the answers still produces verdicts, and the benchmark formulas turn them into numbers that
look real (an always-"A>>B" judge gives ArenaHard exactly 50 with a confidence interval). Two checks expose it:

* position consistency: when the same pair is judged in both orders, a judge that reads the answers names the same
  answer the winner both times. Under "the verdict ignores the content" both orders draw from one positional
  distribution q (first wins / tie / second wins), so the chance of agreeing is 2·q_first·q_second + q_tie², with q
  pooled over every valid game. The judge is informative only if the observed rate is above that and a one-sided
  binomial test rejects chance (p < alpha).
* dominance: one positional verdict (or, for single-answer grading, one rating) in more than `max_dominant_share`
  of all valid judgments. With positions balanced by swapping or randomising, even a model that always wins
  splits its wins between "first" and "second", so a dominating position is position bias.

The combination (local judges, or where configured): verdict log-probs of the two orders, mapped to one frame, are
averaged, which cancels any additive position bias of the log-probs; optionally the log-probs of a content-free pair
(the same question, both answers a placeholder) are subtracted first, which also removes the judge's preference for
a verdict regardless of position (e.g. for ties).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

ARENA_FLIP = {"A>>B": "B>>A", "A>B": "B>A", "A=B": "A=B", "B>A": "A>B", "B>>A": "A>>B"}
_ARENA_POS = {"A>>B": 1, "A>B": 1, "A=B": 0, "B>A": -1, "B>>A": -1}
CONTENT_FREE = "N/A"  # the placeholder answer of the content-free pair (as in contextual calibration)
_POS_NAMES = {1: "first", 0: "tie", -1: "second"}
_FLOOR = 1e-300


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return float(min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))))


def _dominance(hist: dict[str, int], max_share: float) -> tuple[str | None, float | None, str | None]:
    total = sum(hist.values())
    if total == 0:
        return None, None, None
    top = max(hist, key=lambda k: hist[k])
    share = hist[top] / total
    why = f"one verdict dominates: {top!r} is {100 * share:.0f}% of {total} judgments" if share > max_share else None
    return top, share, why


def pairwise_stats(order1: Sequence[int | None], order2: Sequence[int | None], *, labels: Iterable[str] = (),
                   max_dominant_share: float = 0.9, alpha: float = 0.05) -> dict[str, Any]:
    """order1[i], order2[i]: the positional winner of item i's two games (+1 first, 0 tie, −1 second, None
    invalid or not judged), where game 2 shows the same two answers the other way round. labels: every valid
    raw verdict label (for the histogram). order2 entirely None: only one order was judged (official protocol of an
    API judge), so consistency is not measured and only dominance is checked."""
    pos = [d for d in list(order1) + list(order2) if d is not None]
    pos_hist = {_POS_NAMES[d]: pos.count(d) for d in (1, 0, -1)}
    hist: dict[str, int] = {}
    for lab in labels:
        hist[lab] = hist.get(lab, 0) + 1
    res: dict[str, Any] = {"n_judgments": len(pos), "verdicts": hist, "positions": pos_hist}
    reasons = []
    dom, share, why = _dominance(pos_hist, max_dominant_share)
    res.update(dominant_position=dom, dominant_share=share)
    if why:
        reasons.append(why.replace("one verdict dominates", "one position wins"))
    both = [(a, b) for a, b in zip(order1, order2) if a is not None and b is not None]
    if both:
        n = len(both)
        k = sum(1 for a, b in both if a == -b)
        q = {d: pos.count(d) / len(pos) for d in (1, 0, -1)}
        chance = 2 * q[1] * q[-1] + q[0] ** 2
        p = binom_sf(k, n, chance)
        res.update(n_pairs=n, position_consistency=k / n, chance_consistency=chance, consistency_p_value=p)
        if not (k / n > chance and p < alpha):
            reasons.append(f"position consistency {k / n:.2f} is not above chance {chance:.2f} "
                           f"(one-sided binomial p = {p:.3g}, {n} pairs)")
    else:
        res.update(n_pairs=0, position_consistency=None, chance_consistency=None, consistency_p_value=None)
        if all(b is None for b in order2):
            res["consistency_not_measured"] = "one order judged per item (official protocol)"
        else:
            reasons.append("no item has valid verdicts in both orders")
    if not pos:
        reasons.append("no valid judgments")
    res["judge_informative"] = not reasons
    res["uninformative_because"] = reasons
    return res


def rating_stats(ratings: Sequence[float | None], *, max_dominant_share: float = 0.9) -> dict[str, Any]:
    """Single-answer grading (MT-Bench): histogram of the (rounded) ratings; no positions to swap."""
    vals = [r for r in ratings if r is not None and r != -1]
    hist: dict[str, int] = {}
    for r in vals:
        key = str(int(round(r))) if abs(r - round(r)) < 1e-9 else f"{r:g}"
        hist[key] = hist.get(key, 0) + 1
    dom, share, why = _dominance(hist, max_dominant_share)
    reasons = [why] if why else []
    if not vals:
        reasons.append("no valid judgments")
    return {"n_judgments": len(vals), "verdicts": dict(sorted(hist.items(), key=lambda kv: float(kv[0]))),
            "dominant_verdict": dom, "dominant_share": share, "position_consistency": None,
            "consistency_not_measured": "single-answer grading has no positions", "judge_informative": not reasons,
            "uninformative_because": reasons}


# ------------------------------------------------------------------------------------------------ ArenaHard
def arena_positions(games: list[list[dict[str, Any]]], key: str = "score") -> tuple[list, list, list[str]]:
    """Positional winners of game 1 and game 2 per question, and all valid labels."""
    o1, o2, labels = [], [], []
    for g in games:
        for gi, out in ((0, o1), (1, o2)):
            v = g[gi].get(key) if gi < len(g) and g[gi] else None
            out.append(_ARENA_POS.get(v) if v is not None else None)
            if v in _ARENA_POS:
                labels.append(v)
    return o1, o2, labels


def _logprobs(probs: dict[str, float]) -> dict[str, float]:
    z = sum(probs.values())
    return {k: math.log(max(v / z, _FLOOR)) for k, v in probs.items()} if z > 0 else {}


def combine_pairwise(lp1: dict[str, float], lp2: dict[str, float], flip: dict[str, str],
                     calib: dict[str, float] | None = None) -> dict[str, float]:
    """Verdict scores in game 1's frame: mean of game 1's log-probs and game 2's mapped through `flip`, each
    minus the content-free pair's log-prob of the positional verdict it stands for when `calib` is given."""
    c = calib or {}
    return {v: 0.5 * ((lp1[v] - c.get(v, 0.0)) + (lp2[flip[v]] - c.get(flip[v], 0.0))) for v in lp1}


def arena_combine(games: list[list[dict[str, Any]]], calib: list[dict[str, float] | None] | None = None) -> int:
    """Replace each question's two game verdicts by the both-orders combination (game 1's verdict = argmax of the
    combined scores, game 2's = its mirror), keeping the judge's own verdict as `raw_score`. Needs the verdict
    probabilities of a local judge (`probs`); games without them are left as they are. Returns how many
    questions were combined."""
    n = 0
    for qi, g in enumerate(games):
        if len(g) < 2 or not all(x and x.get("probs") and set(x["probs"]) == set(ARENA_FLIP) for x in g[:2]):
            continue
        cal = _logprobs(calib[qi]) if calib and calib[qi] else None
        comb = combine_pairwise(_logprobs(g[0]["probs"]), _logprobs(g[1]["probs"]), ARENA_FLIP, cal)
        best = max(ARENA_FLIP, key=lambda v: comb[v])  # ARENA_FLIP's order breaks ties, as the verdict list does
        for x, v in ((g[0], best), (g[1], ARENA_FLIP[best])):
            x["raw_score"] = x.get("score")
            x["score"] = v
        n += 1
    return n


# ------------------------------------------------------------------------------------------------ AlpacaEval
def exchanged(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same AlpacaEval items with output and reference exchanged: judged with the same order rule, every item
    is shown the other way round (and preferences come back in the frame output_1 = the model)."""
    return [{**it, "output": it["reference"], "reference": it["output"]} for it in items]


def _pref(p: float | None) -> float | None:
    """A usable preference, or None (no preference: None or NaN, as the official parser leaves it)."""
    return None if p is None or math.isnan(p) else float(p)


def _judge_frame_position(pref: float | None, swapped: bool) -> int | None:
    """+1 when the judge preferred the output it saw first. pref is in the frame output_1 = reference; swapped:
    the judge saw the model's output first."""
    pref = _pref(pref)
    if pref is None:
        return None
    seen = 3.0 - pref if swapped else pref  # preference in the judge's own order, 1 = first preferred
    return 1 if seen < 1.5 else -1 if seen > 1.5 else 0


def _ref_logit(pref: float) -> float:
    p = min(max(2.0 - pref, 1e-12), 1 - 1e-12)  # P(reference preferred)
    return math.log(p / (1 - p))


def alpaca_orders(rows: list[dict[str, Any]], mirror: list[dict[str, Any]] | None) -> tuple[list, list, list[str]]:
    """Positional winners per item (primary order, mirrored order or None) and the labels 'm'/'M'/'tie'."""
    o1 = [_judge_frame_position(r["preference"], bool(r.get("swapped"))) for r in rows]
    if mirror is None:
        o2: list[int | None] = [None] * len(rows)
    else:  # mirror preferences are in the frame output_1 = model; map back to reference-first
        o2 = [_judge_frame_position(None if _pref(m["preference"]) is None else 3.0 - m["preference"],
                                    not m.get("swapped")) for m in mirror]
    labels = [{1: "m", -1: "M", 0: "tie"}[d] for d in o1 + o2 if d is not None]
    return o1, o2, labels


def alpaca_combine(rows: list[dict[str, Any]], mirror: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose preference (frame output_1 = reference) is the both-orders combination: P(reference preferred)
    = σ(mean of the two orders' logits). With two verdicts the content-free calibration cancels in this mean, so
    none is needed. An order without a preference leaves the other's; the judge's own stays as `raw_preference`."""
    out = []
    for r, m in zip(rows, mirror):
        a = _pref(r["preference"])
        b = None if _pref(m["preference"]) is None else 3.0 - m["preference"]
        if a is None or b is None:
            comb = r["preference"] if b is None else b
        else:
            comb = 2.0 - 1.0 / (1.0 + math.exp(-0.5 * (_ref_logit(a) + _ref_logit(b))))
        raw = dict(r.get("raw_completion") or {})
        raw["mirrored"] = m.get("raw_completion")
        out.append({**r, "preference": comb, "raw_preference": a, "mirrored_preference": b, "raw_completion": raw})
    return out


# ------------------------------------------------------------------------------------------------ MT-Bench
def mt_ratings(rows: list[dict[str, Any]]) -> list[float | None]:
    """The rating each judgment names: the most probable one for a local judge, else the parsed score."""
    out: list[float | None] = []
    for r in rows:
        probs = r.get("probs")
        if probs:
            out.append(float(max(probs, key=lambda k: probs[k])))
        else:
            s = r.get("score")
            out.append(None if s is None or s == -1 else float(s))
    return out
