"""Drop-in functions with the call signatures of the peers' advantage estimators.

* :mod:`groupadv.integrations.verl`: verl 0.9.1's ``grpo``, ``grpo_vectorized``, ``rloo`` and
  ``rloo_vectorized`` (token-level rewards, response mask, uid index; verl's signatures,
  defaults and output dtypes), and ``install()`` / ``uninstall()`` to put them into verl's
  ``ADV_ESTIMATOR_REGISTRY``.
* :mod:`groupadv.integrations.trl`: TRL 1.16's GRPO and RLOO advantages from a flat reward
  tensor and the number of generations per prompt (NaN = unscorable completion, as TRL).
* :mod:`groupadv.integrations.openrlhf`: OpenRLHF's ``group_norm``, ``rloo`` and ``dr_grpo``.

They reproduce the peers' numerics (ddof, eps, singletons; see :data:`groupadv.PRESETS`)
except where the peers are wrong in float32: an all-equal group gets exactly 0.0 here. The
maths is groupadv's (:func:`groupadv.advantages`, :func:`groupadv.token_advantages`); these
modules only choose its parameters. verl/OpenRLHF adapters raise a ValueError on a NaN reward
unless ``nan="propagate"`` (the peer's behaviour).
"""
