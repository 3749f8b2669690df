"""Validation and coercion of user inputs at the API edge (one conversion, then no copies)."""

from __future__ import annotations

import math
import operator
import os

import numpy as np

from .errors import OutOverlapError, ThreadCountError

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

MAX_THREADS = 1024
"""The most threads a call, ``set_num_threads`` or ``GROUPADV_NUM_THREADS`` may ask for (the
compiled core's ``MAX_THREADS``); more is a :class:`~groupadv.errors.ThreadCountError`."""


def aligned(arr: np.ndarray, dtype=None) -> np.ndarray:
    """C-contiguous, native-endian and aligned (a copy only where needed): the compiled core
    reads memory as slices, which an unaligned view (``np.frombuffer(b, offset=1)``) is not."""
    return np.require(arr, dtype=dtype, requirements=("C", "A"))


def rewards_array(rewards, name: str = "rewards") -> np.ndarray:
    """A contiguous, native-endian 1-D float32/float64 array (ints and bools become float64)."""
    if isinstance(rewards, np.ma.MaskedArray):
        # np.asarray drops the mask: the masked values would enter the statistics
        raise TypeError(
            f"{name} is a masked array; pass {name}.filled(np.nan) with nan='omit' to leave the "
            "masked rewards out"
        )
    arr = np.asarray(rewards)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    kind = arr.dtype.kind
    if arr.dtype in _FLOATS and arr.flags.c_contiguous and arr.flags.aligned:
        pass  # already what the backends read (the common case: no np.require)
    elif kind == "f":
        if arr.dtype.itemsize < 4:
            arr = arr.astype(np.float32)
        elif arr.dtype.itemsize > 8:
            raise TypeError(f"{name} has dtype {arr.dtype}; use float32 or float64")
        arr = aligned(arr, arr.dtype.newbyteorder("="))
    elif kind in "iub":
        arr = arr.astype(np.float64)
    else:
        raise TypeError(
            f"{name} must hold numbers (float, int or bool), got dtype {arr.dtype}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def out_array(out, like: np.ndarray) -> np.ndarray:
    """Validate a caller's `out=` buffer, or allocate one through numpy."""
    if out is None:
        # numpy's allocator asks for huge pages on large arrays: fewer page faults.
        return np.empty_like(like)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.dtype != like.dtype:
        raise TypeError(f"out has dtype {out.dtype}, but the result has dtype {like.dtype}")
    if out.shape != like.shape:
        raise ValueError(f"out has shape {out.shape}, expected {like.shape}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.aligned:
        raise ValueError("out must be aligned (not an offset view of a byte buffer)")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if np.may_share_memory(out, like):
        raise OutOverlapError("out must not overlap rewards", names=("out", "rewards"))
    return out


def plain_inputs(rewards: np.ndarray, out, offsets, num_threads) -> np.ndarray | None:
    """For the fast path of a call on a 1-D float32/float64 ``rewards`` array: the result array
    (fresh, or ``out``) when ``rewards`` (non-empty, contiguous, aligned), ``out`` (every check
    of :func:`check_out` and :func:`out_array`) and ``offsets`` (None, or a contiguous 1-D int64
    array, which the layout takes unchanged) pass, having read GROUPADV_NUM_THREADS where
    ``num_threads`` is None (:func:`environment_threads` raises for a bad value, as in every
    call); else None, having raised nothing: the caller takes the general path, which raises what
    is wrong. One function for all of them, not four calls (N=8192 warm: 7.6 -> 7.3 µs a call)."""
    fl = rewards.flags
    if not (rewards.shape[0] and fl.c_contiguous and fl.aligned):
        return None
    if offsets is not None:
        if type(offsets) is not np.ndarray or offsets.dtype is not _I64 or offsets.ndim != 1:
            return None
        ofl = offsets.flags
        if not (ofl.c_contiguous and ofl.aligned):
            return None
    if out is None:
        result = np.empty(rewards.shape, rewards.dtype)
    else:
        if type(out) is not np.ndarray or out.dtype is not rewards.dtype or out.shape != rewards.shape:
            return None
        ufl = out.flags
        if not (ufl.c_contiguous and ufl.aligned and ufl.writeable):
            return None
        # Two distinct arrays that each own their memory hold two allocations: no overlap to ask
        # numpy about (a fifth of this check's cost); views are asked.
        if not (ufl.owndata and fl.owndata and out is not rewards) and np.may_share_memory(out, rewards):
            return None
        if offsets is not None and not (ufl.owndata and ofl.owndata and out is not offsets) \
                and np.may_share_memory(out, offsets):
            return None
        result = out
    # GROUPADV_NUM_THREADS read in place (environment_threads only where it is set)
    if num_threads is None and not (os.environ is _ENVIRON and _ENV_GET is not None and _ENV_GET(_ENV_KEY) is None):
        environment_threads()
    return result


_I64 = np.dtype(np.int64)


_TOO_HARD = getattr(np, "exceptions", np).TooHardError


def _span(obj):
    """(device, first byte, end byte) of an array's or tensor's memory, else None."""
    if isinstance(obj, np.ndarray):
        if obj.size == 0:
            return None
        lo = hi = obj.__array_interface__["data"][0]
        for n, st in zip(obj.shape, obj.strides):
            if st > 0:
                hi += (n - 1) * st
            else:
                lo += (n - 1) * st
        return ("cpu", lo, hi + obj.itemsize)
    if type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "data_ptr"):
        if obj.numel() == 0 or obj.device.type == "meta":
            return None
        lo = obj.data_ptr()
        hi = lo + sum((n - 1) * abs(st) for n, st in zip(obj.shape, obj.stride())) * obj.element_size()
        return (str(obj.device), lo, hi + obj.element_size())
    return None


def check_out(out, **inputs) -> None:
    """`out=` must not share memory with any input, given as the caller passed them (before any
    conversion, so strided, integer and byte-swapped views of out are caught too). numpy arrays
    are compared exactly (np.shares_memory); tensors by the memory range they span."""
    if out is None:
        return
    if isinstance(out, np.ndarray) and all(v is None or isinstance(v, np.ndarray) for v in inputs.values()):
        # Arrays only (the common case): numpy's bounds check first, the exact one where they meet.
        for name, value in inputs.items():
            if value is not None and np.may_share_memory(out, value):
                _overlap(out, name, value)
        return
    o = _span(out)
    if o is None:
        return
    for name, value in inputs.items():
        v = _span(value)
        if v is None or v[0] != o[0] or v[2] <= o[1] or o[2] <= v[1]:
            continue
        _overlap(out, name, value)


def _overlap(out, name: str, value) -> None:
    """Raise the overlap error unless numpy proves two arrays whose ranges meet disjoint."""
    if isinstance(out, np.ndarray) and isinstance(value, np.ndarray):
        try:
            # numpy's stub allows only -1/0, but a positive bound is documented (and used here)
            if not np.shares_memory(out, value, max_work=1 << 20):  # type: ignore[arg-type]
                return
        except _TOO_HARD:
            pass  # too costly to prove disjoint: treat as overlapping
    raise OutOverlapError(
        f"out must not overlap {name} (they share memory: the input would be overwritten)",
        names=("out", name),
    )


def integer(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None


def choice(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def ddof_value(ddof) -> int:
    ddof = integer(ddof, "ddof")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof}")
    return ddof


def eps_value(eps) -> float:
    if isinstance(eps, (str, bytes)):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}")
    try:
        eps = float(eps)
    except OverflowError:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}") from None
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}") from None
    if not (math.isfinite(eps) and eps >= 0):  # math, not numpy: a µs per call at small N
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return eps


_ENVIRON = os.environ
# os.environ.get runs four Python-level calls (a µs, a tenth of a small call); its dict of
# encoded names, where present (CPython's os._Environ), answers the same in one lookup.
_ENV_DATA = getattr(_ENVIRON, "_data", None)
_ENV_KEY = _ENVIRON.encodekey("GROUPADV_NUM_THREADS") if hasattr(_ENVIRON, "encodekey") else None
# (its lookup, None where there is no such dict: then os.environ.get)
_ENV_GET = _ENV_DATA.get if type(_ENV_DATA) is dict and _ENV_KEY is not None else None


def _environment_raw() -> str | None:
    """The value of ``GROUPADV_NUM_THREADS`` now (os.environ as it is, read on every call)."""
    if os.environ is _ENVIRON and _ENV_GET is not None:
        raw = _ENV_GET(_ENV_KEY)
        return None if raw is None else _ENVIRON.decodevalue(raw)  # type: ignore[attr-defined]
    return os.environ.get("GROUPADV_NUM_THREADS")


def environment_threads() -> int | None:
    """``GROUPADV_NUM_THREADS``: None when unset or empty, else an integer in 1..MAX_THREADS
    (anything else is a ThreadCountError, not silently ignored)."""
    raw = _environment_raw()
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    n = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= n <= MAX_THREADS:
        raise ThreadCountError(
            f"GROUPADV_NUM_THREADS must be an integer from 1 to {MAX_THREADS}, got {raw!r}", value=raw
        )
    return n


def threads_value(num_threads) -> int:
    """A call's thread count for the backend; 0 means the default (checked here: a bad
    GROUPADV_NUM_THREADS raises in every call that does not pass num_threads=)."""
    if num_threads is None:
        environment_threads()
        return 0
    n = integer(num_threads, "num_threads")
    if not 1 <= n <= MAX_THREADS:
        raise ThreadCountError(
            f"num_threads must be from 1 to {MAX_THREADS} (groupadv.MAX_THREADS), got {n}", value=n
        )
    return n


def default_threads_value(n) -> int:
    """An argument of ``set_num_threads``: 0 (back to the default) .. MAX_THREADS."""
    n = integer(n, "n")
    if not 0 <= n <= MAX_THREADS:
        raise ThreadCountError(
            f"the number of threads must be from 0 to {MAX_THREADS} (groupadv.MAX_THREADS), got {n}",
            value=n,
        )
    return n
