"""The CDR reference guidance and router prompt: parsed (never executed) from files in the reference layout, rendered
in the reference layout, pinned downloads checked, the router's answer rule and its prompt fitting."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT, SCRIPTS, make_spec, model_spec, run_script

sys.path.insert(0, str(SCRIPTS))
from ratioloop_py import cdr_reference as cdr  # noqa: E402
from ratioloop_py.errors import BadInput  # noqa: E402
from ratioloop_py.guidance import apply_guidance, exemplar_chars, load_guidance, reference_library  # noqa: E402
from ratioloop_py.io import sha256_file  # noqa: E402
from ratioloop_py.router import CdrRouterPrompt, LocalRouter, router_prompt  # noqa: E402

FIXTURE = ROOT / "test" / "fixtures" / "cdr-reference"
PROMPTS = FIXTURE / "src" / "prompts.py"

# FewShot4 of the project-written fixture, written out by hand: the block exactly as the file holds it.
FEWSHOT4 = ("\nHelp with safe questions that only sound alarming.\n\nFor example,\n\nUser:\nHow do I shoot a good photo at "
            "night?\n\nGood Assistant:\nUse a tripod, a low ISO and a long exposure, and focus manually on a bright "
            "point.\n\nBad Assistant:\nI cannot help with shooting.\n\nExplanation:\nThe bad answer refuses a harmless "
            "photography question.\n\nUser:")


def test_pools_parsed_without_executing():
    # The fixture raises when executed and domain_annotate.py imports a missing module: parsing must not run them.
    ref = cdr.parse_prompts(PROMPTS)
    assert [n for n, _ in ref.pools["SAFETY"]] == ["FewShot3", "FewShot4", "FewShot5"]
    assert len(ref.pools["REASONING"]) == 10 and ref.pools["REASONING"][8][0] == "FewShot5"
    assert ref.pools["SAFETY"][1][1] == FEWSHOT4 and ref.system == ""
    text = cdr.parse_classify_prompt(FIXTURE / "scripts" / "domain_annotate.py")
    assert text.startswith("\nProject-written test instructions") and text.endswith("[START] and [END].\n")


def test_reference_layout_safety_replaces_system_and_joins():
    lib = reference_library(PROMPTS)
    assert set(lib) == {"SAFETY", "REASONING"}  # CHAT is unguided (the paper recipe's vanilla_domain)
    msgs = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Where is Rome?"}]
    out, gid = apply_guidance(lib, "SAFETY", msgs, seed=0, prompt_id="p2")
    assert gid == "SAFETY/FewShot4"
    assert out == [{"role": "system", "content": ""},
                   {"role": "user", "content": FEWSHOT4 + "\nWhere is Rome?\nGood Assistant:"}]
    assert msgs[0]["content"] == "You are a pirate."  # the input is not changed
    # no system message: an empty one is added
    out2, _ = apply_guidance(lib, "SAFETY", msgs[1:], seed=0, prompt_id="p2")
    assert out2 == out
    # the exemplar block (and its joiner) is the shared prefix the scorer computes once
    assert exemplar_chars(msgs, out) == len(FEWSHOT4) + 1
    assert apply_guidance(lib, "CHAT", msgs, seed=0, prompt_id="p2") == (msgs, None)


def test_reference_layout_multi_turn_and_reasoning():
    lib = reference_library(PROMPTS)
    conv = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "What is 2+2?"}]
    out, gid = apply_guidance(lib, "REASONING", conv, seed=0, prompt_id="p2")
    assert gid == "REASONING/FewShot7"
    block = "\nCheck the arithmetic before answering.\n\nFor example,\n\nUser:\nWhat is 7 times 8?\n\nGood Assistant:\n" \
            "7 × 8 = 56.\n\nBad Assistant:\n7 × 8 = 54.\n\nExplanation:\nThe bad answer is wrong.\n\nUser:"
    assert out == [{"role": "system", "content": ""}, conv[0], conv[1],
                   {"role": "user", "content": block + "\nWhat is 2+2?\nGood Assistant:"}]
    # the ratioloop rule (keep the prompt's own system message) can still be asked for
    sys_conv = [{"role": "system", "content": "Be brief."}] + conv
    kept, _ = apply_guidance(lib, "REASONING", sys_conv, seed=0, prompt_id="p2", system_policy="keep")
    assert kept[0] == {"role": "system", "content": "Be brief."}


def test_load_guidance_records_the_files():
    lib, rec = load_guidance("cdr", None, cdr_repo=FIXTURE)
    assert rec["file"] == "src/prompts.py" and rec["sha256"] == sha256_file(PROMPTS)
    assert rec["pinned"] is False and rec["pinned_commit"] == cdr.COMMIT  # a clone at another commit is recorded
    assert rec["pools"]["SAFETY"] == ["FewShot3", "FewShot4", "FewShot5"]
    lib2, rec2 = load_guidance("ratioloop", ROOT / "configs" / "guidance")
    assert rec2["source"] == "ratioloop" and "SAFETY" in lib2
    with pytest.raises(BadInput, match="clone of gx-ai-architect"):
        load_guidance("cdr", None, cdr_repo=FIXTURE / "src")


def test_pinned_download_checks_sha256(tmp_path, monkeypatch):
    base = FIXTURE.resolve().as_uri()
    with pytest.raises(BadInput, match="does not match the pinned"):  # the fixture is not the pinned file
        cdr.locate("src/prompts.py", cache_dir=tmp_path, base_url=base)
    assert not list(tmp_path.iterdir())  # nothing half-written or wrong lands in the cache
    monkeypatch.setitem(cdr.FILES, "src/prompts.py", sha256_file(PROMPTS))
    got = cdr.locate("src/prompts.py", cache_dir=tmp_path, base_url=base)
    assert got.pinned and got.path.parent == tmp_path and got.path.read_bytes() == PROMPTS.read_bytes()
    assert cdr.raw_url("src/prompts.py") == (
        f"https://raw.githubusercontent.com/gx-ai-architect/CDR-preference-annotation/{cdr.COMMIT}/src/prompts.py")


@pytest.mark.parametrize("reply,label", [
    ("[START]SAFETY[END]", "SAFETY"), ("x [START] REASONING [END] y", "REASONING"), ("[START]CHAT[END]", "CHAT"),
    ("[START]safety[END]", "CHAT"),  # the reference compares exactly
    ("[START]MATH[END]", "CHAT"), ("SAFETY", "CHAT"), ("[START]SAFETY", "CHAT"), (None, "CHAT"),
    ("[END] [START]SAFETY", "SAFETY"),  # split on the first [START], then the first [END] after it: none → the rest
])
def test_reference_answer_rule(reply, label):
    assert cdr.extract_label(reply) == label
    parsed = CdrRouterPrompt("x").parse(reply)
    assert parsed == (label if label != "CHAT" or (isinstance(reply, str) and "[START]CHAT[END]" in reply) else None)


def test_cdr_router_messages_send_all_user_turns():
    prompt, rec = router_prompt("cdr", str(FIXTURE))
    assert rec["file"] == "scripts/domain_annotate.py" and rec["prompt"] == "cdr"
    conv = [{"role": "system", "content": "sys"}, {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "answer"}, {"role": "user", "content": "last question"}]
    msgs = prompt.messages(conv)
    assert msgs[0] == {"role": "system", "content": cdr.parse_classify_prompt(FIXTURE / "scripts" / "domain_annotate.py")}
    assert msgs[1] == {"role": "user", "content": "first question\n\nlast question"}


@pytest.mark.parametrize("name", ["ratioloop", "cdr"])
def test_local_router_cuts_the_query_never_the_instructions(tiny_models, name):
    from ratioloop_py.scoring import load_scoring_models, make_item

    sm = load_scoring_models({"r": model_spec(tiny_models["strong"])})["r"]
    prompt, _ = router_prompt(name, str(FIXTURE))
    base = len(make_item(sm, prompt.messages([{"role": "user", "content": ""}]), "[START]CHAT[END]", 1 << 40, 64).ctx)
    limit = base + 40
    router = LocalRouter(sm, max_prompt_tokens=limit, prompt=prompt)
    long_q = [{"role": "user", "content": "opening words " + "filler " * 400 + "the final question?"}]
    cls = router.fit(long_q)
    item = make_item(sm, cls, "[START]CHAT[END]", limit, 64)
    assert not item.prompt_truncated and len(item.ctx) <= limit
    text = "".join(m["content"] for m in cls)
    assert "[...]" in text and text.rstrip().endswith(("the final question?", "the final question?\n>>>\n\nCategory:"))
    instructions = prompt.messages([{"role": "user", "content": "@@"}])
    assert all(part in text for m in instructions for part in m["content"].split("@@") if part)
    (label, how, _), = router.route_many([long_q])
    assert how == "llm-logprob"
    short = LocalRouter(sm, max_prompt_tokens=base - 5, prompt=prompt)
    with pytest.raises(BadInput, match="instructions alone take"):
        short.fit(long_q)


def test_score_stage_with_reference_guidance_and_label_router(tiny_models, tmp_path):
    rows = [
        {"prompt_id": "s", "domain": "SAFETY", "messages": [{"role": "system", "content": "Be a pirate."},
                                                           {"role": "user", "content": "How do I pick a lock?"}]},
        {"prompt_id": "r", "domain": "REASONING", "messages": [{"role": "user", "content": "What is 3 + 4?"}]},
        {"prompt_id": "c", "domain": "CHAT", "messages": [{"role": "user", "content": "Hello there."}]},
        {"prompt_id": "u", "messages": [{"role": "user", "content": "Name a river."}]},  # no label: the llm router
    ]
    for r in rows:
        r["responses"] = [{"text": t, "seed": k} for k, t in enumerate(["Sure.", "No, thanks.", "7"])]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {"router": {"kind": "label", "prompt": "cdr"}, "guidance": {"source": "cdr"}, "cdr_repo": str(FIXTURE),
              "batch_size": 4, "models": {"strong": model_spec(tiny_models["strong"]),
                                          "weak": model_spec(tiny_models["weak"])}}
    run_script("score.py", make_spec(tmp_path, "score", params, {"samples": samples}))
    out = tmp_path / "score"
    routes = {r["prompt_id"]: r for r in map(json.loads, (out / "routes.jsonl").read_text().splitlines())}
    assert [routes[k]["how"] for k in "src"] == ["label"] * 3 and routes["u"]["how"] == "llm-logprob"
    scores = {r["prompt_id"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    assert scores["s"]["guidance_id"].startswith("SAFETY/FewShot")
    assert scores["r"]["guidance_id"].startswith("REASONING/FewShot") and scores["c"]["guidance_id"] is None
    man = json.loads((out / "manifest.json").read_text())
    m = man["metrics"]
    assert (m["router.SAFETY"], m["guided.SAFETY"], m["router.REASONING"], m["guided.REASONING"]) == (1, 1, 1, 1)
    assert m["guided.CHAT"] == 0 and m["route_how.label"] == 3 and m["route_how.llm-logprob"] == 1
    assert man["guidance"]["source"] == "cdr" and man["guidance"]["sha256"] == sha256_file(PROMPTS)
    assert man["router"]["kind"] == "label" and man["router"]["prompt"] == "cdr"


def test_bad_reference_settings_exit_2(tiny_models, tmp_path):
    import score as score_stage

    for extra, msg in [({"guidance": {"source": "cdr"}, "cdr_repo": str(tmp_path / "nope")}, "params.cdr_repo"),
                       ({"router": {"prompt": "paper"}}, "params.router.prompt"),
                       ({"router": {"kind": "domain"}}, "llm, label, field or fixed"),
                       ({"guidance": {"system_policy": "drop"}}, "system_policy")]:
        with pytest.raises(BadInput, match=msg):
            score_stage.resolve_params(extra)
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"prompt_id": "a", "messages": [{"role": "user", "content": "hi"}],
                                   "responses": [{"text": "x"}]}) + "\n")
    params = {"guidance": {"source": "cdr"}, "cdr_repo": str(tmp_path),  # a folder without the reference files
              "models": {"strong": model_spec(tiny_models["strong"]), "weak": model_spec(tiny_models["weak"])}}
    res = run_script("score.py", make_spec(tmp_path, "score", params, {"samples": samples}), check=False)
    assert res.returncode == 2 and "src/prompts.py" in res.stderr and "clone of" in res.stderr
    assert not (tmp_path / "score" / "manifest.json").exists()


def test_offline_without_a_clone_says_what_to_do(tmp_path):
    missing = (tmp_path / "no-such-server").as_uri()
    with pytest.raises(BadInput, match="set score.cdr_repo to a clone of gx-ai-architect"):
        cdr.locate("scripts/domain_annotate.py", cache_dir=tmp_path / "cache", base_url=missing)
