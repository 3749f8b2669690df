"""TRL's advantage computations (``trl.trainer.grpo_trainer`` / ``rloo_trainer``, 1.16): from
a flat reward tensor whose consecutive blocks of ``num_generations`` belong to one prompt."""

from __future__ import annotations

from .._api import advantages


def _scale(scale_rewards) -> str:
    if scale_rewards is True:
        return "group"
    if scale_rewards is False:
        return "none"
    if scale_rewards in ("group", "batch", "none"):
        return scale_rewards
    raise ValueError(f"scale_rewards must be 'group', 'batch', 'none', True or False, got {scale_rewards!r}")


def compute_grpo_advantages(rewards, num_generations: int, scale_rewards="group"):
    """GRPOTrainer's advantages: ``rewards - group mean``, divided by ``std + 1e-4`` (ddof=1) of
    the group (``"group"``/True), of the whole batch (``"batch"``), or not (``"none"``/False)."""
    return advantages(rewards, num_generations, preset="trl", scale=_scale(scale_rewards))


def compute_rloo_advantages(rewards, num_generations: int, normalize_advantages: bool = False):
    """RLOOTrainer's advantages: ``r - (sum - r)/(k - 1)``; with ``normalize_advantages`` the
    result is then standardised over the batch, ``(A - mean) / (std + 1e-4)`` (ddof=1) — a
    second normalization, applied here only because TRL's option asks for it."""
    adv = advantages(rewards, num_generations, preset="trl", center="loo", scale="none")
    if not normalize_advantages:
        return adv
    n = len(adv)
    return advantages(adv, offsets=[0, n], preset="trl", scale="group")
