"""Regressions of the numpy and torch twins in extreme regimes, each a case the differential
fuzz (test_fuzz_exact.py) found, checked against the same exact reference (exact_ref.py) on the
active backend and on the torch device path (CPU tensors through the device code).

* 1/denominator overflows (a subnormal batch std or batch_std=, a subnormal eps on an
  all-equal group): the core lifts the residuals by 2^60 first; the twins gave NaN or raised.
* a record without spread beside subnormal spreads: m2 * (scale / big)**2 was 0 * inf = NaN.
* a group of tiny spread (lifted by p ~ 2^514) scaled by a batch std near 1e154: the lifted
  denominator overflowed and the advantage became 0.
* an overflowed group m2 (inf) rescaled to a common scale: inf * 0 = NaN instead of the batch
  overflow error.
* a batch whose rewards are all omitted (torch): an IndexError instead of zeros.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import groupadv as ga
from exact_ref import compare, reference

BASE = dict(center="mean", scale="group", ddof=0, eps=0.0, singleton="zero", nan="raise")

# (rewards, dtype, group codes, options)
CASES = [
    ([1.0000000000000004e-300, 9.999999999999997e-301], np.float64, [0, 1],
     dict(center="none", scale="batch", singleton="raw", nan="propagate")),
    ([1.0000000000000004e-300, 1.0000000000000004e-300, 9.999999999999999e-301, 9.999999999999999e-301,
      9.999999999999997e-301, 1.0000000000000002e-300, 9.999999999999997e-301, 9.999999999999997e-301,
      9.999999999999997e-301], np.float64, [0, 0, 0, 1, 1, 1, 2, 2, 2],
     dict(scale="batch", nan="propagate")),
    ([0.0, -5e-324, 3e-300], np.float64, [0, 1, 1],
     dict(center="loo", scale="batch", ddof=1, singleton="raw", nan="propagate")),
    ([math.inf, 1e-320, 7.37326031583e-311, 2.2250738585072014e-308, math.nan, 5e-324], np.float64,
     [0, 1, 2, 2, 3, 3], dict(center="none", scale="batch_residual", ddof=1, nan="omit")),
    ([0.1, 0.1, 0.1], np.float64, [0, 0, 0], dict(eps=5e-324)),
    ([-100000.0] * 5, np.float32, [0] * 5, dict(eps=5e-324, singleton="raw", nan="omit")),
    ([1e-154, 5.280050999682486e-155, 1e154, 9.355265810515543e153], np.float64, [0, 0, 1, 2],
     dict(scale="batch", ddof=1, eps=1e-8)),
    ([math.inf], np.float32, [0], dict(center="none", scale="batch", nan="omit")),
    ([math.inf, math.nan], np.float64, [0, 0], dict(center="loo", scale="batch", eps=1e-8, nan="omit")),
]

# Finite rewards whose group deviations overflow float64 (the README's overflow zone).
OVERFLOWING = [
    ([5e-324, -1.7e308, 5e-324, 1e-310, 0.0, 1.0, 0.8587948239335089, 1e-200, 1e-200, 1.5e308,
      7.960733017459915e-155, 2.2250738585072014e-308, 1e-310, -1.7e308, 1e-310, -1e-300, 1.7e308, 2e300],
     [0, 0, 1, 2, 3, 2, 4, 0, 0, 0, 1, 2, 2, 1, 0, 1, 0, 0],
     dict(scale="batch_residual", eps=1e-8, nan="propagate")),
]


def _offsets_or_ids(codes):
    if list(codes) == sorted(codes):
        return {"offsets": np.searchsorted(codes, np.arange(max(codes) + 2))}
    return {"group_ids": np.asarray(codes)}


def _torch_device(x, kw, opts):
    torch = pytest.importorskip("torch")
    from groupadv import _torch

    t = torch.from_numpy(x.copy())
    codes, k = _torch.codes_on(t.device, len(x), **kw)
    return _torch.advantages(t, codes=codes, n_groups=k, **opts).numpy()


def _api(x, kw, opts):
    return ga.advantages(x, **kw, **opts)


@pytest.mark.parametrize("path", ["api", "torch-device"])
@pytest.mark.parametrize("i", range(len(CASES)))
def test_extreme_case_matches_exact_reference(i, path):
    values, dtype, codes, opts = CASES[i]
    opts = {**BASE, **opts}
    x = np.array(values, dtype=dtype)
    exp = reference([float(v) for v in x], codes, max(codes) + 1, out_dtype=dtype, **opts)
    assert not exp.raises and not exp.may_raise
    got = (_api if path == "api" else _torch_device)(x, _offsets_or_ids(codes), opts)
    assert compare(got, exp) is None, compare(got, exp)


@pytest.mark.parametrize("path", ["api", "torch-device"])
def test_extreme_batch_std_passed_in(path):
    """batch_std= of the exact (subnormal) batch std: the same advantages."""
    x = np.array([1.0000000000000004e-300, 9.999999999999997e-301])
    opts = {**BASE, **dict(center="none", scale="batch", singleton="raw", nan="propagate")}
    exp = reference(x.tolist(), [0, 1], 2, out_dtype=np.float64, **opts)
    bstd = float(exp.batch_std)
    assert 0 < bstd < 1e-308
    kw = {"group_ids": [0, 1]}
    if path == "api":
        got = ga.advantages(x, **kw, **opts, batch_std=bstd)
    else:
        got = _torch_device(x, kw, {**opts, "batch_std": bstd})
    assert compare(got, exp) is None, compare(got, exp)


@pytest.mark.parametrize("path", ["api", "torch-device"])
@pytest.mark.parametrize("i", range(len(OVERFLOWING)))
def test_overflowing_batch_std_is_the_overflow_error_or_exact(i, path):
    """The README lets this zone raise; what it must not do is return NaN or inf."""
    values, codes, opts = OVERFLOWING[i]
    opts = {**BASE, **opts}
    x = np.array(values)
    exp = reference(values, codes, max(codes) + 1, out_dtype=np.float64, **opts)
    assert exp.may_raise and not exp.raises
    try:
        got = (_api if path == "api" else _torch_device)(x, {"group_ids": np.asarray(codes)}, opts)
    except ValueError as e:
        assert "overflow" in str(e)
        return
    assert compare(got, exp) is None, compare(got, exp)
