"""From the `train.launch` config block to an `accelerate launch` command, and the process plumbing around it.

The TS runner starts `python scripts/train_simpo.py --spec X` as one process in its own process group. That process
(the supervisor) writes an accelerate config file from the launch block, runs
    <python> -m accelerate.commands.launch --config_file <partial>/accelerate_config.yaml scripts/train_simpo.py --spec X
as its child in the same process group, waits, and exits with the ranks' classified exit code (2 bad input, 3 out of
memory, else the launcher's). Why a waiting parent instead of exec'ing accelerate: accelerate and torchrun turn any
failing rank into exit 1, which would lose the 2/3 distinction the workflow relies on. The PID and process group the
runner knows stay the same either way, so a cancel that kills the group reaches the launcher and the ranks; and
because torchrun starts each rank in a new session, every rank and the launcher also ask the kernel to kill them when
their parent dies (PR_SET_PDEATHSIG), so a `kill -9` of the supervisor alone leaves no orphan rank behind.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .errors import BadInput

LAUNCHED_ENV = "RATIOLOOP_LAUNCHED"
MACHINE_RANK_ENV = "RATIOLOOP_MACHINE_RANK"  # overrides params.launch.machine_rank on machines 1..n-1
# A gang's rendezvous (workflows/gang.ts): rank 0's address and port, given to every machine through its environment so
# the spec (and its hash) stays the same on whichever hosts a gang attempt lands.
MAIN_IP_ENV = "RATIOLOOP_MAIN_PROCESS_IP"
MAIN_PORT_ENV = "RATIOLOOP_MAIN_PROCESS_PORT"
RESOLVED_ENV = "RATIOLOOP_LAUNCH_RESOLVED"  # the supervisor's resolved launch block (JSON), read by the ranks
STATUS_PREFIX = "exit_status.rank"
STATUS_DIR_ENV = "RATIOLOOP_STATUS_DIR"  # where a data-parallel rank records how it failed (stage.run_stage)

LAUNCH_DEFAULTS: dict[str, Any] = {
    "num_processes": 1,
    "num_machines": 1,
    "machine_rank": 0,
    "main_process_ip": None,
    "main_process_port": 29500,
    "mixed_precision": "auto",
    "deepspeed_zero_stage": None,
    "fsdp": False,
    "cpu": None,
}


def has_gpu() -> bool:
    """Whether this machine has a usable GPU, without importing torch (the supervisor stays light; the ranks get
    its resolved launch block, so both sides agree)."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists() or Path("/dev/kfd").exists()


def resolve_launch(raw: dict[str, Any] | None, gpu: bool | None = None) -> dict[str, Any]:
    """Defaults applied and checked; `cpu` None → True when no GPU; mixed_precision "auto" → bf16 on GPU, else no."""
    gpu = has_gpu() if gpu is None else gpu
    unknown = set(raw or {}) - set(LAUNCH_DEFAULTS)
    if unknown:
        raise BadInput(f"params.launch: unknown keys {sorted(unknown)} (known: {sorted(LAUNCH_DEFAULTS)})")
    L = dict(LAUNCH_DEFAULTS)
    L.update({k: v for k, v in (raw or {}).items() if v is not None})  # null means "the default"
    # Multi-node: every machine runs the same spec; each one says which machine it is through its environment.
    if os.environ.get(MACHINE_RANK_ENV, "").strip():
        try:
            L["machine_rank"] = int(os.environ[MACHINE_RANK_ENV])
        except ValueError:
            raise BadInput(f"{MACHINE_RANK_ENV}={os.environ[MACHINE_RANK_ENV]!r}: expected an integer") from None
    if os.environ.get(MAIN_IP_ENV, "").strip():
        L["main_process_ip"] = os.environ[MAIN_IP_ENV].strip()
    if os.environ.get(MAIN_PORT_ENV, "").strip():
        try:
            L["main_process_port"] = int(os.environ[MAIN_PORT_ENV])
        except ValueError:
            raise BadInput(f"{MAIN_PORT_ENV}={os.environ[MAIN_PORT_ENV]!r}: expected an integer") from None
    for key in ("num_processes", "num_machines", "machine_rank", "main_process_port"):
        v = L[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (key in ("num_processes", "num_machines") and v < 1):
            raise BadInput(f"params.launch.{key}: expected a {'positive' if key.startswith('num') else 'non-negative'} "
                           f"integer, got {v!r}")
    if L["num_processes"] % L["num_machines"]:
        raise BadInput("params.launch.num_processes is the total over all machines and must be a multiple of "
                       f"num_machines ({L['num_processes']} vs {L['num_machines']})")
    if L["machine_rank"] >= L["num_machines"]:
        raise BadInput(f"params.launch.machine_rank {L['machine_rank']} must be < num_machines {L['num_machines']}")
    if L["num_machines"] > 1 and not L["main_process_ip"]:
        raise BadInput(f"params.launch.main_process_ip: required when num_machines > 1 (the address of machine 0; a "
                       f"ratioloop run's gang gives it as {MAIN_IP_ENV})")
    if L["cpu"] is None:
        L["cpu"] = not gpu
    if L["mixed_precision"] == "auto":
        L["mixed_precision"] = "bf16" if gpu and not L["cpu"] else "no"
    if L["mixed_precision"] not in ("no", "fp16", "bf16"):
        raise BadInput(f"params.launch.mixed_precision: expected auto|no|fp16|bf16, got {L['mixed_precision']!r}")
    z = L["deepspeed_zero_stage"]
    if z is not None and z not in (0, 1, 2, 3):
        raise BadInput(f"params.launch.deepspeed_zero_stage: expected null or 0..3, got {z!r}")
    if z is not None and L["fsdp"]:
        raise BadInput("params.launch: choose DeepSpeed (deepspeed_zero_stage) or fsdp, not both")
    if (z is not None or L["fsdp"]) and L["cpu"]:
        raise BadInput("params.launch: DeepSpeed and FSDP need GPUs here; set cpu: false on a GPU machine")
    if z is not None:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise BadInput("params.launch.deepspeed_zero_stage is set but the `deepspeed` package is not installed "
                           "(pip install deepspeed on the GPU machines)")
    return L


def accelerate_config(L: dict[str, Any], gradient_accumulation_steps: int) -> dict[str, Any]:
    """The accelerate config file (the same format `accelerate config` writes) for a resolved launch block."""
    multi = L["num_processes"] > 1 or L["num_machines"] > 1
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "num_processes": L["num_processes"],
        "num_machines": L["num_machines"],
        "machine_rank": L["machine_rank"],
        "main_process_port": L["main_process_port"],
        "mixed_precision": L["mixed_precision"],
        "use_cpu": bool(L["cpu"]),
        "rdzv_backend": "static",
        "same_network": True,
        "downcast_bf16": False,
        "enable_cpu_affinity": False,
    }
    if L["main_process_ip"]:
        cfg["main_process_ip"] = L["main_process_ip"]
    if L["deepspeed_zero_stage"] is not None:
        stage = int(L["deepspeed_zero_stage"])
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {
            "zero_stage": stage,
            "gradient_accumulation_steps": gradient_accumulation_steps,
            "gradient_clipping": 1.0,
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "zero3_init_flag": stage == 3,
            "zero3_save_16bit_model": stage == 3,
            "deepspeed_multinode_launcher": "standard",
        }
    elif L["fsdp"]:
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            "fsdp_reshard_after_forward": True,
            # Sharded checkpoints: each rank writes its own shard (fast, resumable); the final model is gathered.
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        }
    elif multi:
        # accelerate's torchrun path; on CPU (use_cpu) the ranks talk over gloo.
        cfg["distributed_type"] = "MULTI_GPU"
    else:
        cfg["distributed_type"] = "NO"
    return cfg


def config_file_name(L: dict[str, Any]) -> str:
    """The accelerate config file in the shared stage folder: one per machine (each holds its own machine_rank)."""
    return "accelerate_config.yaml" if L["machine_rank"] == 0 else f"accelerate_config.machine{L['machine_rank']}.yaml"


def build_command(config_path: Path, script: Path, spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path),
            str(script), "--spec", str(spec_path)]


def under_launcher() -> bool:
    """True inside a rank started by accelerate/torchrun (ours or the user's own launcher)."""
    return os.environ.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send `sig` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except Exception:
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def write_status(status_dir: Path, rank: int, code: int, message: str) -> None:
    status_dir.mkdir(parents=True, exist_ok=True)
    (status_dir / f"{STATUS_PREFIX}{rank}.json").write_text(json.dumps({"code": code, "message": message}))


def clear_status(status_dir: Path) -> None:
    if status_dir.is_dir():
        for f in status_dir.glob(f"{STATUS_PREFIX}*.json"):
            f.unlink(missing_ok=True)


def classified_exit(status_dir: Path, launcher_rc: int) -> tuple[int, str | None]:
    """The exit code the stage reports: a rank's 2 (bad input) wins over 3 (resources) over 4 (this worker's
    environment) over the launcher's code."""
    codes: list[tuple[int, str]] = []
    if status_dir.is_dir():
        for f in sorted(status_dir.glob(f"{STATUS_PREFIX}*.json")):
            try:
                s = json.loads(f.read_text())
                codes.append((int(s["code"]), str(s.get("message", ""))))
            except Exception:
                continue
    for wanted in (2, 3, 4):
        for code, msg in codes:
            if code == wanted:
                return code, msg
    if launcher_rc < 0:  # killed by a signal: report it the shell way
        return 128 + (-launcher_rc), None
    return launcher_rc, (codes[0][1] if codes else None)


def supervise(cmd: list[str], env: dict[str, str]) -> int:
    """Run the launcher as our child (same process group), dying with us; return its exit code."""

    def child_setup() -> None:
        # The launcher gets SIGTERM if we die, so torchrun can still stop its ranks cleanly.
        set_parent_death_signal(signal.SIGTERM)

    proc = subprocess.Popen(cmd, env=env, preexec_fn=child_setup)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the whole foreground group; wait for the launcher to wind down.
            continue


def run_data_parallel(stage, script: Path, num_processes: int) -> None:
    """Run this stage's own program as num_processes local ranks under torchrun and wait for them.

    Each rank takes a strided slice of the work and writes its own shards; rank 0 merges and writes the
    outputs and the manifest (the stage program does that when it sees RANK/WORLD_SIZE). This process holds
    the stage folder's lock meanwhile. A rank's bad input (2) or exhausted resources (3) is reported as
    such; torchrun alone would turn every failure into 1."""
    partial = stage.partial_dir
    clear_status(partial)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
           str(script), "--spec", str(stage.spec_path)]
    env = {**os.environ, LAUNCHED_ENV: "1", "RATIOLOOP_NO_LOCK": "1", STATUS_DIR_ENV: str(partial)}
    if not has_gpu():  # share the cores instead of every rank taking all of them
        env.setdefault("RATIOLOOP_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    stage.log(f"launching {num_processes} data-parallel ranks: {' '.join(cmd)}")
    exit_as_ranks(partial, supervise(cmd, env), str(stage.spec.get("stage", "stage")))


def exit_as_ranks(status_dir: Path, launcher_rc: int, what: str) -> None:
    """Return if the ranks succeeded; else end this supervisor with the code the stage contract wants."""
    code, msg = classified_exit(status_dir, launcher_rc)
    if code == 2:
        raise BadInput(msg or f"a {what} rank reported bad input")
    if code != 0:
        print(f"error: {what} exited with code {code}" + (f": {msg}" if msg else ""), file=sys.stderr)
        sys.exit(code)
