"""One normalization at the right level, and the double-normalization guard."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import groupadv as ga
from groupadv.pipeline import (
    DoubleNormalizationError,
    DoubleNormalizationWarning,
    check_not_normalized,
    looks_group_normalized,
    normalize,
    whiten,
)


def _batch(seed=0, n_groups=32, size=8):
    rng = np.random.default_rng(seed)
    r = (rng.random((n_groups, size)) < rng.random((n_groups, 1))).astype(np.float64).ravel()  # 0/1 pass rates
    r[:size] = 1.0  # an all-equal group
    ids = np.repeat(np.arange(n_groups), size)
    perm = rng.permutation(len(r))
    return r[perm], ids[perm]


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_guard_detects_group_zscores(backend_name, ddof, eps, dtype):
    r, ids = _batch()
    adv = ga.grpo(r.astype(dtype), group_ids=ids, ddof=ddof, eps=eps)
    assert looks_group_normalized(adv, group_ids=ids)
    with pytest.warns(DoubleNormalizationWarning, match="already look group z-scored"):
        assert check_not_normalized(adv, group_ids=ids)
    with pytest.raises(DoubleNormalizationError, match="double-normalization"):
        check_not_normalized(adv, group_ids=ids, strict=True)


def test_guard_quiet_on_rewards_and_unscaled_advantages(backend_name):
    r, ids = _batch(seed=1)
    cont = np.random.default_rng(2).normal(0.3, 0.2, len(r))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for values in (r, cont, ga.drgrpo(r, group_ids=ids), ga.rloo(r, group_ids=ids),
                       ga.grpo(r, group_ids=ids, scale="batch")):
            assert not looks_group_normalized(values, group_ids=ids)
            assert check_not_normalized(values, group_ids=ids, strict=True) is False
    # all-equal groups alone are no evidence
    assert not looks_group_normalized(np.zeros(8), 4)
    assert not looks_group_normalized([1.0, 2.0], 1)
    with pytest.raises(ValueError, match="tol"):
        looks_group_normalized(r, group_ids=ids, tol=2.0)


def test_warning_points_at_the_caller():
    adv = ga.grpo([0.0, 1.0, 1.0, 3.0], 2)
    with pytest.warns(DoubleNormalizationWarning) as rec:
        whiten(adv, group_size=2)
    assert rec[0].filename == __file__


def test_normalize_applies_exactly_one_normalization(backend_name):
    r, ids = _batch(seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # raw rewards: the guard stays quiet
        res = normalize(r, group_ids=ids, strict=True)
    np.testing.assert_array_equal(res.advantages, ga.grpo(r, group_ids=ids))
    assert res.scale == "group" and res.batch is None
    assert np.array_equal(res.keep, res.advantages != 0)
    assert res.diagnostics.frac_zero_std > 0
    b = normalize(r, group_ids=ids, scale="batch", ddof=1)
    np.testing.assert_allclose(b.advantages, ga.grpo(r, group_ids=ids, scale="batch", ddof=1), rtol=1e-13, atol=1e-15)
    assert b.batch is not None and b.batch.count == len(r)
    np.testing.assert_array_equal(normalize(r, group_ids=ids, estimator="drgrpo").advantages, ga.drgrpo(r, group_ids=ids))
    np.testing.assert_allclose(normalize(r, group_ids=ids, estimator="rloo").advantages, ga.rloo(r, group_ids=ids))
    with pytest.raises(ValueError, match="estimator"):
        normalize(r, group_ids=ids, estimator="ppo")
    with pytest.raises(ValueError, match="group std"):
        normalize(r, group_ids=ids, estimator="rloo", scale="group")
    # advantages fed back in as rewards: the guard fires
    with pytest.warns(DoubleNormalizationWarning):
        normalize(res.advantages, group_ids=ids)
    with pytest.raises(DoubleNormalizationError):
        normalize(res.advantages, group_ids=ids, strict=True)


def test_double_normalization_distorts():
    """The bug the pipeline prevents: group z-score, subsample, then token-weighted whitening."""
    r, ids = _batch(seed=4)
    lengths = np.random.default_rng(5).integers(20, 2000, len(r))
    adv = ga.grpo(r, group_ids=ids)
    keep = np.random.default_rng(6).random(len(r)) < 0.5
    with pytest.warns(DoubleNormalizationWarning):
        again = whiten(adv, weights=lengths, mask=keep, group_ids=ids)
    zero = (adv == 0) & keep
    assert zero.any()
    # all-equal groups (no signal) now get a non-zero advantage, and the scale changed
    assert np.all(again[zero] != 0)
    assert not np.allclose(again[keep], adv[keep])


def test_whiten(backend_name):
    v = ga.drgrpo([0.0, 1.0, 2.0, 5.0, 1.0, 1.0], 2)
    w = whiten(v)
    assert w.mean() == pytest.approx(0, abs=1e-15) and w.std() == pytest.approx(1, rel=1e-7)
    m = np.array([True, True, True, True, False, False])
    wm = whiten(v, mask=m)
    assert wm[4:].tolist() == [0.0, 0.0]
    assert wm[:4].std() == pytest.approx(1, rel=1e-7)
    lens = np.array([1, 3, 1, 1, 1, 1])
    np.testing.assert_allclose(whiten(v, weights=lens, eps=0), (v - np.average(v, weights=lens)) /
                               np.sqrt(np.cov(v, fweights=lens, ddof=0)))
    assert whiten(v, shift_mean=False, eps=0) == pytest.approx(v / v.std())
    assert whiten([2.0, 2.0], eps=0).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="mask"):
        whiten(v, mask=[1, 0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match="ddof"):
        whiten([1.0], ddof=1)
