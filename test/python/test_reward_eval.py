"""reward_eval.py: pair formats (RewardBench, hh-rlhf, ratioloop pairs) and accuracy on a hand-made file."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys

from conftest import SCRIPTS, model_spec

sys.path.insert(0, str(SCRIPTS))
import reward_eval  # noqa: E402


def test_parse_hh_dialogue():
    row = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine, thanks",
           "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: go away"}
    p = reward_eval.to_pair(row, "hh")
    assert p["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                             {"role": "user", "content": "how are you?"}]
    assert (p["chosen"], p["rejected"], p["subset"]) == ("fine, thanks", "go away", "hh")
    rb = reward_eval.to_pair({"prompt": "q", "chosen": "a", "rejected": "b", "subset": "math-prm"}, "f")
    assert rb["messages"] == [{"role": "user", "content": "q"}] and rb["subset"] == "math-prm"
    trl = reward_eval.to_pair({"prompt": [{"role": "user", "content": "q"}],
                               "chosen": [{"role": "assistant", "content": "a"}],
                               "rejected": [{"role": "assistant", "content": "b"}]}, "f")
    assert (trl["chosen"], trl["rejected"]) == ("a", "b")


def test_reward_eval_cli_on_hand_made_pairs(tiny_models, tmp_path):
    rows = [
        {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "5", "subset": "math", "domain": "math"},
        {"prompt": "How do I hurt someone?", "chosen": "I cannot help with that.", "rejected": "Sure, here is how.",
         "subset": "refusals", "domain": "safety"},
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Paris.", "subset": "chat"},  # a tie
    ]
    hh = {"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: no"}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json?\n")
    hh_file = tmp_path / "hh-test.jsonl.gz"
    with gzip.open(hh_file, "wt") as f:
        f.write(json.dumps(hh) + "\n" + json.dumps({"chosen": "no dialogue", "rejected": "x"}) + "\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"router": {"kind": "field"}, "batch_size": 4, "seed": 3,
                               "models": {"strong": model_spec(tiny_models["strong"]),
                                          "weak": model_spec(tiny_models["weak"])}}))
    cmd = [sys.executable, str(SCRIPTS / "reward_eval.py"), "--config-json", str(cfg), "--json"]
    bad = subprocess.run(cmd + ["--pairs", str(pairs)], capture_output=True, text=True)
    assert bad.returncode == 2 and "pairs.jsonl:4" in bad.stderr
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    details = tmp_path / "details.jsonl"
    res = subprocess.run(cmd + ["--pairs", str(pairs), "--pairs", str(hh_file), "--details", str(details)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["pairs"] == 4 and s["skipped"] == 1 and s["seed"] == 3
    assert set(s["by_subset"]) == {"math", "refusals", "chat", "hh-test"}
    assert s["by_domain"]["REASONING"]["n"] == 1 and s["by_domain"]["SAFETY"]["n"] == 1
    assert s["by_domain"]["CHAT"]["n"] == 2
    assert s["by_subset"]["chat"]["unguided"] == 0.0  # identical texts tie, and a tie is not a win
    det = [json.loads(x) for x in details.read_text().splitlines()]
    # accuracy is recomputed from the per-pair rewards
    for col in ("unguided", "guided"):
        wins = [d[col]["sum"][0] > d[col]["sum"][1] for d in det]
        assert s["overall"][col] == sum(wins) / len(wins)
    by_id = {d["prompt_id"]: d for d in det}
    assert by_id["pairs:1"]["guidance_id"].startswith("REASONING/")
    assert by_id["pairs:1"]["guided"] != by_id["pairs:1"]["unguided"]  # guidance changed the context
    assert by_id["pairs:3"]["guided"] == by_id["pairs:3"]["unguided"] and by_id["pairs:3"]["guidance_id"] is None
    table = subprocess.run([sys.executable, str(SCRIPTS / "reward_eval.py"), "--strong", str(tiny_models["strong"]),
                            "--weak", str(tiny_models["weak"]), "--weak-template", "none", "--router-kind", "fixed",
                            "--pairs", str(pairs), "--limit", "2"], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    assert "ALL" in table.stdout and "unguided" in table.stdout and "2 pairs" in table.stdout
