"""Shared pytest fixtures: tiny random models (DESIGN §6) and a spec builder for stage programs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))
os.environ.setdefault("RATIOLOOP_THREADS", "1")  # tests run beside each other on 2 cores
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ratioloop_py import tiny  # noqa: E402
from ratioloop_py.io import sha256_path  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{'strong': dir, 'weak': dir}: same tokenizer, different random weights."""
    base = tmp_path_factory.mktemp("tiny-models")
    return {"strong": tiny.build(base / "strong", seed=1), "weak": tiny.build(base / "weak", seed=2)}


def model_spec(path: Path, **kw) -> dict:
    return {"path": str(path), "dtype": "float32", "device": "cpu", "template": "chat", **kw}


def make_spec(tmp: Path, stage: str, params: dict, inputs: dict[str, Path], *, seed: int = 0,
              iteration: int = 1, out: Path | None = None) -> Path:
    """Write a spec.json as the TS activity would, and return its path."""
    out = out or tmp / stage
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "stage": stage, "runId": "test", "iteration": iteration, "seed": seed, "params": params,
        "inputs": {k: {"path": str(v), "sha256": sha256_path(v)} for k, v in inputs.items()},
        "outputDir": str(out),
    }
    p = out / "spec.json"
    p.write_text(json.dumps(spec, indent=2))
    return p


def run_script(script: str, spec: Path, *, check: bool = True, env: dict | None = None,
               launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run a stage program the way the TS runner does: its own process, JSON progress on stdout."""
    cmd = (launcher or [sys.executable]) + [str(SCRIPTS / script), "--spec", str(spec)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and res.returncode != 0:
        raise AssertionError(f"{script} exited {res.returncode}\nstdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}")
    return res


def stdout_events(res: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
