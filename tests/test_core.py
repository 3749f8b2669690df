"""Semantics of the public API on the active backend (CI runs this file once per backend)."""

from __future__ import annotations

import numpy as np
import pytest

import groupadv as ga

SEEDS = [
    ([0.0, 1.0, 0.0, 1.0], [-1.0, 1.0, -1.0, 1.0]),
    ([0.2, 0.5, 0.8, 0.3, 0.7], [-1.3156, 0.0, 1.3156, -0.8771, 0.8771]),
    ([-0.5, 0.0, 0.5, 1.0], [-1.3416, -0.4472, 0.4472, 1.3416]),
]


@pytest.mark.parametrize("rewards,expected", SEEDS)
def test_seed_examples(rewards, expected):
    got = ga.grpo(rewards, len(rewards), decimals=4)
    assert got.tolist() == expected
    # Same via offsets, ids and the general function.
    n = len(rewards)
    assert ga.grpo(rewards, offsets=[0, n], decimals=4).tolist() == expected
    assert ga.grpo(rewards, group_ids=["p"] * n, decimals=4).tolist() == expected
    assert ga.advantages(rewards, n, decimals=4).tolist() == expected


def test_seed_examples_batched_in_one_call():
    rewards = sum((r for r, _ in SEEDS), [])
    offsets = np.cumsum([0] + [len(r) for r, _ in SEEDS])
    got = ga.grpo(rewards, offsets=offsets, decimals=4)
    assert got.tolist() == sum((e for _, e in SEEDS), [])


def _ref(rewards, sizes, center, scale, ddof=0, eps=0.0):
    """Direct transcription of the formulas, one group at a time (test oracle)."""
    r = np.asarray(rewards, dtype=np.float64)
    out, starts = [], np.cumsum([0] + list(sizes))
    resid = np.concatenate([r[a:b] - r[a:b].mean() for a, b in zip(starts[:-1], starts[1:])])
    for a, b in zip(starts[:-1], starts[1:]):
        g = r[a:b]
        n = len(g)
        if center == "mean":
            c = g - g.mean()
        elif center == "loo":
            c = np.array([g[i] - (g.sum() - g[i]) / (n - 1) for i in range(n)])
        else:
            c = g.copy()
        if scale == "group":
            d = g.std(ddof=ddof) + eps
        elif scale == "batch":
            d = r.std(ddof=ddof) + eps
        elif scale == "batch_residual":
            d = np.sqrt(np.sum(resid**2) / (len(r) - ddof)) + eps
        else:
            d = 1.0
        out.append(c / d)
    return np.concatenate(out)


@pytest.mark.parametrize("center", ["mean", "loo", "none"])
@pytest.mark.parametrize("scale", ["group", "batch", "batch_residual", "none"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_every_estimator_and_scale_against_the_formula(center, scale, ddof):
    rewards = [0.0, 1.0, 1.0, 0.5, 2.0, -1.0, 3.0, 4.0, 4.5]
    sizes = [2, 3, 4]
    offsets = np.cumsum([0] + sizes)
    got = ga.advantages(rewards, offsets=offsets, center=center, scale=scale, ddof=ddof, eps=1e-3)
    want = _ref(rewards, sizes, center, scale, ddof, eps=1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_named_estimators():
    r = np.array([1.0, 2.0, 3.0, 6.0])
    np.testing.assert_allclose(ga.drgrpo(r, 4), [-2.0, -1.0, 0.0, 3.0])
    np.testing.assert_allclose(ga.rloo(r, 4), [1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0], rtol=1e-14)
    np.testing.assert_allclose(ga.grpo(r, 4), (r - 3.0) / np.sqrt(3.5), rtol=1e-14)
    np.testing.assert_allclose(ga.grpo(r, 4, scale="batch"), (r - 3.0) / r.std(), rtol=1e-14)
    # RLOO equals G/(G-1) times Dr. GRPO.
    np.testing.assert_allclose(ga.rloo(r, 4), ga.drgrpo(r, 4) * 4 / 3, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 1e-9, 1e-6, 1e-4])
@pytest.mark.parametrize("value", [0.1, 0.7, 1e-8, -3.3, 12345.678])
def test_all_equal_groups_are_exactly_zero(dtype, eps, value):
    r = np.full(8 * 5, value, dtype=dtype)
    for fn in (ga.grpo, ga.drgrpo, ga.rloo):
        out = fn(r, 8, eps=eps)
        assert out.dtype == dtype
        assert np.all(out == 0.0), (fn.__name__, out[:8])
    for scale in ("batch", "batch_residual"):
        assert np.all(ga.grpo(r, 8, eps=eps, scale=scale, ddof=1) == 0.0)
    # Mixed batch: the all-equal group stays exactly 0 next to groups with spread.
    mixed = np.concatenate([np.full(8, value, dtype=dtype), np.arange(8, dtype=dtype)])
    out = ga.grpo(mixed, 8, eps=eps, ddof=1)
    assert np.all(out[:8] == 0.0) and np.all(out[8:] != 0.0)


def test_dtypes_in_and_out():
    assert ga.grpo(np.array([1, 2, 3, 4], dtype=np.float32), 2).dtype == np.float32
    assert ga.grpo(np.array([1, 2, 3, 4], dtype=np.float64), 2).dtype == np.float64
    assert ga.grpo(np.array([1, 2, 3, 4], dtype=np.int64), 2).dtype == np.float64
    assert ga.grpo(np.array([True, False, True, True]), 2).dtype == np.float64
    # Dtype policy (issue 10): float16 in, float16 out, as bfloat16 tensors keep theirs.
    assert ga.grpo(np.array([1, 2, 3, 4], dtype=np.float16), 2).dtype == np.float16
    assert ga.grpo([1, 2, 3, 4], 2).tolist() == [-1.0, 1.0, -1.0, 1.0]


def test_float32_accumulates_in_float64():
    # 1e4 rewards around 1e4 with spread 1e-3: float32 accumulation would lose the spread.
    rng = np.random.default_rng(0)
    r = (10000.0 + rng.integers(0, 2, 10_000) * 0.001).astype(np.float32)
    got = ga.grpo(r, 10_000)
    want = ga.grpo(r.astype(np.float64), 10_000).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_singleton_policies():
    r = [3.0, 1.0, 2.0]
    assert ga.grpo(r, offsets=[0, 1, 3]).tolist() == [0.0, -1.0, 1.0]
    raw = ga.grpo(r, offsets=[0, 1, 3], singleton="raw", eps=1e-6)
    assert raw[0] == 3.0 / (1 + 1e-6)
    assert ga.drgrpo(r, offsets=[0, 1, 3], singleton="raw")[0] == 3.0
    assert ga.rloo(r, offsets=[0, 1, 3], singleton="raw")[0] == 3.0
    assert ga.rloo(r, offsets=[0, 1, 3])[0] == 0.0
    with pytest.raises(ValueError, match=r"group 0 \(rewards\[0\]\) has a single reward"):
        ga.grpo(r, offsets=[0, 1, 3], singleton="error")
    with pytest.raises(ValueError, match=r"group 1 \(rewards\[2\]\)"):
        ga.grpo([1.0, 2.0, 5.0], group_ids=[0, 0, 1], singleton="error")


def test_empty_groups_in_offsets_are_allowed():
    got = ga.grpo([1.0, 3.0, 5.0, 5.0], offsets=[0, 0, 2, 2, 4, 4])
    assert got.tolist() == [-1.0, 1.0, 0.0, 0.0]
    st = ga.group_stats([1.0, 3.0, 5.0, 5.0], offsets=[0, 0, 2, 2, 4, 4])
    assert st.count.tolist() == [0, 2, 0, 2, 0]
    assert np.isnan(st.mean[0]) and st.mean[1] == 2.0


def test_nan_policies():
    r = [1.0, np.nan, 3.0, 4.0, 6.0, 8.0]
    with pytest.raises(ValueError, match=r"rewards\[1\] is NaN"):
        ga.grpo(r, 3)
    with pytest.raises(ValueError, match=r"rewards\[2\] is inf"):
        ga.grpo([1.0, 2.0, np.inf, 0.0], 2)
    with pytest.raises(ValueError, match=r"rewards\[3\] is -inf"):
        ga.grpo([1.0, 2.0, 0.0, -np.inf], group_ids=[1, 2, 2, 1])
    prop = ga.grpo(r, 3, nan="propagate")
    assert np.all(np.isnan(prop[:3])) and np.all(np.isfinite(prop[3:]))
    assert np.all(np.isnan(ga.grpo(r, 3, nan="propagate", scale="batch")))
    omit = ga.grpo(r, 3, nan="omit")
    assert omit[:3].tolist() == [-1.0, 0.0, 1.0]
    np.testing.assert_allclose(omit[3:], ga.grpo([4.0, 6.0, 8.0], 3))
    # A group left with one valid reward is a singleton.
    assert ga.grpo([np.nan, 2.0, 1.0, 3.0], 2, nan="omit").tolist() == [0.0, 0.0, -1.0, 1.0]
    assert ga.grpo([np.nan, 2.0, 1.0, 3.0], 2, nan="omit", singleton="raw")[1] == 2.0


def test_huge_and_tiny_magnitudes():
    for scale in (1e-200, 1e-30, 1e30, 1e200):
        r = np.array([-1.0, 1.0, 0.0, 2.0]) * scale
        np.testing.assert_allclose(ga.grpo(r, 2), [-1.0, 1.0, -1.0, 1.0], rtol=1e-12)
    r32 = np.array([-3e38, 3e38, 1e-45, 3e-45], dtype=np.float32)
    np.testing.assert_allclose(ga.grpo(r32, 2), [-1.0, 1.0, -1.0, 1.0], rtol=1e-6)


def test_group_ids_layouts_keep_input_order():
    rng = np.random.default_rng(1)
    r = rng.normal(size=60)
    contiguous = ga.grpo(r, 6)
    perm = rng.permutation(60)
    ids = np.repeat(np.arange(10), 6)
    got = ga.grpo(r[perm], group_ids=ids[perm])
    np.testing.assert_allclose(got, contiguous[perm], rtol=1e-12, atol=1e-15)
    # Strings (list, object array, fixed width), uint64 and float labels agree.
    names = np.array([f"uid-{i}" for i in ids])[perm]
    for labels in (names.tolist(), names.astype(object), names, names.astype("S")):
        np.testing.assert_allclose(ga.grpo(r[perm], group_ids=labels), got)
    floats = ids[perm] * 0.5 - 2.0
    for labels in (ids[perm].astype(np.uint64) + 2**63, floats, floats.astype(np.float32), ids[perm].astype(np.int8)):
        np.testing.assert_allclose(ga.grpo(r[perm], group_ids=labels), got)
    # Mixed hashable labels use the generic path.
    mixed = [("t", i) if i % 2 else i for i in ids[perm]]
    np.testing.assert_allclose(ga.grpo(r[perm], group_ids=mixed), got)
    # -0.0 and 0.0 are one label.
    assert ga.make_groups(group_ids=np.array([0.0, -0.0, 1.0, 1.0])).n_groups == 2


def test_make_groups_reuse_and_labels():
    ids = ["b", "a", "b", "c", "a", "c"]
    g = ga.make_groups(group_ids=ids)
    assert (g.n, g.n_groups, g.kind) == (6, 3, "permuted")
    assert g.labels == ["b", "a", "c"]
    assert g.first_index.tolist() == [0, 1, 3]
    assert g.sizes().tolist() == [2, 2, 2]
    assert g.codes().tolist() == [0, 1, 0, 2, 1, 2]
    r1, r2 = np.arange(6.0), np.arange(6.0)[::-1]
    np.testing.assert_allclose(ga.grpo(r1, groups=g), ga.grpo(r1, group_ids=ids))
    np.testing.assert_allclose(ga.rloo(r2, groups=g), ga.rloo(r2, group_ids=ids))
    assert ga.make_groups(group_ids=[5, 5, 7]).kind == "ragged"
    assert ga.make_groups(8, 4).kind == "uniform"
    assert ga.make_groups(offsets=[0, 2, 5]).n == 5
    st = ga.group_stats(r1, groups=g)
    assert st.labels == ["b", "a", "c"]
    with pytest.raises(ValueError, match="covers 6 rewards"):
        ga.grpo(np.arange(4.0), groups=g)
    with pytest.raises(TypeError, match="either groups="):
        ga.grpo(r1, 2, groups=g)


def test_group_stats_and_summary():
    st = ga.group_stats([0.0, 1.0, 0.5, 0.5, 2.0, 2.0, 2.0, 7.0], offsets=[0, 2, 4, 7, 8], ddof=1)
    assert st.count.tolist() == [2, 2, 3, 1]
    np.testing.assert_allclose(st.mean, [0.5, 0.5, 2.0, 7.0])
    np.testing.assert_allclose(st.std[:3], [np.sqrt(0.5), 0.0, 0.0])
    assert np.isnan(st.std[3])
    assert st.frac_zero_std == pytest.approx(2 / 3)
    assert st.mean_within_std == pytest.approx(np.sqrt(0.5) / 3)
    s = st.summary()
    assert s["n_groups"] == 4 and s["n_rewards"] == 8


def test_out_parameter():
    r = np.array([0.0, 1.0, 2.0, 4.0], dtype=np.float32)
    out = np.empty(4, dtype=np.float32)
    res = ga.grpo(r, 2, out=out)
    assert res is out and out.tolist() == [-1.0, 1.0, -1.0, 1.0]
    with pytest.raises(TypeError, match="dtype"):
        ga.grpo(r, 2, out=np.empty(4))
    with pytest.raises(ValueError, match="shape"):
        ga.grpo(r, 2, out=np.empty(5, dtype=np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        ga.grpo(r, 2, out=np.empty(8, dtype=np.float32)[::2])
    ro = np.empty(4, dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ga.grpo(r, 2, out=ro)
    with pytest.raises(ValueError, match="overlap"):
        ga.grpo(r, 2, out=r)
    with pytest.raises(TypeError, match="numpy array"):
        ga.grpo(r, 2, out=[0.0] * 4)


def test_strided_and_big_endian_inputs():
    base = np.arange(16, dtype=np.float64)
    np.testing.assert_allclose(ga.grpo(base[::2], 4), ga.grpo(base[::2].copy(), 4))
    np.testing.assert_allclose(ga.grpo(base[::-1], 4), ga.grpo(base[::-1].copy(), 4))
    be = base.astype(">f8")
    np.testing.assert_allclose(ga.grpo(be, 4), ga.grpo(base, 4))
    ro = base.copy()
    ro.flags.writeable = False
    np.testing.assert_allclose(ga.grpo(ro, 4), ga.grpo(base, 4))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(rewards=[], group_size=1), ValueError, "empty"),
        (dict(rewards=[[1.0, 2.0]], group_size=1), ValueError, "1-D"),
        (dict(rewards=["a", "b"], group_size=1), TypeError, "numbers"),
        (dict(rewards=[1 + 2j], group_size=1), TypeError, "numbers"),
        (dict(rewards=[1.0, 2.0, 3.0], group_size=2), ValueError, "does not divide"),
        (dict(rewards=[1.0, 2.0], group_size=0), ValueError, "does not divide"),
        (dict(rewards=[1.0, 2.0], group_size=1.5), TypeError, "group_size must be an integer"),
        (dict(rewards=[1.0, 2.0], group_size=True), TypeError, "bool"),
        (dict(rewards=[1.0, 2.0]), TypeError, "exactly one of"),
        (dict(rewards=[1.0, 2.0], group_size=2, offsets=[0, 2]), TypeError, "exactly one of"),
        (dict(rewards=[1.0, 2.0], offsets=[0, 3]), ValueError, r"offsets\[-1\] must equal"),
        (dict(rewards=[1.0, 2.0], offsets=[1, 2]), ValueError, r"offsets\[0\] must be 0"),
        (dict(rewards=[1.0, 2.0, 3.0], offsets=[0, 2, 1, 3]), ValueError, "non-decreasing"),
        (dict(rewards=[1.0, 2.0], offsets=[0]), ValueError, "at least 2"),
        (dict(rewards=[1.0, 2.0], offsets=[0.0, 2.0]), TypeError, "integers"),
        (dict(rewards=[1.0, 2.0], offsets=[[0, 2]]), ValueError, "1-D"),
        (dict(rewards=[1.0, 2.0], group_ids=[1]), ValueError, "length"),
        (dict(rewards=[1.0, 2.0], group_ids=[[1], [2]]), TypeError, "hashable"),
        (dict(rewards=[1.0, 2.0], group_ids=np.array([0.5, np.nan])), ValueError, "NaN"),
        (dict(rewards=[1.0, 2.0], group_size=2, center="median"), ValueError, "center must be one of"),
        (dict(rewards=[1.0, 2.0], group_size=2, scale="global"), ValueError, "scale must be one of"),
        (dict(rewards=[1.0, 2.0], group_size=2, singleton="skip"), ValueError, "singleton must be one of"),
        (dict(rewards=[1.0, 2.0], group_size=2, nan="ignore"), ValueError, "nan must be one of"),
        (dict(rewards=[1.0, 2.0], group_size=2, center=1), TypeError, "center must be a str"),
        (dict(rewards=[1.0, 2.0], group_size=2, ddof=2), ValueError, "ddof must be 0 or 1"),
        (dict(rewards=[1.0, 2.0], group_size=2, eps=-1.0), ValueError, "eps must be"),
        (dict(rewards=[1.0, 2.0], group_size=2, eps=float("nan")), ValueError, "eps must be"),
        (dict(rewards=[1.0, 2.0], group_size=2, eps="x"), TypeError, "eps must be a number"),
        (dict(rewards=[1.0, 2.0], group_size=2, num_threads=0), ValueError, "num_threads"),
        (dict(rewards=[1.0, 2.0], group_size=2, groups="g"), TypeError, "either groups="),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ga.advantages(**kwargs)


def test_groups_from_the_other_backend_are_rejected(use_backend):
    from conftest import HAVE_NATIVE

    if not HAVE_NATIVE:
        pytest.skip("needs both backends")
    use_backend("native")
    g = ga.make_groups(group_ids=[1, 1, 2, 2])
    use_backend("numpy")
    with pytest.raises(ValueError, match="built by the native backend"):
        ga.grpo([1.0, 2.0, 3.0, 4.0], groups=g)


def test_threads_setting_round_trips():
    before = ga.get_num_threads()
    ga.set_num_threads(1)
    assert ga.get_num_threads() == 1
    r = np.random.default_rng(3).normal(size=1 << 16)
    one = ga.grpo(r, 16)
    ga.set_num_threads(2)
    assert ga.get_num_threads() == 2
    np.testing.assert_array_equal(ga.grpo(r, 16), one)
    np.testing.assert_array_equal(ga.grpo(r, 16, num_threads=1), one)
    ga.set_num_threads(0)
    assert ga.get_num_threads() == before
    with pytest.raises(ValueError):
        ga.set_num_threads(-1)


@pytest.mark.parametrize(
    "rewards",
    [
        np.array([3.4e38, -3.4e38, -3.4e38], dtype=np.float32),  # r - mean beyond float32
        np.array([1.7e308, -1.7e308, -1.7e308]),  # r - mean beyond float64
    ],
)
def test_unrepresentable_advantages_are_an_overflow_error(rewards):
    with pytest.raises(ValueError, match="overflow"):
        ga.drgrpo(rewards, 3)
    if rewards.dtype == np.float32:
        # the z-score of the same rewards is representable (statistics are in float64)
        assert np.all(np.isfinite(ga.grpo(rewards, 3)))


@pytest.mark.parametrize("offset", [0.0, 1e6, -3e4])
@pytest.mark.parametrize("size", [2, 4, 16, 64])
def test_uniform_kernel_is_accurate_for_offset_rewards(offset, size):
    # Constant-size kernels and ragged blocks take the same moments (relative to a member of
    # the group); both give the z-score to the precision float64 holds the group mean with:
    # an error of at most ~ulp(mean) / std in each advantage.
    rng = np.random.default_rng(size)
    spread = rng.integers(0, 2, 64 * size) * 1e-3 + rng.normal(size=64 * size) * 1e-4
    r = offset + spread
    got = ga.grpo(r, size)
    np.testing.assert_allclose(got, ga.grpo(r, offsets=np.arange(0, 64 * size + 1, size)), rtol=1e-9, atol=1e-9)
    groups = (r - offset).reshape(-1, size)
    exact = ((groups - groups.mean(axis=1, keepdims=True)) / groups.std(axis=1, keepdims=True)).ravel()
    bound = 1e-10 + 4 * np.spacing(abs(offset) + 1.0) / np.repeat(groups.std(axis=1), size)
    assert np.all(np.abs(got - exact) <= bound * (1 + np.abs(exact)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [3, 5, 12, 16, 24, 40])
def test_equal_sizes_give_the_same_bits_as_group_size_and_as_offsets(dtype, size):
    # Native: whole blocks of equal sizes run the fixed-count vector loops (uniform sizes
    # without a copy of their own share the ragged block loop); constant-size kernels (16) are
    # another loop: the same bits on every route, with exact zeros for groups without spread.
    rng = np.random.default_rng(size)
    k = 8 * 40 + 5  # whole blocks and a partial one
    r = (rng.integers(0, 4, (k, size)) * 0.25 + rng.normal(size=(k, size)) * 1e-3).astype(dtype)
    r[::7] = r[::7, :1]  # every seventh group all equal
    r = r.ravel()
    by_size = ga.grpo(r, size, eps=1e-6)
    by_offsets = ga.grpo(r, offsets=np.arange(0, k * size + 1, size), eps=1e-6)
    assert by_size.dtype == dtype
    if ga.backend() == "native":
        np.testing.assert_array_equal(by_size.view(np.uint8), by_offsets.view(np.uint8))
    else:  # numpy sums rows with einsum and offsets groups with reduceat: float64 rounds apart
        np.testing.assert_allclose(by_size, by_offsets, rtol=1e-12, atol=1e-12)
    g = r.reshape(k, size).astype(np.float64)
    want = (g - g.mean(axis=1, keepdims=True)) / (g.std(axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(by_size.reshape(k, size), want, rtol=1e-5, atol=1e-5)
    assert not by_size.reshape(k, size)[::7].any()


@pytest.mark.parametrize("tail", [0, 1, 7])
def test_offsets_of_one_size_and_then_others_match_the_formula(tail):
    # A large offsets layout whose first groups all have 16 rewards (batches of them take the
    # group_size=16 kernel) and whose last `tail` groups have other sizes (their batch takes
    # the ragged blocks); an overflowing group is named by its index on either route.
    rng = np.random.default_rng(tail)
    sizes = np.r_[np.full(40_000, 16), rng.integers(1, 40, tail)]
    offs = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    r = rng.normal(size=offs[-1]).astype(np.float32)
    got = ga.grpo(r, offsets=offs, eps=1e-6)
    want = np.empty(offs[-1])
    for a, b in zip(offs[:-1], offs[1:]):
        g = r[a:b].astype(np.float64)
        want[a:b] = (g - g.mean()) / (g.std() + 1e-6) if b - a > 1 else 0.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for grp in (3, 39_999):
        bad = r.copy()
        bad[offs[grp]:offs[grp + 1]] = 3e38
        bad[offs[grp]] = -3e38
        with pytest.raises(ValueError, match=f"group {grp} "):
            ga.drgrpo(bad, offsets=offs)


@pytest.mark.parametrize("offset", [0.0, 1e6, 1e9])
@pytest.mark.parametrize("size", [2, 4, 16])
def test_interleaved_labels_equal_contiguous_groups_at_large_offsets(offset, size):
    # Every layout takes the same moments (two passes, relative to a group member), so
    # shuffling rows with their labels only permutes the advantages, up to rounding.
    rng = np.random.default_rng(size)
    n = 1 << 18  # large enough for the parallel passes
    r = offset + rng.integers(0, 2, n) * 1e-3 + rng.normal(size=n) * 1e-4
    perm = rng.permutation(n)
    ids = np.repeat(np.arange(n // size), size)
    shuffled = np.empty(n)
    shuffled[perm] = ga.grpo(r[perm], group_ids=ids[perm])
    np.testing.assert_allclose(shuffled, ga.grpo(r, size), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [4, 8, 16, 64, 24])
@pytest.mark.parametrize("where", [0, 13, -1])
def test_vector_kernels_report_the_overflowing_group_wherever_it_is(dtype, size, where):
    # Whole blocks of 8 groups and a partial one (the vector kernels and their tails), in
    # uniform and ragged layouts; one group's advantages r - mean are beyond the dtype.
    k = 8 * 5 + 3
    big = np.finfo(dtype).max * 0.9
    r = np.random.default_rng(size).random((k, size)).astype(dtype)
    g = range(k)[where]
    r[g] = big
    r[g, 0] = -big
    offsets = np.arange(0, k * size + 1, size)
    for layout in (dict(group_size=size), dict(offsets=offsets)):
        with pytest.raises(ValueError, match=f"group {g} "):
            ga.drgrpo(r.ravel(), **layout)
        if dtype == np.float32:
            # the z-scores of the same rewards are representable (statistics in float64)
            z = ga.grpo(r.ravel(), **layout)
            assert np.all(np.isfinite(z))
            np.testing.assert_allclose(z.reshape(k, size)[g, 1], 1 / np.sqrt(size - 1), rtol=1e-5)
