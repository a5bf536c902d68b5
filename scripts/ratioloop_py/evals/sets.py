"""The evaluate stage's benchmark sets: questions, baseline/reference answers, AlpacaEval's LC inputs and MT-Bench's
references from params (a path, `official` = the pinned download, or the data folder's file), each recorded by path,
sha256 and whether it is the official file; and each benchmark's judge prompts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..io import sha256_file
from . import alpaca_eval, data, mt_bench
from .official_prompts import prompt_set


def limit_of(p: dict[str, Any], bench: str) -> int | None:
    lim = p["limit"]
    if isinstance(lim, dict):
        lim = lim.get(bench)
    return None if lim is None else int(lim)


def _data_ref(path: Path | None, official: bool) -> dict[str, Any] | None:
    return None if path is None else {"path": str(path), "sha256": sha256_file(path), "official": official}


def load_sets(p: dict[str, Any], data_dir: Path, cache_dir: Path, has_baseline_model: bool) -> dict[str, Any]:
    """Every benchmark of params.benchmarks, cut to params.limit; a baseline model stands in for missing baseline or
    reference answers. Bad input fails here, before any model is loaded."""
    def default(rel: str) -> Path | None:
        f = data_dir / rel
        return f if f.exists() else None

    sets: dict[str, Any] = {}
    if "arena_hard" in p["benchmarks"]:
        a = p["arena_hard"]
        qpath, qoff = data.resolve(a["questions"], "arena_hard.questions", cache_dir,
                                   default("arena_hard/question.jsonl"))
        if qpath is None:
            raise BadInput("params.arena_hard.questions: no question file (none in the data folder either)")
        qs = data.load_arena_questions(qpath)
        full = len(qs)
        if limit_of(p, "arena_hard") is not None:
            qs = qs[:limit_of(p, "arena_hard")]
        bpath, boff = None, False
        if a["baseline_answers"] or not has_baseline_model:
            bpath, boff = data.resolve(a["baseline_answers"], "arena_hard.baseline_answers", cache_dir,
                                       default("arena_hard/baseline_answers.jsonl"))
            if bpath is None:
                raise BadInput("params.arena_hard.baseline_answers: none given and no baseline model "
                               "(inputs.baseline / params.models.baseline)")
        sets["arena_hard"] = {"questions": qs, "q_ref": _data_ref(qpath, qoff), "b_ref": _data_ref(bpath, boff),
                              "full": len(qs) == full}
    if "alpaca_eval" in p["benchmarks"]:
        a = p["alpaca_eval"]
        ipath, ioff = data.resolve(a["instructions"], "alpaca_eval.reference_outputs", cache_dir,
                                   default("alpaca_eval/instructions.json"), param="alpaca_eval.instructions")
        if ipath is None:
            raise BadInput("params.alpaca_eval.instructions: no instruction file (none in the data folder either)")
        items = data.load_alpaca(ipath)
        full = len(items)
        rpath, roff = None, False
        if a["reference_outputs"] or not has_baseline_model:
            rpath, roff = data.resolve(a["reference_outputs"], "alpaca_eval.reference_outputs", cache_dir,
                                       default("alpaca_eval/reference_outputs.json"))
            if rpath is None and not all("output" in it for it in items):
                raise BadInput("params.alpaca_eval.reference_outputs: none given and no baseline model")
        if limit_of(p, "alpaca_eval") is not None:
            items = items[:limit_of(p, "alpaca_eval")]
        diff = gamed = None
        goff = False
        if a["instruction_difficulty"]:
            dpath, _ = data.resolve(a["instruction_difficulty"], "alpaca_eval.instruction_difficulty",
                                    cache_dir, None)
            diff = data.load_instruction_difficulty(dpath)[:len(items)]
            if len(diff) != len(items):
                raise BadInput("params.alpaca_eval.instruction_difficulty: fewer rows than instructions")
        if a["gamed"]:  # df_gamed.csv: the leaderboard's LC GLM (length_controlled_v1) needs it
            gpath, goff = data.resolve(a["gamed"], "alpaca_eval.df_gamed", cache_dir, None,
                                    param="alpaca_eval.gamed")
            gamed = data.load_df_gamed(gpath)
            alpaca_eval.difficulty_by_label(gamed, len(items))  # fails now, not after judging
        sets["alpaca_eval"] = {"items": items, "i_ref": _data_ref(ipath, ioff), "r_ref": _data_ref(rpath, roff),
                               "difficulty": diff, "gamed": gamed, "gamed_official": goff,
                               "full": full == data.OFFICIAL_ALPACA_INSTRUCTIONS and len(items) == full}
    if "mt_bench" in p["benchmarks"]:
        a = p["mt_bench"]
        qpath, qoff = data.resolve(a["questions"], "mt_bench.questions", cache_dir,
                                   default("mt_bench/question.jsonl"))
        if qpath is None:
            raise BadInput("params.mt_bench.questions: no question file (none in the data folder either)")
        qs = data.load_mt_questions(qpath)
        full = len(qs)
        # FastChat grades with the GPT-4 reference answers: the official ones go with the official questions.
        ref_value = a["reference_answers"] or ("official" if qoff else None)
        rpath, roff = data.resolve(ref_value, "mt_bench.reference_answers", cache_dir,
                                   default("mt_bench/reference_answer.jsonl"))
        if rpath:  # a reference file replaces the questions' own short `reference` strings, as in FastChat
            refs = data.load_mt_reference(rpath)
            for q in qs:
                q.pop("reference", None)
                if q["id"] in refs:
                    q["reference"] = refs[q["id"]]
        if limit_of(p, "mt_bench") is not None:
            qs = qs[:limit_of(p, "mt_bench")]
        missing = mt_bench.missing_references(qs)
        if missing:
            raise BadInput(f"params.mt_bench.reference_answers: no reference answer for question(s) "
                           f"{', '.join(missing[:5])} (category {next(q['category'] for q in qs if q['id'] == missing[0])}"
                           f"; FastChat grades {', '.join(mt_bench.NEED_REF_CATS)} only against a reference)"
                           + (f" in {rpath}" if rpath else ""))
        sets["mt_bench"] = {"questions": qs, "q_ref": _data_ref(qpath, qoff), "r_ref": _data_ref(rpath, roff),
                            "full": len(qs) == full,
                            "reference_source": "file" if rpath else "question file 'reference' fields"}
    for b in sets:
        sets[b]["prompts"] = prompt_set(b, p[b]["prompts"], cache_dir)
    return sets

