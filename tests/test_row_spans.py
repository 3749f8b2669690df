"""Row spans (issue 12, Speed): a token pass over a row whose mask flags are one run writes
zeros and values by position and reads no mask (``token_row_spans`` / ``broadcast_spans``,
and the whitening write of ``reinforce_plus_plus``). Every mask shape must give what reading
the mask gives: trailing and leading padding, observation holes (scattered rows), rows with no
flag or every flag, bool and 1/2/4/8-byte integer masks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from groupadv import _backend

torch = pytest.importorskip("torch")

native = pytest.mark.skipif(_backend.name != "native", reason="row spans are a pass of the compiled core")


def masks(rng, bs=40, L=13):
    """One mask with every kind of row: trailing and leading runs, holes, none set, all set."""
    lengths = rng.integers(1, L + 1, bs)
    pos = np.arange(L)[None, :]
    m = pos < lengths[:, None]
    m[1::5] = (pos >= (L - lengths[:, None]))[1::5]  # leading padding
    holes = (pos % 4 == 2) & (pos < lengths[:, None] - 1)
    m[2::5] &= ~holes[2::5]  # observation tokens inside the response
    m[3] = False
    m[4] = True
    m[6] = False
    m[6, [0, L - 1]] = True  # the first and last token only: scattered
    return m


def reference_spans(m):
    out = []
    for row in m:
        idx = np.flatnonzero(row)
        if idx.size == 0:
            out.append((0, 0))
        elif idx[-1] - idx[0] + 1 == idx.size:
            out.append((idx[0], idx[-1] + 1))
        else:
            out.append((-1, -1))
    return np.array(out, dtype=np.int64)


@native
@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int16, np.int32, np.int64])
def test_spans_and_broadcast_equal_reading_the_mask(dtype):
    from groupadv import _native
    from groupadv.tokens import _mask_array

    rng = np.random.default_rng(3)
    m = masks(rng)
    mk = _mask_array((m * 3).astype(dtype) if dtype != np.bool_ else m, m.shape, np.float32)
    counts, spans = _native.token_row_spans(mk, m.shape[0], 2)
    np.testing.assert_array_equal(counts, m.sum(1).astype(np.float64))
    np.testing.assert_array_equal(spans.reshape(-1, 2), reference_spans(m))
    assert (spans.reshape(-1, 2)[:, 0] == -1).any() and (spans.reshape(-1, 2)[:, 0] > 0).any()
    for fdt in (np.float32, np.float64):
        adv = rng.normal(size=m.shape[0]).astype(fdt)
        out = np.full(m.shape, 7.0, dtype=fdt)
        _native.broadcast_spans(adv, spans, mk, out, 2)
        np.testing.assert_array_equal(out, np.where(m, adv[:, None], 0.0).astype(fdt))


@native
def test_bad_spans_and_float_masks_raise():
    from groupadv import _native

    m = np.ones((2, 3), np.uint8)
    out = np.empty((2, 3), np.float32)
    adv = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="spans"):
        _native.broadcast_spans(adv, np.array([0, 4, 0, 3], np.int64), m, out, 1)
    with pytest.raises(TypeError):
        _native.token_row_spans(np.ones((2, 3)), 2, 1)
    with pytest.raises(TypeError):
        _native.broadcast_spans(adv, np.array([0, 3, 0, 3], np.int64), np.ones((2, 3), np.float32), out, 1)


def _verl_adapters():
    from groupadv.integrations import verl as ours

    cfg = {"norm_adv_by_std_in_grpo": True}
    return {
        "opo": lambda t, m, u: ours.compute_opo_outcome_advantage(t, m, u),
        "gpg": lambda t, m, u: ours.compute_gpg_outcome_advantage(t, m, u),
        "gdpo": lambda t, m, u: ours.compute_gdpo_outcome_advantage(t, m, u, config=cfg),
        "grpo_passk": lambda t, m, u: ours.compute_grpo_passk_outcome_advantage(t, m, u, config=cfg),
        "reinforce_plus_plus": lambda t, m, u: ours.compute_reinforce_plus_plus_outcome_advantage(
            t, m, config=SimpleNamespace(gamma=0.97)),
    }


@pytest.mark.parametrize("name", ["opo", "gpg", "gdpo", "grpo_passk", "reinforce_plus_plus"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_verl_adapters_on_every_row_shape_equal_the_mask_product(name, dtype):
    """The span paths (integer and bool masks) against the same adapter on the float mask
    (which multiplies by the mask as verl does, no spans) and against ``x * mask`` itself."""
    rng = np.random.default_rng(5)
    m = masks(rng, bs=48)
    m[3] = True  # no row empty: verl's passk/opo need responses with tokens in every group
    uids = np.repeat(np.array([f"u{i}" for i in range(12)], dtype=object), 4)[rng.permutation(48)]
    t = torch.from_numpy(rng.normal(size=m.shape) * m).to(dtype)
    fn = _verl_adapters()[name]
    want = fn(t, torch.from_numpy(m).to(dtype), uids)[0]
    for mt in (torch.int64, torch.bool, torch.int32, torch.uint8):
        got = fn(t, torch.from_numpy(m).to(mt), uids)[0]
        assert got.dtype == dtype
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6 if dtype == torch.float32 else 1e-12,
                                   atol=1e-6 if dtype == torch.float32 else 1e-12)
        assert np.all(got.numpy()[~m] == 0.0)
