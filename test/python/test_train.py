"""train stage (SimPO): exact loss, prompt mask, empty completions, launch config, resume after a kill, 2 CPU
processes, and the saved model. Stage runs go through the real `accelerate launch` path, on a tiny random Llama."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from conftest import make_spec, model_spec, run_script, stdout_events

BETA, RATIO = 2.0, 0.5
WORDS = "the quick brown fox jumps over lazy dog paris capital france water boils".split()


def _pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    say = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"prompt": [{"role": "user", "content": say(5)}],
             "chosen": [{"role": "assistant", "content": say(rng.randint(2, 7))}],
             "rejected": [{"role": "assistant", "content": say(rng.randint(2, 7))}],
             "score_chosen": 1.0, "score_rejected": 0.0, "margin": 1.0, "prompt_id": str(i), "domain": "chat"}
            for i in range(n)]


@pytest.fixture(scope="module")
def tok(tiny_models):
    from ratioloop_py.models import load_tokenizer

    return load_tokenizer(model_spec(tiny_models["strong"]))


# ------------------------------------------------------------------------------------------ loss and masking
def _trainer(tmp_path, model, tok, **kw):
    from transformers import TrainingArguments

    from ratioloop_py.simpo import PairCollator, SimPOTrainer

    args = TrainingArguments(output_dir=str(tmp_path / "ckpt"), use_cpu=True, report_to=[], disable_tqdm=True,
                             remove_unused_columns=False)
    return SimPOTrainer(model=model, args=args, train_dataset=[{}], data_collator=PairCollator(tok.pad_token_id),
                        processing_class=tok, beta=BETA, gamma_beta_ratio=RATIO, **kw)


def _hand_avg_logp(model, prompt_ids: list[int], resp_ids: list[int]) -> tuple[float, float]:
    """Mean and sum of log p(response token | everything before it), one unpadded sequence, float64."""
    ids = torch.tensor([prompt_ids + resp_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    vals = [lp[len(prompt_ids) + j - 1, t].item() for j, t in enumerate(resp_ids)]
    return sum(vals) / len(vals), sum(vals)


@pytest.mark.parametrize("label_smoothing,sft_weight", [(0.0, 0.0), (0.1, 0.5)])
def test_loss_matches_hand_computation(tmp_path, tiny_models, tok, label_smoothing, sft_weight):
    from transformers import AutoModelForCausalLM

    from ratioloop_py.models import encode, render_prompt
    from ratioloop_py.simpo import PairCollator, tokenize_pair

    model = AutoModelForCausalLM.from_pretrained(tiny_models["strong"], dtype=torch.float32).eval()
    pairs = [([{"role": "user", "content": "What is 12 + 30?"}], "12 + 30 = 42.", "I cannot help with that."),
             ([{"role": "user", "content": "Capital of France?"}], "Paris", "The quick brown fox jumps over it.")]
    rows = [tokenize_pair(tok, p, c, r) for p, c, r in pairs]
    batch = PairCollator(tok.pad_token_id)(rows)
    trainer = _trainer(tmp_path, model, tok, label_smoothing=label_smoothing, sft_weight=sft_weight)
    model.eval()
    with torch.no_grad():
        loss, metrics = trainer.batch_loss(model, batch)

    gamma = BETA * RATIO
    expected, accs, sft_sum, sft_n = [], [], 0.0, 0
    for (p, c, r) in pairs:
        pids = encode(tok, render_prompt(tok, p))
        c_ids = encode(tok, c + "<|im_end|>")
        r_ids = encode(tok, r + "<|im_end|>")
        (avg_c, sum_c), (avg_r, _) = _hand_avg_logp(model, pids, c_ids), _hand_avg_logp(model, pids, r_ids)
        d = BETA * (avg_c - avg_r) - gamma
        log_sig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
        expected.append(-(1 - label_smoothing) * log_sig(d) - label_smoothing * log_sig(-d))
        accs.append(float(avg_c > avg_r))
        sft_sum += sum_c
        sft_n += len(c_ids)
    want = sum(expected) / len(expected) + sft_weight * (-sft_sum / sft_n)
    assert loss.item() == pytest.approx(want, abs=1e-5)
    assert metrics["rewards/accuracies"].item() == pytest.approx(sum(accs) / len(accs))
    assert math.isfinite(loss.item())


def test_prompt_mask_and_truncation(tok):
    from ratioloop_py.models import encode, render_prompt
    from ratioloop_py.simpo import IGNORE, tokenize_pair

    prompt = [{"role": "user", "content": "Please explain step by step."}]
    t = tokenize_pair(tok, prompt, "First, second.", "No.")
    p_ids = encode(tok, render_prompt(tok, prompt))
    for name, text in (("chosen", "First, second."), ("rejected", "No.")):
        ids, labels = t[f"{name}_input_ids"], t[f"{name}_labels"]
        assert ids[: len(p_ids)] == p_ids
        assert labels[: len(p_ids)] == [IGNORE] * len(p_ids)
        resp = [x for x in labels if x != IGNORE]
        assert resp == encode(tok, text + "<|im_end|>") and resp[-1] == tok.eos_token_id
        assert labels[len(p_ids):] == ids[len(p_ids):]
    # too long: the prompt keeps its last max_prompt_length tokens, then the responses are cut to fit
    long_prompt = [{"role": "user", "content": "the quick brown fox " * 30}]
    t = tokenize_pair(tok, long_prompt, "Paris is the capital of France " * 5, "no", max_length=40,
                      max_prompt_length=24)
    full_p = encode(tok, render_prompt(tok, long_prompt))
    assert t["truncated"] and t["prompt_len"] == 24
    assert t["chosen_input_ids"][:24] == full_p[-24:]
    assert len(t["chosen_input_ids"]) == 40 and t["chosen_labels"][:24] == [IGNORE] * 24
    assert len(t["rejected_input_ids"]) < 40


def test_empty_completion_gives_no_nan(tmp_path, tiny_models, tok):
    from transformers import AutoModelForCausalLM

    from ratioloop_py.simpo import IGNORE, PairCollator, average_logps, tokenize_pair

    assert average_logps(torch.tensor([0.0, -3.0]), torch.tensor([0, 2])).tolist() == [0.0, -1.5]
    model = AutoModelForCausalLM.from_pretrained(tiny_models["strong"], dtype=torch.float32)
    row = tokenize_pair(tok, [{"role": "user", "content": "hi"}], "", "something")
    row["chosen_labels"] = [IGNORE] * len(row["chosen_labels"])  # no response token left at all
    trainer = _trainer(tmp_path, model, tok, sft_weight=1.0)
    loss, _ = trainer.batch_loss(model, PairCollator(tok.pad_token_id)([row]))
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------------ launch plumbing
def test_launch_config_mapping():
    from ratioloop_py.errors import BadInput
    from ratioloop_py.launch import accelerate_config, build_command, classified_exit, resolve_launch, write_status

    L = resolve_launch({}, gpu=False)
    assert L["cpu"] is True and L["mixed_precision"] == "no" and L["num_processes"] == 1
    assert accelerate_config(L, 1)["distributed_type"] == "NO"
    g = resolve_launch({"num_processes": 8}, gpu=True)
    assert g["cpu"] is False and g["mixed_precision"] == "bf16"
    cfg = accelerate_config(g, 4)
    assert cfg["distributed_type"] == "MULTI_GPU" and cfg["num_processes"] == 8 and cfg["use_cpu"] is False
    mn = accelerate_config(resolve_launch({"num_processes": 16, "num_machines": 2, "machine_rank": 1,
                                           "main_process_ip": "10.0.0.1"}, gpu=True), 1)
    assert (mn["num_machines"], mn["machine_rank"], mn["main_process_ip"]) == (2, 1, "10.0.0.1")
    fs = accelerate_config(resolve_launch({"num_processes": 8, "fsdp": True}, gpu=True), 1)
    assert fs["distributed_type"] == "FSDP" and fs["fsdp_config"]["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    for bad in ({"num_processes": 0}, {"num_machines": 2}, {"mixed_precision": "fp8"}, {"fsdp": True},
                {"num_processes": 3, "num_machines": 2, "main_process_ip": "x"}, {"bogus": 1}):
        with pytest.raises(BadInput):
            resolve_launch(bad, gpu=False)
    cmd = build_command(Path("/c.yaml"), Path("/s.py"), Path("/spec.json"))
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--config_file", "/c.yaml"]
    assert cmd[-3:] == ["/s.py", "--spec", "/spec.json"]


def test_rank_exit_codes_survive_the_launcher(tmp_path):
    from ratioloop_py.launch import classified_exit, write_status

    assert classified_exit(tmp_path, 0) == (0, None)
    assert classified_exit(tmp_path, -9)[0] == 137
    write_status(tmp_path, 1, 1, "boom")
    write_status(tmp_path, 0, 3, "CUDA out of memory")
    assert classified_exit(tmp_path, 1) == (3, "CUDA out of memory")
    write_status(tmp_path, 1, 2, "bad row")
    assert classified_exit(tmp_path, 1) == (2, "bad row")


def test_half_written_checkpoints_are_never_resumed(tmp_path):
    from ratioloop_py.simpo import STAGING, latest_checkpoint

    root = tmp_path / "checkpoints"
    (root / STAGING / "checkpoint-9").mkdir(parents=True)
    (root / STAGING / "checkpoint-9" / "trainer_state.json").write_text("{}")
    (root / "checkpoint-3").mkdir()
    (root / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3}')
    (root / "checkpoint-7").mkdir()  # no trainer_state.json: incomplete
    (root / "checkpoint-12").mkdir()
    assert latest_checkpoint(root) == root / "checkpoint-3"


# ------------------------------------------------------------------------------------------ the stage, end to end
N_PAIRS = 8
BASE = {"learning_rate": 1e-3, "per_device_train_batch_size": 2, "num_train_epochs": 1, "save_steps": 1,
        "max_length": 64, "max_prompt_length": 32}


def _spec(tmp: Path, tiny_models, name: str, **params) -> Path:
    data = tmp / "pairs.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in _pairs(N_PAIRS)))
    test = tmp / "test.jsonl"
    if not test.exists():
        test.write_text("".join(json.dumps(r) + "\n" for r in _pairs(2, seed=1)))
    launch = params.pop("launch", {})
    launch.setdefault("main_process_port", 0)  # parallel test runs must not fight over port 29500
    p = {**BASE, **params, "launch": launch, "models": {"policy": model_spec(tiny_models["strong"])}}
    return make_spec(tmp, "train", p, {"pairs": data, "pairs_test": test}, seed=3, out=tmp / name)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors"))


def _assert_close(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= tol, f"weights differ by {diff}"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("train")
    spec = _spec(tmp, tiny_models, "base")
    res = run_script("train_simpo.py", spec)
    return tmp, tmp / "base", res


def test_stage_outputs_and_manifest(baseline, tiny_models):
    _, out, res = baseline
    events = stdout_events(res)
    assert len(events) == len([line for line in res.stdout.splitlines() if line.strip()])  # stdout is JSON only
    steps = [e["done"] for e in events if e["type"] == "progress"]
    assert steps == list(range(0, 5)) and all(e["total"] == 4 for e in events if e["type"] == "progress")
    # Quiet work runs as phases (status shows them; their alive lines hold off the stall watchdog).
    phases = [e["name"] for e in events if e["type"] == "phase"]
    assert phases[0] == "loading the policy model" and phases[-1] == "saving the trained model"
    assert "saving a checkpoint" in phases
    man = json.loads((out / "manifest.json").read_text())
    assert {o["name"] for o in man["outputs"]} == {"model", "metrics"}
    m, t = man["metrics"], man["training"]
    assert m["steps"] == 4 and m["effective_batch"] == 2 and m["gamma"] == BETA * RATIO
    assert "eval_loss" in m and math.isfinite(m["final_loss"]) and 0 <= m["final_preference_accuracy"] <= 1
    assert t["effective_batch"] == {"processes": 1, "per_device": 2, "gradient_accumulation": 1, "total": 2}
    assert t["seed"] == 3 and t["lr_scheduler_type"] == "cosine" and t["launch"]["cpu"] is True
    assert "trl" in man["versions"] and "accelerate" in man["versions"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for k in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "learning_rate"):
        assert all(isinstance(r[k], float) for r in rows), k
    # save_total_limit 2: only the two latest checkpoints stay
    assert sorted(p.name for p in (out / "partial" / "checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-3", "checkpoint-4"]
    assert sorted(p.name for p in (out / "partial" / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-4"]
    # training moved the weights
    from safetensors.torch import load_file

    before = load_file(str(Path(tiny_models["strong"]) / "model.safetensors"))
    assert any((before[k] - v).abs().max() > 1e-6 for k, v in _weights(out).items())


def test_saved_model_reloads_and_generates(baseline):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ratioloop_py.generate import generate_batch
    from ratioloop_py.models import render_prompt

    _, out, _ = baseline
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    assert model.generation_config.eos_token_id == tok.eos_token_id and model.config.use_cache
    prompt = render_prompt(tok, [{"role": "user", "content": "What is 12 + 30?"}])
    (res,) = generate_batch(model, tok, [prompt], max_new_tokens=5, temperature=1.0, top_p=1.0, top_k=0, seed=0,
                            key="k", stop=None)
    assert res["n_tokens"] >= 1


def test_resume_after_kill_matches_uninterrupted(baseline, tiny_models):
    tmp, base, _ = baseline
    spec = _spec(tmp, tiny_models, "killed")
    res = run_script("train_simpo.py", spec, check=False, env={"RATIOLOOP_TEST_CRASH_AFTER_STEPS": "2"})
    out = tmp / "killed"
    assert res.returncode not in (0, 2, 3)  # retryable
    assert not (out / "manifest.json").exists() and not (out / "model").exists()
    assert (out / "partial" / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    res = run_script("train_simpo.py", spec)
    assert any("resuming from checkpoint-2" in e.get("msg", "") for e in stdout_events(res))
    progress = [e["done"] for e in stdout_events(res) if e["type"] == "progress"]
    assert progress[0] == 2 and progress[-1] == 4  # the step count carries on
    _assert_close(_weights(out), _weights(base), 1e-6)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert json.loads((out / "manifest.json").read_text())["metrics"]["resumed_from_step"] == 2


def _live_processes(marker: str) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(d.name))
            except OSError:
                continue
    return found


def test_two_cpu_processes_survive_a_group_kill_and_match_one(baseline, tiny_models):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import SCRIPTS

    tmp, base, _ = baseline
    # 2 processes × 1 pair = the same effective batch as 1 process × 2 pairs
    spec = _spec(tmp, tiny_models, "ddp", per_device_train_batch_size=1, launch={"num_processes": 2})
    # Like the TS runner: its own process group, killed as a group (kill -9) mid-training. torchrun puts each rank
    # in a session of its own, so this checks that no rank outlives the kill.
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "train_simpo.py"), "--spec", str(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line).get("done", 0) >= 1:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while _live_processes(str(spec)) and time.time() < deadline:
        time.sleep(0.2)
    assert not _live_processes(str(spec)), "a training rank survived the kill of its process group"

    res = run_script("train_simpo.py", spec)
    out = tmp / "ddp"
    man = json.loads((out / "manifest.json").read_text())
    assert man["training"]["effective_batch"]["processes"] == 2 and man["metrics"]["effective_batch"] == 2
    # rank 0 alone reports progress, and the step count continues from the checkpoint
    progress = [e["done"] for e in stdout_events(res) if e["type"] == "progress"]
    assert progress == list(range(progress[0], 5))
    _assert_close(_weights(out), _weights(base), 1e-5)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_bad_pairs_exit_2_before_launch(tmp_path, tiny_models):
    spec = _spec(tmp_path, tiny_models, "bad")
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "not a list", "chosen": [], "rejected": []}\n')
    res = run_script("train_simpo.py", spec, check=False)
    assert res.returncode == 2 and "pairs.jsonl:1" in res.stderr


# ------------------------------------------------------------------------------------------ report_to
def test_report_to_reaches_the_trainer_arguments(tmp_path):
    import importlib.util

    import train_simpo
    from ratioloop_py.errors import BadInput
    from ratioloop_py.launch import resolve_launch

    L = resolve_launch({}, gpu=False)
    has_tb = importlib.util.find_spec("tensorboard") is not None
    for given, want in (("auto", ["tensorboard"] if has_tb else []), ("none", []), ("wandb", ["wandb"]),
                        (["wandb", "tensorboard"], ["tensorboard", "wandb"])):
        p = train_simpo.resolve_params({"report_to": given}, 0)
        assert p["report_to"] == want, given
        # wandb itself need not be installed to check the argument: TrainingArguments only records the list
        args = train_simpo.training_args(p, L, tmp_path / "ckpt", 1, run_name="r/iter-1")
        assert args.report_to == want and args.run_name == "r/iter-1"
    for bad in ("mlflow", [], ["tensorboard", "comet"], 3):
        with pytest.raises(BadInput, match="params.report_to"):
            train_simpo.resolve_params({"report_to": bad}, 0)


def test_tensorboard_events_land_in_the_stage_folder(baseline):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, _ = baseline
    man = json.loads((out / "manifest.json").read_text())
    assert man["training"]["report_to"] == ["tensorboard"]  # the default (auto) with tensorboard installed
    assert list((out / "tb").glob("events.out.tfevents.*"))
    ea = EventAccumulator(str(out / "tb"))
    ea.Reload()
    loss = [e.value for e in ea.Scalars("train/loss")]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert loss == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert "train/rewards/accuracies" in ea.Tags()["scalars"]
    # not part of any output, so no hash covers them
    assert not any(str(out / "tb") in o["path"] or o["path"].startswith(str(out / "tb")) for o in man["outputs"])
    assert not list((out / "model").rglob("events.out.tfevents.*"))
