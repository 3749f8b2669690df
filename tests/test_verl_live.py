"""groupadv's verl adapters against verl 0.9.1 itself, live (scripts/install_verl.sh installs it).

Every name in verl's ``core_algos.ADV_ESTIMATOR_REGISTRY`` is a test: the names groupadv has an
adapter for are compared with verl's own function on random batches (ragged uid groups with
singletons and all-equal groups, shuffled string uids, masks of random lengths, float32 /
float64 / bf16); the others are reported as skipped, "not yet in groupadv". Then verl's own
``tests/trainer/ppo/test_core_algos_on_cpu.py`` (from the sdist) runs with install() applied.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import verl_inputs  # noqa: E402
from verl_inputs import batch as _batch  # noqa: E402

ca = verl_inputs.core_algos()

import verl  # noqa: E402

from groupadv.integrations import verl as ours  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERL_TESTS = pathlib.Path(os.environ.get("GROUPADV_VERL_SDIST", ROOT / "build" / f"verl-{verl.__version__}"))
# verl's functions as verl registered them, before any install() in this process.
VERL = dict(ca.ADV_ESTIMATOR_REGISTRY)


# The estimators whose only inputs are (token_level_rewards, response_mask, index): compared by
# the generic tests below. Estimators with more inputs (values, baselines, log-probs, several
# reward components) have their own live tests, with their own input makers in verl_inputs.py.
SCORE_ONLY = sorted(n for n in ("grpo", "grpo_vectorized", "rloo", "rloo_vectorized") if n in ours.SUPPORTED)


@pytest.mark.parametrize("name", sorted(set(VERL) - set(ours.SUPPORTED)))
def test_registry_name_not_yet_in_groupadv(name):
    """verl's registry names groupadv has no adapter for: reported, one skip per name."""
    pytest.skip(f"{name}: not yet in groupadv")


@pytest.mark.parametrize("name", SCORE_ONLY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_registry_estimator_matches_verl(name, dtype):
    fn = ours.SUPPORTED[name][1]
    for seed in range(6):
        rng = np.random.default_rng(seed)
        t, m, uids, equal = _batch(rng, dtype)
        got, got_ret = fn(t.clone(), m, uids)
        want, want_ret = VERL[name](t.clone(), m, uids)
        assert got is got_ret and want is want_ret
        assert got.dtype == want.dtype and got.shape == want.shape
        g = got.double().numpy()
        if dtype == torch.bfloat16:
            # verl runs its statistics in bf16 (8-bit mantissa); ours come from float64 and are
            # rounded once. Compare with verl on the same rewards in float32, then rounded.
            ref, _ = VERL[name](t.float(), m.float() if m.is_floating_point() else m, uids)
            ref = ref.to(got.dtype).double().numpy()
            np.testing.assert_allclose(g[~equal], ref[~equal], rtol=2**-7, atol=2**-7 * 1e-2)
        else:
            w = want.double().numpy()
            # float32 rounding of verl's statistics (float64 inputs too for grpo_vectorized,
            # whose group_mean_std is float32).
            np.testing.assert_allclose(g[~equal], w[~equal], rtol=2e-5, atol=2e-6)
        # The deliberate deviation: an all-equal group gets exactly 0 here.
        assert np.all(g[equal] == 0.0)


@pytest.mark.parametrize("name", SCORE_ONLY)
def test_empty_batch_as_verl(name):
    for dtype, mdtype in ((torch.float32, torch.float32), (torch.bfloat16, torch.int64)):
        t, m = torch.zeros(0, 5, dtype=dtype), torch.zeros(0, 5, dtype=mdtype)
        uids = np.array([], dtype=object)
        got, _ = ours.SUPPORTED[name][1](t, m, uids)
        want, _ = VERL[name](t, m, uids)
        assert got.shape == want.shape == (0, 5) and got.dtype == want.dtype


@pytest.mark.parametrize("name", SCORE_ONLY)
def test_nan_raises_by_default_and_propagates_as_verl(name):
    rng = np.random.default_rng(7)
    t, m, uids, _ = _batch(rng, torch.float32)
    t[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"\[3\].*NaN"):
        ours.SUPPORTED[name][1](t.clone(), m, uids)
    got, _ = ours.SUPPORTED[name][1](t.clone(), m, uids, nan="propagate")
    want, _ = VERL[name](t.clone(), m, uids)
    assert torch.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got.numpy()), np.isnan(want.double().numpy()))


def test_install_routes_verls_dispatch_and_uninstall_restores():
    rng = np.random.default_rng(3)
    t, m, uids, _ = _batch(rng, torch.float32)
    try:
        assert ours.install() == sorted(ours.SUPPORTED)
        assert ours.install() == sorted(ours.SUPPORTED)  # twice: still verl's originals saved
        for name, (attr, fn) in ours.SUPPORTED.items():
            assert ca.get_adv_estimator_fn(name) is fn and getattr(ca, attr) is fn
        # verl/trainer/ppo/ray_trainer.py compute_advantage, 0.9.1: grpo is called by attribute
        # (lines 235-243), every other name through the registry with these keywords (251-279).
        adv, _ = ca.compute_grpo_outcome_advantage(token_level_rewards=t, response_mask=m, index=uids,
                                                   norm_adv_by_std_in_grpo=False)
        assert adv.shape == t.shape
        for name in ("rloo", "rloo_vectorized"):
            adv, ret = ca.get_adv_estimator_fn(name)(token_level_rewards=t, response_mask=m, config=None,
                                                     index=uids, reward_baselines=torch.zeros(len(t)))
            assert adv is ret and adv.shape == t.shape
    finally:
        ours.uninstall()
    for name, (attr, _) in ours.SUPPORTED.items():
        assert ca.ADV_ESTIMATOR_REGISTRY[name] is VERL[name] and getattr(ca, attr) is VERL[name]


def test_supported_names_are_verl_registry_names():
    """Keeps SUPPORTED honest: every name it lists is one of verl's (else it would be untested)."""
    assert set(ours.SUPPORTED) <= set(VERL)


def _verl_test_file() -> pathlib.Path:
    path = VERL_TESTS / "tests" / "trainer" / "ppo" / "test_core_algos_on_cpu.py"
    if not path.is_file():
        pytest.skip(f"verl's sdist tests not found at {path}; run scripts/install_verl.sh")
    return path


def _run_verl_tests() -> subprocess.CompletedProcess:
    """verl's own test file in a fresh interpreter (its registry tests clear verl's registry),
    with install() applied before the file imports core_algos' functions by name."""
    code = (
        "import sys, pytest\n"
        "from groupadv.integrations import verl as ours\n"
        "ours.install()\n"
        "sys.exit(pytest.main([sys.argv[1], '-q', '-p', 'no:cacheprovider', '-rA']))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code, str(_verl_test_file())], capture_output=True, text=True,
                          env=env, cwd=str(VERL_TESTS), timeout=300)


def test_verls_own_core_algos_tests_with_install_applied():
    """All of verl's test_core_algos_on_cpu.py passes with groupadv installed for every name
    (its loop-vs-vectorized asserts then compare groupadv with itself)."""
    res = _run_verl_tests()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout


def _verl_test_module():
    """verl's test module, for its input helpers (its own tests run in the subprocess above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("verl_core_algos_tests", _verl_test_file())
    vt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vt)
    return vt


def _verl_equivalence_inputs(batch_size, seq_len, num_groups, seed):
    """The inputs of verl's test_{grpo,rloo}_and_vectorized_equivalence, seeded as verl seeds them."""
    import random

    vt = _verl_test_module()
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    index = vt._make_group_index(batch_size, num_groups)
    response_mask = vt._rand_mask(batch_size, seq_len)
    return torch.randn(batch_size, seq_len, dtype=torch.float32) * response_mask, response_mask, index


_VERL_EQUIVALENCE_CASES = [(64, 128, 5, 0), (128, 256, 8, 1), (512, 512, 10, 2)]


def test_verls_grpo_equivalence_asserts_hold_for_groupadv_against_verls_vectorized_form():
    """verl's GRPO asserts (torch.allclose rtol=1e-5, atol=1e-6) with groupadv as the loop
    version against verl's own grpo_vectorized, on verl's inputs and its low-variance case:
    they hold as verl wrote them."""
    for case in _VERL_EQUIVALENCE_CASES:
        tlr, mask, index = _verl_equivalence_inputs(*case)
        got, _ = ours.compute_grpo_outcome_advantage(tlr, mask, index)
        want, _ = VERL["grpo_vectorized"](tlr, mask, index)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), case
    tlr = torch.tensor([[1.0], [1.00001], [2.0], [2.00001]], dtype=torch.float32)
    index = np.array(["prompt-a", "prompt-a", "prompt-b", "prompt-b"], dtype=object)
    got, _ = ours.compute_grpo_outcome_advantage(tlr, torch.ones_like(tlr), index)
    want, _ = VERL["grpo_vectorized"](tlr, torch.ones_like(tlr), index)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_verls_rloo_equivalence_inputs_hold_to_float32_rounding_of_the_scores():
    """verl's test_rloo_and_vectorized_equivalence, groupadv's rloo against verl's
    rloo_vectorized on verl's inputs: equal to float32 rounding of the *scores*, not to verl's
    atol=1e-6. verl sums 128-512 N(0,1) token rewards in float32 (|score| up to ~50, one ulp
    ~4e-6) and both its forms share that rounded sum; groupadv sums in float64. RLOO's
    ``s*n/(n-1) - mean*n/(n-1)`` has no std division to shrink that difference (GRPO's has), so
    it shows at a few ulps of |score| (7.6e-6 for verl's 512x512 case), above verl's atol."""
    for case in _VERL_EQUIVALENCE_CASES:
        token_level_rewards, response_mask, index = _verl_equivalence_inputs(*case)
        got, _ = ours.compute_rloo_outcome_advantage(token_level_rewards, response_mask, index)
        want, _ = VERL["rloo_vectorized"](token_level_rewards, response_mask, index)
        loop, _ = VERL["rloo"](token_level_rewards, response_mask, index)
        ulp = float(token_level_rewards.sum(-1).abs().max()) * 2.0**-23
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=4 * ulp)
        np.testing.assert_allclose(got.numpy(), loop.numpy(), rtol=1e-5, atol=4 * ulp)
