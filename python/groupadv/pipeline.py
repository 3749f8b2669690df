"""Exactly one normalization, at the right level, and a guard against doing it twice.

The classic GRPO pipeline bug: the actor z-scores rewards within each group, then the learner
whitens the advantages a second time, globally, over (sub-sampled, token-weighted)
transitions. The second step re-centres on a mean that is no longer 0 after subsampling (so
all-equal groups, whose advantage was exactly 0, now get a non-zero one), lets long episodes
dominate the std, and rescales every group by a batch-dependent factor. Normalize once:

    res = ga.pipeline.normalize(rewards, group_ids=uids)          # GRPO z-score, once
    adv = res.advantages                                          # final: do not whiten again
    batch = subsample(adv, ...)                                   # subsample AFTER normalizing

:func:`normalize` computes every statistic on the whole batch (episode-weighted unless
``weights=`` is given) before anything is subsampled, and returns the advantages with their
diagnostics. :func:`whiten` is the learner-side global whitening for pipelines that want it
*instead* of a group scale (``normalize(..., scale="none")`` then ``whiten``); given the
groups, it refuses (strict) or warns when the input is already group z-scored. The same check
is available alone as :func:`check_not_normalized`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import _api, _backend
from ._groups import Groups, resolve
from ._inputs import rewards_array
from .diagnostics import Diagnostics, diagnostics
from .moments import BatchMoments, weights_array

__all__ = [
    "DoubleNormalizationError",
    "DoubleNormalizationWarning",
    "Normalized",
    "check_not_normalized",
    "looks_group_normalized",
    "normalize",
    "whiten",
]

_ESTIMATORS = {"grpo": "mean", "drgrpo": "mean", "rloo": "loo"}


class DoubleNormalizationWarning(UserWarning):
    """Values that are already group z-scored are about to be normalized again."""


class DoubleNormalizationError(ValueError):
    """Raised instead of :class:`DoubleNormalizationWarning` under ``strict=True``."""


def looks_group_normalized(
    values,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    tol: float = 1e-2,
) -> bool:
    """True when ``values`` look like group z-scores already: in every group with >= 2 values,
    the mean is ~0 and the std is ~1 (with ddof 0 or 1, within ``tol``; ``eps`` in the
    z-score lowers the std a little) or exactly 0 (an all-equal group), and at least one group
    has a std of ~1.

    One grouped pass (the backend's ``group_stats``). Raw rewards almost never pass: every
    group's mean would have to be ~0. The exception, rewards of +-1 balanced within every
    group, is harmless: their z-score is themselves, so normalizing them again changes nothing.
    """
    x = rewards_array(values, "values")
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    if not (np.isfinite(tol) and 0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    count, mean, std = _backend.impl.group_stats(x, g._impl, 0, "omit", 0)
    multi = count >= 2
    if not multi.any():
        return False
    n = count[multi].astype(np.float64)
    m, s0 = mean[multi], std[multi]
    s1 = s0 * np.sqrt(n / (n - 1))
    zero = s0 == 0.0
    unit = (np.abs(s0 - 1.0) <= tol) | (np.abs(s1 - 1.0) <= tol)
    centred = np.abs(m) <= tol * 1e-2
    ok = centred & (zero | unit)
    return bool(ok.all() and (unit & ~zero).any())


def check_not_normalized(
    values,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    strict: bool = False,
    what: str = "values",
    stacklevel: int = 1,
) -> bool:
    """Warn (:class:`DoubleNormalizationWarning`), or raise (:class:`DoubleNormalizationError`)
    under ``strict=True``, when ``values`` already look group z-scored
    (:func:`looks_group_normalized`). Returns True when they do (and no error was raised).
    ``stacklevel=1`` attributes the warning to the caller of this function."""
    if not looks_group_normalized(values, group_size, offsets=offsets, group_ids=group_ids, groups=groups):
        return False
    msg = (
        f"{what} already look group z-scored (per-group mean ~0, std ~1); normalizing them again "
        "is the double-normalization bug (group z-score, then a second whitening). Normalize once: "
        "use the group-scaled advantages as they are, or normalize(..., scale='none') then whiten()."
    )
    if strict:
        raise DoubleNormalizationError(msg)
    warnings.warn(msg, DoubleNormalizationWarning, stacklevel=stacklevel + 1)
    return True


@dataclass(frozen=True)
class Normalized:
    """The result of :func:`normalize`: final advantages and the batch's diagnostics."""

    advantages: np.ndarray
    """One advantage per reward, input order; already normalized: do not normalize again."""
    diagnostics: Diagnostics
    keep: np.ndarray
    """DAPO keep-mask (= diagnostics.keep): rewards of groups with non-zero spread."""
    batch: BatchMoments | None
    """Batch moments used for a batch scale (None for scale 'group' / 'none')."""
    scale: str


def normalize(
    rewards,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    estimator: str = "grpo",
    scale: str | None = None,
    ddof: int = 0,
    eps: float = 0.0,
    singleton: str = "zero",
    nan: str = "raise",
    batch_std: float | None = None,
    strict: bool = False,
    num_threads: int | None = None,
) -> Normalized:
    """Rewards -> advantages with exactly one normalization, on the whole batch.

    estimator: ``"grpo"`` (group mean baseline, default scale ``"group"``), ``"drgrpo"`` (group
        mean, default scale ``"none"``) or ``"rloo"`` (leave-one-out, default scale ``"none"``).
    scale: the single normalization: ``"group"`` (per-group std), ``"batch"`` or
        ``"batch_residual"`` (one std over the whole batch, each reward counted once), or
        ``"none"``. Never two of them.
    batch_std: for a shard of a larger batch with a batch scale: the global batch std (see
        :mod:`groupadv.moments`, :func:`groupadv.distributed.all_reduce_moments`).
    strict: raise :class:`DoubleNormalizationError` instead of warning when ``rewards``
        already look group z-scored (advantages passed where rewards were expected).

    Subsample, mask or token-weight the returned advantages afterwards, in the loss; do not
    whiten them again.
    """
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of 'grpo', 'drgrpo', 'rloo', got {estimator!r}")
    if scale is None:
        scale = "group" if estimator == "grpo" else "none"
    if estimator != "grpo" and scale == "group":
        raise ValueError(f"estimator={estimator!r} does not divide by the group std; use estimator='grpo'")
    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    check_not_normalized(x, groups=g, strict=strict, what="rewards", stacklevel=2)
    batch = None
    if scale in ("batch", "batch_residual") and batch_std is None:
        # Reported with the result; the core computes the same batch std itself.
        batch = BatchMoments.from_rewards(x, groups=g, nan=nan, num_threads=num_threads)
    adv = _api.advantages(
        x, groups=g, center=_ESTIMATORS[estimator], scale=scale, ddof=ddof, eps=eps,
        singleton=singleton, nan=nan, num_threads=num_threads, batch_std=batch_std,
    )
    diag = diagnostics(x, groups=g, advantages=adv, ddof=ddof, nan=nan, num_threads=num_threads)
    return Normalized(advantages=adv, diagnostics=diag, keep=diag.keep, batch=batch, scale=scale)


def whiten(
    values,
    *,
    mask=None,
    weights=None,
    ddof: int = 0,
    eps: float = 1e-8,
    shift_mean: bool = True,
    group_size: int | None = None,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    strict: bool = False,
) -> np.ndarray:
    """Global whitening ``(v - mean) / (std + eps)`` over the (masked, weighted) values: the
    learner-side normalization, for pipelines whose advantages were *not* group-scaled.

    Pass the groups (``group_size=`` / ``offsets=`` / ``group_ids=`` / ``groups=``) to run the
    double-normalization guard: values that already look group z-scored warn
    (:class:`DoubleNormalizationWarning`) or, with ``strict=True``, raise. ``weights``:
    frequency weights (e.g. token counts) — an explicit choice; the default counts each value
    once. ``mask``: booleans, False values are left out of the statistics and returned as 0.
    ``shift_mean=False`` only divides (as some trainers do). Returns float64.

    The guard looks at whole groups: give it the full batch and select the kept transitions
    with ``mask`` (a subsample of a group no longer has mean 0 and std 1, so it cannot be
    recognised as z-scored).
    """
    v = rewards_array(values, "values").astype(np.float64, copy=False)
    if any(a is not None for a in (group_size, offsets, group_ids, groups)):
        g = resolve(len(v), group_size, offsets, group_ids, groups)
        check_not_normalized(v, groups=g, strict=strict, what="values", stacklevel=2)
    w = np.ones(len(v)) if weights is None else weights_array(weights, len(v))
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != v.shape or m.dtype != np.bool_:
            raise ValueError(f"mask must be a bool array of shape {v.shape}, got {m.dtype} {m.shape}")
        w = np.where(m, w, 0.0)
    # One group over all values: the core's weighted moments, then its policy and apply.
    whole = _api.group_moments(v, len(v), nan="propagate",
                               weights=w if (weights is not None or mask is not None) else None)
    std = whole.std(ddof)[0]
    if not np.isfinite(std):
        raise ValueError(
            f"cannot whiten: {whole.count[0]:g} values (weight) is not more than ddof={ddof}, or values are not finite"
        )
    out = _api.advantages(v, len(v), center="mean" if shift_mean else "none", scale="group", ddof=ddof,
                          eps=eps, singleton="zero", moments=whole)
    if mask is not None:
        out[~m] = 0.0
    return out
