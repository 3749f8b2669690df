"""torch tensors: CPU tensors through numpy without copies, and the torch implementation used
for other devices (run here on CPU tensors; no GPU on the test machines)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import groupadv as ga  # noqa: E402
from groupadv import _torch  # noqa: E402
from groupadv.tokens import _torch_tokens  # noqa: E402


def test_cpu_tensors_in_tensors_out_without_copies():
    r = torch.tensor([0.0, 1.0, 0.0, 1.0])
    a = ga.grpo(r, 2)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float32 and a.tolist() == [-1.0, 1.0, -1.0, 1.0]
    out = torch.empty(4)
    assert ga.grpo(r, 2, out=out) is out and out.tolist() == [-1.0, 1.0, -1.0, 1.0]
    # the input is read in place (numpy view of the tensor's memory)
    assert np.shares_memory(_torch.to_numpy(r), r.numpy())
    ids = torch.tensor([3, 3, 9, 9])
    assert ga.rloo(r, group_ids=ids).tolist() == [-1.0, 1.0, -1.0, 1.0]
    assert ga.grpo(r.double(), offsets=torch.tensor([0, 2, 4])).dtype == torch.float64
    assert ga.grpo(r.to(torch.bfloat16), 2).dtype == torch.bfloat16  # dtype policy: half in, half out
    g = ga.group_stats(r.numpy(), 2)
    assert g.count.tolist() == [2, 2]


OPTIONS = [
    dict(center=c, scale=s, ddof=d, eps=e, singleton=sg, nan=nn)
    for c in ("mean", "loo", "none")
    for s in ("group", "batch", "batch_residual", "none")
    for d in (0, 1)
    for e in (0.0, 1e-6)
    for sg in ("zero", "raw")
    for nn in ("propagate", "omit")
]


@pytest.mark.parametrize("opts", OPTIONS[::5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_implementation_equals_the_library(opts, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, 60).astype(np.float64) * 0.5
    x[[3, 17]] = [np.nan, np.inf]
    ids = rng.integers(0, 12, 60)
    t = torch.from_numpy(x).to(dtype)
    codes, k = _torch.codes_on(t.device, 60, group_ids=torch.from_numpy(ids))
    got = _torch.advantages(t, codes=codes, n_groups=k, **opts)
    want = ga.advantages(t.numpy(), group_ids=ids, **opts)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol, equal_nan=True)


def test_device_implementation_edge_cases():
    x = torch.full((8,), 0.1, dtype=torch.float32)
    codes, k = _torch.codes_on(x.device, 8, group_size=8)
    assert torch.all(_torch.advantages(x, codes=codes, n_groups=k, ddof=1, eps=1e-9) == 0.0)
    y = torch.tensor([1.0, float("nan"), 2.0, 3.0])
    codes, k = _torch.codes_on(y.device, 4, group_size=2)
    with pytest.raises(ValueError, match=r"rewards\[1\] is NaN"):
        _torch.advantages(y, codes=codes, n_groups=k)
    with pytest.raises(ValueError, match="single reward"):
        _torch.advantages(torch.tensor([1.0, 2.0, 3.0]), codes=torch.tensor([0, 1, 1]), n_groups=2, singleton="error")
    # labels as a numpy string array go through the host factorization
    codes, k = _torch.codes_on(y.device, 4, group_ids=np.array(["a", "b", "a", "b"]))
    assert codes.tolist() == [0, 1, 0, 1] and k == 2


def test_device_token_path_equals_the_library():
    rng = np.random.default_rng(3)
    tlr = torch.from_numpy(rng.normal(size=(12, 5)).astype(np.float32))
    mask = torch.from_numpy(rng.random((12, 5)) < 0.7)
    ids = np.array([f"u{i % 4}" for i in range(12)], dtype=object)
    want = ga.token_advantages(tlr, mask, group_ids=ids, preset="verl")
    # the device path, forced on CPU tensors: scores and broadcast in torch, advantages in torch
    got = _torch_tokens(tlr, mask, None, None, ids, None, None, {"preset": "verl"})
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert isinstance(want, torch.Tensor) and want.shape == tlr.shape
