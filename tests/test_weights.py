"""Self-normalized clipped importance weights (loss-side helper), numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest

from groupadv import self_normalized_weights as snw

RHO = np.array([0.5, 1.0, 3.0, 1.5])


def test_definition():
    np.testing.assert_allclose(snw(RHO), RHO / RHO.sum())
    c = np.minimum(RHO, 2.0)
    np.testing.assert_allclose(snw(RHO, clip=2.0), c / c.sum())
    c = np.clip(RHO, 0.8, 2.0)
    np.testing.assert_allclose(snw(RHO, clip=(0.8, 2.0)), c / c.sum())
    assert snw(RHO, clip=2.0).sum() == pytest.approx(1.0)


def test_log_ratio_is_stable_and_equal():
    np.testing.assert_allclose(snw(log_ratio=np.log(RHO), clip=2.0), snw(RHO, clip=2.0), rtol=1e-12)
    big = np.array([800.0, 801.0, 0.0])  # exp overflows without the shift
    w = snw(log_ratio=big)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w[:2], [1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-12)


def test_mask_axis_dtype():
    m = np.array([True, False, True, True])
    w = snw(RHO, mask=m)
    assert w[1] == 0.0 and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w[m], RHO[m] / RHO[m].sum())
    x = RHO.reshape(2, 2)
    np.testing.assert_allclose(snw(x, axis=1).sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(snw(x, axis=0), x / x.sum(axis=0, keepdims=True))
    assert snw(RHO.astype(np.float32)).dtype == np.float32
    assert snw(np.array([1, 3])).tolist() == [0.25, 0.75]
    # everything masked out: weights 0, not NaN
    assert snw(RHO, mask=np.zeros(4, bool)).tolist() == [0.0] * 4
    assert snw(log_ratio=np.zeros((2, 2)), mask=np.array([[True, True], [False, False]]), axis=1).tolist() == [[0.5, 0.5], [0.0, 0.0]]


def test_bad_input():
    with pytest.raises(TypeError, match="exactly one"):
        snw()
    with pytest.raises(TypeError, match="exactly one"):
        snw(RHO, log_ratio=RHO)
    with pytest.raises(ValueError, match=r"ratio\[1\] = -1"):
        snw(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"log_ratio\[0\] = nan"):
        snw(log_ratio=np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match="clip"):
        snw(RHO, clip=(2.0, 1.0))
    with pytest.raises(ValueError, match="clip"):
        snw(RHO, clip=0.0)
    with pytest.raises(ValueError, match="mask"):
        snw(RHO, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="axis"):
        snw(RHO, axis=2)
    with pytest.raises(TypeError, match="numbers"):
        snw(np.array(["a"]))


def test_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    x = torch.tensor(RHO.reshape(2, 2), requires_grad=True)
    w = snw(x, clip=2.0, axis=1)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float64
    np.testing.assert_allclose(w.detach().numpy(), snw(RHO.reshape(2, 2), clip=2.0, axis=1))
    w.sum().backward()  # differentiable
    lw = snw(log_ratio=torch.log(torch.tensor(RHO)), clip=(0.8, 2.0))
    np.testing.assert_allclose(lw.numpy(), snw(RHO, clip=(0.8, 2.0)), rtol=1e-12)
    m = torch.tensor([True, False, True, True])
    np.testing.assert_allclose(snw(torch.tensor(RHO), mask=m).numpy(), snw(RHO, mask=m.numpy()))
    assert snw(torch.tensor(RHO), mask=torch.zeros(4, dtype=torch.bool)).tolist() == [0.0] * 4
    assert snw(log_ratio=torch.zeros(3, dtype=torch.float32)).dtype == torch.float32
