"""Model specs (from the run config) → tokenizers, models and rendered text. Shared by every stage.

A model spec is a dict: {path | hub, tokenizer?, dtype, device, template}. `template` is
  "chat"  – the tokenizer's own chat template,
  "none"  – plain "Role: content" lines (how a model without a chat format sees a conversation),
  any other string – a Jinja chat template that overrides the tokenizer's.
"""
from __future__ import annotations

import os
from typing import Any

from .errors import BadInput

ChatMessages = list[dict[str, str]]


def setup_threads() -> None:
    """One torch thread per core (RATIOLOOP_THREADS overrides): oversubscription is the usual CPU slowdown."""
    import torch

    n = int(os.environ.get("RATIOLOOP_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)


def source_of(spec: dict[str, Any]) -> str:
    src = spec.get("path") or spec.get("hub")
    if not src:
        raise BadInput("model spec needs 'path' or 'hub'")
    if spec.get("path") and not os.path.exists(spec["path"]):
        raise BadInput(f"model path {spec['path']} does not exist (run `npm run setup` to prepare the default model)")
    return str(src)


def pick_device(spec: dict[str, Any]) -> str:
    import torch

    dev = spec.get("device", "auto")
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def pick_dtype(spec: dict[str, Any], device: str):
    """fp32 on CPU, bf16 on GPU unless the spec says otherwise."""
    import torch

    name = spec.get("dtype", "auto")
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
            "float16": torch.float16, "fp16": torch.float16}[name]


def load_tokenizer(spec: dict[str, Any]):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.get("tokenizer") or source_of(spec))
    template = spec.get("template", "chat")
    if template not in ("chat", "none"):
        tok.chat_template = template
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: dict[str, Any], device: str | None = None):
    """Load a causal LM for inference: eval mode, no autograd needed by callers."""
    from transformers import AutoModelForCausalLM

    device = device or pick_device(spec)
    model = AutoModelForCausalLM.from_pretrained(source_of(spec), dtype=pick_dtype(spec, device))
    model.to(device)
    model.eval()
    return model


def _plain(messages: ChatMessages) -> str:
    parts = []
    for m in messages:
        role = {"user": "User", "assistant": "Assistant", "system": "System"}.get(m["role"], m["role"].title())
        parts.append(f"{role}: {m['content']}")
    return "\n\n".join(parts)


def render_prompt(tok, messages: ChatMessages, template: str = "chat") -> str:
    """The text a model sees before it answers (with the generation prompt)."""
    if template == "none":
        return _plain(messages) + "\n\nAssistant:"
    if not getattr(tok, "chat_template", None):
        raise BadInput("the tokenizer has no chat template; set template: none or give a Jinja template")
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_with_response(tok, messages: ChatMessages, response: str, template: str = "chat") -> tuple[str, str]:
    """(context, full): full = context + response + the end-of-turn text the template closes it with.

    For "none", the response is followed by the tokenizer's EOS, so both renderings score the end of turn.
    """
    context = render_prompt(tok, messages, template)
    if template == "none":
        return context, context + " " + response + (tok.eos_token or "")
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(context):
        # Some templates render the last assistant turn differently from the generation prompt;
        # fall back to appending the response and the EOS text to the context.
        full = context + response + (tok.eos_token or "")
    # Templates that add trailing newlines after the end-of-turn token: keep them out of the span.
    eos = tok.eos_token or ""
    if eos and eos in full[len(context):]:
        full = full[: full.rindex(eos) + len(eos)]
    return context, full


def encode(tok, text: str) -> list[int]:
    """Token ids of already-rendered text: templates insert their own BOS, so none is added here."""
    return tok(text, add_special_tokens=False)["input_ids"]

