"""Drop-in functions with the call signatures of the peers' advantage estimators.

* :mod:`groupadv.integrations.verl`: ``compute_grpo_outcome_advantage`` and
  ``compute_rloo_outcome_advantage`` (token-level rewards, response mask, uid index).
* :mod:`groupadv.integrations.trl`: GRPO and RLOO advantages from a flat reward tensor and the
  number of generations per prompt.
* :mod:`groupadv.integrations.openrlhf`: ``group_norm``, ``rloo`` and ``dr_grpo`` estimators.

They reproduce the peers' numerics (ddof, eps, singletons; see :data:`groupadv.PRESETS`)
except where the peers are wrong in float32: an all-equal group gets exactly 0.0 here.
"""
