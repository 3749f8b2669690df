"""Hostile torch inputs: every dtype, odd views (non-contiguous, flipped, expanded, neg/conj
views), requires_grad and inference tensors, sparse and meta tensors, out= tensors that alias
an input. Expected: the numbers of the float64 numpy computation, or a TypeError/ValueError
naming the problem (README Guarantees); never another exception type or a modified input.
(The torch device path itself is fuzzed against the exact reference in test_fuzz_exact.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import groupadv as ga

torch = pytest.importorskip("torch")

VALS = [1.0, 2.0, 3.0, 5.0, 0.0, 4.0]


def ref(values, **kw):
    return ga.advantages(np.asarray(values, dtype=np.float64), 3, **kw)


@pytest.mark.parametrize(
    "dtype",
    ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"],
)
def test_integer_and_bool_tensors_give_float64(dtype):
    dt = getattr(torch, dtype)
    t = torch.tensor(VALS).to(dt)
    got = ga.grpo(t, 3)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), ref(t.to(torch.float64).numpy()))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_float_tensors(dtype):
    dt = getattr(torch, dtype)
    t = torch.tensor(VALS, dtype=dt)
    got = ga.grpo(t, 3)
    # dtype policy (README Numerics): half in, half out; float32/float64 kept
    assert isinstance(got, torch.Tensor) and got.dtype == dt
    # the exact result rounded once to the output dtype (float16: 2^-11, bfloat16: 2^-8 relative)
    tol = {"float16": 2.0**-11, "bfloat16": 2.0**-8}.get(dtype, 1e-6)
    np.testing.assert_allclose(got.double().numpy(), ref(t.double().numpy()), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "float8_e4m3fn", "float8_e5m2"])
def test_unsupported_tensor_dtypes_are_a_typeerror(dtype):
    dt = getattr(torch, dtype, None)
    if dt is None:
        pytest.skip(f"torch has no {dtype}")
    with pytest.raises(TypeError):
        ga.grpo(torch.tensor(VALS).to(dt), 3)


def test_requires_grad_and_parameters():
    t = torch.tensor(VALS, requires_grad=True)
    got = ga.grpo(t, 3)
    assert not got.requires_grad
    np.testing.assert_allclose(got.numpy(), ref(VALS), rtol=1e-6)
    p = torch.nn.Parameter(torch.tensor(VALS))
    np.testing.assert_allclose(ga.grpo(p, 3).numpy(), ref(VALS), rtol=1e-6)
    assert t.detach().tolist() == VALS


def test_inference_mode_tensor():
    with torch.inference_mode():
        t = torch.tensor(VALS)
    np.testing.assert_allclose(ga.grpo(t, 3).numpy(), ref(VALS), rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda t: torch.stack([t, t * 0]).T.reshape(-1)[::2],
        lambda t: torch.flip(torch.flip(t, [0]), [0]),
        lambda t: torch.flip(t, [0]),
        lambda t: (-t)._neg_view() if hasattr(t, "_neg_view") else t,
        lambda t: t.to(torch.complex64).conj().real,
        lambda t: torch.stack([t, t]).T[:, 0],
    ],
    ids=["stride-2", "flip-flip", "flipped", "neg-view", "conj-real", "column"],
)
def test_tensor_views_give_the_numbers_of_a_contiguous_copy(make):
    t = torch.tensor(VALS, dtype=torch.float64)
    v = make(t)
    copy = v.resolve_neg().resolve_conj().contiguous().clone()
    assert torch.equal(ga.grpo(v, 3), ga.grpo(copy, 3))
    assert t.tolist() == VALS


def test_expanded_tensor_is_a_constant_group():
    got = ga.grpo(torch.tensor(2.5).expand(6), 3)
    assert got.tolist() == [0.0] * 6


def test_sparse_tensor_is_a_typeerror():
    with pytest.raises(TypeError):
        ga.grpo(torch.tensor(VALS).to_sparse(), 3)


def test_meta_tensor_is_a_clean_error():
    """A meta tensor has no data: TypeError/ValueError naming it (today: torch's RuntimeError
    "Tensor.item() cannot be called on meta tensors" from the device path)."""
    with pytest.raises((TypeError, ValueError)):
        ga.grpo(torch.ones(6, device="meta"), 3)


def test_meta_tensor_with_labels_is_a_clean_error():
    with pytest.raises((TypeError, ValueError)):
        ga.grpo(torch.ones(6, device="meta"), group_ids=[0, 1, 0, 1, 0, 1])


def test_out_tensor_checks():
    t = torch.tensor(VALS)
    with pytest.raises(ValueError):
        ga.grpo(t, 3, out=t)
    with pytest.raises(ValueError):
        ga.grpo(t, 3, out=torch.zeros(12)[::2])
    # dtype policy: an out= of any float dtype is written (here float64 for float32 rewards)
    out64 = torch.zeros(6, dtype=torch.float64)
    assert ga.grpo(t, 3, out=out64) is out64
    np.testing.assert_allclose(out64.numpy(), ref(VALS), rtol=1e-6)
    with pytest.raises(TypeError):
        ga.grpo(t, 3, out=torch.zeros(6, dtype=torch.int64))
    with pytest.raises((TypeError, ValueError)):
        ga.grpo(t, 3, out=torch.zeros(6, device="meta"))
    out = torch.zeros(6)
    assert ga.grpo(t, 3, out=out) is out
    np.testing.assert_allclose(out.numpy(), ref(VALS), rtol=1e-6)


def test_out_tensor_overlapping_a_rewards_view_is_refused():
    base = torch.arange(9, dtype=torch.float32)
    x, out = base[:6], base[3:9]
    keep = base.clone()
    with pytest.raises(ValueError, match="out"):
        ga.grpo(x, 3, out=out)
    assert torch.equal(base, keep)


def test_out_tensor_aliasing_float_label_tensor_is_refused():
    """out= sharing storage with group_ids: labels must not be overwritten (ValueError)."""
    ids = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float32)
    keep = ids.clone()
    with pytest.raises(ValueError, match="out"):
        ga.grpo(torch.tensor(VALS), group_ids=ids, out=ids)
    assert torch.equal(ids, keep)


def test_out_tensor_of_int_rewards_sharing_storage_is_refused():
    base = torch.arange(6, dtype=torch.int64)
    keep = base.clone()
    with pytest.raises(ValueError, match="out"):
        ga.grpo(base, 3, out=base.view(torch.float64))
    assert torch.equal(base, keep)


def test_label_and_offset_tensors():
    t = torch.tensor(VALS)
    want = ga.grpo(t, group_ids=[0, 1, 0, 1, 0, 1])
    for ids in (torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([True, False] * 3), torch.tensor([0.5, 1.5] * 3, requires_grad=True)):
        assert torch.equal(ga.grpo(t, group_ids=ids), want)
    with pytest.raises(ValueError, match="NaN"):
        ga.grpo(t, group_ids=torch.tensor([0.0, float("nan")] * 3))
    assert torch.equal(ga.grpo(t, offsets=torch.tensor([0, 3, 6])), ga.grpo(t, 3))
    with pytest.raises(TypeError):
        ga.grpo(t, offsets=torch.tensor([0.0, 3.0, 6.0]))
    assert torch.equal(ga.grpo(t, torch.tensor(3)), ga.grpo(t, 3))


def _device(x, f32=False, **kw):
    """groupadv._torch.advantages (the path CUDA tensors take), run on CPU: one group."""
    from groupadv import _torch

    t = torch.tensor(x, dtype=torch.float32 if f32 else torch.float64)
    return _torch.advantages(t, codes=torch.zeros(len(x), dtype=torch.int64), n_groups=1, **kw)


def test_device_path_all_equal_group_with_subnormal_eps_is_exactly_zero():
    """factor / (0 + 5e-324) is inf and 0 * inf is NaN: the core lifts it, the torch twin not."""
    assert _device([0.1, 0.1, 0.1], eps=5e-324).tolist() == [0.0] * 3


def test_device_path_subnormal_spread_is_not_flushed_to_zero():
    """README: subnormal spreads are computed without underflow (the core and the numpy twin
    rescale; the torch twin squares the residuals and gets std 0, so advantages 0)."""
    np.testing.assert_allclose(_device([1e-320, 2.2250738585072014e-308]).tolist(), [-1.0, 1.0], rtol=1e-6)


def test_device_path_huge_rewards_are_not_nan():
    """Rewards near 1e300 have a finite std: res*res overflows to inf unless guarded."""
    np.testing.assert_allclose(_device([1e300, -1e300]).tolist(), [1.0, -1.0], rtol=1e-12)


def test_device_path_float32_overflow_is_a_valueerror():
    """An advantage beyond float32's range is a ValueError (README), not inf."""
    with pytest.raises(ValueError):
        _device([3e38, -3e38], f32=True, center="loo", scale="none")
