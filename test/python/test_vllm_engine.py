"""vllm_engine without vLLM: the backend rule, engine options, and the environment a data-parallel rank's engine gets."""
from __future__ import annotations

import json

import pytest

from conftest import model_spec
from ratioloop_py import vllm_engine as ve
from ratioloop_py.errors import BadInput


def test_auto_rule_by_device_and_task():
    big = ve.CPU_BREAK_EVEN_TOKENS
    pick = {(dev, task): ve.choose_backend("auto", task, dev, work_tokens=big, have_vllm=True).backend
            for dev in ("cpu", "cuda") for task in ve.TASKS}
    # CPU: vLLM samples and answers faster than HF generate; the HF scorer beats vLLM's prompt log-probs.
    assert pick == {("cpu", "sample"): "vllm", ("cpu", "score"): "hf", ("cpu", "answers"): "vllm",
                    ("cuda", "sample"): "vllm", ("cuda", "score"): "vllm", ("cuda", "answers"): "vllm"}
    # On CPU a small stage does not pay for vLLM's start-up; on a GPU the size does not matter.
    small = ve.choose_backend("auto", "sample", "cpu", work_tokens=big - 1, have_vllm=True)
    assert small.backend == "hf" and f"{big - 1} tokens to generate" in small.reason
    assert ve.choose_backend("auto", "answers", "cpu", have_vllm=True).backend == "hf"
    assert ve.choose_backend("auto", "answers", "cuda", work_tokens=10, have_vllm=True).backend == "vllm"
    c = ve.choose_backend("auto", "score", "cpu", have_vllm=True)
    assert "faster score engine" in c.reason and c.manifest()["requested"] == "auto"
    assert ve.choose_backend("auto", "sample", "cuda", have_vllm=False) == ve.BackendChoice(
        "hf", "auto", "auto: vLLM is not installed")
    assert ve.choose_backend("hf", "sample", "cuda", have_vllm=True).backend == "hf"
    assert ve.choose_backend("vllm", "score", "cpu", have_vllm=True).backend == "vllm"
    with pytest.raises(BadInput, match="vLLM is not installed"):
        ve.choose_backend("vllm", "sample", "cpu", have_vllm=False)
    with pytest.raises(BadInput, match="auto, hf or vllm"):
        ve.choose_backend("tgi", "sample", "cpu", have_vllm=True)


def test_memory_share(monkeypatch):
    monkeypatch.delenv("RATIOLOOP_VLLM_MEMORY", raising=False)
    assert ve.memory_share("cpu") == 0.2 and ve.memory_share("cuda") == 0.85
    assert ve.memory_share("cpu", engines=2) == pytest.approx(0.1)
    monkeypatch.setenv("RATIOLOOP_VLLM_MEMORY", "0.5")
    assert ve.memory_share("cuda", engines=2) == 0.25
    for bad in ("lots", "0", "1.5"):
        monkeypatch.setenv("RATIOLOOP_VLLM_MEMORY", bad)
        with pytest.raises(BadInput, match="RATIOLOOP_VLLM_MEMORY"):
            ve.memory_share("cpu")


def test_engine_options_follow_the_spec(tiny_models, monkeypatch):
    monkeypatch.delenv("RATIOLOOP_VLLM_MEMORY", raising=False)
    monkeypatch.delenv("RATIOLOOP_VLLM_EAGER", raising=False)
    spec = model_spec(tiny_models["strong"], dtype="auto")
    cpu = ve.engine_options(spec, seed=3, device="cpu", max_model_len=256, engines=2, prefix_caching=True)
    assert cpu == {"model": str(tiny_models["strong"]), "tokenizer": str(tiny_models["strong"]), "dtype": "float32",
                   "seed": 3, "tensor_parallel_size": 1, "gpu_memory_utilization": 0.1,
                   "enable_prefix_caching": True, "max_model_len": 256}
    gpu = ve.engine_options(spec, seed=0, device="cuda")
    assert gpu["dtype"] == "bfloat16" and "max_model_len" not in gpu  # as transformers would load it
    monkeypatch.setenv("RATIOLOOP_VLLM_EAGER", "1")
    assert ve.engine_options(spec, seed=0, device="cpu")["enforce_eager"] is True


def test_context_limit_caps_at_the_model(tiny_models):
    n = json.loads((tiny_models["strong"] / "config.json").read_text())["max_position_embeddings"]
    spec = model_spec(tiny_models["strong"])
    assert ve.context_limit(spec, n + 1000) == n and ve.context_limit(spec, 8) == 8
    assert ve.context_limit(spec, None) is None


def test_rank_env_one_gpu_per_rank_and_no_launcher_vars():
    base = {"PATH": "/bin", "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x"}
    env = ve.rank_env({**base, "CUDA_VISIBLE_DEVICES": "4,5"}, "cuda")
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "5"}  # local rank 1 → the second visible GPU
    assert ve.rank_env({"PATH": "/bin"}, "cuda") == {"PATH": "/bin"}  # one process: untouched
    one = ve.rank_env({"PATH": "/bin", "WORLD_SIZE": "1", "RANK": "0"}, "cuda")
    assert one == {"PATH": "/bin"}


def test_rank_env_cpu_ranks_get_their_own_cores(monkeypatch):
    monkeypatch.setattr(ve.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    binds = [ve.rank_env({"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"}, "cpu")["VLLM_CPU_OMP_THREADS_BIND"]
             for r in (0, 1)]
    assert binds == ["0-1", "2-3"]
    # The user's own binding wins.
    assert ve.rank_env({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "VLLM_CPU_OMP_THREADS_BIND": "7"},
                       "cpu")["VLLM_CPU_OMP_THREADS_BIND"] == "7"


def test_engine_environment_is_restored(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with ve.engine_environment("cuda"):
        assert "RANK" not in ve.os.environ and ve.os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert ve.os.environ["RANK"] == "1" and ve.os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
