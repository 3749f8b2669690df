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

from ..returns import _fused_native, discounted_returns, gae, masked_whiten
from ..tokens import _whitened_advantages_native, token_advantages


def _out_dtype(token_level_rewards, response_mask, floor=None):
    """verl's result dtype, ``scores * response_mask``: the scores keep the rewards' dtype (so
    bf16 and fp16 stay) unless verl's statistics promote them (``floor``: float32 for
    grpo_vectorized, whose ``group_mean_std`` returns float32, ``verl/utils/groupwise.py``;
    for rloo_vectorized, the dtype of ``torch.bincount(..., weights=scores)``)."""
    import torch

    scores = token_level_rewards.dtype if floor is None else torch.promote_types(token_level_rewards.dtype, floor)
    return torch.promote_types(scores, response_mask.dtype)


def _empty(token_level_rewards, dtype):
    """verl's result for an empty batch: an empty tensor of the output dtype, twice."""
    adv = token_level_rewards.new_zeros(token_level_rewards.shape, dtype=dtype)
    return adv, adv


def _core_inputs(rewards, mask, nan):
    """The token rewards and mask as the core reads them: bf16/fp16 rewards (numpy has no bf16)
    as float32 copies, the result cast back by the caller; a bf16/fp16 mask, and an integer
    mask under nan="propagate", as float32 (verl multiplies by the mask: a NaN score stays NaN
    on masked tokens)."""
    import torch

    low = (torch.bfloat16, torch.float16)
    if rewards.dtype in low:
        rewards = rewards.float()
    if mask.dtype in low or (nan == "propagate" and not mask.is_floating_point()):
        mask = mask.float()
    return rewards, mask


def _outcome(token_level_rewards, response_mask, index, *, floor=None, **kwargs):
    """Group-relative advantages of the summed token rewards, broadcast over the mask, in
    verl's output dtype; an empty batch gives an empty tensor as verl does."""

    dtype = _out_dtype(token_level_rewards, response_mask, floor)
    if token_level_rewards.shape[0] == 0:
        return _empty(token_level_rewards, dtype)
    rewards, mask = _core_inputs(token_level_rewards, response_mask, kwargs.get("nan"))
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


# ---- token-level estimators (issue 12, engineer "tokens") ----

def _wide(t, dtype):
    """``t`` as ``dtype`` widened to float32 at least (numpy has no bf16; the core computes in
    float64 and rounds once)."""
    import torch

    want = torch.promote_types(dtype, torch.float32)
    return t if t.dtype == want else t.to(want)


def _float(x) -> float:
    return float(x.item()) if hasattr(x, "item") else float(x)


def compute_gae_advantage_return(token_level_rewards, values, response_mask, gamma, lam, *, nan: str = "raise"):
    """verl's ``gae`` (``core_algos.py:215-263``): GAE over each response's tokens,
    observation tokens (mask 0) skipped, ``returns = advantages + values``, then the advantages
    whitened over the masked tokens (``verl_F.masked_whiten``, unbiased variance,
    ``rsqrt(var + 1e-8)``; not multiplied by the mask, as verl). Returns
    ``(advantages, returns)`` in verl's dtype (``promote(rewards, values, mask)``).

    Same signature as verl's (its dispatcher calls it by keyword, with no ``config``).
    Deviations: float64 scans and statistics (verl: the inputs' dtype); where every masked
    advantage is equal, they whiten to exactly 0. A NaN or infinite reward or value raises a
    ValueError naming the sample unless ``nan="propagate"``.
    """
    import torch

    dtype = torch.promote_types(token_level_rewards.dtype, values.dtype)
    if response_mask.is_floating_point():
        dtype = torch.promote_types(dtype, response_mask.dtype)
    r, v = _wide(token_level_rewards, dtype), _wide(values, dtype)
    mask = response_mask  # any integer dtype: the core reads it as it is
    if nan == "raise":  # one scan gathering the whitening statistics, one in-place whitening
        fused = _fused_native("gae_whiten", r, v, None, mask, _float(gamma), _float(lam))
        if fused is not None:
            return fused[0].to(dtype), fused[1].to(dtype)
    adv, ret = gae(r, v, mask, _float(gamma), _float(lam), nan=nan)
    adv = masked_whiten(adv, mask, nan=nan)
    return adv.to(dtype), ret.to(dtype)


def compute_reinforce_plus_plus_outcome_advantage(token_level_rewards, response_mask, config: Optional[Any] = None,
                                                  *, nan: str = "raise", **kwargs):
    """verl's ``reinforce_plus_plus`` (``core_algos.py:693-731``): discounted returns with
    ``config.gamma`` over each response (observation tokens skipped: their reward ignored,
    the running return carried, their return 0), then whitened over the masked tokens and
    multiplied by the mask. Returns ``(advantages, returns)``; returns in the rewards' dtype,
    advantages in ``promote(rewards, mask)``. ``config`` is required, as verl asserts."""
    import torch

    if config is None:
        raise ValueError("reinforce_plus_plus needs config (config.gamma), as verl's does")
    rdt = token_level_rewards.dtype
    adt = torch.promote_types(rdt, response_mask.dtype) if response_mask.is_floating_point() else rdt
    mask = response_mask
    if nan == "raise":  # one scan gathering the whitening statistics, one write of the advantages
        fused = _fused_native("returns_whiten", _wide(token_level_rewards, rdt), None, None, mask, _float(config.gamma))
        if fused is not None:
            return fused[1].to(adt), fused[0].to(rdt)
    ret = discounted_returns(_wide(token_level_rewards, rdt), mask, _float(config.gamma), nan=nan)
    adv = _whiten_masked(ret, mask, nan)
    return adv.to(adt), ret.to(rdt)


def _whiten_masked(x, mask, nan):
    """verl's ``masked_whiten(x, mask) * mask``; under ``nan="propagate"`` the product is taken
    in torch so that NaN stays NaN on masked-out tokens, as in verl."""
    if nan == "propagate":
        return masked_whiten(x, mask, nan=nan) * mask
    return masked_whiten(x, mask, apply_mask=True, nan=nan)


def compute_reinforce_plus_plus_baseline_outcome_advantage(token_level_rewards, response_mask, index,
                                                           epsilon: float = 1e-6, config: Optional[Any] = None,
                                                           *, nan: str = "raise", **kwargs):
    """verl's ``reinforce_plus_plus_baseline`` (``core_algos.py:533-584``): ``score - group
    mean`` per uid (a one-response group keeps its raw score), tiled over the mask, whitened
    over the masked tokens and multiplied by the mask. ``epsilon`` is unused, as in verl.
    Returns ``(advantages, returns)``, the same tensor, in ``promote(rewards, mask)``."""
    dtype = _out_dtype(token_level_rewards, response_mask)
    if token_level_rewards.shape[0] == 0:
        raise ValueError("reinforce_plus_plus_baseline needs a non-empty batch (verl's masked_whiten raises too)")
    if nan == "raise":  # the statistics from the bs scores and row counts: no tiled intermediate
        fused = _whitened_advantages_native(_wide(token_level_rewards, token_level_rewards.dtype), response_mask,
                                            index, preset="verl", center="mean", scale="none", nan=nan)
        if fused is not None:
            adv = fused.to(dtype)
            return adv, adv
    mask = response_mask
    if mask.is_floating_point() and mask.dtype != _wide(mask, mask.dtype).dtype:
        mask = mask.float()
    # the centred scores stay in float32 or wider until the end (one rounding to verl's dtype)
    centred = token_advantages(_wide(token_level_rewards, token_level_rewards.dtype), mask, group_ids=index,
                               preset="verl", center="mean", scale="none", nan=nan)
    adv = _whiten_masked(centred, mask, nan).to(dtype)
    return adv, adv


def compute_remax_outcome_advantage(token_level_rewards, reward_baselines, response_mask,
                                    config: Optional[Any] = None, *, nan: str = "raise", **kwargs):
    """verl's ``remax`` (``core_algos.py:734-767``): ``returns`` = reverse cumulative sum of
    the masked token rewards (``(r * mask).flip(-1).cumsum(-1).flip(-1)``: every token, masked
    or not, gets the sum of the masked rewards from it on), ``advantages = returns -
    reward_baselines[:, None] * mask``. Returns ``(advantages, returns)`` in verl's dtypes. An
    integer mask selects its tokens (any nonzero counts as 1; verl's masks are 0/1)."""
    import torch

    if reward_baselines is None:
        raise ValueError("remax needs reward_baselines (the greedy response's reward), as verl's does")
    rdt = token_level_rewards.dtype
    if response_mask.is_floating_point():
        rdt = torch.promote_types(rdt, response_mask.dtype)
    adt = torch.promote_types(rdt, reward_baselines.dtype)
    if nan == "raise":
        bad = ~torch.isfinite(reward_baselines.reshape(-1))
        if bool(bad.any()):
            i = int(torch.argmax(bad.to(torch.uint8)))
            from .._scan_twins import _float_text
            from ..errors import NonFiniteRewardError

            value = float(reward_baselines.reshape(-1)[i])
            raise NonFiniteRewardError(f"reward_baselines[{i}] (sample {i}) is {_float_text(value)}; pass "
                                       "nan='propagate' to allow non-finite inputs", index=i, value=value)
    if token_level_rewards.shape[0] == 0:
        ret = token_level_rewards.new_zeros(token_level_rewards.shape, dtype=rdt)
        return ret.to(adt), ret
    r = _wide(token_level_rewards, rdt)
    if nan == "raise":  # the baseline subtracted inside the scan: each output written once
        fused = _fused_native("returns_minus", r, None, reward_baselines, response_mask, 1.0, zero=True)
        if fused is not None:
            return fused[1].to(adt), fused[0].to(rdt)
    ret = discounted_returns(r, response_mask, 1.0, unmasked="zero", nan=nan)
    # an integer mask selects (nonzero = 1), as in every groupadv token pass and the fused scan
    sel = response_mask if response_mask.is_floating_point() else response_mask != 0
    base = reward_baselines.to(ret.dtype).unsqueeze(-1) * sel
    adv = ret - base
    return adv.to(adt), ret.to(rdt)
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
    "gae": ("compute_gae_advantage_return", compute_gae_advantage_return),
    "reinforce_plus_plus": ("compute_reinforce_plus_plus_outcome_advantage",
                            compute_reinforce_plus_plus_outcome_advantage),
    "reinforce_plus_plus_baseline": ("compute_reinforce_plus_plus_baseline_outcome_advantage",
                                     compute_reinforce_plus_plus_baseline_outcome_advantage),
    "remax": ("compute_remax_outcome_advantage", compute_remax_outcome_advantage),
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


# ---- issue 12, group-level estimators (engineer "groups"): grpo_passk, opo, gpg, gdpo ----


def _rows_native(token_level_rewards, response_mask, nan):
    """The (bs, L) inputs as the compiled core reads them, with each row's mask count and span
    (``token_row_spans``: one pass over the mask; a row whose flags are one run is later written
    without reading the mask): ``(tokens, mask, counts, spans)``, or None where the core does not
    take the inputs as they are (numpy backend, device tensors, bf16/fp16 rewards, a float mask,
    ``nan="propagate"``, whose NaN verl multiplies onto masked-out tokens)."""
    import torch

    from .. import _backend, _torch
    from .. import tokens as tok

    t, mask = token_level_rewards, response_mask
    if _backend.name != "native" or nan == "propagate" or not _torch.is_tensor(t) or _torch.on_device(t):
        return None
    if t.ndim != 2 or t.shape[0] == 0 or t.dtype not in (torch.float32, torch.float64):
        return None
    if not _torch.is_tensor(mask) or tuple(mask.shape) != tuple(t.shape) or mask.is_floating_point() \
            or mask.is_complex():
        return None
    tokens = tok._token_array(_torch.to_numpy(t), 2)
    m = tok._mask_array(_torch.to_numpy(mask), tokens.shape, tokens.dtype)
    counts, spans = _backend.impl.token_row_spans(m, tokens.shape[0], 0)
    return tokens, m, counts, spans


def _per_response(token_level_rewards, response_mask, advantages_of, dtype, nan, scores=None, whiten=False):
    """``advantages_of(scores, lengths)`` of the summed token rewards (or of the given
    per-response ``scores``; ``lengths``: each row's mask count as float64, or None where the
    caller must take them), broadcast over the mask, in ``dtype``: scores summed in float64 by
    the core (float32 for bf16/fp16 rewards, whose tensors numpy lacks), the broadcast in the
    core; CUDA tensors with torch on the device. ``whiten``: verl's ``masked_whiten(tiled) *
    mask`` of the tiled advantages (GDPO), from the bs advantages weighted by their rows' mask
    counts where the core takes the inputs (no tiled intermediate), else on the tiled tensor."""

    from .. import _backend, _torch
    from .. import tokens as tok

    if token_level_rewards.shape[0] == 0:
        return _empty(token_level_rewards, dtype)
    fast = _rows_native(token_level_rewards.detach(), response_mask.detach(), nan)
    if fast is not None:
        import numpy as np

        tokens, m, counts, spans = fast
        wide = _torch.to_numpy(token_level_rewards.new_empty(0, dtype=dtype)).dtype if whiten else tokens.dtype
        if wide == tokens.dtype:
            if scores is None:
                scores = _backend.impl.token_scores(tokens, None, 0)
            adv = np.asarray(advantages_of(scores, counts), dtype=tokens.dtype)
            if whiten:  # the tiled values' masked mean and variance, as verl's masked_whiten
                a = adv.astype(np.float64)
                mean, k = _backend.impl.masked_whiten(a, counts, np.empty_like(a), True, True, True, 1e-8, False,
                                                      False, False, 0)
                adv = ((a - mean) * k + 0.0).astype(tokens.dtype)  # as the core's write: (x - mean) * k + 0
            out = np.empty_like(tokens)
            _backend.impl.broadcast_spans(adv, spans, m, out, 0)
            res = _torch.from_numpy(out, token_level_rewards, dtype)
            return res, res
    rewards, mask = _core_inputs(token_level_rewards.detach(), response_mask.detach(), nan)
    if _torch.on_device(rewards):
        adv = advantages_of(rewards.double().sum(dim=-1) if scores is None else scores, None)
        m = mask if mask.is_floating_point() else (mask != 0)
        res = (adv.unsqueeze(-1) * m.to(adv.dtype))
    else:
        tokens = tok._token_array(_torch.to_numpy(rewards), 2)
        m = tok._mask_array(_torch.to_numpy(mask), tokens.shape, tokens.dtype)
        threads = 0
        if scores is None:
            scores = _backend.impl.token_scores(tokens, None, threads)
        adv = advantages_of(scores, None)
        res = tok._finish(adv.astype(tokens.dtype, copy=False), m, None, tokens, None, rewards, threads)
    if whiten:
        import torch

        from ..returns import masked_whiten

        res = res.to(torch.promote_types(dtype, torch.float32))  # float32 or wider until whitened
        wm = response_mask.float() if response_mask.dtype in (torch.bfloat16, torch.float16) else response_mask
        # verl: masked_whiten(...) * response_mask, so a NaN (nan="propagate") stays on masked tokens
        res = masked_whiten(res, wm, nan=nan) * wm
    res = res.to(dtype)
    return res, res


def compute_grpo_passk_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                         norm_adv_by_std_in_grpo: bool = True, config: Optional[Any] = None,
                                         *, nan: str = "raise", **kwargs):
    """verl's ``grpo_passk`` (core_algos.py 471-530): only the best response of each uid group
    gets ``r_max - r_2nd``, divided by ``torch.std(group) + epsilon`` (ddof=1) when
    ``config.get("norm_adv_by_std_in_grpo", True)``: verl reads the option from ``config`` and
    ignores the argument, as here. ``config`` is required (verl asserts it); a group of one
    response raises (verl's ValueError). Scores in float64 (verl: in the rewards' dtype); an
    all-equal group gives exactly 0."""
    from ..estimators import passk_advantages

    if config is None:
        raise ValueError("grpo_passk needs config (verl asserts `config is not None`)")
    norm = config.get("norm_adv_by_std_in_grpo", True)
    ids = index
    return _per_response(
        token_level_rewards, response_mask,
        lambda s, _: passk_advantages(s, group_ids=ids, scale="group" if norm else "none", ddof=1, eps=epsilon,
                                   singleton="error", nan=nan),
        _out_dtype(token_level_rewards, response_mask), nan)


def compute_opo_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                  config: Optional[Any] = None, *, nan: str = "raise", **kwargs):
    """verl's ``opo`` (core_algos.py 639-690): ``score - sum(len * score) / sum(len)`` over the
    uid group, ``len = response_mask.sum(-1)``; a one-response group keeps its score (baseline
    0). ``epsilon`` is accepted and unused, as in verl. A group whose responses are all empty
    (lengths summing to 0) gets 0 (verl: 0/0, NaN on its all-masked tokens)."""
    from .. import _torch
    from ..estimators import opo_advantages

    def lengths_of(counts):
        if counts is not None:  # the core's row counts (the pass that also finds the spans)
            return counts
        lengths = response_mask.detach().sum(dim=-1)
        return _torch.to_numpy(lengths.cpu()).astype("float64") if lengths.numel() else lengths

    ids = index
    return _per_response(
        token_level_rewards, response_mask,
        lambda s, counts: opo_advantages(s, lengths_of(counts), group_ids=ids, singleton="raw", nan=nan),
        _out_dtype(token_level_rewards, response_mask), nan)


def compute_gpg_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                  f_norm: float = 1.0, alpha: float = 1.0, config=None, *, nan: str = "raise",
                                  **kwargs):
    """verl's ``gpg`` (core_algos.py 770-830): ``alpha * (score - group mean) / f_norm`` with
    ``alpha = bs / max(1, count_nonzero(scores))`` (verl computes it and ignores the ``alpha``
    argument, as here); a one-response group has mean 0. ``epsilon`` is accepted and unused."""
    from ..estimators import gpg_advantages

    ids = index
    return _per_response(
        token_level_rewards, response_mask,
        lambda s, _: gpg_advantages(s, group_ids=ids, f_norm=f_norm, singleton="raw", nan=nan),
        _out_dtype(token_level_rewards, response_mask), nan)


def compute_gdpo_outcome_advantage(token_level_rewards, response_mask, index, epsilon: float = 1e-6,
                                   norm_adv_by_std_in_grpo: bool = True, config: Optional[Any] = None,
                                   non_tensor_batch: Optional[dict] = None, batch: Optional[dict] = None,
                                   *, nan: str = "raise", **kwargs):
    """verl's ``gdpo`` (core_algos.py 361-468): per reward component k, GRPO within the uid
    group (``(r_k - mean) / (std + epsilon)``, ddof=1, a one-response group ``r_k / (1 +
    epsilon)``; no division with ``norm_adv_by_std_in_grpo=False``), the weighted sum
    ``sum_k w_k A_k`` (:func:`groupadv.multi_reward_advantages`,
    ``aggregation="normalize_then_sum"``), broadcast over the mask, then verl's masked
    whitening over the batch's tokens (:func:`groupadv.masked_whiten`) times the mask.

    Components: with ``config``, ``non_tensor_batch`` and ``batch`` (as verl's dispatcher passes
    them), ``non_tensor_batch[key]`` for ``key in config["gdpo_reward_keys"]`` (float32, as
    verl) with weights ``config.get("gdpo_reward_weights")`` (default 1); otherwise the one
    component ``token_level_rewards.sum(-1)``. An all-equal component group contributes
    exactly 0 before the whitening (the whitening then shifts every token by the batch mean,
    as verl's)."""
    import numpy as np
    import torch

    from .. import _torch
    from ..estimators import multi_reward_advantages

    scores: Any = None
    weights = None
    dtype = _out_dtype(token_level_rewards, response_mask)
    if config is not None and non_tensor_batch is not None and batch is not None:
        keys = config.get("gdpo_reward_keys", None)
        if not keys:
            raise ValueError("GDPO requires 'algorithm.gdpo_reward_keys' listing the individual reward "
                             "component keys returned by compute_score (verl asserts it)")
        missing = [k for k in keys if k not in non_tensor_batch]
        if missing:
            raise ValueError(f"GDPO reward key {missing[0]!r} not found in non_tensor_batch "
                             f"(available: {list(non_tensor_batch.keys())})")
        # verl places each component at the last valid token of a float32 tensor (core_algos.py
        # 436-441): its score is the float32 value.
        scores = np.stack([np.asarray(non_tensor_batch[k], dtype=np.float32) for k in keys], axis=1)
        scores = scores.astype(np.float64)
        w = config.get("gdpo_reward_weights", None)
        weights = None if w is None else np.asarray(list(w), dtype=np.float32).astype(np.float64)
        dtype = torch.promote_types(torch.float32, response_mask.dtype)
    norm = "group" if norm_adv_by_std_in_grpo else "none"

    def combined(s, _):
        x = s.reshape(-1, 1) if s.ndim == 1 else s
        return multi_reward_advantages(x, group_ids=index, weights=weights, aggregation="normalize_then_sum",
                                       scale=norm, ddof=1, eps=epsilon, singleton="raw", nan=nan)

    if scores is not None and _torch.on_device(token_level_rewards):
        scores = torch.from_numpy(scores).to(token_level_rewards.device)
    return _per_response(token_level_rewards, response_mask, combined, dtype, nan, scores=scores, whiten=True)


SUPPORTED.update({
    "gdpo": ("compute_gdpo_outcome_advantage", compute_gdpo_outcome_advantage),
    "grpo_passk": ("compute_grpo_passk_outcome_advantage", compute_grpo_passk_outcome_advantage),
    "opo": ("compute_opo_outcome_advantage", compute_opo_outcome_advantage),
    "gpg": ("compute_gpg_outcome_advantage", compute_gpg_outcome_advantage),
})
