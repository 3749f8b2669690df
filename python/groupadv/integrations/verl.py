"""verl's outcome-advantage estimators (``verl.trainer.ppo.core_algos``, 0.9.1), same calls.

One function per registry name groupadv supports (:data:`SUPPORTED`), with verl's signature,
defaults and return convention (``(advantages, returns)``, the same tensor). :func:`install`
puts them into verl's ``ADV_ESTIMATOR_REGISTRY`` and over the module attributes, so verl's
own ``compute_advantage`` dispatcher (``verl/trainer/ppo/ray_trainer.py``) uses them;
:func:`uninstall` puts verl's back.

Differences from verl, on purpose: an all-equal group gets exactly 0 (verl turns float32
rounding into advantages); a NaN or infinite score raises a ValueError naming the response
unless ``nan="propagate"`` (then NaN spreads over its group as in verl); scores are summed
and normalised in float64, then cast to verl's output dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from ..tokens import token_advantages


def _out_dtype(token_level_rewards, response_mask, floor=None):
    """verl's result dtype, ``scores * response_mask``: the scores keep the rewards' dtype (so
    bf16 and fp16 stay) unless verl's statistics promote them (``floor``: float32 for
    grpo_vectorized, whose ``group_mean_std`` returns float32, ``verl/utils/groupwise.py``;
    for rloo_vectorized, the dtype of ``torch.bincount(..., weights=scores)``)."""
    import torch

    scores = token_level_rewards.dtype if floor is None else torch.promote_types(token_level_rewards.dtype, floor)
    return torch.promote_types(scores, response_mask.dtype)


def _outcome(token_level_rewards, response_mask, index, *, floor=None, **kwargs):
    """Group-relative advantages of the summed token rewards, broadcast over the mask, in
    verl's output dtype; an empty batch gives an empty tensor as verl does."""
    import torch

    dtype = _out_dtype(token_level_rewards, response_mask, floor)
    if token_level_rewards.shape[0] == 0:
        adv = token_level_rewards.new_zeros(token_level_rewards.shape, dtype=dtype)
        return adv, adv
    rewards, mask = token_level_rewards, response_mask
    low = (torch.bfloat16, torch.float16)
    if rewards.dtype in low:  # numpy has no bf16: compute from float32 copies, cast back
        rewards = rewards.float()
    if mask.dtype in low or (kwargs.get("nan") == "propagate" and not mask.is_floating_point()):
        mask = mask.float()  # verl multiplies by the mask: a NaN score stays NaN on masked tokens
    adv = token_advantages(rewards, mask, group_ids=index, preset="verl", **kwargs)
    adv = adv.to(dtype)
    return adv, adv




def compute_grpo_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                   norm_adv_by_std_in_grpo: bool = True, config: Optional[Any] = None,
                                   *, nan: str = "raise"):
    """verl's ``grpo`` (and Dr. GRPO with ``norm_adv_by_std_in_grpo=False``).

    ``scores = token_level_rewards.sum(-1)``; per uid group ``(score - mean) / (std + epsilon)``
    with ``torch.std`` (ddof=1), or ``score - mean``; a one-response group has mean 0 and std 1.
    Returns ``(advantages, returns)``, both ``adv[:, None] * response_mask`` (the same tensor,
    as verl returns it). Like verl's, it takes no other keyword (verl's dispatcher calls it by name).
    """
    return _outcome(token_level_rewards, response_mask, index, eps=epsilon, nan=nan,
                    scale="group" if norm_adv_by_std_in_grpo else "none")


def compute_grpo_vectorized_outcome_advantage(token_level_rewards, response_mask, index,
                                              epsilon: float = 1e-6, norm_adv_by_std_in_grpo: bool = True,
                                              config: Optional[Any] = None, *, nan: str = "raise"):
    """verl's ``grpo_vectorized``: the same advantages as ``grpo``, with verl's float32 statistics
    (so bf16/fp16 rewards give float32, float64 stays float64). The function honours
    ``norm_adv_by_std_in_grpo``; verl's dispatcher does not pass it (it passes ``config``, which
    this estimator, like verl's, ignores), so through the registry it always scales."""
    import torch

    return _outcome(token_level_rewards, response_mask, index, floor=torch.float32, eps=epsilon, nan=nan,
                    scale="group" if norm_adv_by_std_in_grpo else "none")


def compute_rloo_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                   config: Optional[Any] = None, *, nan: str = "raise", **kwargs):
    """verl's ``rloo`` (loop version): ``score * n/(n-1) - mean * n/(n-1)`` per uid group; a
    one-response group keeps its raw score. ``epsilon`` and the extra keywords verl's dispatcher
    passes (``reward_baselines``, ...) are accepted and unused, as in verl."""
    return _outcome(token_level_rewards, response_mask, index, center="loo", scale="none", nan=nan)


def compute_rloo_vectorized_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                              config: Optional[Any] = None, *, nan: str = "raise", **kwargs):
    """verl's ``rloo_vectorized``: as ``rloo``, except that a one-response group gets 0
    (``... * (c > 1)`` in verl), in verl's dtype: its group sums come from ``torch.bincount``,
    whose dtype depends on torch's version and the input (float64 for bf16 weights, int64 for
    an empty batch with torch 2.15), so it is asked the same question on a 0/1-row tensor."""
    import torch

    n = min(token_level_rewards.shape[0], 1)
    probe = torch.zeros(n, dtype=token_level_rewards.dtype)
    floor = torch.bincount(torch.zeros(n, dtype=torch.long), weights=probe).dtype
    return _outcome(token_level_rewards, response_mask, index, floor=floor, center="loo", scale="none",
                    singleton="zero", nan=nan)


def _otb(token_level_rewards, response_mask, index, old_log_probs, sum_pi_squared, rollout_is_weights,
         handle_zero_tail, epsilon, nan, align):
    """Both optimal-token-baseline estimators: (advantages, returns), two tensors in verl's
    dtype ``token_level_rewards * response_mask``."""
    import torch

    from ..token_baseline import optimal_token_baseline_advantages

    dtype = torch.promote_types(token_level_rewards.dtype, response_mask.dtype)
    adv, ret = optimal_token_baseline_advantages(
        token_level_rewards, response_mask, old_log_probs, sum_pi_squared, group_ids=index,
        rollout_is_weights=rollout_is_weights, align=align, handle_zero_tail=handle_zero_tail,
        eps=epsilon, nan=nan)
    return adv.to(dtype), ret.to(dtype)


def compute_optimal_token_baseline_advantage(token_level_rewards, response_mask, index, old_log_probs,
                                             sum_pi_squared, rollout_is_weights=None, handle_zero_tail: bool = True,
                                             epsilon: float = 1e-8, *, nan: str = "raise", **kwargs):
    """verl's ``optimal_token_baseline`` (core_algos.py:871-987): per uid group and column t,
    ``b[t] = sum G W m / (sum W m + epsilon)`` with returns ``G`` (reverse cumsum of the masked
    rewards) and cumulative path variance ``W = cumsum((1 - 2 exp(old_log_probs) +
    sum_pi_squared) * rollout_is_weights**2 * m)``; ``A = (G - b) m``. Returns
    ``(advantages, returns)``. verl's dispatcher passes ``config`` (and others) as keywords:
    accepted and unused, as in verl. See :func:`groupadv.optimal_token_baseline_advantages`."""
    return _otb(token_level_rewards, response_mask, index, old_log_probs, sum_pi_squared, rollout_is_weights,
                handle_zero_tail, epsilon, nan, "position")


def compute_multi_turn_optimal_token_baseline_advantage(token_level_rewards, response_mask, index, old_log_probs,
                                                        sum_pi_squared, rollout_is_weights=None,
                                                        handle_zero_tail: bool = True, epsilon: float = 1e-8, *,
                                                        nan: str = "raise", **kwargs):
    """verl's ``tir_optimal_token_baseline`` (core_algos.py:990-1121): as
    ``optimal_token_baseline`` with each response's valid tokens aligned by rank (masked tool
    tokens skipped), responses without valid tokens left out of their group (advantage 0),
    masked tokens 0."""
    return _otb(token_level_rewards, response_mask, index, old_log_probs, sum_pi_squared, rollout_is_weights,
                handle_zero_tail, epsilon, nan, "turn")


#: verl registry name -> (core_algos attribute, groupadv's function)
SUPPORTED: dict[str, tuple[str, Callable[..., Any]]] = {
    "grpo": ("compute_grpo_outcome_advantage", compute_grpo_outcome_advantage),
    "grpo_vectorized": ("compute_grpo_vectorized_outcome_advantage", compute_grpo_vectorized_outcome_advantage),
    "rloo": ("compute_rloo_outcome_advantage", compute_rloo_outcome_advantage),
    "rloo_vectorized": ("compute_rloo_vectorized_outcome_advantage", compute_rloo_vectorized_outcome_advantage),
    "optimal_token_baseline": ("compute_optimal_token_baseline_advantage", compute_optimal_token_baseline_advantage),
    "tir_optimal_token_baseline": ("compute_multi_turn_optimal_token_baseline_advantage",
                                   compute_multi_turn_optimal_token_baseline_advantage),
}

_originals: dict = {}  # name -> (attribute value, registry value) saved by install()


def _core_algos(core_algos):
    if core_algos is not None:
        return core_algos
    from verl.trainer.ppo import core_algos as module

    return module


def install(core_algos=None) -> list:
    """Use groupadv's estimators inside verl: for every name in :data:`SUPPORTED`, replace the
    ``ADV_ESTIMATOR_REGISTRY`` entry and the ``core_algos`` attribute (verl's dispatcher calls
    ``core_algos.compute_grpo_outcome_advantage`` directly for ``grpo``). Call it before the
    trainer starts; code that imported verl's functions by name earlier keeps them. Calling it
    again does nothing. Returns the names installed; :func:`uninstall` undoes it."""
    ca = _core_algos(core_algos)
    for name, (attr, fn) in SUPPORTED.items():
        if name in _originals:
            continue
        _originals[name] = (getattr(ca, attr, None), ca.ADV_ESTIMATOR_REGISTRY.get(name))
        setattr(ca, attr, fn)
        ca.ADV_ESTIMATOR_REGISTRY[name] = fn
    return sorted(SUPPORTED)


def uninstall(core_algos=None) -> None:
    """Put verl's own estimators back where :func:`install` replaced them (entries changed
    since by someone else are left alone)."""
    ca = _core_algos(core_algos)
    for name, (attr, fn) in SUPPORTED.items():
        if name not in _originals:
            continue
        attr_value, registry_value = _originals.pop(name)
        if getattr(ca, attr, None) is fn:
            setattr(ca, attr, attr_value)
        if ca.ADV_ESTIMATOR_REGISTRY.get(name) is fn:
            if registry_value is None:
                del ca.ADV_ESTIMATOR_REGISTRY[name]
            else:
                ca.ADV_ESTIMATOR_REGISTRY[name] = registry_value
