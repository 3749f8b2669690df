"""ga.discounted_returns / ga.gae: the native core, the numpy twin and the torch twin agree;
packed equals padded; OpenRLHF's token estimators against transcriptions of its code."""

import numpy as np
import pytest
import torch

import groupadv as ga
from groupadv import _scan_twins, _torch
from groupadv.errors import AdvantageOverflowError, NonFiniteRewardError
from groupadv.integrations import openrlhf as orl

# ---- OpenRLHF 0.11.0 transcriptions (openrlhf/trainer/ppo_utils/experience_maker.py) ----


def orl_get_advantages_and_returns(values, rewards, action_mask, gamma, lambd):
    """experience_maker.py:333-378 (get_advantages_and_returns), verbatim logic."""
    lastgaelam = 0
    advantages_reversed = []
    response_length = rewards.size(1)
    if action_mask is not None:
        values = action_mask * values
        rewards = action_mask * rewards
    for t in reversed(range(response_length)):
        nextvalues = values[:, t + 1] if t < response_length - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lambd * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = advantages + values
    return advantages.detach(), returns


def orl_get_cumulative_returns(rewards, action_mask, gamma):
    """experience_maker.py:380-411 (get_cumulative_returns)."""
    response_length = rewards.size(1)
    returns = torch.zeros_like(rewards)
    cumulative_return = torch.zeros(rewards.size(0), device=rewards.device)
    if action_mask is not None:
        rewards = action_mask * rewards
    for t in reversed(range(response_length)):
        cumulative_return = rewards[:, t] + gamma * cumulative_return
        returns[:, t] = cumulative_return
    return returns


def orl_compute_reward(r, kl_coef, kl, action_mask):
    """openrlhf/models/utils.py:98-126 (compute_reward, no clip range)."""
    if kl_coef <= 0.0:
        kl_coef = 0.0
    kl_reward = -kl_coef * kl
    eos_indices = action_mask.size(1) - 1 - action_mask.long().fliplr().argmax(dim=1, keepdim=True)
    last_reward = torch.zeros_like(kl).scatter_(dim=1, index=eos_indices, src=r.unsqueeze(1).to(kl.dtype))
    return last_reward + kl_reward


def orl_token_pipeline(estimator, rewards, n, mask, values, kl, kl_coef, gamma, lambd, no_std_norm=False):
    """experience_maker.py:237-330 for one experience: baseline, compute_reward, returns,
    global normalisation (lines 314-328)."""
    rewards = rewards.reshape(-1, n)
    if estimator == "reinforce_baseline":
        rewards = rewards - rewards.mean(-1, keepdim=True)
        gamma = 1.0
    reward = orl_compute_reward(rewards.reshape(-1), kl_coef, kl, mask)
    if estimator == "gae":
        adv, ret = orl_get_advantages_and_returns(values, reward, mask, gamma, lambd)
    else:
        ret = orl_get_cumulative_returns(reward, mask, gamma)
        adv = ret.clone()
    all_advantages = adv.flatten().float()
    all_action_masks = mask.flatten()
    num_actions = all_action_masks.sum()
    mean = (all_advantages * all_action_masks).sum() / num_actions
    if not no_std_norm:
        var = ((all_advantages - mean).pow(2) * all_action_masks).sum() / num_actions
        rstd = var.clamp(min=1e-8).rsqrt()
    else:
        rstd = 1
    return (adv - mean) * rstd, ret


def _batch(rng, bs=14, L=11, dtype=torch.float32):
    lens = rng.integers(1, L + 1, bs)
    mask = torch.from_numpy(np.arange(L)[None, :] < lens[:, None]).to(torch.int64)
    r = torch.from_numpy(rng.normal(size=(bs, L))).to(dtype)
    v = torch.from_numpy(rng.normal(size=(bs, L))).to(dtype)
    return r, v, mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95)])
def test_openrlhf_gae_and_cumulative_returns(gamma, lam):
    rng = np.random.default_rng(1)
    r, v, m = _batch(rng)
    a, ret = orl.get_advantages_and_returns(v, r, m, gamma, lam)
    wa, wret = orl_get_advantages_and_returns(v, r, m, gamma, lam)
    assert a.dtype == wa.dtype and ret.dtype == wret.dtype
    torch.testing.assert_close(a, wa, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(ret, wret, rtol=2e-5, atol=2e-5)
    g = orl.get_cumulative_returns(r, m, gamma)
    torch.testing.assert_close(g, orl_get_cumulative_returns(r, m, gamma), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("estimator", ["gae", "reinforce", "reinforce_baseline"])
@pytest.mark.parametrize("no_std_norm", [False, True])
def test_openrlhf_token_estimators(estimator, no_std_norm):
    rng = np.random.default_rng(2)
    n = 4
    _, v, m = _batch(rng, bs=16)
    rewards = torch.from_numpy(rng.normal(size=16)).float()
    kl = torch.from_numpy(rng.normal(scale=0.1, size=m.shape)).float()
    got = orl.compute_token_advantages(rewards, m, n, estimator, values=v, kl=kl, kl_coef=0.05, gamma=0.97,
                                       lambd=0.9, no_std_norm=no_std_norm)
    want = orl_token_pipeline(estimator, rewards, n, m, v, kl, 0.05, 0.97, 0.9, no_std_norm)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=3e-5, atol=3e-5)


def test_openrlhf_reinforce_baseline_sequence_level():
    r = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    np.testing.assert_array_equal(orl.compute_advantages(r, 3, "reinforce_baseline"), [-1.0, 0.0, 1.0, 0, 0, 0])


# ---- the three implementations agree ----


def _twin_results(r, v, m, gamma, lam, zero):
    n = _scan_twins.np_scan(r.numpy(), None if v is None else v.numpy(), m.numpy().astype(np.uint8), gamma=gamma,
                            lam=lam, zero=zero, check=True)
    t = _scan_twins.torch_scan(r, v, m, gamma=gamma, lam=lam, zero=zero, check=True)
    return n, t


@pytest.mark.parametrize("unmasked", ["skip", "zero"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backend_and_twins_agree(unmasked, dtype):
    rng = np.random.default_rng(3)
    r, v, m = _batch(rng, bs=30, L=25, dtype=dtype)
    m[:, 3] = 0  # an observation span inside
    zero = unmasked == "zero"
    got = ga.gae(r, v, m, 0.97, 0.9, unmasked=unmasked)
    (na, nr), (ta, tr) = _twin_results(r, v, m, 0.97, 0.9, zero)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-13)
    for a, b, c in ((got[0], na, ta), (got[1], nr, tr)):
        torch.testing.assert_close(a, torch.from_numpy(b), **tol)
        torch.testing.assert_close(a, c, **tol)
    g = ga.discounted_returns(r, m, 0.9, unmasked=unmasked)
    n, t = _twin_results(r, None, m, 0.9, 1.0, zero)
    torch.testing.assert_close(g, torch.from_numpy(n), **tol)
    torch.testing.assert_close(g, t, **tol)


def test_device_path_through_the_torch_twin(monkeypatch):
    rng = np.random.default_rng(4)
    r, v, m = _batch(rng)
    want = ga.gae(r, v, m, 0.9, 0.8)
    monkeypatch.setattr(_torch, "on_device", lambda t: True)
    got = ga.gae(r, v, m, 0.9, 0.8)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    b16 = ga.discounted_returns(r.to(torch.bfloat16), m, 0.9)
    assert b16.dtype == torch.bfloat16
    with pytest.raises(NonFiniteRewardError, match=r"rewards\[2, 1\] \(sample 2\)"):
        r2 = r.clone()
        r2[2, 1] = float("inf")
        ga.discounted_returns(r2, m, 0.9)


@pytest.mark.parametrize("unmasked", ["skip", "zero"])
def test_packed_equals_padded(unmasked):
    rng = np.random.default_rng(5)
    lens = rng.integers(0, 9, 12)
    lens[0] = 3
    L = int(lens.max())
    pad_mask = np.arange(L)[None, :] < lens[:, None]
    r = rng.normal(size=(12, L)) * pad_mask
    v = rng.normal(size=(12, L)) * pad_mask
    inner = (rng.random((12, L)) < 0.8) & pad_mask
    flat_r, flat_v, flat_m = r[pad_mask], v[pad_mask], inner[pad_mask]
    a, ret = ga.gae(r, v, inner, 0.9, 0.7, unmasked=unmasked)
    pa, pret = ga.gae(flat_r, flat_v, flat_m, 0.9, 0.7, lengths=lens, unmasked=unmasked)
    np.testing.assert_allclose(pa, a[pad_mask], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(pret, ret[pad_mask], rtol=1e-13, atol=1e-13)
    g = ga.discounted_returns(r, inner, 0.8, unmasked=unmasked)
    pg = ga.discounted_returns(flat_r, flat_m, 0.8, lengths=lens, unmasked=unmasked)
    np.testing.assert_allclose(pg, g[pad_mask], rtol=1e-13, atol=1e-13)


def test_large_batch_parallel_equals_serial_and_out():
    rng = np.random.default_rng(6)
    r = rng.normal(size=(300, 600)).astype(np.float32)
    v = rng.normal(size=(300, 600)).astype(np.float32)
    m = (np.arange(600)[None, :] < rng.integers(1, 601, 300)[:, None])
    a1 = ga.gae(r, v, m, 0.99, 0.95, num_threads=1)
    a2 = ga.gae(r, v, m, 0.99, 0.95, num_threads=2)
    np.testing.assert_array_equal(a1[0], a2[0])
    np.testing.assert_array_equal(a1[1], a2[1])
    out = np.empty_like(r)
    assert ga.discounted_returns(r, m, 0.9, out=out, num_threads=2) is out
    np.testing.assert_array_equal(out, ga.discounted_returns(r, m, 0.9, num_threads=1))


def test_errors_name_the_input():
    r = np.zeros((3, 4), dtype=np.float32)
    r[1, 2] = np.nan
    with pytest.raises(NonFiniteRewardError, match=r"rewards\[1, 2\] \(sample 1\) is NaN") as e:
        ga.discounted_returns(r, None, 0.9)
    assert e.value.index == 6
    out = ga.discounted_returns(r, None, 0.9, nan="propagate")
    assert np.isnan(out[1, :3]).all() and not np.isnan(out[[0, 2]]).any()
    big = np.full((1, 3), 3e38, dtype=np.float32)
    with pytest.raises(AdvantageOverflowError):
        ga.discounted_returns(big, None, 1.0)
    with pytest.raises(ValueError, match="unmasked must be"):
        ga.discounted_returns(r, None, 0.9, unmasked="carry")
    with pytest.raises(ValueError, match="gamma must be finite"):
        ga.discounted_returns(r, None, float("nan"))
    with pytest.raises(ValueError, match="2-D"):
        ga.discounted_returns(np.zeros(4), None, 0.9)
    with pytest.raises(ValueError, match="lengths add up"):
        ga.discounted_returns(np.zeros(4), None, 0.9, lengths=np.array([1, 2]))
    with pytest.raises(ValueError, match="values has shape"):
        ga.gae(np.zeros((2, 3)), np.zeros((2, 2)), None, 1.0, 1.0)
    with pytest.raises(TypeError, match="needs values"):
        ga.gae(np.zeros((2, 3)), None, None, 1.0, 1.0)

