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


# --- verl adapters: dtypes, empty batches, keywords, NaN (golden values from verl 0.9.1) ---

_VERL_FNS = {
    "grpo": verl.compute_grpo_outcome_advantage,
    "grpo_vectorized": verl.compute_grpo_vectorized_outcome_advantage,
    "rloo": verl.compute_rloo_outcome_advantage,
    "rloo_vectorized": verl.compute_rloo_vectorized_outcome_advantage,
}
# The estimators with more inputs than (token_level_rewards, response_mask, index), tested in
# their own files (optimal token baseline: tests/test_verl_live_otb.py, test_token_baseline.py).
_VERL_OTHER_FNS = {
    "optimal_token_baseline": verl.compute_optimal_token_baseline_advantage,
    "tir_optimal_token_baseline": verl.compute_multi_turn_optimal_token_baseline_advantage,
}


def _verl_inputs():
    return (torch.from_numpy(FIX["verl_tlr"]), torch.from_numpy(FIX["verl_mask"]),
            FIX["verl_uids"].astype(object))


# the token-level estimators (tests/test_verl_live_tokens.py, tests/test_peer_fixtures_tokens.py)
_VERL_TOKEN_FNS = {
    "gae": verl.compute_gae_advantage_return,
    "reinforce_plus_plus": verl.compute_reinforce_plus_plus_outcome_advantage,
    "reinforce_plus_plus_baseline": verl.compute_reinforce_plus_plus_baseline_outcome_advantage,
    "remax": verl.compute_remax_outcome_advantage,
}


def test_verl_supported_names_and_functions():
    # the score-only, token and optimal-token-baseline estimators (the group-level ones have
    # their own tests: tests/test_verl_live_groups.py)
    want = {**_VERL_FNS, **_VERL_TOKEN_FNS, **_VERL_OTHER_FNS}
    assert {k: v[1] for k, v in verl.SUPPORTED.items() if k in want} == want


@pytest.mark.parametrize("line", list(FIX["verl_dtypes"]))
def test_verl_output_dtype_and_shape_as_verl(line):
    """One line per (estimator, rewards dtype, mask dtype), as verl 0.9.1 returned it: bf16
    rewards stay bf16 where verl keeps them, an empty batch gives an empty tensor."""
    head, want = line.replace("torch.", "").split(" -> ")
    name, rows, rdt, mdt = head.split()
    tlr, mask, uids = _verl_inputs()
    rows = int(rows)
    adv, ret = _VERL_FNS[name](tlr[:rows].to(getattr(torch, rdt)), mask[:rows].to(getattr(torch, mdt)), uids[:rows])
    assert adv is ret
    assert f"{tuple(adv.shape)} {adv.dtype}".replace("torch.", "") == want


@pytest.mark.parametrize("name", sorted(_VERL_FNS))
def test_verl_nan_raises_naming_the_response_or_propagates_as_verl(name):
    tlr, mask, uids = _verl_inputs()
    tlr = tlr.clone()
    tlr[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rewards\[0\] is NaN"):
        _VERL_FNS[name](tlr, mask.long(), uids)
    got, _ = _VERL_FNS[name](tlr, mask.long(), uids, nan="propagate")
    want = FIX[f"verl_{name}_nan"]
    got = got.double().numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # NaN * 0 stays NaN on masked tokens
    ok = ~np.isnan(want) & ~_equal_group_rows(FIX["verl_uids"])[:, None]
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5, atol=2e-6)


def test_verl_signatures_as_verl():
    """verl 0.9.1's parameters and defaults (core_algos.py 268-275, 335-342, 588-595, 834-841);
    rloo takes **kwargs (its dispatcher passes reward_baselines), grpo does not, as in verl."""
    import inspect

    for name, fn in _VERL_FNS.items():
        params = inspect.signature(fn).parameters
        want = ["token_level_rewards", "response_mask", "index", "epsilon"]
        want += ["norm_adv_by_std_in_grpo", "config", "nan"] if "grpo" in name else ["config", "nan", "kwargs"]
        assert list(params) == want, name
        assert params["epsilon"].default == 1e-6 and params["config"].default is None
        assert params["nan"].kind is inspect.Parameter.KEYWORD_ONLY and params["nan"].default == "raise"
    tlr, mask, uids = _verl_inputs()
    for name in ("rloo", "rloo_vectorized"):
        adv, _ = _VERL_FNS[name](token_level_rewards=tlr, response_mask=mask, index=uids, config=None,
                                 reward_baselines=torch.zeros(len(tlr)))
        np.testing.assert_allclose(adv.numpy()[~_equal_group_rows(FIX["verl_uids"])],
                                   FIX[f"verl_{name}"][~_equal_group_rows(FIX["verl_uids"])], rtol=2e-5, atol=2e-6)


def test_verl_vectorized_forms_match_verl():
    tlr, mask, uids = _verl_inputs()
    eq = _equal_group_rows(FIX["verl_uids"])
    adv, _ = verl.compute_grpo_vectorized_outcome_advantage(tlr, mask, uids)
    _check_against_peer(adv, FIX["verl_grpo_vectorized"], eq)
    adv, _ = verl.compute_rloo_vectorized_outcome_advantage(tlr, mask, uids)
    _check_against_peer(adv, FIX["verl_rloo_vectorized"], eq)
    assert adv.numpy()[FIX["verl_uids"] == "u2"][0, 0] == 0.0  # the singleton, as verl's (c > 1)


class _FakeCoreAlgos:
    """Stands in for verl.trainer.ppo.core_algos when verl is not installed."""

    def __init__(self):
        self.ADV_ESTIMATOR_REGISTRY = {"vtrace": object()}  # a name groupadv does not replace
        for name, (attr, _) in verl.SUPPORTED.items():
            fn = object()
            setattr(self, attr, fn)
            self.ADV_ESTIMATOR_REGISTRY[name] = fn


def test_verl_install_and_uninstall_restore_the_originals():
    ca = _FakeCoreAlgos()
    before = dict(ca.ADV_ESTIMATOR_REGISTRY)
    try:
        assert verl.install(ca) == sorted(verl.SUPPORTED)
        verl.install(ca)  # idempotent: the originals saved once
        for name, (attr, fn) in verl.SUPPORTED.items():
            assert ca.ADV_ESTIMATOR_REGISTRY[name] is fn and getattr(ca, attr) is fn
        assert ca.ADV_ESTIMATOR_REGISTRY["vtrace"] is before["vtrace"]
    finally:
        verl.uninstall(ca)
    assert ca.ADV_ESTIMATOR_REGISTRY == before
    for name, (attr, _) in verl.SUPPORTED.items():
        assert getattr(ca, attr) is before[name]


# --- TRL: unscorable completions (NaN) and num_generations=1, as TRL 1.16 gives them ---

@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_trl_grpo_nan_rewards_and_one_generation_as_trl(scale):
    r = torch.from_numpy(FIX["trl_nan_rewards"])
    np.testing.assert_allclose(trl.compute_grpo_advantages(r, 3, scale_rewards=scale).numpy(),
                               FIX[f"trl_grpo_nan_{scale}"], rtol=2e-5, atol=1e-7)
    got = trl.compute_grpo_advantages(r, 1, scale_rewards=scale).numpy()
    assert np.all(got == 0.0) and np.array_equal(got, FIX[f"trl_grpo_g1_{scale}"])


@pytest.mark.parametrize("norm", [False, True])
def test_trl_rloo_nan_rewards_and_one_generation_as_trl(norm):
    r = torch.from_numpy(FIX["trl_nan_rewards"])
    np.testing.assert_allclose(trl.compute_rloo_advantages(r, 3, normalize_advantages=norm).numpy(),
                               FIX[f"trl_rloo_nan_norm{int(norm)}"], rtol=2e-5, atol=1e-7)
    np.testing.assert_array_equal(trl.compute_rloo_advantages(r, 1, normalize_advantages=norm).numpy(),
                                  FIX[f"trl_rloo_g1_norm{int(norm)}"])


# --- OpenRLHF: NaN rewards ---

@pytest.mark.parametrize("estimator", ["group_norm", "rloo", "dr_grpo"])
def test_openrlhf_nan_raises_or_propagates_as_openrlhf(estimator):
    r = torch.from_numpy(FIX["trl_nan_rewards"])
    with pytest.raises(ValueError, match=r"rewards\[1\] is NaN"):
        openrlhf.compute_advantages(r, 3, estimator)
    got = openrlhf.compute_advantages(r, 3, estimator, nan="propagate").numpy()
    want = FIX[f"openrlhf_nan_{estimator}"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=2e-5, atol=1e-7)
