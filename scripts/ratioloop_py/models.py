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
    """Token ids of text exactly as written (no special tokens added): pieces, not what a model is fed.
    Rendered prompts go through model_ids, which applies the BOS rule."""
    return tok(text, add_special_tokens=False)["input_ids"]


# --- the BOS rule: one function for every stage (sample, score, router, judge, train; HF and vLLM) -----------

_ADDS_BOS: dict[int, tuple[Any, bool]] = {}


def tokenizer_adds_bos(tok) -> bool:
    """Whether the tokenizer puts a BOS in front of plain text when special tokens are on (Llama, Mistral,
    Gemma do; GPT-2-style byte-level BPE tokenizers such as SmolLM2's and Qwen's do not)."""
    hit = _ADDS_BOS.get(id(tok))
    if hit is not None and hit[0] is tok:
        return hit[1]
    bos = tok.bos_token_id
    try:
        ids = tok("a")["input_ids"] if bos is not None else []
    except Exception:  # noqa: BLE001 - a tokenizer that cannot encode "a" adds nothing we can rely on
        ids = []
    adds = bool(ids) and ids[0] == bos
    _ADDS_BOS[id(tok)] = (tok, adds)
    return adds


def model_ids(tok, text: str) -> list[int]:
    """Token ids of rendered text as a model is fed them: the template's own tokens, with exactly one BOS in
    front where the tokenizer would add one (tok(text) with special tokens), whatever the template writes.

    A template that writes {{ bos_token }} keeps its BOS and gets no second; a template that writes none (ChatML
    as in OpenHermes-2.5) gets the tokenizer's, prepended as an id, so the text after it tokenizes exactly as
    the tokenizer itself would (a Metaspace tokenizer's first "▁" included). This is what vLLM's completions
    endpoint feeds (add_special_tokens on a template without BOS) and what SimPO/TRL's trainers prepend.
    Where the tokenizer adds no BOS the template's tokens are left as they are (ChatML tokenizers whose BOS is
    <|im_start|> open every turn with it). Two leading BOS tokens are a configuration error.
    """
    ids = encode(tok, text)
    bos = tok.bos_token_id
    if bos is None:
        return ids
    if tokenizer_adds_bos(tok) and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        raise BadInput(f"rendered text begins with two BOS tokens ({tok.bos_token!r}): the template writes one and "
                       "the text already had one; fix the model spec's template")
    return ids


def added_bos(tok, text: str, ids: list[int]) -> int:
    """How many ids model_ids put in front of the text's own tokens (0 or 1): offsets into the text shift by it."""
    return 1 if ids and tok.bos_token_id is not None and ids[0] == tok.bos_token_id \
        and encode(tok, text)[:1] != [tok.bos_token_id] else 0


def keep_tail(tok, ids: list[int], n: int) -> list[int]:
    """The last n ids (left truncation) keeping the BOS the rule guarantees, so a cut prompt still starts with one."""
    if len(ids) <= n:
        return list(ids)
    if n > 1 and tokenizer_adds_bos(tok) and ids and ids[0] == tok.bos_token_id:
        return [ids[0]] + list(ids[len(ids) - (n - 1):])
    return list(ids[len(ids) - n:])


def first_tokens(tok, ids: list[int], n: int = 4) -> list[str]:
    """The first n ids as token strings, for manifests (which BOS, if any, a model's context starts with)."""
    return [str(t) for t in tok.convert_ids_to_tokens(list(ids[:n]))]


# --- joint tokenization: prompt + response encoded together, split at the prompt (scoring and training) ------

def span_start(tok, context: str, full: str, ctx_ids: list[int], full_ids: list[int]) -> tuple[int, bool]:
    """Index of the first response token in full_ids, and whether full_ids begins with ctx_ids.

    When tokenization merges across the context/response boundary, the response starts at the first token
    that ends after the context's characters (so a straddling token counts as response)."""
    if full_ids[: len(ctx_ids)] == ctx_ids:
        return len(ctx_ids), True
    shift = added_bos(tok, full, full_ids)
    offsets = tok(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    start = 0
    for i, (_, end) in enumerate(offsets):
        if end > len(context):
            break
        start = i + 1
    return start + shift, False


def tokenize_turn(tok, messages: ChatMessages, response: str, template: str = "chat") -> tuple[list[int], list[int], bool]:
    """(context ids, response ids, boundary_exact) of one (conversation, response) for one model.

    context + response is rendered and encoded once, as one text, and split at the context (SimPO's and TRL's
    rule), so the response tokens are the ones that follow this prompt, not the response tokenized on its own.
    The score stage, the router, and the train stage all split this way, so their ids are equal.
    boundary_exact: the joint ids begin with the context's own ids (no merge across the boundary)."""
    context, full = render_with_response(tok, messages, response, template)
    ctx_ids = model_ids(tok, context)
    full_ids = model_ids(tok, full)
    start, exact = span_start(tok, context, full, ctx_ids, full_ids)
    return full_ids[:start], full_ids[start:], exact

