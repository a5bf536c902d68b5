"""Out of memory in the stage contract: what counts as one (exit 3), and the halved-batch override of an OOM retry
(spec.throughput: in force in params, outside the spec hash, recorded in the manifest)."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from ratioloop_py.errors import ResourceExhausted  # noqa: E402
from ratioloop_py.stage import Stage, _is_oom, spec_hash  # noqa: E402


def _wrapped(inner: BaseException, outer: BaseException, cause: bool) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            if cause:
                raise outer from e
            raise outer  # noqa: B904 - implicit context on purpose
    except BaseException as e:  # noqa: BLE001
        return e


def test_what_counts_as_out_of_memory() -> None:
    import torch

    assert _is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert _is_oom(MemoryError())
    assert _is_oom(ResourceExhausted("GPU 0 full"))
    assert _is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert _is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert _is_oom(RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"))
    assert _is_oom(ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization`"))
    assert _is_oom(OSError(errno.ENOMEM, "Cannot allocate memory"))
    # Wrapped by a library or a launcher: found through the cause or the context.
    assert _is_oom(_wrapped(torch.cuda.OutOfMemoryError("CUDA out of memory"), RuntimeError("generation failed"), cause=True))
    assert _is_oom(_wrapped(MemoryError(), KeyError("batch"), cause=False))

    assert not _is_oom(RuntimeError("expected scalar type Float but found Half"))
    assert not _is_oom(KeyError("out of memory"))  # a key named so is not an allocator's message
    assert not _is_oom(OSError(errno.ENOENT, "No such file"))
    try:
        try:
            raise MemoryError()
        except MemoryError:
            raise ValueError("bad row") from None  # the code said the OOM does not matter
    except ValueError as e:
        assert not _is_oom(e)


PROGRAM = """
import sys
sys.path.insert(0, {scripts!r})
from ratioloop_py.stage import run_stage

def main(stage):
    try:
        raise MemoryError()
    except MemoryError as e:
        raise RuntimeError("sampling batch 3 failed") from e

run_stage(main)
"""


def test_a_wrapped_oom_exits_3_with_the_error_line(tmp_path: Path) -> None:
    prog = tmp_path / "stage.py"
    prog.write_text(PROGRAM.format(scripts=str(ROOT / "scripts")))
    (tmp_path / "spec.json").write_text(json.dumps({"stage": "sample", "outputDir": str(tmp_path / "out"), "params": {}}))
    r = subprocess.run([sys.executable, str(prog), "--spec", str(tmp_path / "spec.json")], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 3, r.stderr
    last = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")][-1]
    assert last == "error: out of memory: RuntimeError: sampling batch 3 failed"


@pytest.fixture
def spec(tmp_path: Path) -> dict:
    return {"stage": "score", "runId": "r", "iteration": 1, "seed": 0, "inputs": {}, "outputDir": str(tmp_path / "out"),
            "params": {"batch_size": 8, "max_batch_tokens": 8192, "reward": "sum"}}


def test_throughput_override_is_in_force_outside_the_hash_and_in_the_manifest(spec: dict, tmp_path: Path) -> None:
    plain = spec_hash(spec)
    halved = {**spec, "throughput": {"specHash": plain, "params": {"batch_size": 4, "max_batch_tokens": 4096},
                                     "from": {"batch_size": 8, "max_batch_tokens": 8192}, "reason": "out of memory in attempt 1"}}
    assert spec_hash(halved) == plain  # partial work of the configured spec stays valid
    st = Stage(spec=halved, spec_path=tmp_path / "spec.json")
    assert st.params == {"batch_size": 4, "max_batch_tokens": 4096, "reward": "sum"}
    assert Stage(spec=spec, spec_path=tmp_path / "spec.json").params["batch_size"] == 8
    st.output_dir.mkdir(parents=True)
    (st.output_dir / "scores.jsonl").write_text('{"a": 1}\n')
    m = st.write_manifest(outputs={"scores": "scores.jsonl"})
    assert m["specHash"] == plain
    assert json.loads((st.output_dir / "manifest.json").read_text())["throughput"]["params"] == {"batch_size": 4, "max_batch_tokens": 4096}
    assert "throughput" not in Stage(spec=spec, spec_path=tmp_path / "s.json").write_manifest(outputs={"scores": "scores.jsonl"})
