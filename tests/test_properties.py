"""Hypothesis properties of the Python API on the active backend: no crash for any input
(only ValueError/TypeError), and the invariants of group-relative advantages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import groupadv as ga
from conftest import HAVE_NATIVE, on_backend

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OPTIONS = st.fixed_dictionaries(
    {
        "center": st.sampled_from(["mean", "loo", "none"]),
        "scale": st.sampled_from(["group", "batch", "batch_residual", "none"]),
        "ddof": st.sampled_from([0, 1]),
        "eps": st.sampled_from([0.0, 1e-8, 1e-6, 0.1]),
        "singleton": st.sampled_from(["zero", "raw", "error"]),
        "nan": st.sampled_from(["raise", "propagate", "omit"]),
    }
)


@st.composite
def layouts(draw, min_size=0, max_groups=10, max_size=8):
    """Group sizes plus a layout: offsets, uniform, contiguous ids or shuffled ids.
    Returns (n, sizes, kwargs, order) where `order[j]` is the grouped position of row j."""
    kind = draw(st.sampled_from(["offsets", "uniform", "ids", "shuffled"]))
    if kind == "uniform":
        g = draw(st.integers(max(1, min_size), max_size))
        sizes = [g] * draw(st.integers(1, max_groups))
    else:
        size = st.integers(max(1, min_size), max_size)
        sizes = draw(st.lists(size | st.just(0) if kind == "offsets" else size, min_size=1, max_size=max_groups))
        if sum(sizes) == 0:
            sizes[-1] = max(1, min_size)
    n = sum(sizes)
    codes = np.repeat(np.arange(len(sizes)), sizes)
    order = np.arange(n)
    if kind == "offsets":
        kw = {"offsets": np.cumsum([0] + sizes)}
    elif kind == "uniform":
        kw = {"group_size": sizes[0]}
    else:
        if kind == "shuffled":
            order = np.array(draw(st.permutations(range(n))), dtype=np.int64)
        labels = draw(st.sampled_from(["int", "str", "big"]))
        c = codes[order]
        kw = {"group_ids": c * 7 - 3 if labels == "int" else [f"uid-{k}" for k in c] if labels == "str" else c.astype(np.uint64) + np.uint64(2**63)}
    return n, sizes, kw, order


def _parts(values, kw):
    """The values of each group, in the API's group order (labels: order of first appearance),
    computed independently of groupadv."""
    values = np.asarray(values)
    if "group_size" in kw:
        return list(values.reshape(-1, kw["group_size"]))
    if "offsets" in kw:
        o = kw["offsets"]
        return [values[a:b] for a, b in zip(o[:-1], o[1:])]
    ids = np.asarray(kw["group_ids"])
    _, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    return [values[inv.reshape(-1) == k] for k in np.argsort(first)]


def _rows(draw, n, elements):
    return np.array(draw(st.lists(elements, min_size=n, max_size=n)), dtype=np.float64)


ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
MODERATE = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-6 else v)
TIES = st.sampled_from([0.0, 1.0, 0.5, -1.0, 0.1, 0.3])


@SETTINGS
@given(data=st.data(), opts=OPTIONS, dtype=st.sampled_from([np.float32, np.float64]))
def test_no_crash_for_any_floats(data, opts, dtype):
    n, sizes, kw, order = data.draw(layouts())
    with np.errstate(all="ignore"):
        x = _rows(data.draw, n, ANY_FLOAT).astype(dtype)
    try:
        a = ga.advantages(x, **kw, **opts)
    except (ValueError, TypeError):
        return
    assert a.shape == x.shape and a.dtype == x.dtype
    finite = np.isfinite(x)
    if opts["nan"] == "omit":
        assert np.all(a[~finite] == 0.0)
    else:
        # finite rewards whose groups hold no non-finite reward get finite advantages
        # (extreme magnitudes included; an overflow would have been a ValueError)
        codes = ga.make_groups(n, **kw).codes()
        poisoned = np.zeros(len(sizes), bool)
        poisoned[codes[~finite]] = True
        if opts["nan"] == "propagate" and opts["scale"].startswith("batch") and poisoned.any():
            return
        unbounded = (
            (opts["scale"].startswith("batch") and n <= opts["ddof"])  # undefined batch std
            or opts["singleton"] == "raw"  # a raw reward over a (batch) std + eps
            or (opts["scale"] == "none" and np.any(np.abs(x[finite]) > 1e300))  # r - mean beyond f64
            or np.any(np.abs(x[finite]) > 1e307)  # beyond the documented range (see test_bad_inputs)
        )
        if not unbounded:
            assert np.all(np.isfinite(a[~poisoned[codes]])), (x, a)
    st_ = ga.group_stats(x, **kw, ddof=opts["ddof"], nan="omit" if opts["nan"] == "raise" else opts["nan"])
    assert st_.n_groups == len(sizes) and st_.count.sum() <= n


@SETTINGS
@given(data=st.data(), opts=OPTIONS, dtype=st.sampled_from([np.float32, np.float64]))
def test_finite_moderate_rewards_give_finite_advantages(data, opts, dtype):
    n, sizes, kw, order = data.draw(layouts())
    x = _rows(data.draw, n, MODERATE | TIES).astype(dtype)
    opts = {**opts, "nan": "raise"}
    # A batch std of a single reward with ddof=1 is undefined (NaN), by design.
    assume(not (opts["scale"].startswith("batch") and n <= opts["ddof"]))
    try:
        a = ga.advantages(x, **kw, **opts)
    except ValueError as e:
        assert opts["singleton"] == "error" and "single reward" in str(e)
        return
    assert np.all(np.isfinite(a)), (x, a)


@SETTINGS
@given(data=st.data(), opts=OPTIONS, value=st.floats(-1e300, 1e300, allow_nan=False) | TIES,
       dtype=st.sampled_from([np.float32, np.float64]))
def test_all_equal_groups_are_exactly_zero(data, opts, value, dtype):
    n, sizes, kw, order = data.draw(layouts(min_size=2))
    assume(opts["center"] != "none")
    with np.errstate(over="ignore"):
        x = np.full(n, value, dtype=dtype)
    assume(np.isfinite(x).all())
    a = ga.advantages(x, **kw, **{**opts, "nan": "raise"})
    assert np.all(a == 0.0), a


@SETTINGS
@given(data=st.data(), scale=st.sampled_from(["group", "batch", "batch_residual", "none"]),
       ddof=st.sampled_from([0, 1]))
def test_group_means_of_centred_advantages_are_zero(data, scale, ddof):
    n, sizes, kw, order = data.draw(layouts(min_size=2))
    x = _rows(data.draw, n, MODERATE | TIES)
    a = ga.advantages(x, **kw, center="mean", scale=scale, ddof=ddof, eps=1e-6)
    tol = 1e-9 * max(1.0, float(np.abs(a).max()))
    for part in _parts(a, kw):
        if len(part):
            assert abs(part.mean()) <= tol


@SETTINGS
@given(data=st.data(), c=st.sampled_from([0.5, 2.0, 3.0, 1e3, 1e-3]), shift=st.sampled_from([0.0, 1.0, -7.5, 100.0]),
       scale=st.sampled_from(["group", "batch", "batch_residual"]))
def test_scale_and_shift_invariance(data, c, shift, scale):
    n, sizes, kw, order = data.draw(layouts(min_size=2))
    x = _rows(data.draw, n, st.floats(-10, 10, allow_nan=False) | TIES)
    a = ga.advantages(x, **kw, scale=scale)
    b = ga.advantages(x * c + shift, **kw, scale=scale)
    # groups whose spread is lost to rounding by the shift are excluded
    spread = np.array([np.ptp(p) if len(p) else 0.0 for p in _parts(x, kw)])
    assume(np.all((spread == 0) | (spread > 1e-6)))
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    d = ga.drgrpo(x, **kw)
    np.testing.assert_allclose(ga.drgrpo(x * c, **kw), c * d, rtol=1e-9, atol=1e-9 * c)


@SETTINGS
@given(data=st.data(), opts=OPTIONS)
def test_permuting_rows_permutes_advantages(data, opts):
    n, sizes, kw, order = data.draw(layouts())
    x = _rows(data.draw, n, MODERATE | TIES)
    codes = ga.make_groups(n, **kw).codes()
    perm = np.array(data.draw(st.permutations(range(n))), dtype=np.int64)
    opts = {**opts, "nan": "raise", "singleton": data.draw(st.sampled_from(["zero", "raw"]))}
    a = ga.advantages(x, group_ids=codes, **opts)
    b = ga.advantages(x[perm], group_ids=codes[perm], **opts)
    # "up to rounding": the group mean is taken relative to the group's first reward, which the
    # permutation changes, so unscaled advantages (scale="none") differ by rounding of the rewards'
    # magnitude (up to 1e6 here), not of the advantage
    atol = 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0)))
    np.testing.assert_allclose(b, a[perm], rtol=1e-12, atol=atol)
    # and the labelled layout gives what the original layout gives
    np.testing.assert_allclose(ga.advantages(x, **kw, **opts), a, rtol=1e-12, atol=atol)


@SETTINGS
@given(data=st.data())
def test_rloo_is_scaled_drgrpo(data):
    n, sizes, kw, order = data.draw(layouts(min_size=2))
    x = _rows(data.draw, n, MODERATE | TIES)
    k = ga.make_groups(n, **kw).sizes()[ga.make_groups(n, **kw).codes()].astype(float)
    np.testing.assert_allclose(ga.rloo(x, **kw), k / (k - 1) * ga.drgrpo(x, **kw), rtol=1e-12, atol=1e-9)


@SETTINGS
@given(data=st.data(), ddof=st.sampled_from([0, 1]))
def test_group_stats_match_numpy(data, ddof):
    n, sizes, kw, order = data.draw(layouts())
    x = _rows(data.draw, n, MODERATE | TIES)
    s = ga.group_stats(x, **kw, ddof=ddof)
    for g, part in enumerate(_parts(x, kw)):
        assert s.count[g] == len(part)
        if len(part):
            assert s.mean[g] == pytest.approx(part.mean(), rel=1e-12, abs=1e-9)
        if len(part) > ddof:
            assert s.std[g] == pytest.approx(part.std(ddof=ddof), rel=1e-9, abs=1e-9)
        else:
            assert np.isnan(s.std[g])


@pytest.mark.skipif(not HAVE_NATIVE, reason="parity needs the compiled module")
@SETTINGS
@given(data=st.data(), opts=OPTIONS, dtype=st.sampled_from([np.float32, np.float64]))
def test_native_equals_numpy_on_any_floats(data, opts, dtype):
    n, sizes, kw, order = data.draw(layouts())
    with np.errstate(all="ignore"):
        x = _rows(data.draw, n, ANY_FLOAT | MODERATE | TIES).astype(dtype)
    out = []
    for name in ("native", "numpy"):
        try:
            out.append(on_backend(name, ga.advantages, x, **kw, **opts))
        except (ValueError, TypeError) as e:
            out.append(type(e))
    a, b = out
    if isinstance(a, type) or isinstance(b, type):
        assert a == b
        return
    fin = np.isfinite(a) & np.isfinite(b)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    tol = 1e-5 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(a[fin], b[fin], rtol=tol, atol=tol)
