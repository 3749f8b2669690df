"""Differential fuzz: groupadv.advantages on the active backend, and the torch device path
(groupadv._torch.advantages, run on CPU tensors), against an exact reference in fractions
(tests/exact_ref.py) on thousands of seeded random cases.

Each case draws a layout (uniform, offsets with empty groups, contiguous or interleaved labels),
rewards from one regime (ties, ordinary floats, extreme magnitudes near 1e+-300 / subnormals /
+-1.7e308, near-ties at one ulp) with optional NaN/inf, a dtype, and every option at random. The
result must equal the exact one up to float64 rounding of the statistics (tolerance in
exact_ref.py), be exactly 0.0 where the contract says so, NaN exactly where it says so, and raise
ValueError exactly where it says raise (a ValueError is also accepted in the "sums beyond ~1e307"
zone that the README leaves to the implementation).

GROUPADV_FUZZ_SCALE=k multiplies the number of cases (default 1: ~2,400 cases per run).
"""

from __future__ import annotations

import math
import os
import zlib
from fractions import Fraction

import numpy as np
import pytest

import groupadv as ga
from exact_ref import Expected, compare, reference, reference_group_stats

SCALE = float(os.environ.get("GROUPADV_FUZZ_SCALE", "1"))
CASES = {"ties": 300, "normal": 300, "extreme": 400, "near": 200}

F64_POOL = [
    0.0, -0.0, 1.0, -1.0, 1e-300, -1e-300, 3e-300, 1e300, -1e300, 2e300, 5e-324, -5e-324, 1e-320,
    2.2250738585072014e-308, 1e-310, 1.7e308, -1.7e308, 1.5e308, 8e307, 1e154, 1e-154, 1e200, 1e-200,
]
F32_POOL = [
    0.0, -0.0, 1.0, -1.0, 1e-38, -1e-38, 1e-45, 1.4e-45, -1.4e-45, 1e-40, 1.1754944e-38, 3.4e38, -3.4e38,
    3e38, 1.7e38, 1e30, -1e30, 1e-30,
]
CENTERS = ["mean", "loo", "none"]
SCALES = ["group", "batch", "batch_residual", "none"]
EPS = [0.0, 0.0, 0.0, 1e-12, 1e-8, 1e-6, 0.1, 1.0, 1e-300, 5e-324]


def _layout(rng, n_max=10):
    """(kind, n, codes, kwargs for groupadv): codes are this test's own group index per reward."""
    kind = rng.choice(["uniform", "offsets", "labels", "labels"])
    if kind == "uniform":
        gs, k = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        sizes = [gs] * k
    else:
        k = int(rng.integers(1, 7))
        sizes = [int(s) for s in rng.choice([0, 1, 1, 2, 2, 3, 4, 5, 8], size=k)]
        if kind != "offsets":
            sizes = [max(1, s) for s in sizes]
        if sum(sizes) == 0:
            sizes[-1] = 1
    codes = np.repeat(np.arange(len(sizes)), sizes)
    n = len(codes)
    if kind == "uniform":
        kw = {"group_size": sizes[0]}
    elif kind == "offsets":
        kw = {"offsets": np.cumsum([0] + sizes)}
    else:
        if rng.random() < 0.7:
            codes = codes[rng.permutation(n)]
        style = rng.choice(["int", "str", "u64", "float", "obj"])
        if style == "int":
            kw = {"group_ids": codes * 7 - 3}
        elif style == "str":
            kw = {"group_ids": [f"uid-{c}" for c in codes]}
        elif style == "u64":
            kw = {"group_ids": codes.astype(np.uint64) + np.uint64(2**63)}
        elif style == "float":
            kw = {"group_ids": codes * 0.5 - 1.0}
        else:
            kw = {"group_ids": [("g", int(c)) if c % 2 else int(c) for c in codes]}
    return kind, n, codes.tolist(), len(sizes), kw


def _values(rng, n, regime, dtype):
    f32 = dtype == np.float32
    if regime == "ties":
        v = rng.integers(-2, 3, size=n).astype(np.float64) * rng.choice([1.0, 0.5, 0.1, 1e-7])
    elif regime == "normal":
        v = rng.normal(size=n) * 10.0 ** int(rng.integers(-6, 7)) + rng.choice([0.0, 1.0, 1e3, -1e5])
    elif regime == "extreme":
        pool = F32_POOL if f32 else F64_POOL
        v = np.array([pool[j] for j in rng.integers(0, len(pool), size=n)], dtype=np.float64)
        jitter = rng.random(n) < 0.3
        v[jitter] *= 1.0 - 0.5 * rng.random(jitter.sum())
    else:  # near: one base, spreads of a few ulps
        base = rng.choice([1.0, 0.1, 1e10, -3e5, 1e-300, 1e300] if not f32 else [1.0, 0.1, 1e10, -3e5, 1e-30, 1e30])
        base = dtype(base)
        steps = rng.integers(-2, 3, size=n)
        v = np.array([base] * n, dtype=dtype)
        for i, s in enumerate(steps):
            for _ in range(abs(int(s))):
                v[i] = np.nextafter(v[i], dtype(np.inf) if s > 0 else dtype(-np.inf))
        v = v.astype(np.float64)
    x = v.astype(dtype)
    if rng.random() < 0.3:  # non-finite rewards, for every nan policy
        bad = rng.random(n) < 0.25
        x[bad] = rng.choice([np.nan, np.inf, -np.inf], size=int(bad.sum())).astype(dtype)
    return x


def _case(seed_key, regime):
    rng = np.random.default_rng(seed_key)
    dtype = np.float32 if rng.random() < 0.4 else np.float64
    kind, n, codes, k, kw = _layout(rng)
    x = _values(rng, n, regime, dtype)
    opts = {
        "center": str(rng.choice(CENTERS)),
        "scale": str(rng.choice(SCALES)),
        "ddof": int(rng.integers(0, 2)),
        "eps": float(rng.choice(EPS)),
        "singleton": str(rng.choice(["zero", "zero", "raw", "error"])),
        "nan": str(rng.choice(["raise", "propagate", "omit", "omit"])),
    }
    exp = reference([float(v) for v in x], codes, k, out_dtype=dtype, **opts)
    return x, kw, opts, exp, kind


def _check_one(call, x, kw, opts, exp: Expected):
    """None if the call keeps the contract, else a description."""
    try:
        got = call(x, kw, opts)
    except ValueError as e:
        if exp.raises or exp.may_raise:
            return None
        return f"raised ValueError({e}) but the exact result exists"
    except Exception as e:  # noqa: BLE001 - any other type is the finding
        return f"raised {type(e).__name__}({e}); contract: {'ValueError' if exp.raises else 'a result'}"
    if exp.raises:
        return f"returned {got!r} but the contract says ValueError: {exp.why}"
    if got.dtype != x.dtype or got.shape != x.shape:
        return f"returned dtype {got.dtype} shape {got.shape}"
    miss = compare(got, exp)
    if miss and exp.may_raise and any(not math.isfinite(v) for v in got.tolist()):
        miss += f" (in the overflow zone: {exp.may_raise_why}; a ValueError would be allowed, not inf/NaN)"
    return miss


def _api(x, kw, opts):
    return ga.advantages(x, **kw, **opts)


def _api_odd_memory(x, kw, opts):
    """The same call on a strided (or big-endian) view, into a garbage-filled out= buffer."""
    n = len(x)
    seed = int(np.abs(np.nan_to_num(x.view(np.uint8))).sum()) % 3
    if seed == 0:
        base = np.full(2 * n, 7.0, dtype=x.dtype)
        base[::2] = x
        xv = base[::2]
    elif seed == 1:
        xv = x.astype(x.dtype.newbyteorder(">"))
    else:
        xv = x[::-1].copy()[::-1]
    out = np.full(n, np.nan, dtype=x.dtype)
    got = ga.advantages(xv, **kw, **opts, out=out, num_threads=2)
    assert got is out
    assert np.array_equal(np.asarray(xv, dtype=x.dtype), x, equal_nan=True), "input modified"
    return got


def _api_batch_std(x, kw, opts):
    """scale="batch"/"batch_residual" with the (rounded) exact batch std passed in as
    batch_std=: the same advantages, up to one more rounding."""
    return ga.advantages(x, **kw, **opts, batch_std=_BATCH_STD[0])


_BATCH_STD = [None]


def _torch_device(x, kw, opts):
    torch = pytest.importorskip("torch")
    from groupadv import _torch

    t = torch.from_numpy(x.copy())
    layout = dict(kw)
    if "group_size" in layout:
        layout["group_size"] = int(layout["group_size"])
    codes, k = _torch.codes_on(t.device, len(x), **layout)
    return _torch.advantages(t, codes=codes, n_groups=k, **opts).numpy()


def _run(path, regime, call, n_cases, label=None):
    """The same cases for both backends (the seed names the path "api", not the backend)."""
    failures = []
    tried = {"raise": 0, "ok": 0, "may_raise": 0}
    for i in range(n_cases):
        key = [zlib.crc32(f"{path}/{regime}".encode()), i]
        x, kw, opts, exp, kind = _case(key, regime)
        tried["raise" if exp.raises else "may_raise" if exp.may_raise else "ok"] += 1
        miss = _check_one(call, x, kw, opts, exp)
        if miss:
            failures.append(f"case {key}: x={x.tolist()!r} {x.dtype} {kind} {kw} {opts}\n    -> {miss}")
    print(f"fuzz {label or path}/{regime} ({ga.backend()}): {n_cases} cases {tried}, {len(failures)} contract misses")
    assert not failures, f"{len(failures)}/{n_cases} cases break the contract; first ones:\n" + "\n".join(failures[:6])


LARGE_CASES = 3


def _large_case(i):
    """Above the serial threshold (2^17 rewards): the threaded paths of the native core."""
    rng = np.random.default_rng([0x1A26E, i])
    dtype = np.float32 if i % 2 else np.float64
    n = int(rng.integers(140_000, 200_000)) // 8 * 8
    kind = ["uniform", "offsets", "labels"][i % 3]
    if kind == "uniform":
        codes = np.repeat(np.arange(n // 8), 8)
        kw = {"group_size": 8}
    else:
        sizes = rng.integers(0 if kind == "offsets" else 1, 12, size=n)
        cut = np.cumsum(sizes)
        sizes = sizes[: np.searchsorted(cut, n)]
        sizes = np.append(sizes, n - sizes.sum())
        codes = np.repeat(np.arange(len(sizes)), sizes)
        if kind == "offsets":
            kw = {"offsets": np.concatenate(([0], np.cumsum(sizes)))}
        else:
            codes = codes[rng.permutation(n)]
            kw = {"group_ids": codes * 3 + 1}
    x = (rng.integers(0, 5, n) * 0.25 + (rng.normal(size=n) if i % 3 == 2 else 0.0)).astype(dtype)
    x[rng.random(n) < 0.001] = np.nan
    opts = {
        "center": str(rng.choice(CENTERS)),
        "scale": ["group", "batch", "batch_residual"][i % 3],
        "ddof": int(i % 2),
        "eps": float(rng.choice([0.0, 1e-6])),
        "singleton": "zero",
        "nan": "omit",
    }
    k = int(codes.max()) + 1
    if "offsets" in kw:
        k = len(kw["offsets"]) - 1
    sample = set(codes[rng.integers(0, n, 3000)].tolist())
    exp = reference(x.tolist(), codes.tolist(), k, out_dtype=dtype, sample_groups=sample, **opts)
    return x, kw, opts, exp, kind


@pytest.mark.parametrize("i", range(LARGE_CASES))
def test_api_large_threaded_matches_exact_reference(i):
    x, kw, opts, exp, kind = _large_case(i)
    for threads in (1, 2):
        miss = _check_one(lambda x, kw, o: ga.advantages(x, **kw, **o, num_threads=threads), x, kw, opts, exp)
        assert miss is None, f"large case {i} ({kind}, {x.dtype}, {opts}, num_threads={threads}): {miss}"


@pytest.mark.parametrize("regime", list(CASES))
def test_api_matches_exact_reference(regime):
    _run("api", regime, _api, max(1, int(CASES[regime] * SCALE)))


@pytest.mark.parametrize("regime", list(CASES))
def test_api_odd_memory_and_out_matches_exact_reference(regime):
    _run("api", regime, _api_odd_memory, max(1, int(CASES[regime] * SCALE) // 2), label="api-odd-memory")


@pytest.mark.parametrize("regime", ["ties", "normal", "near"])
def test_api_batch_std_matches_exact_reference(regime):
    """batch_std= (issue 5): the cases with a batch scale and a defined batch std, not in the
    overflow zone, with the exact batch std (rounded to float64) passed in."""
    n_cases = max(1, int(CASES[regime] * SCALE))
    failures, tried = [], 0
    for i in range(n_cases):
        key = [zlib.crc32(f"api/{regime}".encode()), i]
        x, kw, opts, exp, kind = _case(key, regime)
        if opts["scale"] not in ("batch", "batch_residual") or exp.batch_std is None or exp.may_raise:
            continue
        tried += 1
        _BATCH_STD[0] = float(exp.batch_std)
        miss = _check_one(_api_batch_std, x, kw, opts, exp)
        if miss:
            failures.append(f"case {key}: x={x.tolist()!r} {x.dtype} {kind} {kw} {opts} batch_std={_BATCH_STD[0]!r}\n    -> {miss}")
    print(f"fuzz batch_std/{regime} ({ga.backend()}): {tried} cases, {len(failures)} contract misses")
    assert not failures, f"{len(failures)}/{tried} cases break the contract; first ones:\n" + "\n".join(failures[:6])


@pytest.mark.parametrize("regime", list(CASES))
def test_torch_device_path_matches_exact_reference(regime):
    pytest.importorskip("torch")
    _run("torch-device", regime, _torch_device, max(1, int(CASES[regime] * SCALE)))


def _stats_miss(x, kw, ddof, nan, ref, codes):
    try:
        st = ga.group_stats(x, **kw, ddof=ddof, nan=nan)
    except ValueError as e:
        return None if ref["raises"] or ref["may_raise"] else f"raised ValueError({e})"
    except Exception as e:  # noqa: BLE001
        return f"raised {type(e).__name__}({e})"
    if ref["raises"]:
        return "returned stats, but the contract says ValueError"
    groups = ref["groups"]
    # Labelled layouts number groups by first appearance; offsets/uniform in order.
    if "group_ids" in kw:
        groups = [groups[c] for c in dict.fromkeys(codes)]  # order of first appearance
    if len(st.count) != len(groups):
        return f"{len(st.count)} groups, expected {len(groups)}"
    for g, ((cnt, mean, std, mtol, stol), c, m, s) in enumerate(zip(groups, st.count, st.mean, st.std)):
        if c != cnt:
            return f"group {g}: count {c}, expected {cnt}"
        for what, got, want, tol in (("mean", m, mean, mtol), ("std", s, std, stol)):
            if want == "nonfinite":
                if np.isfinite(got):
                    return f"group {g}: {what} {got!r} for a group with a non-finite reward under nan='propagate'"
            elif want is None:
                if not np.isnan(got):
                    return f"group {g}: {what} {got!r}, expected NaN"
            elif not np.isfinite(got):
                return f"group {g}: {what} {got!r}, expected {float(want)!r}"
            elif what == "std" and want == 0 and got != 0.0:
                return f"group {g}: std {got!r} of an all-equal group, expected exactly 0.0 (frac_zero_std counts std == 0)"
            elif abs(Fraction(float(got)) - want) > Fraction(tol):
                return f"group {g}: {what} {got!r}, expected {float(want)!r} (tolerance {tol:.3g})"
    return None


@pytest.mark.parametrize("regime", list(CASES))
def test_group_stats_matches_exact_reference(regime):
    n_cases = max(1, int(CASES[regime] * SCALE) // 2)
    failures = []
    for i in range(n_cases):
        rng = np.random.default_rng([zlib.crc32(f"stats/{regime}".encode()), i])
        dtype = np.float32 if rng.random() < 0.4 else np.float64
        kind, n, codes, k, kw = _layout(rng)
        x = _values(rng, n, regime, dtype)
        ddof, nan = int(rng.integers(0, 2)), str(rng.choice(["raise", "propagate", "omit"]))
        ref = reference_group_stats(x.tolist(), codes, k, ddof=ddof, nan=nan)
        miss = _stats_miss(x, kw, ddof, nan, ref, codes)
        if miss:
            failures.append(f"x={x.tolist()!r} {x.dtype} {kw} ddof={ddof} nan={nan}\n    -> {miss}")
    print(f"fuzz group_stats/{regime} ({ga.backend()}): {n_cases} cases, {len(failures)} contract misses")
    assert not failures, f"{len(failures)}/{n_cases} cases break the contract; first ones:\n" + "\n".join(failures[:6])


def test_reference_sanity():
    """The reference itself, on hand-checked values (so a fuzz pass means something)."""
    from fractions import Fraction as F

    e = reference([1.0, 2.0, 3.0, 5.0, 5.0], [0, 0, 0, 1, 1], 2, center="mean", scale="group", ddof=0,
                  eps=0.0, singleton="zero", nan="raise", out_dtype=np.float64)
    assert not e.raises and abs(float(e.adv[0]) + math.sqrt(1.5)) < 1e-15 and e.adv[3] == 0 and e.exact_zero[3]
    e = reference([1.0, 3.0], [0, 0], 1, center="loo", scale="none", ddof=0, eps=0.0, singleton="zero",
                  nan="raise", out_dtype=np.float64)
    assert e.adv == [F(-2), F(2)]
    e = reference([1.0, math.nan], [0, 1], 2, center="mean", scale="batch", ddof=0, eps=0.0, singleton="raw",
                  nan="propagate", out_dtype=np.float64)
    assert e.adv == [None, None]
    e = reference([-1.7e308, 1.7e308, 1.7e308], [0, 0, 0], 1, center="mean", scale="none", ddof=0, eps=0.0,
                  singleton="zero", nan="raise", out_dtype=np.float64)
    assert e.raises
    e = reference([3e38, -3e38], [0, 0], 1, center="mean", scale="none", ddof=0, eps=0.0, singleton="zero",
                  nan="raise", out_dtype=np.float32)
    assert not e.raises and float(e.adv[0]) == 3e38


# --- hypothesis: arbitrary floats (its boundary values: +-max, subnormals, +-0, inf, nan) ---

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HYP_EXAMPLES = max(1, int(300 * SCALE))


@st.composite
def _hyp_case(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    width = 32 if dtype == np.float32 else 64
    sizes = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    if sum(sizes) == 0:
        sizes[-1] = 1
    n = sum(sizes)
    vals = draw(st.lists(st.floats(width=width), min_size=n, max_size=n))
    x = np.array(vals, dtype=dtype)
    opts = {
        "center": draw(st.sampled_from(CENTERS)),
        "scale": draw(st.sampled_from(SCALES)),
        "ddof": draw(st.integers(0, 1)),
        "eps": draw(st.sampled_from(EPS)),
        "singleton": draw(st.sampled_from(["zero", "raw", "error"])),
        "nan": draw(st.sampled_from(["raise", "propagate", "omit"])),
    }
    return x, sizes, opts


@settings(max_examples=HYP_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(_hyp_case())
def test_hypothesis_floats_match_exact_reference(case):
    x, sizes, opts = case
    codes = np.repeat(np.arange(len(sizes)), sizes).tolist()
    exp = reference(x.tolist(), codes, len(sizes), out_dtype=x.dtype.type, **opts)
    miss = _check_one(_api, x, {"offsets": np.cumsum([0] + sizes)}, opts, exp)
    assert miss is None, f"x={x.tolist()!r} {x.dtype} sizes={sizes} {opts}: {miss}"
