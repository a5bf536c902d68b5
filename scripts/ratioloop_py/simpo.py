"""SimPO (Meng, Xia & Chen 2024) on top of transformers' Trainer: tokenization, loss, checkpoints.

Loss per pair, with avg = mean log-probability of the response tokens (prompt tokens masked):
    d = β·(avg(chosen) − avg(rejected)) − γ,    γ = β·gamma_beta_ratio
    loss = −(1−ε)·log σ(d) − ε·log σ(−d)          (ε = label_smoothing; ε = 0 gives −log σ(d))
    + sft_weight · (mean NLL of the chosen response tokens)   (as in princeton-nlp/SimPO)

Why our own Trainer subclass rather than TRL's experimental CPOTrainer: the prompt/response text must be rendered by
the same per-model rules as the sample and score stages (ratioloop_py.models: chat template, plain text or a Jinja
override), CPOTrainer has no prompt truncation (max_prompt_length) and divides by zero on an empty completion, and we
need checkpoints that are never picked up half-written. The arithmetic is the same as SimPO's and TRL's.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback


IGNORE = -100
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".staging"
CRASH_ENV = "RATIOLOOP_TEST_CRASH_AFTER_STEPS"
DELAY_ENV = "RATIOLOOP_TEST_STEP_DELAY_S"


# --------------------------------------------------------------------------------------------- tokenization
def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def tokenize_pair(tok, prompt: list[dict[str, str]], chosen: str, rejected: str, *, template: str = "chat",
                  max_length: int = 1024, max_prompt_length: int = 512) -> dict[str, Any]:
    """Token ids and labels (prompt = -100) for one pair.

    Each of prompt + chosen and prompt + rejected is rendered and encoded as one text with the one BOS rule and
    split at the prompt (models.tokenize_turn, the score stage's own split), so the trained ids are the scored ids.
    The prompt part is the same for both: normally the rendered prompt's own ids. Where joint encoding moves the
    boundary (a token merges across it) the prompt part is the longest common prefix of the two sides' prompt
    parts, and every token after it is a response token (a straddling token counts as response, as in scoring);
    `boundary_moved` says so. Truncation as in SimPO: when prompt + the longer response exceeds max_length, keep
    the last max_prompt_length prompt tokens (and the BOS); if still too long, cut the responses' ends."""
    from .models import keep_tail, tokenize_turn

    c_ctx, c_resp, c_exact = tokenize_turn(tok, prompt, chosen, template)
    r_ctx, r_resp, r_exact = tokenize_turn(tok, prompt, rejected, template)
    n = _common_prefix(c_ctx, r_ctx)
    p_ids = c_ctx[:n]
    c_ids, r_ids = c_ctx[n:] + c_resp, r_ctx[n:] + r_resp
    longest = max(len(c_ids), len(r_ids))
    truncated = False
    if len(p_ids) + longest > max_length:
        p_ids = keep_tail(tok, p_ids, max_prompt_length)
        truncated = True
    budget = max_length - len(p_ids)
    if longest > budget:
        c_ids, r_ids = c_ids[:budget], r_ids[:budget]
        truncated = True
    out: dict[str, Any] = {"truncated": truncated, "prompt_len": len(p_ids),
                           "boundary_moved": not (c_exact and r_exact and len(c_ctx) == len(r_ctx) == n)}
    for name, ids in (("chosen", c_ids), ("rejected", r_ids)):
        out[f"{name}_input_ids"] = p_ids + ids
        out[f"{name}_labels"] = [IGNORE] * len(p_ids) + ids
    return out


class PairCollator:
    """Stack chosen rows then rejected rows into one right-padded batch, so one forward pass serves both."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = [r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows]
        labs = [r["chosen_labels"] for r in rows] + [r["rejected_labels"] for r in rows]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labs)):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            labels[i, : len(l)] = torch.tensor(l, dtype=torch.long)
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --------------------------------------------------------------------------------------------- loss
def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p over label tokens, number of label tokens) per row. Token t is predicted by position t-1.

    Row by row in float32: the full log-softmax of a 128k vocabulary for a whole batch is the usual memory spike."""
    labels = labels[:, 1:]
    logits = logits[:, :-1, :]
    mask = labels != IGNORE
    safe = labels.masked_fill(~mask, 0)
    sums = []
    for i in range(logits.shape[0]):
        row = logits[i].float()
        lp = row.gather(-1, safe[i].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1)
        sums.append((lp * mask[i]).sum())
    return torch.stack(sums), mask.sum(-1)


def simpo_losses(avg_chosen: torch.Tensor, avg_rejected: torch.Tensor, beta: float, gamma: float,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    d = beta * (avg_chosen - avg_rejected) - gamma
    return -F.logsigmoid(d) * (1 - label_smoothing) - F.logsigmoid(-d) * label_smoothing


def average_logps(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    # An empty completion (zero response tokens) averages to 0 rather than 0/0 = NaN.
    return sums / counts.clamp(min=1)


# --------------------------------------------------------------------------------------------- trainer
class SimPOTrainer(Trainer):
    # compute_loss returns the per-batch mean; let Trainer divide by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, beta: float, gamma_beta_ratio: float, label_smoothing: float = 0.0,
                 sft_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = float(beta)
        self.gamma = float(beta) * float(gamma_beta_ratio)
        self.label_smoothing = float(label_smoothing)
        self.sft_weight = float(sft_weight)
        self._stored: dict[str, list[torch.Tensor]] = {}

    def batch_loss(self, model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        sums, counts = token_logps(out.logits, inputs["labels"])
        n = sums.shape[0] // 2
        avg = average_logps(sums, counts)
        avg_c, avg_r = avg[:n], avg[n:]
        loss = simpo_losses(avg_c, avg_r, self.beta, self.gamma, self.label_smoothing).mean()
        metrics = {}
        if self.sft_weight > 0:
            sft = -sums[:n].sum() / counts[:n].sum().clamp(min=1)
            loss = loss + self.sft_weight * sft
            metrics["sft_loss"] = sft.detach()
        rc, rr = self.beta * avg_c.detach(), self.beta * avg_r.detach()
        metrics.update({
            "rewards/chosen": rc.mean(), "rewards/rejected": rr.mean(),
            "rewards/accuracies": (rc > rr).float().mean(), "rewards/margins": (rc - rr).mean(),
            "logps/chosen": avg_c.detach().mean(), "logps/rejected": avg_r.detach().mean(),
        })
        return loss, metrics

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, metrics = self.batch_loss(model, inputs)
        if model.training:
            for k, v in metrics.items():
                self._stored.setdefault(k, []).append(v.float().cpu())
        return (loss, metrics) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, metrics = self.batch_loss(model, inputs)
        for k, v in metrics.items():
            self._stored.setdefault("eval_" + k, []).append(v.float().cpu())
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        prefix = "" if "loss" in logs else ("eval_" if "eval_loss" in logs else None)
        if prefix is not None:
            keys = sorted(k for k in self._stored if k.startswith("eval_") == (prefix == "eval_"))
            if keys:
                local = torch.stack([torch.stack(self._stored[k]).mean() for k in keys]).to(self.accelerator.device)
                # Every rank logs at the same step, so this collective is matched across processes.
                values = self.accelerator.reduce(local, reduction="mean") if self.accelerator.num_processes > 1 else local
                for k, v in zip(keys, values.tolist()):
                    logs[k] = v
                for k in keys:
                    del self._stored[k]
        super().log(logs, start_time)

    # A checkpoint is written into <output_dir>/.staging/checkpoint-N and renamed into place only when every rank
    # has finished writing, so a kill mid-save never leaves a checkpoint-N that resume could pick up half-written.
    def _get_output_dir(self, trial):
        base = super()._get_output_dir(trial)
        return os.path.join(base, STAGING) if getattr(self, "_saving", False) else base

    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        final_root = super()._get_output_dir(trial)
        name = f"checkpoint-{self.state.global_step}"
        self._saving = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving = False
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            src, dst = os.path.join(final_root, STAGING, name), os.path.join(final_root, name)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            os.replace(src, dst)
            try:  # empty now: a finished run leaves no staging folder behind
                os.rmdir(os.path.join(final_root, STAGING))
            except OSError:
                pass
            _fsync_dir(final_root)
            rotate_checkpoints(output_dir=final_root, save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def latest_checkpoint(root: Path) -> Path | None:
    """The highest complete checkpoint-N under root (staging leftovers are never considered)."""
    if not root.is_dir():
        return None
    best = None
    for d in root.iterdir():
        m = CHECKPOINT_RE.match(d.name)
        if m and d.is_dir() and (d / "trainer_state.json").is_file():
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), d)
    return best[1] if best else None


def checkpoint_step(ckpt: Path) -> int:
    return int(json.loads((ckpt / "trainer_state.json").read_text())["global_step"])


# --------------------------------------------------------------------------------------------- callbacks
class StageCallback(TrainerCallback):
    """Progress lines (unit "steps"), per-log metric rows and stage metric events. Rank 0 only."""

    KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected", "sft_loss", "grad_norm", "learning_rate", "epoch")

    def __init__(self, stage, appender, is_main: bool):
        self.stage = stage
        self.appender = appender
        self.is_main = is_main
        self.rows: list[dict[str, Any]] = []
        self._saving: Any = None  # the open "saving a checkpoint" phase, between on_step_end and on_save

    def on_train_begin(self, args, state, control, **kw):
        if self.is_main:
            self.stage.progress(state.global_step, state.max_steps, "steps")

    def on_step_end(self, args, state, control, **kw):
        if self.is_main:
            self._saved()  # a step after a save: the save is over, whatever became of it
            self.stage.progress(state.global_step, state.max_steps, "steps")
            if control.should_save:
                # The Trainer saves right after this; a large checkpoint takes minutes with no step: say it is alive.
                self._saving = self.stage.phase("saving a checkpoint")
                self._saving.__enter__()

    def on_save(self, args, state, control, **kw):
        self._saved()  # the next step's progress line takes over

    def on_train_end(self, args, state, control, **kw):
        self._saved()

    def _saved(self) -> None:
        if self._saving is not None:
            self._saving.__exit__(None, None, None)
            self._saving = None

    def on_log(self, args, state, control, logs=None, **kw):
        if not self.is_main or not logs or "loss" not in logs:
            return
        row: dict[str, Any] = {"step": state.global_step}
        for k in self.KEYS:
            if k in logs:
                v = logs[k]
                row[k] = float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None
        self.appender.write_batch([row])
        self.stage.metric("loss", row.get("loss"), state.global_step)


class StepDelay(TrainerCallback):
    """Test hook: RATIOLOOP_TEST_STEP_DELAY_S=x sleeps x seconds after each step, so the end-to-end fault tests
    can kill a worker while training is surely still running. Never set it in real runs."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kw):
        import time

        time.sleep(self.seconds)


class CrashAfterSteps(TrainerCallback):
    """Test hook: RATIOLOOP_TEST_CRASH_AFTER_STEPS=k kills every rank (SIGKILL, like `kill -9`) right after the
    checkpoint at step k is in place. Used by the resume tests; never set it in real runs."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
