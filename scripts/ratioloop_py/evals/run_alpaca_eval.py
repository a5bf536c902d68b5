"""The evaluate stage's AlpacaEval 2 runner: judge each instruction against its reference, write alpaca_eval's
output, annotation and leaderboard files, win rates and LC, and fill the summary and metrics of `ev`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadInput
from . import alpaca_eval, data, informative
from .judges import Judge
from .outputs import safe_name, write_json, write_leaderboard


def run(ev: Any, judge: Judge, s: dict[str, Any], ans: dict[str, Any]) -> None:
    items = s["items"]
    pol = ans["policy"]["alpaca_eval"]
    if s["r_ref"]:
        ref_items = data.load_alpaca(Path(s["r_ref"]["path"]))
        by_instr = {r["instruction"]: r for r in ref_items if "output" in r}
        refs = []
        for it in items:
            r = by_instr.get(it["instruction"]) or (it if "output" in it else None)
            if r is None:
                raise BadInput(f"{s['r_ref']['path']}: no reference output for instruction {it['instruction'][:60]!r}")
            refs.append((r["output"], r.get("generator") or "reference"))
    elif "alpaca_eval" in ans["baseline"]:
        bn = ev.baseline_name or "baseline"
        refs = [(ans["baseline"]["alpaca_eval"][str(i)]["turns"][0], bn) for i in range(len(items))]
    else:  # instructions file that carries its reference outputs
        refs = [(it["output"], it.get("generator") or "reference") for it in items]
    outs = [pol[str(i)]["turns"][0] for i in range(len(items))]
    judged_items = [{"instruction": it["instruction"], "output": o, "reference": r[0]}
                    for it, o, r in zip(items, outs, refs)]
    n = len(items)
    err0 = judge.n_errors
    # the order of the two outputs follows alpaca_eval's per-instruction rule, not the stage seed
    jkw: dict[str, Any] = {"temperature": float(ev.p["alpaca_eval"]["judge_temperature"]),
                           "prompt_set": s["prompts"]}
    res_rows = alpaca_eval.judge_items(judge, judged_items, **jkw,
                                       on_done=lambda k: ev.stage.progress(k, n, "alpaca_eval judgments"))
    mirror, combine = None, ev.debias(judge)
    if combine or ev.p["judge"]["consistency_check"]:  # the other order: combination and/or consistency rate
        mirror = alpaca_eval.judge_items(judge, informative.exchanged(judged_items), **jkw, on_done=lambda k:
                                         ev.stage.progress(k, n, "alpaca_eval judgments, other order"))
    o1, o2, labels = informative.alpaca_orders(res_rows, mirror)
    jstats = informative.pairwise_stats(o1, o2, labels=labels, **ev._inf())
    if mirror is not None and combine:
        res_rows = informative.alpaca_combine(res_rows, mirror)
        jstats["combined_orders"] = len(res_rows)
    annotator = f"ratioloop_{safe_name(judge.name)}"
    model_outputs = [{"dataset": it.get("dataset", ""), "instruction": it["instruction"], "output": o,
                      "generator": ev.model_name} for it, o in zip(items, outs)]
    annotations = [{"instruction": it["instruction"], "output_1": r[0], "generator_1": r[1],
                    "dataset": it.get("dataset", ""), "output_2": o, "generator_2": ev.model_name,
                    "annotator": annotator, "preference": rr["preference"],
                    "raw_completion": rr["raw_completion"], "swapped": rr["swapped"]}
                   for it, o, r, rr in zip(items, outs, refs, res_rows)]
    d = ev.out / "alpaca_eval"
    write_json(d / "model_outputs.json", model_outputs)
    write_json(d / annotator / "annotations.json", annotations)
    ev.outputs["alpaca_eval_outputs"] = d / "model_outputs.json"
    ev.outputs["alpaca_eval_annotations"] = d / annotator / "annotations.json"
    if not s["r_ref"] and "alpaca_eval" in ans["baseline"]:
        write_json(d / "reference_outputs.json", [{"dataset": it.get("dataset", ""), "instruction": it["instruction"],
                                                    "output": r[0], "generator": r[1]} for it, r in zip(items, refs)])
        ev.outputs["alpaca_eval_reference_outputs"] = d / "reference_outputs.json"
    prefs = [rr["preference"] for rr in res_rows]
    res = alpaca_eval.win_rate(prefs, [len(o) for o in outs])
    res.update(lc_result(prefs, [len(r[0]) for r in refs], [len(o) for o in outs], s))
    extra = [] if res["length_controlled_winrate"] is not None else [res["lc_unavailable_because"]]
    if s["gamed"] is not None and not s["gamed_official"]:
        extra.append("df_gamed.csv is not the pinned official file")
    if mirror is not None and combine:
        extra.append("preferences combine both orders (judge.position_debias)")
    official = bool(s["i_ref"]["official"] and s["full"] and s["r_ref"] and s["r_ref"]["official"])
    res.update(instructions=s["i_ref"], reference_outputs=s["r_ref"],
               **ev._comparable("alpaca_eval", judge, official, extra),
               **ev._judge_health("alpaca_eval", judge, err0, res["n_invalid"], len(prefs), jstats))
    ev.summary["alpaca_eval"] = res
    write_leaderboard(d / "leaderboard.csv", ev.model_name, res)
    ev.outputs["alpaca_eval_leaderboard"] = d / "leaderboard.csv"
    ev.metrics.update({"alpaca_eval.win_rate": res["win_rate"], "alpaca_eval.se": res["standard_error"],
                         "alpaca_eval.lc_win_rate": res["length_controlled_winrate"],
                         "alpaca_eval.lc_se": res["lc_standard_error"],
                         "alpaca_eval.discrete_win_rate": res["discrete_win_rate"],
                         "alpaca_eval.n_invalid": res["n_invalid"]})


def lc_result(prefs: list[float | None], len_ref: list[int], len_model: list[int],
              s: dict[str, Any]) -> dict[str, Any]:
    """The leaderboard's LC (length_controlled_v1) when df_gamed.csv is given; otherwise no LC number, the
    reason, and the fit the given files allow under its own alpaca_eval name (noreg with instruction
    difficulties, else minimal), never under the official key."""
    lc = alpaca_eval.length_controlled(prefs, len_ref, len_model, gamed=s["gamed"])
    out: dict[str, Any] = {"length_controlled_winrate": lc["lc_win_rate"],
                           "lc_standard_error": lc["lc_standard_error"], "glm": lc}
    if lc["lc_win_rate"] is None:
        out["lc_unavailable_because"] = f"no official LC: {lc.get('reason')}"
        name = "length_controlled_noreg" if s["difficulty"] is not None else "length_controlled_minimal"
        alt = alpaca_eval.length_controlled(prefs, len_ref, len_model, glm=name,
                                            instruction_difficulty=s["difficulty"])
        out[f"{name}_winrate"] = alt["lc_win_rate"]
        out["glm_unofficial"] = alt
    return out
