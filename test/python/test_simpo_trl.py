"""The train stage's SimPO step equals TRL's CPOTrainer(loss_type="simpo") (trl 1.16.0, the pinned stage dependency)
on the same pairs and tiny model: the same token ids for every pair and the same first-step loss to 1e-5.
bench/simpo_vs_trl.py runs both (the stage's own trainer pieces vs TRL) and also times them."""
from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))


def test_first_step_loss_equals_trl(tiny_models):
    import simpo_vs_trl

    r = simpo_vs_trl.compare(tiny_models["strong"], n_pairs=4, batch=2, epochs=1, beta=2.5, gamma_beta_ratio=0.4)
    assert r["steps"] == [2, 2]
    assert r["same_ids"]
    assert abs(r["first_loss"][0] - r["first_loss"][1]) < 1e-5
    assert r["max_loss_diff"] < 1e-5  # the second step too: same data order and the same AdamW update
    assert r["first_loss"][0] > 0
