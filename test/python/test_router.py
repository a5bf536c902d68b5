"""Router: [START]…[END] parsing (garbage → CHAT), the endpoint protocol against a local server, local log-prob router."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT, SCRIPTS, make_spec, model_spec, run_script
from fake_chat import FakeChatServer

sys.path.insert(0, str(SCRIPTS))
from ratioloop_py.router import (EndpointRouter, LocalRouter, classification_prompt, conversation_text,  # noqa: E402
                                 normalize_label, parse_label)

Q = [{"role": "user", "content": "Integrate x^2 from 0 to 3."}]


@pytest.mark.parametrize("reply,label", [
    ("[START]SAFETY[END]", "SAFETY"),
    ("The category is [START] reasoning [END].", "REASONING"),
    ("[START]**CHAT**[END]", "CHAT"),
    ("[START]MATH[END]", "REASONING"),
])
def test_parse_label(reply, label):
    assert parse_label(reply) == label


@pytest.mark.parametrize("garbage", ["", "SAFETY", "[START]UNSURE[END]", "[START]SAFETY", "[END]CHAT[START]",
                                     "\x00\xff{}", None, 42, "[START][END]"])
def test_parse_garbage_is_none(garbage):
    assert parse_label(garbage) is None


def test_normalize_field():
    assert normalize_label("Safety") == "SAFETY" and normalize_label("code") == "REASONING"
    assert normalize_label("poetry") is None and normalize_label(None) is None


@pytest.fixture()
def server():
    """A chat endpoint answering from `server.replies` in order (an int is a bare HTTP status)."""
    replies: list = []

    def respond(_body, _req):
        reply = replies.pop(0)
        return (reply, None) if isinstance(reply, int) else (200, reply)

    srv = FakeChatServer(respond)
    srv.replies = replies
    yield srv
    srv.close()


def _msg(text):
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def test_endpoint_sends_prompt_and_parses(server, monkeypatch):
    monkeypatch.setenv("ROUTER_KEY", "sekret")
    r = EndpointRouter({"base_url": server.url, "model": "judge", "api_key_env": "ROUTER_KEY"}, max_new_tokens=9)
    server.replies[:] = [_msg("[START]REASONING[END]"), _msg("I think it's chat?"), {"weird": True}, 503,
                        _msg("[START]SAFETY[END]")]
    r.retries = 2
    assert r.route(Q) == ("REASONING", "endpoint")
    assert r.route(Q) == ("CHAT", "endpoint-unparsed")
    assert r.route(Q) == ("CHAT", "endpoint-unparsed")  # malformed JSON shape → garbage → CHAT
    assert r.route(Q) == ("SAFETY", "endpoint")  # a 503 is retried
    path, auth, body = (server.requests[0][k] for k in ("path", "auth", "body"))
    assert path == "/v1/chat/completions" and auth == "Bearer sekret"
    assert body["model"] == "judge" and body["temperature"] == 0 and body["max_tokens"] == 9
    # the classification prompt is sent (the paper's released script forgot to)
    assert body["messages"] == [{"role": "user", "content": classification_prompt(Q)}]
    assert "[START]" in body["messages"][0]["content"] and "Integrate x^2" in body["messages"][0]["content"]


def test_endpoint_down_is_an_error(server):
    r = EndpointRouter({"base_url": server.url, "model": "m"}, retries=1)
    server.replies[:] = [400]
    with pytest.raises(RuntimeError, match="HTTP 400"):
        r.route(Q)


def test_local_router_picks_most_likely_label(tiny_models):
    from ratioloop_py.guidance import LABELS
    from ratioloop_py.scoring import load_scoring_models, make_item, naive_logp

    sm = load_scoring_models({"r": model_spec(tiny_models["strong"])})["r"]
    router = LocalRouter(sm)
    out = router.route_many([Q, [{"role": "user", "content": "hi"}]])
    # the classification instructions are a shared prefix: run for the first prompt, reused for the second
    assert router.scorer.stats.prefix_hits == 1 and router.scorer.stats.prefix_tokens_saved > 50
    for (label, how, lps), msgs in zip(out, [Q, [{"role": "user", "content": "hi"}]]):
        assert how == "llm-logprob" and label in LABELS
        cls = [{"role": "user", "content": classification_prompt(msgs)}]
        ref = {lab: naive_logp(sm, make_item(sm, cls, f"[START]{lab}[END]", 2048, 64)).sum for lab in LABELS}
        assert label == max(ref, key=ref.get)
        for lab in LABELS:
            assert lps[lab] == pytest.approx(ref[lab], abs=1e-4)


def test_router_sees_every_user_turn_and_cuts_the_middle():
    conv = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ANSWER"}, {"role": "user", "content": "second"}]
    assert conversation_text(conv) == "first\n\nsecond"
    long = [{"role": "user", "content": "A" * 3000}, {"role": "user", "content": "B" * 3000 + " last?"}]
    text = conversation_text(long)
    assert text.startswith("A" * 2000) and text.endswith("B" * 1994 + " last?") and "\n[...]\n" in text
    prompt = classification_prompt(long)
    assert prompt.startswith("You sort user requests") and prompt.endswith(" last?\n>>>\n\nCategory:")


def test_demo_config_routes_labelled_prompts_by_label(tiny_models, tmp_path):
    """configs/tiny.yaml: the demo prompts' own labels route them, so SAFETY and REASONING prompts are guided."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    assert cfg["score"]["router"]["kind"] == "label"
    demo = [json.loads(x) for x in (ROOT / "configs" / cfg["prompts"]["path"]).read_text().splitlines() if x.strip()]
    demo = demo[: cfg["prompts"]["limit"]]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"prompt_id": r["id"], "messages": r["messages"], "domain": r["domain"],
                                           "responses": [{"text": "Sure."}, {"text": "No."}]}) + "\n" for r in demo))
    params = {"router": cfg["score"]["router"], "batch_size": 8,
              "models": {"strong": model_spec(tiny_models["strong"]), "weak": model_spec(tiny_models["weak"])}}
    run_script("score.py", make_spec(tmp_path, "score", params, {"samples": samples}))
    routes = [json.loads(x) for x in (tmp_path / "score" / "routes.jsonl").read_text().splitlines()]
    assert [r["how"] for r in routes] == ["label"] * len(demo)
    assert [r["label"] for r in routes] == [r["domain"] for r in demo]
    scores = [json.loads(x) for x in (tmp_path / "score" / "scores.jsonl").read_text().splitlines()]
    assert [s["guidance_id"] is not None for s in scores] == [r["domain"] != "CHAT" for r in demo]
    m = json.loads((tmp_path / "score" / "manifest.json").read_text())["metrics"]
    n = {d: sum(r["domain"] == d for r in demo) for d in ("CHAT", "SAFETY", "REASONING")}
    assert n["SAFETY"] > 0 and n["REASONING"] > 0
    assert (m["guided.SAFETY"], m["guided.REASONING"], m["guided.CHAT"]) == (n["SAFETY"], n["REASONING"], 0)
    assert m["route_how.label"] == len(demo) and m["guided_prompts"] == n["SAFETY"] + n["REASONING"]


def test_reward_eval_label_router_asks_the_endpoint_only_for_unlabelled(server):
    """reward-eval's router follows the stage's: labels first, the configured (here: endpoint, cdr prompt) router for
    the rest, sending the reference's CLASSIFY_PROMPT as the system turn."""
    import reward_eval

    fixture = ROOT / "test" / "fixtures" / "cdr-reference"
    pairs = [{"prompt_id": "a", "domain": "code", "messages": Q}, {"prompt_id": "b", "domain": None, "messages": Q},
             {"prompt_id": "c", "domain": "SAFETY", "messages": Q}]
    params = {"router": {"kind": "label", "prompt": "cdr", "max_new_tokens": 8}, "cdr_repo": str(fixture),
              "models": {"router": {"endpoint": {"base_url": server.url, "model": "m"}}}}
    server.replies[:] = [_msg("[START]SAFETY[END]")]
    assert reward_eval.route(pairs, params, {}) == [("REASONING", "label"), ("SAFETY", "endpoint"), ("SAFETY", "label")]
    body, = (r["body"] for r in server.requests)
    assert body["messages"][0]["role"] == "system" and "Project-written test instructions" in body["messages"][0]["content"]
    assert body["messages"][1] == {"role": "user", "content": Q[0]["content"]}
