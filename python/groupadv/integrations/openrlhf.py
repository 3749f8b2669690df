"""OpenRLHF's estimators (``openrlhf/trainer/ppo_utils/experience_maker.py``, 0.11).

Group baselines (:func:`compute_advantages`): rewards of ``n_prompts * n_samples_per_prompt``
samples, each prompt's samples consecutive. Token level (:func:`compute_token_advantages` and
the three steps it composes, named as OpenRLHF's methods): ``gae``, ``reinforce``,
``reinforce_baseline``. Line numbers cite the 0.11.0 tag (the stored snapshot); OpenRLHF 0.11
has no ``flash_reinforce`` estimator (``cli/train_ppo_ray.py:480`` lists gae, reinforce, rloo,
reinforce_baseline, group_norm, dr_grpo).
"""

from __future__ import annotations

from typing import Any

from .._api import advantages

_ESTIMATORS: dict[str, dict[str, Any]] = {
    "group_norm": {"center": "mean", "scale": "group"},
    "rloo": {"center": "loo", "scale": "none"},
    "dr_grpo": {"center": "mean", "scale": "none"},
    # experience_maker.py:267-268: the same baseline as dr_grpo at the sequence level
    "reinforce_baseline": {"center": "mean", "scale": "none"},
}


def compute_advantages(rewards, n_samples_per_prompt: int, advantage_estimator: str = "group_norm",
                       *, nan: str = "raise"):
    """``group_norm``: ``(r - mean) / (std + 1e-9)`` (ddof=1); ``rloo``: ``r - (sum - r)/(n - 1)``;
    ``dr_grpo`` and ``reinforce_baseline``: ``r - mean`` (the sequence-level step; the token
    returns and global whitening of ``reinforce_baseline`` are :func:`compute_token_advantages`). Groups of one are an error, as OpenRLHF asserts
    ``n_samples_per_prompt > 1``. A NaN or infinite reward raises a ValueError naming the sample;
    ``nan="propagate"`` gives OpenRLHF's result instead (NaN over the sample's whole group)."""
    if advantage_estimator not in _ESTIMATORS:
        names = ", ".join(repr(k) for k in _ESTIMATORS)
        raise ValueError(f"advantage_estimator must be one of {names}, got {advantage_estimator!r}")
    return advantages(rewards, n_samples_per_prompt, preset="openrlhf", nan=nan, **_ESTIMATORS[advantage_estimator])


# ---- token level (issue 12, engineer "tokens") ----

def _float_dtype(*tensors):
    """torch's promotion of the given tensors' dtypes (float masks included), float32 at least
    for the computation (numpy has no bf16)."""
    import torch

    dt = tensors[0].dtype
    for t in tensors[1:]:
        if t is not None and t.is_floating_point():
            dt = torch.promote_types(dt, t.dtype)
    return dt, torch.promote_types(dt, torch.float32)


def get_advantages_and_returns(values, rewards, action_mask, gamma: float, lambd: float, *, nan: str = "raise"):
    """OpenRLHF's GAE (``experience_maker.py:333-378``): rewards and values multiplied by the
    mask, ``delta_t = r_t + gamma * V_{t+1} - V_t`` over every token (``V`` after the last
    token is 0), ``A_t = delta_t + gamma * lambd * A_{t+1}``, ``returns = A + V * mask``.
    Returns ``(advantages, returns)`` in torch's promotion of the inputs' dtypes."""
    from ..returns import gae

    dt, wide = _float_dtype(rewards, values, action_mask)
    adv, ret = gae(rewards.to(wide), values.to(wide), action_mask, float(gamma), float(lambd), unmasked="zero",
                   nan=nan)
    return adv.to(dt), ret.to(dt)


def get_cumulative_returns(rewards, action_mask, gamma: float, *, nan: str = "raise"):
    """OpenRLHF's REINFORCE returns (``experience_maker.py:380-411``): rewards multiplied by
    the mask, ``G_t = r_t + gamma * G_{t+1}`` over every token; in the rewards' dtype."""
    from ..returns import discounted_returns

    _, wide = _float_dtype(rewards)
    return discounted_returns(rewards.to(wide), action_mask, float(gamma), unmasked="zero", nan=nan).to(rewards.dtype)


def normalize_advantages(advantages, action_mask, no_std_norm: bool = False, *, nan: str = "raise"):
    """OpenRLHF's global normalisation of ``gae`` / ``reinforce`` / ``reinforce_baseline``
    advantages (``experience_maker.py:314-328``): one mean over the masked tokens of the batch,
    ``var`` with divisor ``sum(mask)`` (biased), ``(A - mean) * rsqrt(max(var, 1e-8))`` on every
    token; ``no_std_norm``: only centred. OpenRLHF computes in float32, so the result is
    float32 for bf16/fp16/float32 advantages and float64 for float64 ones."""
    import torch

    from ..returns import masked_whiten

    dt = torch.promote_types(advantages.dtype, torch.float32)
    out = masked_whiten(advantages.to(dt), action_mask, unbiased=False, eps_rule="clamp", scale=not no_std_norm,
                        nan=nan)
    return out.to(dt)


_TOKEN_ESTIMATORS = ("gae", "reinforce", "reinforce_baseline")


def compute_token_advantages(rewards, action_mask, n_samples_per_prompt: int = 1,
                             advantage_estimator: str = "reinforce", *, values=None, kl=None, kl_coef: float = 0.0,
                             gamma: float = 1.0, lambd: float = 1.0, no_std_norm: bool = False, nan: str = "raise"):
    """OpenRLHF's ``compute_advantages_and_returns`` (``experience_maker.py:237-330``) for the
    token estimators, on one batch: ``rewards`` (one per sample, each prompt's
    ``n_samples_per_prompt`` samples consecutive), ``action_mask`` (bs, L).

    1. ``reinforce_baseline``: ``r - mean`` of the prompt's samples (lines 267-268), and
       gamma forced to 1 (lines 292-300);
    2. token rewards as ``compute_reward`` (``models/utils.py:98-126``): the reward at the last
       masked token, minus ``kl_coef * kl`` on every token when ``kl`` is given;
    3. ``gae``: :func:`get_advantages_and_returns` with ``values``; ``reinforce`` /
       ``reinforce_baseline``: :func:`get_cumulative_returns`, advantages = returns;
    4. :func:`normalize_advantages` over the batch.

    Returns ``(advantages, returns)``.
    """
    import torch

    from .._api import advantages as group_advantages

    if advantage_estimator not in _TOKEN_ESTIMATORS:
        names = ", ".join(repr(k) for k in _TOKEN_ESTIMATORS)
        raise ValueError(f"advantage_estimator must be one of {names}, got {advantage_estimator!r}")
    if advantage_estimator == "gae" and values is None:
        raise ValueError("gae needs values (the critic's value of each token)")
    r = rewards.reshape(-1)
    if advantage_estimator == "reinforce_baseline":
        r = group_advantages(r, int(n_samples_per_prompt), center="mean", scale="none", singleton="zero", nan=nan)
        gamma = 1.0
    mask = action_mask
    tok_dtype = kl.dtype if kl is not None else torch.promote_types(r.dtype, torch.float32)
    eos = mask.size(1) - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
    token_rewards = torch.zeros(mask.shape, dtype=tok_dtype).scatter_(1, eos, r.unsqueeze(1).to(tok_dtype))
    if kl is not None:
        token_rewards = token_rewards + (-max(float(kl_coef), 0.0)) * kl
    if advantage_estimator == "gae":
        adv, ret = get_advantages_and_returns(values, token_rewards, mask, gamma, lambd, nan=nan)
    else:
        ret = get_cumulative_returns(token_rewards, mask, gamma, nan=nan)
        adv = ret.clone()
    return normalize_advantages(adv, mask, no_std_norm, nan=nan), ret
