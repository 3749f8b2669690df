"""Native and numpy backends give the same answers (and the same errors) on generated inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import groupadv as ga
from conftest import HAVE_NATIVE, on_backend

pytestmark = pytest.mark.skipif(not HAVE_NATIVE, reason="parity needs the compiled module")

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    sizes = draw(st.lists(st.integers(0, 9), min_size=1, max_size=12))
    if sum(sizes) == 0:
        sizes[0] = 1
    n = sum(sizes)
    magnitude = draw(st.sampled_from([1.0, 1e-3, 1e4]))
    base = draw(
        st.lists(st.sampled_from([0.0, 1.0, 0.5, -1.0, 0.1, 0.25, 2.0]), min_size=n, max_size=n)
        | st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=n, max_size=n)
    )
    x = (np.array(base) * magnitude).astype(dtype)
    if draw(st.booleans()):
        for i in draw(st.lists(st.integers(0, n - 1), max_size=3)):
            x[i] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    layout = draw(st.sampled_from(["offsets", "ids", "uniform"]))
    if layout == "offsets":
        kw = {"offsets": np.cumsum([0] + sizes)}
    elif layout == "ids":
        codes = np.repeat(np.arange(len(sizes)), sizes)
        order = np.array(draw(st.permutations(range(n))))
        x = x[order]
        kw = {"group_ids": [f"g{c}" for c in codes[order]]}
    else:
        g = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
        kw = {"group_size": g}
    opts = {
        "center": draw(st.sampled_from(["mean", "loo", "none"])),
        "scale": draw(st.sampled_from(["group", "batch", "batch_residual", "none"])),
        "ddof": draw(st.sampled_from([0, 1])),
        "eps": draw(st.sampled_from([0.0, 1e-6, 1e-4])),
        "singleton": draw(st.sampled_from(["zero", "raw", "error"])),
        "nan": draw(st.sampled_from(["raise", "propagate", "omit"])),
    }
    return x, kw, opts, magnitude


def run_both(fn, *args, **kwargs):
    results = []
    for name in ("native", "numpy"):
        try:
            results.append(("ok", on_backend(name, fn, *args, **kwargs)))
        except (ValueError, TypeError) as e:
            results.append(("err", f"{type(e).__name__}: {e}"))
    return results


@SETTINGS
@given(batches())
def test_advantages_parity(case):
    x, kw, opts, magnitude = case
    (sa, a), (sb, b) = run_both(ga.advantages, x, **kw, **opts)
    assert sa == sb, (a, b)
    if sa == "err":
        assert a == b
        return
    assert a.dtype == b.dtype == x.dtype
    unscaled = opts["scale"] == "none"
    if x.dtype == np.float32:
        atol = 1e-6 * (magnitude if unscaled else 1.0)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=atol, equal_nan=True)
    else:
        atol = 1e-12 * (magnitude if unscaled else 1.0)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=atol, equal_nan=True)


@SETTINGS
@given(batches())
def test_group_stats_parity(case):
    x, kw, opts, magnitude = case
    (sa, a), (sb, b) = run_both(ga.group_stats, x, **kw, ddof=opts["ddof"], nan=opts["nan"])
    assert sa == sb, (a, b)
    if sa == "err":
        assert a == b
        return
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12, atol=1e-12 * magnitude, equal_nan=True)
    np.testing.assert_allclose(a.std, b.std, rtol=1e-9, atol=1e-12 * magnitude, equal_nan=True)
    assert a.labels == b.labels


@SETTINGS
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40))
def test_grouping_parity(ids):
    ga_native = on_backend("native", ga.make_groups, group_ids=np.array(ids))
    ga_numpy = on_backend("numpy", ga.make_groups, group_ids=np.array(ids))
    assert ga_native.kind == ga_numpy.kind
    np.testing.assert_array_equal(ga_native.codes(), ga_numpy.codes())
    np.testing.assert_array_equal(ga_native.sizes(), ga_numpy.sizes())
    np.testing.assert_array_equal(ga_native.first_index, ga_numpy.first_index)


def test_large_parallel_parity():
    rng = np.random.default_rng(7)
    n = 1 << 18
    x = rng.integers(0, 2, n).astype(np.float32)
    ids = rng.integers(0, n // 16, n)
    for kw in ({"group_size": 16}, {"group_ids": ids}):
        for scale in ("group", "batch", "batch_residual"):
            (sa, a), (sb, b) = run_both(ga.grpo, x, scale=scale, **kw)
            assert sa == sb == "ok"
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
