"""groupadv's optimal-token-baseline adapters against verl 0.9.1 itself, live
(``optimal_token_baseline`` and ``tir_optimal_token_baseline``, verl/trainer/ppo/core_algos.py
871-1121). The public function, its twins and verl's golden outputs (no verl needed) are in
tests/test_token_baseline.py.

Random batches: ragged uid groups (singletons included) with shuffled string uids, masks of
random lengths (prefix masks, and masks with holes for the multi-turn form), log-probs and
sum_pi_squared in their valid ranges (pi in (0, 1], pi^2 <= sum_pi_squared <= 1), rollout IS
weights present or absent, float32 / float64 / bf16.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import verl_inputs  # noqa: E402
from verl_inputs import batch as _batch  # noqa: E402

ca = verl_inputs.core_algos()

from groupadv.integrations import verl as ours  # noqa: E402

VERL = dict(ca.ADV_ESTIMATOR_REGISTRY)
NAMES = ["optimal_token_baseline", "tir_optimal_token_baseline"]


def otb_batch(rng, dtype, holes=False, n_groups=10, L=12):
    """verl_inputs.batch plus old_log_probs, sum_pi_squared and rollout IS weights (float32,
    as verl's actor gives them, or ``dtype`` for float64); ``holes``: masked tool tokens
    inside the responses (the multi-turn layout)."""
    t, m, uids, _ = _batch(rng, dtype, n_groups=n_groups, L=L)
    bs = t.shape[0]
    if holes:
        hole = torch.from_numpy(rng.random((bs, L)) < 0.25)
        m = (m * ~hole).to(m.dtype)
        t = (t * ~hole).to(t.dtype)
    pi = rng.uniform(0.02, 1.0, (bs, L))
    lp = np.log(pi)
    q = pi**2 + rng.random((bs, L)) * (1 - pi) ** 2  # pi^2 <= sum pi^2 <= pi^2 + (1-pi)^2 <= 1
    rho = rng.uniform(0.3, 2.0, (bs, L))
    fd = torch.float64 if dtype == torch.float64 else torch.float32
    return t, m, uids, torch.from_numpy(lp).to(fd), torch.from_numpy(q).to(fd), torch.from_numpy(rho).to(fd)


def _scale(ret):
    """The size of each row's returns: the float32 rounding of verl's sums is relative to it."""
    return 1.0 + ret.double().abs().amax(dim=1, keepdim=True).numpy()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("with_is", [False, True], ids=["no_is", "is"])
def test_matches_verl(name, dtype, with_is):
    fn = ours.SUPPORTED[name][1]
    for seed in range(5):
        rng = np.random.default_rng(seed)
        t, m, uids, lp, q, rho = otb_batch(rng, dtype, holes=(seed % 2 == 1))
        rho = rho if with_is else None
        got, got_ret = fn(t.clone(), m, uids, lp, q, rho)
        if dtype == torch.bfloat16:
            # verl itself fails on bf16 rewards with float32 log-probs (its actor's dtype):
            # bf16 returns, float32 baselines (core_algos.py:970 and 1117). With every input
            # in bf16 it runs: the dtype is the same as ours.
            with pytest.raises(RuntimeError, match="dtypes match"):
                VERL[name](t.clone(), m, uids, lp, q, rho)
            bf = [None if x is None else x.bfloat16() for x in (lp, q, rho)]
            want, want_ret = VERL[name](t.clone(), m, uids, *bf)
            assert got.dtype == want.dtype == got_ret.dtype == want_ret.dtype
        else:
            want, want_ret = VERL[name](t.clone(), m, uids, lp, q, rho)
            assert got.dtype == want.dtype and got_ret.dtype == want_ret.dtype
        assert got.shape == got_ret.shape == t.shape
        if dtype == torch.bfloat16:
            # verl's sums run in bf16 (8-bit mantissa); ours in float64, rounded once. Compare
            # with verl on the same inputs in float64, rounded to bf16.
            m64 = m.double() if m.is_floating_point() else m
            want, want_ret = VERL[name](t.double(), m64, uids, lp.double(), q.double(),
                                        None if rho is None else rho.double())
            want, want_ret = want.to(got.dtype), want_ret.to(got.dtype)
            tol = 2**-7
        else:
            # float32: verl's cumsums and group sums in float32, ours in float64.
            tol = 1e-12 if dtype == torch.float64 else 3e-5
        s = _scale(want_ret)
        g, w = got.double().numpy(), want.double().numpy()
        close = np.abs(g - w) <= tol * s
        # The deliberate deviation: exactly 0 where every weighted return of the step is equal
        # (verl leaves G eps / sum W, at most ~1e-6 here).
        deviation = (g == 0.0) & (np.abs(w) <= 1e-5 * s)
        assert np.all(close | deviation), (seed, np.abs(g - w).max())
        np.testing.assert_allclose(got_ret.double().numpy(), want_ret.double().numpy(), rtol=0,
                                   atol=0 if dtype == torch.float64 else tol * s.max())


@pytest.mark.parametrize("name", NAMES)
def test_equal_returns_give_exactly_zero_where_verl_leaves_eps_noise(name):
    """Two responses with identical rewards: verl gives G eps / sum W (not 0), groupadv 0."""
    t = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 0.1]], dtype=torch.float64)
    m = torch.ones_like(t)
    lp = torch.full_like(t, -0.05)  # confident tokens: small path variance, so eps shows
    q = torch.exp(lp) ** 2
    uids = np.array(["a", "a"], dtype=object)
    want, _ = VERL[name](t, m, uids, lp, q)
    got, _ = ours.SUPPORTED[name][1](t, m, uids, lp, q)
    assert torch.all(want != 0) and torch.all(got == 0)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_as_verl(name):
    for dtype, mdtype in ((torch.float32, torch.float32), (torch.bfloat16, torch.int64)):
        t, m = torch.zeros(0, 5, dtype=dtype), torch.zeros(0, 5, dtype=mdtype)
        z = torch.zeros(0, 5)
        uids = np.array([], dtype=object)
        got = ours.SUPPORTED[name][1](t, m, uids, z, z)
        want = VERL[name](t, m, uids, z, z)
        for g, w in zip(got, want):
            assert g.shape == w.shape == (0, 5) and g.dtype == w.dtype


@pytest.mark.parametrize("name", NAMES)
def test_nan_raises_naming_the_response_and_propagates_as_verl(name):
    rng = np.random.default_rng(11)
    t, m, uids, lp, q, _ = otb_batch(rng, torch.float32)
    fn = ours.SUPPORTED[name][1]
    bad = t.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"\[3\].*NaN"):
        fn(bad, m, uids, lp, q)
    got, got_ret = fn(bad, m, uids, lp, q, nan="propagate")
    want, want_ret = VERL[name](bad, m, uids, lp, q)
    assert torch.isnan(want).any()
    np.testing.assert_array_equal(torch.isnan(got).numpy(), torch.isnan(want).numpy())
    np.testing.assert_array_equal(torch.isnan(got_ret).numpy(), torch.isnan(want_ret).numpy())
    lp_bad = lp.clone()
    lp_bad[5, 2] = float("nan")
    with pytest.raises(ValueError, match=r"old_log_probs\[5, 2\] is NaN"):
        fn(t, m, uids, lp_bad, q)
    got, _ = fn(t, m, uids, lp_bad, q, nan="propagate")
    want, _ = VERL[name](t, m, uids, lp_bad, q)
    np.testing.assert_array_equal(torch.isnan(got).numpy(), torch.isnan(want).numpy())


@pytest.mark.parametrize("name", NAMES)
def test_signature_as_verl(name):
    """verl's parameters, order and defaults (core_algos.py 872-881, 991-1000), plus the
    keyword-only ``nan`` before ``**kwargs``."""
    import inspect

    theirs = inspect.signature(VERL[name]).parameters
    ours_ = inspect.signature(ours.SUPPORTED[name][1]).parameters
    want = [p for p in theirs if p != "kwargs"] + ["nan", "kwargs"]
    assert list(ours_) == want
    for p in theirs:
        assert ours_[p].kind == theirs[p].kind and ours_[p].default == theirs[p].default, p
    assert ours_["nan"].kind is inspect.Parameter.KEYWORD_ONLY and ours_["nan"].default == "raise"


def test_install_routes_verls_dispatch():
    """verl/trainer/ppo/ray_trainer.py compute_advantage (0.9.1, lines 249-279): the
    registry function called with config, index, sum_pi_squared, old_log_probs and
    rollout_is_weights as keywords."""
    rng = np.random.default_rng(5)
    t, m, uids, lp, q, rho = otb_batch(rng, torch.float32)
    try:
        ours.install()
        for name in NAMES:
            fn = ca.get_adv_estimator_fn(name)
            assert fn is ours.SUPPORTED[name][1]
            assert getattr(ca, ours.SUPPORTED[name][0]) is fn
            adv, ret = fn(token_level_rewards=t, response_mask=m, config=None, index=uids, sum_pi_squared=q,
                          old_log_probs=lp, rollout_is_weights=rho)
            assert adv.shape == ret.shape == t.shape
    finally:
        ours.uninstall()
    for name in NAMES:
        assert ca.ADV_ESTIMATOR_REGISTRY[name] is VERL[name]
