"""The shared stage contract: atomic writes, torn-line recovery, hashes, exit codes, tiny models."""
from __future__ import annotations

import json
import sys

from conftest import SCRIPTS, make_spec, run_script

sys.path.insert(0, str(SCRIPTS))
from ratioloop_py.io import JsonlAppender, read_partial_jsonl, sha256_path  # noqa: E402
from ratioloop_py.stage import spec_hash  # noqa: E402


def test_appender_cuts_torn_line(tmp_path):
    p = tmp_path / "shard.jsonl"
    with JsonlAppender(p) as a:
        a.write_batch([{"i": 0}, {"i": 1}])
    with p.open("a") as f:
        f.write('{"i": 2, "tor')  # a kill mid-write
    assert [r["i"] for r in read_partial_jsonl(p)] == [0, 1]
    with JsonlAppender(p) as a:
        a.write_batch([{"i": 2}])
    assert [r["i"] for r in read_partial_jsonl(p)] == [0, 1, 2]


def test_dir_hash_changes_with_content(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    h1 = sha256_path(tmp_path)
    (tmp_path / "a.txt").write_text("y")
    assert sha256_path(tmp_path) != h1


def test_spec_hash_ignores_output_dir():
    a = {"stage": "s", "params": {"x": 1}, "outputDir": "/a"}
    b = {"stage": "s", "params": {"x": 1}, "outputDir": "/b"}
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash({**a, "params": {"x": 2}})


def test_tiny_models_chat_template(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["strong"])
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>"


def test_bad_spec_exits_2(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text("{not json")
    res = run_script("pairs.py", spec, check=False)
    assert res.returncode == 2
    assert "not valid JSON" in res.stderr
