"""groupadv.optimal_token_baseline_advantages (src/token_baseline.rs and its numpy / torch
twins): verl 0.9.1's golden outputs (tests/fixtures/peers_otb.npz, made by running verl:
scripts/make_peer_fixtures.py otb), the three implementations against each other, layouts,
dtypes and bad inputs. The live comparison with verl is tests/test_verl_live_otb.py."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import groupadv as ga
from groupadv import _backend, _torch

torch = pytest.importorskip("torch")

FIX = np.load(pathlib.Path(__file__).parent / "fixtures" / "peers_otb.npz")
NAMES = {"optimal_token_baseline": "position", "tir_optimal_token_baseline": "turn"}


@pytest.mark.parametrize("name", sorted(NAMES))
@pytest.mark.parametrize("mname", ["mask", "holes"])
@pytest.mark.parametrize("with_is", [False, True])
@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_verl_golden_outputs(name, mname, with_is, dt):
    key = f"verl_{name}_{mname}_is{int(with_is)}_{dt}"
    want, want_ret = FIX[key + "_adv"], FIX[key + "_ret"]
    args = [FIX[f"otb_{k}"].astype(dt) for k in ("tlr", mname, "lp", "spi2")]
    rho = FIX["otb_rho"].astype(dt) if with_is else None
    adv, ret = ga.optimal_token_baseline_advantages(*args, group_ids=FIX["otb_uids"], rollout_is_weights=rho,
                                                    align=NAMES[name])
    assert adv.dtype == ret.dtype == np.dtype(dt)
    tol = 1e-12 if dt == "float64" else 3e-6
    scale = 1.0 + np.abs(want_ret).max()
    np.testing.assert_allclose(ret, want_ret, rtol=0, atol=tol * scale)
    # Exactly 0 where every weighted return of a step is equal (p1: two identical responses;
    # a step where one response alone carries weight); verl leaves G eps / sum W there (in
    # float32 often rounded away).
    p1 = FIX["otb_uids"] == "p1"
    assert np.all(adv[p1] == 0.0) and np.all(np.abs(want[p1]) < 1e-6)
    if dt == "float64":
        assert np.any(want[p1] != 0.0)
    deviation = (adv == 0.0) & (np.abs(want) < 1e-6 * scale)
    close = np.abs(adv.astype(np.float64) - want) <= tol * scale
    assert np.all(close | deviation), np.abs(adv - want).max()


def _inputs(seed, holes, bs=40, L=13):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, 10)
    uids = np.repeat(np.array([f"uid-{k}" for k in rng.permutation(10)], dtype=object), sizes)
    uids = uids[rng.permutation(len(uids))]
    bs = len(uids)
    lengths = rng.integers(0, L + 1, bs)
    m = np.arange(L)[None, :] < lengths[:, None]
    if holes:
        m &= rng.random((bs, L)) >= 0.25
    r = rng.normal(size=(bs, L)) * m
    pi = rng.uniform(0.02, 1.0, (bs, L))
    q = pi**2 + rng.random((bs, L)) * (1 - pi) ** 2
    rho = rng.uniform(0.3, 2.0, (bs, L))
    return r, m, uids, np.log(pi), q, rho


@pytest.mark.parametrize("align", ["position", "turn"])
def test_native_numpy_and_torch_twins_agree(align):
    for seed in range(4):
        r, m, uids, lp, q, rho = _inputs(seed, holes=seed % 2 == 0)
        got = {}
        before = _backend.name
        try:
            for b in ("native", "numpy"):
                try:
                    _backend.use(b)
                except ImportError:
                    continue
                got[b] = ga.optimal_token_baseline_advantages(r, m, lp, q, group_ids=uids, rollout_is_weights=rho,
                                                              align=align)
        finally:
            _backend.use(before)
        _torch.FORCE_DEVICE_PATH = True
        try:
            tt = ga.optimal_token_baseline_advantages(*(torch.from_numpy(x) for x in (r, m, lp, q)), group_ids=uids,
                                                      rollout_is_weights=torch.from_numpy(rho), align=align)
        finally:
            _torch.FORCE_DEVICE_PATH = False
        got["torch"] = tuple(x.numpy() for x in tt)
        ref = got["numpy"]
        for b, (a, ret) in got.items():
            np.testing.assert_allclose(a, ref[0], rtol=1e-12, atol=1e-12, err_msg=b)
            np.testing.assert_array_equal(ret, ref[1], err_msg=b)


def test_layouts_dtypes_and_bad_inputs():
    r, m, uids, lp, q, rho = _inputs(1, holes=False)
    codes = ga.make_groups(group_ids=uids).codes()
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    a_ids, _ = ga.optimal_token_baseline_advantages(r, m, lp, q, group_ids=uids)
    # the same rows sorted into contiguous groups, given as offsets
    offs = np.concatenate(([0], np.cumsum(sizes)))
    a_off, _ = ga.optimal_token_baseline_advantages(r[order], m[order], lp[order], q[order], offsets=offs)
    np.testing.assert_array_equal(a_off, a_ids[order])
    a32, ret32 = ga.optimal_token_baseline_advantages(r.astype(np.float32), m, lp.astype(np.float32),
                                                      q.astype(np.float32), group_ids=uids)
    assert a32.dtype == ret32.dtype == np.float32
    first = np.argwhere(m)[0]
    with pytest.raises(ValueError, match=rf"response_mask\[{first[0]}, {first[1]}\] is 0.5; .*only 0 and 1"):
        ga.optimal_token_baseline_advantages(r, m * 0.5, lp, q, group_ids=uids)
    with pytest.raises(ValueError, match=rf"response_mask\[{first[0]}, {first[1]}\] is 2; "):
        ga.optimal_token_baseline_advantages(r, m * 2, lp, q, group_ids=uids, nan="propagate")
    for mdt in (np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64):
        a, _ = ga.optimal_token_baseline_advantages(r, m.astype(mdt), lp, q, group_ids=uids)
        np.testing.assert_array_equal(a, a_ids, err_msg=str(mdt))
    with pytest.raises(ValueError, match="shape"):
        ga.optimal_token_baseline_advantages(r, m, lp[:, :-1], q, group_ids=uids)
    with pytest.raises(ValueError, match="align"):
        ga.optimal_token_baseline_advantages(r, m, lp, q, group_ids=uids, align="rank")
    with pytest.raises(ValueError, match="nan"):
        ga.optimal_token_baseline_advantages(r, m, lp, q, group_ids=uids, nan="omit")
    bad = q.copy()
    bad[2, 4] = np.inf
    with pytest.raises(ValueError, match=r"sum_pi_squared\[2, 4\] is inf"):
        ga.optimal_token_baseline_advantages(r, m, lp, bad, group_ids=uids)
    # -inf log-probs (probability 0) are allowed: w = 1 + sum_pi_squared
    lpi = lp.copy()
    lpi[0, 0] = -np.inf
    assert np.isfinite(ga.optimal_token_baseline_advantages(r, m, lpi, q, group_ids=uids)[0]).all()


def _errors_of(fn):
    """The message of each backend's error for the same call (native, numpy, torch twin)."""
    msgs = {}
    before = _backend.name
    try:
        for b in ("native", "numpy"):
            try:
                _backend.use(b)
            except ImportError:
                continue
            with pytest.raises(ValueError) as e:
                fn(False)
            msgs[b] = str(e.value)
    finally:
        _backend.use(before)
    _torch.FORCE_DEVICE_PATH = True
    try:
        with pytest.raises(ValueError) as e:
            fn(True)
        msgs["torch"] = str(e.value)
    finally:
        _torch.FORCE_DEVICE_PATH = False
    return msgs


@pytest.mark.parametrize("fault", ["reward", "log_prob", "mask", "mask_before_reward"])
def test_every_backend_names_the_same_fault(fault):
    r, m, uids, lp, q, _ = _inputs(3, holes=False)
    m = m.astype(np.float64)
    row = int(np.flatnonzero(m.sum(1) > 0)[2])
    if fault == "reward":
        r[row, 0] = np.nan
    elif fault == "log_prob":
        lp[row, 1] = np.inf
    elif fault == "mask":
        m[row, 0] = 0.25
    else:  # a later row's bad mask is not reported before an earlier row's NaN reward
        r[row, 0] = np.nan
        m[row + 1, 0] = 3.0

    def call(as_tensor):
        args = [torch.from_numpy(x) if as_tensor else x for x in (r, m, lp, q)]
        return ga.optimal_token_baseline_advantages(*args, group_ids=uids)

    msgs = _errors_of(call)
    assert len(set(msgs.values())) == 1, msgs
    assert f"[{row}" in msgs["torch"]


@pytest.mark.parametrize("align", ["position", "turn"])
def test_propagate_gives_the_same_nans_on_every_backend(align):
    r, m, uids, lp, q, _ = _inputs(5, holes=True)
    r[4, 0] = np.nan  # a masked or valid token: NaN spreads as verl's arithmetic does
    lp[7, 3] = np.nan
    got = {}
    before = _backend.name
    try:
        for b in ("native", "numpy"):
            try:
                _backend.use(b)
            except ImportError:
                continue
            got[b] = ga.optimal_token_baseline_advantages(r, m, lp, q, group_ids=uids, align=align, nan="propagate")
    finally:
        _backend.use(before)
    _torch.FORCE_DEVICE_PATH = True
    try:
        t = ga.optimal_token_baseline_advantages(*(torch.from_numpy(x) for x in (r, m, lp, q)), group_ids=uids,
                                                 align=align, nan="propagate")
        got["torch"] = tuple(x.numpy() for x in t)
    finally:
        _torch.FORCE_DEVICE_PATH = False
    ref = got["numpy"]
    assert np.isnan(ref[0]).any()
    for b, (a, ret) in got.items():
        np.testing.assert_allclose(a, ref[0], rtol=1e-12, atol=1e-12, err_msg=b)  # NaNs in the same places
        np.testing.assert_array_equal(ret, ref[1], err_msg=b)
