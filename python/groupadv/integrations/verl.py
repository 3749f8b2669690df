"""verl's outcome-advantage estimators (``verl.trainer.ppo.core_algos``, 0.9.1), same call.

Register them in place of verl's (e.g. ``core_algos.compute_grpo_outcome_advantage =
groupadv.integrations.verl.compute_grpo_outcome_advantage`` before the trainer starts), or call
them from a custom ``adv_estimator``.
"""

from __future__ import annotations

from typing import Any

from ..tokens import token_advantages


def compute_grpo_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                   norm_adv_by_std_in_grpo: bool = True, config: Any = None):
    """verl's GRPO (and Dr. GRPO with ``norm_adv_by_std_in_grpo=False``).

    ``scores = token_level_rewards.sum(-1)``; per uid group ``(score - mean) / (std + epsilon)``
    with ``torch.std`` (ddof=1), or ``score - mean``; a one-response group has mean 0 and std 1.
    Returns ``(advantages, returns)``, both ``adv[:, None] * response_mask`` (the same tensor,
    as verl returns it).
    """
    adv = token_advantages(token_level_rewards, response_mask, group_ids=index, preset="verl",
                           eps=epsilon, scale="group" if norm_adv_by_std_in_grpo else "none")
    return adv, adv


def compute_rloo_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                   config: Any = None):
    """verl's RLOO (loop version): ``score * n/(n-1) - mean * n/(n-1)`` per uid group; a
    one-response group keeps its raw score. Returns ``(advantages, returns)``."""
    adv = token_advantages(token_level_rewards, response_mask, group_ids=index, preset="verl",
                           center="loo", scale="none")
    return adv, adv
