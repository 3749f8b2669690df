"""Per-step diagnostics: within-group spread, zero-std groups, DAPO keep-mask, advantage quantiles."""

from __future__ import annotations

import numpy as np
import pytest

import groupadv as ga
from groupadv.diagnostics import diagnostics, keep_mask

R = np.array([0.2, 0.5, 0.8, 0.3, 0.7, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
OFFS = [0, 5, 8, 10, 11]  # spread, all-equal, all-equal, singleton


def test_spread_and_zero_std(backend_name):
    d = diagnostics(R, offsets=OFFS)
    s0 = R[:5].std()
    # groups with >= 2 rewards: [spread, 0, 0]
    assert d.mean_within_std == pytest.approx(s0 / 3, rel=1e-12)
    assert d.frac_zero_std == pytest.approx(2 / 3)
    assert d.n_groups == 4 and d.n_rewards == 11
    assert d.reward_mean == pytest.approx(R.mean(), rel=1e-12)
    assert d.keep.tolist() == [True] * 5 + [False] * 6
    assert d.frac_kept == pytest.approx(5 / 11)
    assert d.adv_quantiles == {}
    assert "adv_mean" not in d.as_dict()
    # agrees with GroupStats' own summary
    st = ga.group_stats(R, offsets=OFFS)
    assert d.mean_within_std == pytest.approx(st.mean_within_std)
    assert d.frac_zero_std == pytest.approx(st.frac_zero_std)
    d1 = diagnostics(R, offsets=OFFS, ddof=1)
    assert d1.mean_within_std == pytest.approx(R[:5].std(ddof=1) / 3, rel=1e-12)


def test_keep_mask_labels_in_input_order(backend_name):
    ids = ["b", "a", "b", "a", "c", "c"]
    r = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]  # b all-equal, a spread, c all-equal
    assert keep_mask(r, group_ids=ids).tolist() == [False, True, False, True, False, False]
    # DAPO filtering keeps exactly the rewards with non-zero group advantages
    adv = ga.grpo(r, group_ids=ids)
    assert np.array_equal(keep_mask(r, group_ids=ids), adv != 0)


def test_advantage_quantiles(backend_name):
    adv = ga.grpo(R, offsets=OFFS)
    q = (0.0, 0.1, 0.5, 0.9, 1.0)
    d = diagnostics(R, offsets=OFFS, advantages=adv, quantiles=q)
    np.testing.assert_allclose(list(d.adv_quantiles.values()), np.quantile(adv, q))
    assert list(d.adv_quantiles) == list(q)
    assert d.adv_mean == pytest.approx(adv.mean(), abs=1e-15)
    assert d.adv_std == pytest.approx(adv.std())
    assert d.adv_frac_zero == pytest.approx(np.mean(adv == 0))
    log = d.as_dict(prefix="adv/")
    assert log["adv/adv_q50"] == pytest.approx(np.median(adv))
    assert log["adv/adv_q10"] == pytest.approx(np.quantile(adv, 0.1))
    assert all(isinstance(v, float) for v in log.values())


def test_nonfinite_and_bad_input(backend_name):
    r = np.array([1.0, np.nan, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"rewards\[1\]"):
        diagnostics(r, 2)
    d = diagnostics(r, 2, nan="omit")
    assert d.frac_zero_std == 0.0 and d.keep.tolist() == [False, False, True, True]
    adv = np.array([0.0, np.nan, -1.0, 1.0])
    d = diagnostics(r, 2, nan="omit", advantages=adv)
    assert d.adv_frac_zero == pytest.approx(1 / 3)  # NaN advantages are left out
    with pytest.raises(ValueError, match="shape"):
        diagnostics([1.0, 2.0], 2, advantages=[1.0])
    with pytest.raises(ValueError, match="quantiles"):
        diagnostics([1.0, 2.0], 2, advantages=[1.0, 2.0], quantiles=[1.5])
    with pytest.raises(TypeError, match="advantages must be numbers"):
        diagnostics([1.0, 2.0], 2, advantages=["a", "b"])
    one = diagnostics([1.0, 2.0], 1)  # only singletons: nothing to average
    assert np.isnan(one.mean_within_std) and np.isnan(one.frac_zero_std) and one.frac_kept == 0.0
