"""Pure-numpy backend: the same functions, arguments and semantics as the compiled
``groupadv._native`` module, vectorized over groups (no Python loop per group).

It mirrors the Rust core step for step (statistics in float64, the mean taken relative to
each group's first valid reward so that all-equal groups give exactly 0, the same singleton
and non-finite policies, the same error messages), so both backends agree to rounding.
"""

from __future__ import annotations

import os

import numpy as np

from ._inputs import MAX_THREADS, default_threads_value, environment_threads
from .errors import AdvantageOverflowError, NonFiniteRewardError, SingletonGroupError

__version__ = "numpy"

_CENTERS = ("mean", "loo", "none")
_SCALES = ("group", "batch", "batch_residual", "none")
_SINGLETONS = ("zero", "raw", "error")
_NANS = ("raise", "propagate", "omit")
# Squared deviations below this may have lost precision to float64 underflow.
_SMALL_M2 = 1e-280


class Grouping:
    """A resolved group layout (numpy twin of the native ``Grouping``)."""

    __slots__ = ("n", "n_groups", "kind", "offsets", "perm")

    def __init__(self, n: int, offsets: np.ndarray, perm: np.ndarray | None, kind: str):
        self.n = int(n)
        self.offsets = offsets
        self.perm = perm
        self.n_groups = len(offsets) - 1
        self.kind = kind

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def codes(self) -> np.ndarray:
        grouped = np.repeat(np.arange(self.n_groups, dtype=np.int64), self.sizes())
        if self.perm is None:
            return grouped
        codes = np.empty(self.n, dtype=np.int64)
        codes[self.perm] = grouped
        return codes

    def __repr__(self) -> str:
        return f"Grouping(kind={self.kind!r}, n={self.n}, n_groups={self.n_groups})"


def grouping_uniform(n: int, group_size: int) -> Grouping:
    if n == 0:
        raise ValueError("rewards is empty")
    if group_size <= 0 or n % group_size:
        raise ValueError(
            f"group_size={group_size} does not divide the number of rewards ({n}); "
            "group_size must be a positive divisor of len(rewards)"
        )
    return Grouping(n, np.arange(0, n + 1, group_size, dtype=np.int64), None, "uniform")


def grouping_offsets(n: int, offsets: np.ndarray) -> Grouping:
    if n == 0:
        raise ValueError("rewards is empty")
    if len(offsets) < 2:
        raise ValueError("offsets must have at least 2 entries")
    if offsets[0] != 0:
        raise ValueError(f"offsets[0] must be 0, got {offsets[0]}")
    bad = np.flatnonzero(offsets[1:] < offsets[:-1])
    if bad.size:
        i = int(bad[0]) + 1
        raise ValueError(
            f"offsets must be non-decreasing, but offsets[{i - 1}] = {offsets[i - 1]} "
            f"> offsets[{i}] = {offsets[i]}"
        )
    if offsets[-1] != n:
        raise ValueError(f"offsets[-1] must equal len(rewards) = {n}, got {offsets[-1]}")
    return Grouping(n, np.array(offsets, dtype=np.int64), None, "ragged")


def _from_labels(labels: np.ndarray) -> tuple[Grouping, np.ndarray]:
    n = len(labels)
    if n == 0:
        raise ValueError("rewards is empty")
    if n > 2**32 - 1:
        raise ValueError(
            f"group_ids supports at most {2**32 - 1} rewards, got {n}; "
            "pass contiguous groups as offsets instead"
        )
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    # Number groups by first appearance, as the native backend does.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    codes = rank[inverse.reshape(-1)]
    first = first[order].astype(np.int64)
    counts = np.bincount(codes, minlength=len(first))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    if np.all(codes[1:] >= codes[:-1]):
        return Grouping(n, offsets, None, "ragged"), first
    perm = np.argsort(codes, kind="stable").astype(np.int64)
    return Grouping(n, offsets, perm, "permuted"), first


def grouping_ids_int(ids: np.ndarray) -> tuple[Grouping, np.ndarray]:
    return _from_labels(ids)


def grouping_ids_bytes(rows: np.ndarray) -> tuple[Grouping, np.ndarray]:
    n, width = rows.shape
    if width == 0:
        return _from_labels(np.zeros(n, dtype=np.int8))
    return _from_labels(np.ascontiguousarray(rows).view(np.dtype((np.void, width))).reshape(n))


def grouping_ids_str(ids) -> tuple[Grouping, np.ndarray]:
    items = list(ids)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"group_ids[{i}] is not a str (got {type(item).__name__})")
    return _from_labels(np.array(items, dtype=object))


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
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")


class _Moments:
    """Per-group moments over the grouped (permuted) values, in float64."""

    def __init__(self, x: np.ndarray, g: Grouping, nan: str, ddof: int):
        xs = np.asarray(x if g.perm is None else x[g.perm], dtype=np.float64)
        sizes = g.sizes()
        starts = g.offsets[:-1]
        nonempty = np.flatnonzero(sizes > 0)
        self.xs, self.sizes, self.nonempty = xs, sizes, nonempty
        ne_starts, ne_sizes = starts[nonempty], sizes[nonempty]
        k = g.n_groups
        self.omit = nan == "omit"
        if self.omit:
            valid = np.isfinite(xs)
            # Position of each group's first valid value (n where there is none).
            pos = np.where(valid, np.arange(len(xs)), len(xs))
            first = np.minimum.reduceat(pos, ne_starts)
            first = np.where(first < ne_starts + ne_sizes, first, len(xs))
            count_ne = np.add.reduceat(valid.astype(np.int64), ne_starts)
            xs_ext = np.append(xs, 0.0)
            shift_ne = np.where(count_ne > 0, xs_ext[first], 0.0)
        else:
            valid = None
            count_ne = ne_sizes
            shift_ne = xs[ne_starts]
        self.valid = valid
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            dev = xs - np.repeat(shift_ne, ne_sizes)
            if valid is not None:
                dev[~valid] = 0.0
            mean_ne = shift_ne + np.add.reduceat(dev, ne_starts) / count_ne
            res = xs - np.repeat(mean_ne, ne_sizes)
            if valid is not None:
                res[~valid] = 0.0
            m2_ne = np.add.reduceat(res * res, ne_starts)
        self.res = res
        self.count = np.zeros(k, dtype=np.int64)
        self.count[nonempty] = count_ne
        self.mean = np.zeros(k)
        self.mean[nonempty] = mean_ne
        self.m2 = np.zeros(k)
        self.m2[nonempty] = m2_ne
        self.ddof = ddof
        self.is_f64 = x.dtype == np.float64

    def std(self) -> np.ndarray:
        """Group std (NaN where count <= ddof), robust to float64 over/underflow like the core."""
        dof = self.count - self.ddof
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(self.m2 / np.where(dof > 0, dof, 1))
        std[dof <= 0] = np.nan
        if self.is_f64:
            risky = (dof > 0) & np.isfinite(self.mean) & ~(np.isfinite(self.m2) & (self.m2 >= _SMALL_M2))
            if risky.any():
                std[risky] = self._rescaled_std(np.flatnonzero(risky))
        return std

    def _rescaled_std(self, groups: np.ndarray) -> np.ndarray:
        out = np.empty(len(groups))
        starts = np.concatenate(([0], np.cumsum(self.sizes)))
        for j, g in enumerate(groups):  # rare path: only groups beyond ~1e154 or below ~1e-146
            d = np.abs(self.res[starts[g] : starts[g + 1]])
            if self.valid is not None:
                d = d[self.valid[starts[g] : starts[g + 1]]]
            amax = d.max() if d.size else 0.0
            if amax == 0.0 or not np.isfinite(amax):
                out[j] = 0.0 if amax == 0.0 else np.nan
            else:
                out[j] = amax * np.sqrt(np.sum((d / amax) ** 2) / (self.count[g] - self.ddof))
        return out


def _source_index(g: Grouping, pos: int) -> int:
    return int(pos if g.perm is None else g.perm[pos])


_OVERFLOW = (
    "the rewards of group {} overflow float64 in its statistics, or the output dtype in its "
    "advantages; rescale rewards of magnitude near the float range"
)
_BATCH_OVERFLOW = (
    "the rewards overflow float64 in the batch std; rescale rewards of magnitude near the float range"
)


def _first_fault(x, g, mom, nan, singleton, late=None):
    """Error for the lowest group with a fault, as the core reports it (or None). `late` marks
    groups whose std or advantages overflowed (checked last within a group, as the core)."""
    bad_mean = (mom.count > 0) & ~np.isfinite(mom.mean)
    if nan == "omit":
        overflow = bad_mean  # only finite rewards were summed
    elif nan == "propagate":
        overflow = bad_mean & ~_has_nonfinite(mom)
    else:
        overflow = np.zeros_like(bad_mean)
    faults = (bad_mean if nan == "raise" else overflow).copy()
    if singleton == "error":
        # A group poisoned by a NaN under "propagate" is NaN, whatever its size.
        faults |= (mom.count == 1) & ~(bad_mean & (nan == "propagate"))
    if late is not None:
        faults |= late
    hits = np.flatnonzero(faults)
    if not hits.size:
        return None
    grp = int(hits[0])
    idx = [_source_index(g, p) for p in range(g.offsets[grp], g.offsets[grp + 1])]
    if overflow[grp]:
        return AdvantageOverflowError(_OVERFLOW.format(grp), group=grp)
    if nan == "raise" and bad_mean[grp]:
        nonfinite = [i for i in idx if not np.isfinite(x[i])]
        if not nonfinite:
            return AdvantageOverflowError(_OVERFLOW.format(grp), group=grp)
        i = min(nonfinite)
        return NonFiniteRewardError(
            f"rewards[{i}] is {_fmt(x[i])}; pass nan='propagate' or nan='omit' to allow non-finite rewards",
            index=i, group=grp, value=float(x[i]),
        )
    if not (singleton == "error" and mom.count[grp] == 1):
        return AdvantageOverflowError(_OVERFLOW.format(grp), group=grp)
    finite = [i for i in idx if np.isfinite(x[i])]
    i = min(finite) if finite else idx[0]
    return SingletonGroupError(
        f"group {grp} (rewards[{i}]) has a single reward, and singleton='error'; "
        "use singleton='zero' or 'raw' to allow it", index=i, group=grp,
    )


def _has_nonfinite(mom) -> np.ndarray:
    """Per group: does it hold a NaN or infinite reward?"""
    out = np.zeros(len(mom.count), dtype=bool)
    if mom.nonempty.size:
        bad = (~np.isfinite(mom.xs)).astype(np.int64)
        starts = np.concatenate(([0], np.cumsum(mom.sizes)))[:-1][mom.nonempty]
        out[mom.nonempty] = np.add.reduceat(bad, starts) > 0
    return out


def _fmt(v) -> str:
    v = float(v)
    return "NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf")


def _batch(mom: _Moments, nan: str):
    """(count, mean, m2) of the rewards and (residual_count, residual_m2) over the batch."""
    xs = mom.xs if mom.valid is None else mom.xs[mom.valid]
    n = len(xs)
    if n == 0:
        return 0, 0.0, 0.0, 0, 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        mean = xs[0] + np.sum(xs - xs[0]) / n
        if not np.isfinite(mean) and np.all(np.isfinite(xs)):
            # Finite rewards whose sum overflowed: average scaled values (no partial sum can
            # exceed the largest reward), as the core weighs its group means.
            mean = float(np.sum(xs / n))
        m2 = float(np.sum((xs - mean) ** 2))
    return n, float(mean), m2, int(mom.count.sum()), float(mom.m2.sum())


def _batch_std(b, scale: str, ddof: int, mom: _Moments) -> float:
    n, mean, m2, rn, rm2 = b
    num, cnt = (m2, n) if scale == "batch" else (rm2, rn)
    std = float(np.sqrt(num / (cnt - ddof))) if cnt > ddof else float("nan")
    guarded = mom.is_f64 and cnt > ddof and np.isfinite(mean) and not (np.isfinite(num) and num >= _SMALL_M2)
    if not guarded:
        return std
    # As the core: rescale the deviations by their largest magnitude (f64 over/underflow).
    valid = np.ones(len(mom.xs), dtype=bool) if mom.valid is None else mom.valid
    dev = np.abs(mom.xs[valid] - mean) if scale == "batch" else np.abs(mom.res[valid])
    amax = dev.max() if dev.size else 0.0
    if amax == 0.0 or not np.isfinite(amax):
        return 0.0 if amax == 0.0 else std
    return float(amax * np.sqrt(np.sum((dev / amax) ** 2) / (cnt - ddof)))


def advantages(rewards, out, grouping, center, scale, ddof, eps, singleton, nan, num_threads):
    _check(center, scale, ddof, eps, singleton, nan)
    g = grouping
    if len(rewards) != g.n:
        raise ValueError(f"rewards has length {len(rewards)} but the groups cover {g.n} rewards")
    if len(out) != g.n:
        raise ValueError(f"out has length {len(out)} but the groups cover {g.n} rewards")
    mom = _Moments(rewards, g, nan, ddof)
    count = mom.count
    batch = scale in ("batch", "batch_residual")
    batch_denom = 1.0
    if batch:
        # As the core: the batch pass reports its faults before anything is written.
        err = _first_fault(rewards, g, mom, nan, singleton)
        if err is not None:
            raise err
        with np.errstate(invalid="ignore", over="ignore"):
            bstd = _batch_std(_batch(mom, nan), scale, ddof, mom)
        if np.isinf(bstd):
            raise AdvantageOverflowError(_BATCH_OVERFLOW)
        batch_denom = bstd + eps
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        many = count >= 2
        mu = np.where(many & (center != "none"), mom.mean, 0.0)
        if center == "loo":
            factor = np.where(many, count / np.maximum(count - 1, 1), 0.0)
        else:
            factor = many.astype(np.float64)
        late = np.zeros(g.n_groups, dtype=bool)
        if scale == "group":
            std = mom.std()
            late |= many & np.isfinite(mom.mean) & ~np.isfinite(std)
            denom = np.where(many, std + eps, 1.0)
        elif scale == "none":
            denom = np.ones(g.n_groups)
        else:
            denom = np.where(many, batch_denom, 1.0)
        if singleton == "raw":
            one = count == 1
            factor = np.where(one, 1.0, factor)
            if scale == "group":
                denom = np.where(one, 1.0 + eps, denom)
            elif scale != "none":
                denom = np.where(one, batch_denom, denom)
        k = np.where(denom == 0.0, 0.0, factor / denom)
        # As the core: where 1/denom overflows (subnormal spread), lift residuals by 2^60 first.
        lift = np.isinf(k) & np.isfinite(denom)
        pre = np.where(lift, 2.0**60, 1.0)
        k = np.where(lift, factor / (denom * 2.0**60), k)
        sizes = mom.sizes
        res = ((mom.xs - np.repeat(mu, sizes)) * np.repeat(pre, sizes)) * np.repeat(k, sizes)
        if nan == "omit":
            res[~mom.valid] = 0.0
        poisoned = (count > 0) & ~np.isfinite(mom.mean)
        if poisoned.any():
            res[np.repeat(poisoned, sizes)] = np.nan
        res = res.astype(out.dtype)
    # A non-finite advantage outside a poisoned group is an overflow of the output type.
    bad = ~np.isfinite(res)
    if bad.any():
        hit = np.zeros(len(res), dtype=np.int64)
        hit[bad] = 1
        starts = np.concatenate(([0], np.cumsum(sizes)))[:-1][mom.nonempty]
        out_bad = np.zeros(g.n_groups, dtype=bool)
        out_bad[mom.nonempty] = np.add.reduceat(hit, starts) > 0
        late |= out_bad & ~poisoned & ~np.isnan(k)  # NaN by request: poisoned group or batch std
    err = _first_fault(rewards, g, mom, nan, singleton, late)
    if err is not None:
        raise err
    if g.perm is None:
        out[...] = res
    else:
        out[g.perm] = res


def group_stats(rewards, grouping, ddof, nan, num_threads):
    _check("mean", "group", ddof, 0.0, "zero", nan)
    g = grouping
    if len(rewards) != g.n:
        raise ValueError(f"rewards has length {len(rewards)} but the groups cover {g.n} rewards")
    mom = _Moments(rewards, g, nan, ddof)
    mean = np.where(mom.count > 0, mom.mean, np.nan)
    with np.errstate(invalid="ignore"):
        std = np.where(np.isfinite(mean), mom.std(), np.nan)
    # Finite rewards whose spread overflows float64: an error, as the core.
    late = (mom.count > ddof) & np.isfinite(mean) & ~np.isfinite(std)
    err = _first_fault(rewards, g, mom, nan, "zero", late)
    if err is not None:
        raise err
    return mom.count.copy(), mean, std


def batch_moments(rewards, grouping, nan, num_threads):
    _check("mean", "group", 0, 0.0, "zero", nan)
    g = grouping
    if len(rewards) != g.n:
        raise ValueError(f"rewards has length {len(rewards)} but the groups cover {g.n} rewards")
    mom = _Moments(rewards, g, nan, 0)
    err = _first_fault(rewards, g, mom, nan, "zero")
    if err is not None:
        raise err
    return _batch(mom, nan)


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
        return tokens.sum(axis=1, dtype=np.float64).astype(tokens.dtype)
    if tokens.ndim == 1 and offsets is not None:
        offs = _token_offsets(offsets, len(tokens))
        out = np.zeros(len(offs) - 1)
        sizes = np.diff(offs)
        ne = np.flatnonzero(sizes > 0)
        if ne.size:
            out[ne] = np.add.reduceat(tokens.astype(np.float64), offs[:-1][ne])
        return out.astype(tokens.dtype)
    raise TypeError("token rewards must be a float32/float64 array: 2-D, or 1-D with offsets")


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
