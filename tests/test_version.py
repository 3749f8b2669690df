"""The version is written once, in Cargo.toml; `groupadv.__version__` reports it."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

import groupadv
from groupadv import _version

CARGO = Path(__file__).resolve().parents[1] / "Cargo.toml"


def cargo_version() -> str:
    return re.search(r'^version = "([^"]+)"', CARGO.read_text(), re.MULTILINE).group(1)


def test_version_is_cargo_version():
    assert groupadv.__version__ == cargo_version()


@pytest.mark.skipif(
    not (Path(_version.__file__).resolve().parents[2] / "Cargo.toml").exists(),
    reason="groupadv is installed, not imported from this checkout",
)
def test_uninstalled_checkout_reads_cargo_toml(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert _version._version() == cargo_version()
