"""Mergeable batch moments, token weighting as an option, and advantages with a supplied batch std."""

from __future__ import annotations

import numpy as np
import pytest

import groupadv as ga
from groupadv.moments import BatchMoments, Moments, merge_all


def _batch(seed=0, n_groups=40, size=8, dtype=np.float64):
    rng = np.random.default_rng(seed)
    r = (rng.random(n_groups * size) * 3 - 1).astype(dtype)
    r[: 2 * size] = np.round(r[: 2 * size])  # some ties
    r[2 * size : 3 * size] = 0.5  # an all-equal group
    ids = np.repeat(np.arange(n_groups), size)
    rng.shuffle(ids)
    return r, ids


def _shards(r, ids, k, seed=1):
    """Split a batch into k shards of whole groups (labels shuffled over shards)."""
    rng = np.random.default_rng(seed)
    labels = np.unique(ids)
    owner = dict(zip(labels.tolist(), rng.integers(0, k, len(labels)).tolist()))
    which = np.array([owner[i] for i in ids.tolist()])
    return [(r[which == s], ids[which == s]) for s in range(k) if np.any(which == s)]


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def test_from_values_matches_numpy():
    x = np.random.default_rng(3).normal(5, 2, 1001)
    m = Moments.from_values(x)
    assert m.count == 1001 and isinstance(m.count, int)
    assert _rel(m.mean, x.mean()) < 1e-14
    assert _rel(m.std(0), x.std()) < 1e-13
    assert _rel(m.std(1), x.std(ddof=1)) < 1e-13
    assert _rel(m.m2, np.sum((x - x.mean()) ** 2)) < 1e-13


@pytest.mark.parametrize("k", [2, 3, 7])
def test_merge_of_splits_equals_whole_f64(k):
    x = np.random.default_rng(k).normal(1e3, 1.0, 5000)  # large mean: merge must be stable
    cuts = np.sort(np.random.default_rng(k + 10).choice(np.arange(1, 5000), k - 1, replace=False))
    parts = [Moments.from_values(p) for p in np.split(x, cuts)]
    whole = Moments.from_values(x)
    merged = merge_all(parts)
    assert merged.count == whole.count
    assert _rel(merged.mean, whole.mean) < 1e-12
    assert _rel(merged.m2, whole.m2) < 1e-12
    # order and tree shape do not matter beyond rounding
    tree = merge_all([merge_all(parts[: k // 2]), merge_all(parts[k // 2 :])]) if k > 2 else merged
    assert _rel(tree.m2, whole.m2) < 1e-12


def test_merge_identity_and_errors():
    m = Moments.from_values([1.0, 2.0, 4.0])
    assert m.merge(Moments.empty()) == m and Moments.empty().merge(m) == m
    assert m + Moments.empty() == m
    with pytest.raises(TypeError, match="Moments"):
        m.merge((3, 1.0, 0.0))
    with pytest.raises(ValueError, match="at least one"):
        merge_all([])
    assert np.isnan(Moments.from_values([1.0]).std(1))
    assert Moments.from_values([1.0]).std(0) == 0.0
    with pytest.raises(ValueError, match="ddof"):
        m.std(2)


@pytest.mark.parametrize("k", [2, 4])
def test_batch_moments_of_shards_equal_whole(backend_name, k):
    r, ids = _batch()
    whole = BatchMoments.from_rewards(r, group_ids=ids)
    parts = [BatchMoments.from_rewards(sr, group_ids=si) for sr, si in _shards(r, ids, k)]
    merged = merge_all(parts)
    assert merged.count == whole.count == len(r)
    for scale in ("batch", "batch_residual"):
        for ddof in (0, 1):
            assert _rel(merged.std(scale, ddof), whole.std(scale, ddof)) < 1e-12
    assert _rel(merged.rewards.m2, whole.rewards.m2) < 1e-12
    assert _rel(merged.residual.m2, whole.residual.m2) < 1e-12


def test_batch_moments_definition(backend_name):
    r, ids = _batch(seed=5)
    bm = BatchMoments.from_rewards(r, group_ids=ids)
    assert _rel(bm.mean, r.mean()) < 1e-13
    assert _rel(bm.std("batch", 1), r.std(ddof=1)) < 1e-12
    gm = {g: r[ids == g].mean() for g in np.unique(ids)}
    res = r - np.array([gm[g] for g in ids])
    assert _rel(bm.std("batch_residual", 0), np.sqrt(np.mean(res**2))) < 1e-12
    with pytest.raises(ValueError, match="scale"):
        bm.std("group")
    # the same statistic the core divides by
    a = ga.advantages(r, group_ids=ids, scale="batch_residual", ddof=1)
    b = (r - np.array([gm[g] for g in ids])) / bm.std("batch_residual", 1)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_token_weighting_is_explicit(backend_name):
    r, ids = _batch(seed=7, n_groups=10, size=4)
    lengths = np.random.default_rng(8).integers(1, 50, len(r))
    default = BatchMoments.from_rewards(r, group_ids=ids)
    ones = BatchMoments.from_rewards(r, group_ids=ids, weights=np.ones(len(r)))
    tok = BatchMoments.from_rewards(r, group_ids=ids, weights=lengths)
    assert not default.weighted and ones.weighted and tok.weighted
    # unit weights = the unweighted (episode) definition
    for scale in ("batch", "batch_residual"):
        assert _rel(ones.std(scale), default.std(scale)) < 1e-12
    # token weights change the result, and mean frequency weights: a reward of length L counts L times
    assert abs(tok.std("batch") - default.std("batch")) > 1e-3
    rep = np.repeat(r, lengths)
    assert tok.count == lengths.sum()
    assert _rel(tok.mean, rep.mean()) < 1e-12
    assert _rel(tok.std("batch", 1), rep.std(ddof=1)) < 1e-12
    gm = {g: r[ids == g].mean() for g in np.unique(ids)}  # residuals about the (episode) group mean
    res = np.repeat(r - np.array([gm[g] for g in ids]), lengths)
    assert _rel(tok.std("batch_residual"), res.std()) < 1e-12
    # weighted shards merge too
    a = BatchMoments.from_rewards(r[:20], group_ids=ids[:20], weights=lengths[:20])
    b = BatchMoments.from_rewards(r[20:], group_ids=ids[20:], weights=lengths[20:])
    assert _rel((a + b).rewards.m2, tok.rewards.m2) < 1e-12
    with pytest.raises(ValueError, match="weighted"):
        a.merge(default)


def test_weights_validation():
    r = [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="length 3"):
        BatchMoments.from_rewards(r, 2, weights=[1, 2, 3])
    with pytest.raises(ValueError, match=r"weights\[1\] = -1"):
        BatchMoments.from_rewards(r, 2, weights=[1, -1, 1, 1])
    with pytest.raises(ValueError, match="finite"):
        BatchMoments.from_rewards(r, 2, weights=[1, np.nan, 1, 1])
    with pytest.raises(TypeError, match="numbers"):
        BatchMoments.from_rewards(r, 2, weights=["a", "b", "c", "d"])
    z = BatchMoments.from_rewards(r, 2, weights=[0, 0, 0, 0])
    assert z.count == 0 and np.isnan(z.std("batch"))


def test_nan_policies(backend_name):
    r = np.array([1.0, np.nan, 3.0, 4.0, 5.0, 7.0])
    with pytest.raises(ValueError, match=r"rewards\[1\]"):
        BatchMoments.from_rewards(r, 3)
    om = BatchMoments.from_rewards(r, 3, nan="omit")
    ok = r[np.isfinite(r)]
    assert om.count == 5 and _rel(om.std("batch"), ok.std()) < 1e-12
    omw = BatchMoments.from_rewards(r, 3, nan="omit", weights=np.ones(6))
    assert omw.count == 5 and _rel(omw.std("batch"), ok.std()) < 1e-12
    assert np.isnan(BatchMoments.from_rewards(r, 3, nan="propagate").std("batch"))


def test_array_roundtrip():
    bm = BatchMoments.from_rewards([1.0, 2.0, 4.0, 8.0], 2)
    assert BatchMoments.from_array(bm.to_array()) == bm


# ----------------------------------------------------------------------------- batch_std=


@pytest.mark.parametrize("scale", ["batch", "batch_residual"])
@pytest.mark.parametrize("center", ["mean", "loo", "none"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_batch_std_equals_one_pass(backend_name, scale, center, ddof):
    r, ids = _batch(seed=11)
    bm = BatchMoments.from_rewards(r, group_ids=ids)
    one = ga.advantages(r, group_ids=ids, scale=scale, center=center, ddof=ddof, eps=1e-6)
    ext = ga.advantages(r, group_ids=ids, scale=scale, center=center, ddof=ddof, eps=1e-6,
                        batch_std=bm.std(scale, ddof))
    np.testing.assert_allclose(ext, one, rtol=1e-13, atol=1e-15)
    assert ext[np.repeat(False, len(r)) | (one == 0)].tolist() == [0.0] * int(np.sum(one == 0))


@pytest.mark.parametrize("scale", ["batch", "batch_residual"])
def test_shards_with_global_std_equal_whole_batch(backend_name, scale):
    r, ids = _batch(seed=12)
    whole = ga.advantages(r, group_ids=ids, scale=scale, ddof=1)
    shards = _shards(r, ids, 3)
    total = merge_all(BatchMoments.from_rewards(sr, group_ids=si) for sr, si in shards)
    std = total.std(scale, 1)
    for sr, si in shards:
        got = ga.advantages(sr, group_ids=si, scale=scale, ddof=1, batch_std=std)
        want = whole[np.isin(ids, np.unique(si))]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
        # without the global std, a shard uses its own std: a different answer
        local = ga.advantages(sr, group_ids=si, scale=scale, ddof=1)
        assert np.max(np.abs(local - want)) > 1e-6


def test_batch_std_float32_and_singletons(backend_name):
    r = np.array([0.2, 0.5, 0.8, 0.3, 0.7, 0.9], dtype=np.float32)
    offs = [0, 3, 5, 6]
    for singleton in ("zero", "raw"):
        one = ga.advantages(r, offsets=offs, scale="batch", singleton=singleton)
        std = BatchMoments.from_rewards(r, offsets=offs).std("batch")
        ext = ga.advantages(r, offsets=offs, scale="batch", singleton=singleton, batch_std=std)
        assert ext.dtype == np.float32
        np.testing.assert_allclose(ext, one, rtol=1e-6, atol=1e-7)
    out = np.empty(6, dtype=np.float32)
    res = ga.advantages(r, offsets=offs, scale="batch", batch_std=0.5, out=out, decimals=3)
    assert res is out
    np.testing.assert_allclose(out, np.round(ga.drgrpo(r, offsets=offs) / 0.5, 3), atol=1e-6)


def test_batch_std_bad_input():
    r = [1.0, 2.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="scale='batch'"):
        ga.advantages(r, 2, batch_std=1.0)
    with pytest.raises(ValueError, match="scale='batch'"):
        ga.advantages(r, 2, scale="none", batch_std=1.0)
    for bad in (-1.0, float("inf")):
        with pytest.raises(ValueError, match="batch_std must be a number >= 0"):
            ga.advantages(r, 2, scale="batch", batch_std=bad)
    # NaN: an undefined batch std (e.g. BatchMoments.std of a batch poisoned under
    # nan="propagate"): the advantages it scales are NaN, as with a batch std the core computes
    assert np.isnan(ga.advantages(r, 2, scale="batch", batch_std=float("nan"))).all()
    with pytest.raises(TypeError, match="batch_std must be a number"):
        ga.advantages(r, 2, scale="batch", batch_std="1")
    with pytest.raises(TypeError, match="bool"):
        ga.advantages(r, 2, scale="batch", batch_std=True)
    # zero spread: exactly 0, as the core does for a batch without spread
    z = ga.advantages(r, 2, scale="batch", batch_std=0.0)
    assert z.tolist() == [0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(ga.advantages(r, 2, scale="batch", batch_std=0.0, eps=0.5), [-1, 1, -2, 2])
