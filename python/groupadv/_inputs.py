"""Validation and coercion of user inputs at the API edge (one conversion, then no copies)."""

from __future__ import annotations

import operator

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def rewards_array(rewards, name: str = "rewards") -> np.ndarray:
    """A contiguous, native-endian 1-D float32/float64 array (ints and bools become float64)."""
    arr = np.asarray(rewards)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype.itemsize < 4:
            arr = arr.astype(np.float32)
        elif arr.dtype.itemsize > 8:
            raise TypeError(f"{name} has dtype {arr.dtype}; use float32 or float64")
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
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
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if np.may_share_memory(out, like):
        raise ValueError("out must not overlap rewards")
    return out


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
    try:
        eps = float(eps)
    except OverflowError:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}") from None
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}") from None
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return eps


def threads_value(num_threads) -> int:
    if num_threads is None:
        return 0
    n = integer(num_threads, "num_threads")
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    if n > 1 << 31:
        raise ValueError(f"num_threads is too large, got {n}")
    return n
