"""Fidelity check: recompute leaderboard numbers from official judge files with ratioloop's own scoring code.

    python scripts/verify_eval.py --alpaca-annotations results/<model>/weighted_alpaca_eval_gpt4_turbo/annotations.json \
        [--alpaca-leaderboard weighted_alpaca_eval_gpt4_turbo_leaderboard.csv] \
        [--instruction-difficulty instruction_difficulty.csv [--glm-weights baseline_gpt4_1106_preview.csv]]
    python scripts/verify_eval.py --arena-judgments model_judgment/gpt-4-1106-preview/<model>.jsonl \
        [--arena-leaderboard arena_hard_leaderboard_20240731.csv] [--bradley-terry]

AlpacaEval: win rate, standard error, wins/losses/draws, discrete win rate and avg_length from an annotation file;
with the instruction-difficulty csv (on the Hugging Face Hub, not on GitHub) also the LC win rate — from the saved
GLM weights when given (how the leaderboard computes it), and refitted by our GLM. ArenaHard: score and bootstrap
CI from a judgment file. Prints JSON; with a leaderboard csv, also the published values and the differences.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratioloop_py.evals import alpaca_eval, arena_hard, data  # noqa: E402
from ratioloop_py.io import read_jsonl_rows  # noqa: E402

ALPACA_KEYS = ["win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate",
               "avg_length", "length_controlled_winrate"]


def _csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    key_col = head.index("model") if "model" in head else 0
    return {r[key_col]: dict(zip(head, r)) for r in rows[1:] if r}


def _num(x: str) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _compare(ours: dict[str, Any], published: dict[str, str], keys: list[str]) -> dict[str, Any]:
    out = {}
    for k in keys:
        pub = _num(published.get(k, ""))
        mine = ours.get(k)
        if pub is None or mine is None:
            continue
        out[k] = {"ours": mine, "published": pub, "diff": float(mine) - pub}
    return out


def check_raw_completions(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Our log-prob → preference rule applied to each row's raw judge completion (top-5 log-probs of the one
    output token) must give the stored preference, either directly or mirrored (3 − p: the annotator showed
    the outputs in swapped order for that row)."""
    import math

    n = matched = direct = 0
    worst = 0.0
    for r in rows:
        content = (((r.get("raw_completion") or {}).get("logprobs") or {}).get("content") or [])
        if not content or r.get("preference") is None:
            continue
        probs: dict[str, float] = {}
        for t in content[0].get("top_logprobs") or []:
            probs[t["token"]] = probs.get(t["token"], 0.0) + math.exp(t["logprob"])
        p = alpaca_eval.preference_from_probs(probs)
        if p is None:
            continue
        n += 1
        pref = float(r["preference"])
        d = min(abs(p - pref), abs(3 - p - pref))
        worst = max(worst, d)
        matched += d < 1e-8
        direct += abs(p - pref) < 1e-8
    return {"rows_with_logprobs": n, "matched": matched, "matched_unswapped": direct, "max_abs_diff": worst}


def verify_alpaca(path: Path, leaderboard: Path | None, difficulty: Path | None, weights: Path | None) -> dict:
    rows = json.loads(path.read_text(encoding="utf-8"))
    model = rows[0].get("generator_2")
    prefs = [r.get("preference") for r in rows]
    prefs = [None if p is None else float(p) for p in prefs]
    res: dict[str, Any] = {"file": str(path), "model": model, "annotator": rows[0].get("annotator")}
    res.update(alpaca_eval.win_rate(prefs, [len(r["output_2"]) for r in rows]))
    res["raw_completion_check"] = check_raw_completions(rows)
    if difficulty:
        diff = data.load_instruction_difficulty(difficulty)[:len(rows)]
        lc = alpaca_eval.length_controlled(prefs, [len(r["output_1"]) for r in rows],
                                           [len(r["output_2"]) for r in rows], diff)
        res["lc_refit"] = lc
        res["length_controlled_winrate"] = lc["lc_win_rate"]
        if weights:
            table = _csv_rows(weights)
            if model in table:
                w = {k: float(v) for k, v in table[model].items() if k and _num(v) is not None}
                res["length_controlled_winrate"] = alpaca_eval.lc_from_weights(w, diff)
                res["lc_source"] = "saved GLM weights"
    if leaderboard:
        table = _csv_rows(leaderboard)
        if model in table:
            res["comparison"] = _compare(res, table[model], ALPACA_KEYS)
    return res


def verify_arena(path: Path, leaderboard: Path | None, bt: bool, rounds: int, seed: int) -> dict:
    rows = read_jsonl_rows(path)
    model = rows[0].get("model") if rows else None
    res: dict[str, Any] = {"file": str(path), "model": model}
    res.update(arena_hard.score(rows, rounds=rounds, seed=seed, bradley_terry=bt))
    if leaderboard:
        table = _csv_rows(leaderboard)
        if model in table:
            pub = table[model]
            res["comparison"] = _compare(res, {"score": pub.get("score", "")}, ["score"])
            res["published_ci"] = pub.get("CI")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Recompute AlpacaEval / ArenaHard leaderboard numbers from judge files")
    ap.add_argument("--alpaca-annotations", type=Path, nargs="*", default=[], help="annotations.json files")
    ap.add_argument("--alpaca-leaderboard", type=Path, help="alpaca_eval leaderboard csv to compare with")
    ap.add_argument("--instruction-difficulty", type=Path, help="instruction_difficulty.csv (HF dataset tatsu-lab/alpaca_eval)")
    ap.add_argument("--glm-weights", type=Path, help="saved GLM weights csv (baseline_gpt4_1106_preview.csv)")
    ap.add_argument("--arena-judgments", type=Path, nargs="*", default=[], help="ArenaHard v0.1 judgment jsonl files")
    ap.add_argument("--arena-leaderboard", type=Path, help="arena-hard leaderboard csv to compare with")
    ap.add_argument("--bradley-terry", action="store_true", help="v0.1 Bradley–Terry fit for the ArenaHard score")
    ap.add_argument("--bootstrap-rounds", type=int, default=100)
    ap.add_argument("--bootstrap-seed", type=int, default=42)
    ap.add_argument("--tolerance", type=float, default=1e-6, help="max |diff| counted as a match")
    args = ap.parse_args(argv)
    if not args.alpaca_annotations and not args.arena_judgments:
        ap.error("give --alpaca-annotations and/or --arena-judgments")
    out: dict[str, Any] = {"alpaca_eval": [], "arena_hard": []}
    for p in args.alpaca_annotations:
        out["alpaca_eval"].append(verify_alpaca(p, args.alpaca_leaderboard, args.instruction_difficulty,
                                                args.glm_weights))
    for p in args.arena_judgments:
        out["arena_hard"].append(verify_arena(p, args.arena_leaderboard, args.bradley_terry, args.bootstrap_rounds,
                                              args.bootstrap_seed))
    mismatches = [(r["model"], k) for group in out.values() for r in group
                  for k, c in (r.get("comparison") or {}).items() if abs(c["diff"]) > args.tolerance]
    out["mismatches"] = [f"{m}: {k}" for m, k in mismatches]
    print(json.dumps(out, indent=2))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
