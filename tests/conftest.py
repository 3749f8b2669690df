"""Shared fixtures. The suite runs once per backend in CI (GROUPADV_BACKEND=native|numpy);
`both_backends` also lets a single test compare the two in one process."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import groupadv
from groupadv import _backend

HAVE_NATIVE = importlib.util.find_spec("groupadv._native") is not None


@pytest.fixture
def backend_name():
    return groupadv.backend()


@pytest.fixture
def use_backend():
    """Switch backends inside a test; the original is restored afterwards."""
    before = _backend.name
    yield _backend.use
    _backend.use(before)


needs_native = pytest.mark.skipif(not HAVE_NATIVE, reason="compiled groupadv._native not built")


def on_backend(name, fn, *args, **kwargs):
    before = _backend.name
    _backend.use(name)
    try:
        return fn(*args, **kwargs)
    finally:
        _backend.use(before)


def assert_close(a, b, dtype):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    if dtype == np.float32:
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)
