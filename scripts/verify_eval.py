"""Fidelity check: recompute published leaderboard numbers from the official judge files with ratioloop's own code.

    python scripts/verify_eval.py --reference-dir DIR [--gamed df_gamed.csv] [--instruction-difficulty FILE] [--json]

DIR is laid out like the official repositories (the layout of a `reference_results` folder):

    alpaca_eval/results/<model>/<annotator>/annotations.json     judge annotations (output_1 = the baseline)
    alpaca_eval/results/<model>/model_outputs.json               a model's outputs (avg_length)
    alpaca_eval/leaderboards/<annotator>_leaderboard.csv         published numbers, rows keyed by model name
    alpaca_eval/glm_weights/<annotator>/length_controlled_v1/baseline_<baseline>.csv   saved LC GLM weights
    alpaca_eval/df_gamed.csv, alpaca_eval/instruction_difficulty.csv                  the LC GLM's files (optional)
    arena_hard_v0.1/leaderboard/*.csv                            published scores (model, score, ..., avg_tokens)
    arena_hard_v0.1/model_judgment/<judge>/<model>.jsonl         v0.1 judgments (games with verdicts)
    arena_hard_v0.1/model_answer/<model>.jsonl                   answers with token_len (avg_tokens)

Every number that the files allow is recomputed and compared within its tolerance: AlpacaEval win rate, standard
error, counts, discrete win rate, avg_length and LC (refit with df_gamed.csv, its lc_standard_error and GLM
coefficients against the saved weights; from the saved GLM weights with instruction_difficulty.csv) to 1e-9; the order of each annotated row must be the one alpaca_eval's rule gives (the
row's raw judge log-probs, read in that order, give the stored preference); ArenaHard scores rounded to 2 decimals
as published, avg_tokens as int(mean token_len). Leaderboards named docs_* (display names) and the bootstrap CIs
(random) are not compared. Exit 1 on any mismatch, on a model missing from a leaderboard it should be in, or when
nothing was compared; 2 on unreadable input. The last lines are a short table.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.evals import alpaca_eval, arena_hard, data  # noqa: E402
from ratioloop_py.io import read_jsonl_rows  # noqa: E402

ALPACA_TOL = 1e-9
ALPACA_KEYS = ["win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate",
               "avg_length"]


class Report:
    """Every comparison made, every failure (a mismatch or a missing model), and what could not be compared."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.skipped: list[str] = []

    def compare(self, bench: str, model: str, metric: str, ours: float | None, published: float | None,
                tol: float, rounding: int | None = None, source: str = "") -> None:
        if published is None:
            return
        if ours is None:
            self.fail(f"{bench} {model} {metric}: published {published}, ours could not be computed")
            return
        shown = round(float(ours), rounding) if rounding is not None else float(ours)
        diff = shown - float(published)
        ok = abs(diff) <= tol
        self.checks.append({"benchmark": bench, "model": model, "metric": metric, "ours": float(ours),
                            "published": float(published), "diff": diff, "tolerance": tol, "ok": ok,
                            **({"rounded_to": rounding} if rounding is not None else {}),
                            **({"source": source} if source else {})})
        if not ok:
            self.fail(f"{bench} {model} {metric}: ours {shown!r} vs published {published!r} (diff {diff:.3g} > {tol:g})")

    def exact(self, bench: str, model: str, metric: str, n_ok: int, n: int, detail: str = "") -> None:
        ok = n > 0 and n_ok == n
        self.checks.append({"benchmark": bench, "model": model, "metric": metric, "ours": n_ok, "published": n,
                            "diff": n - n_ok, "tolerance": 0, "ok": ok, **({"detail": detail} if detail else {})})
        if not ok:
            self.fail(f"{bench} {model} {metric}: {n_ok}/{n} rows {detail}".rstrip())

    def fail(self, msg: str) -> None:
        self.failures.append(msg)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def read_leaderboard(path: Path) -> dict[str, dict[str, str]]:
    """{model: row} from a leaderboard csv keyed by its first column (unnamed in alpaca_eval, `model` in arena)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise BadInput(f"{path}: {e}") from None
    if not rows:
        raise BadInput(f"{path}: empty leaderboard")
    head = rows[0]
    key = head.index("model") if "model" in head else 0
    return {r[key]: dict(zip(head, r)) for r in rows[1:] if r}


def _load_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: not readable JSON ({e})") from None
    if not isinstance(rows, list) or not rows:
        raise BadInput(f"{path}: expected a non-empty JSON list")
    return rows


def check_order(rows: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(rows checked, rows matching, rows mirrored by the rule). A row is checked when it holds the judge's top
    log-probs: the official parser on them gives the preference in the judge's order, which alpaca_eval's order rule
    must map onto the stored one (3 − p when it mirrored the row) — the other orientation counts as a mismatch."""
    n = ok = mirrored = 0
    for r in rows:
        content = (((r.get("raw_completion") or {}).get("logprobs") or {}).get("content") or [])
        pref = _num(r.get("preference"))
        if not content or pref is None:
            continue
        p = alpaca_eval.preference_from_top_logprobs(content[0].get("top_logprobs") or [])
        if p is None:
            continue
        sw = alpaca_eval.is_swapped(r["instruction"])
        n += 1
        mirrored += sw
        ok += abs((3.0 - p if sw else p) - pref) <= ALPACA_TOL
    return n, ok, mirrored


def verify_alpaca_annotations(rep: Report, path: Path, boards: dict[str, dict[str, dict[str, str]]],
                              gamed: dict[str, list[Any]] | None, difficulty: list[float] | None,
                              weights: dict[str, dict[str, str]] | None) -> str:
    rows = _load_json_list(path)
    model = str(rows[0].get("generator_2"))
    prefs = [_num(r.get("preference")) for r in rows]
    ours = alpaca_eval.win_rate(prefs, [len(r["output_2"]) for r in rows])
    n, ok, mirrored = check_order(rows)
    if n:
        rep.exact("alpaca_eval", model, "order rule", ok, n, f"as stored ({mirrored} mirrored)")
    else:
        rep.skipped.append(f"alpaca_eval {model}: order rule (no raw judge log-probs in {path.name})")
    lc = lc_w = None
    if gamed is not None:
        lc = alpaca_eval.length_controlled(prefs, [len(r["output_1"]) for r in rows],
                                           [len(r["output_2"]) for r in rows], gamed=gamed)
        if weights is not None and model in weights and lc["weights"]:
            for k, v in lc["weights"].items():  # the refit's coefficients against the saved ones
                rep.compare("alpaca_eval", model, f"glm {k}", v, _num(weights[model].get(k)), ALPACA_TOL,
                            source="refit vs saved GLM weights")
    if difficulty is not None and weights is not None and model in weights:
        w = {k: float(v) for k, v in weights[model].items() if k and _num(v) is not None}
        lc_w = alpaca_eval.lc_from_weights(w, difficulty[:len(rows)])
    if not boards:
        rep.skipped.append(f"alpaca_eval {model}: no leaderboard csv to compare with")
    for name, board in boards.items():
        if model not in board:
            rep.fail(f"alpaca_eval {model}: missing from leaderboard {name}")
            continue
        pub = board[model]
        for k in ALPACA_KEYS:
            rep.compare("alpaca_eval", model, k, ours.get(k), _num(pub.get(k)), ALPACA_TOL)
        if lc is not None:
            rep.compare("alpaca_eval", model, "length_controlled_winrate", lc["lc_win_rate"],
                        _num(pub.get("length_controlled_winrate")), ALPACA_TOL, source="refit (df_gamed.csv)")
            rep.compare("alpaca_eval", model, "lc_standard_error", lc["lc_standard_error"],
                        _num(pub.get("lc_standard_error")), ALPACA_TOL, source="refit (df_gamed.csv)")
        if lc_w is not None:
            rep.compare("alpaca_eval", model, "length_controlled_winrate", lc_w,
                        _num(pub.get("length_controlled_winrate")), ALPACA_TOL, source="saved GLM weights")
        if lc is None and lc_w is None and _num(pub.get("length_controlled_winrate")) is not None:
            rep.skipped.append(f"alpaca_eval {model}: LC (needs df_gamed.csv, or instruction_difficulty.csv with "
                               f"the saved GLM weights)")
    return model


def verify_alpaca_dir(rep: Report, root: Path, gamed_path: Path | None, diff_path: Path | None) -> None:
    gamed_path = gamed_path or (root / "df_gamed.csv" if (root / "df_gamed.csv").exists() else None)
    diff_path = diff_path or (root / "instruction_difficulty.csv" if (root / "instruction_difficulty.csv").exists()
                              else None)
    gamed = data.load_df_gamed(gamed_path) if gamed_path else None
    difficulty = data.load_instruction_difficulty(diff_path) if diff_path else None
    boards_by_annotator: dict[str, dict[str, dict[str, str]]] = {}
    for p in sorted((root / "leaderboards").glob("*_leaderboard.csv")):
        if p.name.startswith("docs_"):
            rep.skipped.append(f"alpaca_eval: {p.name} (display names, not model names)")
            continue
        boards_by_annotator[p.name[: -len("_leaderboard.csv")]] = {p.name: read_leaderboard(p)}
    annotated: set[str] = set()
    for ann in sorted((root / "results").glob("*/*/annotations.json")):
        annotator = ann.parent.name
        wfiles = sorted((root / "glm_weights" / annotator / "length_controlled_v1").glob("baseline_*.csv"))
        weights = read_leaderboard(wfiles[0]) if wfiles else None
        annotated.add(verify_alpaca_annotations(rep, ann, boards_by_annotator.get(annotator, {}), gamed, difficulty,
                                                weights))
    # Models with outputs but no annotations here: their avg_length, in every leaderboard.
    for mo in sorted((root / "results").glob("*/model_outputs.json")):
        model = mo.parent.name
        if model in annotated:
            continue
        rows = _load_json_list(mo)
        avg = alpaca_eval.win_rate([], [len(str(r.get("output") or "")) for r in rows]).get("avg_length")
        for boards in boards_by_annotator.values():
            for name, board in boards.items():
                if model not in board:
                    rep.fail(f"alpaca_eval {model}: missing from leaderboard {name}")
                else:
                    rep.compare("alpaca_eval", model, "avg_length", avg, _num(board[model].get("avg_length")),
                                ALPACA_TOL, source="model_outputs.json")


def verify_arena_dir(rep: Report, root: Path, rounds: int, seed: int) -> None:
    boards = {p.name: read_leaderboard(p) for p in sorted((root / "leaderboard").glob("*.csv"))}
    if not boards:
        rep.skipped.append("arena_hard: no leaderboard csv")
        return
    for j in sorted((root / "model_judgment").glob("*/*.jsonl")):
        rows = read_jsonl_rows(j)
        model = str((rows[0].get("model") if rows else None) or j.stem)
        res = arena_hard.score(rows, rounds=rounds, seed=seed)
        for name, board in boards.items():
            if model not in board:
                rep.fail(f"arena_hard {model}: missing from leaderboard {name}")
            else:
                rep.compare("arena_hard", model, "score", res["score"], _num(board[model].get("score")), 1e-9,
                            rounding=2, source=f"judge {j.parent.name}")
    for a in sorted((root / "model_answer").glob("*.jsonl")):
        rows = read_jsonl_rows(a)
        lens = [_token_len(r) for r in rows]
        model = str(rows[0].get("model_id") or rows[0].get("model") or a.stem) if rows else a.stem
        if not rows or any(x is None for x in lens):
            rep.skipped.append(f"arena_hard {model}: avg_tokens (no token_len in {a.name})")
            continue
        for name, board in boards.items():
            if model not in board:
                rep.fail(f"arena_hard {model}: missing from leaderboard {name}")
            else:
                rep.compare("arena_hard", model, "avg_tokens", int(sum(lens) / len(lens)),
                            _num(board[model].get("avg_tokens")), 0.0, source=a.name)


def _token_len(row: dict[str, Any]) -> int | None:
    """v0.1's rule: the first turn's token_len, else conv_metadata.token_len."""
    try:
        turn = row["choices"][0]["turns"][0]
    except (KeyError, IndexError, TypeError):
        turn = {}
    if isinstance(turn, dict) and "token_len" in turn:
        return int(turn["token_len"])
    meta = row.get("conv_metadata") or {}
    return int(meta["token_len"]) if "token_len" in meta else None


def table(rep: Report) -> list[str]:
    lines = [f"{'benchmark':<12} {'model':<34} {'metric':<26} {'ours':>20} {'published':>20}  ok"]
    for c in rep.checks:
        fmt = (lambda v: f"{v:.12g}") if c["metric"] != "order rule" else (lambda v: str(int(v)))
        lines.append(f"{c['benchmark']:<12} {c['model'][:34]:<34} {c['metric'][:26]:<26} {fmt(c['ours']):>20} "
                     f"{fmt(c['published']):>20}  {'yes' if c['ok'] else 'NO'}")
    n_ok = sum(c["ok"] for c in rep.checks)
    lines.append(f"{n_ok}/{len(rep.checks)} comparisons match; {len(rep.failures)} failures; "
                 f"{len(rep.skipped)} not comparable here")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Recompute published AlpacaEval / ArenaHard numbers from official files")
    ap.add_argument("--reference-dir", type=Path, required=True, help="folder laid out like reference_results")
    ap.add_argument("--gamed", type=Path, help="df_gamed.csv (default: alpaca_eval/df_gamed.csv in the folder)")
    ap.add_argument("--instruction-difficulty", type=Path,
                    help="instruction_difficulty.csv (default: alpaca_eval/instruction_difficulty.csv in the folder)")
    ap.add_argument("--bootstrap-rounds", type=int, default=100)
    ap.add_argument("--bootstrap-seed", type=int, default=42)
    ap.add_argument("--json", action="store_true", help="print every comparison as JSON before the table")
    args = ap.parse_args(argv)
    root: Path = args.reference_dir
    rep = Report()
    try:
        if not root.is_dir():
            raise BadInput(f"--reference-dir {root}: not a folder")
        for p in (args.gamed, args.instruction_difficulty):
            if p is not None and not p.is_file():
                raise BadInput(f"{p}: no such file")
        if (root / "alpaca_eval").is_dir():
            verify_alpaca_dir(rep, root / "alpaca_eval", args.gamed, args.instruction_difficulty)
        if (root / "arena_hard_v0.1").is_dir():
            verify_arena_dir(rep, root / "arena_hard_v0.1", args.bootstrap_rounds, args.bootstrap_seed)
    except BadInput as e:
        print(f"verify_eval: {e}", file=sys.stderr)
        return 2
    if not rep.checks:
        rep.fail(f"nothing compared under {root}")
    if args.json:
        print(json.dumps({"checks": rep.checks, "failures": rep.failures, "not_compared": rep.skipped}, indent=2))
    for s in rep.skipped:
        print(f"not compared: {s}")
    for f in rep.failures:
        print(f"FAIL: {f}")
    print("\n".join(table(rep)))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
