"""groupadv's token-level verl adapters (gae, reinforce_plus_plus, reinforce_plus_plus_baseline,
remax) against verl 0.9.1 itself, live, on random batches: masks with trailing padding, leading
padding and observation spans inside the response (multi-turn), int64 and float masks,
float32 / float64 / bf16, ragged uid groups with shuffled string uids; dtype included."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import verl_inputs  # noqa: E402
from verl_inputs import batch as _group_batch  # noqa: E402

ca = verl_inputs.core_algos()

from groupadv.integrations import verl as ours  # noqa: E402

VERL = dict(ca.ADV_ESTIMATOR_REGISTRY)
TOKEN_LEVEL = ("gae", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "remax")


def token_batch(rng, dtype, bs=23, L=17, layout="trailing", float_mask=False):
    """Token rewards (a score at the last valid token plus small per-token terms, as a KL
    penalty gives), critic values and a response mask of random lengths."""
    lengths = rng.integers(1, L + 1, bs)
    pos = np.arange(L)[None, :]
    if layout == "trailing":
        mask = pos < lengths[:, None]
    elif layout == "leading":
        mask = pos >= (L - lengths)[:, None]
    else:  # observation spans (mask 0) inside each response, as multi-turn rollouts have
        mask = (pos < lengths[:, None]) & ~((pos % 5 == 2) & (pos < lengths[:, None] - 1))
        mask[:, 0] = True
    r = rng.normal(scale=0.05, size=(bs, L)) * mask
    last = np.where(mask.any(1), L - 1 - np.argmax(mask[:, ::-1], axis=1), 0)
    r[np.arange(bs), last] += rng.normal(size=bs)
    v = rng.normal(size=(bs, L))
    t = torch.from_numpy(r).to(dtype)
    vals = torch.from_numpy(v).to(dtype)
    m = torch.from_numpy(mask).to(dtype if float_mask else torch.int64)
    return t, vals, m


def _close(got, want, dtype, rtol=None, atol=None):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype)
    if dtype == torch.float64:
        rtol, atol = rtol or 1e-7, atol or 1e-9
    else:  # float32 rounding of verl's float32 scans and statistics
        rtol, atol = rtol or 2e-5, atol or 2e-5
    np.testing.assert_allclose(got.double().numpy(), want.double().numpy(), rtol=rtol, atol=atol)


def _bf16_reference(fn, *args, **kw):
    """verl on the bf16 inputs widened to float32, rounded to bf16 at the end: the reference
    for groupadv's bf16 results (verl's own bf16 scans round at every token)."""
    wide = [a.float() if torch.is_tensor(a) and a.dtype == torch.bfloat16 else a for a in args]
    return tuple(x.to(torch.bfloat16) for x in fn(*wide, **kw))


LAYOUTS = ["trailing", "leading", "observations"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0)])
def test_gae_matches_verl(layout, dtype, gamma, lam):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        t, v, m = token_batch(rng, dtype, layout=layout, float_mask=seed == 1 and dtype != torch.bfloat16)
        adv, ret = ours.compute_gae_advantage_return(t, v, m, gamma, lam)
        want_adv, want_ret = VERL["gae"](t, v, m, gamma, lam)
        assert adv.dtype == want_adv.dtype and ret.dtype == want_ret.dtype
        if dtype == torch.bfloat16:
            want_adv, want_ret = _bf16_reference(VERL["gae"], t, v, m, gamma, lam)
            _close(adv, want_adv, dtype, rtol=2**-7, atol=2**-6)
            _close(ret, want_ret, dtype, rtol=2**-7, atol=2**-6)
        else:
            _close(adv, want_adv, dtype)
            _close(ret, want_ret, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_plus_plus_matches_verl(layout, dtype, gamma):
    cfg = SimpleNamespace(gamma=gamma)
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        t, _, m = token_batch(rng, dtype, layout=layout, float_mask=seed == 2 and dtype != torch.bfloat16)
        adv, ret = ours.compute_reinforce_plus_plus_outcome_advantage(t, m, config=cfg)
        want_adv, want_ret = VERL["reinforce_plus_plus"](t, m, config=cfg)
        assert adv.dtype == want_adv.dtype and ret.dtype == want_ret.dtype
        if dtype == torch.bfloat16:
            want_adv, want_ret = _bf16_reference(VERL["reinforce_plus_plus"], t, m, config=cfg)
            _close(adv, want_adv, dtype, rtol=2**-7, atol=2**-6)
            _close(ret, want_ret, dtype, rtol=2**-7, atol=2**-6)
        else:
            _close(adv, want_adv, dtype)
            _close(ret, want_ret, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reinforce_plus_plus_baseline_matches_verl(dtype):
    for seed in range(6):
        rng = np.random.default_rng(seed)
        t, m, uids, _ = _group_batch(rng, dtype)
        got, got_ret = ours.compute_reinforce_plus_plus_baseline_outcome_advantage(t.clone(), m, uids)
        want, want_ret = VERL["reinforce_plus_plus_baseline"](t.clone(), m, uids)
        assert got is got_ret and want is want_ret
        assert got.dtype == want.dtype
        if dtype == torch.bfloat16:
            ref, _ = VERL["reinforce_plus_plus_baseline"](t.float(), m.float() if m.is_floating_point() else m, uids)
            _close(got, ref.to(got.dtype), dtype, rtol=2**-6, atol=2**-6)
        else:
            # all-equal groups centre to exactly 0 here, to float32 noise in verl; after the
            # global whitening both are -mean/std, so they agree to float32 rounding
            _close(got, want, dtype, atol=1e-5 if dtype == torch.float32 else 1e-9)


def test_reinforce_plus_plus_baseline_all_equal_batch_is_exactly_zero():
    t = torch.zeros(6, 4)
    t[:, 2] = 0.1
    m = torch.ones(6, 4, dtype=torch.int64)
    uids = np.array(["a", "b", "a", "b", "a", "b"], dtype=object)
    got, _ = ours.compute_reinforce_plus_plus_baseline_outcome_advantage(t, m, uids)
    assert torch.all(got == 0.0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_remax_matches_verl(layout, dtype):
    for seed in range(3):
        rng = np.random.default_rng(20 + seed)
        t, _, m = token_batch(rng, dtype, layout=layout, float_mask=seed == 1 and dtype != torch.bfloat16)
        base = torch.from_numpy(rng.normal(size=t.shape[0])).to(dtype)
        adv, ret = ours.compute_remax_outcome_advantage(t, base, m)
        want_adv, want_ret = VERL["remax"](t, base, m)
        assert adv.dtype == want_adv.dtype and ret.dtype == want_ret.dtype
        if dtype == torch.bfloat16:
            want_adv, want_ret = _bf16_reference(VERL["remax"], t, base, m)
            _close(adv, want_adv, dtype, rtol=2**-7, atol=2**-6)
        else:
            _close(adv, want_adv, dtype)
            _close(ret, want_ret, dtype)


def _call(name, t, v, m, uids, base, **kw):
    cfg = SimpleNamespace(gamma=0.95)
    if name == "gae":
        return ours.compute_gae_advantage_return(t, v, m, 0.95, 0.9, **kw), VERL["gae"](t, v, m, 0.95, 0.9)
    if name == "reinforce_plus_plus":
        return (ours.compute_reinforce_plus_plus_outcome_advantage(t, m, config=cfg, **kw),
                VERL[name](t, m, config=cfg))
    if name == "reinforce_plus_plus_baseline":
        return ours.SUPPORTED[name][1](t, m, uids, **kw), VERL[name](t, m, uids)
    return ours.compute_remax_outcome_advantage(t, base, m, **kw), VERL["remax"](t, base, m)


@pytest.mark.parametrize("name", TOKEN_LEVEL)
def test_nan_raises_naming_the_sample_and_propagates_as_verl(name):
    rng = np.random.default_rng(4)
    t, v, m = token_batch(rng, torch.float32)
    uids = np.array([f"p{i % 5}" for i in range(t.shape[0])], dtype=object)
    base = torch.zeros(t.shape[0])
    t[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rewards\[3[],].*NaN"):
        _call(name, t, v, m, uids, base)
    (adv, ret), (want_adv, want_ret) = _call(name, t, v, m, uids, base, nan="propagate")
    np.testing.assert_array_equal(np.isnan(adv.numpy()), np.isnan(want_adv.numpy()))
    np.testing.assert_array_equal(np.isnan(ret.numpy()), np.isnan(want_ret.numpy()))
    if name == "gae":
        t[3, 0] = 0.0
        v[5, 2] = float("inf")
        with pytest.raises(ValueError, match=r"values\[5, 2\] \(sample 5\)"):
            _call(name, t, v, m, uids, base)
    if name == "remax":
        t[3, 0] = 0.0
        base[6] = float("nan")
        with pytest.raises(ValueError, match=r"reward_baselines\[6\] \(sample 6\)"):
            _call(name, t, v, m, uids, base)


def test_install_routes_verls_dispatcher_for_the_token_estimators():
    rng = np.random.default_rng(9)
    t, v, m = token_batch(rng, torch.float32)
    uids = np.array([f"p{i % 4}" for i in range(t.shape[0])], dtype=object)
    cfg = SimpleNamespace(gamma=1.0, get=lambda k, d=None: d)
    try:
        ours.install()
        for name in TOKEN_LEVEL:
            attr, fn = ours.SUPPORTED[name]
            assert ca.get_adv_estimator_fn(name) is fn and getattr(ca, attr) is fn
        # verl/trainer/ppo/ray_trainer.py compute_advantage (0.9.1): gae by attribute with
        # keywords (lines 218-226), the others through the registry (249-279).
        adv, ret = ca.compute_gae_advantage_return(token_level_rewards=t, values=v, response_mask=m, gamma=1.0,
                                                   lam=1.0)
        assert adv.shape == t.shape
        for name in ("reinforce_plus_plus", "reinforce_plus_plus_baseline", "remax"):
            adv, ret = ca.get_adv_estimator_fn(name)(token_level_rewards=t, response_mask=m, config=cfg, index=uids,
                                                     reward_baselines=torch.zeros(len(t)))
            assert adv.shape == t.shape
    finally:
        ours.uninstall()
    for name in TOKEN_LEVEL:
        assert ca.ADV_ESTIMATOR_REGISTRY[name] is VERL[name]


def test_verls_own_reinforce_pp_multiturn_tests_with_install_applied():
    """verl's tests/trainer/ppo/test_reinforce_pp_multiturn_on_cpu.py (observation spans in
    reinforce_plus_plus) passes with install() applied; test_core_algos_on_cpu.py (its
    multi-turn GAE test) runs in tests/test_verl_live.py. Their exact asserts (returns of
    exactly 0.0, 1.0, 2.0, 3.0; torch.equal of GAE results whose masked-out values differ)
    hold exactly: masked-out tokens enter only multiplied by 0, and sums of these rewards are
    exact in float64 and float32 alike; the others are pytest.approx / assert_close."""
    import os
    import pathlib
    import subprocess
    import sys

    import verl

    root = pathlib.Path(__file__).resolve().parent.parent
    base = pathlib.Path(os.environ.get("GROUPADV_VERL_SDIST", root / "build" / f"verl-{verl.__version__}"))
    path = base / "tests" / "trainer" / "ppo" / "test_reinforce_pp_multiturn_on_cpu.py"
    if not path.is_file():
        pytest.skip(f"verl's sdist tests not found at {path}; run scripts/install_verl.sh")
    code = (
        "import sys, pytest\n"
        "from groupadv.integrations import verl as ours\n"
        "ours.install()\n"
        "sys.exit(pytest.main([sys.argv[1], '-q', '-p', 'no:cacheprovider', '-rA']))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "python"), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env,
                         cwd=str(base), timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "failed" not in res.stdout
