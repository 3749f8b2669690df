"""Token-level layouts (padded and packed) on the active backend."""

from __future__ import annotations

import numpy as np
import pytest

import groupadv as ga


def _padded(rng, bs=12, L=6, dtype=np.float32):
    lengths = rng.integers(1, L + 1, bs)
    mask = np.arange(L)[None, :] < lengths[:, None]
    tlr = np.where(mask, rng.normal(size=(bs, L)), 0.0).astype(dtype)
    return tlr, mask, lengths


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_equals_the_definition(dtype):
    rng = np.random.default_rng(0)
    tlr, mask, _ = _padded(rng, dtype=dtype)
    ids = rng.integers(0, 4, len(tlr))
    got = ga.token_advantages(tlr, mask, group_ids=ids, ddof=1, eps=1e-6)
    scores = tlr.astype(np.float64).sum(axis=1).astype(dtype)
    want = ga.grpo(scores, group_ids=ids, ddof=1, eps=1e-6)[:, None] * mask
    assert got.dtype == dtype and got.shape == tlr.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_masks_bool_int_float_and_out():
    rng = np.random.default_rng(1)
    tlr, mask, _ = _padded(rng)
    a = ga.token_advantages(tlr, mask, 4)
    np.testing.assert_array_equal(ga.token_advantages(tlr, mask.astype(np.int64), 4), a)
    np.testing.assert_array_equal(ga.token_advantages(tlr, mask.astype(np.float32), 4), a)
    half = mask * 0.5
    np.testing.assert_allclose(ga.token_advantages(tlr, half, 4), a * 0.5, rtol=1e-6)
    out = np.full(tlr.shape, 7.0, np.float32)
    assert ga.token_advantages(tlr, mask, 4, out=out) is out
    np.testing.assert_array_equal(out, a)
    assert np.all(a[~mask] == 0.0)


def test_packed_equals_padded():
    rng = np.random.default_rng(2)
    tlr, mask, lengths = _padded(rng, bs=16)
    flat = tlr[mask]
    padded = ga.token_advantages(tlr, mask, group_size=4, center="loo", scale="none")
    packed = ga.packed_token_advantages(flat, lengths, group_size=4, center="loo", scale="none")
    np.testing.assert_allclose(packed, padded[mask], rtol=1e-6)
    # a flat mask multiplies too; zero-length sequences are allowed
    m = (rng.random(len(flat)) < 0.7)
    unmasked = ga.packed_token_advantages(flat, lengths, 4)
    np.testing.assert_array_equal(ga.packed_token_advantages(flat, lengths, 4, response_mask=m), np.where(m, unmasked, 0.0))
    got = ga.packed_token_advantages(np.array([1.0, 0.0, 2.0]), [1, 0, 2, 0], 2)
    assert got.tolist() == [1.0, 1.0, 1.0]  # scores [1, 0 | 2, 0]: +1 for the non-empty ones


def test_all_equal_token_scores_are_zero():
    tlr = np.zeros((8, 4), np.float32)
    tlr[:, -1] = 0.1
    mask = np.ones((8, 4), bool)
    assert np.all(ga.token_advantages(tlr, mask, 8, preset="verl") == 0.0)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: ga.token_advantages(np.zeros((2, 3)), np.ones((2, 2)), 2), ValueError, "response_mask has shape"),
        (lambda: ga.token_advantages(np.zeros(6), np.ones(6), 2), ValueError, "2-D"),
        (lambda: ga.token_advantages(np.zeros((2, 3)), np.array([["a"] * 3] * 2), 2), TypeError, "response_mask"),
        (lambda: ga.token_advantages(np.zeros((2, 3)), np.ones((2, 3)), 3), ValueError, "does not divide"),
        (lambda: ga.packed_token_advantages(np.zeros(5), [2, 2], 2), ValueError, "add up to 4"),
        (lambda: ga.packed_token_advantages(np.zeros(4), [5, -1], 2), ValueError, ">= 0"),
        (lambda: ga.packed_token_advantages(np.zeros(4), [2.0, 2.0], 2), TypeError, "integers"),
        (lambda: ga.token_advantages(np.zeros((2, 3)), np.ones((2, 3)), 2, out=np.zeros((2, 3), np.float32)), TypeError, "dtype"),
    ],
)
def test_token_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
