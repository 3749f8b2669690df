"""Hostile inputs to the Python API, beyond the cases of tests/test_bad_inputs.py: odd labels
(raising __hash__/__eq__, unhashable, NaN-like, pandas, numpy scalars, bytes vs str, huge ints),
memory layouts and aliasing (views, negative strides, unaligned, out= sharing memory with any
argument), and one huge run (GROUPADV_TEST_HUGE=1).

The expected behaviour is the README's Guarantees: the numbers of a contiguous copy, or a
ValueError / TypeError that names the problem; never another exception type, a crash, a
modified input or a silent wrong answer. Runs on the active backend (GROUPADV_BACKEND).
"""

from __future__ import annotations

import decimal
import os

import numpy as np
import pytest

import groupadv as ga

X4 = np.array([1.0, 2.0, 3.0, 5.0])


def codes(ids):
    return ga.make_groups(group_ids=ids).codes().tolist()


# ---------------------------------------------------------------- labels --------------------


class RaisingHash:
    def __hash__(self):
        raise RuntimeError("hash exploded")


class RaisingEq:
    """Equal hashes, so a dict must call __eq__ (which raises)."""

    def __hash__(self):
        return 7

    def __eq__(self, other):
        raise RuntimeError("eq exploded")


class ArrayEq:
    """__eq__ returns an array: its truth value is ambiguous (numpy raises ValueError)."""

    def __hash__(self):
        return 7

    def __eq__(self, other):
        return np.array([True, False])


@pytest.mark.parametrize(
    "ids",
    [
        [RaisingHash(), RaisingHash(), 1, 1],
        [RaisingEq(), RaisingEq(), 1, 1],
        np.array([RaisingHash(), 1, 1, 1], dtype=object),
        ["a", "a", RaisingEq(), RaisingEq()],
    ],
    ids=["raising-hash", "raising-eq", "raising-hash-objarray", "raising-eq-after-str"],
)
def test_labels_whose_hash_or_eq_raise_are_a_typeerror(ids):
    """A label that cannot be hashed or compared is an unusable label: TypeError naming
    group_ids (the README: "labels that are not hashable" -> TypeError), not the label's
    own RuntimeError escaping from the library."""
    with pytest.raises((TypeError, ValueError)) as e:
        ga.advantages(X4, group_ids=ids)
    assert "group_ids" in str(e.value)


def test_label_eq_returning_an_array_is_a_clean_error():
    with pytest.raises((TypeError, ValueError)):
        ga.advantages(X4, group_ids=[ArrayEq(), ArrayEq(), 1, 1])


@pytest.mark.parametrize(
    "ids",
    [
        [[1], [1], [2], [2]],
        [{}, {}, 1, 1],
        [{1}, {1}, 1, 1],
        [np.zeros(2), np.zeros(2), 1, 1],
        np.array([None, [1], [2], [2]], dtype=object),
        [bytearray(b"a"), bytearray(b"a"), 1, 1],
    ],
    ids=["lists", "dicts", "sets", "arrays", "objarray-of-lists", "bytearrays"],
)
def test_unhashable_labels_are_a_typeerror(ids):
    with pytest.raises(TypeError, match="group_ids"):
        ga.advantages(X4, group_ids=ids)


def _nan_like_cases():
    cases = [
        ("float-nan-list", [float("nan"), float("nan"), 1, 1]),
        ("np.nan-list", [np.nan, np.nan, 1, 1]),
        ("np.float32-nan-scalar", [np.float32("nan"), np.float32("nan"), 1, 1]),
        ("np.float64-nan-scalar-with-str", [np.float64("nan"), "a", "a", np.float64("nan")]),
        ("decimal-nan", [decimal.Decimal("NaN"), decimal.Decimal("NaN"), 1, 1]),
        ("objarray-nan", np.array([float("nan"), float("nan"), "a", "a"], dtype=object)),
        ("float32-array", np.array([np.nan, np.nan, 1, 1], dtype=np.float32)),
        ("float16-array", np.array([np.nan, np.nan, 1, 1], dtype=np.float16)),
    ]
    return cases


@pytest.mark.parametrize("ids", [c[1] for c in _nan_like_cases()], ids=[c[0] for c in _nan_like_cases()])
def test_nan_like_labels_are_a_valueerror(ids):
    """README: "NaN labels" are a ValueError, whatever container or scalar type holds them
    (two NaNs are never equal, so any grouping of them is arbitrary: by identity today)."""
    with pytest.raises(ValueError, match="NaN"):
        ga.advantages(X4, group_ids=ids)


def test_labels_compared_by_value_and_type():
    """README: `1` and `"1"` are different groups; bytes and str too; 0.0 and -0.0 the same;
    None is a label; numpy scalars equal their Python values."""
    assert codes([1, "1", b"1", 1]) == [0, 1, 2, 0]
    assert codes([b"a", "a", b"a", "a"]) == [0, 1, 0, 1]
    assert codes([0.0, -0.0, 2.5, 2.5]) == [0, 0, 1, 1]
    assert codes(np.array([0.0, -0.0, 2.5, 2.5], dtype=object)) == [0, 0, 1, 1]
    assert codes([None, None, "None", "None"]) == [0, 0, 1, 1]
    assert codes([np.int64(5), 5, np.str_("a"), "a"]) == [0, 0, 1, 1]
    assert codes([np.uint64(2**64 - 1), 2**64 - 1, np.int8(-1), -1]) == [0, 0, 1, 1]
    assert codes([("g", 1), ("g", 1), ("g", "1"), ("g", "1")]) == [0, 0, 1, 1]
    assert codes([frozenset([1]), frozenset([1]), 1, 1]) == [0, 0, 1, 1]


def test_huge_int_labels_stay_distinct():
    big = 2**70
    assert codes([big, big + 1, big, big + 1]) == [0, 1, 0, 1]
    assert codes([2**64, 0, 2**64, 0]) == [0, 1, 0, 1]
    assert codes([-(2**63) - 1, -(2**63), -(2**63) - 1, 2**63]) == [0, 1, 0, 2]
    assert codes([2**63, 2**63 + 1, 2**63, 2**63 + 1]) == [0, 1, 0, 1]  # numpy makes these uint64
    assert codes(np.array([2**64 - 1, 2**64 - 2, 2**64 - 1, 0], dtype=np.uint64)) == [0, 1, 0, 2]


def test_lone_surrogate_str_labels_group_like_any_str():
    """A lone surrogate is a valid Python str (e.g. from os.fsdecode of undecodable bytes):
    it groups like any other str label, on both backends (the native one encodes labels to
    UTF-8 and raises UnicodeEncodeError, which names neither group_ids nor the label)."""
    try:
        got = codes(["\ud800", "a", "\ud800", "a\udcff"])
    except ValueError as e:  # acceptable only as a clean error naming the argument
        assert "group_ids" in str(e), f"{type(e).__name__}: {e}"
    else:
        assert got == [0, 1, 0, 2]


def test_label_containers():
    """Generators have no length; a str, set or dict is not a 1-D label sequence: clean errors."""
    with pytest.raises((TypeError, ValueError)):
        ga.advantages(X4, group_ids=(i // 2 for i in range(4)))
    for bad in ("abcd", {1, 2, 3, 4}, {1: 1, 2: 2, 3: 3, 4: 4}):
        with pytest.raises((TypeError, ValueError)):
            ga.advantages(X4, group_ids=bad)
    assert codes(("a", "b", "a", "b")) == [0, 1, 0, 1]
    assert codes(range(4)) == [0, 1, 2, 3]


@pytest.mark.parametrize("dtype", ["datetime64[D]", "timedelta64[s]", "V3", [("a", "i4")], "complex128"])
def test_unsupported_label_dtypes_are_a_typeerror(dtype):
    ids = np.zeros(4, dtype=dtype)
    with pytest.raises(TypeError, match="group_ids"):
        ga.advantages(X4, group_ids=ids)


def test_label_layouts_give_the_numbers_of_a_contiguous_copy():
    ids = np.array(["b", "x", "a", "x", "b", "x", "a", "x"])[::2]  # strided U
    ref = ga.advantages(X4, group_ids=["b", "a", "b", "a"])
    np.testing.assert_array_equal(ga.advantages(X4, group_ids=ids), ref)
    np.testing.assert_array_equal(ga.advantages(X4, group_ids=np.array(["b", "a", "b", "a"], dtype=">U1")), ref)
    np.testing.assert_array_equal(ga.advantages(X4, group_ids=np.array([7, 9, 7, 9], dtype=">i4")), ref)
    np.testing.assert_array_equal(ga.advantages(X4, group_ids=np.array([9, 7, 9, 7, 0])[-2::-1]), ref)
    np.testing.assert_array_equal(ga.advantages(X4, group_ids=np.array([2**63 + 1, 2, 2**63 + 1, 2], dtype=">u8")), ref)


# ---------------------------------------------------------------- pandas --------------------

pd = None
try:  # pandas is an optional dependency of the tests (install it to run these)
    import pandas as pd
except ImportError:
    pass
needs_pandas = pytest.mark.skipif(pd is None, reason="pandas not installed")


@needs_pandas
def test_pandas_labels_and_rewards():
    ref = ga.advantages(X4, group_ids=["a", "b", "a", "b"])
    for ids in (
        pd.Series(["a", "b", "a", "b"], index=[10, 11, 12, 13]),
        pd.Series(["a", "b", "a", "b"], dtype="category"),
        pd.Categorical(["a", "b", "a", "b"]),
        pd.Categorical([10, 20, 10, 20]),
        pd.Index([3, 4, 3, 4]),
        pd.array([1, 2, 1, 2], dtype="Int64"),
        pd.array(["a", "b", "a", "b"], dtype="string"),
    ):
        np.testing.assert_array_equal(ga.advantages(X4, group_ids=ids), ref, err_msg=repr(ids))
    s = pd.Series(X4, index=[5, 9, 7, 8])  # the index is not a position
    np.testing.assert_array_equal(ga.advantages(s, group_ids=["a", "b", "a", "b"]), ref)
    df = pd.DataFrame({"r": X4, "uid": ["a", "b", "a", "b"]})
    np.testing.assert_array_equal(ga.advantages(df["r"], group_ids=df["uid"]), ref)
    with pytest.raises(ValueError):
        ga.advantages(df[["r"]], group_ids=df["uid"])  # a 2-D frame


@needs_pandas
@pytest.mark.parametrize(
    "make",
    [
        lambda: pd.Series(["a", None, "a", np.nan]),
        lambda: pd.Series(["a", "b", "a", np.nan], dtype=object),
        lambda: pd.Categorical(["a", np.nan, "a", np.nan]),
        lambda: pd.Series([1.0, np.nan, 1.0, 2.0]),
        lambda: pd.array([1, None, 1, None], dtype="Int64"),
        lambda: pd.array(["a", None, "a", None], dtype="string"),
    ],
    ids=["str-series-missing", "object-series-nan", "categorical-nan", "float-series-nan", "Int64-NA", "string-NA"],
)
def test_pandas_missing_labels_are_a_valueerror(make):
    """A missing label (NaN, None turned into NaN by pandas, pd.NA) is not a group: ValueError,
    as for NaN in a float array. (Int64 <NA> already raises; the str/categorical/string forms
    are grouped together silently.)"""
    with pytest.raises(ValueError):
        ga.advantages(X4, group_ids=make())


@needs_pandas
def test_pandas_nullable_rewards():
    with pytest.raises(ValueError, match=r"rewards\[1\]"):
        ga.advantages(pd.array([1.0, None, 3.0, 5.0], dtype="Float64"), 2)
    np.testing.assert_array_equal(ga.advantages(pd.array([1, 2, 3, 5], dtype="Int64"), 2), ga.advantages(X4, 2))


# ---------------------------------------------------------------- offsets / sizes -----------


def test_offsets_holding_a_bool_are_a_typeerror():
    """README: offsets that are not integers (floats, bools) are a TypeError; a bool inside a
    list is silently read as 0/1 today."""
    with pytest.raises(TypeError):
        ga.advantages(X4, offsets=[0, True, 4])
    with pytest.raises(TypeError):
        ga.advantages(X4, offsets=np.array([False, True, True]))


@pytest.mark.parametrize("offs", [[0, 2**64, 4], [0, 2**70, 4], [0, -(2**64), 4]])
def test_offsets_beyond_int64_are_out_of_range_valueerror(offs):
    """Python ints beyond int64 are integers out of range (ValueError naming the range, as
    for uint64 offsets), not "offsets must be integers, got dtype object"."""
    with pytest.raises(ValueError):
        ga.advantages(X4, offsets=offs)


def test_offsets_layouts():
    ref = ga.advantages(X4, offsets=[0, 1, 4])
    np.testing.assert_array_equal(ga.advantages(X4, offsets=np.array([4, 1, 0])[::-1]), ref)
    np.testing.assert_array_equal(ga.advantages(X4, offsets=np.array([0, 1, 4], dtype=">i8")), ref)
    np.testing.assert_array_equal(ga.advantages(X4, offsets=np.array([0, 1, 4], dtype=np.uint8)), ref)
    np.testing.assert_array_equal(ga.advantages(X4, offsets=np.array([0, 9, 1, 9, 4])[::2]), ref)
    np.testing.assert_array_equal(ga.advantages(X4, offsets=[0, 0, 1, 1, 4, 4]), ga.advantages(X4, offsets=[0, 1, 4]))


@pytest.mark.parametrize("size", [np.int8(2), np.uint64(2), np.array(2), 2])
def test_group_size_integer_likes(size):
    np.testing.assert_array_equal(ga.advantages(X4, size), ga.advantages(X4, 2))


@pytest.mark.parametrize("size", [np.uint64(2**64 - 1), 2**200, -(2**200), 0])
def test_group_size_out_of_range(size):
    with pytest.raises(ValueError, match="group_size"):
        ga.advantages(X4, size)


# ---------------------------------------------------------------- rewards layouts -----------


def _unaligned(values, dtype):
    dt = np.dtype(dtype)
    buf = np.zeros(dt.itemsize * len(values) + 1, np.uint8)
    a = buf[1:].view(dt)
    a[:] = values
    assert not a.flags.aligned
    return a


@pytest.mark.parametrize(
    "make",
    [
        lambda v: v[::-1].copy()[::-1],
        lambda v: np.repeat(v, 3)[::3],
        lambda v: np.asfortranarray(np.stack([v * 0, v], axis=1))[:, 1],
        lambda v: v.astype(">f8"),
        lambda v: np.frombuffer(v.tobytes(), dtype=np.float64),
        lambda v: _unaligned(v, np.float64),
        lambda v: memoryview(v.copy()),
        lambda v: v.tolist(),
        lambda v: tuple(np.float64(t) for t in v),
    ],
    ids=["negative-stride", "stride-3", "fortran-column", "big-endian", "read-only", "unaligned", "memoryview", "list", "tuple-of-np-scalars"],
)
def test_any_memory_layout_gives_the_numbers_of_a_contiguous_copy(make):
    v = np.array([1.0, 2.0, 3.0, 5.0, -1.0, 0.5])
    ref = ga.advantages(v, 3)
    np.testing.assert_array_equal(ga.advantages(make(v), 3), ref)
    np.testing.assert_array_equal(ga.advantages(make(v), group_ids=[0, 1, 0, 1, 0, 1]), ga.advantages(v, group_ids=[0, 1, 0, 1, 0, 1]))


def test_unaligned_float32_rewards():
    v = np.array([1.0, 2.0, 3.0, 5.0], dtype=np.float32)
    np.testing.assert_array_equal(ga.advantages(_unaligned(v, np.float32), 2), ga.advantages(v, 2))


def test_zero_stride_rewards_are_a_constant_group():
    out = ga.advantages(np.broadcast_to(np.float64(3.3), (6,)), 3)
    assert out.tolist() == [0.0] * 6


def test_masked_rewards_do_not_silently_use_masked_values():
    """np.asarray drops a mask: the masked 100.0 would enter the statistics. Either honour the
    mask or refuse the masked array; never give numbers computed from masked values."""
    m = np.ma.array([1.0, 2.0, 3.0, 100.0], mask=[0, 0, 0, 1])
    try:
        got = ga.advantages(m, 2)
    except (TypeError, ValueError):
        return
    assert not np.array_equal(np.asarray(got), ga.advantages(np.array([1.0, 2.0, 3.0, 100.0]), 2)), (
        "masked values were used in the statistics"
    )


# ---------------------------------------------------------------- out= aliasing -------------


def test_out_aliasing_group_ids_is_refused_and_labels_are_kept():
    """out= sharing memory with group_ids (float labels) must be a ValueError: the README
    says inputs are never modified, and the issue asks for every array argument to be checked."""
    ids = np.array([0.0, 0.0, 1.0, 1.0])
    keep = ids.copy()
    with pytest.raises(ValueError, match="out"):
        ga.advantages(X4, group_ids=ids, out=ids)
    np.testing.assert_array_equal(ids, keep)


def test_out_aliasing_offsets_memory_is_refused():
    buf = np.array([0, 1, 3], dtype=np.int64)
    keep = buf.copy()
    with pytest.raises(ValueError, match="out"):
        ga.advantages(np.array([1.0, 2.0, 4.0]), offsets=buf, out=buf.view(np.float64))
    np.testing.assert_array_equal(buf, keep)


@pytest.mark.parametrize(
    "kind", ["strided-rewards", "int-rewards", "bigendian-rewards", "float32-from-float16"],
)
def test_out_overlapping_a_converted_input_is_refused(kind):
    """The overlap check must look at the caller's array, not the converted copy."""
    if kind == "strided-rewards":
        base = np.arange(8.0)
        x, out = base[::2], base[4:8]
    elif kind == "int-rewards":
        base = np.arange(4, dtype=np.int64)
        x, out = base, base.view(np.float64)
    elif kind == "bigendian-rewards":
        base = np.arange(4.0).astype(">f8")
        x, out = base, base.view(np.float64)
    else:  # float16 rewards become a float32 copy; out shares the caller's float16 bytes
        base = np.zeros(8, dtype=np.float16)
        base[:4] = [1, 2, 3, 5]
        x, out = base[:4], base.view(np.float32)
    assert out.shape == x.shape and np.shares_memory(out, x)
    keep = base.copy()
    with pytest.raises(ValueError, match="out"):
        ga.advantages(x, 2, out=out)
    np.testing.assert_array_equal(base.view(np.uint8), keep.view(np.uint8))


def test_out_non_contiguous_or_odd_is_refused():
    with pytest.raises(ValueError):
        ga.advantages(X4, 2, out=np.zeros(8)[::2])
    with pytest.raises(ValueError):
        ga.advantages(X4, 2, out=np.zeros(8)[::-2])
    with pytest.raises(ValueError):
        ga.advantages(X4, 2, out=np.zeros((4, 1)))
    with pytest.raises(TypeError):
        ga.advantages(X4, 2, out=np.zeros(4, ">f8"))
    with pytest.raises(TypeError):
        ga.advantages(X4, 2, out=[0.0] * 4)


def test_unaligned_out_works_or_is_a_valueerror():
    """An unaligned but C-contiguous out= either works or is refused as a ValueError (the
    README lists out= problems as ValueError); not a TypeError saying "not contiguous"."""
    out = _unaligned(np.zeros(4), np.float64)
    try:
        ga.advantages(X4, 2, out=out)
    except ValueError:
        return
    np.testing.assert_array_equal(out, ga.advantages(X4, 2))


def test_out_is_the_result_and_inputs_are_untouched():
    x = X4.copy()
    out = np.full(4, 9.0)
    ids = np.array([5, 6, 5, 6])
    got = ga.advantages(x, group_ids=ids, out=out)
    assert got is out
    np.testing.assert_array_equal(x, X4)
    np.testing.assert_array_equal(ids, [5, 6, 5, 6])


# ---------------------------------------------------------------- huge N --------------------


@pytest.mark.skipif(
    os.environ.get("GROUPADV_TEST_HUGE") != "1",
    reason="set GROUPADV_TEST_HUGE=1 (native: ~5 GB peak RSS, ~1.5 min here; numpy backend: over 14 GB)",
)
def test_huge_float32_run_3e8():
    """3e8 float32 rewards (1.2 GB): uniform and ragged groups; sampled groups checked against
    float64 numpy, all-equal groups exactly 0, no NaN, output float32 of the input length.
    (The numpy backend makes float64 copies of everything: it passed 14 GB RSS on the shared
    development machine and was stopped there.)"""
    n, g = 300_000_000, 8
    x = np.empty(n, dtype=np.float32)
    rng = np.random.default_rng(0)
    step = 10_000_000
    for i in range(0, n, step):
        x[i : i + step] = rng.integers(0, 5, size=step).astype(np.float32) * np.float32(0.25)
    x[:g] = 0.1  # an all-equal group
    out = ga.grpo(x, g)
    assert out.dtype == np.float32 and out.shape == (n,)
    assert out[:g].tolist() == [0.0] * g
    assert np.isfinite(out[:: 9_999_991]).all()
    idx = np.concatenate([np.arange(0, 80), np.arange(n - 80, n), rng.integers(0, n // g, 500) * g])
    for s in np.unique(idx // g * g):
        grp = x[s : s + g].astype(np.float64)
        sd = grp.std()
        want = np.zeros(g) if sd == 0 else (grp - grp.mean()) / sd
        np.testing.assert_allclose(out[s : s + g], want, rtol=1e-6, atol=1e-6)
    del out
    offs = np.arange(0, n + 1, g, dtype=np.int64)
    out2 = ga.grpo(x, offsets=offs, scale="batch")
    s = 12_345 * g
    grp = x[s : s + g].astype(np.float64)
    bstd = float(np.std(x, dtype=np.float64))
    np.testing.assert_allclose(out2[s : s + g], (grp - grp.mean()) / bstd, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- batch_std= ----------------


@pytest.mark.parametrize(
    "dtype,batch_std,eps", [("float64", 1e-320, 0.0), ("float64", 0.0, 5e-324), ("float32", 1e-39, 0.0)]
)
def test_tiny_batch_std_overflowing_the_advantages_is_a_valueerror(dtype, batch_std, eps):
    """batch_std= (the sharded path, _api._with_batch_std) must keep the overflow rule of the
    one-pass call: an advantage beyond the output dtype's range is a ValueError, never inf."""
    x = np.array([0.0, 1.0, 5.0, 7.0], dtype=dtype)
    with pytest.raises(ValueError):
        ga.advantages(x, 2, scale="batch", batch_std=batch_std, eps=eps)


def test_batch_std_matches_one_pass():
    x = np.array([0.0, 1.0, 5.0, 7.0, 2.0, 2.0])
    one = ga.advantages(x, 2, scale="batch")
    std = float(np.std(x))
    np.testing.assert_allclose(ga.advantages(x, 2, scale="batch", batch_std=std), one, rtol=4e-16, atol=0)


# ---------------------------------------------------------------- token layouts -------------


@pytest.mark.parametrize("nan", ["raise", "propagate", "omit"])
@pytest.mark.parametrize("dtype,big", [("float32", 3e38), ("float64", 1.7e308)])
def test_token_scores_that_overflow_are_the_overflow_valueerror(nan, dtype, big):
    """Finite token rewards whose per-sequence sum overflows the dtype: the README's overflow
    ValueError under every nan policy. Today the sum becomes inf and is then treated as an inf
    reward: "rewards[0] is inf" under raise, a silently NaN group under propagate, a silent
    advantage of 0 under omit."""
    tok = np.array([[big, big], [1, 2], [0, 1], [1, 1]], dtype=dtype)
    mask = np.ones((4, 2), dtype=bool)
    with pytest.raises(ValueError) as e:
        ga.token_advantages(tok, mask, 2, nan=nan)
    assert "is inf" not in str(e.value), "finite token rewards reported as an inf reward"
    with pytest.raises(ValueError):
        ga.packed_token_advantages(tok.reshape(-1), [2, 2, 2, 2], 2, nan=nan)


def test_out_sharing_a_float_response_mask_is_a_valueerror():
    """out= is the (float) response mask: a ValueError naming the arguments, never rust-numpy's
    PanicException (AlreadyBorrowed), which is not an Exception."""
    tok = np.arange(4.0).reshape(2, 2)
    mask = np.ones((2, 2))
    keep = mask.copy()
    try:
        ga.token_advantages(tok, mask, 2, out=mask)
    except ValueError as e:
        assert "out" in str(e)
    except BaseException as e:  # noqa: BLE001 - PanicException derives from BaseException
        pytest.fail(f"{type(e).__name__}: {e}")
    else:
        pytest.fail("out= aliasing response_mask was accepted")
    np.testing.assert_array_equal(mask, keep)


def test_token_layouts_give_the_numbers_of_a_contiguous_copy():
    tok = np.array([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]], dtype=bool)
    ref = ga.token_advantages(tok, mask, 2)
    np.testing.assert_array_equal(ga.token_advantages(np.asfortranarray(tok), mask, 2), ref)
    np.testing.assert_array_equal(ga.token_advantages(tok[::-1][::-1], np.asfortranarray(mask), 2), ref)
    wide = np.zeros((4, 6))
    wide[:, ::2] = tok
    np.testing.assert_array_equal(ga.token_advantages(wide[:, ::2], mask.astype(np.int8), 2), ref)
    np.testing.assert_array_equal(ga.token_advantages(tok.astype(">f8"), mask.astype(">i4"), 2), ref)


# ---------------------------------------------------------------- moments transport ---------


@pytest.mark.parametrize("arr", [[-3.0, 1.0, 2.0], [float("nan"), 1.0, 2.0], [3.0, 1.0, -2.0], [2.5, 1.0, 2.0]])
def test_moments_from_array_rejects_impossible_moments(arr):
    """Moments arriving from another rank or actor (from_array, the inverse of to_array) with a
    negative or NaN count, a fractional count for unweighted moments, or a negative M2 are
    corrupt: a ValueError, not a std computed from them."""
    from groupadv.moments import Moments

    with pytest.raises(ValueError):
        Moments.from_array(np.array(arr)).std()
