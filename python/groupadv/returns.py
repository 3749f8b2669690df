"""Token-level passes over each response (verl, OpenRLHF): discounted returns, GAE (reverse
scans over each response, parallel over responses) and masked whitening over tokens.

Every function takes token values of any shape with a response mask of the same shape (bool
or integer masks select tokens; a float mask weights them, as verl's ``masked_mean``
multiplies by it), numpy arrays or torch tensors (tensors in, tensors out; CUDA tensors are
computed with torch on their device). Statistics are float64; the output has the values'
dtype (float16/bfloat16 are computed in float32 and cast back, as the peers keep the dtype).
"""

from __future__ import annotations

import numpy as np

from . import _backend, _scan_twins, _torch
from ._inputs import aligned, check_out, out_array, rewards_array, threads_value
from .errors import NonFiniteRewardError
from .tokens import _mask_array as _token_mask

_NAN = ("raise", "propagate")
_EPS_RULES = ("add", "clamp")


def _values_array(values, name: str) -> np.ndarray:
    """A contiguous float32/float64 array of ``values``' shape (ints become float64, float16
    float32)."""
    arr = np.asarray(values)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be an array, got a scalar")
    flat = rewards_array(arr.reshape(-1), name)
    return flat.reshape(arr.shape)


def _mask_array(mask, shape, dtype) -> np.ndarray | None:
    """The mask as the core reads it (:func:`groupadv.tokens._mask_array`), None for none."""
    return None if mask is None else _token_mask(mask, shape, dtype)


def _choice(value, name: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _named(err: NonFiniteRewardError, shape, what: str = "values", offsets=None) -> NonFiniteRewardError:
    """The error naming the token as ``name[row, t] (sample row)`` for 2-D inputs, or
    ``name[i] (sample row)`` for packed ones (``offsets``)."""
    if err.index is None or (len(shape) != 2 and offsets is None):
        return err
    text = str(err)
    name = next((w for w in ("rewards", "values") if text.startswith(f"{w}[{err.index}]")), what)
    if offsets is not None:
        row = int(np.searchsorted(offsets, int(err.index), side="right")) - 1
        where = f"{name}[{err.index}] (sample {row})"
    else:
        row, t = divmod(int(err.index), int(shape[1]))
        where = f"{name}[{row}, {t}] (sample {row})"
    text = text.replace(f"{name}[{err.index}]", where, 1)
    return NonFiniteRewardError(text, index=err.index, value=getattr(err, "value", None))


def _half_like(values):
    """The float16 dtype of numpy float16 values (computed in float32, returned as float16)."""
    return np.dtype(np.float16) if getattr(values, "dtype", None) == np.float16 else None


def masked_whiten(values, response_mask=None, *, shift_mean: bool = True, scale: bool = True,
                  unbiased: bool = True, eps: float = 1e-8, eps_rule: str = "add", apply_mask: bool = False,
                  nan: str = "raise", out=None, num_threads=None):
    """Whiten ``values`` with one mean and variance over the masked tokens of the whole batch:

    ``out = (x - mean) * rsqrt(var + eps)`` on every token (masked or not), with
    ``mean = sum(m x) / sum(m)`` and ``var = sum(m (x - mean)^2) / (sum(m) - 1)``.

    Defaults are verl's ``masked_whiten`` (``verl/utils/torch_functional.py:329``, unbiased
    variance, ``rsqrt(var + 1e-8)``); ``shift_mean=False`` adds the mean back as verl does.
    OpenRLHF's global normalisation (``experience_maker.py:315-329``) is ``unbiased=False,
    eps_rule="clamp"`` (``rsqrt(max(var, 1e-8))``), and ``scale=False`` only centres
    (``no_std_norm``). ``apply_mask=True`` multiplies the result by the mask (0 outside it).

    Where every masked value is equal, the masked outputs are exactly 0 (verl gives float32
    rounding noise near 1e-4 there). The mask must select more than one token (one for
    ``unbiased=False``), else ValueError, as verl raises. A NaN or infinite masked value
    raises :class:`~groupadv.errors.NonFiniteRewardError` naming it (``values[row, t]`` for
    2-D input); ``nan="propagate"`` gives NaN everywhere, as the peers do.

    >>> import numpy as np, groupadv as ga
    >>> x = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]])
    >>> m = np.array([[1, 1, 0], [1, 1, 0]])
    >>> ga.masked_whiten(x, m).round(4)
    array([[-1.1619, -0.3873, -1.9365],
           [ 0.3873,  1.1619,  1.9365]])
    """
    nan = _choice(nan, "nan", _NAN)
    clamp = _choice(eps_rule, "eps_rule", _EPS_RULES) == "clamp"
    eps = float(eps)
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    check_out(out, values=values, response_mask=response_mask)
    rules = dict(shift_mean=bool(shift_mean), scale=bool(scale), unbiased=bool(unbiased), eps=eps, clamp=clamp,
                 apply_mask=bool(apply_mask), propagate=nan == "propagate")
    if _torch.is_tensor(values) and _torch.on_device(values):
        return _torch_whiten(values, response_mask, out, rules)
    like = values if _torch.is_tensor(values) else None
    x = _values_array(_torch.numpy_if_tensor(values), "values")
    if x.size == 0:
        raise ValueError("values is empty")
    mask = _mask_array(_torch.numpy_if_tensor(response_mask), x.shape, x.dtype)
    threads = threads_value(num_threads)
    result = out_array(out if like is None and _half_like(values) is None else None, x)
    try:
        if _backend.name == "native":
            _backend.impl.masked_whiten(x, mask, result, rules["shift_mean"], rules["scale"], rules["unbiased"],
                                        eps, clamp, rules["apply_mask"], rules["propagate"], threads)
        else:
            _scan_twins.np_masked_whiten(x, mask, result, **rules)
    except NonFiniteRewardError as e:
        raise _named(e, x.shape, "values") from None
    return _finish(result, values, like, out)


def _finish(result: np.ndarray, values, like, out):
    """The result in the caller's type and dtype (tensors back as tensors, half as half)."""
    from ._api import _narrow, _write

    if like is None:
        half = _half_like(values)
        if half is None:
            return result
        narrowed = _narrow(result, half)
        if out is not None:
            out[...] = narrowed
            return out
        return narrowed
    want = _torch.result_dtype(like.dtype)
    return _write(out, _torch.from_numpy(result, like, want))


def _torch_whiten(values, mask, out, rules):
    if mask is not None and tuple(mask.shape) != tuple(values.shape):
        raise ValueError(f"response_mask has shape {tuple(mask.shape)}, expected {tuple(values.shape)}")
    try:
        r = _scan_twins.torch_masked_whiten(values, mask, **rules)
    except NonFiniteRewardError as e:
        raise _named(e, tuple(values.shape), "values") from None
    res = r.to(_torch.result_dtype(values.dtype))
    if out is not None:
        out.copy_(res)
        return out
    return res


_UNMASKED = ("skip", "zero")


def _scan_layout(rewards: np.ndarray, lengths):
    """int64 offsets of packed responses (None for 2-D padded input)."""
    if lengths is None:
        if rewards.ndim != 2 or rewards.shape[0] == 0:
            raise ValueError(f"token_level_rewards must be 2-D (bs, L), got shape {rewards.shape}; "
                             "pass lengths= for packed 1-D tokens")
        return None
    if rewards.ndim != 1:
        raise ValueError("with lengths=, token_level_rewards must be 1-D (packed)")
    lens = np.asarray(_torch.numpy_if_tensor(lengths))
    if lens.ndim != 1 or lens.dtype.kind not in "iu" or lens.size == 0:
        raise TypeError("lengths must be a non-empty 1-D array of integers")
    if np.any(lens < 0):
        raise ValueError("lengths must be >= 0")
    if int(lens.sum()) != rewards.size:
        raise ValueError(f"lengths add up to {int(lens.sum())} but there are {rewards.size} token rewards")
    return np.concatenate(([0], np.cumsum(lens))).astype(np.int64)


def _padded(flat: np.ndarray | None, offsets: np.ndarray, fill=0):
    """Packed tokens as right-padded rows (for the numpy twin): a padded token with mask 0
    changes no scan."""
    if flat is None:
        return None
    lens = np.diff(offsets)
    rows = np.zeros((lens.size, int(lens.max(initial=0))), dtype=flat.dtype)
    if fill:
        rows[...] = fill
    sel = np.arange(rows.shape[1])[None, :] < lens[:, None]
    rows[sel] = flat
    return rows, sel


def _scan(rewards, values, response_mask, gamma, lam, lengths, unmasked, nan, num_threads, out=None):
    nan = _choice(nan, "nan", _NAN)
    zero = _choice(unmasked, "unmasked", _UNMASKED) == "zero"
    gamma, lam = float(gamma), float(lam)
    for name, v in (("gamma", gamma), ("lam", lam)):
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    check = nan == "raise"
    check_out(out, token_level_rewards=rewards, values=values, response_mask=response_mask)
    if _torch.is_tensor(rewards) and _torch.on_device(rewards):
        return _torch_scan(rewards, values, response_mask, gamma, lam, lengths, zero, check, out)
    like = rewards if _torch.is_tensor(rewards) else None
    as_np = _torch.numpy_if_tensor
    r = _values_array(as_np(rewards), "token_level_rewards")
    offsets = _scan_layout(r, lengths)
    v = None
    if values is not None:
        v = aligned(np.asarray(as_np(values)), r.dtype)
        if v.shape != r.shape:
            raise ValueError(f"values has shape {v.shape}, expected {r.shape}")
    mask = _mask_array(as_np(response_mask), r.shape, r.dtype)
    threads = threads_value(num_threads)
    try:
        if _backend.name == "native":
            a = out_array(out if like is None and v is None and _half_like(rewards) is None else None, r)
            ret = None if v is None else np.empty_like(r)
            _backend.impl.token_scan(r, v, mask, offsets, a, ret, gamma, lam, zero, check, threads)
            res = a if ret is None else (a, ret)
        else:
            res = _np_scan(r, v, mask, offsets, gamma, lam, zero, check)
            if out is not None and v is None and like is None and _half_like(rewards) is None:
                out_array(out, r)[...] = res
                res = out
    except NonFiniteRewardError as e:
        raise _named(e, r.shape, "rewards", offsets) from None
    if v is None:
        return _finish(res, rewards, like, out)
    return tuple(_finish(x, rewards, like, None) for x in res)


def _np_scan(r, v, mask, offsets, gamma, lam, zero, check):
    if offsets is None:
        return _scan_twins.np_scan(r, v, mask, gamma=gamma, lam=lam, zero=zero, check=check)
    rows, sel = _padded(r, offsets)
    vr = None if v is None else _padded(v, offsets)[0]
    mr = _padded(np.ones(r.size, np.uint8) if mask is None else mask, offsets)[0]
    try:
        res = _scan_twins.np_scan(rows, vr, mr, gamma=gamma, lam=lam, zero=zero, check=check)
    except (NonFiniteRewardError, ValueError) as e:
        idx = getattr(e, "index", None)
        if idx is None or not isinstance(e, NonFiniteRewardError):
            raise
        row, t = divmod(int(idx), rows.shape[1])
        flat = int(offsets[row]) + t
        raise NonFiniteRewardError(str(e).replace(f"[{idx}]", f"[{flat}]", 1), index=flat,
                                   value=getattr(e, "value", None)) from None
    return res[sel] if v is None else (res[0][sel], res[1][sel])


def _torch_scan(rewards, values, mask, gamma, lam, lengths, zero, check, out):
    if lengths is not None:
        raise ValueError("packed tokens (lengths=) on a device: pad them to (bs, L) with a response mask")
    if rewards.ndim != 2:
        raise ValueError(f"token_level_rewards must be 2-D (bs, L), got shape {tuple(rewards.shape)}")
    for name, t in (("values", values), ("response_mask", mask)):
        if t is not None and tuple(t.shape) != tuple(rewards.shape):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(rewards.shape)}")
    try:
        res = _scan_twins.torch_scan(rewards, values, mask, gamma=gamma, lam=lam, zero=zero, check=check)
    except NonFiniteRewardError as e:
        raise _named(e, tuple(rewards.shape), "rewards") from None
    if values is None and out is not None:
        out.copy_(res)
        return out
    return res


def discounted_returns(token_level_rewards, response_mask=None, gamma: float = 1.0, *, lengths=None,
                       unmasked: str = "skip", nan: str = "raise", out=None, num_threads=None):
    """Discounted returns of each response, ``G_t = r_t + gamma * G_{t+1}`` from its last
    token back (float64 inside), for token rewards (bs, L) with a response mask, or packed 1-D
    tokens with ``lengths``.

    ``unmasked="skip"`` (verl's ``reinforce_plus_plus``, ``core_algos.py:693-731``): a token
    outside the mask is skipped, its reward ignored and the running return carried over it
    unchanged; its output is 0. ``unmasked="zero"`` (OpenRLHF ``get_cumulative_returns``,
    ``experience_maker.py:380-411``): rewards are multiplied by the mask and every token
    discounts. A float mask weights (``run = new * m + run * (1 - m)``, as verl).

    A NaN or infinite token reward raises NonFiniteRewardError naming ``rewards[row, t]
    (sample row)``; ``nan="propagate"`` computes as the peers do.

    >>> import numpy as np, groupadv as ga
    >>> ga.discounted_returns(np.array([[0.0, 0.0, 1.0, 0.0]]), np.array([[1, 1, 1, 0]]), 0.5)
    array([[0.25, 0.5 , 1.  , 0.  ]])
    """
    return _scan(token_level_rewards, None, response_mask, gamma, 1.0, lengths, unmasked, nan, num_threads, out)


def gae(token_level_rewards, values, response_mask=None, gamma: float = 1.0, lam: float = 1.0, *, lengths=None,
        unmasked: str = "skip", nan: str = "raise", num_threads=None):
    """Generalised advantage estimation over each response: ``(advantages, returns)``, not
    whitened (compose with :func:`masked_whiten` as verl does).

    ``delta_t = r_t + gamma * V_{t+1} - V_t``, ``A_t = delta_t + gamma * lam * A_{t+1}``,
    ``returns = A + V``, from the last token back, float64 inside. ``unmasked="skip"`` (verl
    ``compute_gae_advantage_return``, ``core_algos.py:215-263``): ``V_{t+1}`` and ``A_{t+1}``
    are those of the next token inside the mask (observation tokens are skipped; a token
    outside the mask gets the carried advantage). ``unmasked="zero"`` (OpenRLHF
    ``get_advantages_and_returns``, ``experience_maker.py:333-378``): rewards and values are
    multiplied by the mask and ``returns = A + V * mask``.

    >>> import numpy as np, groupadv as ga
    >>> adv, ret = ga.gae(np.array([[0.0, 1.0]]), np.array([[0.5, 0.25]]), np.array([[1, 1]]), 1.0, 1.0)
    >>> adv, ret
    (array([[0.5 , 0.75]]), array([[1., 1.]]))
    """
    if values is None:
        raise TypeError("gae needs values (the critic's value of each token)")
    return _scan(token_level_rewards, values, response_mask, gamma, lam, lengths, unmasked, nan, num_threads)


def _fused_native(mode: str, rewards, values, baselines, mask, gamma: float, lam: float = 1.0, zero: bool = False):
    """verl's ``gae`` / ``reinforce_plus_plus`` / ``remax`` token passes fused in the compiled
    core (``token_scan_fused``: one scan that also gathers the whitening statistics or
    subtracts the baseline, plus one write where they whiten), inputs checked as
    ``nan="raise"``. ``(out, out2)`` as CPU tensors of the rewards' dtype, or None where the
    core does not take these inputs as they are (numpy backend, device tensors, half dtypes,
    a float mask of another dtype, an empty batch, odd shapes): the caller then composes the
    public passes (:func:`gae`, :func:`discounted_returns`, :func:`masked_whiten`), which
    give the same results."""
    import torch

    if _backend.name != "native" or not _torch.is_tensor(rewards) or _torch.on_device(rewards):
        return None
    if rewards.ndim != 2 or rewards.shape[0] == 0 or rewards.dtype not in (torch.float32, torch.float64):
        return None
    for t in (values, mask):
        if t is not None and (not _torch.is_tensor(t) or tuple(t.shape) != tuple(rewards.shape)):
            return None
    if values is not None and values.dtype != rewards.dtype:
        return None
    if mask is None or (mask.is_floating_point() and mask.dtype != rewards.dtype) or mask.is_complex():
        return None
    if baselines is not None and (baselines.ndim != 1 or baselines.shape[0] != rewards.shape[0]):
        return None
    as_np = _torch.numpy_if_tensor
    r = _values_array(as_np(rewards), "token_level_rewards")
    v = None if values is None else aligned(as_np(values))
    b = None if baselines is None else aligned(as_np(baselines.to(rewards.dtype)))
    m = _mask_array(as_np(mask), r.shape, r.dtype)
    out, out2 = np.empty_like(r), np.empty_like(r)
    try:
        _backend.impl.token_scan_fused(mode, r, v, b, m, out, out2, float(gamma), float(lam), zero, threads_value(None))
    except NonFiniteRewardError as e:
        raise _named(e, r.shape, "rewards") from None
    return torch.from_numpy(out), torch.from_numpy(out2)
