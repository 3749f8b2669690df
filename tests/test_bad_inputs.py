"""A table of awkward and bad inputs, each with its expected error or result, run on whichever
backend is active (CI runs the suite once per backend). tests/test_core.py has the basic
argument errors; this file covers memory layouts, dtypes, byte order, offsets at the edges of
the integer ranges, label kinds and non-finite values."""

from __future__ import annotations

import numpy as np
import pytest

import groupadv as ga

R4 = np.array([1.0, 2.0, 3.0, 5.0])
EXPECT_PAIRS = ga.grpo(R4.copy(), 2)  # groups {1,2}, {3,5}


def _ro(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


# --- errors ------------------------------------------------------------------------------------

ERRORS = [
    # wrong dtypes
    ("str rewards", dict(rewards=np.array(["1", "2"]), group_size=2), TypeError, "must hold numbers"),
    ("object rewards with None", dict(rewards=[1.0, None], group_size=2), TypeError, "must hold numbers"),
    ("complex rewards", dict(rewards=np.ones(2, np.complex128), group_size=2), TypeError, "must hold numbers"),
    ("datetime rewards", dict(rewards=np.zeros(2, "datetime64[D]"), group_size=2), TypeError, "must hold numbers"),
    ("timedelta rewards", dict(rewards=np.zeros(2, "timedelta64[s]"), group_size=2), TypeError, "must hold numbers"),
    ("0-d rewards", dict(rewards=np.float64(1.0), group_size=1), ValueError, "1-D"),
    ("2-D rewards", dict(rewards=np.ones((4, 1)), group_size=2), ValueError, "1-D"),
    ("empty rewards", dict(rewards=np.array([]), group_size=1), ValueError, "empty"),
    ("empty float32 rewards", dict(rewards=np.zeros(0, np.float32), offsets=[0]), ValueError, "empty"),
    # group_size out of range (same ValueError on both backends, not an OverflowError)
    ("negative group_size", dict(rewards=R4, group_size=-2), ValueError, "does not divide"),
    ("huge group_size", dict(rewards=R4, group_size=2**70), ValueError, "does not divide"),
    ("group_size 2**63", dict(rewards=R4, group_size=2**63), ValueError, "does not divide"),
    ("group_size > n", dict(rewards=R4, group_size=8), ValueError, "does not divide"),
    ("float group_size", dict(rewards=R4, group_size=2.0), TypeError, "integer"),
    # offsets
    ("offsets not ending at n", dict(rewards=R4, offsets=[0, 2, 3]), ValueError, r"offsets\[-1\] must equal len\(rewards\) = 4, got 3"),
    ("offsets past n", dict(rewards=R4, offsets=[0, 2, 5]), ValueError, r"offsets\[-1\] must equal"),
    ("offsets decreasing", dict(rewards=R4, offsets=[0, 3, 2, 4]), ValueError, r"non-decreasing, but offsets\[1\] = 3 > offsets\[2\] = 2"),
    ("offsets negative", dict(rewards=R4, offsets=[0, -2, 4]), ValueError, "non-decreasing"),
    ("offsets int64 min", dict(rewards=R4, offsets=np.array([0, -(2**63), 4])), ValueError, "non-decreasing"),
    ("offsets not starting at 0", dict(rewards=R4, offsets=[1, 4]), ValueError, r"offsets\[0\] must be 0"),
    ("offsets too short", dict(rewards=R4, offsets=[4]), ValueError, "at least 2"),
    ("offsets empty", dict(rewards=R4, offsets=[]), ValueError, "at least 2"),
    ("offsets float", dict(rewards=R4, offsets=np.array([0.0, 4.0])), TypeError, "integers"),
    ("offsets bool", dict(rewards=R4, offsets=np.array([False, True])), TypeError, "integers"),
    ("offsets 2-D", dict(rewards=R4, offsets=np.array([[0, 4]])), ValueError, "1-D"),
    ("offsets uint64 > int64", dict(rewards=R4, offsets=np.array([0, 2**63 + 1, 4], np.uint64)), ValueError, "int64 range"),
    # > 2**31 and > 2**32 element offsets in int64: never truncated to 32 bits
    ("offsets last = 2**31", dict(rewards=R4, offsets=np.array([0, 2**31], np.int64)), ValueError, "got 2147483648"),
    ("offsets last = 2**32 + n", dict(rewards=R4, offsets=np.array([0, 2, 2**32 + 4], np.int64)), ValueError, "got 4294967300"),
    ("offsets mid = 2**32 + 2", dict(rewards=R4, offsets=np.array([0, 2**32 + 2, 4], np.int64)), ValueError, "non-decreasing"),
    ("offsets last = 2**63 - 1", dict(rewards=R4, offsets=np.array([0, 2**63 - 1], np.int64)), ValueError, r"offsets\[-1\] must equal"),
    # group_ids
    ("group_ids too short", dict(rewards=R4, group_ids=[1, 1, 2]), ValueError, "group_ids has length 3 but rewards has length 4"),
    ("group_ids too long", dict(rewards=R4, group_ids=[1] * 5), ValueError, "length 5"),
    ("group_ids empty", dict(rewards=R4, group_ids=[]), ValueError, "length 0"),
    ("group_ids empty array", dict(rewards=R4, group_ids=np.array([], np.int64)), ValueError, "length 0"),
    ("group_ids 2-D", dict(rewards=R4, group_ids=np.zeros((4, 1), np.int64)), ValueError, "1-D"),
    ("group_ids datetime", dict(rewards=R4, group_ids=np.zeros(4, "datetime64[D]")), TypeError, "ints or strings"),
    ("group_ids NaN", dict(rewards=R4, group_ids=np.array([0.0, np.nan, 0.0, 1.0])), ValueError, "NaN"),
    ("group_ids unhashable", dict(rewards=R4, group_ids=[[1], [1], [2], [2]]), TypeError, "hashable"),
    # non-finite rewards under nan="raise" name the first bad index
    ("NaN", dict(rewards=[1.0, 2.0, np.nan, 4.0], group_size=2), ValueError, r"rewards\[2\] is NaN"),
    ("+inf", dict(rewards=[1.0, 2.0, 3.0, np.inf], group_size=2), ValueError, r"rewards\[3\] is inf"),
    ("-inf", dict(rewards=[-np.inf, 2.0, 3.0, 4.0], group_size=4), ValueError, r"rewards\[0\] is -inf"),
    ("NaN float32", dict(rewards=np.array([1, np.nan], np.float32), group_size=2), ValueError, r"rewards\[1\] is NaN"),
    ("NaN with ids", dict(rewards=[1.0, np.nan, 3.0, 4.0], group_ids=[7, 8, 7, 8]), ValueError, r"rewards\[1\] is NaN"),
    ("NaN with batch scale", dict(rewards=[1.0, 2.0, 3.0, np.nan], group_size=2, scale="batch"), ValueError, r"rewards\[3\]"),
    # finite rewards whose group sum overflows float64
    ("overflowing group", dict(rewards=[1e308, -1e308, 1e308, 1e308], group_size=4), ValueError, "overflow"),
    # other arguments
    ("eps huge int", dict(rewards=R4, group_size=2, eps=10**400), ValueError, "eps must be a finite"),
    ("eps inf", dict(rewards=R4, group_size=2, eps=np.inf), ValueError, "eps must be a finite"),
    ("num_threads huge", dict(rewards=R4, group_size=2, num_threads=2**70), ValueError, "num_threads"),
    ("num_threads negative", dict(rewards=R4, group_size=2, num_threads=-1), ValueError, "num_threads"),
    ("decimals str", dict(rewards=R4, group_size=2, decimals="2"), TypeError, "decimals must be an integer"),
    ("singleton error", dict(rewards=[1.0, 2.0, 3.0], offsets=[0, 2, 3], singleton="error"), ValueError, "single reward"),
    ("out read-only", dict(rewards=R4, group_size=2, out=_ro(np.empty(4))), ValueError, "read-only"),
    ("out overlaps", dict(rewards=R4, group_size=2, out=R4), ValueError, "overlap"),
    ("out strided", dict(rewards=R4, group_size=2, out=np.empty(8)[::2]), ValueError, "C-contiguous"),
    ("out wrong dtype", dict(rewards=R4, group_size=2, out=np.empty(4, np.float32)), TypeError, "dtype"),
    ("out wrong shape", dict(rewards=R4, group_size=2, out=np.empty(5)), ValueError, "shape"),
    ("out big-endian", dict(rewards=R4, group_size=2, out=np.empty(4, ">f8")), TypeError, "dtype"),
]


@pytest.mark.parametrize("kwargs,exc,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_input_raises(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ga.advantages(**kwargs)


STATS_ERRORS = [e for e in ERRORS if "out" not in e[1] and "eps" not in e[1] and "decimals" not in e[1]
                and "scale" not in e[1] and "singleton" not in e[1]]


@pytest.mark.parametrize("kwargs,exc,match", [e[1:] for e in STATS_ERRORS], ids=[e[0] for e in STATS_ERRORS])
def test_group_stats_rejects_the_same_inputs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ga.group_stats(**kwargs)


@pytest.mark.parametrize("kwargs,exc,match", [e[1:] for e in ERRORS if "rewards" in e[1] and len(e[1]) == 2
                                              and "group_size" in e[1]], ids=lambda v: str(v)[:30])
def test_make_groups_then_call(kwargs, exc, match):
    # The same validation applies when the layout is resolved separately.
    with pytest.raises((exc, ValueError, TypeError)):
        g = ga.make_groups(len(np.atleast_1d(kwargs["rewards"])), kwargs["group_size"])
        ga.advantages(kwargs["rewards"], groups=g)


# --- accepted inputs with their exact result ---------------------------------------------------


def _be(a, dt):
    return np.asarray(a, dtype=np.dtype(dt).newbyteorder(">"))


ACCEPTED = [
    # memory layouts: same numbers as a contiguous copy
    ("strided rewards", dict(rewards=np.array([1.0, 9, 2, 9, 3, 9, 5, 9])[::2], group_size=2), EXPECT_PAIRS),
    ("negative-stride rewards", dict(rewards=R4[::-1].copy()[::-1], group_size=2), EXPECT_PAIRS),
    ("reversed view", dict(rewards=np.array([5.0, 3.0, 2.0, 1.0])[::-1], group_size=2), EXPECT_PAIRS),
    ("read-only rewards", dict(rewards=_ro(R4), group_size=2), EXPECT_PAIRS),
    ("Fortran column", dict(rewards=np.asfortranarray(np.stack([R4, R4], 1))[:, 0], group_size=2), EXPECT_PAIRS),
    ("big-endian float64", dict(rewards=_be(R4, np.float64), group_size=2), EXPECT_PAIRS),
    ("list rewards", dict(rewards=R4.tolist(), group_size=2), EXPECT_PAIRS),
    ("int rewards", dict(rewards=np.array([1, 2, 3, 5]), group_size=2), EXPECT_PAIRS),
    ("uint8 rewards", dict(rewards=np.array([1, 2, 3, 5], np.uint8), group_size=2), EXPECT_PAIRS),
    ("big-endian int32", dict(rewards=_be([1, 2, 3, 5], np.int32), group_size=2), EXPECT_PAIRS),
    ("group_size np.int64", dict(rewards=R4, group_size=np.int64(2)), EXPECT_PAIRS),
    # offsets of any integer dtype / layout
    ("offsets int32", dict(rewards=R4, offsets=np.array([0, 2, 4], np.int32)), EXPECT_PAIRS),
    ("offsets uint64", dict(rewards=R4, offsets=np.array([0, 2, 4], np.uint64)), EXPECT_PAIRS),
    ("offsets big-endian", dict(rewards=R4, offsets=_be([0, 2, 4], np.int64)), EXPECT_PAIRS),
    ("offsets strided", dict(rewards=R4, offsets=np.array([0, 9, 2, 9, 4])[::2]), EXPECT_PAIRS),
    ("offsets negative stride", dict(rewards=R4, offsets=np.array([4, 2, 0])[::-1]), EXPECT_PAIRS),
    ("offsets read-only", dict(rewards=R4, offsets=_ro([0, 2, 4])), EXPECT_PAIRS),
    ("offsets tuple", dict(rewards=R4, offsets=(0, 2, 4)), EXPECT_PAIRS),
    ("offsets with empty groups", dict(rewards=R4, offsets=[0, 0, 2, 2, 4, 4]), EXPECT_PAIRS),
    # group_ids of many kinds and layouts
    ("ids contiguous", dict(rewards=R4, group_ids=[0, 0, 1, 1]), EXPECT_PAIRS),
    ("ids strided", dict(rewards=R4, group_ids=np.array([0, 9, 0, 9, 1, 9, 1, 9])[::2]), EXPECT_PAIRS),
    ("ids negative stride", dict(rewards=R4, group_ids=np.array([1, 1, 0, 0])[::-1]), EXPECT_PAIRS),
    ("ids big-endian", dict(rewards=R4, group_ids=_be([5, 5, 6, 6], np.int64)), EXPECT_PAIRS),
    ("ids read-only", dict(rewards=R4, group_ids=_ro([5, 5, 6, 6])), EXPECT_PAIRS),
    ("ids uint64 extremes", dict(rewards=R4, group_ids=np.array([2**64 - 1, 2**64 - 1, 2**63, 2**63], np.uint64)), EXPECT_PAIRS),
    ("ids int64 extremes", dict(rewards=R4, group_ids=np.array([-(2**63), -(2**63), 2**63 - 1, 2**63 - 1])), EXPECT_PAIRS),
    ("ids bool", dict(rewards=R4, group_ids=[True, True, False, False]), EXPECT_PAIRS),
    ("ids str", dict(rewards=R4, group_ids=["a", "a", "b", "b"]), EXPECT_PAIRS),
    ("ids str array", dict(rewards=R4, group_ids=np.array(["a", "a", "bb", "bb"])), EXPECT_PAIRS),
    ("ids bytes", dict(rewards=R4, group_ids=[b"a", b"a", b"b", b"b"]), EXPECT_PAIRS),
    ("ids None is a label", dict(rewards=R4, group_ids=[None, None, 1, 1]), EXPECT_PAIRS),
    ("ids 1 and '1' differ", dict(rewards=R4, group_ids=[1, 1, "1", "1"]), EXPECT_PAIRS),
    ("ids 0.0 and -0.0 equal", dict(rewards=R4, group_ids=np.array([0.0, -0.0, 1.0, 1.0])), EXPECT_PAIRS),
    ("ids interleaved", dict(rewards=np.array([1.0, 3.0, 2.0, 5.0]), group_ids=[0, 1, 0, 1]),
     np.array([EXPECT_PAIRS[0], EXPECT_PAIRS[2], EXPECT_PAIRS[1], EXPECT_PAIRS[3]])),
    # non-finite values with the permissive policies
    ("NaN propagate", dict(rewards=[1.0, np.nan, 3.0, 5.0], group_size=2, nan="propagate"),
     np.array([np.nan, np.nan, -1.0, 1.0])),
    ("inf propagate", dict(rewards=[1.0, 2.0, np.inf, 5.0], group_size=2, nan="propagate"),
     np.array([-1.0, 1.0, np.nan, np.nan])),
    ("NaN omit", dict(rewards=[1.0, np.nan, 3.0, 5.0, 7.0], offsets=[0, 2, 5], nan="omit"),
     np.array([0.0, 0.0, -1.224744871391589, 0.0, 1.224744871391589])),
    ("all NaN group omit", dict(rewards=[np.nan, np.nan, 3.0, 5.0], group_size=2, nan="omit"), np.array([0.0, 0.0, -1.0, 1.0])),
    # magnitudes
    ("max float all equal", dict(rewards=np.full(4, np.finfo(np.float64).max), group_size=4), np.zeros(4)),
    ("huge spread", dict(rewards=[1e300, -1e300], group_size=2), np.array([1.0, -1.0])),
    ("tiny normal spread", dict(rewards=[1e-300, 0.0], group_size=2), np.array([1.0, -1.0])),
    ("float32 tiny", dict(rewards=np.array([1e-45, 0.0], np.float32), group_size=2), np.array([1.0, -1.0], np.float32)),
]


@pytest.mark.parametrize("kwargs,expected", [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_accepted_input_gives_the_exact_result(kwargs, expected):
    got = ga.advantages(**kwargs)
    assert got.dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15, equal_nan=True)


def test_inputs_are_never_modified():
    r = np.array([3.0, 1.0, np.nan, 2.0, 2.0, 8.0])
    ids = np.array([2, 1, 2, 1, 3, 3])
    offs = np.array([0, 2, 6])
    r0, ids0, offs0 = r.copy(), ids.copy(), offs.copy()
    for nan in ("propagate", "omit"):
        ga.advantages(r, group_ids=ids, nan=nan, decimals=3)
        ga.advantages(r, offsets=offs, nan=nan, scale="batch")
        ga.group_stats(r, group_ids=ids, nan=nan)
    np.testing.assert_array_equal(r, r0)
    np.testing.assert_array_equal(ids, ids0)
    np.testing.assert_array_equal(offs, offs0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_small_floats_keep_their_dtype(dtype):
    # Dtype policy (issue 10): float16 in, float16 out (statistics in float64 either way).
    got = ga.grpo(np.array([1, 2, 3, 5], dtype), 2)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, EXPECT_PAIRS.astype(dtype), rtol=1e-3)
    out = np.empty(4, dtype)
    assert ga.grpo(np.array([1, 2, 3, 5], dtype), 2, out=out) is out
    np.testing.assert_allclose(out, EXPECT_PAIRS.astype(dtype), rtol=1e-3)


def test_longdouble_is_refused_unless_it_is_float64():
    x = np.ones(2, np.longdouble)
    if x.dtype.itemsize > 8:
        with pytest.raises(TypeError, match="float32 or float64"):
            ga.grpo(x, 2)
    else:
        ga.grpo(x, 2)


def test_errors_leave_a_callers_out_buffer_usable():
    out = np.zeros(4)
    with pytest.raises(ValueError):
        ga.advantages([1.0, 2.0, np.nan, 4.0], 2, out=out)
    ga.advantages(R4, 2, out=out)
    np.testing.assert_allclose(out, EXPECT_PAIRS)


# --- extreme magnitudes (once core bugs, found by this table) -------------------------------------


# Fixed in the core: a subnormal spread lifts residuals before dividing.
# (Not [5e-324, 0]: its mean, 2.5e-324, has no float64 representation.)
@pytest.mark.parametrize("r", [[1e-310, 0.0], [4e-323, 0.0]])
def test_subnormal_spread_gives_finite_advantages(r):
    got = ga.grpo(np.array(r), 2)
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, [1.0, -1.0])


# Fixed in the core: batch stds are guarded against f64 over/underflow.
@pytest.mark.parametrize("r,expected", [
    ([1e-200, 0.0], [1.0, -1.0]),
    ([1e200, -1e200, 1e200, 3e200], [np.sqrt(0.5), -np.sqrt(0.5), -np.sqrt(0.5), np.sqrt(0.5)]),
])
def test_batch_scale_at_extreme_magnitudes(r, expected):
    np.testing.assert_allclose(ga.grpo(np.array(r), 2, scale="batch"), expected, rtol=1e-9)


# Fixed in the core: overflow of finite rewards is a ValueError under every nan policy.
@pytest.mark.parametrize("nan", ["propagate", "omit"])
@pytest.mark.parametrize("r", [[1.7e308, 1.7e308, -1.7e308, 0.0], [3.6e307, 0.0, 0.0, 0.0, 0.0, 0.0]])
def test_overflowing_finite_group_is_never_silently_nan(nan, r):
    try:
        got = ga.advantages(np.array(r), len(r), nan=nan)
    except ValueError as e:
        assert "overflow" in str(e)
    else:
        assert np.all(np.isfinite(got)), got


# Once a core bug (native, labelled groups): a poisoned batch std gave an all-equal group 0.0.
@pytest.mark.parametrize("scale", ["batch", "batch_residual"])
def test_nan_batch_std_is_the_same_for_every_layout(scale):
    r = np.array([0.0, 0.0, 0.0, np.inf])
    by_ids = ga.advantages(r, group_ids=[1, 2, 1, 2], scale=scale, nan="propagate")
    by_offsets = ga.advantages(r[[0, 2, 1, 3]], group_size=2, scale=scale, nan="propagate")[[0, 2, 1, 3]]
    np.testing.assert_array_equal(by_ids, by_offsets)
    assert np.all(np.isnan(by_ids))


MAX = np.finfo(np.float64).max


# Once a core bug: a finite mean with an overflowing spread gave NaN/0; now the overflow ValueError.
@pytest.mark.parametrize("scale", ["group", "batch", "batch_residual"])
def test_spread_overflow_near_f64_max_is_an_error(scale):
    x = np.array([0.0, -MAX, MAX, 0.0, MAX, 0.0])
    with pytest.raises(ValueError, match="overflow"):
        ga.advantages(x, 6, scale=scale)
