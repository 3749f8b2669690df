"""Pure-numpy backend: the same functions, arguments and semantics as the compiled
``groupadv._native`` module, in the same four stages (DESIGN.md), vectorised over groups:

1. layout   ``Grouping``: a flat buffer cut into groups; every stage sees it only through
            ``view`` / ``sum`` / ``spread`` / ``reduce`` (uniform groups are the rows of a 2-D
            view; ragged groups use ``reduceat``; labelled groups ``bincount`` over codes).
2. moments  ``_group_moments``: per group count, mean, M2 in float64 as ``(count, mean, m2,
            scale)`` with ``M2 = m2 * scale**2`` (the under/overflow guard), ``merge_moments``,
            ``moments_std`` (THE guarded std), ``_merge_all`` (batch moments).
3. policy   ``_policy``: the rules (centre, scale, ddof/eps, batch std, singleton, non-finite,
            overflow) turn moments into per-group ``A = (r - a_g) * b_g`` or a fault.
4. apply    ``_apply``: the write pass.

Statistics are float64 whatever the input dtype; each group's mean is taken relative to its
first valid reward so that an all-equal group has M2 == 0 and advantages of exactly 0 (float32
rewards need no shift: their float64 sums are exact, so an all-equal group's sum / count is
exactly its value). The error messages are the core's, so both backends agree to rounding.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from typing import Any

import numpy as np

from ._inputs import MAX_THREADS, default_threads_value, environment_threads
from .errors import AdvantageOverflowError, NonFiniteRewardError, SingletonGroupError

__version__ = "numpy"

_CENTERS = ("mean", "loo", "none")
_SCALES = ("group", "batch", "batch_residual", "none")
_SINGLETONS = ("zero", "raw", "error")
_NANS = ("raise", "propagate", "omit")
# sqrt(M2) outside [_TINY, _HUGE]: squared deviations may have under/overflowed float64, so the
# moments are kept scaled by a power of two near the largest deviation (exact rescaling).
_TINY, _HUGE = 1e-140, 1e150
# Rewards per piece of the plain case at most: a piece's buffers stay in cache. Ragged pieces
# are half as long (two np.repeat temporaries and the squares besides the residuals; measured).
_PIECE = 1 << 16
_LIFT = 2.0**60  # the core's lift of residuals whose 1/denominator overflows (exact scaling)

# np.einsum without optimize= hands its arguments to the compiled einsum unchanged; calling that
# directly saves a Python layer (a µs per call); any numpy without it: np.einsum.
_einsum: Any = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "c_einsum", np.einsum)

_OVERFLOW = (
    "the rewards of group {} overflow float64 in its statistics, or the output dtype in its "
    "advantages; rescale rewards of magnitude near the float range"
)
_BATCH_OVERFLOW = (
    "the rewards overflow float64 in the batch std; rescale rewards of magnitude near the float range"
)


# Float warnings off, set directly where numpy (>= 2) keeps them: in a context variable. After
# idle time (a training step between calls) np.errstate's Python layers cost 20-30 µs of a
# 1e4-reward call (a fifth of it, measured); setting the variable to an error state made once
# costs a µs. (That state keeps the buffer size numpy had at import; it only paces buffered
# casts.) numpy 1.x: np.errstate.
def _error_state_variable() -> tuple[Any, Any]:
    """(numpy's error-state context variable, an error state that ignores all), or (None, None)
    where numpy has none (1.x) or keeps it elsewhere."""
    try:
        from numpy._core import _ufunc_config, umath

        return getattr(_ufunc_config, "_extobj_contextvar"), getattr(umath, "_make_extobj")(all="ignore")
    except (ImportError, AttributeError, TypeError):
        return None, None


_ERRSTATE, _ALL_IGNORED = _error_state_variable()


def _quiet(fn):
    """Run a backend entry point with float warnings off: inf and NaN are handled by the rules."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _ERRSTATE is None:
            with np.errstate(all="ignore"):
                return fn(*args, **kwargs)
        token = _ERRSTATE.set(_ALL_IGNORED)
        try:
            return fn(*args, **kwargs)
        finally:
            _ERRSTATE.reset(token)

    return wrapper


# ============================================================================ 1. layout


class Grouping:
    """A resolved group layout (numpy twin of the native ``Grouping``).

    kind "uniform" (``size``), "ragged" (contiguous groups, ``offsets``) or "permuted"
    (labels in any order: ``labels`` = the group code of each reward)."""

    __slots__ = ("n", "n_groups", "kind", "size", "offsets", "labels", "first", "_sizes", "_all_live", "_counts",
                 "_consts", "_pieces", "_index")

    def __init__(self, n, n_groups, kind, *, size=0, offsets=None, labels=None, first=None, sizes=None,
                 all_live=None):
        self.n, self.n_groups, self.kind = int(n), int(n_groups), kind
        self.size, self.offsets, self.labels, self.first = size, offsets, labels, first
        if kind == "uniform":
            sizes = np.full(self.n_groups, size, dtype=np.int64)
        elif kind == "ragged" and sizes is None:
            sizes = np.diff(offsets)
        self._sizes = sizes
        if all_live is None:  # (no empty group; the caller may know it already)
            all_live = bool(sizes.all()) if sizes is not None else True
        self._all_live = all_live
        self._counts = None
        self._consts = None
        self._pieces: Any = None
        self._index: Any = None  # see spread_index

    def consts(self):
        """Read-only per-group constants, made once: (ones, falses, ones of a row)."""
        if self._consts is None:
            ones, falses, row = np.ones(self.n_groups), np.zeros(self.n_groups, dtype=bool), np.ones(self.size)
            for a in (ones, falses, row):
                a.flags.writeable = False
            self._consts = (ones, falses, row)
        return self._consts

    def min_count(self) -> float:
        """The smallest group size."""
        return float(self._sizes.min()) if self.n_groups else 0.0

    def counts(self) -> np.ndarray:
        """Group sizes as float64 (the unweighted counts), computed once."""
        if self._counts is None:
            self._counts = self._sizes.astype(np.float64)
            self._counts.flags.writeable = False  # reused by every call on this layout
        return self._counts

    def sizes(self) -> np.ndarray:
        return self._sizes

    def codes(self) -> np.ndarray:
        if self.kind == "permuted":
            return self.labels.copy()
        return np.repeat(np.arange(self.n_groups, dtype=np.int64), self.sizes())

    def __repr__(self) -> str:
        return f"Grouping(kind={self.kind!r}, n={self.n}, n_groups={self.n_groups})"

    # --- the operations the other stages use (v: an array in the working shape of `view`) ---
    def view(self, x: np.ndarray) -> np.ndarray:
        """x in the working shape: (n_groups, size) rows for uniform groups, else flat."""
        return x.reshape(self.n_groups, self.size) if self.kind == "uniform" else x

    def sum(self, v: np.ndarray) -> np.ndarray:
        """Per-group sums in float64."""
        if self.kind == "uniform":
            if v.dtype != np.float64:
                return v.sum(axis=1, dtype=np.float64)
            # Row sums: einsum is several times faster than sum(axis=1) on short rows, and a
            # row's sum does not depend on the rows around it (BLAS's rows-times-ones does: its
            # kernels round a row differently by its position and alignment).
            return _einsum("ij->i", v)
        if self.kind == "permuted":
            return np.bincount(self.labels, weights=v, minlength=self.n_groups)
        return self._reduceat(np.add, v, 0.0, np.float64)

    def pieces(self) -> list:
        """The layout cut into consecutive pieces of whole groups, of equal length up to
        ``_PIECE`` rewards, as ``(start, end, Grouping of the piece)``; labelled groups are one
        piece. A group's sums do not depend on the piece it is in, so piece by piece gives the
        bits of the whole."""
        most = _PIECE if self.kind == "uniform" else _PIECE // 2
        if self.kind == "permuted" or self.n <= most:
            return [(0, self.n, self)]  # (not kept: a layout holding itself would be a cycle for the gc)
        if self._pieces is None:
            self._pieces = self._cut(-(-self.n // -(-self.n // most)))
        return self._pieces

    def _cut(self, target: int) -> list:
        if self.kind == "uniform":
            step = max(1, -(-target // self.size)) * self.size
            return [(s, min(s + step, self.n), grouping_uniform(min(step, self.n - s), self.size))
                    for s in range(0, self.n, step)]
        offs, sizes, live = self.offsets, self._sizes, self._all_live or None
        # the first group boundary at or after each multiple of target (ascending: a group
        # longer than target gives the same boundary twice)
        cuts = [0]
        for c in np.searchsorted(offs, np.arange(target, self.n, target)).tolist():
            if cuts[-1] < c < self.n_groups:
                cuts.append(c)
        cuts.append(self.n_groups)
        at = offs[cuts].tolist()
        return [(s, e, Grouping(e - s, j1 - j0, "ragged", offsets=offs[j0:j1 + 1] - s, sizes=sizes[j0:j1],
                                all_live=live))
                for j0, j1, s, e in zip(cuts, cuts[1:], at, at[1:])]

    def spread_index(self):
        """Ragged groups used again (a layout kept by grouping_offsets, or passed as groups=):
        the group of each reward, made on the second use; None on the first. ``p.take(index)``
        is ``np.repeat(p, sizes)`` without np.repeat's branch at each group's end (mispredicted
        for random sizes): faster while the indexes stay in cache (the caller asks only for
        layouts of _INDEX_LEAST to _INDEX_MOST rewards, see there)."""
        if self._index is None:
            self._index = False  # used once
        elif self._index is False:
            self._index = np.repeat(np.arange(self.n_groups, dtype=np.intp), self._sizes)
        return self._index if self._index is not False else None

    def reduce(self, ufunc, v: np.ndarray, empty) -> np.ndarray:
        """Per-group ``ufunc`` reduction (``empty`` for a group without members)."""
        if self.kind == "uniform":
            return ufunc.reduce(v, axis=1)
        if self.kind == "permuted":
            out = np.full(self.n_groups, empty, dtype=v.dtype)
            ufunc.at(out, self.labels, v)
            return out
        return self._reduceat(ufunc, v, empty, v.dtype)

    def _reduceat(self, ufunc, v, empty, dtype):
        starts = self.offsets[:-1]
        if self._all_live:
            return ufunc.reduceat(v, starts, dtype=dtype)
        out = np.full(self.n_groups, empty, dtype=dtype)
        live = self._sizes > 0
        out[live] = ufunc.reduceat(v, starts[live], dtype=dtype)
        return out

    def spread(self, p: np.ndarray) -> np.ndarray:
        """A per-group value for every member, broadcastable against the working shape."""
        if self.kind == "uniform":
            return p[:, None]
        if self.kind == "permuted":
            return p[self.labels]
        return np.repeat(p, self._sizes)

    def first_members(self) -> np.ndarray:
        """Index (into the working shape, flattened) of each group's first member (n if none)."""
        if self.kind == "uniform":
            return np.arange(0, self.n, self.size, dtype=np.int64)
        if self.kind == "permuted":
            return self.first
        starts = self.offsets[:-1].copy()
        starts[self._sizes == 0] = self.n
        return starts

    def members(self, grp: int) -> np.ndarray:
        """Input indices of group ``grp``, ascending (error paths only)."""
        if self.kind == "uniform":
            return np.arange(grp * self.size, (grp + 1) * self.size)
        if self.kind == "ragged":
            return np.arange(self.offsets[grp], self.offsets[grp + 1])
        return np.flatnonzero(self.labels == grp)


_UNIFORM: dict = {}  # (n, size) -> Grouping: a call with group_size= reuses the layout of the last ones


def grouping_uniform(n: int, group_size: int) -> Grouping:
    if n == 0:
        raise ValueError("rewards is empty")
    if group_size <= 0 or n % group_size:
        raise ValueError(
            f"group_size={group_size} does not divide the number of rewards ({n}); "
            "group_size must be a positive divisor of len(rewards)"
        )
    key = (int(n), int(group_size))
    g = _UNIFORM.get(key)
    if g is None:
        if len(_UNIFORM) >= 32:
            _UNIFORM.clear()
        g = _UNIFORM[key] = Grouping(n, n // group_size, "uniform", size=int(group_size))
        g._sizes.flags.writeable = False  # shared between calls: nobody may change it
    return g


# The last offsets layout (of at most _KEEP_LAYOUT rewards) and its offsets' bytes: a call
# repeated with equal offsets (several reward components over one batch, the same array each
# call) reuses it, its pieces and all, for one comparison of the offsets' bytes (a copy and a
# memcmp: 0.15 us for 626 offsets, np.equal(...).all() 1.0 us). Its arrays are read-only: it
# is shared.
_LAST_OFFSETS: list = [None, b""]
_KEEP_LAYOUT = 1 << 20  # (its arrays: ~32 bytes a group, at most ~32 MB for 1M one-reward groups)
# The layouts that spread by index (Grouping.spread_index), measured: beyond 2^18 rewards the
# indexes (8 bytes a reward) leave the cache; up to 2^15 np.repeat is faster (a call's few hundred
# group ends are learnt by the branch predictor when the same layout comes again).
_INDEX_LEAST, _INDEX_MOST = 1 << 15, 1 << 18
_I64 = np.dtype(np.int64)


def grouping_offsets(n: int, offsets: np.ndarray) -> Grouping:
    last, last_bytes = _LAST_OFFSETS
    if (last is not None and last.n == n and type(offsets) is np.ndarray and offsets.dtype is _I64
            and offsets.shape == last.offsets.shape and offsets.tobytes() == last_bytes):
        return last
    if n == 0:
        raise ValueError("rewards is empty")
    if len(offsets) < 2:
        raise ValueError("offsets must have at least 2 entries")
    if offsets[0] != 0:
        raise ValueError(f"offsets[0] must be 0, got {offsets[0]}")
    offs = offsets.astype(np.int64)  # a copy: the layout outlives the caller's array
    sizes = offs[1:] - offs[:-1]
    smallest = np.minimum.reduce(sizes)  # (not sizes.min(): a µs of Python layers per call)
    if smallest < 0:
        i = int(np.flatnonzero(sizes < 0)[0]) + 1
        raise ValueError(
            f"offsets must be non-decreasing, but offsets[{i - 1}] = {offsets[i - 1]} "
            f"> offsets[{i}] = {offsets[i]}"
        )
    if offsets[-1] != n:
        raise ValueError(f"offsets[-1] must equal len(rewards) = {n}, got {offsets[-1]}")
    g = Grouping(n, len(offsets) - 1, "ragged", offsets=offs, sizes=sizes, all_live=bool(smallest > 0))
    if n <= _KEEP_LAYOUT:
        offs.flags.writeable = sizes.flags.writeable = False
        _LAST_OFFSETS[:] = [g, offs.tobytes()]
    return g


def _from_labels(labels: np.ndarray) -> tuple[Grouping, np.ndarray]:
    """Codes numbered by first appearance (as the native backend)."""
    n = len(labels)
    if n == 0:
        raise ValueError("rewards is empty")
    if n > 2**32 - 1:
        raise ValueError(
            f"group_ids supports at most {2**32 - 1} rewards, got {n}; "
            "pass contiguous groups as offsets instead"
        )
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    if labels.dtype.kind in "iu":
        lo, hi = int(labels.min()), int(labels.max())
    if labels.dtype.kind not in "iu" or hi - lo >= 4 * n:
        # Strings, bytes rows, sparse integers: dense integers first (one sort).
        labels = np.unique(labels, return_inverse=True)[1].reshape(-1)
        lo, hi = 0, int(labels.max())
    # Dense integer labels: tables indexed by label, no sort of the rewards.
    rel = labels - lo if lo else labels
    first_at = np.full(hi - lo + 1, n, dtype=np.int64)
    np.minimum.at(first_at, rel, np.arange(n))  # first appearance of each label
    present = np.flatnonzero(first_at < n)
    by_appearance = np.argsort(first_at[present])
    code_of = np.empty(len(first_at), dtype=np.int64)
    code_of[present[by_appearance]] = np.arange(len(present))
    codes = code_of[rel]
    first = first_at[present[by_appearance]]
    sizes = np.bincount(codes, minlength=len(present)).astype(np.int64)
    k = len(present)
    if np.all(first[1:] == np.cumsum(sizes)[:-1]):  # contiguous labels: offsets are cheaper
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        return Grouping(n, k, "ragged", offsets=offsets), first
    return Grouping(n, k, "permuted", labels=codes, first=first, sizes=sizes), first


def grouping_ids_int(ids: np.ndarray, with_labels: bool = False):
    """(layout, first index of each group), and with ``with_labels`` the label of each group."""
    g, first = _from_labels(ids)
    return (g, first, ids[first]) if with_labels else (g, first)


def grouping_ids_bytes(rows: np.ndarray) -> tuple[Grouping, np.ndarray]:
    n, width = rows.shape
    if width == 0:
        return _from_labels(np.zeros(n, dtype=np.int8))
    return _from_labels(np.ascontiguousarray(rows).view(np.dtype((np.void, width))).reshape(n))


def grouping_ids_str(ids) -> tuple[Grouping, np.ndarray]:
    """str labels, numbered by first appearance with a dict, in one C-level pass (hashing each str
    once; equal labels that are the same object, as ``np.repeat`` and verl's ``DataProto.repeat``
    make them, are found by identity before any comparison). An object array whose labels come
    in runs (each group contiguous, in any order) is cut into runs first and only the run heads
    are hashed."""
    n = len(ids)
    if n == 0:
        raise ValueError("rewards is empty")
    if n > 2**32 - 1:
        return _from_labels(np.array(list(ids), dtype=object))  # its error names the limit
    heads = _run_heads(ids) if isinstance(ids, np.ndarray) else None
    items = ids if heads is None else ids[heads]
    m = len(items)
    seen: dict = {}
    try:
        # each label's position of first appearance: setdefault keeps the first one it was given
        firsts = np.fromiter(map(seen.setdefault, items, itertools.count()), np.int64, count=m)
    except Exception:  # noqa: BLE001 - not all str: the caller's generic path names the problem
        raise TypeError("group_ids are not all str") from None
    if not all(map(isinstance, seen, itertools.repeat(str))):
        i = next(i for i, item in enumerate(ids) if not isinstance(item, str))
        raise TypeError(f"group_ids[{i}] is not a str (got {type(ids[i]).__name__})")
    lead = np.flatnonzero(firsts == np.arange(m))  # the first appearances, in order
    k = len(lead)
    code_of = np.empty(m, dtype=np.int64)
    code_of[lead] = np.arange(k)
    codes = code_of[firsts]
    if heads is None:
        return _from_codes(codes, k, lead)
    if k == len(heads):  # every label one run: contiguous groups
        offsets = np.append(heads, n).astype(np.int64)
        return Grouping(n, k, "ragged", offsets=offsets), heads
    return _from_codes(np.repeat(codes, np.diff(np.append(heads, n))), k, heads[lead])


def _run_heads(labels: np.ndarray) -> np.ndarray | None:
    """Indices where a run of equal labels starts, when runs are long enough to pay (else None)."""
    n = len(labels)
    if labels.dtype != object or n < 4096:
        return None
    try:
        if np.count_nonzero(labels[1:1025] != labels[:1024]) > 256:
            return None  # mostly runs of one: hashing every label is cheaper
        change = np.empty(n, dtype=bool)
        change[0] = True
        np.not_equal(labels[1:], labels[:-1], out=change[1:])
    except Exception:  # noqa: BLE001 - a label's own __ne__ raised or returned no bool
        return None
    return np.flatnonzero(change)


def _from_codes(codes: np.ndarray, k: int, first: np.ndarray) -> tuple[Grouping, np.ndarray]:
    """A layout from codes 0..k-1 numbered by first appearance, and the position of each
    group's first reward."""
    n = len(codes)
    sizes = np.bincount(codes, minlength=k).astype(np.int64)
    if np.all(first[1:] == np.cumsum(sizes)[:-1]):  # contiguous labels: offsets are cheaper
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        return Grouping(n, k, "ragged", offsets=offsets), first
    return Grouping(n, k, "permuted", labels=codes, first=first, sizes=sizes), first


# ============================================================================ 2. moments


def _pow2_scale(root: np.ndarray | float) -> np.ndarray:
    """The scale of moments whose sqrt(M2) (or largest deviation) is ``root``: 1.0 in the safe
    range, else the power of two at or just below ``root`` (dividing by it is exact; the
    scaled deviations are then below 2 and their squares neither over- nor underflow)."""
    root = np.asarray(root, dtype=np.float64)
    safe = (root == 0.0) | ((root >= _TINY) & (root <= _HUGE)) | ~np.isfinite(root)
    _, exp = np.frexp(np.where(safe, 1.0, root))
    return np.where(safe, 1.0, np.ldexp(1.0, exp - 1))


def _rescaled(m2, scale, big):
    """``m2`` of moments at ``scale`` expressed at the common scale ``big``: m2 * (scale/big)**2.
    A record without spread (m2 == 0) adds exactly 0 whatever its scale: scale / big may
    overflow for it (a unit-scale singleton beside subnormal spreads), and 0 * inf is NaN. The
    ratio is applied twice, not squared: an overflowed m2 (inf) stays inf (an overflow error
    later), where a squared ratio underflowing to 0 would make it NaN."""
    r = scale / big
    return np.where(m2 == 0.0, 0.0, (m2 * r) * r)


def _check_nan(nan):
    if nan not in _NANS:
        raise ValueError(f"nan must be one of {', '.join(repr(a) for a in _NANS)}, got {nan!r}")


class _Moments:
    """Group moments of one reward buffer plus what the apply stage reuses: the residuals
    ``r - mean`` in the working shape (0 at omitted rewards) and the valid mask (None: all)."""

    __slots__ = ("count", "mean", "m2", "scale", "smean", "res", "valid", "bad_mean", "any_bad", "lifted",
                 "unit_scale", "min_count", "given")
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    scale: np.ndarray
    smean: np.ndarray  # the mean in units of `scale` (differs from mean where scale < 1)
    res: np.ndarray
    valid: np.ndarray | None
    bad_mean: np.ndarray
    any_bad: bool
    lifted: bool
    unit_scale: bool
    min_count: float
    given: bool

    def __init__(self) -> None:
        self.given = False  # passed by the caller (moments=), not computed from these rewards

    def record(self):
        return self.count, self.mean, self.m2, self.scale


def _group_moments(x: np.ndarray, g: Grouping, nan: str, weights=None) -> _Moments:
    """Per-group (count, mean, m2, scale) of the rewards (contract: MOMENTS_CONTRACT.md)."""
    xv = g.view(x)
    w = None if weights is None else g.view(weights)
    m = _Moments()
    m.valid = None
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # per-group arrays, set by the fast path or (None there) by the slow path below
        count: Any = None
        mean: Any = None
        all_finite = False
        if w is None:
            # Fast path: every reward counts once.
            count = g.counts()
            per = count if g._all_live else np.where(count > 0, count, 1.0)
            exact = x.dtype == np.float32 and g.n < 2**29
            if exact:  # an all-equal group's float64 sum of float32 values is exact: mean == value
                xv = g.view(x.astype(np.float64))  # one conversion, then float64 passes
                mean = g.sum(xv) / per
            all_finite = exact and bool(np.isfinite(mean).all())
            if not all_finite:
                # Relative to the first reward (non-finite ones give the core's inf or NaN).
                shift = x[np.minimum(g.first_members(), g.n - 1)].astype(np.float64)
                mean = shift + g.sum(xv - g.spread(shift)) / per
                all_finite = bool(np.isfinite(mean).all())
            if nan == "omit" and not all_finite:
                count = None  # some rewards are left out: the slow path
        if count is not None:
            wv = None
            res = xv - g.spread(mean)
            m2 = _einsum("ij,ij->i", res, res) if g.kind == "uniform" else g.sum(res * res)
        else:
            # Slow path: some rewards are left out (non-finite under "omit"), or weighted.
            valid = np.isfinite(xv) if nan == "omit" else np.ones(xv.shape, dtype=bool)
            m.valid = valid if nan == "omit" else None
            live = valid if w is None else valid & (w > 0)
            wv = valid.astype(np.float64) if w is None else np.where(valid, w, 0.0)
            count = g.sum(wv)
            pos = np.where(live.reshape(-1), np.arange(g.n), g.n)
            first = g.reduce(np.minimum, g.view(pos), g.n)
            shift = np.append(xv.reshape(-1), 0.0).astype(np.float64)[first]  # first live reward (0 if none)
            dev = np.where(live, xv - g.spread(shift), 0.0)
            mean = shift + g.sum(dev * wv) / np.where(count > 0, count, 1.0)
            res = np.where(live, xv - g.spread(mean), 0.0)
            m2 = g.sum(res * res * wv)
    if wv is not None or not g._all_live:
        mean = np.where(count > 0, mean, 0.0)
        m2 = np.where(count > 0, m2, 0.0)
    ones, falses, _ = g.consts()
    scale = ones
    m.any_bad = not (all_finite and count is g._counts) and not np.isfinite(mean).all()
    m.bad_mean = (count > 0) & ~np.isfinite(mean) if m.any_bad else falses
    risky: Any = None  # groups whose squared deviations leave the float64 range (or None)
    if x.dtype != np.float32:  # float32 deviations can neither over- nor underflow when squared
        risky = (count > 0) & ~m.bad_mean & ~((m2 >= _TINY**2) & (m2 <= _HUGE**2))
        if risky.any():
            # Exact rescaling by a power of two near each group's largest deviation; the mean
            # and M2 are recomputed from the rescaled rewards (for subnormal spreads the
            # float64 mean itself is too coarse: `smean` is the mean in units of `scale`).
            amax = g.reduce(np.maximum, np.where(g.spread(risky), np.abs(res), 0.0), 0.0)
            scale = np.where(risky, _pow2_scale(amax), 1.0)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                xs = xv / g.spread(scale)
                lv = np.ones(xv.shape, dtype=bool) if m.valid is None else m.valid
                wl = np.where(lv, 1.0, 0.0) if wv is None else wv
                first = g.reduce(np.minimum, g.view(np.where(lv.reshape(-1), np.arange(g.n), g.n)), g.n)
                shift = np.append(xs.reshape(-1), 0.0)[first]
                dev = np.where(lv, xs - g.spread(shift), 0.0)
                smean = np.where(risky, shift + g.sum(dev * wl) / np.where(count > 0, count, 1.0), mean)
                q = np.where(g.spread(risky) & lv, xs - g.spread(smean), 0.0)
                m2 = np.where(risky & np.isfinite(amax), g.sum(q * q * wl), np.where(risky, np.inf, m2))
                mean = np.where(risky, smean * scale, mean)
    m.lifted = risky is not None and bool((scale < 1.0).any())
    m.unit_scale = risky is None or not risky.any()
    m.min_count = g.min_count() if count is g._counts else (float(count.min()) if len(count) else 0.0)
    m.smean = smean if risky is not None and risky.any() else mean
    m.count, m.mean, m.m2, m.scale, m.res = count, mean, m2, scale, res
    return m


def _as_record(m) -> tuple:
    count, mean, m2, scale = (np.ascontiguousarray(a, dtype=np.float64).reshape(-1) for a in m)
    if not (len(count) == len(mean) == len(m2) == len(scale)):
        raise ValueError("moments must be four arrays (count, mean, m2, scale) of equal length")
    return count, mean, m2, scale


@_quiet
def merge_moments(a, b):
    """Chan et al.'s merge, elementwise over groups, in the scaled form."""
    na, ma, m2a, sa = _as_record(a)
    nb, mb, m2b, sb = _as_record(b)
    if len(na) != len(nb):
        raise ValueError(f"cannot merge moments of {len(na)} and {len(nb)} groups")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        n = na + nb
        delta = mb - ma
        frac = np.where(n > 0, nb / np.where(n > 0, n, 1.0), 0.0)
        mean = np.where(delta == 0, ma, ma + delta * frac)
        cross = na * frac  # na * nb / n
        # One common scale from the three square roots that make up sqrt(M2).
        ra, rb, rc = sa * np.sqrt(m2a), sb * np.sqrt(m2b), np.abs(delta) * np.sqrt(cross)
        root = np.maximum(np.maximum(ra, rb), rc)
        s = np.where(np.isfinite(root), _pow2_scale(root), np.maximum(sa, sb))
        m2 = _rescaled(m2a, sa, s) + _rescaled(m2b, sb, s) + (delta / s) ** 2 * cross
    mean = np.where(nb == 0, ma, np.where(na == 0, mb, mean))
    m2 = np.where(nb == 0, m2a, np.where(na == 0, m2b, m2))
    s = np.where(nb == 0, sa, np.where(na == 0, sb, s))
    return n, mean, m2, s


@_quiet
def moments_std(m, ddof) -> np.ndarray:
    """THE guarded std: ``scale * sqrt(m2 / (count - ddof))``, NaN where count <= ddof."""
    return _std(_as_record(m), ddof)


def _std(m, ddof, unit_scale=False, all_dof=False) -> np.ndarray:
    """moments_std; ``unit_scale``: every scale is 1, ``all_dof``: every count > ddof."""
    count, _, m2, scale = m
    dof = count - ddof if ddof else count
    std = np.sqrt(m2 / (dof if all_dof else np.where(dof > 0, dof, 1.0)))
    if not unit_scale:
        std *= scale
    return std if all_dof else np.where(dof > 0, std, np.nan)


def _merge_all(m) -> tuple:
    """The batch record: all groups merged into one, in a fixed (group) order, with the merge
    written in closed form: mean = sum(c mean_g) / C, M2 = sum M2_g + sum c (mean_g - mean)^2."""
    count, mean, m2, scale = m
    live = count > 0
    if not live.any():
        return 0.0, 0.0, 0.0, 1.0
    c, mu, q, s = count[live], mean[live], m2[live], scale[live]
    total = float(c.sum())
    with np.errstate(invalid="ignore", over="ignore"):
        shift = mu[0]  # all groups equal: the batch mean is that value exactly
        bmean = float(shift + np.sum((c / total) * (mu - shift)))
        dev = mu - bmean
        root = max(float(np.max(s * np.sqrt(q))), float(np.max(np.abs(dev))))
        big = float(_pow2_scale(root)) if np.isfinite(root) and root > 0 else float(np.max(s))
        bm2 = float(np.sum(_rescaled(q, s, big)) + np.sum(c * (dev / big) ** 2))
    return total, bmean, bm2, big


def _residual_all(m) -> tuple:
    """The batch record of the residuals r - mean_g: count = sum counts, M2 = sum of M2s."""
    count, _, m2, scale = m
    total = float(count.sum())
    with np.errstate(invalid="ignore", over="ignore"):
        root = float(np.max(scale * np.sqrt(m2))) if len(m2) else 0.0
        big = float(_pow2_scale(root)) if np.isfinite(root) and root > 0 else float(np.max(scale, initial=1.0))
        return total, 0.0, float(np.sum(_rescaled(m2, scale, big))), big


@_quiet
def group_moments(rewards, grouping, nan, weights, num_threads):
    _check_nan(nan)
    g = grouping
    if len(rewards) != g.n:
        raise ValueError(f"rewards has length {len(rewards)} but the groups cover {g.n} rewards")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if len(weights) != g.n:
            raise ValueError(f"weights has length {len(weights)} but rewards has length {g.n}")
    m = _group_moments(rewards, g, nan, weights)
    err = _faults(rewards, g, m, nan, "zero")
    if err is not None:
        raise err
    return tuple(a.copy() for a in m.record())


# ============================================================================ 3. policy


def _check(center, scale, ddof, eps, singleton, nan):
    for what, got, allowed in (
        ("center", center, _CENTERS),
        ("scale", scale, _SCALES),
        ("singleton", singleton, _SINGLETONS),
        ("nan", nan, _NANS),
    ):
        if got not in allowed:
            names = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"{what} must be one of {names}, got {got!r}")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof}")
    if not (math.isfinite(eps) and eps >= 0):  # math, not numpy: a µs per call at small N
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")


def _fmt(v) -> str:
    v = float(v)
    return "NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf")


def _nonfinite_groups(x, g) -> np.ndarray:
    """Per group: does it hold a NaN or infinite reward?"""
    return g.sum((~np.isfinite(g.view(x))).astype(np.float64)) > 0


def _faults(x, g, m, nan, singleton, late=None):
    """The error for the lowest group with a fault, as the core reports it (or None). ``late``
    marks groups whose std or advantages overflowed (checked last within a group)."""
    bad_mean = m.bad_mean
    faults = np.zeros(g.n_groups, dtype=bool)
    overflow = faults
    if bad_mean.any():
        if nan == "omit":
            overflow = bad_mean  # only finite rewards were summed
        elif nan == "propagate" and not m.given:
            # given moments carry the poison of non-finite rewards seen elsewhere (other batches)
            overflow = bad_mean & ~_nonfinite_groups(x, g)
        elif nan == "propagate":
            overflow = np.zeros_like(bad_mean)
        faults = bad_mean if nan == "raise" else overflow
    if singleton == "error":
        # A group poisoned by a NaN under "propagate" is NaN, whatever its size.
        faults = faults | ((m.count == 1) & ~(bad_mean & (nan == "propagate")))
    if late is not None:
        faults = faults | late
    hits = np.flatnonzero(faults)
    if not hits.size:
        return None
    grp = int(hits[0])
    idx = g.members(grp)
    if overflow[grp]:
        return AdvantageOverflowError(_OVERFLOW.format(grp), group=grp)
    if nan == "raise" and bad_mean[grp]:
        nonfinite = idx[~np.isfinite(x[idx])]
        if not nonfinite.size:
            return AdvantageOverflowError(_OVERFLOW.format(grp), group=grp)
        i = int(nonfinite[0])
        return NonFiniteRewardError(
            f"rewards[{i}] is {_fmt(x[i])}; pass nan='propagate' or nan='omit' to allow non-finite rewards",
            index=i, group=grp, value=float(x[i]),
        )
    if not (singleton == "error" and m.count[grp] == 1):
        return AdvantageOverflowError(_OVERFLOW.format(grp), group=grp)
    finite = idx[np.isfinite(x[idx])]
    i = int(finite[0]) if finite.size else int(idx[0])
    return SingletonGroupError(
        f"group {grp} (rewards[{i}]) has a single reward, and singleton='error'; "
        "use singleton='zero' or 'raw' to allow it", index=i, group=grp,
    )


def _batch_denominator(m, scale, ddof, eps, batch_std) -> float:
    """d = batch std + eps: the caller's batch std, or the std of the merged group moments."""
    if batch_std is not None:
        return float(batch_std) + eps
    record = _merge_all(m) if scale == "batch" else _residual_all(m)
    with np.errstate(invalid="ignore", over="ignore"):
        std = float(moments_std(tuple(np.array([v]) for v in record), ddof)[0])
    if np.isinf(std):
        raise AdvantageOverflowError(_BATCH_OVERFLOW)
    return std + eps


def _policy(m, center, scale, ddof, eps, singleton, batch_d):
    """Per-group affine coefficients ``A = (((r * p - a) * lift) * b) * post``, plus the groups
    whose std overflowed (or None). ``p`` is 1, or a power of two near 1/scale for groups of
    tiny spread (scale < 1), whose rewards are lifted (exactly) before the centre is
    subtracted; ``a`` and ``b`` are in those units. ``lift`` and ``post`` are None (1) except
    in the rare groups whose 1/denominator over- or underflows (powers of two, see below).
    ``a is m.mean`` when every group is centred on its mean."""
    count = m.count
    all_many = m.min_count > 1
    many = True if all_many else count > 1
    if m.lifted:
        p = np.where(m.scale < 1.0, 1.0 / np.maximum(m.scale, 2.0**-1000), 1.0)  # finite
        sp = m.scale * p  # exact: both powers of two
        centre = np.where(m.scale < 1.0, m.smean * sp, m.mean)
    else:
        p, sp, centre = np.float64(1.0), m.scale, m.mean
    a = centre if center != "none" else 0.0
    factor = np.where(many, count / np.maximum(count - 1, 1), 0.0) if center == "loo" else many
    late = None
    if scale == "group":
        std = _std((count, m.mean, m.m2, sp), ddof, m.unit_scale, m.min_count > ddof)  # std * p
        finite = np.isfinite(std)
        if not finite.all():
            late = many & ~finite & ~m.bad_mean
        denom = std + eps * p if eps else std
        if center != "none" and eps:
            # a centred group with no spread has residuals of exactly 0: its advantages are 0
            # even where 1/eps overflows (eps subnormal), never 0 * inf
            denom = np.where(std == 0.0, 0.0, denom)
    elif scale == "none":
        denom = p
    else:
        denom = batch_d * p
    b = np.where(many & (denom != 0.0), factor / denom, 0.0)  # no spread: exactly 0, whatever eps
    b = b if b.shape == count.shape else np.full(count.shape, b)  # a batch or unit scale
    d1 = None
    if singleton == "raw":  # verl: mean 0, std 1
        one = count == 1
        a = np.where(one, 0.0, a)
        d1 = np.multiply(1.0 + eps if scale == "group" else batch_d if scale != "none" else 1.0, p)
        b = np.where(one, np.where(d1 != 0.0, np.divide(1.0, d1), 0.0), b)
    lift = None
    if not np.isfinite(b).all():
        # The core's lift: where 1/denominator overflows (a subnormal denominator) the residuals
        # are first multiplied by 2^60 (exact) and b divided by it: A = ((r * p - a) * lift) * b.
        over = np.isinf(b)
        if over.any():
            num = factor if d1 is None else np.where(one, 1.0, factor)
            den = denom if d1 is None else np.where(one, d1, denom)
            b = np.where(over, num / (den * _LIFT), b)
            lift = np.where(over, _LIFT, 1.0)
    post = None
    if m.lifted:
        # The reverse: a lifted group (p > 1) whose denominator in lifted units overflows (a
        # batch std near 1e154, a large eps) keeps b in plain units and multiplies the
        # advantage by 1/p last (exact): A = ((r * p - a) * b) * post, A * p stays small.
        plain = many & (p > 1.0) & np.isinf(denom)
        if scale == "group":
            plain &= np.isfinite(std)
        if plain.any():
            d = std / p + eps if scale == "group" else batch_d
            b = np.where(plain, factor / d, b)
            post = np.where(plain, 1.0 / p, 1.0)
    if m.any_bad:
        a = np.where(m.bad_mean, np.nan, a)  # a poisoned group is NaN (nan="propagate")
    return a, p, b, late, lift, post


# ============================================================================ the plain case
# GRPO's z-score (center="mean", scale="group") of finite rewards without moments= or batch_std=
# is nearly every call. Its stages in the fewest numpy calls, piece by piece (Grouping.pieces:
# whole groups, a piece's buffers in cache): one float64 buffer per thread, reused for the
# residuals and the advantages; no per-group masks. Any case these functions do not cover exactly
# (a non-finite reward, a spread that needs rescaling, a one-reward group under
# singleton="raw"/"error") returns None / False, and the call takes the general stages above.

_local = threading.local()  # the float64 buffer of this thread's plain calls
_KEEP = 1 << 18  # the most float64 values kept between calls (2 MiB); larger buffers are fresh
# Scratch of up to this many float64 values (512 KiB) is fresh, not kept: numpy's allocator hands
# back memory that the program used a moment ago (in cache, its pages mapped), where a kept
# buffer has gone cold while other work ran. Measured after idle time: 1e4-reward calls ~10%
# faster so, 1e5 uniform and ragged a little; labelled layouts of 1e5 rewards (one 800 KB piece)
# were ~15% slower fresh (page faults), hence the bound.
_FRESH = 1 << 16


def _borrow(n: int) -> np.ndarray:
    """At least n float64 values of scratch: fresh up to _FRESH values, else this thread's kept
    buffer (no page faults, no zeroing), taken out while in use, so that a call made meanwhile
    (a signal handler's) gets its own."""
    if n <= _FRESH:
        return np.empty(n)
    buf = _local.__dict__.pop("buf", None)
    if buf is None or len(buf) < n:
        buf = np.empty(max(n, _KEEP))  # at least the kept size, so that it is kept
    return buf


def _give_back(buf: np.ndarray) -> None:
    if _FRESH < len(buf) <= _KEEP:
        _local.buf = buf


def _plain_moments(x: np.ndarray, g: Grouping, res: np.ndarray):
    """Moments stage, plain case: the residuals r - mean written into ``res`` (float64, flat),
    and M2 per group (a fresh array); or None. float32: the
    float64 sum of an all-equal group is exact (n < 2**29), so its mean is its value; float64:
    relative to each group's first reward."""
    rv = g.view(res)
    uniform = g.kind == "uniform"
    if x.dtype == np.float32:
        if g.n >= 2**29:
            return None
        np.copyto(res, x)  # exact; float64 passes from here on
        total = g.sum(rv)
        # (a scalar divides faster than the counts, to the same bits; an empty group's NaN
        # mean is spread over no reward)
        np.subtract(rv, g.spread(total / (g.size if uniform else g.counts())), out=rv)
    else:
        xv = g.view(x)
        first = xv[:, 0] if uniform else x[np.minimum(g.first_members(), g.n - 1)]
        np.subtract(xv, g.spread(first), out=rv)
        total = g.sum(rv)
        if not math.isfinite(np.add.reduce(total)):  # a non-finite reward, or a spread beyond float64
            return None
        # The general stage's arithmetic exactly (mean = first + sum / count, then r - mean),
        # so that the two paths give the same bits, in every layout; exact 0 when all equal.
        np.subtract(xv, g.spread(first + total / g.counts()), out=rv)
    # Row dots for uniform groups (no temporary); the other layouts reduce the squares.
    m2 = _einsum("ij,ij->i", rv, rv) if uniform else g.sum(np.square(res))
    if x.dtype == np.float32:
        # float32 squared deviations can neither over- nor underflow in float64: M2 is
        # non-finite exactly when a reward is (NaN, inf)
        return m2 if math.isfinite(np.add.reduce(m2)) else None
    # float64 squared deviations may have under/overflowed: the rescaled general path; m2 == 0
    # is an all-equal group only if no residual is nonzero.
    zero = m2 == 0.0
    if not (zero | ((m2 >= _TINY**2) & (m2 <= _HUGE**2))).all():
        return None
    if zero.any() and g.sum(np.abs(rv))[zero].any():
        return None
    return m2


# Below any nonzero std + eps of the plain case (>= ~1e-145: float32 spreads are >= 2**-150,
# float64 ones within _TINY), and 1 / _FLOOR is finite.
_FLOOR = 1e-300


def _plain_policy(g: Grouping, m2: np.ndarray, ddof: int, eps: float) -> np.ndarray:
    """Policy stage, plain case, in place on ``m2``: b = 1 / (std + eps) per group. Where the
    general stage's b is 0 (a group without spread, std == 0; a one-reward group with ddof=1,
    std NaN; an empty group) b is the finite 1 / max(eps, _FLOOR) instead: the residuals of
    such a group are exactly +0 (r - r), and +0 * b is +0 * 0, the same bits, with three
    numpy calls fewer (no mask)."""
    count = g.size if g.kind == "uniform" else g.counts()  # a scalar divides faster, to the same bits
    b = np.divide(m2, count - ddof if ddof else count, out=m2)
    np.sqrt(b, out=b)
    if eps:
        np.add(b, eps, out=b)
    if ddof or eps < _FLOOR:  # else std + eps >= eps >= _FLOOR already (NaN only in empty groups)
        np.fmax(b, _FLOOR, out=b)  # (fmax: NaN -> _FLOOR)
    return np.divide(1.0, b, out=b)


def _has_singletons(g: Grouping) -> bool:
    return g.size == 1 if g.kind == "uniform" else bool((g.sizes() == 1).any())


@_quiet
def _plain_advantages(x, g, ddof, eps, singleton, out) -> bool:
    """The plain case end to end (moments, policy, apply into ``out``), piece by piece; False
    when it does not apply (the general stages then write all of ``out``)."""
    if out.dtype != x.dtype or (singleton != "zero" and _has_singletons(g)):
        return False  # one-reward groups that another singleton rule treats
    if x.dtype == np.float32 and g.kind != "permuted" and g._all_live:
        return _plain_float32(x, g, ddof, eps, out)
    pieces = g.pieces()
    buf = _borrow(max(e - s for s, e, _ in pieces) if len(pieces) > 1 else g.n)
    try:
        for s, e, gp in pieces:
            r = buf[: e - s]  # the residuals, then the advantages
            m2 = _plain_moments(x[s:e], gp, r)
            if m2 is None:
                return False
            b = _plain_policy(gp, m2, ddof, eps)
            # apply: in cache, a float64 product and then a narrowing copy beat numpy's buffered cast
            rv = gp.view(r)
            if out.dtype == np.float64:
                np.multiply(rv, gp.spread(b), out=gp.view(out[s:e]))
            else:
                np.multiply(rv, gp.spread(b), out=rv)
                np.copyto(out[s:e], r, casting="unsafe")
    finally:
        _give_back(buf)
    return True


def _plain_float32(x, g, ddof, eps, out) -> bool:
    """The plain case of float32 rewards in uniform or ragged groups (none empty), GRPO's usual
    call: _plain_moments, _plain_policy and the apply with the layout's operations written out
    (Grouping.sum: einsum rows / add.reduceat, Grouping.spread: [:, None] / np.repeat), the
    same numpy operations on the same values, so the same bits, in fewer Python calls (the
    array methods and item assignment, not the np.* functions with their Python layers: these
    cost most after idle time)."""
    if g.n >= 2**29:
        return False
    uniform = g.kind == "uniform"
    pieces = g.pieces()
    most = max(e - s for s, e, _ in pieces) if len(pieces) > 1 else g.n
    buf = _borrow(most if uniform else 2 * most)  # (ragged: the spread values besides the residuals)
    try:
        for s, e, gp in pieces:
            res = buf[: e - s]
            res[...] = x[s:e]  # exact; float64 passes from here on
            if uniform:
                size = gp.size
                rv = res.reshape(-1, size)
                np.subtract(rv, (_einsum("ij->i", rv) / size)[:, None], out=rv)
                m2 = _einsum("ij,ij->i", rv, rv)
            else:
                starts, sizes = gp.offsets[:-1], gp._sizes
                index = gp.spread_index() if _INDEX_LEAST < g.n <= _INDEX_MOST else None
                spread = buf[most: most + e - s]
                mean = np.add.reduceat(res, starts) / gp.counts()  # (counts: kept with the layout)
                # (mode="clip": "raise" would copy the output first; the index is in range)
                np.subtract(res, mean.repeat(sizes) if index is None else
                            mean.take(index, out=spread, mode="clip"), out=res)
                m2 = np.add.reduceat(np.square(res, out=spread), starts)
            # float32 squared deviations can neither over- nor underflow in float64: M2 is
            # non-finite exactly when a reward is (NaN, inf). (Uniform: einsum, a µs less than
            # add.reduce; ragged: add.reduce, whose code the reduceats have just run, where
            # einsum's would be one more cold path after idle time.)
            if not math.isfinite(_einsum("i->", m2) if uniform else np.add.reduce(m2)):
                return False
            b = _plain_policy(gp, m2, ddof, eps)
            # apply: in cache, a float64 product and then a narrowing copy beat numpy's buffered cast
            if uniform:
                np.multiply(rv, b[:, None], out=rv)
            else:
                np.multiply(res, b.repeat(sizes) if index is None else
                            b.take(index, out=spread, mode="clip"), out=res)
            out[s:e] = res  # (the narrowing cast; as np.copyto, without its Python layer)
    finally:
        _give_back(buf)
    return True


# ============================================================================ 4. apply


def _apply(g, x, m, a, pre, b, out, lift=None, post=None) -> np.ndarray:
    """out = (((x * pre - a) * lift) * b) * post per group; reuses the residuals where a is the
    group mean. ``lift`` (None: 1) is the core's 2^60 where 1/denominator overflows, ``post``
    (None: 1) undoes ``pre`` last where the lifted denominator overflows (see _policy)."""
    ov = g.view(out)
    if a is m.mean:
        d = m.res
    else:
        d = g.view(x) if np.isscalar(pre) else g.view(x) * g.spread(pre)
        d = d - (a if np.isscalar(a) else g.spread(a))
    if lift is not None:
        d = d * g.spread(lift)
    if post is not None:
        d = (d * g.spread(b)) * g.spread(post)
        np.copyto(ov, d, casting="unsafe")
    else:
        np.multiply(d, g.spread(b), out=ov, casting="unsafe")
    if m.valid is not None:
        ov[~m.valid] = 0.0
    return ov


def _output_overflow(g, m, a, pre, b, out, ov, lift=None, post=None):
    """Groups with a non-finite advantage not asked for (not a NaN group): an overflow of the
    output dtype (or None). Scans only groups whose bound (|mean - a| + sqrt(M2)) * b can
    reach it."""
    centre = np.where(m.scale < 1.0, m.smean * m.scale * pre, m.mean) if m.lifted else m.mean
    bound = (np.abs(centre - a) + m.scale * pre * np.sqrt(m.m2)) * np.abs(b)
    if lift is not None:
        bound = bound * lift
    if post is not None:
        bound = bound * post
    maybe = ~(bound < 0.5 * np.finfo(out.dtype).max) & ~m.bad_mean & ~np.isnan(b) & (m.count > 0)
    if not maybe.any():
        return None
    hit = g.sum((~np.isfinite(ov)).astype(np.float64)) > 0
    return hit & maybe


def advantages(rewards, out, grouping, center, scale, ddof, eps, singleton, nan, num_threads,
               batch_std=None, moments=None):
    if (center == "mean" and scale == "group" and moments is None and batch_std is None
            and (ddof == 0 or ddof == 1) and 0.0 <= eps < math.inf and singleton in _SINGLETONS
            and nan in _NANS and len(rewards) == grouping.n and len(out) == grouping.n):
        # The plain case, with every check of _check and of the lengths passed (anything else,
        # or a plain case _plain_advantages does not cover, takes the general stages)
        if _plain_advantages(rewards, grouping, ddof, eps, singleton, out):
            return
    _general_advantages(rewards, out, grouping, center, scale, ddof, eps, singleton, nan, batch_std, moments)


def advantages_offsets(rewards, out, offsets, center, scale, ddof, eps, singleton, nan, num_threads,
                       batch_std=None):
    """:func:`advantages` over the ragged groups of ``offsets`` (the native core reads them in
    place; here the kept offsets layout makes a repeated call cheap)."""
    advantages(rewards, out, grouping_offsets(len(rewards), offsets), center, scale, ddof, eps, singleton,
               nan, num_threads, batch_std)


@_quiet
def _general_advantages(rewards, out, g, center, scale, ddof, eps, singleton, nan, batch_std, moments):
    _check(center, scale, ddof, eps, singleton, nan)
    if len(rewards) != g.n:
        raise ValueError(f"rewards has length {len(rewards)} but the groups cover {g.n} rewards")
    if len(out) != g.n:
        raise ValueError(f"out has length {len(out)} but the groups cover {g.n} rewards")
    batch = scale in ("batch", "batch_residual")
    if batch_std is not None:
        if not batch:
            raise ValueError(f"batch_std= needs scale='batch' or 'batch_residual', got scale={scale!r}")
        if np.isinf(batch_std) or batch_std < 0:
            # NaN is allowed: an undefined batch std (poisoned by a non-finite reward, or no more
            # rewards than ddof) scales the advantages to NaN, as one the core computes would
            raise ValueError(f"batch_std must be a number >= 0 (or NaN: undefined), got {batch_std}")
    m = _group_moments(rewards, g, nan) if moments is None else _given(rewards, g, nan, moments)
    batch_d = 1.0
    if batch:
        # As the core: the batch pass reports its faults before anything is written.
        err = _faults(rewards, g, m, nan, singleton)
        if err is not None:
            raise err
        batch_d = _batch_denominator(m.record(), scale, ddof, eps, batch_std)
    a, pre, b, late, lift, post = _policy(m, center, scale, ddof, eps, singleton, batch_d)
    if late is not None or m.any_bad or singleton == "error":
        err = _faults(rewards, g, m, nan, singleton, late)
        if err is not None:
            raise err
    target = out if out.dtype in (np.float32, np.float64) else np.empty(g.n)
    ov = _apply(g, rewards, m, a, pre, b, target, lift, post)
    # A group z-score is bounded (|A| <= n/(n-1) * sqrt(n)): only other policies can overflow.
    if not (scale == "group" and center != "none" and not m.lifted and lift is None):
        late = _output_overflow(g, m, a, pre, b, target, ov, lift, post)
        if late is not None:
            err = _faults(rewards, g, m, nan, singleton, late)
            if err is not None:
                raise err
    if target is not out:
        out[...] = target


def _given(x, g, nan, moments) -> _Moments:
    """Moments passed by the caller (streaming / sharded data) for these rewards."""
    count, mean, m2, scale = _as_record(moments)
    if len(count) != g.n_groups:
        raise ValueError(f"moments hold {len(count)} groups but the layout has {g.n_groups}")
    xv = g.view(x)
    m = _Moments()
    m.given = True
    m.count, m.mean, m.m2, m.scale = count, mean, m2, scale
    m.smean = np.where(scale < 1.0, mean / scale, mean)
    m.lifted = bool((scale < 1.0).any())
    m.unit_scale = bool((scale == 1.0).all())
    m.min_count = float(count.min()) if len(count) else 0.0
    m.valid = None
    finite = np.isfinite(xv)
    if not finite.all():
        if nan == "raise":
            i = int(np.flatnonzero(~finite.reshape(-1))[0])
            raise NonFiniteRewardError(
                f"rewards[{i}] is {_fmt(x[i])}; pass nan='propagate' or nan='omit' to allow non-finite rewards",
                index=i, group=int(g.codes()[i]), value=float(x[i]),
            )
        if nan == "omit":
            m.valid = finite
    m.bad_mean = (count > 0) & ~np.isfinite(mean)
    m.any_bad = bool(m.bad_mean.any())
    with np.errstate(invalid="ignore", over="ignore"):
        m.res = xv - g.spread(mean)
        if m.valid is not None:
            m.res = np.where(m.valid, m.res, 0.0)
    return m


@_quiet
def group_stats(rewards, grouping, ddof, nan, num_threads):
    _check("mean", "group", ddof, 0.0, "zero", nan)
    g = grouping
    if len(rewards) != g.n:
        raise ValueError(f"rewards has length {len(rewards)} but the groups cover {g.n} rewards")
    m = _group_moments(rewards, g, nan)
    mean = np.where(m.count > 0, m.mean, np.nan)
    std = np.where(np.isfinite(mean), _std(m.record(), ddof), np.nan)
    # Finite rewards whose spread overflows float64: an error, as the core.
    late = (m.count > ddof) & np.isfinite(mean) & ~np.isfinite(std)
    err = _faults(rewards, g, m, nan, "zero", late)
    if err is not None:
        raise err
    return m.count.astype(np.int64), mean, std


def batch_moments(rewards, grouping, nan, num_threads):
    """(count, mean, M2) of the rewards and (count, M2) of the residuals over the batch."""
    m = group_moments(rewards, grouping, nan, None, num_threads)
    n, mean, m2, s = _merge_all(m)
    rn, _, rm2, rs = _residual_all(m)
    with np.errstate(over="ignore"):
        return int(n), mean, m2 * s * s, int(rn), rm2 * rs * rs


_threads = 0


def set_num_threads(n: int) -> None:
    """Recorded for API parity; the numpy backend runs on numpy's own threads."""
    global _threads
    _threads = default_threads_value(n)


def get_num_threads() -> int:
    if _threads:
        return _threads
    return environment_threads() or min(os.cpu_count() or 1, MAX_THREADS)


def _after_fork_in_child() -> None:
    pass


# ---- token-level layouts ----


def _token_offsets(offsets: np.ndarray, n: int) -> np.ndarray:
    if n > 0:
        grouping_offsets(n, offsets)
    elif len(offsets) == 0 or np.any(offsets != 0):
        raise ValueError("offsets must start at 0 and end at the number of tokens")
    return offsets


def token_scores(tokens, offsets, num_threads):
    """Per-sequence sums of token rewards (rows of a 2-D array, or segments of flat tokens),
    accumulated in float64 and returned in the input dtype."""
    if tokens.ndim == 2:
        with np.errstate(over="ignore"):
            scores = tokens.sum(axis=1, dtype=np.float64).astype(tokens.dtype)
        return _checked_scores(scores, lambda i: tokens[i])
    if tokens.ndim == 1 and offsets is not None:
        offs = _token_offsets(offsets, len(tokens))
        out = np.zeros(len(offs) - 1)
        sizes = np.diff(offs)
        ne = np.flatnonzero(sizes > 0)
        with np.errstate(over="ignore"):  # an overflowing sum is the overflow error below
            if ne.size:
                out[ne] = np.add.reduceat(tokens, offs[:-1][ne], dtype=np.float64)
            scores = out.astype(tokens.dtype)
        return _checked_scores(scores, lambda i: tokens[offs[i]:offs[i + 1]])
    raise TypeError("token rewards must be a float32/float64 array: 2-D, or 1-D with offsets")


def _checked_scores(scores: np.ndarray, tokens_of) -> np.ndarray:
    """As the core: finite token rewards whose sum leaves the dtype's range are the overflow
    error (``index``: the sequence), never an inf reward."""
    if not np.isfinite(scores).all():
        for i in np.flatnonzero(~np.isfinite(scores)):
            if np.isfinite(tokens_of(i)).all():
                raise AdvantageOverflowError(
                    f"the token rewards of sequence {i} sum beyond the range of {scores.dtype}; rescale the rewards",
                    index=int(i),
                )
    return scores


def broadcast_tokens(adv, mask, offsets, out, num_threads):
    """out = adv per row (or segment), times the mask (uint8 flags or values)."""
    if mask is not None and mask.size != out.size:
        raise ValueError("the response mask and the output differ in size")
    if offsets is not None:
        offs = _token_offsets(offsets, out.size)
        if len(offs) != len(adv) + 1:
            raise ValueError("offsets must have one more entry than there are sequences")
        full = np.repeat(adv.astype(np.float64), np.diff(offs))
    else:
        if len(adv) == 0 or out.size % len(adv):
            raise ValueError("out must hold one row per sequence")
        full = np.repeat(adv.astype(np.float64), out.size // len(adv))
    flat = out.reshape(-1)
    if mask is None:
        flat[...] = full
    elif mask.dtype == np.uint8:
        flat[...] = np.where(mask.reshape(-1) != 0, full, 0.0)
    else:
        flat[...] = full * mask.reshape(-1)
