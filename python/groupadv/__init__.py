"""groupadv: group-relative advantages (GRPO, Dr. GRPO, RLOO) for LLM RL rollouts.

A parallel Rust core (``groupadv._native``) with an equivalent pure-numpy fallback; see
:func:`advantages` for the semantics shared by every function.
"""

from ._api import (
    GroupStats,
    advantages,
    backend,
    drgrpo,
    get_num_threads,
    group_stats,
    grpo,
    rloo,
    set_num_threads,
)
from ._groups import Groups, make_groups

__version__ = "0.1.0"

__all__ = [
    "GroupStats",
    "Groups",
    "advantages",
    "backend",
    "drgrpo",
    "get_num_threads",
    "group_stats",
    "grpo",
    "make_groups",
    "rloo",
    "set_num_threads",
]
