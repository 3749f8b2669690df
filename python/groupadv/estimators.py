"""Group-level estimators beyond GRPO / Dr. GRPO / RLOO (issue 12): pass@k, GPG, OPO's
length-weighted baseline and multi-component rewards (GDPO, TRL's multi-reward GRPO).

Each is a composition of core stages: the core's top-2 per group (``src/select.rs``), its
(N, K) multi-component pass (``src/components.rs``), its weighted group moments and its
advantages; numpy and torch twins in ``groupadv._group_twins``. Layout keywords
(``group_size`` / ``offsets`` / ``group_ids`` / ``groups``), ``nan``, ``out``,
``num_threads`` and the dtype rules are those of :func:`groupadv.advantages`: float32 and
float64 keep their dtype, float16/bfloat16 tensors are computed in float32 and narrowed back,
ints and bools give float64; torch tensors give tensors (CUDA ones computed on their device).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend, _group_twins, _torch
from ._api import _labelled_errors, _narrow, _write, advantages, group_moments
from ._groups import resolve
from ._inputs import choice, ddof_value, eps_value, out_array, rewards_array, threads_value
from ._presets import resolve_preset
from .moments import GroupMoments

_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def _impl():
    """The backend's functions for these primitives: the compiled core, or the numpy twins."""
    return _backend.impl if _backend.name == "native" else _group_twins


def _tensor_in(rewards, out, compute, ndim=1):
    """Run ``compute(numpy rewards) -> numpy float result`` for a CPU tensor and give a tensor
    in the rewards' dtype policy (into ``out=`` when given)."""
    want = _torch.result_dtype(rewards.dtype)
    res = compute(_torch.to_numpy(rewards))
    return _write(out, _narrow(_torch.from_numpy(res, rewards), want))


def _device_out(res, rewards, out):
    """A float64 device result in the rewards' dtype policy (into ``out=`` when given)."""
    return _write(out, _narrow(res, _torch.result_dtype(rewards.dtype)))


def passk_advantages(rewards, group_size=None, *, offsets=None, group_ids=None, groups=None,
                     scale: str = "group", ddof: int = 0, eps: float = 0.0, singleton: str = "zero",
                     nan: str = "raise", out=None, num_threads=None):
    """Pass@k advantages (verl ``grpo_passk``, core_algos.py 471-530; arXiv 2503.19595): only
    each group's best reward gets a non-zero advantage,

    ``A_best = (r_max - r_2nd) / (std_g + eps)`` (``scale="group"``; ``"none"``: no division),

    every other reward 0. ``std_g`` is the group std (``ddof``). A tie at the top gives 0; a
    group whose rewards are all equal gives exactly 0. A group with one (valid) reward:
    ``singleton="zero"`` (0) or ``"error"`` (verl raises). NaN: ``"raise"`` names the
    reward; ``"propagate"``: a NaN is the largest value (as ``torch.topk``), so it gets NaN;
    ``"omit"``: left out (advantage 0).

    >>> import groupadv as ga
    >>> ga.passk_advantages([1.0, 3.0, 2.0, 0.0, 0.0, 4.0], 3, scale="none").tolist()
    [0.0, 1.0, 0.0, 0.0, 0.0, 4.0]
    """
    if _torch.is_tensor(rewards):
        if _torch.on_device(rewards):
            codes, k = _torch.codes_on(rewards.device, rewards.numel(), group_size, offsets, group_ids, groups)
            res = _group_twins.torch_passk(rewards, codes, k, choice(scale, "scale"), ddof_value(ddof),
                                           eps_value(eps), choice(singleton, "singleton"), choice(nan, "nan"))
            return _device_out(res, rewards, out)
        return _tensor_in(rewards, out, lambda x: passk_advantages(
            x, group_size, offsets=_torch.numpy_if_tensor(offsets), group_ids=_torch.numpy_if_tensor(group_ids),
            groups=groups, scale=scale, ddof=ddof, eps=eps, singleton=singleton, nan=nan, num_threads=num_threads))
    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    result = out_array(out, x)
    with _labelled_errors(g):
        _impl().passk_advantages(x, result, g._impl, choice(scale, "scale"), ddof_value(ddof), eps_value(eps),
                                 choice(singleton, "singleton"), choice(nan, "nan"), threads_value(num_threads))
    return result


def gpg_advantages(rewards, group_size=None, *, offsets=None, group_ids=None, groups=None,
                   f_norm: float = 1.0, singleton: str = "raw", nan: str = "raise", out=None,
                   num_threads=None):
    """GPG advantages (verl ``gpg``, core_algos.py 770-830; arXiv 2504.02546):

    ``A_i = alpha * (r_i - mean_g) / f_norm``,  ``alpha = N / max(1, #{i: r_i != 0})``

    over the whole batch of N rewards (verl computes ``alpha`` from the data and ignores its
    ``alpha`` argument). A one-reward group: ``singleton="raw"`` (verl: mean 0, so
    ``alpha * r / f_norm``), ``"zero"`` or ``"error"``. An all-equal group gives exactly 0.
    NaN as :func:`groupadv.advantages` (a NaN counts as non-zero under ``"propagate"``, as
    ``torch.count_nonzero``; an omitted reward is not counted).

    >>> import groupadv as ga
    >>> ga.gpg_advantages([0.0, 1.0, 0.0, 0.0], 2).tolist()
    [-2.0, 2.0, 0.0, 0.0]
    """
    f = float(f_norm)
    if not (np.isfinite(f) and f != 0.0):
        raise ValueError(f"f_norm must be a finite non-zero number, got {f_norm!r}")
    nan = choice(nan, "nan")
    if _torch.is_tensor(rewards) and _torch.on_device(rewards):
        import torch

        x = rewards.detach()
        counted = torch.isfinite(x) if nan == "omit" else torch.ones_like(x, dtype=torch.bool)
        m = int(torch.count_nonzero(x[counted]).item())
        base = advantages(x.double(), group_size, offsets=offsets, group_ids=group_ids, groups=groups,
                          center="mean", scale="none", singleton=singleton, nan=nan)
        return _device_out(base * (x.numel() / max(m, 1) / f), rewards, out)
    if _torch.is_tensor(rewards):
        return _tensor_in(rewards, out, lambda x: gpg_advantages(
            x, group_size, offsets=_torch.numpy_if_tensor(offsets), group_ids=_torch.numpy_if_tensor(group_ids),
            groups=groups, f_norm=f_norm, singleton=singleton, nan=nan, num_threads=num_threads))
    x = rewards_array(rewards)
    m = int(np.count_nonzero(x[np.isfinite(x)] if nan == "omit" else x))
    alpha = len(x) / max(m, 1)
    base = advantages(x.astype(np.float64), group_size, offsets=offsets, group_ids=group_ids, groups=groups,
                      center="mean", scale="none", singleton=singleton, nan=nan, num_threads=num_threads)
    base *= alpha / f
    result = out_array(out, x)
    result[...] = _narrow(base, x.dtype)
    return result


def opo_advantages(rewards, weights, group_size=None, *, offsets=None, group_ids=None, groups=None,
                   singleton: str = "raw", nan: str = "raise", out=None, num_threads=None):
    """OPO advantages (verl ``opo``, core_algos.py 639-690; arXiv 2505.23585): the baseline is
    the weighted group mean, the weights being the response lengths in OPO,

    ``A_i = r_i - sum_g(w r) / sum_g(w)``  (no scale).

    The weighted mean comes from the core's weighted group moments
    (:func:`groupadv.group_moments` with ``weights=``). A group of one response (one valid
    reward): ``singleton="raw"`` (verl: baseline 0, so ``A = r``), ``"zero"`` or ``"error"``.
    An all-equal group gives exactly 0; a group whose weights sum to 0 gets 0 (verl: 0/0, NaN).
    ``weights``: one finite value >= 0 per reward.

    >>> import groupadv as ga
    >>> ga.opo_advantages([1.0, 0.0, 5.0], [3, 1, 2], offsets=[0, 2, 3]).tolist()
    [0.25, -0.75, 5.0]
    """
    if _torch.is_tensor(rewards) and _torch.on_device(rewards):
        # Device tensors: the weighted means on the host (one value per group), the rest there.
        import torch

        codes, k = _torch.codes_on(rewards.device, rewards.numel(), group_size, offsets, group_ids, groups)
        host = opo_advantages(rewards.detach().double().cpu().numpy(), _torch.numpy_if_tensor(
            weights.detach().cpu() if _torch.is_tensor(weights) else weights), groups=_groups_of(codes, k),
            singleton=singleton, nan=nan)
        return _device_out(torch.from_numpy(host).to(rewards.device), rewards, out)
    if _torch.is_tensor(rewards):
        return _tensor_in(rewards, out, lambda x: opo_advantages(
            x, _torch.numpy_if_tensor(weights.detach().cpu() if _torch.is_tensor(weights) else weights),
            group_size, offsets=_torch.numpy_if_tensor(offsets), group_ids=_torch.numpy_if_tensor(group_ids),
            groups=groups, singleton=singleton, nan=nan, num_threads=num_threads))
    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    weighted = group_moments(x, groups=g, nan=nan, weights=weights, num_threads=num_threads)
    plain = group_moments(x, groups=g, nan=nan, num_threads=num_threads)
    # The record the policy stage needs: the number of (valid) responses (the singleton rule),
    # the weighted mean as the centre; no scale is taken, so no spread is needed.
    count = np.where(weighted.count > 0, plain.count, 0.0)
    gm = GroupMoments(count, weighted.mean, np.zeros(g.n_groups), np.ones(g.n_groups))
    return advantages(x, groups=g, moments=gm, center="mean", scale="none", singleton=singleton, nan=nan,
                      out=out, num_threads=num_threads)


def _groups_of(codes, k):
    from ._groups import make_groups

    return make_groups(len(codes), group_ids=codes.cpu().numpy())


def multi_reward_advantages(rewards, group_size=None, *, offsets=None, group_ids=None, groups=None,
                            weights=None, aggregation: str = "sum_then_normalize", center: str = "mean",
                            scale: str = "group", ddof=None, eps=None, singleton=None, nan: str = "raise",
                            preset=None, out=None, num_threads=None):
    """Advantages of multi-component rewards: ``rewards`` is (N, K), K reward components
    (TRL's ``rewards_per_func``, verl GDPO's ``gdpo_reward_keys``) with ``weights`` (K,
    default all 1). Groups are over the N rows.

    * ``aggregation="sum_then_normalize"`` (TRL's default): ``s_i = sum_k w_k r_ik``, then
      the group advantages of ``s`` (every keyword of :func:`groupadv.advantages`, batch
      scales included); ``s`` is summed in float64 and stored in the rewards' dtype.
    * ``"normalize_then_sum"`` (GDPO; TRL's option): ``A_i = sum_k w_k A_k(r_ik)``, ``A_k``
      the group advantage of component k in its group (``scale`` "group" or "none").

    NaN: ``"raise"`` names the sample; ``"propagate"`` spreads NaN; ``"omit"`` leaves a value
    out (TRL's ``nansum``): a component value is skipped in the sum, or gets component
    advantage 0; a row whose every value is omitted gets 0. One pass over the (N, K) buffer
    in the core. Result: (N,) in the rewards' dtype.

    >>> import groupadv as ga
    >>> r = [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    >>> ga.multi_reward_advantages(r, 2, weights=[1.0, 0.5], scale="none").tolist()
    [0.5, -0.5, 0.5, -0.5]
    >>> ga.multi_reward_advantages(r, 2, weights=[1.0, 0.5], aggregation="normalize_then_sum",
    ...                            scale="group", ddof=1).tolist()
    [0.7071067811865475, -0.7071067811865475, 0.7071067811865475, -0.7071067811865475]
    """
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"aggregation must be 'sum_then_normalize' or 'normalize_then_sum', got {aggregation!r}")
    ddof, eps, singleton = resolve_preset(preset, ddof, eps, singleton)
    nan = choice(nan, "nan")
    params: dict[str, Any] = {"center": choice(center, "center"), "scale": choice(scale, "scale"), "ddof": ddof_value(ddof),
              "eps": eps_value(eps), "singleton": choice(singleton, "singleton"), "nan": nan}
    if _torch.is_tensor(rewards):
        x2 = rewards.detach()
        if x2.ndim != 2:
            raise ValueError(f"rewards must be (N, K), got a tensor of shape {tuple(x2.shape)}")
        w = _weights(weights, x2.shape[1])
        if _torch.on_device(rewards):
            codes, k = _torch.codes_on(rewards.device, x2.shape[0], group_size, offsets, group_ids, groups)
            if aggregation == "sum_then_normalize":
                s = _group_twins.torch_component_sums(x2, w, nan)
                res = advantages(s, groups=_groups_of(codes, k), **params)
            else:
                res = _group_twins.torch_normalize_then_sum(x2, w, codes, k, **params)
            return _device_out(res, x2[:, 0], out)
        return _tensor_in(x2[:, 0], out, lambda _: multi_reward_advantages(
            _torch.to_numpy(x2), group_size, offsets=_torch.numpy_if_tensor(offsets),
            group_ids=_torch.numpy_if_tensor(group_ids), groups=groups, weights=w, aggregation=aggregation,
            num_threads=num_threads, **params))
    arr = np.asarray(rewards)
    if arr.ndim != 2:
        raise ValueError(f"rewards must be (N, K), got an array of shape {arr.shape}")
    n, k = arr.shape
    flat = rewards_array(arr.reshape(-1))
    w = _weights(weights, k)
    g = resolve(n, group_size, offsets, group_ids, groups)
    threads = threads_value(num_threads)
    like = np.empty(n, dtype=flat.dtype)
    with _labelled_errors(g):
        if aggregation == "sum_then_normalize":
            # the sums in the rewards' dtype (as the peers' tensors), then the advantages stage
            sums = np.empty(n, dtype=flat.dtype)
            _impl().component_sums(flat, k, w, sums, nan, threads)
            return advantages(sums, groups=g, out=out_array(out, like), num_threads=num_threads, **params)
        result = out_array(out, like)
        _impl().normalize_then_sum(flat, k, w, result, g._impl, params["center"], params["scale"], params["ddof"],
                                   params["eps"], params["singleton"], nan, threads)
    return result


def _weights(weights, k: int) -> np.ndarray:
    """The component weights as float64 (K,), all 1 when not given."""
    if weights is None:
        return np.ones(k)
    w = np.asarray(_torch.numpy_if_tensor(weights.detach().cpu()) if _torch.is_tensor(weights) else weights,
                   dtype=np.float64)
    if w.shape != (k,):
        raise ValueError(f"weights must have one value per component ({k}), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weights must be finite")
    return w
