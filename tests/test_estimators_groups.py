"""The group-level estimators of issue 12 (pass@k, GPG, OPO, multi-component rewards) against
plain per-group reference loops, on the active backend (native or numpy: run the file under
both) and on the torch twin's device path; and TRL's multi-reward GRPO against a transcription
of TRL's code (cited by file and line)."""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import numpy as np
import pytest

import groupadv as ga
from groupadv import _torch as torch_glue
from groupadv.errors import NonFiniteRewardError, SingletonGroupError

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- layouts and references


def _layout(rng, n_groups=9, kind="ids"):
    """(kwargs, codes): ragged groups of 1..6, as offsets or as shuffled string labels."""
    sizes = rng.integers(1, 7, n_groups)
    sizes[0], sizes[1] = 1, 5
    codes = np.repeat(np.arange(n_groups), sizes)
    if kind == "offsets":
        return {"offsets": np.concatenate(([0], np.cumsum(sizes)))}, codes
    perm = rng.permutation(len(codes))
    codes = codes[perm]
    return {"group_ids": np.array([f"uid-{c}" for c in codes], dtype=object)}, codes


def _members(codes):
    return [np.flatnonzero(codes == c) for c in np.unique(codes)]


def _ref_passk(x, codes, scale, ddof, eps):
    out = np.zeros(len(x))
    for idx in _members(codes):
        if len(idx) < 2:
            continue
        v = x[idx].astype(np.float64)
        order = sorted(range(len(v)), key=lambda i: (-v[i], i))
        diff = v[order[0]] - v[order[1]]
        if scale == "group":
            d = np.std(v, ddof=ddof) + eps
            diff = 0.0 if d == 0 else diff / d
        out[idx[order[0]]] = diff
    return out


def _ref_group_adv(v, codes, scale, ddof, eps, singleton):
    out = np.zeros(len(v))
    for idx in _members(codes):
        g = v[idx]
        if len(idx) == 1:
            out[idx] = {"zero": 0.0, "raw": g[0] / ((1 + eps) if scale == "group" else 1.0)}[singleton]
            continue
        a = g - g.mean()
        if scale == "group":
            s = np.std(g, ddof=ddof) + eps
            a = np.zeros_like(a) if s == 0 else a / s
        out[idx] = a
    return out


def _close(got, want, dtype):
    tol = 2e-6 if np.dtype(dtype) == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=tol, atol=tol)


# ---------------------------------------------------------------- pass@k


@pytest.mark.parametrize("kind", ["ids", "offsets"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", ["group", "none"])
def test_passk_against_reference(kind, dtype, scale):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        layout, codes = _layout(rng, kind=kind)
        x = rng.integers(0, 4, len(codes)).astype(dtype)  # ties at the top are common
        got = ga.passk_advantages(x, **layout, scale=scale, ddof=1, eps=1e-6)
        assert got.dtype == dtype
        _close(got, _ref_passk(x, codes, scale, 1, 1e-6), dtype)
        # the torch twin on the device path (CPU tensors forced through it)
        torch_glue.FORCE_DEVICE_PATH = True
        try:
            t = ga.passk_advantages(torch.from_numpy(x), **layout, scale=scale, ddof=1, eps=1e-6)
        finally:
            torch_glue.FORCE_DEVICE_PATH = False
        assert t.dtype == torch.from_numpy(x).dtype
        _close(t.numpy(), _ref_passk(x, codes, scale, 1, 1e-6), dtype)


def test_passk_rules():
    # all-equal group: exactly 0; singleton: zero or the error naming it
    assert ga.passk_advantages([0.1] * 4, 4, ddof=1, eps=0.0).tolist() == [0.0] * 4
    assert ga.passk_advantages([2.0, 1.0, 3.0], offsets=[0, 1, 3]).tolist()[0] == 0.0
    with pytest.raises(SingletonGroupError, match=r"rewards\[0\]"):
        ga.passk_advantages([2.0, 1.0, 3.0], offsets=[0, 1, 3], singleton="error")
    with pytest.raises(NonFiniteRewardError, match=r"rewards\[2\]"):
        ga.passk_advantages([2.0, 1.0, np.nan], 3)
    got = ga.passk_advantages([2.0, 1.0, np.nan], 3, nan="propagate")
    assert got[0] == 0.0 and got[1] == 0.0 and np.isnan(got[2])
    assert ga.passk_advantages([2.0, 1.0, np.nan], 3, nan="omit", scale="none").tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="raw"):
        ga.passk_advantages([1.0, 2.0], 2, singleton="raw")
    with pytest.raises(ValueError, match="scale"):
        ga.passk_advantages([1.0, 2.0], 2, scale="batch")
    # bf16 tensors in, bf16 out
    t = ga.passk_advantages(torch.tensor([1.0, 3.0, 2.0], dtype=torch.bfloat16), 3, scale="none")
    assert t.dtype == torch.bfloat16 and t.tolist() == [0.0, 1.0, 0.0]


# ---------------------------------------------------------------- GPG and OPO


@pytest.mark.parametrize("kind", ["ids", "offsets"])
def test_gpg_against_reference(kind):
    rng = np.random.default_rng(1)
    layout, codes = _layout(rng, kind=kind)
    x = rng.integers(0, 3, len(codes)).astype(np.float64)
    alpha = len(x) / max(np.count_nonzero(x), 1)
    want = alpha * _ref_group_adv(x, codes, "none", 1, 0.0, "raw") / 2.0
    _close(ga.gpg_advantages(x, **layout, f_norm=2.0), want, np.float64)
    torch_glue.FORCE_DEVICE_PATH = True
    try:
        t = ga.gpg_advantages(torch.from_numpy(x.astype(np.float32)), **layout, f_norm=2.0)
    finally:
        torch_glue.FORCE_DEVICE_PATH = False
    _close(t.numpy(), want, np.float32)
    with pytest.raises(ValueError, match="f_norm"):
        ga.gpg_advantages(x, **layout, f_norm=0.0)


@pytest.mark.parametrize("kind", ["ids", "offsets"])
def test_opo_against_reference(kind):
    rng = np.random.default_rng(2)
    layout, codes = _layout(rng, kind=kind)
    x = rng.normal(size=len(codes))
    w = rng.integers(1, 50, len(codes)).astype(np.float64)
    want = np.zeros(len(x))
    for idx in _members(codes):
        want[idx] = x[idx] if len(idx) == 1 else x[idx] - (w[idx] * x[idx]).sum() / w[idx].sum()
    _close(ga.opo_advantages(x, w, **layout), want, np.float64)
    torch_glue.FORCE_DEVICE_PATH = True
    try:
        t = ga.opo_advantages(torch.from_numpy(x), torch.from_numpy(w), **layout)
    finally:
        torch_glue.FORCE_DEVICE_PATH = False
    _close(t.numpy(), want, np.float64)
    # all-equal: exactly 0; weights summing to 0: 0 (verl: NaN)
    assert ga.opo_advantages([0.1, 0.1, 0.1], [1, 7, 3], 3).tolist() == [0.0] * 3
    assert ga.opo_advantages([0.1, 0.5], [0, 0], 2).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="weights"):
        ga.opo_advantages([0.1, 0.5], [1, -1], 2)


# ---------------------------------------------------------------- multi-component rewards


def _ref_multi(x, codes, w, aggregation, scale, ddof, eps, singleton):
    if aggregation == "sum_then_normalize":
        return _ref_group_adv(x @ w, codes, scale, ddof, eps, singleton)
    return sum(w[j] * _ref_group_adv(x[:, j], codes, scale, ddof, eps, singleton) for j in range(x.shape[1]))


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
@pytest.mark.parametrize("kind", ["ids", "offsets"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multi_reward_against_reference(aggregation, kind, dtype):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        layout, codes = _layout(rng, kind=kind)
        x = rng.integers(0, 3, (len(codes), 3)).astype(dtype)
        w = np.array([1.0, 0.5, -2.0])
        kw = dict(weights=w, aggregation=aggregation, preset="verl")
        want = _ref_multi(x.astype(np.float64), codes, w, aggregation, "group", 1, 1e-6, "raw")
        got = ga.multi_reward_advantages(x, **layout, **kw)
        assert got.dtype == dtype and got.shape == (len(codes),)
        _close(got, want, dtype)
        torch_glue.FORCE_DEVICE_PATH = True
        try:
            t = ga.multi_reward_advantages(torch.from_numpy(x), **layout, **kw)
        finally:
            torch_glue.FORCE_DEVICE_PATH = False
        _close(t.numpy(), want, dtype)
        t = ga.multi_reward_advantages(torch.from_numpy(x), **layout, **kw)  # CPU tensors: the core
        _close(t.numpy(), want, dtype)


def test_multi_reward_rules():
    x = np.array([[1.0, np.nan], [0.0, 2.0], [np.nan, np.nan], [1.0, 1.0]])
    with pytest.raises(NonFiniteRewardError) as e:
        ga.multi_reward_advantages(x, 4)
    assert e.value.index == 0  # names the sample (row)
    for aggregation in ("sum_then_normalize", "normalize_then_sum"):
        got = ga.multi_reward_advantages(x, 4, nan="omit", aggregation=aggregation, scale="none")
        assert got[2] == 0.0 and np.isfinite(got).all()
        got = ga.multi_reward_advantages(x, 4, nan="propagate", aggregation=aggregation, scale="none")
        assert np.isnan(got).all()  # NaN spreads over the group (of a component, or of the sums)
    # all-equal components give exactly 0
    eq = np.tile([[0.1, 0.3]], (5, 1))
    for aggregation in ("sum_then_normalize", "normalize_then_sum"):
        assert ga.multi_reward_advantages(eq, 5, aggregation=aggregation, preset="trl").tolist() == [0.0] * 5
    with pytest.raises(ValueError, match="weights"):
        ga.multi_reward_advantages(eq, 5, weights=[1.0])
    # finite rewards whose weighted sum overflows: the overflow error naming the group
    big = np.array([[1e300, 0.0], [-1e300, 0.0]])
    with pytest.raises(ga.errors.AdvantageOverflowError):
        ga.multi_reward_advantages(big, 2, weights=[1e10, 1.0], aggregation="normalize_then_sum", scale="none")
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        ga.multi_reward_advantages(np.zeros(5), 5)
    with pytest.raises(ValueError, match="aggregation"):
        ga.multi_reward_advantages(eq, 5, aggregation="sum")
    with pytest.raises(ValueError, match="scale"):
        ga.multi_reward_advantages(eq, 5, aggregation="normalize_then_sum", scale="batch")


# ---------------------------------------------------------------- TRL, transcribed


@functools.cache
def _fixture_script():
    """scripts/make_peer_fixtures.py, loaded once."""
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "make_peer_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_peer_fixtures", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _trl_advantages(rewards_per_func, reward_weights, num_generations, aggregation, scale_rewards):
    """TRL's multi-reward advantages: the transcription that also makes the fixtures
    (scripts/make_peer_fixtures.py `trl_multi_reward`, which cites TRL's file and lines), one
    copy for both."""
    script = _fixture_script()
    return script.trl_multi_reward(rewards_per_func, reward_weights, num_generations, aggregation, scale_rewards)


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
@pytest.mark.parametrize("num_generations", [1, 2, 4])
def test_trl_multi_reward_matches_trl(aggregation, scale_rewards, num_generations):
    from groupadv.integrations import trl

    for seed in range(5):
        rng = np.random.default_rng(seed)
        n = num_generations * 6
        x = rng.normal(size=(n, 3)).astype(np.float32)
        x[rng.random((n, 3)) < 0.15] = np.nan  # some reward functions returned None
        x[rng.integers(0, n)] = np.nan  # an unscorable completion
        if num_generations > 1:
            x[:num_generations, 1] = 0.5  # an all-equal component in the first group
        w = torch.tensor([1.0, 0.5, 2.0])
        want = _trl_advantages(torch.from_numpy(x), w, num_generations, aggregation, scale_rewards).numpy()
        got = trl.compute_multi_reward_advantages(torch.from_numpy(x), num_generations, w, aggregation, scale_rewards)
        assert got.dtype == torch.float32 and got.shape == (n,)
        g = got.numpy().astype(np.float64)
        assert np.isfinite(g).all()
        assert np.all(g[np.isnan(x).all(axis=1)] == 0.0)  # unscorable: 0
        # float32 rounding of TRL's statistics (relative to the largest advantage: TRL's
        # normalize_then_sum divides sums of z-scores again by a batch std)
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_trl_multi_reward_rejects_unknown_aggregation():
    from groupadv.integrations import trl

    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        trl.compute_multi_reward_advantages(np.zeros((4, 2)), 2, None, "sum")
