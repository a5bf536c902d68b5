"""The stage contract (DESIGN §3) on the Python side.

A stage program is `python scripts/<stage>.py --spec <dir>/spec.json`. It reads its spec, writes data
files into outputDir (resumable state under outputDir/partial/), and writes manifest.json last, by atomic
rename. Progress goes to stdout as one JSON object per line; free text goes to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import faults
from .errors import EXIT_BAD_INPUT, EXIT_RESOURCE, EXIT_WORKER_ENV, BadInput, ResourceExhausted, WorkerEnvironment, missing_package
from .io import atomic_write_json, count_jsonl_rows, sha256_path
from .launch import MACHINE_RANK_ENV, STATUS_DIR_ENV, set_parent_death_signal, write_status


ALIVE_EVERY_S = 10.0  # a phase's alive lines; far below any sensible stall timeout
_EMIT_LOCK = threading.Lock()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def canonical_json(obj: Any) -> str:
    """Key-sorted, compact JSON; must match canonicalJson in activities/manifests.ts."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(spec: dict[str, Any]) -> str:
    """Hash of what determines a stage's result: everything but where it is written and the throughput knobs an
    out-of-memory retry halved (`throughput`, activities/stageRetry.ts), so that retry keeps the partial work."""
    keyed = {k: v for k, v in spec.items() if k not in ("outputDir", "specHash", "throughput")}
    return hashlib.sha256(canonical_json(keyed).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (importing torch & co. just to ask would cost seconds)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "numpy", "vllm"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def device_description() -> str:
    if "torch" not in sys.modules:  # a stage that never loaded torch ran on the CPU
        return f"cpu ({os.cpu_count()} cores)"
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
        return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    except Exception:
        return f"cpu ({os.cpu_count()} cores)"


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world() -> tuple[int, int]:
    """(rank, world_size) under accelerate launch / torchrun; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Stage:
    spec: dict[str, Any]
    spec_path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=_now)

    @property
    def name(self) -> str:
        return str(self.spec["stage"])

    @property
    def params(self) -> dict[str, Any]:
        """spec.params, with any batch knob an out-of-memory retry halved (spec.throughput.params) in force."""
        params = self.spec.get("params") or {}
        halved = (self.spec.get("throughput") or {}).get("params") or {}
        return {**params, **halved} if halved else params

    @property
    def planned_params(self) -> dict[str, Any]:
        """spec.params as planned, no knob halved: what a shard's range is cut from (every shard, halved or not,
        must cut the stage the same way, or the shards would not cover it exactly once)."""
        return self.spec.get("params") or {}

    @property
    def seed(self) -> int:
        return int(self.spec.get("seed", 0))

    @property
    def iteration(self) -> int:
        return int(self.spec.get("iteration", 0))

    @property
    def output_dir(self) -> Path:
        return Path(self.spec["outputDir"])

    @property
    def partial_dir(self) -> Path:
        d = self.output_dir / "partial"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def model_spec(self, name: str) -> dict[str, Any]:
        """params.models.<name>, with its path replaced by inputs.<name> when the workflow passes one
        (e.g. iteration k's policy is iteration k-1's trained model)."""
        spec = dict((self.params.get("models") or {}).get(name) or {})
        ref = (self.spec.get("inputs") or {}).get(name)
        if ref is not None:
            spec["path"] = ref["path"]
            spec.pop("hub", None)
        if not spec.get("path") and not spec.get("hub"):
            raise BadInput(f"params.models.{name}: missing (this stage needs the {name} model)")
        if spec.get("path") and not os.path.exists(spec["path"]):
            # The workflow resolved and checked paths when the run started: missing now means not mounted here.
            raise WorkerEnvironment(f"params.models.{name}.path: {spec['path']} is not visible")
        return spec

    def input_path(self, name: str, required: bool = True) -> Path | None:
        ref = (self.spec.get("inputs") or {}).get(name)
        if ref is None:
            if required:
                raise BadInput(f"spec.inputs.{name}: missing (this stage needs it)")
            return None
        p = Path(ref["path"])
        if not p.exists():
            raise WorkerEnvironment(f"spec.inputs.{name}: {p} is not visible")
        return p

    # --- progress protocol (stdout, one JSON object per line; only rank 0 speaks) ---
    # Every line also resets the runner's stall watchdog (timeouts.<stage>.stallTimeout): a stage that goes quiet past it
    # is killed as stalled, so long work that reports no progress runs inside `phase(...)`, which says it is alive.
    def _emit(self, obj: dict[str, Any]) -> None:
        if not is_main_process():
            return
        line = json.dumps(obj, ensure_ascii=False) + "\n"
        with _EMIT_LOCK:  # the alive ticker writes from its own thread: lines must not interleave
            sys.stdout.write(line)
            sys.stdout.flush()

    def progress(self, done: int, total: int, unit: str) -> None:
        self._emit({"type": "progress", "done": int(done), "total": int(total), "unit": unit})

    def alive(self) -> None:
        """Say "still working" without a count (resets the stall watchdog; shown nowhere)."""
        self._emit({"type": "alive"})

    @contextlib.contextmanager
    def phase(self, name: str, max_s: float | None = None) -> Iterator[None]:
        """A named step that reports no counts (loading a model, saving a checkpoint): shown by `status` as what the
        stage is doing, with a background `alive` line every ALIVE_EVERY_S while it runs. The ticker proves the process
        lives, not that the step advances: with `max_s` it stops after that long, so a step hung past it is caught by the
        watchdog. Progress lines that follow start a new count."""
        self._emit({"type": "phase", "name": name})
        stop = threading.Event()
        every = float(os.environ.get("RATIOLOOP_ALIVE_S", "") or ALIVE_EVERY_S)
        until = None if max_s is None else time.monotonic() + max_s

        def tick() -> None:
            while not stop.wait(every) and (until is None or time.monotonic() < until):
                self.alive()

        ticker = threading.Thread(target=tick, name=f"alive: {name}", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        obj: dict[str, Any] = {"type": "metric", "name": name, "value": value}
        if step is not None:
            obj["step"] = step
        self._emit(obj)

    def log(self, msg: str, level: str = "info") -> None:
        self._emit({"type": "log", "level": level, "msg": msg})

    def write_manifest(self, outputs: dict[str, str | Path], metrics: dict[str, Any] | None = None,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Hash outputs and write manifest.json last, atomically: its presence means the stage is done.

        `outputs` maps a name (what the next stage calls this input, e.g. "samples") to a file or folder.
        """
        out_refs = []
        for name, o in outputs.items():
            p = Path(o)
            if not p.is_absolute():
                p = self.output_dir / p
            ref: dict[str, Any] = {"name": name, "path": str(p), "sha256": sha256_path(p)}
            if p.is_file() and p.suffix == ".jsonl":
                ref["rows"] = count_jsonl_rows(p)
            out_refs.append(ref)
        manifest = {
            "stage": self.name,
            "specHash": spec_hash(self.spec),
            "inputs": self.spec.get("inputs") or {},
            "outputs": out_refs,
            "metrics": {**self.metrics, **(metrics or {})},
            "versions": package_versions(),
            "device": device_description(),
            "startedAt": self.started_at,
            "finishedAt": _now(),
        }
        if extra:
            manifest.update(extra)
        if self.spec.get("throughput"):  # which knobs ran halved, from when and why
            manifest["throughput"] = self.spec["throughput"]
        faults.reached("before-manifest-rename", self.name, self.iteration, self.output_dir)  # fault suite only
        atomic_write_json(self.output_dir / "manifest.json", manifest)
        faults.reached("after-manifest-rename", self.name, self.iteration, self.output_dir)  # fault suite only
        return manifest


def _watch_worker() -> None:
    """Exit when the worker that started this stage dies (kill -9 leaves no one to kill our group).

    Otherwise an orphaned stage would keep writing while the retried activity starts a second copy.
    """
    import signal
    import threading
    import time

    pid = int(os.environ.get("RATIOLOOP_WORKER_PID", "0") or 0)
    if pid <= 0:
        return

    def loop() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                try:
                    os.killpg(os.getpgid(0), signal.SIGKILL)
                finally:
                    os._exit(137)
            except PermissionError:
                pass

    threading.Thread(target=loop, name="worker-watchdog", daemon=True).start()


def _lock_output_dir(out: Path) -> None:
    """Own the stage folder only while the activity's lease says so (rank 0 only; src/stageLease.ts, ratioloop_py/lease.py).

    The activity took the lease before touching the folder and renews it; this checks it at start and then every
    RATIOLOOP_LEASE_CHECK_S seconds, and kills the process group once another attempt holds it: an orphaned attempt
    (its worker cut off, its lease taken over as stale) stops writing. No flock: Lustre (noflock) and NFS (nolock)
    mounts do not provide it, and one owner rule is enough.
    """
    import signal

    from . import lease

    if not is_main_process() or os.environ.get("RATIOLOOP_NO_LOCK"):
        return  # a rank or launched child of a stage process that checks the lease itself
    if os.environ.get(MACHINE_RANK_ENV, "0") not in ("", "0"):
        return  # multi-node training: machines 1..N-1 share machine 0's stage folder; machine 0 checks
    held = lease.from_env()
    if held is None:
        return  # started by hand, not by an activity: no lease to honour

    def lost(by: dict[str, Any], when: str) -> str:
        return f"error: the lease on {out} was taken over {when} by {lease.describe(by)}: this attempt stops writing"

    by = lease.superseded_by(held)
    if by is not None:
        print(lost(by, "before this stage started"), file=sys.stderr, flush=True)
        sys.exit(1)

    def on_lost(by: dict[str, Any]) -> None:
        print(lost(by, "while it ran"), file=sys.stderr, flush=True)
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        finally:
            os._exit(137)

    lease.watch(held, float(os.environ.get("RATIOLOOP_LEASE_CHECK_S", "") or 2.0), on_lost)


def load_stage(argv: list[str] | None = None) -> Stage:
    ap = argparse.ArgumentParser(description="Run one ratioloop stage from its spec.json")
    ap.add_argument("--spec", required=True, type=Path, help="path to spec.json (DESIGN §3)")
    args = ap.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{args.spec}: spec file not found") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{args.spec}: not valid JSON ({e.msg})") from None
    for key in ("stage", "outputDir"):
        if key not in spec:
            raise BadInput(f"{args.spec}: missing key '{key}'")
    Path(spec["outputDir"]).mkdir(parents=True, exist_ok=True)
    _watch_worker()
    _lock_output_dir(Path(spec["outputDir"]))
    return Stage(spec=spec, spec_path=args.spec)


# What CUDA/HIP/MPS/cuBLAS allocators, torch's CPU allocator and vLLM's KV-cache sizing say when memory runs out.
_OOM_MARKERS = ("out of memory", "out_of_memory", "cublas_status_alloc_failed", "can't allocate memory",
                "no available memory for the cache blocks")


def _is_oom(e: BaseException | None) -> bool:
    """Out of memory anywhere in the exception chain (a library or a launcher often re-raises it wrapped)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (MemoryError, ResourceExhausted)) or type(e).__name__ == "OutOfMemoryError":
            return True
        if isinstance(e, OSError) and e.errno == errno.ENOMEM:
            return True
        if isinstance(e, (RuntimeError, ValueError)) and any(m in str(e).lower() for m in _OOM_MARKERS):
            return True
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return False


def _record_rank_failure(code: int, message: str) -> None:
    """Under run_data_parallel the launcher hides a rank's exit code; leave it where the supervisor looks."""
    status_dir = os.environ.get(STATUS_DIR_ENV)
    if status_dir:
        write_status(Path(status_dir), int(os.environ.get("RANK", "0")), code, message)


def run_stage(main: Callable[[Stage], None], argv: list[str] | None = None) -> None:
    """Entry point of every stage program: maps failures onto the exit-code contract."""
    if os.environ.get(STATUS_DIR_ENV):
        set_parent_death_signal()  # torchrun puts ranks in sessions of their own: die with it, not after it
    try:
        stage = load_stage(argv)
        main(stage)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        _record_rank_failure(EXIT_BAD_INPUT, str(e))
        sys.exit(EXIT_BAD_INPUT)
    except WorkerEnvironment as e:
        print(f"error: {e}", file=sys.stderr)
        _record_rank_failure(EXIT_WORKER_ENV, str(e))
        sys.exit(EXIT_WORKER_ENV)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as e:  # noqa: BLE001 - classify, then report
        if isinstance(e, SystemExit):
            raise
        traceback.print_exc()
        if _is_oom(e):
            what = f"out of memory: {type(e).__name__}: {str(e).strip() or 'no message'}"
            print(f"error: {what}", file=sys.stderr)
            _record_rank_failure(EXIT_RESOURCE, what)
            sys.exit(EXIT_RESOURCE)
        pkg = missing_package(e)
        if pkg:
            msg = str(WorkerEnvironment(f"package {pkg} is not installed in {sys.executable}"))
            print(f"error: {msg}", file=sys.stderr)
            _record_rank_failure(EXIT_WORKER_ENV, msg)
            sys.exit(EXIT_WORKER_ENV)
        _record_rank_failure(1, f"{type(e).__name__}: {e}")
        sys.exit(1)
