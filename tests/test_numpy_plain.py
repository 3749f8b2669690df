"""The numpy backend's plain case (issue 10: at least as fast as plain numpy) keeps the answers of
its general stages, and its layout reuse never serves a stale layout.

- `_numpy._plain_policy` has no mask: a group without spread (all equal, a one-reward group
  under ddof=1, or both with a subnormal eps) gets a finite b instead of the general stage's 0;
  its residuals are exactly +0, so its advantages are +0 on both paths, bit for bit.
- `_numpy.grouping_offsets` keeps the last offsets layout and returns it for equal offsets: an
  array changed in place, or another array of the same length, must give its own layout.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import groupadv as ga
from groupadv import _backend
from groupadv import _numpy as N


def _run(x, g, *, plain: bool, monkeypatch, ddof=0, eps=0.0, singleton="zero", nan="raise"):
    out = np.full_like(x, np.nan)
    taken = []
    real = N._plain_advantages

    def spy(*a):
        taken.append(real(*a))
        return taken[-1]

    monkeypatch.setattr(N, "_plain_advantages", spy if plain else (lambda *a: False))
    N.advantages(x, out, g, "mean", "group", ddof, eps, singleton, nan, 0)
    monkeypatch.setattr(N, "_plain_advantages", real)
    return out, taken


def _offsets(sizes):
    return np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ddof,eps", [(0, 0.0), (1, 0.0), (0, 5e-324), (1, 5e-324), (0, 1e-6), (1, 1e-6), (0, 1e300)])
def test_groups_without_spread_are_plus_zero_on_both_paths(monkeypatch, dtype, ddof, eps):
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 6, size=300)  # one-reward groups included
    offs = _offsets(sizes)
    n = int(offs[-1])
    x = rng.random(max(n, 1200)).astype(dtype)
    equal = rng.random(len(sizes)) < 0.4
    for j in np.flatnonzero(equal):
        x[offs[j]:offs[j + 1]] = dtype(0.5 * (j % 3) - 1.0)  # all-equal groups (of 0, -1, -0.5)
    for g in (N.grouping_offsets(n, offs), N.grouping_uniform(300 * 4, 4), N.grouping_uniform(300, 1)):
        xs = x[: g.n]
        fast, taken = _run(xs, g, plain=True, monkeypatch=monkeypatch, ddof=ddof, eps=eps)
        slow, _ = _run(xs, g, plain=False, monkeypatch=monkeypatch, ddof=ddof, eps=eps)
        assert taken == [True]
        assert fast.tobytes() == slow.tobytes()  # bit for bit (-0 and +0 apart)
        assert np.isfinite(fast).all()
        if g.kind == "ragged":
            for j in np.flatnonzero(equal | (sizes == 1)):
                got = fast[offs[j]:offs[j + 1]]
                assert (got == 0.0).all() and not np.signbit(got).any()  # +0, never -0
        elif g.size == 1:
            assert (fast == 0.0).all() and not np.signbit(fast).any()


@pytest.mark.parametrize("ddof,eps", [(1, 0.0), (0, 5e-324), (1, 1e-6)])
def test_float32_pieces_give_the_general_answer(monkeypatch, ddof, eps):
    """Several pieces of the float32 route (uniform and ragged, no empty group) under the
    parameters the plain policy treats specially."""
    rng = np.random.default_rng(9)
    p = N._PIECE
    sizes = rng.integers(1, 32, size=p // 4)
    offs = _offsets(sizes)
    for g in (N.grouping_uniform(16 * (p // 8 + 3), 16), N.grouping_offsets(int(offs[-1]), offs)):
        assert len(g.pieces()) > 1
        x = (rng.random(g.n) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        x[: g.n // 5] = 2.5
        fast, taken = _run(x, g, plain=True, monkeypatch=monkeypatch, ddof=ddof, eps=eps)
        slow, _ = _run(x, g, plain=False, monkeypatch=monkeypatch, ddof=ddof, eps=eps)
        assert taken == [True]
        assert fast.tobytes() == slow.tobytes()


def test_a_ragged_layout_used_again_spreads_by_index_to_the_same_bits(monkeypatch):
    """From its second use a kept ragged layout spreads per-group values with take over a
    group index (Grouping.spread_index) instead of np.repeat: the same values, the same bits."""
    rng = np.random.default_rng(12)
    sizes = rng.integers(1, 32, size=N._PIECE // 8)
    offs = _offsets(sizes)
    n = int(offs[-1])
    assert N._INDEX_LEAST < n <= N._INDEX_MOST and n > N._PIECE // 2
    g = N.grouping_offsets(n, offs)
    assert len(g.pieces()) > 1
    for call in range(3):
        x = rng.random(n).astype(np.float32)
        x[: n // 6] = 0.75
        slow, _ = _run(x, g, plain=False, monkeypatch=monkeypatch, eps=1e-6)
        fast, taken = _run(x, g, plain=True, monkeypatch=monkeypatch, eps=1e-6)
        assert taken == [True]
        assert fast.tobytes() == slow.tobytes()
        indexed = [gp._index is not None and gp._index is not False for _, _, gp in g.pieces()]
        assert all(indexed) == (call >= 1)
    big = N.grouping_offsets(N._INDEX_MOST + 32, _offsets([32] * (N._INDEX_MOST // 32 + 1)))
    x = rng.random(big.n).astype(np.float32)
    for _ in range(2):
        fast, _ = _run(x, big, plain=True, monkeypatch=monkeypatch)
    assert all(gp._index is None for _, _, gp in big.pieces())  # too large: np.repeat


def test_a_nonfinite_float32_reward_emits_no_warning_and_takes_the_general_stages(monkeypatch):
    x = np.array([1.0, np.inf, -np.inf, 2.0, 3.0, 4.0], dtype=np.float32)
    g = N.grouping_offsets(6, np.array([0, 3, 6]))
    with np.errstate(all="raise"):
        fast, taken = _run(x, g, plain=True, monkeypatch=monkeypatch, nan="propagate")
    assert taken == [False]
    assert np.isnan(fast[:3]).all() and np.isfinite(fast[3:]).all()


def test_equal_offsets_reuse_one_read_only_layout():
    offs = _offsets([3, 1, 4, 1, 5])
    g = N.grouping_offsets(14, offs)
    assert N.grouping_offsets(14, offs.copy()) is g
    assert not g.offsets.flags.writeable and not g.sizes().flags.writeable
    with pytest.raises(ValueError):
        g.sizes()[0] = 7  # shared between calls: nobody may change it
    other = offs.copy()
    other[2] += 1  # another layout of the same length
    h = N.grouping_offsets(14, other)
    assert h is not g and h.sizes().tolist() == [3, 2, 3, 1, 5]


def test_offsets_changed_in_place_are_a_new_layout(monkeypatch):
    monkeypatch.setattr(_backend, "impl", N)
    monkeypatch.setattr(_backend, "name", "numpy")
    rng = np.random.default_rng(4)
    x = rng.random(40).astype(np.float32)
    offs = _offsets([10, 10, 10, 10])
    first = ga.advantages(x, offsets=offs)
    offs[1:4] = [5, 25, 32]  # the caller reuses its array for another batch's groups
    second = ga.advantages(x, offsets=offs)
    want = np.empty_like(x)
    for a, b in zip(offs[:-1], offs[1:]):
        r = x[a:b].astype(np.float64)
        want[a:b] = (r - r.mean()) / r.std()
    np.testing.assert_allclose(second, want, rtol=1e-6, atol=0)
    assert not np.allclose(first, second)
    offs[1:4] = [5, 3, 32]  # now invalid: still checked
    with pytest.raises(ValueError, match="non-decreasing"):
        ga.advantages(x, offsets=offs)


def test_large_offsets_layouts_are_not_kept(monkeypatch):
    monkeypatch.setattr(N, "_KEEP_LAYOUT", 10)
    monkeypatch.setattr(N, "_LAST_OFFSETS", [None, b""])
    offs = _offsets([6, 6])
    g = N.grouping_offsets(12, offs)
    assert N._LAST_OFFSETS[0] is None and g.offsets.flags.writeable
    assert N.grouping_offsets(12, offs) is not g


def test_threads_with_their_own_offsets_of_one_length(monkeypatch):
    """The kept layout is shared by threads: each call still gets the layout of its offsets."""
    monkeypatch.setattr(_backend, "impl", N)
    monkeypatch.setattr(_backend, "name", "numpy")
    rng = np.random.default_rng(6)
    n = 4096
    x = rng.random(n).astype(np.float32)
    layouts = []
    for _ in range(4):
        cut = np.sort(rng.choice(np.arange(1, n), size=200, replace=False))
        layouts.append(np.concatenate(([0], cut, [n])).astype(np.int64))
    want = [ga.advantages(x, offsets=o) for o in layouts]
    errors = []

    def work(k):
        try:
            out = np.empty_like(x)
            for _ in range(60):
                ga.advantages(x, offsets=layouts[k], out=out)
                if not np.array_equal(out, want[k]):
                    errors.append(k)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("errstate", ["numpy", "numpy 1.x fallback"])
def test_warnings_are_off_inside_a_call_and_the_callers_error_state_is_back_after_it(errstate, monkeypatch):
    # _quiet sets numpy's error-state variable itself (np.errstate costs 20-30 µs after idle
    # time); the caller's state must be back after a call, a fallback and an error alike.
    if errstate == "numpy 1.x fallback":
        monkeypatch.setattr(N, "_ERRSTATE", None)
    elif N._ERRSTATE is None:
        pytest.skip("numpy 1.x: np.errstate is the only way")
    x = np.array([1.0, np.inf, -np.inf, 2.0, 3.0, 4.0], dtype=np.float32)
    g = N.grouping_offsets(6, np.array([0, 3, 6]))
    seen = []
    real = N._plain_float32
    monkeypatch.setattr(N, "_plain_float32", lambda *a: (seen.append(np.geterr()), real(*a))[1])
    with np.errstate(all="raise", under="warn"):
        before = np.geterr()
        out = np.empty_like(x)
        N.advantages(x, out, g, "mean", "group", 0, 0.0, "zero", "propagate", 0)  # plain, then general
        assert np.isnan(out[:3]).all() and np.isfinite(out[3:]).all()
        assert np.geterr() == before
        with pytest.raises(ValueError, match=r"rewards\[1\] is inf"):
            N.advantages(x, out, g, "mean", "group", 0, 0.0, "zero", "raise", 0)
        assert np.geterr() == before
    assert seen and all(set(s.values()) == {"ignore"} for s in seen)
