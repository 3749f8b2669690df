"""Peers' numerical conventions, for `preset=`.

Each preset fixes the std's degrees of freedom, the eps added to the std and what a one-reward
group gets, as the peer's code does (verl 0.9.1 `compute_grpo_outcome_advantage` /
`compute_rloo_outcome_advantage`, TRL 1.16 `GRPOTrainer`, OpenRLHF 0.11 `group_norm`):

* verl: torch.std (ddof=1), (r - mean) / (std + 1e-6); a one-reward group has mean 0 and
  std 1, so its advantage is the reward itself (divided by 1 + 1e-6 under the std).
* trl: ddof=1, (r - mean) / (std + 1e-4); TRL refuses groups of one (num_generations >= 2).
* openrlhf: ddof=1, (r - mean) / (std + 1e-9); OpenRLHF asserts n_samples_per_prompt > 1.

What no preset reproduces: the peers compute in float32, and an all-equal group there gets
rounding noise divided by eps (e.g. eight rewards of 0.1: -0.0074 with verl's eps, up to -0.83
with OpenRLHF's); groupadv gives those groups exactly 0.0.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "verl": {"ddof": 1, "eps": 1e-6, "singleton": "raw"},
    "trl": {"ddof": 1, "eps": 1e-4, "singleton": "error"},
    "openrlhf": {"ddof": 1, "eps": 1e-9, "singleton": "error"},
}

_DEFAULTS = {"ddof": 0, "eps": 0.0, "singleton": "zero"}


def resolve_preset(preset, ddof, eps, singleton):
    """(ddof, eps, singleton): explicit values first, then the preset's, then the defaults."""
    if preset is None:
        base = _DEFAULTS
    elif isinstance(preset, str) and preset in PRESETS:
        base = PRESETS[preset]
    else:
        names = ", ".join(repr(k) for k in PRESETS)
        raise ValueError(f"preset must be one of {names} or None, got {preset!r}")
    return (
        base["ddof"] if ddof is None else ddof,
        base["eps"] if eps is None else eps,
        base["singleton"] if singleton is None else singleton,
    )
