"""One BOS rule for every stage (models.model_ids): sample, score, router, local judge and train feed the same ids.

A Mistral/OpenHermes-like setup: the tokenizer adds a BOS ("<s>") to plain text; the ChatML template writes none
(OpenHermes-2.5), or writes {{ bos_token }} (a template with it). Either way every stage's context starts with
exactly one <s>, followed by the template's tokens. Also: train ids == score ids for a Metaspace (SentencePiece-style)
tokenizer, whose first response token depends on joint encoding, and the score manifest's BOS record.
"""
from __future__ import annotations

import json
import sys

import pytest

from conftest import SCRIPTS, make_spec, model_spec, run_script, stdout_events

sys.path.insert(0, str(SCRIPTS))
from ratioloop_py import tiny  # noqa: E402
from ratioloop_py.models import encode, load_tokenizer, model_ids, render_prompt, tokenizer_adds_bos  # noqa: E402
from ratioloop_py.sampling import render_fit  # noqa: E402
from ratioloop_py.scoring import ScoringModel, bos_disagreement, context_head, make_item  # noqa: E402
from ratioloop_py.simpo import tokenize_pair  # noqa: E402

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
RESPONSE = "Paris is the capital of France."
WITH_BOS = "{{ bos_token }}" + tiny.CHATML  # a template that writes the BOS itself


def _save_with_model(tok, out, seed):
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    tiny.build_model(tok, seed).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bos_model(tmp_path_factory):
    """The tiny ChatML tokenizer plus a "<s>" BOS that the tokenizer adds to plain text (as Llama/Mistral's do)."""
    from tokenizers.processors import TemplateProcessing

    tok = tiny.build_tokenizer()
    tok.add_special_tokens({"bos_token": "<s>"})
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    return _save_with_model(tok, tmp_path_factory.mktemp("bos-model"), seed=3)


@pytest.fixture(scope="module")
def metaspace_model(tmp_path_factory):
    """A SentencePiece-style (Metaspace, prepend "▁") BPE tokenizer that adds "<s>", with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    corpus = [" ".join(tiny._CORPUS)] * 20 + ["Paris is the capital of France. ▁Paris ▁is"] * 20
    tk.train_from_iterator(corpus, trainer=trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                                                show_progress=False))
    tk.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>",
                                  pad_token="</s>")
    tok.chat_template = tiny.CHATML
    return _save_with_model(tok, tmp_path_factory.mktemp("metaspace-model"), seed=4)


def _scoring_model(path, template="chat"):
    import torch
    from transformers import AutoModelForCausalLM

    spec = model_spec(path, template=template)
    torch.manual_seed(0)
    return ScoringModel("m", spec, AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer(spec),
                        template, "cpu")


def _judge_input_ids(spec, model, tok):
    """The ids the local judge feeds for its context (the first forward it runs)."""
    from ratioloop_py.evals.judges import JudgeRequest, LocalJudge

    seen = []

    class Recorder:
        device = model.device

        def __call__(self, input_ids, **kw):
            seen.append(input_ids[0].tolist())
            return model(input_ids=input_ids, **kw)

    judge = LocalJudge(spec, model=Recorder(), tok=tok)
    judge.choice_logprobs(JudgeRequest(messages=MSGS, choices=["A", "B"], cue="Verdict: [[", close="]]"))
    return seen[0], judge.context_text(JudgeRequest(messages=MSGS, choices=["A"], cue="Verdict: [["))


def _router_contexts(sm):
    from ratioloop_py.router import LocalRouter

    router = LocalRouter(sm, batch_size=3, max_prompt_tokens=2048)
    seen = []
    real = router.scorer.score_prompts

    def spy(groups):
        seen.extend(it.ctx for g in groups for it in g)
        return real(groups)

    router.scorer.score_prompts = spy
    router.route_many([MSGS])
    return seen


@pytest.mark.parametrize("template", ["chat", WITH_BOS], ids=["chatml-without-bos", "template-writes-bos"])
def test_every_stage_starts_with_exactly_one_bos(bos_model, template):
    sm = _scoring_model(bos_model, template)
    tok = sm.tok
    bos = tok.bos_token_id
    assert tokenizer_adds_bos(tok) and bos == tok.convert_tokens_to_ids("<s>")
    chatml = encode(tok, tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True,
                                                 chat_template=tiny.CHATML))
    want = [bos] + chatml  # one <s>, then the template's ChatML tokens, whatever the template writes

    sample_ids = render_fit(tok, MSGS, template, 4096, "middle").ids
    item = make_item(sm, MSGS, RESPONSE, 4096, 4096)
    pair = tokenize_pair(tok, MSGS, RESPONSE, "No.", template=template)
    judge_ids, judge_text = _judge_input_ids(sm.spec, sm.model, tok)
    router_ctxs = _router_contexts(sm)

    assert sample_ids == want
    assert item.ctx == want and item.reusable
    assert pair["chosen_input_ids"] == item.ctx + item.resp  # train ids == score ids
    assert pair["rejected_input_ids"][: pair["prompt_len"]] == want and pair["prompt_len"] == len(want)
    assert judge_ids == model_ids(tok, judge_text) and judge_ids[0] == bos and judge_ids[1] != bos
    assert router_ctxs and all(c[0] == bos and c[1] != bos for c in router_ctxs)
    for ids in (sample_ids, item.ctx, judge_ids, *router_ctxs):
        assert ids.count(bos) == 1


def test_strong_and_weak_alike_and_plain_rendering(bos_model):
    """Per-model rendering: one template writes {{ bos_token }}, the other does not, a third renders plain text;
    all three contexts lead with one BOS, so the summed reward has no BOS-only bias."""
    tok = load_tokenizer(model_spec(bos_model))
    heads = {name: context_head(tok, t, MSGS) for name, t in (("strong", WITH_BOS), ("weak", "chat"), ("plain", "none"))}
    assert all(h["leading_bos"] and h["first_tokens"][0] == "<s>" and h["first_tokens"][1] != "<s>"
               for h in heads.values())
    assert heads["strong"]["first_tokens"] == heads["weak"]["first_tokens"]
    assert bos_disagreement(heads) is None
    plain = render_prompt(tok, MSGS, "none")
    assert model_ids(tok, plain) == tok(plain)["input_ids"]  # exactly as the tokenizer itself would add it


def test_metaspace_train_ids_equal_score_ids(metaspace_model):
    sm = _scoring_model(metaspace_model)
    tok = sm.tok
    item = make_item(sm, MSGS, RESPONSE, 4096, 4096)
    pair = tokenize_pair(tok, MSGS, RESPONSE, "France.", max_length=4096, max_prompt_length=2048)
    assert pair["chosen_input_ids"] == item.ctx + item.resp
    assert pair["chosen_labels"][pair["prompt_len"]:] == item.resp and pair["prompt_len"] == len(item.ctx)
    assert pair["chosen_input_ids"][0] == tok.bos_token_id and not pair["boundary_moved"]
    # The trap this guards against: the response tokenized on its own gains a "▁" its joint encoding does not have.
    alone = encode(tok, RESPONSE + "<|im_end|>")
    assert tok.convert_ids_to_tokens(alone)[0].startswith("▁")
    assert not tok.convert_ids_to_tokens(item.resp)[0].startswith("▁") and alone != item.resp
    # The sample stage's prompt ids are the score stage's context ids.
    assert render_fit(tok, MSGS, "chat", 4096, "middle").ids == item.ctx


def test_boundary_moving_under_joint_encoding(bos_model):
    """A template whose generation prompt ends mid-word: the first response characters merge with its last token.
    The prompt part is then the common prefix of both sides; everything after it is response, and it is flagged."""
    tok = load_tokenizer(model_spec(bos_model))
    tmpl = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'Assistant: Pa' }}{% endif %}")
    tok.chat_template = tmpl
    msgs = [{"role": "user", "content": "Capital of France?"}]
    pair = tokenize_pair(tok, msgs, "ris is the capital.", "ris.", template=tmpl)
    n = pair["prompt_len"]
    ctx = model_ids(tok, render_prompt(tok, msgs, tmpl))
    assert pair["chosen_input_ids"][:n] == pair["rejected_input_ids"][:n] and n < len(ctx)
    assert pair["chosen_input_ids"][0] == tok.bos_token_id and pair["boundary_moved"]
    assert all(lab == -100 for lab in pair["chosen_labels"][:n]) and -100 not in pair["chosen_labels"][n:]
    full = render_prompt(tok, msgs, tmpl) + "ris is the capital." + tok.eos_token
    assert pair["chosen_input_ids"] == model_ids(tok, full)  # the trained ids are the joint encoding


def test_score_manifest_records_first_tokens_and_warns_on_disagreement(bos_model, tiny_models, tmp_path):
    rows = [{"prompt_id": "c1", "messages": MSGS, "responses": [{"text": RESPONSE}, {"text": "Lyon."}]}]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # strong: a tokenizer that adds <s>; weak: the byte-level ChatML tokenizer that adds none.
    params = {"router": {"kind": "fixed", "label": "CHAT"}, "guidance": {"enabled": False},
              "models": {"strong": model_spec(bos_model), "weak": model_spec(tiny_models["weak"])}}
    res = run_script("score.py", make_spec(tmp_path, "score", params, {"samples": samples}))
    bos = json.loads((tmp_path / "score" / "manifest.json").read_text())["bos"]
    assert bos["strong"]["first_tokens"][:2] == ["<s>", "<|im_start|>"] and bos["strong"]["leading_bos"]
    assert bos["weak"]["first_tokens"][0] == "<|im_start|>" and not bos["weak"]["leading_bos"]
    assert bos["agree"] is False
    warns = [e for e in stdout_events(res) if e.get("type") == "log" and e.get("level") == "warn"]
    assert any("leading BOS" in e.get("msg", "") for e in warns)
