"""Reward accuracy: how often the configured guided density-ratio reward scores `chosen` above `rejected`.

A plain CLI (not a stage). `ratioloop reward-eval --config FILE --pairs FILE [--json]` writes the resolved score
section (with its `models`) to a JSON file and calls

    python scripts/reward_eval.py --config-json CFG.json --pairs PAIRS [--json] [--limit N]

or, standalone:  --strong DIR --weak DIR [--weak-template none] [--router-kind field] [--guidance DIR] ...

Pair formats (.jsonl or .jsonl.gz), detected per row:
  RewardBench   {prompt, chosen, rejected, subset?}           (strings)
  hh-rlhf       {chosen, rejected}                            ("\\n\\nHuman: … \\n\\nAssistant: …" dialogues)
  ratioloop     {prompt: [msgs], chosen: [msgs], rejected: [msgs]}  (TRL conversational, the pairs stage output)
Accuracy is reported overall, per subset (the row's `subset`, else the file name) and per routed domain,
unguided and guided side by side. Ties count as wrong (chosen must score strictly higher).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.guidance import LABELS, apply_guidance, load_guidance  # noqa: E402
from ratioloop_py.router import EndpointRouter, LocalRouter, normalize_label, router_prompt  # noqa: E402

import score as score_stage  # noqa: E402

_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_dialogue(text: str) -> list[dict[str, str]]:
    """hh-rlhf "\\n\\nHuman: … \\n\\nAssistant: …" → [{role, content}]."""
    parts = _TURN.split(text if text.startswith("\n\n") else "\n\n" + text)
    if parts[0].strip():
        raise ValueError("dialogue does not start with Human:/Assistant:")
    msgs = []
    for k in range(1, len(parts) - 1, 2):
        msgs.append({"role": "user" if parts[k] == "Human" else "assistant", "content": parts[k + 1].strip()})
    return msgs


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _subset_name(path: Path) -> str:
    name = path.name
    for suf in (".gz", ".jsonl", ".json"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    return name


def to_pair(row: dict[str, Any], default_subset: str) -> dict[str, Any]:
    """One input row → {messages, chosen, rejected, subset, domain}. Raises ValueError when unusable."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    prompt = row.get("prompt")
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        msgs, c, r = [{"role": "user", "content": prompt}], chosen, rejected
    elif isinstance(prompt, list) and isinstance(chosen, list) and isinstance(rejected, list):
        msgs = prompt
        c = next((m["content"] for m in reversed(chosen) if m.get("role") == "assistant"), None)
        r = next((m["content"] for m in reversed(rejected) if m.get("role") == "assistant"), None)
        if c is None or r is None:
            raise ValueError("chosen/rejected have no assistant message")
    elif prompt is None and isinstance(chosen, str) and isinstance(rejected, str):
        dc, dr = parse_dialogue(chosen), parse_dialogue(rejected)
        if not dc or not dr or dc[-1]["role"] != "assistant" or dr[-1]["role"] != "assistant":
            raise ValueError("dialogue does not end with an Assistant turn")
        if dc[:-1] != dr[:-1]:
            raise ValueError("chosen and rejected dialogues differ before the last turn")
        msgs, c, r = dc[:-1], dc[-1]["content"], dr[-1]["content"]
        if not msgs or msgs[-1]["role"] != "user":
            raise ValueError("no Human turn before the last Assistant turn")
    else:
        raise ValueError("unknown row format (want {prompt, chosen, rejected} or hh-rlhf {chosen, rejected})")
    return {"messages": msgs, "chosen": c, "rejected": r, "subset": str(row.get("subset") or default_subset),
            "domain": row.get("domain")}


def read_pairs(paths: list[Path], limit: int | None) -> tuple[list[dict[str, Any]], list[str]]:
    pairs, skipped = [], []
    for path in paths:
        if not path.exists():
            raise BadInput(f"{path}: file not found")
        with _open(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                if limit is not None and len(pairs) >= limit:
                    break
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BadInput(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                try:
                    pair = to_pair(row, _subset_name(path))
                except (ValueError, TypeError, KeyError, AttributeError) as e:
                    skipped.append(f"{path}:{lineno}: {e}")
                    continue
                pair["prompt_id"] = f"{_subset_name(path)}:{lineno}"
                pairs.append(pair)
    return pairs, skipped


def load_config(args) -> tuple[dict[str, Any], int, Path]:
    cfg: dict[str, Any] = {}
    if args.config_json:
        try:
            cfg = json.loads(Path(args.config_json).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise BadInput(f"{args.config_json}: {e}") from None
        if isinstance(cfg.get("score"), dict):  # also accept {score: {...}, models: {...}, seed}
            cfg = {**cfg["score"], "models": cfg["score"].get("models") or cfg.get("models"),
                   "seed": cfg.get("seed", cfg["score"].get("seed"))}
    models = dict(cfg.get("models") or {})
    for role in ("strong", "weak", "router"):
        path = getattr(args, role)
        if path:
            models[role] = {**(models.get(role) or {}), "path": path}
        tmpl = getattr(args, f"{role}_template")
        if tmpl and role in models:
            models[role]["template"] = tmpl
    for role in ("strong", "weak"):
        if not (models.get(role) or {}).get("path") and not (models.get(role) or {}).get("hub"):
            raise BadInput(f"no {role} model: give --config-json with models.{role} or --{role} DIR")
    cfg["models"] = models
    if args.router_kind:
        cfg["router"] = {**(cfg.get("router") or {}), "kind": args.router_kind}
    if args.router_label:
        cfg["router"] = {**(cfg.get("router") or {}), "label": args.router_label}
    for key in ("batch_size", "max_prompt_tokens", "max_response_tokens", "reward"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    seed = int(args.seed if args.seed is not None else cfg.get("seed", 0) or 0)
    gdir = Path(args.guidance or cfg.get("guidance_dir") or score_stage.DEFAULT_GUIDANCE)
    params = score_stage.resolve_params({k: v for k, v in cfg.items() if k not in ("seed", "guidance_dir")})
    params["models"] = models
    return params, seed, gdir


def route(pairs, params, models) -> list[tuple[str, str]]:
    kind = params["router"]["kind"]
    if kind == "fixed":
        return [(params["router"]["label"], "fixed")] * len(pairs)
    if kind == "field":
        out = []
        for pr in pairs:
            lab = normalize_label(pr["domain"])
            out.append((lab or "CHAT", "field" if lab else "field-missing"))
        return out
    if kind == "label":  # the pair's own domain label where it has one, the llm router for the rest
        labelled = [normalize_label(pr["domain"]) for pr in pairs]
        rest = [pr for pr, lab in zip(pairs, labelled) if not lab]
        routed = iter(route(rest, {**params, "router": {**params["router"], "kind": "llm"}}, models) if rest else [])
        return [(lab, "label") if lab else next(routed) for lab in labelled]
    prompt, _ = router_prompt(params["router"]["prompt"], params.get("cdr_repo"))
    rspec = params["models"].get("router") or {}
    if rspec.get("endpoint"):
        er = EndpointRouter(rspec["endpoint"], max_new_tokens=int(params["router"].get("max_new_tokens") or 16),
                            prompt=prompt)
        return [er.route(pr["messages"]) for pr in pairs]
    lr = LocalRouter(models["router"], batch_size=params["batch_size"], max_prompt_tokens=params["max_prompt_tokens"],
                     prompt=prompt)
    out = []
    for a in range(0, len(pairs), params["batch_size"]):
        for lab, how, lps in lr.route_many([pr["messages"] for pr in pairs[a: a + params["batch_size"]]]):
            out.append((lab, how) if all(math.isfinite(v) for v in lps.values()) else ("CHAT", "llm-nonfinite"))
    return out


def load_models(params) -> dict[str, Any]:
    from ratioloop_py.scoring import load_scoring_models

    m = params["models"]
    specs = {"strong": m["strong"], "weak": m["weak"]}
    if params["router"]["kind"] in ("llm", "label") and not (m.get("router") or {}).get("endpoint"):
        specs["router"] = m.get("router") or m["strong"]
    return load_scoring_models(specs)


def evaluate(pairs, params, seed, library, models, progress=None) -> list[dict[str, Any]]:
    """Per pair: label, guidance_id, and (chosen, rejected) sum/mean rewards unguided and guided."""
    routes = route(pairs, params, models)
    scorers = score_stage.make_scorers(models, params)
    rows = [{"prompt_id": pr["prompt_id"], "messages": pr["messages"], "domain": pr["domain"],
             "texts": [pr["chosen"], pr["rejected"]]} for pr in pairs]
    route_map = {pr["prompt_id"]: {"label": lab, "how": how} for pr, (lab, how) in zip(pairs, routes)}
    results: list[dict[str, Any]] = [
        {"label": lab, "how": how, "subset": pr["subset"]} for pr, (lab, how) in zip(pairs, routes)]
    guided_idx = []
    for k, pr in enumerate(pairs):
        _, gid = apply_guidance(library, routes[k][0], pr["messages"], seed=seed, prompt_id=pr["prompt_id"],
                                system_policy=params["guidance"].get("system_policy"))
        results[k]["guidance_id"] = gid
        if gid is not None:
            guided_idx.append(k)
    passes = [("unguided", list(range(len(rows))), False), ("guided", guided_idx, True)]
    done, total = 0, len(rows) + len(guided_idx)
    for name, idx, enabled in passes:
        p = {**params, "guidance": {**params["guidance"], "enabled": enabled}}
        for g in score_stage.make_groups(idx, rows, params["batch_size"]):
            for i, out in zip(g, score_stage.score_group(rows, g, route_map, library, p, seed, scorers)):
                results[i][name] = {"sum": _pair(out, params, "sum"), "mean": _pair(out, params, "mean")}
            done += len(g)
            if progress:
                progress(done, total)
    for r in results:
        if "guided" not in r:
            r["guided"] = r["unguided"]  # unguided domain: both columns see the same context
    return results


def _pair(row, params, kind) -> list[float | None]:
    if kind == "mean":
        return row["mean_rewards"]
    # row["rewards"] follows params.reward; rebuild the sum from the log-probs so both kinds are available.
    return [None if s is None or w is None else s - w for s, w in zip(row["strong_logp"], row["weak_logp"])]


def summarize(results, reward_kind: str) -> dict[str, Any]:
    def acc(items, column, kind):
        ok = n = ties = errs = 0
        for r in items:
            c, j = r[column][kind]
            if c is None or j is None:
                errs += 1
                continue
            n += 1
            ok += c > j
            ties += c == j
        return {"accuracy": ok / n if n else None, "n": n, "ties": ties, "errors": errs}

    def block(items):
        return {"n": len(items),
                "unguided": acc(items, "unguided", reward_kind)["accuracy"],
                "guided": acc(items, "guided", reward_kind)["accuracy"],
                "unguided_other": acc(items, "unguided", "mean" if reward_kind == "sum" else "sum")["accuracy"],
                "guided_other": acc(items, "guided", "mean" if reward_kind == "sum" else "sum")["accuracy"],
                "guided_pairs": sum(1 for r in items if r["guidance_id"] is not None)}

    by_subset: dict[str, list] = {}
    by_domain: dict[str, list] = {lab: [] for lab in LABELS}
    for r in results:
        by_subset.setdefault(r["subset"], []).append(r)
        by_domain.setdefault(r["label"], []).append(r)
    overall = block(results)
    overall["detail"] = {col: acc(results, col, reward_kind) for col in ("unguided", "guided")}
    return {"reward": reward_kind, "other_reward": "mean" if reward_kind == "sum" else "sum",
            "overall": overall,
            "by_subset": {k: block(v) for k, v in sorted(by_subset.items())},
            "by_domain": {k: block(v) for k, v in by_domain.items() if v},
            "router": {k: len(v) for k, v in by_domain.items()}}


def format_table(summary: dict[str, Any]) -> str:
    def pct(x):
        return "   -  " if x is None else f"{100 * x:6.1f}"

    rk, ok = summary["reward"], summary["other_reward"]
    lines = [f"pairwise accuracy (%), reward = {rk} (and {ok} beside it); ties count as wrong",
             f"{'group':32} {'n':>6} {'unguided':>9} {'guided':>7} {'unguided(' + ok + ')':>15} {'guided(' + ok + ')':>13}"]

    def add(name, b):
        lines.append(f"{name[:32]:32} {b['n']:6d} {pct(b['unguided']):>9} {pct(b['guided']):>7} "
                     f"{pct(b['unguided_other']):>15} {pct(b['guided_other']):>13}")

    add("ALL", summary["overall"])
    for k, b in summary["by_subset"].items():
        add(f"subset {k}", b)
    for k, b in summary["by_domain"].items():
        add(f"domain {k}", b)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Pairwise accuracy of the guided density-ratio reward on preference pairs")
    ap.add_argument("--config-json", type=Path, help="the score section with models (what `ratioloop reward-eval` writes)")
    ap.add_argument("--pairs", type=Path, action="append", required=True, help="pairs file (.jsonl / .jsonl.gz); repeatable")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    ap.add_argument("--strong", type=str, default=None, help="strong model dir (overrides the config)")
    ap.add_argument("--weak", type=str, default=None, help="weak model dir (overrides the config)")
    ap.add_argument("--router", type=str, default=None, help="router model dir (llm router)")
    ap.add_argument("--strong-template", type=str, default=None, help="chat | none | <jinja>")
    ap.add_argument("--weak-template", type=str, default=None, help="chat | none | <jinja>")
    ap.add_argument("--router-template", type=str, default=None, help="chat | none | <jinja>")
    ap.add_argument("--router-kind", choices=["llm", "label", "field", "fixed"], default=None)
    ap.add_argument("--router-label", choices=["CHAT", "SAFETY", "REASONING"], default=None,
                    help="the label of the fixed router")
    ap.add_argument("--guidance", type=str, default=None, help="guidance folder (default configs/guidance)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-prompt-tokens", type=int, default=None)
    ap.add_argument("--max-response-tokens", type=int, default=None)
    ap.add_argument("--reward", choices=["sum", "mean"], default=None)
    ap.add_argument("--details", type=Path, default=None, help="also write per-pair results (jsonl)")
    args = ap.parse_args(argv)
    try:
        from ratioloop_py.models import setup_threads

        params, seed, gdir = load_config(args)
        library, _ = load_guidance(params["guidance"]["source"], gdir, params.get("cdr_repo"))
        pairs, skipped = read_pairs(args.pairs, args.limit)
        if not pairs:
            raise BadInput("no usable pairs in " + ", ".join(map(str, args.pairs)))
        setup_threads()
        t0 = time.perf_counter()
        models = load_models(params)
        results = evaluate(pairs, params, seed, library, models,
                           progress=lambda d, t: print(f"scored {d}/{t}", file=sys.stderr, flush=True))
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = summarize(results, params["reward"])
    summary.update({"pairs": len(pairs), "skipped": len(skipped), "skipped_examples": skipped[:5],
                    "seconds": round(time.perf_counter() - t0, 1), "seed": seed})
    if args.details:
        with args.details.open("w", encoding="utf-8") as f:
            for pr, r in zip(pairs, results):
                f.write(json.dumps({"prompt_id": pr["prompt_id"], **r}) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(summary))
        print(f"{len(pairs)} pairs ({len(skipped)} skipped) in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
