"""The group-level adapters against golden outputs of the peers' own code
(tests/fixtures/peers_groups.npz, made by scripts/make_peer_fixtures.py: verl 0.9.1's
grpo_passk / opo / gpg / gdpo run; TRL's multi-reward GRPO transcribed from
trl/trainer/grpo_trainer.py 2676-2729 at huggingface/trl f2cd577). No peer needs to be
installed: these run everywhere."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from groupadv.integrations import trl, verl  # noqa: E402

FIX = np.load(pathlib.Path(__file__).parent / "fixtures" / "peers_groups.npz")
TLR, MASK, UIDS = torch.from_numpy(FIX["tlr"]), torch.from_numpy(FIX["mask"]), FIX["uids"].astype(object)
# float32 rounding of verl's statistics (groupadv's are float64, rounded once)
TOL = {"rtol": 2e-5, "atol": 2e-6}


@pytest.mark.parametrize("norm", [True, False])
def test_grpo_passk_and_gdpo_fixtures(norm):
    got = verl.compute_grpo_passk_outcome_advantage(TLR, MASK, UIDS, config={"norm_adv_by_std_in_grpo": norm})[0]
    np.testing.assert_allclose(got.numpy(), FIX[f"grpo_passk_norm{int(norm)}"], **TOL)
    got = verl.compute_gdpo_outcome_advantage(TLR, MASK, UIDS, norm_adv_by_std_in_grpo=norm)[0]
    np.testing.assert_allclose(got.numpy(), FIX[f"gdpo_tokens_norm{int(norm)}"], **TOL)


def test_opo_gpg_fixtures():
    np.testing.assert_allclose(verl.compute_opo_outcome_advantage(TLR, MASK, UIDS)[0].numpy(), FIX["opo"], **TOL)
    got = verl.compute_gpg_outcome_advantage(TLR, MASK, UIDS, f_norm=2.0)[0].numpy()
    np.testing.assert_allclose(got, FIX["gpg"], **TOL)
    # the all-equal uid "b" (0.5 each, exact in float32): exactly 0, as verl's there
    b = UIDS == "b"
    assert np.all(got[b] == 0.0) and np.all(FIX["gpg"][b] == 0.0)


def test_gdpo_components_fixture():
    n = len(UIDS)
    comps = {k: FIX[f"gdpo_{k}"] for k in ("r0", "r1", "r2")}
    batch = {"prompts": torch.ones(n, 2, dtype=torch.long),
             "attention_mask": torch.cat([torch.ones(n, 2, dtype=torch.long), MASK.long()], dim=1)}
    cfg = {"gdpo_reward_keys": ["r0", "r1", "r2"], "gdpo_reward_weights": [1.0, 0.5, -2.0]}
    got = verl.compute_gdpo_outcome_advantage(TLR, MASK, UIDS, config=cfg, non_tensor_batch=dict(comps, uid=UIDS),
                                              batch=batch)[0]
    np.testing.assert_allclose(got.numpy(), FIX["gdpo_components"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("num_generations", [3, 1])
def test_trl_multi_reward_fixtures(aggregation, scale, num_generations):
    r = torch.from_numpy(FIX["trl_rewards_per_func"])
    w = torch.from_numpy(FIX["trl_reward_weights"])
    got = trl.compute_multi_reward_advantages(r, num_generations, w, aggregation, scale)
    want = FIX[f"trl_{aggregation}_{scale}_g{num_generations}"]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    assert np.all(got.numpy()[3] == 0.0)  # the unscorable completion
