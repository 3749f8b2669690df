"""File formats by extension, and the optional pyarrow dependency."""

from __future__ import annotations

import os
from typing import Any

from .errors import CLIError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow",
           ".ipc": "arrow", ".csv": "csv", ".npy": "npy", ".npz": "npz"}


def file_format(path: str) -> str:
    """``parquet``, ``arrow``, ``csv``, ``npy`` or ``npz``, from the extension of ``path``."""
    ext = os.path.splitext(path)[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise CLIError(
            f"unknown file type {ext or '(no extension)'!r} for {path!r}; "
            "use .parquet, .arrow, .feather, .csv, .npy or .npz"
        )
    return fmt


def pyarrow(purpose: str) -> Any:
    """The pyarrow module, or a CLIError that says how to install it."""
    try:
        import pyarrow
    except ImportError:
        raise CLIError(
            f"{purpose} needs pyarrow, which is not installed: pip install 'groupadv[parquet]' "
            "(or pip install pyarrow); CSV, .npy and .npz work without it"
        ) from None
    return pyarrow


def have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True
