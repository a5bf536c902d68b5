#!/usr/bin/env python
"""train stage: SimPO on preference pairs, from the current policy → a new policy (HF save_pretrained folder).

The TS runner starts this program once; it then runs `accelerate launch` (built from params.launch by
ratioloop_py.launch) with this same program as the training script, and each rank trains (see docs/training.md).

Inputs:  pairs (train.jsonl from the pairs stage), pairs_test (optional, evaluated once at the end),
         policy (optional: a model folder that overrides params.models.policy's path, e.g. iteration k-1's model).
Outputs: model/ (manifest name "model": weights, tokenizer + chat template, generation config),
         metrics.jsonl ("metrics": one row per logging step).
Logs:    params.report_to (auto | none | tensorboard | wandb | a list) goes to the Trainer's report_to; TensorBoard
         event files go to tb/ in the stage folder (not an output: no manifest hash covers them).
Resumable state: partial/checkpoints/checkpoint-N (weights, optimizer, scheduler, RNG, data position).
Test hook: RATIOLOOP_TEST_CRASH_AFTER_STEPS=k makes every rank die (SIGKILL) right after checkpoint k is saved.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.io import JsonlAppender, atomic_write_json, atomic_write_jsonl, read_jsonl, read_partial_jsonl  # noqa: E402
from ratioloop_py.launch import (  # noqa: E402
    LAUNCHED_ENV, RESOLVED_ENV, accelerate_config, build_command, config_file_name, clear_status, exit_as_ranks,
    resolve_launch, set_parent_death_signal, supervise, under_launcher, write_status,
)
from ratioloop_py.stage import Stage, _is_oom, run_stage, spec_hash, world  # noqa: E402

SCRIPT = Path(__file__).resolve()

DEFAULTS: dict[str, Any] = {
    "beta": 2.0,
    "gamma_beta_ratio": 0.5,
    "learning_rate": 1e-6,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "num_train_epochs": 1,
    "max_steps": None,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_length": 1024,
    "max_prompt_length": 512,
    "seed": None,
    "dtype": "auto",
    "gradient_checkpointing": False,
    "save_steps": None,
    "save_total_limit": 2,
    "logging_steps": 1,
    "label_smoothing": 0.0,
    "sft_weight": 0.0,
    "report_to": "auto",
    "launch": {},
}
REPORTERS = ("tensorboard", "wandb")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")


def _num(p: dict[str, Any], key: str, *, lo: float | None = None, hi: float | None = None, integer: bool = False,
         lo_open: bool = False, hi_open: bool = False) -> None:
    v = p[key]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if integer:
        ok = ok and float(v).is_integer()
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise BadInput(f"params.{key}: expected {'an integer' if integer else 'a number'} in {rng}, got {v!r}")
    if integer:
        p[key] = int(v)


def resolve_params(raw: dict[str, Any], spec_seed: int) -> dict[str, Any]:
    p = {**DEFAULTS, **{k: v for k, v in raw.items() if k != "models" and v is not None}}
    p["max_steps"] = raw.get("max_steps")
    p["save_steps"] = raw.get("save_steps")
    _num(p, "beta", lo=0, lo_open=True)
    _num(p, "gamma_beta_ratio", lo=0)
    _num(p, "learning_rate", lo=0, lo_open=True)
    _num(p, "warmup_ratio", lo=0, hi=1, hi_open=True)
    _num(p, "num_train_epochs", lo=0, lo_open=True)
    _num(p, "per_device_train_batch_size", lo=1, integer=True)
    _num(p, "gradient_accumulation_steps", lo=1, integer=True)
    _num(p, "max_length", lo=2, integer=True)
    _num(p, "max_prompt_length", lo=1, integer=True)
    _num(p, "save_total_limit", lo=1, integer=True)
    _num(p, "logging_steps", lo=1, integer=True)
    _num(p, "label_smoothing", lo=0, hi=0.5)
    _num(p, "sft_weight", lo=0)
    for key in ("max_steps", "save_steps"):
        if p[key] is not None:
            _num(p, key, lo=1, integer=True)
    if p["max_prompt_length"] >= p["max_length"]:
        raise BadInput(f"params.max_prompt_length ({p['max_prompt_length']}) must be < params.max_length "
                       f"({p['max_length']}) so every response keeps at least one token")
    if p["lr_scheduler_type"] not in SCHEDULERS:
        raise BadInput(f"params.lr_scheduler_type: expected one of {list(SCHEDULERS)}, got {p['lr_scheduler_type']!r}")
    if p["dtype"] not in ("auto", "float32", "bfloat16", "float16"):
        raise BadInput(f"params.dtype: expected auto|float32|bfloat16|float16, got {p['dtype']!r}")
    if not isinstance(p["gradient_checkpointing"], bool):
        raise BadInput("params.gradient_checkpointing: expected true or false")
    p["report_to"] = resolve_report_to(p["report_to"])
    p["seed"] = spec_seed if raw.get("seed") is None else int(raw["seed"])
    if not isinstance(p["launch"], dict):
        raise BadInput("params.launch: expected an object")
    return p


def resolve_report_to(v: Any) -> list[str]:
    """The Trainer's report_to list. auto = TensorBoard when the tensorboard package is importable here (decided on
    the worker, which is where it must be installed), else nothing."""
    if v == "auto":
        import importlib.util

        return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else []
    if v == "none":
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or any(x not in REPORTERS for x in items):
        raise BadInput(f"params.report_to: expected auto, none, tensorboard, wandb or a list of tensorboard/wandb, "
                       f"got {v!r}")
    return sorted(set(items))


def report_env(p: dict[str, Any], out_dir: Path) -> None:
    """Where the reporters write: TensorBoard into <stage>/tb/, W&B's local files into the stage folder (unless
    the worker's environment says otherwise for W&B)."""
    if "tensorboard" in p["report_to"]:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out_dir / "tb")
    if "wandb" in p["report_to"]:
        os.environ.setdefault("WANDB_DIR", str(out_dir))


def load_pairs(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        prompt = row.get("prompt")
        if not isinstance(prompt, list) or not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                                   for m in prompt):
            raise BadInput(f"{where}: 'prompt' must be a non-empty list of {{role, content}} messages")
        texts = []
        for key in ("chosen", "rejected"):
            v = row.get(key)
            if isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict) and isinstance(v[0].get("content"), str):
                texts.append(v[0]["content"])
            elif isinstance(v, str):
                texts.append(v)
            else:
                raise BadInput(f"{where}: '{key}' must be [{{role: assistant, content}}] (TRL conversational format)")
        rows.append({"prompt": prompt, "chosen": texts[0], "rejected": texts[1], "prompt_id": row.get("prompt_id")})
    return rows


def steps_per_epoch(n_rows: int, p: dict[str, Any], num_processes: int) -> int:
    """Optimizer steps per epoch, counted the way Trainer counts them."""
    batches = math.ceil(n_rows / (p["per_device_train_batch_size"] * num_processes))
    ga = p["gradient_accumulation_steps"]
    return max(batches // ga + int(batches % ga > 0), 1)


def planned_steps(n_rows: int, p: dict[str, Any], num_processes: int) -> int:
    if p["max_steps"] is not None:
        return p["max_steps"]
    return math.ceil(p["num_train_epochs"] * steps_per_epoch(n_rows, p, num_processes))


def default_save_steps(n_rows: int, p: dict[str, Any], num_processes: int) -> int:
    # Several checkpoints per epoch (SimPO's own configs never save mid-run, so a crash loses the whole run).
    per_epoch = min(steps_per_epoch(n_rows, p, num_processes), planned_steps(n_rows, p, num_processes))
    return max(1, math.ceil(per_epoch / 4))


# ------------------------------------------------------------------------------------------------ supervisor
def run_supervisor(stage: Stage, p: dict[str, Any]) -> None:
    L = resolve_launch(p["launch"])
    pairs = load_pairs(stage.input_path("pairs"))
    if not pairs:
        raise BadInput(f"{stage.input_path('pairs')}: no pairs to train on")
    test_path = stage.input_path("pairs_test", required=False)
    if test_path is not None:
        load_pairs(test_path)
    from ratioloop_py.models import source_of

    source_of(stage.model_spec("policy"))

    partial = stage.partial_dir
    # Checkpoints belong to one spec: a changed spec in the same folder must not resume someone else's run.
    h = spec_hash(stage.spec)
    marker = partial / "spec_hash"
    if marker.exists() and marker.read_text().strip() != h:
        shutil.rmtree(partial / "checkpoints", ignore_errors=True)
        (partial / "metrics.jsonl").unlink(missing_ok=True)
    marker.write_text(h)
    shutil.rmtree(partial / "model.tmp", ignore_errors=True)
    (partial / "result.json").unlink(missing_ok=True)
    clear_status(partial)

    import yaml

    cfg_path = partial / config_file_name(L)  # machines share the folder: one file each
    cfg_path.write_text(yaml.safe_dump(accelerate_config(L, p["gradient_accumulation_steps"]), sort_keys=True))
    cmd = build_command(cfg_path, SCRIPT, stage.spec_path)
    # This process holds the stage folder's lock for the whole run; the ranks must not wait for it.
    env = {**os.environ, LAUNCHED_ENV: "1", "RATIOLOOP_NO_LOCK": "1", RESOLVED_ENV: json.dumps(L)}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    stage.log(f"launching {L['num_processes']} process(es) on {L['num_machines']} machine(s) "
              f"(this is machine {L['machine_rank']}): {' '.join(cmd)}")
    exit_as_ranks(partial, supervise(cmd, env), "training")
    if L["machine_rank"] != 0:
        return  # machine 0 writes the outputs and the manifest on the shared filesystem
    result_path = partial / "result.json"
    if not result_path.exists():
        print("error: training finished without a result (rank 0 did not complete)", file=sys.stderr)
        sys.exit(1)
    result = json.loads(result_path.read_text())
    stage.write_manifest(outputs={"model": stage.output_dir / "model", "metrics": stage.output_dir / "metrics.jsonl"},
                         metrics=result["metrics"], extra={"training": result["training"], "device": result["device"]})


# ------------------------------------------------------------------------------------------------ ranks
class _Rows:
    """A plain map-style dataset: Trainer's samplers, skip-on-resume and DistributedSampler all work on it."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _threads() -> None:
    import torch

    n = int(os.environ.get("RATIOLOOP_THREADS", "0"))
    if not n:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        n = max(1, (os.cpu_count() or 1) // local)
    torch.set_num_threads(n)


def train_dtype(p: dict[str, Any], L: dict[str, Any]):
    import torch

    if p["dtype"] != "auto":
        return getattr(torch, p["dtype"])
    # Mixed precision keeps fp32 master weights (SimPO's recipe); on one GPU without it, train in bf16.
    if L["cpu"] or L["mixed_precision"] != "no":
        return torch.float32
    return torch.bfloat16


def run_rank(stage: Stage, p: dict[str, Any]) -> None:
    set_parent_death_signal()
    rank, _ = world()
    try:
        _train(stage, p)
    except BaseException as e:  # classify for the supervisor, which sees only the launcher's exit code
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        code = 2 if isinstance(e, BadInput) else 3 if _is_oom(e) else 1
        write_status(stage.output_dir / "partial", rank, code, str(e))
        raise


def tokenized_pairs(tok, path: Path, p: dict[str, Any], template: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Collator rows for a pairs file (joint prompt + response encoding, simpo.tokenize_pair) and their counts:
    truncated pairs, and pairs whose prompt/response boundary moved under joint encoding."""
    from ratioloop_py.simpo import tokenize_pair

    out, counts = [], {"truncated_pairs": 0, "boundary_moved_pairs": 0}
    for row in load_pairs(path):
        t = tokenize_pair(tok, row["prompt"], row["chosen"], row["rejected"], template=template,
                          max_length=p["max_length"], max_prompt_length=p["max_prompt_length"])
        counts["truncated_pairs"] += int(t.pop("truncated"))
        counts["boundary_moved_pairs"] += int(t.pop("boundary_moved"))
        t.pop("prompt_len")
        out.append(t)
    return out, counts


def training_args(p: dict[str, Any], L: dict[str, Any], ckpt_root: Path, save_steps: int, run_name: str | None = None):
    from transformers import TrainingArguments

    mp = L["mixed_precision"]
    return TrainingArguments(
        output_dir=str(ckpt_root),
        per_device_train_batch_size=p["per_device_train_batch_size"],
        per_device_eval_batch_size=p["per_device_train_batch_size"],
        gradient_accumulation_steps=p["gradient_accumulation_steps"],
        learning_rate=p["learning_rate"],
        lr_scheduler_type=p["lr_scheduler_type"],
        warmup_steps=float(p["warmup_ratio"]),  # a float in [0, 1) is a ratio of the total steps
        num_train_epochs=float(p["num_train_epochs"]),
        max_steps=p["max_steps"] if p["max_steps"] is not None else -1,
        seed=p["seed"],
        data_seed=p["seed"],
        logging_strategy="steps",
        logging_steps=p["logging_steps"],
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=p["save_total_limit"],
        eval_strategy="no",
        report_to=p["report_to"],
        run_name=run_name,
        disable_tqdm=True,
        remove_unused_columns=False,
        optim="adamw_torch",
        bf16=mp == "bf16",
        fp16=mp == "fp16",
        use_cpu=bool(L["cpu"]),
        activation_checkpointing=p["gradient_checkpointing"],
        activation_checkpointing_kwargs={"use_reentrant": False} if p["gradient_checkpointing"] else None,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        save_only_model=False,
    )


def load_policy(mspec: dict[str, Any], dtype):
    import torch
    from transformers import AutoModelForCausalLM

    from ratioloop_py.models import source_of

    model = AutoModelForCausalLM.from_pretrained(source_of(mspec), dtype=dtype)
    for m in model.modules():  # SimPO/TRL train without dropout
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.config.use_cache = False
    return model


def fault_hooks() -> list[Any]:
    from ratioloop_py.simpo import CRASH_ENV, DELAY_ENV, CrashAfterSteps, StepDelay

    hooks: list[Any] = []
    if os.environ.get(CRASH_ENV):
        hooks.append(CrashAfterSteps(int(os.environ[CRASH_ENV])))
    if os.environ.get(DELAY_ENV):
        hooks.append(StepDelay(float(os.environ[DELAY_ENV])))
    return hooks


def save_final_model(stage: Stage, trainer, tok, partial: Path, is_main: bool) -> None:
    """partial/model.tmp, renamed into place as model/ when complete (rank 0)."""
    tmp = partial / "model.tmp"
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.accelerator.unwrap_model(trainer.model).config.use_cache = True
    trainer.save_model(str(tmp))
    trainer.accelerator.wait_for_everyone()
    if not is_main:
        return
    tok.save_pretrained(str(tmp))  # tokenizer + chat template (the Jinja override, when the spec has one)
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle of our arguments, not part of the model
    final = stage.output_dir / "model"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def run_summary(rows: list[dict[str, Any]], p: dict[str, Any], L: dict[str, Any], *, steps: int, n_train: int,
                n_test: int, counts: dict[str, int], resumed_from: int, eval_metrics: dict[str, Any],
                world_size: int, total_steps: int, save_steps: int, template: str, policy: str) -> dict[str, Any]:
    """result.json: the manifest's metrics and training sections."""
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    accs = [r["rewards/accuracies"] for r in rows if r.get("rewards/accuracies") is not None]
    per_device, ga = p["per_device_train_batch_size"], p["gradient_accumulation_steps"]
    gamma = p["beta"] * p["gamma_beta_ratio"]
    metrics = {
        "steps": steps,
        "train_pairs": n_train,
        "test_pairs": n_test,
        **counts,
        "effective_batch": world_size * per_device * ga,
        "beta": p["beta"], "gamma_beta_ratio": p["gamma_beta_ratio"], "gamma": gamma,
        "learning_rate": p["learning_rate"],
        "final_loss": losses[-1] if losses else None,
        "mean_loss": sum(losses) / len(losses) if losses else None,
        "final_preference_accuracy": accs[-1] if accs else None,
        "mean_preference_accuracy": sum(accs) / len(accs) if accs else None,
        "resumed_from_step": resumed_from,
        **{k: v for k, v in eval_metrics.items() if isinstance(v, (int, float)) and not k.endswith(("runtime", "per_second"))},
    }
    training = {
        "effective_batch": {"processes": world_size, "per_device": per_device, "gradient_accumulation": ga,
                            "total": world_size * per_device * ga},
        "beta": p["beta"], "gamma_beta_ratio": p["gamma_beta_ratio"], "gamma": gamma,
        "learning_rate": p["learning_rate"], "lr_scheduler_type": p["lr_scheduler_type"],
        "warmup_ratio": p["warmup_ratio"], "num_train_epochs": p["num_train_epochs"], "max_steps": p["max_steps"],
        "planned_steps": total_steps, "save_steps": save_steps, "seed": p["seed"], "data_seed": p["seed"],
        "max_length": p["max_length"], "max_prompt_length": p["max_prompt_length"],
        "label_smoothing": p["label_smoothing"], "sft_weight": p["sft_weight"],
        "dtype": str(train_dtype(p, L)).replace("torch.", ""), "optimizer": "adamw_torch",
        "gradient_checkpointing": p["gradient_checkpointing"], "launch": L, "template": template,
        "tokenization": "joint prompt + response, split at the prompt; one BOS where the tokenizer adds one",
        "policy": policy, "report_to": p["report_to"],
    }
    return {"metrics": metrics, "training": training}


def _train(stage: Stage, p: dict[str, Any]) -> None:
    _threads()
    from transformers import PrinterCallback

    from ratioloop_py.models import load_tokenizer, source_of
    from ratioloop_py.simpo import (STAGING, PairCollator, SimPOTrainer, StageCallback, checkpoint_step,
                                    latest_checkpoint)
    from ratioloop_py.stage import device_description

    L = json.loads(os.environ[RESOLVED_ENV]) if RESOLVED_ENV in os.environ else resolve_launch(p["launch"])
    rank, world_size = world()
    is_main = rank == 0
    partial = stage.output_dir / "partial"
    ckpt_root = partial / "checkpoints"
    mspec = stage.model_spec("policy")
    template = mspec.get("template", "chat")
    tok = load_tokenizer(mspec)

    train_rows, counts = tokenized_pairs(tok, stage.input_path("pairs"), p, template)
    test_path = stage.input_path("pairs_test", required=False)
    test_rows = tokenized_pairs(tok, test_path, p, template)[0] if test_path is not None else []

    total_steps = planned_steps(len(train_rows), p, world_size)
    save_steps = p["save_steps"] or default_save_steps(len(train_rows), p, world_size)
    report_env(p, stage.output_dir)
    args = training_args(p, L, ckpt_root, save_steps, run_name=f"{stage.spec.get('runId')}/iter-{stage.iteration}")
    with stage.phase("loading the policy model"):  # alive lines while it loads (stall watchdog)
        model = load_policy(mspec, train_dtype(p, L))

    appender = None
    resume = latest_checkpoint(ckpt_root)
    resumed_from = checkpoint_step(resume) if resume else 0
    if is_main:
        # Keep the metric rows the checkpoint covers; rows logged after it will be logged again.
        kept = [r for r in read_partial_jsonl(partial / "metrics.jsonl") if r.get("step", 0) <= resumed_from]
        atomic_write_jsonl(partial / "metrics.jsonl", kept)
        appender = JsonlAppender(partial / "metrics.jsonl")

    trainer = SimPOTrainer(
        model=model, args=args, train_dataset=_Rows(train_rows), eval_dataset=_Rows(test_rows) if test_rows else None,
        data_collator=PairCollator(tok.pad_token_id), processing_class=tok,
        callbacks=[StageCallback(stage, appender, is_main), *fault_hooks()],
        beta=p["beta"], gamma_beta_ratio=p["gamma_beta_ratio"], label_smoothing=p["label_smoothing"],
        sft_weight=p["sft_weight"],
    )
    trainer.remove_callback(PrinterCallback)  # it prints to stdout, which carries only JSON progress lines
    if is_main:
        shutil.rmtree(ckpt_root / STAGING, ignore_errors=True)  # a save cut short by a kill
        if resume:
            stage.log(f"resuming from {resume.name} (step {resumed_from} of {total_steps})")
        if counts["boundary_moved_pairs"]:
            stage.log(f"{counts['boundary_moved_pairs']} pairs: joint encoding moved the prompt/response boundary; "
                      "their prompt part is the common prefix of both sides (docs/training.md)", level="warn")
    trainer.accelerator.wait_for_everyone()

    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    eval_metrics = trainer.evaluate() if test_rows else {}
    with stage.phase("saving the trained model"):
        save_final_model(stage, trainer, tok, partial, is_main)
    if not is_main:
        return
    appender.close()
    rows = read_partial_jsonl(partial / "metrics.jsonl")
    atomic_write_jsonl(stage.output_dir / "metrics.jsonl", rows)
    result = run_summary(rows, p, L, steps=trainer.state.global_step, n_train=len(train_rows), n_test=len(test_rows),
                         counts=counts, resumed_from=resumed_from, eval_metrics=eval_metrics,
                         world_size=world_size, total_steps=total_steps, save_steps=save_steps, template=template,
                         policy=source_of(mspec))
    device = device_description() + (f", {world_size} processes" if world_size > 1 else "")
    atomic_write_json(partial / "result.json", {**result, "device": device})


def main(stage: Stage) -> None:
    p = resolve_params(stage.params, stage.seed)
    if under_launcher():
        run_rank(stage, p)
    else:
        run_supervisor(stage, p)


if __name__ == "__main__":
    run_stage(main)
