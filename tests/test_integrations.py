"""Peer adapters against golden outputs of the peers' own code (tests/fixtures/peers.npz,
made by scripts/make_peer_fixtures.py: verl run, TRL/OpenRLHF transcribed), and live against
the installed packages when they are importable."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import groupadv as ga  # noqa: E402
from groupadv.integrations import openrlhf, trl, verl  # noqa: E402

FIX = np.load(pathlib.Path(__file__).parent / "fixtures" / "peers.npz")


def _equal_group_rows(uids):
    return uids == "u1"  # the 8 x 0.1 group


def _check_against_peer(ours, peer, equal_rows):
    ours = ours.numpy() if hasattr(ours, "numpy") else ours
    # Where the group has spread, we reproduce the peer to float32 rounding.
    np.testing.assert_allclose(ours[~equal_rows], peer[~equal_rows], rtol=2e-5, atol=2e-6)
    # The all-equal group: exactly 0 here; the peer turns float32 rounding into advantages.
    assert np.all(ours[equal_rows] == 0.0)


@pytest.mark.parametrize("norm", [True, False])
def test_verl_grpo_matches_verl(norm):
    tlr, mask, uids = (torch.from_numpy(FIX["verl_tlr"]), torch.from_numpy(FIX["verl_mask"]),
                       FIX["verl_uids"].astype(object))
    adv, ret = verl.compute_grpo_outcome_advantage(tlr, mask, uids, norm_adv_by_std_in_grpo=norm)
    assert adv is ret and isinstance(adv, torch.Tensor) and adv.shape == tlr.shape and adv.dtype == torch.float32
    peer = FIX[f"verl_grpo_norm{int(norm)}"]
    _check_against_peer(adv, peer, _equal_group_rows(FIX["verl_uids"]))
    if norm:
        assert np.all(np.abs(peer[_equal_group_rows(FIX["verl_uids"])][:, 0]) > 1e-3)  # verl's own error
    # The singleton keeps its raw score (verl: mean 0, std 1).
    single = FIX["verl_uids"] == "u2"
    expected = 0.8 / (1 + 1e-6) if norm else 0.8
    assert adv.numpy()[single][0, 0] == pytest.approx(expected, rel=1e-6)


def test_verl_rloo_matches_the_loop_version():
    tlr, mask, uids = (torch.from_numpy(FIX["verl_tlr"]), torch.from_numpy(FIX["verl_mask"]),
                       FIX["verl_uids"].astype(object))
    adv, _ = verl.compute_rloo_outcome_advantage(tlr, mask, uids)
    eq = _equal_group_rows(FIX["verl_uids"])
    _check_against_peer(adv, FIX["verl_rloo"], eq)
    # verl's vectorized RLOO gives singletons 0 instead (its issue #7793); the loop keeps the score.
    single = FIX["verl_uids"] == "u2"
    assert FIX["verl_rloo_vectorized"][single][0, 0] == 0.0
    assert adv.numpy()[single][0, 0] == pytest.approx(0.8)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_trl_grpo_matches_trl(scale):
    r = torch.from_numpy(FIX["flat_rewards"])
    ours = trl.compute_grpo_advantages(r, 8, scale_rewards=scale)
    eq = np.zeros(len(r), bool)
    eq[8:16] = True
    peer = FIX[f"trl_grpo_{scale}"]
    if scale == "batch":
        # Batch std: the all-equal prompt is centred on its exact mean here (0), on a rounded
        # one in TRL (-7.4e-9 / (std + 1e-4)): equal up to that rounding.
        np.testing.assert_allclose(ours.numpy(), peer, rtol=2e-5, atol=1e-7)
        return
    _check_against_peer(ours, peer, eq)


@pytest.mark.parametrize("estimator", ["group_norm", "rloo", "dr_grpo"])
def test_openrlhf_matches_openrlhf(estimator):
    r = torch.from_numpy(FIX["flat_rewards"])
    ours = openrlhf.compute_advantages(r, 8, estimator)
    eq = np.zeros(len(r), bool)
    eq[8:16] = True
    peer = FIX[f"openrlhf_{estimator}"]
    _check_against_peer(ours, peer, eq)
    if estimator == "group_norm":
        assert np.all(np.abs(peer[eq]) > 1.0)  # 1e-9 turns rounding into |A| ~ 7.45


def test_trl_rloo_and_options():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 0.0])
    np.testing.assert_allclose(trl.compute_rloo_advantages(r, 3).numpy(),
                               [1.0, -0.5, -0.5, 0.0, 1.5, -1.5], rtol=1e-6)
    a = trl.compute_rloo_advantages(r, 3).double().numpy()
    want = (a - a.mean()) / (a.std(ddof=1) + 1e-4)
    np.testing.assert_allclose(trl.compute_rloo_advantages(r, 3, normalize_advantages=True).numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(trl.compute_grpo_advantages(r, 3, scale_rewards=True).numpy(),
                               trl.compute_grpo_advantages(r, 3, scale_rewards="group").numpy())
    with pytest.raises(ValueError, match="scale_rewards"):
        trl.compute_grpo_advantages(r, 3, scale_rewards="global")
    with pytest.raises(ValueError, match="single reward"):
        openrlhf.compute_advantages(r, 1)
    with pytest.raises(ValueError, match="advantage_estimator"):
        openrlhf.compute_advantages(r, 3, "gae")


def _verl_or_skip():
    try:
        from verl.trainer.ppo import core_algos
    except Exception:  # verl and its import-time dependencies are optional
        pytest.skip("verl is not installed")
    return core_algos


@pytest.mark.parametrize("seed", range(5))
def test_live_against_installed_verl(seed):
    ca = _verl_or_skip()
    rng = np.random.default_rng(seed)
    bs, L = 40, 7
    uids = np.array([f"p{k}" for k in rng.integers(0, 9, bs)], dtype=object)
    tlr = torch.from_numpy(rng.normal(size=(bs, L)).astype(np.float32))
    mask = torch.from_numpy((rng.random((bs, L)) < 0.8).astype(np.float32))
    for norm in (True, False):
        want, _ = ca.compute_grpo_outcome_advantage(tlr.clone(), mask, uids, norm_adv_by_std_in_grpo=norm)
        got, _ = verl.compute_grpo_outcome_advantage(tlr, mask, uids, norm_adv_by_std_in_grpo=norm)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    want, _ = ca.compute_rloo_outcome_advantage(tlr.clone(), mask, uids)
    got, _ = verl.compute_rloo_outcome_advantage(tlr, mask, uids)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_all_equal_float32_groups_documented_values():
    """The peers' numerics on eight rewards of 0.1 in float32, and ours."""
    x = torch.full((8,), 0.1)
    peer_verl = (x - x.mean()) / (x.std() + 1e-6)
    peer_openrlhf = (x - x.mean()) / (x.std() + 1e-9)
    assert abs(float(peer_verl[0]) + 0.0074) < 1e-4
    assert abs(float(peer_openrlhf[0]) + 0.83) < 0.01
    for preset in ga.PRESETS:
        assert torch.all(ga.grpo(x, 8, preset=preset, singleton="zero") == 0.0)
