"""Context/prefix KV reuse with sliding-window attention (a tiny random Mistral): reuse only where exact, whole passes
otherwise, and a cache that dropped positions is a counted fallback, never a crash. Reference: one plain forward."""
from __future__ import annotations

import sys

import pytest

from conftest import SCRIPTS

sys.path.insert(0, str(SCRIPTS))
from ratioloop_py import tiny  # noqa: E402
from ratioloop_py.scoring import LogpScorer, ScoringModel, attention_window, make_item, naive_logp  # noqa: E402

EXEMPLAR = "Paris is the capital of France. " * 12  # a shared prefix of about 170 tokens
QUERIES = ["What is 12 + 30?", "Tell me about Paris please, step by step."]
RESPONSES = ["42 is it.", "The answer is 42, I think so.", "Paris."]


def mistral(window: int):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    tok = tiny.build_tokenizer()
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                        sliding_window=window, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    return ScoringModel("m", {}, MistralForCausalLM(cfg).eval(), tok, "chat", "cpu")


def groups_for(sm, queries=QUERIES):
    msgs = [[{"role": "user", "content": EXEMPLAR + q}] for q in queries]
    return [[make_item(sm, m, r, 4096, 4096, shared_chars=len(EXEMPLAR)) for r in RESPONSES] for m in msgs]


def assert_plain(sm, groups, results):
    for items, res in zip(groups, results):
        for it, r in zip(items, res):
            ref = naive_logp(sm, it)
            assert r.n_tokens == ref.n_tokens and r.sum == pytest.approx(ref.sum, abs=1e-4)


def test_prefix_longer_than_window_falls_back_and_equals_plain_forward():
    sm = mistral(window=48)
    assert attention_window(sm.model) == 48
    groups = groups_for(sm)
    assert all(it.prefix > 48 for g in groups for it in g)
    sc = LogpScorer(sm, batch_size=8, min_prefix=4)
    assert_plain(sm, groups, sc.score_prompts(groups))
    assert sc.stats.fallback_window == 6 and sc.stats.reused_contexts == 0 and sc.stats.fallback_cache == 0


def test_reuse_where_it_fits_the_window_whole_passes_elsewhere():
    # Window 220: a chunk of one short prompt fits (reused), a chunk of the long one does not (whole passes).
    sm = mistral(window=220)
    short = make_item(sm, [{"role": "user", "content": EXEMPLAR + "Hi?"}], "Paris.", 4096, 4096,
                      shared_chars=len(EXEMPLAR))
    assert len(short.ctx) + len(short.resp) <= 220
    groups = [[short], groups_for(sm, [QUERIES[1] * 3])[0]]
    sc = LogpScorer(sm, batch_size=3, min_prefix=4)
    assert_plain(sm, groups, sc.score_prompts(groups))
    assert sc.stats.reused_contexts == 1 and sc.stats.fallback_window == 3


def test_window_wider_than_everything_reuses():
    sm = mistral(window=4096)
    groups = groups_for(sm)
    sc = LogpScorer(sm, batch_size=8, min_prefix=4)
    assert_plain(sm, groups, sc.score_prompts(groups))
    assert sc.stats.reused_contexts == 2 and sc.stats.prefix_hits >= 1 and sc.stats.fallback_window == 0


def test_cache_that_dropped_positions_is_a_counted_fallback():
    # As if the window were unknown: the sliding cache keeps only window-1 prefix positions; the shape check turns
    # that into whole passes (and no reuse afterwards) instead of a RuntimeError.
    sm = mistral(window=48)
    sc = LogpScorer(sm, batch_size=8, min_prefix=4)
    sc.window = None
    groups = groups_for(sm)
    assert_plain(sm, groups, sc.score_prompts(groups))
    assert sc.stats.fallback_cache == 6 and not sc.reuse_context
