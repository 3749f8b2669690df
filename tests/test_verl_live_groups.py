"""groupadv's group-level verl adapters (grpo_passk, opo, gpg, gdpo) against verl 0.9.1 itself,
live: random batches in verl's layout (ragged uid groups, shuffled string uids, masks of random
lengths, float32 / float64 / bf16), dtype included; NaN raises naming the response by default,
``nan="propagate"`` as verl; through verl's own ``compute_advantage`` dispatcher after
``install()``. verl: ``verl/trainer/ppo/core_algos.py`` (0.9.1) lines 361-468 (gdpo), 471-530
(grpo_passk), 639-690 (opo), 770-830 (gpg); dispatcher ``ray_trainer.py`` 187-282.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import verl_inputs  # noqa: E402
from verl_inputs import batch as _batch  # noqa: E402

ca = verl_inputs.core_algos()

from groupadv.integrations import verl as ours  # noqa: E402

VERL = dict(ca.ADV_ESTIMATOR_REGISTRY)
GROUP_LEVEL = [n for n in ("grpo_passk", "opo", "gpg", "gdpo") if n in ours.SUPPORTED]
CONFIGS = [{"norm_adv_by_std_in_grpo": True}, {"norm_adv_by_std_in_grpo": False}]


def _inputs(name, rng, dtype, n_groups=12):
    """verl's layout; grpo_passk needs >= 2 responses per group (verl raises otherwise), so
    its singletons are dropped."""
    t, m, uids, equal = _batch(rng, dtype, n_groups=n_groups)
    if name == "grpo_passk":
        names, counts = np.unique(uids, return_counts=True)
        keep = np.isin(uids, names[counts > 1])
        t, m, uids, equal = t[keep], m[keep], uids[keep], equal[keep]
    return t, m, uids, equal


def _verl_compute_advantage():
    """verl's own ``compute_advantage`` (ray_trainer.py 187-282), compiled from verl's source:
    importing ray_trainer needs the trainer's heavy dependencies (torchdata, ...), which the
    light install leaves out; the dispatcher itself needs only core_algos and DataProto."""
    import ast
    import inspect
    from typing import Optional

    import verl.trainer.ppo as ppo
    from verl import DataProto

    path = pathlib.Path(inspect.getfile(ppo)).parent / "ray_trainer.py"
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "compute_advantage")
    ns = {"core_algos": ca, "AdvantageEstimator": ca.AdvantageEstimator, "DataProto": DataProto,
          "Optional": Optional, "AlgoConfig": object, "compute_response_mask": None}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), ns)
    return ns["compute_advantage"], DataProto


def _call(fn, t, m, uids, config, **kw):
    return fn(t.clone(), m, uids, config=config, **kw)


@pytest.mark.parametrize("name", GROUP_LEVEL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=["norm", "no_norm"])
def test_group_estimator_matches_verl(name, dtype, config):
    fn = ours.SUPPORTED[name][1]
    for seed in range(6):
        rng = np.random.default_rng(seed)
        t, m, uids, equal = _inputs(name, rng, dtype)
        if name == "gdpo":
            # An all-equal group of 0.1 gets float32 noise from verl (-0.0074 each with its eps)
            # and exactly 0 here; gdpo's final whitening spreads that deviation over the whole
            # batch (its mean and std), so compare where verl, too, is exact: groups of 0.5.
            t[torch.from_numpy(equal)[:, None] & (t != 0)] = 0.5
        got, got_ret = _call(fn, t, m, uids, config)
        want, want_ret = _call(VERL[name], t, m, uids, config)
        assert got is got_ret and want is want_ret
        assert got.dtype == want.dtype and got.shape == want.shape
        g = got.double().numpy()
        if dtype == torch.bfloat16:
            # verl computes in bf16 (8-bit mantissa: its scores, sums and stds round at each
            # step); groupadv in float64, rounded once. Compare with verl on the same rewards in
            # float32, rounded to bf16: to one bf16 rounding.
            ref, _ = _call(VERL[name], t.float(), m.float() if m.is_floating_point() else m, uids, config)
            ref = ref.to(got.dtype).double().numpy()
            tol = {"rtol": 2**-7, "atol": 2**-7 * 1e-2}
        else:
            # float32 rounding of verl's statistics (float64: its float32 alpha for gpg).
            ref, tol = want.double().numpy(), {"rtol": 2e-5, "atol": 2e-6}
        np.testing.assert_allclose(g[~equal], ref[~equal], **tol)
        if name == "gdpo":
            # gdpo whitens over the batch last: an all-equal group is 0 before the whitening,
            # then shifted by the batch mean, as verl's.
            np.testing.assert_allclose(g[equal], ref[equal], **tol)
        else:
            # The deliberate deviation: an all-equal group gets exactly 0 here (verl: rounding
            # noise of its float32 mean, e.g. 7.45e-9 for opo and gpg).
            assert np.all(g[equal] == 0.0)


@pytest.mark.parametrize("name", GROUP_LEVEL)
def test_nan_raises_naming_the_response_and_propagates_as_verl(name):
    rng = np.random.default_rng(11)
    t, m, uids, _ = _inputs(name, rng, torch.float32)
    t[3, 0] = float("nan")
    fn, cfg = ours.SUPPORTED[name][1], CONFIGS[0]
    with pytest.raises(ValueError, match=r"\[3\].*NaN"):
        _call(fn, t, m, uids, cfg)
    got, _ = _call(fn, t, m, uids, cfg, nan="propagate")
    want, _ = _call(VERL[name], t, m, uids, cfg)
    assert torch.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got.numpy()), np.isnan(want.double().numpy()))
    ok = ~np.isnan(want.double().numpy())
    np.testing.assert_allclose(got.numpy()[ok], want.numpy()[ok], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", GROUP_LEVEL)
def test_empty_batch_as_verl(name):
    t, m = torch.zeros(0, 5), torch.zeros(0, 5, dtype=torch.int64)
    uids = np.array([], dtype=object)
    got, _ = _call(ours.SUPPORTED[name][1], t, m, uids, CONFIGS[0])
    if name == "gdpo":
        # verl's masked_whiten raises on an empty mask; an empty batch gives empty tensors here
        # (as every other adapter, and verl's other estimators).
        with pytest.raises(ValueError):
            _call(VERL[name], t, m, uids, CONFIGS[0])
        assert got.shape == (0, 5) and got.dtype == torch.float32
        return
    want, _ = _call(VERL[name], t, m, uids, CONFIGS[0])
    assert got.shape == want.shape == (0, 5) and got.dtype == want.dtype


def test_passk_singleton_raises_like_verl():
    rng = np.random.default_rng(2)
    t, m, uids, _ = _batch(rng, torch.float32)  # group 0 is a singleton
    with pytest.raises(ValueError):
        VERL["grpo_passk"](t.clone(), m, uids, config=CONFIGS[0])
    with pytest.raises(ValueError, match="single reward"):
        ours.compute_grpo_passk_outcome_advantage(t.clone(), m, uids, config=CONFIGS[0])
    with pytest.raises(ValueError, match="config"):
        ours.compute_grpo_passk_outcome_advantage(t.clone(), m, uids)


def test_passk_reads_the_option_from_config_as_verl():
    """verl's grpo_passk ignores its norm_adv_by_std_in_grpo argument and reads config's."""
    rng = np.random.default_rng(4)
    t, m, uids, _ = _inputs("grpo_passk", rng, torch.float64)
    for cfg in CONFIGS:
        got, _ = ours.compute_grpo_passk_outcome_advantage(t, m, uids, norm_adv_by_std_in_grpo=False, config=cfg)
        want, _ = VERL["grpo_passk"](t, m, uids, norm_adv_by_std_in_grpo=False, config=cfg)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


def test_gpg_f_norm_and_ignored_alpha_as_verl():
    rng = np.random.default_rng(5)
    t, m, uids, eq = _batch(rng, torch.float64)
    got, _ = ours.compute_gpg_outcome_advantage(t.clone(), m, uids, f_norm=2.5, alpha=7.0)
    want, _ = VERL["gpg"](t.clone(), m, uids, f_norm=2.5, alpha=7.0)
    np.testing.assert_allclose(got.numpy()[~eq], want.numpy()[~eq], rtol=1e-6, atol=1e-7)


def test_install_routes_verls_dispatcher_to_the_group_estimators():
    """verl's compute_advantage (ray_trainer.py 248-281) calls the registry with
    token_level_rewards, response_mask, config, index (and reward_baselines when present)."""
    compute_advantage, DataProto = _verl_compute_advantage()
    rng = np.random.default_rng(6)
    t, m, uids, _ = _inputs("grpo_passk", rng, torch.float32)
    cfg = CONFIGS[0]
    try:
        ours.install()
        for name in GROUP_LEVEL:
            if name == "gdpo":
                continue  # gdpo's own test: it also needs the batch's prompts and components
            assert ca.get_adv_estimator_fn(name) is ours.SUPPORTED[name][1]
            data = DataProto.from_dict(tensors={"token_level_rewards": t, "response_mask": m.float()},
                                       non_tensors={"uid": uids})
            out = compute_advantage(data, name, config=cfg)
            want, _ = VERL[name](t, m.float(), uids, config=cfg)
            np.testing.assert_allclose(out.batch["advantages"].numpy(), want.numpy(), rtol=2e-5, atol=2e-6)
    finally:
        ours.uninstall()
    for name in GROUP_LEVEL:
        assert ca.ADV_ESTIMATOR_REGISTRY[name] is VERL[name]


def test_grpo_vectorized_gets_no_norm_option_through_verls_dispatcher():
    """The README's claim: verl's grpo_vectorized honours norm_adv_by_std_in_grpo when called
    with it, but verl's compute_advantage passes it only to grpo (ray_trainer.py 240-245); the
    registry call (251-279) passes config, which grpo_vectorized does not read, so through the
    dispatcher it always scales: verl's and groupadv's alike."""
    compute_advantage, DataProto = _verl_compute_advantage()
    rng = np.random.default_rng(8)
    t, m, uids, _ = _batch(rng, torch.float32)
    m = m.float()
    scaled, _ = VERL["grpo_vectorized"](t, m, uids, norm_adv_by_std_in_grpo=True)
    unscaled, _ = VERL["grpo_vectorized"](t, m, uids, norm_adv_by_std_in_grpo=False)
    assert not torch.allclose(scaled, unscaled)
    ours_unscaled, _ = ours.compute_grpo_vectorized_outcome_advantage(t, m, uids, norm_adv_by_std_in_grpo=False)
    np.testing.assert_allclose(ours_unscaled.numpy(), unscaled.numpy(), rtol=2e-5, atol=2e-6)
    cfg = {"norm_adv_by_std_in_grpo": False}
    for installed in (False, True):
        try:
            if installed:
                ours.install()
            data = DataProto.from_dict(tensors={"token_level_rewards": t, "response_mask": m},
                                       non_tensors={"uid": uids})
            out = compute_advantage(data, "grpo_vectorized", norm_adv_by_std_in_grpo=False, config=cfg)
            np.testing.assert_allclose(out.batch["advantages"].numpy(), scaled.numpy(), rtol=2e-5, atol=2e-6)
        finally:
            ours.uninstall()


def _gdpo_batch(rng, dtype, k=3):
    """verl's GDPO inputs as its dispatcher passes them (ray_trainer.py 260-263): the reward
    components in non_tensor_batch, prompts and attention_mask in batch."""
    t, m, uids, equal = _batch(rng, dtype)
    bs, length = t.shape
    comps = {f"r{j}": rng.integers(0, 3, bs).astype(np.float64) * (0.5 + j) for j in range(k)}
    comps["r0"][equal] = 1.0  # all-equal groups in one component
    prompts = torch.ones(bs, 4, dtype=torch.long)
    attention = torch.cat([torch.ones(bs, 4, dtype=torch.long), (m != 0).long()], dim=1)
    non_tensor = dict(comps, uid=uids)
    return t, m, uids, non_tensor, {"prompts": prompts, "attention_mask": attention}


@pytest.mark.skipif("gdpo" not in ours.SUPPORTED, reason="gdpo needs ga.masked_whiten")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("weights", [None, [1.0, 0.5, -2.0]], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("norm", [True, False], ids=["norm", "no_norm"])
def test_gdpo_components_match_verl(dtype, weights, norm):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        t, m, uids, non_tensor, batch = _gdpo_batch(rng, dtype)
        cfg = {"gdpo_reward_keys": ["r0", "r1", "r2"], "norm_adv_by_std_in_grpo": norm}
        if weights is not None:
            cfg["gdpo_reward_weights"] = weights
        kw = dict(config=cfg, non_tensor_batch=non_tensor, batch=batch, norm_adv_by_std_in_grpo=norm)
        got, ret = ours.compute_gdpo_outcome_advantage(t.clone(), m, uids, **kw)
        want, _ = VERL["gdpo"](t.clone(), m, uids, **kw)
        assert got is ret and got.dtype == want.dtype and got.shape == want.shape
        if m.dtype == torch.bfloat16:
            # verl's masked_whiten sums a bf16 mask in bf16 (a token count above 256 rounds):
            # compare with verl on the same mask in float32.
            want, _ = VERL["gdpo"](t.clone(), m.float(), uids, **kw)
        # float32 rounding of verl's per-component statistics, its weighted sum and whitening
        np.testing.assert_allclose(got.double().numpy(), want.double().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif("gdpo" not in ours.SUPPORTED, reason="gdpo needs ga.masked_whiten")
def test_gdpo_missing_key_and_nan_component():
    rng = np.random.default_rng(9)
    t, m, uids, non_tensor, batch = _gdpo_batch(rng, torch.float32)
    with pytest.raises(ValueError, match="nope"):
        ours.compute_gdpo_outcome_advantage(t, m, uids, config={"gdpo_reward_keys": ["nope"]},
                                            non_tensor_batch=non_tensor, batch=batch)
    non_tensor["r1"] = non_tensor["r1"].copy()
    non_tensor["r1"][5] = np.nan
    cfg = {"gdpo_reward_keys": ["r0", "r1"]}
    with pytest.raises(ValueError, match=r"\[5\]"):
        ours.compute_gdpo_outcome_advantage(t, m, uids, config=cfg, non_tensor_batch=non_tensor, batch=batch)
    got, _ = ours.compute_gdpo_outcome_advantage(t, m, uids, config=cfg, non_tensor_batch=non_tensor,
                                                 batch=batch, nan="propagate")
    want, _ = VERL["gdpo"](t, m, uids, config=cfg, non_tensor_batch=non_tensor, batch=batch)
    np.testing.assert_array_equal(np.isnan(got.numpy()), np.isnan(want.numpy()))


@pytest.mark.skipif("gdpo" not in ours.SUPPORTED, reason="gdpo needs ga.masked_whiten")
def test_gdpo_through_verls_dispatcher():
    """ray_trainer.py 260-263: the dispatcher passes non_tensor_batch and batch for gdpo."""
    compute_advantage, DataProto = _verl_compute_advantage()
    rng = np.random.default_rng(10)
    t, m, uids, non_tensor, batch = _gdpo_batch(rng, torch.float32)
    cfg = {"gdpo_reward_keys": ["r0", "r1", "r2"], "gdpo_reward_weights": [1.0, 2.0, 0.5]}
    tensors = {"token_level_rewards": t, "response_mask": m.float(), **batch}
    want, _ = VERL["gdpo"](t, m.float(), uids, config=cfg, non_tensor_batch=non_tensor, batch=batch)
    try:
        ours.install()
        out = compute_advantage(DataProto.from_dict(tensors=tensors, non_tensors=non_tensor), "gdpo", config=cfg)
    finally:
        ours.uninstall()
    np.testing.assert_allclose(out.batch["advantages"].numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
