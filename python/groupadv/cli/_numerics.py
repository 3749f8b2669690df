"""The CLI's numbers, all from the core's stages (this module holds no maths of its own).

Pass 1 (:func:`groupadv.cli.passes.pass1`) calls, per batch,
``part = batch_moments(x, groups, nan)`` (the core's :func:`groupadv.group_moments`) and
``moments.merge_at(codes, part)`` (``codes``: the file-wide number of each of the batch's
groups; the core's Chan merge); then ``check_overflow(moments, nan)``.
Pass 2 builds ``coef = Coefficients(moments, center, scale, ddof, eps, singleton, label_of)``
once and calls ``coef.advantages(x, groups, codes, nan, dtype, decimals)`` per batch: the
core's :func:`groupadv.advantages` with the file-wide moments of the batch's groups
(``moments=``) and, for batch scales, the file-wide batch std (``batch_std=``).
``stats`` calls ``summary(moments, ddof)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

import groupadv as ga

from .errors import CLIError


def batch_moments(x: np.ndarray, groups: ga.Groups, nan: str) -> ga.GroupMoments:
    """The moments of each of a batch's groups (float64), from the core."""
    return ga.group_moments(x, groups=groups, nan=nan)


class FileMoments:
    """The group moments of the whole file, merged batch by batch, plus the bookkeeping the
    CLI reports: rows read, non-finite rewards (and how many in each group)."""

    def __init__(self) -> None:
        self.moments = ga.GroupMoments.empty(0)
        self.bad = np.zeros(0, dtype=np.int64)
        self.rows = 0
        self.nonfinite = 0

    @property
    def n_groups(self) -> int:
        return self.moments.n_groups

    def merge_at(self, codes: np.ndarray, part: ga.GroupMoments) -> None:
        """Merge a batch's group moments into the groups numbered ``codes``."""
        self.moments = self.moments.merge_at(codes, part)
        if len(self.bad) < self.n_groups:
            self.bad = np.concatenate((self.bad, np.zeros(self.n_groups - len(self.bad), np.int64)))

    def add_nonfinite(self, row_codes: np.ndarray) -> None:
        """Count non-finite rewards (``row_codes``: the group number of each)."""
        self.nonfinite += len(row_codes)
        np.add.at(self.bad, row_codes, 1)


def check_overflow(acc: FileMoments, nan: str) -> int | None:
    """The first group whose merged statistics overflowed float64 (not from a non-finite reward
    that ``nan`` lets through), or None."""
    m = acc.moments
    with np.errstate(invalid="ignore"):
        lost = (m.count > 0) & ~(np.isfinite(m.mean) & np.isfinite(m.m2))
    lost &= (acc.bad == 0) | (nan == "omit")
    return int(np.flatnonzero(lost)[0]) if lost.any() else None


def summary(acc: FileMoments, ddof: int) -> dict:
    """The numbers of ``groupadv stats`` from the file's group moments."""
    m = acc.moments
    count = m.count
    std = m.std(ddof)
    multi = count >= 2
    ok = multi & np.isfinite(std)
    batch = m.batch("batch")
    return {
        "rows": acc.rows,
        "n_groups": acc.n_groups,
        "group_size_min": int(count.min()) if acc.n_groups else 0,
        "group_size_mean": float(count.mean()) if acc.n_groups else math.nan,
        "group_size_max": int(count.max()) if acc.n_groups else 0,
        "singleton_groups": int(np.sum(count == 1)),
        "mean_within_std": float(std[ok].mean()) if ok.any() else math.nan,
        "frac_zero_std": float(np.sum(std[multi] == 0.0) / multi.sum()) if multi.any() else math.nan,
        "reward_mean": float(batch.mean) if batch.count else math.nan,
        "reward_std": float(batch.std(ddof)),
        "nonfinite_rewards": acc.nonfinite,
    }


class Coefficients:
    """Pass 2's view of the file's moments: the advantages of any batch from the core, given
    the file-wide group number of each of the batch's groups."""

    def __init__(self, acc: FileMoments, center: str, scale: str, ddof: int, eps: float, singleton: str,
                 label_of: Callable[[int], Any]) -> None:
        self.moments = acc.moments
        self.center, self.scale, self.ddof, self.eps, self.singleton = center, scale, ddof, eps, singleton
        self.label_of = label_of
        self.batch_std: float | None = None
        if scale in ("batch", "batch_residual"):
            # the batch std of the whole file: each batch's call sees only its own groups
            self.batch_std = float(self.moments.batch(scale).std(ddof))

    def advantages(self, x: np.ndarray, groups: ga.Groups, codes: np.ndarray, nan: str, dtype: np.dtype,
                   decimals: int | None) -> np.ndarray:
        """The advantages of one batch of rewards ``x`` (its groups ``groups``, whose file-wide
        numbers are ``codes``), as ``dtype``."""
        try:
            return ga.advantages(x.astype(dtype, copy=False), groups=groups, moments=self.moments.take(codes),
                                 center=self.center, scale=self.scale, ddof=self.ddof, eps=self.eps,
                                 singleton=self.singleton, batch_std=self.batch_std, nan=nan, decimals=decimals)
        except ga.errors.GroupadvError as e:
            if e.group is None:
                raise CLIError(str(e)) from None
            label = self.label_of(int(codes[e.group]))
            if isinstance(e, ga.errors.SingletonGroupError):
                raise CLIError(
                    f"group {label!r} has a single reward, and --singleton error; use --singleton zero or raw"
                ) from None
            raise CLIError(str(e).replace(f"group {e.group}", f"group {label!r}", 1)) from None
