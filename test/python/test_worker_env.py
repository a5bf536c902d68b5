"""WorkerEnvironment (exit 4, retried): this host lacks a path or a package; distinct from BadInput (exit 2)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from ratioloop_py.launch import classified_exit, write_status  # noqa: E402

PROGRAM = """
import sys
sys.path.insert(0, {scripts!r})
from ratioloop_py.stage import run_stage

def main(stage):
    what = stage.params["what"]
    if what == "package":
        import deepspeed_not_installed_here  # noqa: F401
    elif what == "own-module":
        import ratioloop_py.no_such_module  # noqa: F401
    elif what == "input":
        stage.input_path("pairs")
    elif what == "model":
        stage.model_spec("policy")

run_stage(main)
"""


def run(tmp_path: Path, what: str, inputs: dict | None = None, models: dict | None = None) -> subprocess.CompletedProcess:
    prog = tmp_path / "stage.py"
    prog.write_text(PROGRAM.format(scripts=str(ROOT / "scripts")))
    spec = {"stage": "train", "outputDir": str(tmp_path / "out"), "params": {"what": what, "models": models or {}},
            "inputs": inputs or {}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return subprocess.run([sys.executable, str(prog), "--spec", str(tmp_path / "spec.json")], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "RATIOLOOP_NO_LOCK": "1"}, timeout=60)


def test_missing_package_is_worker_environment_naming_the_host(tmp_path: Path) -> None:
    r = run(tmp_path, "package")
    assert r.returncode == 4, r.stderr
    last = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")][-1]
    assert "package deepspeed_not_installed_here is not installed" in last
    assert f"(on host {socket.gethostname()})" in last


def test_a_missing_module_of_our_own_is_a_crash_not_the_environment(tmp_path: Path) -> None:
    assert run(tmp_path, "own-module").returncode == 1


def test_input_or_model_path_not_visible_here(tmp_path: Path) -> None:
    r = run(tmp_path, "input", inputs={"pairs": {"path": str(tmp_path / "nfs" / "train.jsonl"), "sha256": "x"}})
    assert r.returncode == 4 and "spec.inputs.pairs:" in r.stderr and "is not visible" in r.stderr
    r = run(tmp_path, "model", models={"policy": {"path": str(tmp_path / "lustre" / "policy")}})
    assert r.returncode == 4 and "params.models.policy.path:" in r.stderr
    (tmp_path / "train.jsonl").write_text("{}\n")
    assert run(tmp_path, "input", inputs={"pairs": {"path": str(tmp_path / "train.jsonl"), "sha256": "x"}}).returncode == 0


def test_ranks_report_bad_input_over_resources_over_environment(tmp_path: Path) -> None:
    write_status(tmp_path, 0, 4, "package vllm missing")
    assert classified_exit(tmp_path, 1) == (4, "package vllm missing")
    write_status(tmp_path, 1, 3, "oom")
    assert classified_exit(tmp_path, 1)[0] == 3
