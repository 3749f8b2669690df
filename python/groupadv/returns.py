"""Token-level passes over each response (verl, OpenRLHF): masked whitening over tokens.

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
    """uint8 flags (bool/int masks) or weights of the values' dtype (float masks)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"response_mask has shape {m.shape}, expected {shape}")
    if m.dtype == np.bool_:
        return aligned(m).view(np.uint8)
    if m.dtype.kind in "iu":
        return aligned(m != 0).view(np.uint8)
    if m.dtype.kind == "f":
        return aligned(m, dtype)
    raise TypeError(f"response_mask must be bool, integer or float, got dtype {m.dtype}")


def _choice(value, name: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _named(err: NonFiniteRewardError, shape, what: str) -> NonFiniteRewardError:
    """The error naming the token as ``what[row, t]`` (row = the sample) for 2-D inputs."""
    if len(shape) != 2 or err.index is None:
        return err
    row, t = divmod(int(err.index), int(shape[1]))
    text = str(err).replace(f"values[{err.index}]", f"{what}[{row}, {t}] (sample {row})", 1)
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
