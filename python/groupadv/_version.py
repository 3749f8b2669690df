"""The package version, written once: in Cargo.toml (maturin copies it into the metadata)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path


def _version() -> str:
    try:
        return metadata.version("groupadv")
    except metadata.PackageNotFoundError:
        pass
    # Not installed (say PYTHONPATH=python in a checkout): read the checkout's Cargo.toml.
    cargo = Path(__file__).resolve().parents[2] / "Cargo.toml"
    try:
        found = re.search(r'^version\s*=\s*"([^"]+)"', cargo.read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1) if found else "0+unknown"


__version__ = _version()
