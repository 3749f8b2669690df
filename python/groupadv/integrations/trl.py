"""TRL's advantage computations (``trl/trainer/grpo_trainer.py`` / ``rloo_trainer.py``, 1.16):
from a flat reward tensor whose consecutive blocks of ``num_generations`` belong to one prompt.

NaN rewards are TRL's unscorable completions (every reward function returned None): they are
left out of every statistic and get advantage 0 (grpo_trainer.py 2756-2759 and 2810,
``torch.nan_to_num(advantages, nan=0.0)``; rloo_trainer.py 1650-1657 and 1699). A prompt with
one scorable completion, and ``num_generations=1`` (TRL's eval path, ``num_generations_eval=1``,
grpo_trainer.py 2772-2773 and 2778-2779, rloo_trainer.py 1679-1680 and 1692-1693), gets 0 too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._api import advantages

# TRL's nan-aware statistics (trl.trainer.utils.nanstd / torch.nanmean) and its zeroing.
_TRL: dict[str, Any] = {"preset": "trl", "nan": "omit", "singleton": "zero"}


def _scale(scale_rewards) -> str:
    if scale_rewards is True:
        return "group"
    if scale_rewards is False:
        return "none"
    if scale_rewards in ("group", "batch", "none"):
        return scale_rewards
    raise ValueError(f"scale_rewards must be 'group', 'batch', 'none', True or False, got {scale_rewards!r}")


def compute_grpo_advantages(rewards, num_generations: int, scale_rewards="group"):
    """GRPOTrainer's advantages (``multi_objective_aggregation="sum_then_normalize"``,
    grpo_trainer.py 2761-2788): ``rewards - group mean``, divided by ``std + 1e-4`` (ddof=1)
    of the group (``"group"``/True), of the whole batch (``"batch"``), or not
    (``"none"``/False). NaN rewards: see the module docstring."""
    return advantages(rewards, num_generations, scale=_scale(scale_rewards), **_TRL)


def compute_rloo_advantages(rewards, num_generations: int, normalize_advantages: bool = False):
    """RLOOTrainer's advantages (rloo_trainer.py 1682-1699): ``r - (sum - r)/(k - 1)`` over the
    scorable completions of the prompt; with ``normalize_advantages`` the result is then
    standardised over the batch, ``(A - mean) / (std + 1e-4)`` (ddof=1) — a second
    normalization, applied here only because TRL's option asks for it. As in TRL, that second
    pass leaves out the unscorable completions and those whose prompt has no other scorable
    one (TRL's ``0/0``, rloo_trainer.py 1684 and 1695)."""
    adv = advantages(rewards, num_generations, center="loo", scale="none", **_TRL)
    if not normalize_advantages:
        return adv
    n = len(adv)
    if num_generations > 1:
        # TRL's NaN rows before its nan-aware normalization: no reward, or no scorable sibling.
        r = np.isnan(np.asarray(_numpy(rewards), dtype=np.float64)).reshape(-1, num_generations)
        no_signal = (r | ((~r).sum(axis=1, keepdims=True) < 2)).reshape(-1)
        if no_signal.any():
            if hasattr(adv, "clone"):  # a torch tensor in, a tensor out
                import torch

                adv, no_signal = adv.clone(), torch.from_numpy(no_signal).to(adv.device)
            else:
                adv = adv.copy()
            adv[no_signal] = float("nan")
    return advantages(adv, offsets=[0, n], scale="group", **_TRL)


def _numpy(x):
    return x.detach().cpu().float().numpy() if hasattr(x, "detach") else x


# ---- issue 12, multi-reward GRPO (engineer "groups") ----
# Transcribed from trl/trainer/grpo_trainer.py at huggingface/trl f2cd577 (the newest stored
# snapshot, v1.9.0-26; lines 2676-2733 of `_generate_and_score_completions`).


def compute_multi_reward_advantages(rewards_per_func, num_generations: int, reward_weights=None,
                                    multi_objective_aggregation: str = "sum_then_normalize",
                                    scale_rewards="group"):
    """GRPOTrainer's advantages from several reward functions: ``rewards_per_func`` (N, K),
    ``reward_weights`` (K, default 1), ``num_generations`` consecutive rows per prompt.

    * ``"sum_then_normalize"`` (TRL's default, grpo_trainer.py 2681-2708):
      ``rewards = (rewards_per_func * reward_weights).nansum(dim=1)``, then GRPO advantages
      of ``rewards`` with ``scale_rewards`` as :func:`compute_grpo_advantages`.
    * ``"normalize_then_sum"`` (2710-2719): each component ``(r - nanmean) / (nanstd + 1e-4)``
      within its prompt's group (``num_generations=1``: 0), the weighted ``nansum``, then
      ``(s - nanmean(s)) / (nanstd(s) + 1e-4)`` over the whole batch; ``scale_rewards`` is
      not used (as in TRL).

    A completion whose every reward function returned None (a NaN row) is unscorable: left out
    of every statistic, advantage 0 (2676-2679, 2729); a NaN in some components is skipped by
    the ``nansum`` and by that component's statistics. ``num_generations=1`` gives 0."""
    from ..estimators import multi_reward_advantages

    if multi_objective_aggregation == "sum_then_normalize":
        return multi_reward_advantages(rewards_per_func, num_generations, weights=reward_weights,
                                       scale=_scale(scale_rewards), **_TRL)
    if multi_objective_aggregation != "normalize_then_sum":
        raise ValueError(f"Invalid multi_objective_aggregation: {multi_objective_aggregation!r}. Must be "
                         "'sum_then_normalize' or 'normalize_then_sum'.")
    summed = multi_reward_advantages(rewards_per_func, num_generations, weights=reward_weights,
                                     aggregation="normalize_then_sum", **_TRL)
    # The unscorable rows are NaN again for the batch statistics (TRL 2717), then 0.
    unscorable = np.asarray(np.isnan(np.asarray(_numpy(rewards_per_func), dtype=np.float64)).all(axis=1))
    if unscorable.any():
        if hasattr(summed, "clone"):
            import torch

            summed = summed.clone()
            summed[torch.from_numpy(unscorable).to(summed.device)] = float("nan")
        else:
            summed[unscorable] = np.nan
    return advantages(summed, offsets=[0, len(unscorable)], scale="group", **_TRL)
