"""groupadv's token-level estimators against golden outputs of verl 0.9.1 itself
(tests/fixtures/peers_tokens.npz, made by `scripts/make_peer_fixtures.py --tokens`: verl run
on a fixed batch with trailing / leading padding and observation spans). No verl needed."""

import pathlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import groupadv as ga
from groupadv.integrations import verl as ours

FIX = np.load(pathlib.Path(__file__).parent / "fixtures" / "peers_tokens.npz")
T, V, M = (torch.from_numpy(FIX[k]) for k in ("tok_rewards", "tok_values", "tok_mask"))
M = M.long()
UIDS = FIX["tok_uids"].astype(object)
F32 = dict(rtol=2e-5, atol=2e-5)  # verl scans and whitens in float32


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.95, 0.9)])
def test_gae(gamma, lam):
    adv, ret = ours.compute_gae_advantage_return(T, V, M, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), FIX[f"verl_gae_{gamma}_{lam}_adv"], **F32)
    np.testing.assert_allclose(ret.numpy(), FIX[f"verl_gae_{gamma}_{lam}_ret"], **F32)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_plus_plus(gamma):
    adv, ret = ours.compute_reinforce_plus_plus_outcome_advantage(T, M, config=SimpleNamespace(gamma=gamma))
    np.testing.assert_allclose(adv.numpy(), FIX[f"verl_rfpp_{gamma}_adv"], **F32)
    np.testing.assert_allclose(ret.numpy(), FIX[f"verl_rfpp_{gamma}_ret"], **F32)
    # observation tokens and padding: return exactly 0, as verl
    assert np.all(ret.numpy()[FIX["tok_mask"] == 0] == 0.0)


def test_reinforce_plus_plus_baseline_and_remax():
    adv, _ = ours.compute_reinforce_plus_plus_baseline_outcome_advantage(T, M, UIDS)
    np.testing.assert_allclose(adv.numpy(), FIX["verl_rfpp_baseline"], **F32)
    adv, ret = ours.compute_remax_outcome_advantage(T, torch.from_numpy(FIX["tok_baselines"]), M)
    np.testing.assert_allclose(adv.numpy(), FIX["verl_remax_adv"], **F32)
    np.testing.assert_allclose(ret.numpy(), FIX["verl_remax_ret"], **F32)


@pytest.mark.parametrize("shift", [True, False])
def test_masked_whiten(shift):
    # float64: verl divides by sum(mask) + 1e-8, groupadv by sum(mask) (relative 1e-8 / n)
    got = ga.masked_whiten(T.double(), M, shift_mean=shift)
    np.testing.assert_allclose(got.numpy(), FIX[f"verl_masked_whiten_{int(shift)}"], rtol=1e-7, atol=1e-8)
