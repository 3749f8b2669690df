"""ga.group_moments / ga.GroupMoments (the core's moments stage exposed), advantages(moments=),
and the guarded std everywhere a batch std is computed (issue 10 regressions)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import groupadv as ga
from groupadv.moments import BatchMoments, Moments

OVERFLOW = "overflow"


def _batch(seed=0, n_groups=30, size=6):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=n_groups * size)
    ids = rng.permutation(np.repeat(np.arange(n_groups), size))
    r[ids == 3] = 0.25  # an all-equal group
    return r, ids


def test_group_moments_definition(backend_name):
    r, ids = _batch()
    gm = ga.group_moments(r, group_ids=ids)
    assert isinstance(gm, ga.GroupMoments) and gm.n_groups == 30
    st = ga.group_stats(r, group_ids=ids)
    np.testing.assert_array_equal(gm.count, st.count)
    np.testing.assert_allclose(gm.mean, st.mean, rtol=1e-13)
    np.testing.assert_allclose(gm.std(0), st.std, rtol=1e-12)
    for j, lab in enumerate(st.labels):
        x = r[ids == lab]
        np.testing.assert_allclose(gm.m2[j] * gm.scale[j] ** 2, np.sum((x - x.mean()) ** 2), rtol=1e-12, atol=1e-15)
    j = st.labels.tolist().index(3)  # the all-equal group: M2 exactly 0, mean exactly the value
    assert gm.mean[j] == 0.25 and gm.m2[j] == 0.0


def test_group_moments_is_frozen_and_picklable(backend_name):
    gm = ga.group_moments([1.0, 2.0, 4.0, 4.0], 2)
    assert pickle.loads(pickle.dumps(gm)) == gm
    with pytest.raises(AttributeError):
        gm.count = None  # type: ignore[misc]


def test_merge_of_batches_equals_whole(backend_name):
    r, ids = _batch(seed=2)
    whole = ga.group_moments(r, group_ids=ids)
    labels = list(dict.fromkeys(ids.tolist()))
    code = {lab: j for j, lab in enumerate(labels)}
    acc = ga.GroupMoments.empty()
    for part in np.array_split(np.arange(len(r)), 4):  # stream in 4 chunks, labels numbered as seen
        gm = ga.group_moments(r[part], group_ids=ids[part])
        seen = list(dict.fromkeys(ids[part].tolist()))
        acc = acc.merge_at(np.array([code[lab] for lab in seen]), gm)
    np.testing.assert_array_equal(acc.count, whole.count)
    np.testing.assert_allclose(acc.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(acc.std(1), whole.std(1), rtol=1e-10)
    # advantages with the merged moments = advantages of the whole batch
    for scale in ("group", "batch", "batch_residual"):
        want = ga.advantages(r, group_ids=ids, scale=scale, ddof=1)
        got = ga.advantages(r, group_ids=ids, scale=scale, ddof=1, moments=acc)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # merge of equal-size records, take, batch
    np.testing.assert_allclose(whole.take([2, 0]).mean, whole.mean[[2, 0]])
    twice = whole.merge(whole)
    np.testing.assert_allclose(twice.std(0), whole.std(0), rtol=1e-12)
    np.testing.assert_allclose(whole.batch("batch").std(0), r.std(), rtol=1e-12)
    with pytest.raises(ValueError, match="merge_at"):
        whole.merge(whole.take([0]))
    with pytest.raises(ValueError, match="groups"):
        ga.advantages(r, group_ids=ids, moments=whole.take([0, 1]))
    with pytest.raises(TypeError, match="GroupMoments"):
        ga.advantages(r, group_ids=ids, moments=(1, 2, 3, 4))


def test_weighted_group_moments(backend_name):
    r = np.array([1.0, 2.0, 3.0, 10.0])
    w = np.array([1.0, 3.0, 0.0, 2.0])
    gm = ga.group_moments(r, 2, weights=w)
    np.testing.assert_allclose(gm.count, [4.0, 2.0])
    np.testing.assert_allclose(gm.mean, [1.75, 10.0])
    np.testing.assert_allclose(gm.m2 * gm.scale**2, [0.75, 0.0])


@pytest.mark.parametrize("tiny", [1e-200, 1e200])
@pytest.mark.parametrize("scale", ["batch", "batch_residual"])
def test_pipeline_batch_scale_is_guarded(backend_name, tiny, scale):
    """Issue 10: normalize(..., scale="batch") gave exact zeros around 1e-200 and inf around
    1e200 (unguarded BatchMoments.std); the core gives the +-0.447-style answer."""
    base = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 12.0])
    r = base * tiny
    want = ga.grpo(base, 3, scale=scale)
    got = ga.pipeline.normalize(r, 3, scale=scale).advantages
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all(np.isfinite(got)) and np.any(np.abs(got) > 0.4)
    np.testing.assert_allclose(ga.grpo(r, 3, scale=scale), want, rtol=1e-12)
    bm = BatchMoments.from_rewards(r, 3)
    assert bm.std(scale) == pytest.approx(BatchMoments.from_rewards(base, 3).std(scale) * tiny, rel=1e-12)


def test_moments_std_is_guarded(backend_name):
    for tiny in (1e-200, 1e200, 5e-324):
        m = Moments.from_values([0.0, tiny])
        assert m.std() == pytest.approx(tiny / 2, rel=1e-12)
        assert m.merge(Moments.from_values([tiny, 0.0])).std() == pytest.approx(tiny / 2, rel=1e-12)


def test_grpo_of_subnormals(backend_name):
    """Issue 10: grpo([5e-324, 1e-323], 2) gave [0, 1]; the answer is [-1, 1]."""
    assert ga.grpo([5e-324, 1e-323], 2).tolist() == [-1.0, 1.0]


def test_batch_std_overflow_raises(backend_name):
    """Issue 10: batch_std=1e-300 with float32 rewards returned +-inf; it is the overflow error."""
    r = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)
    with pytest.raises(ValueError, match=OVERFLOW):
        ga.advantages(r, 2, scale="batch", batch_std=1e-300)
    ok = ga.advantages(r, 2, scale="batch", batch_std=0.5)
    assert ok.dtype == np.float32 and ok.tolist() == [-1.0, 1.0, -1.0, 1.0]


def test_native_batch_overflow_raises_like_numpy(backend_name):
    """Issue 10: the native backend returned eight NaNs under nan="raise"."""
    r = [1.7e308, 1.7e308, -1.7e308, -1.7e308, 1.7e308, 1.7e308, 1, 2]
    with pytest.raises(ValueError, match=OVERFLOW):
        ga.grpo(r, 2, scale="batch")
