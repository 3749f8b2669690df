"""Backend selection: the compiled core (``groupadv._native``) or the numpy fallback.

``GROUPADV_BACKEND=native|numpy`` forces one; unset, the compiled module is used when it is
installed. Only the absence of the compiled module itself falls back to numpy: a compiled
module that is present but broken raises, so a bad build is never silently slow.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

_NAMES = ("native", "numpy")


_fork_hook_registered = False


def _load(name: str) -> ModuleType:
    global _fork_hook_registered
    module = importlib.import_module("groupadv._native" if name == "native" else "groupadv._numpy")
    if name == "native" and not _fork_hook_registered and hasattr(os, "register_at_fork"):
        # The worker threads of the native pools do not survive fork(); the child starts new
        # ones. Registered when the native module is first loaded (GROUPADV_BACKEND=numpy never
        # imports it, so a broken build cannot stop the numpy backend).
        os.register_at_fork(after_in_child=module._after_fork_in_child)
        _fork_hook_registered = True
    return module


def _native_or_none() -> ModuleType | None:
    try:
        return _load("native")
    except ModuleNotFoundError as e:
        if e.name != "groupadv._native":
            raise
        return None


def _select() -> tuple[str, ModuleType]:
    choice = os.environ.get("GROUPADV_BACKEND", "").strip().lower()
    if choice not in ("",) + _NAMES:
        raise ImportError(f"GROUPADV_BACKEND must be 'native' or 'numpy', got {choice!r}")
    if choice == "numpy":
        return "numpy", _load("numpy")
    native = _native_or_none()
    if native is not None:
        return "native", native
    if choice == "native":
        raise ImportError(
            "GROUPADV_BACKEND=native but the compiled module groupadv._native is not installed; "
            "build it with `pip install .` (needs a Rust toolchain)"
        )
    return "numpy", _load("numpy")


name, impl = _select()


def use(which: str) -> ModuleType:
    """Switch the backend for this process ("native" or "numpy"); returns the module."""
    global name, impl
    if which not in _NAMES:
        raise ValueError(f"backend must be 'native' or 'numpy', got {which!r}")
    module = _load(which)
    name, impl = which, module
    return module
