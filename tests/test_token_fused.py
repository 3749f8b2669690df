"""The fused token passes of the verl adapters (issue 12 "Speed": the compiled core reads any
integer mask as it comes, gathers the whitening statistics inside the scan, subtracts remax's
baseline inside it, and takes reinforce_plus_plus_baseline's statistics from the bs scores)
give what the public passes composed give, for every mask dtype verl may pass; errors too.
On the numpy backend the adapters compose the public passes, so both sides agree trivially
there and the test checks the composition against itself."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import groupadv as ga  # noqa: E402
from groupadv.errors import NonFiniteRewardError  # noqa: E402
from groupadv.integrations import verl as ours  # noqa: E402

MASK_DTYPES = (torch.bool, torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _batch(dtype, mask_dtype, bs=48, L=37, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, L + 1, bs)
    pos = np.arange(L)[None, :]
    mask = (pos < lengths[:, None]) & ~((pos % 5 == 2) & (pos < lengths[:, None] - 1))
    mask[:, 0] = True
    r = rng.normal(size=(bs, L)) * mask
    v = rng.normal(size=(bs, L))
    # integer masks with values other than 1 select too (any nonzero), as verl's `mask != 0`
    m = torch.from_numpy(mask).to(mask_dtype)
    if mask_dtype not in (torch.bool, torch.uint8, torch.int8):
        m = m * 3
    uids = np.repeat(np.array([f"u{i}" for i in range(bs // 4)], dtype=object), 4)[rng.permutation(bs)]
    base = torch.from_numpy(rng.normal(size=bs)).to(dtype)
    return torch.from_numpy(r).to(dtype), torch.from_numpy(v).to(dtype), m, uids, base


def _close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-12 if got.dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
def test_fused_adapters_equal_the_composed_passes(dtype, mask_dtype):
    t, v, m, uids, base = _batch(dtype, mask_dtype)
    sel = m != 0
    adv, ret = ours.compute_gae_advantage_return(t, v, m, 0.99, 0.95)
    a0, r0 = ga.gae(t, v, sel, 0.99, 0.95)
    assert torch.equal(ret, r0)  # the scan is the same pass
    _close(adv, ga.masked_whiten(a0, sel))

    adv, ret = ours.compute_reinforce_plus_plus_outcome_advantage(t, m, config=SimpleNamespace(gamma=0.9))
    r1 = ga.discounted_returns(t, sel, 0.9)
    assert torch.equal(ret, r1)
    _close(adv, ga.masked_whiten(r1, sel, apply_mask=True))

    adv, ret = ours.compute_reinforce_plus_plus_baseline_outcome_advantage(t, m, uids)
    assert adv is ret
    centred = ga.token_advantages(t, sel, group_ids=uids, preset="verl", center="mean", scale="none")
    _close(adv, ga.masked_whiten(centred, sel, apply_mask=True))

    adv, ret = ours.compute_remax_outcome_advantage(t, base, m)
    r2 = ga.discounted_returns(t, sel, 1.0, unmasked="zero")
    assert torch.equal(ret, r2)
    assert torch.equal(adv, r2 - base.unsqueeze(-1) * sel)  # the subtraction as torch rounds it


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.int32])
def test_fused_errors_and_exact_zero(mask_dtype):
    t, v, m, uids, base = _batch(torch.float32, mask_dtype, bs=8, L=6)
    bad = t.clone()
    bad[3, 0] = float("nan")
    for call in (lambda: ours.compute_gae_advantage_return(bad, v, m, 1.0, 1.0),
                 lambda: ours.compute_reinforce_plus_plus_outcome_advantage(bad, m, config=SimpleNamespace(gamma=1.0)),
                 lambda: ours.compute_remax_outcome_advantage(bad, base, m)):
        with pytest.raises(NonFiniteRewardError, match=r"rewards\[3, 0\] \(sample 3\)"):
            call()
    badv = v.clone()
    badv[5, 0] = float("inf")
    with pytest.raises(NonFiniteRewardError, match=r"values\[5, 0\] \(sample 5\)"):
        ours.compute_gae_advantage_return(t, badv, m, 1.0, 1.0)
    one = torch.zeros_like(m)
    one[2, 0] = 1
    with pytest.raises(ValueError, match="the mask selects 1 token"):
        ours.compute_reinforce_plus_plus_outcome_advantage(t, one, config=SimpleNamespace(gamma=1.0))
    with pytest.raises(ValueError, match="the mask selects 1 token"):
        ours.compute_reinforce_plus_plus_baseline_outcome_advantage(t, one, uids)
    # every masked advantage equal: exactly 0 on the masked tokens (verl: float32 noise)
    same = torch.zeros_like(t)
    adv, _ = ours.compute_reinforce_plus_plus_baseline_outcome_advantage(same, m, uids)
    assert torch.count_nonzero(adv) == 0
    adv, _ = ours.compute_reinforce_plus_plus_outcome_advantage(same, m, config=SimpleNamespace(gamma=1.0))
    assert torch.count_nonzero(adv) == 0
