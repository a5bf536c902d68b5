"""AlpacaEval numbers against the official `alpaca-eval` package (installed for tests only, scripts/requirements-test.txt):
win rate, standard error, discrete win rate, the LC GLMs (on synthetic difficulty / gamed-baseline files written here),
the order (mirroring) rule and the log-prob parser must equal what alpaca_eval computes on the same input."""
from __future__ import annotations

import csv
import math
import random
import warnings

import numpy as np
import pytest

from ratioloop_py.evals import alpaca_eval, data

glm_winrate = pytest.importorskip("alpaca_eval.metrics.glm_winrate", reason="alpaca-eval (node scripts/setup.mjs --test)")
from alpaca_eval import completion_parsers, processors  # noqa: E402
from alpaca_eval.metrics import winrate as official_winrate  # noqa: E402

N = 60


def _annotations(seed: int, n: int = N, nan_rows: tuple[int, ...] = (7,), ties: tuple[int, ...] = (3, 11)):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ref = "r" * rng.randint(50, 900)
        out = "o" * rng.randint(20, 1500)
        p = 1.0 + rng.random()
        if i in ties:
            p = 1.5 if i % 2 else 0.0  # 0 is alpaca_eval's old encoding of a tie
        rows.append({"instruction": f"instruction {i}", "output_1": ref, "generator_1": "base", "output_2": out,
                     "generator_2": "model", "annotator": "synthetic", "preference": p})
    for i in nan_rows:
        rows[i]["preference"] = float("nan")
    return rows


def _write_gamed(path, n: int = N, seed: int = 5, shuffle_first: bool = False) -> None:
    rng = random.Random(seed)
    diff = [rng.gauss(0.0, 1.0) for _ in range(n)]
    lines = []
    for model in ("gamed_long", "gamed_short"):
        order = list(range(n))
        if shuffle_first and model == "gamed_long":
            rng.shuffle(order)
        for i in order:
            pref = "" if (model == "gamed_short" and i == 4) else repr(min(1.0, max(0.0, rng.random())))
            lines.append([model, i, pref, repr(rng.gauss(0.0, 1.3)), repr(diff[i]), "False"])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline"])
        w.writerows(lines)


def _official_lc(monkeypatch, rows, gamed_path, glm_name):
    import pandas as pd

    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kw: str(gamed_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return glm_winrate.get_length_controlled_winrate(pd.DataFrame(rows), glm_name=glm_name,
                                                         save_weights_dir=None, is_warn_extreme_changes=False)


def _ours_lc(rows, gamed_path, glm_name):
    prefs = [None if math.isnan(r["preference"]) else r["preference"] for r in rows]
    return alpaca_eval.length_controlled(prefs, [len(r["output_1"]) for r in rows], [len(r["output_2"]) for r in rows],
                                         glm=glm_name, gamed=data.load_df_gamed(gamed_path))


def test_win_rate_equals_official():
    rows = _annotations(1)
    off = official_winrate.get_winrate(rows)
    ours = alpaca_eval.win_rate([None if math.isnan(r["preference"]) else r["preference"] for r in rows])
    for k in ("win_rate", "standard_error", "discrete_win_rate"):
        assert ours[k] == off[k], k
    for k in ("n_wins", "n_wins_base", "n_draws", "n_total"):
        assert ours[k] == int(off[k]), k


@pytest.mark.parametrize("glm_name", ["length_controlled_v1", "length_controlled_noreg", "length_controlled_minimal"])
def test_lc_glm_equals_official(tmp_path, monkeypatch, glm_name):
    gamed = tmp_path / "df_gamed.csv"
    _write_gamed(gamed)
    rows = _annotations(2)
    off = _official_lc(monkeypatch, rows, gamed, glm_name)
    ours = _ours_lc(rows, gamed, glm_name)
    assert ours["lc_win_rate"] == pytest.approx(off["length_controlled_winrate"], abs=1e-12, rel=0)
    assert ours["lc_standard_error"] == pytest.approx(off["lc_standard_error"], abs=1e-12, rel=0)


def _glm_data(path, n: int, seed: int, noise: float = 0.15):
    """Annotations and a df_gamed.csv drawn from the LC GLM itself (θ like the leaderboard's 8B models), so the
    cross-validation has a real choice of C to make."""
    rng = random.Random(seed)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    diff = [rng.gauss(0, 1) for _ in range(n)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline"])
        for model, shift in (("gamed_long", 2.0), ("gamed_short", -2.0)):
            for i in range(n):
                s = rng.gauss(shift, 0.5)
                q = sig(-1.5 * math.tanh(s) + diff[i])
                w.writerow([model, i, repr(min(1, max(0, q + rng.gauss(0, noise)))), repr(s), repr(diff[i]), "False"])
    ref = [rng.randint(300, 3000) for _ in range(n)]
    out = [rng.randint(100, 3500) for _ in range(n)]
    d = np.array(ref) - np.array(out)
    sd = d.std(ddof=1)
    rows = []
    for i in range(n):
        q = sig(-1.5 * math.tanh(d[i] / sd) + diff[i] - 1.6)
        rows.append({"instruction": f"i{i}", "output_1": "r" * ref[i], "generator_1": "base", "output_2": "o" * out[i],
                     "generator_2": "model", "annotator": "synthetic",
                     "preference": 1 + min(1, max(0, q + rng.gauss(0, noise)))})
    return rows


def test_lc_fit_weights_and_C_equal_official(tmp_path, monkeypatch):
    """Coefficients and chosen C of length_controlled_v1 equal LogisticRegressionCV's inside alpaca_eval. On this
    draw (805 rows) per-(fold, C) seeding would pick C = 1e4 instead of 1291.55: the per-fold RandomState matters."""
    gamed = tmp_path / "df_gamed.csv"
    rows = _glm_data(gamed, 805, 3)
    captured = {}
    real_fit = glm_winrate.fit_LogisticRegressionCV

    def spy(*a, **kw):
        captured["model"] = m = real_fit(*a, **kw)
        return m

    monkeypatch.setattr(glm_winrate, "fit_LogisticRegressionCV", spy)
    off = _official_lc(monkeypatch, rows, gamed, "length_controlled_v1")
    ours = _ours_lc(rows, gamed, "length_controlled_v1")
    m = captured["model"]
    assert ours["C"] == float(m.C_[0]) == pytest.approx(1291.5496650148827)
    np.testing.assert_allclose(list(ours["weights"].values()), m.coef_[0], rtol=0, atol=1e-12)
    assert ours["lc_win_rate"] == pytest.approx(off["length_controlled_winrate"], abs=1e-12, rel=0)
    assert ours["lc_standard_error"] == pytest.approx(off["lc_standard_error"], abs=1e-12, rel=0)


def test_difficulty_looked_up_by_row_label_as_official(tmp_path, monkeypatch):
    """Upstream reads row i's difficulty at df_gamed.csv's row label i among the first occurrences of each
    instruction, not by the instruction's own index: with the first block shuffled the two differ, and ours follows
    upstream."""
    gamed = tmp_path / "df_gamed.csv"
    _write_gamed(gamed, shuffle_first=True)
    rows = _annotations(3, nan_rows=(0, 9))
    off = _official_lc(monkeypatch, rows, gamed, "length_controlled_v1")
    ours = _ours_lc(rows, gamed, "length_controlled_v1")
    assert ours["lc_win_rate"] == pytest.approx(off["length_controlled_winrate"], abs=1e-12, rel=0)


def test_order_rule_equals_official():
    import inspect

    import pandas as pd
    from alpaca_eval.annotators import base

    # the seed the annotator hands down to its single annotators, and so to the switch processor
    seed = inspect.signature(base.BaseAnnotator.__init__).parameters["seed"].default
    assert seed == alpaca_eval.ANNOTATOR_SEED
    instr = [f"Write item {i} of a list" for i in range(200)] + ["", "naïve ünïcode ✓"]
    proc = processors.RandomSwitchTwoColumnsProcessor(two_columns_to_switch=["output_1", "output_2"],
                                                      random_seed_columns=["instruction"],
                                                      _switch_column="is_switched_outputs", seed=seed)
    df = proc.preprocess(pd.DataFrame({"instruction": instr, "output_1": ["a"] * len(instr),
                                       "output_2": ["b"] * len(instr)}))
    ours = [alpaca_eval.is_swapped(s) for s in instr]
    assert ours == list(df["is_switched_outputs"])
    assert 60 < sum(ours) < 140  # a rule that never (or always) swaps would not pass


@pytest.mark.parametrize("top", [
    [{"token": "M", "logprob": -0.01}, {"token": "m", "logprob": -4.6}, {"token": "The", "logprob": -9.0}],
    [{"token": "m", "logprob": -0.2}],
    [{"token": "M", "logprob": -1.5}, {"token": "x", "logprob": -0.3}],
    [{"token": "m", "logprob": -3.0}, {"token": "M", "logprob": -0.5}, {"token": "m", "logprob": -0.1}],
    [{"token": "Both", "logprob": -0.1}, {"token": "The", "logprob": -2.0}],
])
def test_logprob_parser_equals_official(top):
    off = completion_parsers.logprob_parser({"logprobs": {"content": [{"top_logprobs": top}]}},
                                            numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False)[0]
    ours = alpaca_eval.preference_from_top_logprobs(top)
    if math.isnan(off):
        assert ours is None
    else:
        assert ours == off
