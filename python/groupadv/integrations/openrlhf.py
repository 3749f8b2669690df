"""OpenRLHF's group estimators (``openrlhf/trainer/ppo_utils/experience_maker.py``, 0.11):
rewards of ``n_prompts * n_samples_per_prompt`` samples, each prompt's samples consecutive."""

from __future__ import annotations

from typing import Any

from .._api import advantages

_ESTIMATORS: dict[str, dict[str, Any]] = {
    "group_norm": {"center": "mean", "scale": "group"},
    "rloo": {"center": "loo", "scale": "none"},
    "dr_grpo": {"center": "mean", "scale": "none"},
}


def compute_advantages(rewards, n_samples_per_prompt: int, advantage_estimator: str = "group_norm",
                       *, nan: str = "raise"):
    """``group_norm``: ``(r - mean) / (std + 1e-9)`` (ddof=1); ``rloo``: ``r - (sum - r)/(n - 1)``;
    ``dr_grpo``: ``r - mean``. Groups of one are an error, as OpenRLHF asserts
    ``n_samples_per_prompt > 1``. A NaN or infinite reward raises a ValueError naming the sample;
    ``nan="propagate"`` gives OpenRLHF's result instead (NaN over the sample's whole group)."""
    if advantage_estimator not in _ESTIMATORS:
        names = ", ".join(repr(k) for k in _ESTIMATORS)
        raise ValueError(f"advantage_estimator must be one of {names}, got {advantage_estimator!r}")
    return advantages(rewards, n_samples_per_prompt, preset="openrlhf", nan=nan, **_ESTIMATORS[advantage_estimator])
