"""The numpy backend's fast paths give the answers of its general stages.

- The plain case (GRPO z-score of finite rewards, no moments= / batch_std=; empty groups allowed) runs in a few numpy
  calls (`_numpy._plain_advantages`); everything it does not cover exactly falls back to the
  general stages. Compared here with the general stages forced, on every layout and dtype.
- str labels are numbered with a dict, and object arrays in runs (np.repeat'ed uids) hash only
  their run heads; the layout must be the one the labels describe, numbered by first appearance.
"""

from __future__ import annotations

import numpy as np
import pytest

from groupadv import _numpy as N

_PLAIN = N._plain_advantages


def _layouts(rng, n_groups):
    sizes = rng.integers(1, 9, size=n_groups)
    n = int(sizes.sum())
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    codes = np.repeat(np.arange(n_groups), sizes)
    yield N.grouping_uniform(n_groups * 4, 4), n_groups * 4
    yield N.grouping_offsets(n, offsets), n
    with_empty = np.concatenate(([0], np.repeat(offsets[1:], 2)))  # an empty group after each
    yield N.grouping_offsets(n, with_empty), n
    yield N.grouping_ids_int(codes[rng.permutation(n)])[0], n


def _both(x, g, monkeypatch, **kw):
    opts = dict(center="mean", scale="group", ddof=0, eps=1e-6, singleton="zero", nan="raise")
    opts.update(kw)
    args = [opts[k] for k in ("center", "scale", "ddof", "eps", "singleton", "nan")]
    fast, slow = np.empty_like(x), np.empty_like(x)
    taken = []

    def spy(*a):
        taken.append(_PLAIN(*a))
        return taken[-1]

    monkeypatch.setattr(N, "_plain_advantages", spy)
    N.advantages(x, fast, g, *args, 0)
    monkeypatch.setattr(N, "_plain_advantages", lambda *a: False)
    N.advantages(x, slow, g, *args, 0)
    return fast, slow, taken


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ddof,eps", [(0, 0.0), (1, 1e-6), (0, 0.5)])
def test_plain_path_gives_the_general_answer(monkeypatch, dtype, ddof, eps):
    rng = np.random.default_rng(7)
    for _ in range(5):
        for g, n in _layouts(rng, int(rng.integers(1, 40))):
            x = rng.choice([0.0, 1.0, 0.25, 3.5], size=n).astype(dtype)  # ties: all-equal groups
            x[: n // 2] += rng.random(n // 2).astype(dtype)
            fast, slow, taken = _both(x, g, monkeypatch, ddof=ddof, eps=eps)
            assert taken == [True]
            # The same arithmetic in the same order: the same bits (so every layout, and both
            # paths, give one answer; a last-bit difference showed as layout-dependent results).
            np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_equal_groups_are_exactly_zero_on_the_plain_path(monkeypatch, dtype):
    big = 1e300 if dtype == np.float64 else 3e38
    x = np.array([0.1, 0.1, 0.1, 7.3, 7.3, 7.3, big, big, big, -2.0, 1.0, 5.0], dtype=dtype)
    fast, slow, taken = _both(x, N.grouping_uniform(12, 3), monkeypatch, eps=0.0)
    assert taken == [True]
    assert (fast[:9] == 0.0).all() and (fast[9:] != 0.0).all()
    np.testing.assert_array_equal(fast[:9], slow[:9])


@pytest.mark.parametrize(
    "x,kw",
    [
        (np.array([1.0, np.nan, 2.0, 3.0]), {"nan": "propagate"}),  # a non-finite reward
        (np.array([5e-324, -5e-324, 1.0, 2.0]), {}),  # a subnormal spread: rescaled moments
        (np.array([1e200, -1e200, 1.0, 2.0]), {}),  # squares beyond float64
        (np.array([1.0, 2.0, np.inf, 2.0]), {"nan": "omit"}),
    ],
)
def test_what_the_plain_path_cannot_do_exactly_takes_the_general_stages(monkeypatch, x, kw):
    fast, slow, taken = _both(x, N.grouping_uniform(4, 2), monkeypatch, **kw)
    assert taken == [False]
    np.testing.assert_array_equal(fast, slow)


def test_subnormal_spread_is_plus_minus_one():
    out = np.empty(2)
    N.advantages(np.array([5e-324, -5e-324]), out, N.grouping_uniform(2, 2), "mean", "group", 0, 0.0, "zero", "raise", 0)
    np.testing.assert_array_equal(out, [1.0, -1.0])


def test_one_reward_groups_under_other_singleton_rules_take_the_general_stages(monkeypatch):
    g = N.grouping_offsets(3, np.array([0, 1, 3]))
    x = np.array([4.0, 1.0, 2.0])
    for singleton, taken_want in (("zero", [True]), ("raw", [False])):
        fast, slow, taken = _both(x, g, monkeypatch, singleton=singleton)
        assert taken == taken_want
        np.testing.assert_array_equal(fast, slow)


def _first_appearance_codes(labels):
    seen: dict = {}
    return [seen.setdefault(u, len(seen)) for u in labels]


@pytest.mark.parametrize("case", ["repeat", "blocks", "split-runs", "shuffled", "short"])
def test_str_labels_are_numbered_by_first_appearance(case):
    rng = np.random.default_rng(3)
    names = np.array([f"uid-{i}" for i in range(700)], dtype=object)
    labels = np.repeat(names, 8)  # 5600 labels, runs of the same str object
    if case == "blocks":
        labels = np.repeat(names[rng.permutation(700)], 8)
    elif case == "split-runs":  # a label in two separate runs: not contiguous
        labels = np.concatenate([labels[:2000], labels[:8], labels[2000:]])
    elif case == "shuffled":
        labels = labels[rng.permutation(len(labels))]
    elif case == "short":
        labels = list(labels[:100])
    g, first = N.grouping_ids_str(labels)
    want = _first_appearance_codes(labels)
    assert g.codes().tolist() == want
    assert first.tolist() == [want.index(c) for c in range(max(want) + 1)]
    assert g.kind == ("permuted" if case in ("split-runs", "shuffled") else "ragged")


def test_equal_str_values_in_distinct_objects_are_one_group():
    a = np.array(["".join(["u", "id"]) for _ in range(5000)] + ["x"] * 5000, dtype=object)
    assert a[0] is not a[1] and a[0] == a[1]  # distinct objects, equal values
    g, _ = N.grouping_ids_str(a)
    assert g.n_groups == 2 and g.sizes().tolist() == [5000, 5000]


def test_non_str_labels_are_a_typeerror_for_the_generic_path():
    with pytest.raises(TypeError, match=r"group_ids\[2\] is not a str"):
        N.grouping_ids_str(np.array(["a", "b", 3] * 2000, dtype=object))
    with pytest.raises(TypeError):
        N.grouping_ids_str([["unhashable"], "a"])


def test_a_spread_beyond_float64_is_the_overflow_error_on_both_paths():
    from groupadv.errors import AdvantageOverflowError

    x, g = np.array([1.7e308, -1.7e308, 1.0, 2.0]), N.grouping_uniform(4, 2)
    with pytest.raises(AdvantageOverflowError, match="group 0"):
        N.advantages(x, np.empty(4), g, "mean", "group", 0, 0.0, "zero", "raise", 0)


def _big_layouts(rng):
    """Layouts longer than a piece of the plain case (Grouping.pieces): uniform rows that do and
    do not fill a piece, and ragged groups with empty groups and one group longer than a piece."""
    p = N._PIECE
    yield N.grouping_uniform(16 * (p // 8 + 37), 16)
    yield N.grouping_uniform(3 * 1000 * (p // 1000 + 1), 1000)
    sizes = rng.integers(0, 40, size=3 * p // 20)
    sizes[len(sizes) // 2] = p + 123  # one group longer than a piece
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    yield N.grouping_offsets(int(offsets[-1]), offsets)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_path_piece_by_piece_gives_the_bits_of_the_whole(monkeypatch, dtype):
    rng = np.random.default_rng(11)
    for g in _big_layouts(rng):
        assert len(g.pieces()) > 1
        x = (rng.random(g.n) * 10.0**rng.integers(-3, 4)).astype(dtype)
        x[: g.n // 4] = 1.5  # all-equal groups
        fast, slow, taken = _both(x, g, monkeypatch, eps=1e-6)
        assert taken == [True]
        np.testing.assert_array_equal(fast, slow)
        whole = np.empty_like(x)  # the same call in one piece
        monkeypatch.setattr(g, "_pieces", [(0, g.n, g)])
        with np.errstate(all="ignore"):  # as the backend's entry points (empty groups: 0 / 0)
            assert _PLAIN(x, g, 0, 1e-6, "zero", whole)
        np.testing.assert_array_equal(fast, whole)
        assert (fast[: g.n // 4 - 1000] == 0.0).all()


def test_a_nan_in_a_late_piece_takes_the_general_stages(monkeypatch):
    g = N.grouping_uniform(16 * (N._PIECE // 8), 16)
    x = np.random.default_rng(5).random(g.n).astype(np.float32)
    x[-3] = np.nan
    fast, slow, taken = _both(x, g, monkeypatch, nan="propagate")
    assert taken == [False]
    np.testing.assert_array_equal(fast, slow)
    assert np.isnan(fast[-16:]).all() and np.isfinite(fast[:-16]).all()
    from groupadv.errors import NonFiniteRewardError

    with pytest.raises(NonFiniteRewardError, match=rf"rewards\[{g.n - 3}\] is NaN"):
        N.advantages(x, np.empty_like(x), g, "mean", "group", 0, 0.0, "zero", "raise", 0)


@pytest.mark.parametrize("regime", ["offset", "near-ties", "wide", "binary"])
def test_plain_path_pieces_are_accurate_on_hostile_float32(monkeypatch, regime):
    """Several pieces of float32 rewards that defeat a one-pass variance (a large offset, ties
    at one ulp, spreads over 1e+-30, 0/1 with all-equal groups), against exact fractions."""
    from fractions import Fraction

    rng = np.random.default_rng(21)
    g = N.grouping_uniform(16 * (N._PIECE // 8 + 5), 16)
    if regime == "offset":
        x = (1e4 + rng.random(g.n) * 1e-2).astype(np.float32)
    elif regime == "near-ties":
        x = np.nextafter(np.float32(3.0), np.float32(4.0), dtype=np.float32) * np.ones(g.n, np.float32)
        x[rng.random(g.n) < 0.2] = np.float32(3.0)
    elif regime == "wide":
        x = (rng.standard_normal(g.n) * 10.0 ** rng.integers(-30, 31, g.n)).astype(np.float32)
    else:
        x = (rng.random(g.n) < 0.9).astype(np.float32)
    fast, slow, taken = _both(x, g, monkeypatch, eps=0.0)
    assert taken == [True]
    np.testing.assert_array_equal(fast, slow)
    for grp in rng.choice(g.n_groups, size=200, replace=False):
        vals = [Fraction(float(v)) for v in x[16 * grp: 16 * grp + 16]]
        mean = sum(vals) / 16
        var = sum((v - mean) ** 2 for v in vals) / 16
        got = fast[16 * grp: 16 * grp + 16]
        if var == 0:
            assert (got == 0.0).all()
            continue
        std = Fraction(float(var) ** 0.5)  # the float64 sqrt: relative error 2**-53
        want = np.array([float((v - mean) / std) for v in vals], dtype=np.float32)
        np.testing.assert_allclose(got, want, rtol=2.5e-7, atol=0)


def test_a_call_made_during_a_call_gets_its_own_buffer(monkeypatch):
    """The plain case's per-thread buffer is taken out while in use: a call made in the middle
    of another (as a signal handler may) does not overwrite the first call's residuals."""
    g = N.grouping_uniform(4096, 16)
    x, y = (np.random.default_rng(s).random(4096).astype(np.float32) for s in (1, 2))
    want = np.empty_like(x)
    N.advantages(x, want, g, "mean", "group", 0, 0.0, "zero", "raise", 0)
    inner = np.empty_like(y)
    real = N._plain_policy

    def policy_and_a_nested_call(*a):
        monkeypatch.setattr(N, "_plain_policy", real)
        N.advantages(y, inner, g, "mean", "group", 0, 0.0, "zero", "raise", 0)
        return real(*a)

    monkeypatch.setattr(N, "_plain_policy", policy_and_a_nested_call)
    got = np.empty_like(x)
    N.advantages(x, got, g, "mean", "group", 0, 0.0, "zero", "raise", 0)
    np.testing.assert_array_equal(got, want)
    N.advantages(y, want, g, "mean", "group", 0, 0.0, "zero", "raise", 0)
    np.testing.assert_array_equal(inner, want)
