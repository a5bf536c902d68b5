"""Tiny random Llama models with a real (trained) byte-level BPE tokenizer and a ChatML template.

Used by the tests (pytest and the TS end-to-end tests) in place of real weights, which cannot be fetched here:
`python -m ratioloop_py.tiny --out DIR --seed S`. Two seeds make a strong/weak pair with one tokenizer.
"""
from __future__ import annotations

import argparse
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { } < > : ; , . ? !",
    "User: What is 12 + 30? Assistant: 12 + 30 = 42. Good Assistant: Bad Assistant: Explanation:",
    "I cannot help with that request because it could cause harm. Here is a safer alternative.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Paris is the capital of France. Water boils at 100 degrees Celsius at sea level.",
    "Please explain step by step. First, second, third, finally, therefore the answer is yes or no.",
    "café naïve 東京 🙂 — “quotes” and ‘apostrophes’",
]


def build_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def build_model(tok, seed: int, hidden: int = 32, layers: int = 2, heads: int = 4):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def build(out: str | Path, seed: int = 0) -> Path:
    out = Path(out)
    tok = build_tokenizer()
    model = build_model(tok, seed)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Build a tiny random Llama + ChatML tokenizer for tests")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(build(args.out, args.seed))


if __name__ == "__main__":
    main()
