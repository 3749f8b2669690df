"""groupadv: group-relative advantages (GRPO, Dr. GRPO, RLOO) for LLM RL rollouts.

A parallel Rust core (``groupadv._native``) with an equivalent pure-numpy fallback; see
:func:`advantages` for the semantics shared by every function.
"""

# The submodules of normalization at the right level (issue 5): batch moments, diagnostics,
# pipeline + guard, importance weights, scale-out (torch / ray are imported lazily inside
# `distributed`).
from . import diagnostics, distributed, errors, moments, pipeline, weights
from ._api import (
    GroupStats,
    advantages,
    backend,
    drgrpo,
    get_num_threads,
    group_moments,
    group_stats,
    grpo,
    rloo,
    set_num_threads,
)
from ._groups import Groups, make_groups
from ._inputs import MAX_THREADS
from ._presets import PRESETS
from ._version import __version__
from .estimators import gpg_advantages, multi_reward_advantages, opo_advantages, passk_advantages
from .moments import BatchMoments, GroupMoments, Moments
from .pipeline import DoubleNormalizationError, DoubleNormalizationWarning
from .returns import discounted_returns, gae, masked_whiten
from .token_baseline import optimal_token_baseline_advantages
from .tokens import packed_token_advantages, token_advantages
from .weights import self_normalized_weights

__all__ = [
    "MAX_THREADS",
    "errors",
    "__version__",
    "BatchMoments",
    "DoubleNormalizationError",
    "DoubleNormalizationWarning",
    "GroupMoments",
    "Moments",
    "diagnostics",
    "distributed",
    "moments",
    "pipeline",
    "self_normalized_weights",
    "weights",
    "GroupStats",
    "Groups",
    "PRESETS",
    "packed_token_advantages",
    "passk_advantages",
    "gpg_advantages",
    "opo_advantages",
    "multi_reward_advantages",
    "optimal_token_baseline_advantages",
    "token_advantages",
    "advantages",
    "backend",
    "drgrpo",
    "get_num_threads",
    "group_moments",
    "group_stats",
    "grpo",
    "make_groups",
    "discounted_returns",
    "gae",
    "masked_whiten",
    "rloo",
    "set_num_threads",
]
