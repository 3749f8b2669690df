"""The optimal token baseline: a baseline per time step of each group, weighted by each
response's cumulative path variance (verl 0.9.1 ``optimal_token_baseline`` and
``tir_optimal_token_baseline``, ``verl/trainer/ppo/core_algos.py`` 871-1121).

The core is ``src/token_baseline.rs`` (parallel over groups, float64 sums); the numpy and torch
twins are in ``groupadv._token_baseline_twins``.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import _backend, _torch
from ._groups import resolve
from ._inputs import aligned, threads_value
from ._token_baseline_twins import _fmt, otb_numpy, otb_torch
from .errors import NonFiniteRewardError

_ALIGN = ("position", "turn")


_MASK_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int32, np.int64, np.float32, np.float64))


def _mask(mask, shape) -> np.ndarray:
    """The response mask in a dtype the core reads as it is (bool as uint8, without copies);
    other integer and float dtypes are widened. Its values are checked (0 and 1 only: verl
    multiplies by the mask) by the core and the twins."""
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"response_mask has shape {m.shape}, expected {shape}")
    if m.dtype == np.bool_:
        return aligned(m).view(np.uint8)
    if m.dtype.kind not in "iuf":
        raise TypeError(f"response_mask must be bool, integer or float, got dtype {m.dtype}")
    if m.dtype.newbyteorder("=") in _MASK_DTYPES:
        return aligned(m, m.dtype.newbyteorder("="))
    return aligned(m, np.float64 if m.dtype.kind == "f" else np.int64)


def _float2d(x, name: str, shape=None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (bs, L), got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype}")
    return a


def _check_options(align, nan, eps):
    if align not in _ALIGN:
        raise ValueError(f"align must be 'position' or 'turn', got {align!r}")
    if nan not in ("raise", "propagate"):
        raise ValueError(f"nan must be 'raise' or 'propagate', got {nan!r}")
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")


def optimal_token_baseline_advantages(token_level_rewards, response_mask, old_log_probs, sum_pi_squared,
                                      group_size=None, *, offsets=None, group_ids=None, groups=None,
                                      rollout_is_weights=None, align: str = "position",
                                      handle_zero_tail: bool = True, eps: float = 1e-8, nan: str = "raise",
                                      num_threads=None):
    """Advantages and returns of the optimal token baseline, both (bs, L).

    For response i of a group (groups over the bs rows: ``group_size`` / ``offsets`` /
    ``group_ids`` / ``groups`` as :func:`groupadv.advantages`), with mask m::

        G_i[t] = sum_{s >= t} r_i[s] m_i[s]                    (returns)
        w_i[t] = (1 - 2 exp(old_log_probs_i[t]) + sum_pi_squared_i[t]) * rho_i[t]**2
        W_i[t] = sum_{s <= t} w_i[s] m_i[s]                     (cumulative path variance)
        b[k]   = sum_i G_i W_i m_i / (sum_i W_i m_i + eps)        (over the group, step k)
        A_i[t] = (G_i[t] - b[k]) m_i[t]

    ``rho`` is ``rollout_is_weights`` (1 when None). ``align="position"``: step k is the column
    (verl ``optimal_token_baseline``, core_algos.py:871-987); ``align="turn"``: step k is the
    rank among the response's valid tokens, responses without a valid token are left out and
    get 0, masked tokens get 0 (verl ``tir_optimal_token_baseline``, core_algos.py:990-1121,
    multi-turn / tool interaction). A group of one response gets ``b = 0``. With
    ``handle_zero_tail``, the unique longest response of a group gets ``b = 0`` from the
    second-longest length on. Sums are float64; at a step where every weight-carrying
    response (``W m != 0``) has the same return, ``b`` is exactly that return (advantage 0;
    verl's ``eps`` leaves ``G eps / sum W``).

    The mask (bool, integer or float) must hold only 0 and 1 (verl multiplies by it).
    ``nan="raise"``: a non-finite reward raises NonFiniteRewardError naming the response,
    a non-finite path-variance weight a ValueError naming the input and ``[row, t]``
    (``-inf`` log-probs are allowed); ``nan="propagate"`` computes as verl does.

    Returns ``(advantages, returns)`` in the rewards' dtype (bfloat16/float16 tensors keep
    theirs, integers give float64); torch tensors in give tensors out, CUDA tensors are
    computed on their device.
    """
    _check_options(align, nan, eps)
    turn = align == "turn"
    if _torch.is_tensor(token_level_rewards) and _torch.on_device(token_level_rewards):
        return _on_device(token_level_rewards, response_mask, old_log_probs, sum_pi_squared, rollout_is_weights,
                          group_size, offsets, group_ids, groups, turn, handle_zero_tail, float(eps), nan)
    like = token_level_rewards if _torch.is_tensor(token_level_rewards) else None
    as_np = _torch.numpy_if_tensor
    r = _float2d(as_np(token_level_rewards), "token_level_rewards")
    shape = r.shape
    lp = _float2d(as_np(old_log_probs), "old_log_probs", shape)
    q = _float2d(as_np(sum_pi_squared), "sum_pi_squared", shape)
    rho = None if rollout_is_weights is None else _float2d(as_np(rollout_is_weights), "rollout_is_weights", shape)
    m = _mask(as_np(response_mask), shape)
    threads = threads_value(num_threads)
    bs, L = shape
    wide = any(x is not None and x.dtype == np.float64 for x in (r, lp, q, rho)) or r.dtype.kind in "iub"
    work = np.dtype(np.float64 if wide else np.float32)
    out_dtype = _out_dtype(r.dtype)
    if bs == 0:
        adv = np.zeros(shape, work)
        return _finish(adv, adv.copy(), like, out_dtype)
    g = resolve(bs, group_size, offsets=as_np(offsets), group_ids=as_np(group_ids), groups=groups)
    with _reward_errors():
        adv, ret = _compute(r, m, lp, q, rho, g, work, align, turn, handle_zero_tail, eps, nan, threads)
    return _finish(adv, ret, like, out_dtype)


@contextlib.contextmanager
def _reward_errors():
    """The core's non-finite reward error, in this estimator's words (its only NaN options
    are 'raise' and 'propagate'); the same class, index and value."""
    try:
        yield
    except NonFiniteRewardError as e:
        msg = (f"token_level_rewards[{e.index}] (response {e.index}) holds {_fmt(e.value)}; "
               "pass nan='propagate' to let it spread as verl does")
        raise NonFiniteRewardError(msg, index=e.index, value=e.value) from None


def _compute(r, m, lp, q, rho, g, work, align, turn, handle_zero_tail, eps, nan, threads):
    bs, L = r.shape
    shape = r.shape
    codes = g.codes()
    if _backend.name == "native":
        cast = [None if x is None else aligned(x, work).reshape(-1) for x in (r, lp, q, rho)]
        adv, ret = np.empty(bs * L, work), np.empty(bs * L, work)
        _backend.impl.optimal_token_baseline(cast[0], m.reshape(-1), cast[1], cast[2], cast[3],
                                             aligned(codes, np.uint32), g.n_groups, bs, align,
                                             bool(handle_zero_tail), float(eps), nan, adv, ret, threads)
        adv, ret = adv.reshape(shape), ret.reshape(shape)
    else:
        # The twin reads values as the core does: rounded to the working dtype first.
        vals = [None if x is None else x.astype(work, copy=False) for x in (r, lp, q, rho)]
        adv, ret = otb_numpy(vals[0], m, vals[1], vals[2], vals[3], codes, g.n_groups, turn,
                             bool(handle_zero_tail), float(eps), nan)
        adv, ret = adv.astype(work), ret.astype(work)
    return adv, ret


def _out_dtype(dtype):
    """float16 stays (half in, half out); float32/float64 stay; others give float64."""
    if dtype in (np.float16, np.float32, np.float64):
        return np.dtype(dtype)
    return np.dtype(np.float64)


def _finish(adv, ret, like, out_dtype):
    if like is None:
        return adv.astype(out_dtype, copy=False), ret.astype(out_dtype, copy=False)
    want = _torch.result_dtype(like.dtype)
    return _torch.from_numpy(adv, like, want), _torch.from_numpy(ret, like, want)


def _on_device(r, mask, lp, q, rho, group_size, offsets, group_ids, groups, turn, tail, eps, nan):
    """CUDA (or other device) tensors: the torch twin on their device."""
    import torch

    if r.ndim != 2:
        raise ValueError(f"token_level_rewards must be 2-D (bs, L), got shape {tuple(r.shape)}")
    for name, x in (("response_mask", mask), ("old_log_probs", lp), ("sum_pi_squared", q),
                    ("rollout_is_weights", rho)):
        if x is not None and tuple(x.shape) != tuple(r.shape):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(r.shape)}")
    want = _torch.result_dtype(r.dtype)
    bs = r.shape[0]
    if bs == 0:
        z = torch.zeros(r.shape, dtype=want, device=r.device)
        return z, z.clone()
    g = resolve(bs, group_size, offsets=_torch.numpy_if_tensor(offsets), group_ids=_torch.numpy_if_tensor(group_ids),
                groups=groups)
    codes = torch.from_numpy(g.codes().astype(np.int64)).to(r.device)
    with _reward_errors():
        adv, ret = otb_torch(r.detach(), mask.detach(), lp.detach(), q.detach(),
                             None if rho is None else rho.detach(), codes, g.n_groups, turn, bool(tail), eps, nan)
    return adv.to(want), ret.to(want)
