"""Per-step diagnostics for logging: how much signal the groups carry and what the advantages
look like. One grouped pass over the rewards (the backend's ``group_stats``) plus one
``np.quantile`` call over the advantages, so it is cheap enough for every training step.

* ``mean_within_std``: mean over groups (with >= 2 rewards) of the within-group reward std.
  This is the quantity that governs the gain of std normalization: dividing by the group std
  multiplies a group's advantages by 1/std, so when the typical within-prompt std is small
  (easy or hard prompts) the z-score amplifies small differences a lot.
* ``frac_zero_std``: fraction of groups whose rewards are all equal: their group-relative
  advantages are exactly 0 and they only add cost (DAPO's dynamic sampling drops them).
* ``keep``: DAPO keep-mask, one bool per reward, True where its group has non-zero spread.
* advantage quantiles, mean, std, fraction of exact zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _backend
from ._groups import Groups, resolve
from ._inputs import choice, ddof_value, rewards_array, threads_value

__all__ = ["Diagnostics", "diagnostics", "keep_mask"]

DEFAULT_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@dataclass(frozen=True)
class Diagnostics:
    """Scalars (and the keep-mask) describing one batch of rewards and its advantages."""

    n_rewards: int
    n_groups: int
    mean_within_std: float
    """Mean within-group reward std over groups with at least two valid rewards (NaN if none)."""
    frac_zero_std: float
    """Fraction of groups (with >= 2 valid rewards) whose rewards are all equal (NaN if none)."""
    frac_kept: float
    """Fraction of rewards whose group has non-zero spread (DAPO keeps these)."""
    keep: np.ndarray = field(repr=False)
    """DAPO keep-mask: one bool per reward (input order), True where its group has >= 2 valid
    rewards that are not all equal."""
    reward_mean: float = float("nan")
    adv_quantiles: dict[float, float] = field(default_factory=dict)
    """Quantile q -> value of the advantages (empty without advantages)."""
    adv_mean: float = float("nan")
    adv_std: float = float("nan")
    adv_frac_zero: float = float("nan")

    def as_dict(self, prefix: str = "") -> dict:
        """Flat dict of floats for a logger (wandb, tensorboard); the keep-mask is left out."""
        d = {
            "n_rewards": float(self.n_rewards),
            "n_groups": float(self.n_groups),
            "reward_mean": self.reward_mean,
            "mean_within_std": self.mean_within_std,
            "frac_zero_std": self.frac_zero_std,
            "frac_kept": self.frac_kept,
        }
        if self.adv_quantiles:
            d.update({"adv_mean": self.adv_mean, "adv_std": self.adv_std, "adv_frac_zero": self.adv_frac_zero})
            d.update({f"adv_q{_qname(q)}": v for q, v in self.adv_quantiles.items()})
        return {prefix + k: float(v) for k, v in d.items()}


def _qname(q: float) -> str:
    return f"{100 * q:g}".replace(".", "_")


def _group_arrays(x, g, ddof, nan, threads):
    count, mean, std = _backend.impl.group_stats(x, g._impl, ddof, nan, threads)
    return count, mean, std


def keep_mask(
    rewards,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    nan: str = "raise",
    num_threads: int | None = None,
) -> np.ndarray:
    """DAPO dynamic-sampling mask: True for each reward whose group has >= 2 valid rewards that
    are not all equal (groups with no spread give zero advantages and no gradient)."""
    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    count, _, std = _group_arrays(x, g, 0, choice(nan, "nan"), threads_value(num_threads))
    return _keep(count, std, g)


def _keep(count, std, g) -> np.ndarray:
    keep_group = (count >= 2) & (std > 0)  # NaN std (propagated non-finite) is not kept
    if g.kind == "permuted":
        return keep_group[g.codes()]
    return np.repeat(keep_group, g.sizes())  # contiguous groups: no index array needed


def diagnostics(
    rewards,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    advantages=None,
    quantiles=DEFAULT_QUANTILES,
    ddof: int = 0,
    nan: str = "raise",
    num_threads: int | None = None,
) -> Diagnostics:
    """Diagnostics of one batch: group spread (rewards) and the advantages' distribution.

    Groups as in :func:`groupadv.advantages`. ``advantages`` (optional, one per reward): their
    quantiles (``quantiles``, in [0, 1]), mean, std and fraction of exact zeros; non-finite
    advantages are left out of these. ``ddof`` is the one of the within-group std.
    """
    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    nan = choice(nan, "nan")
    count, mean, std = _group_arrays(x, g, ddof_value(ddof), nan, threads_value(num_threads))
    multi = (count >= 2) & np.isfinite(std)
    n_multi = int(multi.sum())
    s = std[multi]
    mean_within = float(s.mean()) if n_multi else float("nan")
    frac_zero = float(np.count_nonzero(s == 0.0) / n_multi) if n_multi else float("nan")
    keep = _keep(count, std, g)
    total = int(count.sum())
    with np.errstate(invalid="ignore"):
        reward_mean = float(np.dot(count, np.where(count > 0, mean, 0.0)) / total) if total else float("nan")
    adv_quantiles: dict[float, float] = {}
    adv_mean = adv_std = adv_frac_zero = float("nan")
    if advantages is not None:
        a = np.asarray(advantages)
        if a.shape != x.shape:
            raise ValueError(f"advantages has shape {a.shape} but rewards has shape {x.shape}")
        if a.dtype.kind not in "fiu":
            raise TypeError(f"advantages must be numbers, got dtype {a.dtype}")
        q = np.asarray(quantiles, dtype=np.float64).reshape(-1)
        if q.size == 0 or np.any(~np.isfinite(q) | (q < 0) | (q > 1)):
            raise ValueError(f"quantiles must be a non-empty sequence of numbers in [0, 1], got {quantiles!r}")
        a = a.astype(np.float64, copy=False)
        fin = np.isfinite(a)
        if not fin.all():
            a = a[fin]
        if a.size:
            vals = np.quantile(a, q)
            adv_quantiles = {float(qi): float(v) for qi, v in zip(q, vals)}
            adv_mean = float(a.mean())
            adv_std = float(a.std())
            adv_frac_zero = float(np.count_nonzero(a == 0.0) / a.size)
        else:
            adv_quantiles = {float(qi): float("nan") for qi in q}
    return Diagnostics(
        n_rewards=len(x),
        n_groups=g.n_groups,
        mean_within_std=mean_within,
        frac_zero_std=frac_zero,
        frac_kept=float(keep.mean()),
        keep=keep,
        reward_mean=reward_mean,
        adv_quantiles=adv_quantiles,
        adv_mean=adv_mean,
        adv_std=adv_std,
        adv_frac_zero=adv_frac_zero,
    )
