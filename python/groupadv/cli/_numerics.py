"""All the numbers of the CLI, behind a narrow interface (the rest of the CLI holds no maths).

Pass 1 (:func:`groupadv.cli.passes.pass1`) calls, per batch,
``part = batch_moments(x, groups, nan)`` and ``moments.merge_at(codes, part)`` (``codes``: the
file-wide number of each of the batch's groups); then ``check_overflow(moments, nan)``.
Pass 2 builds ``coef = Coefficients(moments, center, scale, ddof, eps, singleton, label_of)``
once and calls ``coef.advantages(x, row_codes, nan, dtype, decimals)`` per batch (``row_codes``:
the file-wide group number of each row). ``stats`` calls ``summary(moments, ddof)``.

The merge (Chan et al.), the guarded std and the coefficient case table written here mirror the
core's; they are to be replaced by the core's stage functions (mergeable group moments,
advantages from given moments) behind the same interface.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

import groupadv as ga

from .errors import CLIError


def batch_moments(x: np.ndarray, groups: ga.Groups, nan: str) -> Any:
    """Count, mean and population std of each of a batch's groups (float64), from the core."""
    return ga.group_stats(x, groups=groups, ddof=0, nan=nan)


class GroupMoments:
    """Per-group count / mean / population std in float64, merged across batches (Chan et al.).

    The std is kept rather than M2 (the sum of squared deviations) so that rewards up to the
    float64 range do not overflow when squared: the merge is done with ``hypot``. ``bad``
    counts each group's non-finite rewards."""

    def __init__(self) -> None:
        self.count = np.zeros(0, dtype=np.int64)
        self.mean = np.zeros(0)
        self.std = np.zeros(0)
        self.bad = np.zeros(0, dtype=np.int64)
        self.n_groups = 0
        self.rows = 0
        self.nonfinite = 0

    def _grow(self, k: int) -> None:
        self.n_groups = max(self.n_groups, k)
        if k > len(self.count):
            grow = max(k, 2 * len(self.count)) - len(self.count)
            self.count = np.concatenate((self.count, np.zeros(grow, np.int64)))
            self.mean = np.concatenate((self.mean, np.zeros(grow)))
            self.std = np.concatenate((self.std, np.zeros(grow)))
            self.bad = np.concatenate((self.bad, np.zeros(grow, np.int64)))

    def merge_at(self, gi: np.ndarray, part: Any) -> None:
        """Merge a batch's group moments (``part``: count, mean, population std per batch
        group) into the running statistics of the groups numbered ``gi``."""
        self._grow(int(gi.max()) + 1 if len(gi) else 0)
        count, mean, std = part.count, part.mean, part.std
        keep = count > 0
        gi, nb, mb, sb = gi[keep], count[keep].astype(np.float64), mean[keep], std[keep]
        na = self.count[gi].astype(np.float64)
        ma = self.mean[gi]
        n = na + nb
        first = na == 0
        with np.errstate(invalid="ignore", over="ignore"):
            delta = mb - ma
            merged_mean = np.where(delta == 0, ma, ma + delta * (nb / n))
            # n * s^2 = na * sa^2 + nb * sb^2 + delta^2 * na * nb / n
            merged_std = np.hypot(np.hypot(self.std[gi] * np.sqrt(na / n), sb * np.sqrt(nb / n)),
                                  delta * (np.sqrt(na * nb) / n))
        self.mean[gi] = np.where(first, mb, merged_mean)
        self.std[gi] = np.where(first, sb, merged_std)
        self.count[gi] += count[keep]

    def add_nonfinite(self, row_codes: np.ndarray) -> None:
        """Count non-finite rewards (``row_codes``: the group number of each)."""
        self.nonfinite += len(row_codes)
        np.add.at(self.bad, row_codes, 1)

    def final(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.n_groups
        return self.count[:k], self.mean[:k], self.std[:k]


def check_overflow(acc: GroupMoments, nan: str) -> int | None:
    """The first group whose statistics overflowed float64 (not from a non-finite reward that
    ``nan`` lets through), or None."""
    count, mean, std = acc.final()
    k = acc.n_groups
    with np.errstate(invalid="ignore"):
        lost = (count > 0) & ~(np.isfinite(mean) & np.isfinite(std))
    lost &= (acc.bad[:k] == 0) | (nan == "omit")
    return int(np.flatnonzero(lost)[0]) if lost.any() else None


def _std(std: np.ndarray, count: np.ndarray, ddof: int) -> np.ndarray:
    """Population stds turned into stds with ``ddof`` (NaN where count <= ddof)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > ddof, std * np.sqrt(count / np.maximum(count - ddof, 1)), np.nan)


def _norm(*parts: np.ndarray) -> float:
    """sqrt of the sum of squares of all parts, scaled so that it does not overflow."""
    x = np.abs(np.concatenate([np.ravel(p) for p in parts]))
    if x.size == 0:
        return 0.0
    big = float(x.max())
    if not math.isfinite(big) or big == 0.0:
        return big
    return big * math.sqrt(float(np.sum((x / big) ** 2)))


def _batch(count: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[float, float, float, float]:
    """(total count, batch mean, population std of the rewards, population std of the group
    residuals) over the groups with at least one (valid) reward."""
    valid = count > 0
    c, mu, s = count[valid].astype(np.float64), mean[valid], std[valid]
    total = float(c.sum())
    if total == 0:
        return 0.0, math.nan, math.nan, math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.sqrt(c / total)
        bmean = float(np.sum(c / total * mu))
        return total, bmean, _norm(s * w, (mu - bmean) * w), _norm(s * w)


def summary(acc: GroupMoments, ddof: int) -> dict:
    """The numbers of ``groupadv stats`` from the file's group moments."""
    count, mean, pstd = acc.final()
    std = _std(pstd, count, ddof)
    multi = count >= 2
    ok = multi & np.isfinite(std)
    total, bmean, bstd, _ = _batch(count, mean, pstd)
    return {
        "rows": acc.rows,
        "n_groups": acc.n_groups,
        "group_size_min": int(count.min()) if acc.n_groups else 0,
        "group_size_mean": float(count.mean()) if acc.n_groups else math.nan,
        "group_size_max": int(count.max()) if acc.n_groups else 0,
        "singleton_groups": int(np.sum(count == 1)),
        "mean_within_std": float(std[ok].mean()) if ok.any() else math.nan,
        "frac_zero_std": float(np.sum(std[multi] == 0.0) / multi.sum()) if multi.any() else math.nan,
        "reward_mean": bmean,
        "reward_std": bstd * math.sqrt(total / (total - ddof)) if total > ddof else math.nan,
        "nonfinite_rewards": acc.nonfinite,
    }


def group_coefficients(acc: GroupMoments, center: str, scale: str, ddof: int, eps: float,
                       singleton: str, label_of: Callable[[int], Any]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-group coefficients ``(mu, k, slow_factor, slow_denom)`` so that
    ``A = (r - mu) * k`` with ``k = factor / denom``: the same case table as the core. Where
    ``k`` overflows (a subnormal denominator), ``slow_*`` hold ``factor`` and ``denom`` and
    :func:`_apply` computes ``(r - mu) / denom * factor`` instead (elsewhere they are NaN)."""
    count, mean, std = acc.final()
    lone = (count == 1) & np.isfinite(mean)
    if singleton == "error" and lone.any():
        g = int(np.flatnonzero(lone)[0])
        raise CLIError(f"group {label_of(g)!r} has a single reward, and --singleton error; use --singleton zero or raw")
    valid = count > 0
    batch_denom = 1.0
    if scale in ("batch", "batch_residual"):
        total, _, bstd, rstd = _batch(count, mean, std)
        s = (bstd if scale == "batch" else rstd) * math.sqrt(total / (total - ddof)) if total > ddof else math.nan
        batch_denom = s + eps
    nonfinite = valid & ~np.isfinite(mean)
    multi = count >= 2
    n = count.astype(np.float64)
    mu = np.where(multi & (center != "none"), mean, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        factor = np.where(multi, n / (n - 1) if center == "loo" else 1.0, 0.0)
        if scale == "group":
            denom = np.where(multi, _std(std, count, ddof) + eps, 1.0)
        elif scale == "none":
            denom = np.ones_like(n)
        else:
            denom = np.where(multi, batch_denom, 1.0)
        if singleton == "raw":
            one = count == 1
            factor = np.where(one, 1.0, factor)
            denom = np.where(one, (1.0 + eps) if scale == "group" else (1.0 if scale == "none" else batch_denom), denom)
        k = np.where(denom == 0.0, 0.0, factor / denom)
    mu = np.where(nonfinite, np.nan, mu)
    k = np.where(nonfinite, np.nan, k)
    # a subnormal denominator: 1/denom overflows, so divide the residuals themselves
    slow = ~nonfinite & ~np.isfinite(k) & np.isfinite(denom) & (denom != 0.0)
    return mu, k, np.where(slow, factor, np.nan), np.where(slow, denom, np.nan)


def _apply(x: np.ndarray, gi: np.ndarray, mu: np.ndarray, k: np.ndarray, slow_factor: np.ndarray,
           slow_denom: np.ndarray) -> np.ndarray:
    """Advantages of one batch (float64) from the per-group coefficients."""
    with np.errstate(invalid="ignore", over="ignore"):
        a = (x - mu[gi]) * k[gi]
        slow = ~np.isnan(slow_denom[gi])
        if slow.any():
            g = gi[slow]
            a[slow] = (x[slow] - mu[g]) / slow_denom[g] * slow_factor[g]
    return a


class Coefficients:
    """Pass 2's view of the file's moments: the advantages of any batch, given the file-wide
    group number of each of its rows."""

    def __init__(self, acc: GroupMoments, center: str, scale: str, ddof: int, eps: float, singleton: str,
                 label_of: Callable[[int], Any]) -> None:
        self.mu, self.k, self.slow_factor, self.slow_denom = group_coefficients(
            acc, center, scale, ddof, eps, singleton, label_of)

    def advantages(self, x: np.ndarray, gi: np.ndarray, nan: str, dtype: np.dtype,
                   decimals: int | None) -> np.ndarray:
        """The advantages of one batch of rewards ``x`` (rows of groups ``gi``), as ``dtype``."""
        xf = x.astype(np.float64)
        a = _apply(xf, gi, self.mu, self.k, self.slow_factor, self.slow_denom)
        if nan == "omit":
            a[~np.isfinite(xf)] = 0.0
        a = a.astype(dtype)
        if decimals is not None:
            np.round(a, decimals, out=a)
        return a
