"""ga.masked_whiten against verl's masked_whiten and OpenRLHF's global normalisation, on the
active backend (GROUPADV_BACKEND) and the torch twin (device path), with the exact-0 rule,
dtypes, errors and NaN policy."""

import numpy as np
import pytest
import torch

import groupadv as ga
from groupadv import _scan_twins, _torch
from groupadv.errors import NonFiniteRewardError

verl_F = pytest.importorskip("verl.utils.torch_functional")


def openrlhf_normalize(adv: torch.Tensor, mask: torch.Tensor, no_std_norm: bool = False):
    """Transcribed from OpenRLHF 0.11.0 openrlhf/trainer/ppo_utils/experience_maker.py:314-329
    (global normalisation of gae / reinforce / reinforce_baseline advantages)."""
    all_advantages = adv.flatten().float()
    all_action_masks = mask.flatten()
    num_actions = all_action_masks.sum()
    mean = (all_advantages * all_action_masks).sum() / num_actions
    if not no_std_norm:
        var = ((all_advantages - mean).pow(2) * all_action_masks).sum() / num_actions
        rstd = var.clamp(min=1e-8).rsqrt()
    else:
        rstd = 1
    return ((adv - mean) * rstd).reshape(adv.shape)


def _batch(rng, bs, L, dtype, leading):
    x = torch.from_numpy(rng.normal(size=(bs, L))).to(dtype)
    lens = rng.integers(1, L + 1, size=bs)
    pos = np.arange(L)[None, :]
    m = (pos >= L - lens[:, None]) if leading else (pos < lens[:, None])
    return x, torch.from_numpy(m.astype(np.int64))


@pytest.fixture(params=["backend", "torch_twin"])
def path(request, monkeypatch):
    """'backend': the CPU path of GROUPADV_BACKEND; 'torch_twin': the device path, forced on CPU."""
    if request.param == "torch_twin":
        monkeypatch.setattr(_torch, "on_device", lambda t: True)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("leading", [False, True])
@pytest.mark.parametrize("shift_mean", [True, False])
def test_matches_verl(path, dtype, leading, shift_mean):
    rng = np.random.default_rng(7 + leading)
    x, m = _batch(rng, 37, 19, dtype, leading)
    want = verl_F.masked_whiten(x, m, shift_mean=shift_mean)
    got = ga.masked_whiten(x, m, shift_mean=shift_mean)
    assert got.dtype == want.dtype == dtype
    # float64: verl divides by sum(mask) + 1e-8 (a relative 1e-8 / n off the mean), groupadv by sum(mask)
    tol = 2e-6 if dtype == torch.float32 else 1e-7
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_matches_verl_on_a_large_batch_in_parallel():
    # beyond the serial threshold: chunked statistics merged across threads
    rng = np.random.default_rng(3)
    x, m = _batch(rng, 300, 1000, torch.float32, False)
    want = verl_F.masked_whiten(x.double(), m).float()
    got = ga.masked_whiten(x, m, num_threads=2)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(got, ga.masked_whiten(x, m, num_threads=1))


def test_float_mask_weights_and_bool_mask(path):
    rng = np.random.default_rng(1)
    x, m = _batch(rng, 8, 6, torch.float64, False)
    w = m.double() * torch.from_numpy(rng.uniform(0.5, 2.0, size=m.shape))
    torch.testing.assert_close(ga.masked_whiten(x, w), verl_F.masked_whiten(x, w), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(ga.masked_whiten(x, m.bool()), verl_F.masked_whiten(x, m.bool()),
                               rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("no_std_norm", [False, True])
def test_matches_openrlhf_global_normalisation(path, no_std_norm):
    rng = np.random.default_rng(5)
    x, m = _batch(rng, 20, 11, torch.float32, False)
    want = openrlhf_normalize(x, m, no_std_norm)
    got = ga.masked_whiten(x, m, unbiased=False, eps_rule="clamp", scale=not no_std_norm)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)


def test_all_equal_masked_values_give_exact_zero(path):
    x = torch.full((4, 5), 0.1, dtype=torch.float32)
    x[0, 4] = 7.0  # outside the mask
    m = torch.ones(4, 5, dtype=torch.int64)
    m[0, 4] = 0
    got = ga.masked_whiten(x, m)
    assert torch.all(got[m.bool()] == 0.0)
    assert got[0, 4] > 1e4  # (7 - 0.1) * rsqrt(0 + 1e-8), as verl
    verl = verl_F.masked_whiten(x, m)
    assert torch.any(verl[m.bool()] != 0.0)  # verl: float32 rounding turned into outputs
    assert torch.all(ga.masked_whiten(x, m, apply_mask=True) == 0.0)


def test_apply_mask_and_numpy_dtypes(path):
    rng = np.random.default_rng(2)
    x, m = _batch(rng, 6, 7, torch.float64, True)
    got = ga.masked_whiten(x.numpy(), m.numpy(), apply_mask=True)
    want = (verl_F.masked_whiten(x, m) * m).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    h = ga.masked_whiten(x.numpy().astype(np.float16), m.numpy())
    assert h.dtype == np.float16
    assert ga.masked_whiten(x.numpy().astype(np.float32), m.numpy()).dtype == np.float32
    b = ga.masked_whiten(x.to(torch.bfloat16), m)
    assert b.dtype == torch.bfloat16
    torch.testing.assert_close(b.float(), verl_F.masked_whiten(x.to(torch.bfloat16).float(), m).to(torch.bfloat16)
                               .float(), rtol=1e-2, atol=1e-2)


def test_out_and_the_twin_agree_with_native():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 13)).astype(np.float32)
    m = (rng.random((9, 13)) < 0.7).astype(np.uint8)
    out = np.empty_like(x)
    r = ga.masked_whiten(x, m, out=out)
    assert r is out
    twin = np.empty_like(x)
    _scan_twins.np_masked_whiten(x, m, twin)
    np.testing.assert_allclose(out, twin, rtol=1e-6, atol=1e-6)


def test_errors(path):
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    one = torch.tensor([[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="selects 1 token"):
        ga.masked_whiten(x, one)
    with pytest.raises(ValueError, match="selects 0 token"):
        ga.masked_whiten(x, torch.zeros(2, 2, dtype=torch.int64), unbiased=False)
    assert torch.equal(ga.masked_whiten(x, one, unbiased=False)[0, 1], torch.tensor(0.0))
    with pytest.raises(ValueError, match="shape"):
        ga.masked_whiten(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match="nan must be"):
        ga.masked_whiten(x, None, nan="omit")
    with pytest.raises(ValueError, match="eps_rule"):
        ga.masked_whiten(x, None, eps_rule="max")
    with pytest.raises(ValueError, match="eps must be"):
        ga.masked_whiten(x, None, eps=-1.0)


def test_nan_raises_naming_the_sample_or_propagates_as_verl(path):
    x = torch.tensor([[1.0, 2.0, 0.0], [3.0, float("nan"), 5.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 0]])
    with pytest.raises(NonFiniteRewardError, match=r"values\[1, 1\] \(sample 1\) is NaN") as e:
        ga.masked_whiten(x, m)
    assert e.value.index == 4
    got = ga.masked_whiten(x, m, nan="propagate")
    assert torch.isnan(got).all() and torch.isnan(verl_F.masked_whiten(x, m)).all()
    # a NaN outside the mask enters no statistic (verl's masked_sum skips it): only its own output
    x2 = torch.tensor([[1.0, 2.0, float("nan")], [3.0, 4.0, 5.0]])
    got2 = ga.masked_whiten(x2, m)
    want2 = verl_F.masked_whiten(x2, m)
    assert torch.isnan(got2[0, 2]) and torch.isnan(want2[0, 2])
    torch.testing.assert_close(got2[m.bool()], want2[m.bool()])
