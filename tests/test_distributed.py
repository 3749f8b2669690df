"""Scale-out: batch moments over torch.distributed ranks (2 gloo processes on 127.0.0.1), the
straddling-groups check, and the plain-Python shard worker."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

import groupadv as ga
from groupadv import distributed
from groupadv.distributed import ShardWorker, StraddlingGroupsError, find_straddling_groups
from groupadv.moments import BatchMoments, Moments, merge_all

WORLD = 2


def _batch():
    rng = np.random.default_rng(0)
    r = rng.normal(0.4, 0.3, 40 * 6)
    r[:6] = 1.0
    ids = np.repeat(np.arange(40), 6)
    perm = rng.permutation(len(r))
    lengths = rng.integers(1, 500, len(r))
    return r[perm], ids[perm], lengths


# ----------------------------------------------------------------------------- no torch needed


def test_find_straddling_groups():
    assert find_straddling_groups([[1, 2, 2], [3], np.array([4, 5])]) == {}
    assert find_straddling_groups([["a", "b"], ["b", "c"], ["c"]]) == {"b": [0, 1], "c": [1, 2]}
    assert find_straddling_groups([np.array([1, 2]), [2]]) == {2: [0, 1]}


def test_shard_workers_in_process(backend_name):
    r, ids, _ = _batch()
    parts = [ids % 3 == k for k in range(3)]
    workers = [ShardWorker(r[p], group_ids=ids[p]) for p in parts]
    assert find_straddling_groups([w.labels() for w in workers]) == {}
    total = merge_all(w.moments() for w in workers)
    whole = BatchMoments.from_rewards(r, group_ids=ids)
    assert abs(total.std("batch", 1) - whole.std("batch", 1)) < 1e-12 * whole.std("batch", 1)
    want = ga.grpo(r, group_ids=ids, scale="batch", ddof=1)
    for p, w in zip(parts, workers):
        got = w.advantages(batch_std=total.std("batch", 1), scale="batch", ddof=1)
        np.testing.assert_allclose(got, want[p], rtol=1e-12, atol=1e-14)
    positional = [ShardWorker(r[:100], group_ids=ids[:100]), ShardWorker(r[100:], group_ids=ids[100:])]
    bad = find_straddling_groups([w.labels() for w in positional])
    assert bad
    with pytest.raises(StraddlingGroupsError, match="straddle shards"):
        distributed._raise_straddling(bad)


def test_all_reduce_needs_an_initialized_group():
    torch = pytest.importorskip("torch")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        pytest.skip("a process group is already initialized")
    with pytest.raises(RuntimeError, match="not initialized"):
        distributed.all_reduce_moments(Moments.from_values([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="not initialized"):
        distributed.check_groups_disjoint([1, 2])


# ----------------------------------------------------------------------------- 2 gloo processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, outdir: str, backend: str) -> None:
    import torch.distributed as dist

    from groupadv import _backend

    _backend.use(backend)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        r, ids, lengths = _batch()
        mine = ids % world == rank  # whole groups per rank
        sr, si, sl = r[mine], ids[mine], lengths[mine]
        out = {}
        out["total"] = distributed.all_reduce_moments(BatchMoments.from_rewards(sr, group_ids=si)).to_array()
        out["plain"] = distributed.all_reduce_moments(Moments.from_values(sr)).to_array()
        out["tok"] = distributed.all_reduce_moments(BatchMoments.from_rewards(sr, group_ids=si, weights=sl)).to_array()
        for scale in ("batch", "batch_residual", "group"):
            out[f"adv_{scale}"] = distributed.advantages(sr, group_ids=si, scale=scale, ddof=1, eps=1e-6)
        out["adv_tok"] = distributed.advantages(sr, group_ids=si, scale="batch", weights=sl)
        # a rank without rewards still takes part in the collectives
        er, ei = (r, ids) if rank == 0 else (r[:0], ids[:0])
        out["adv_empty"] = distributed.advantages(er, group_ids=ei, scale="batch")
        # split by position: groups straddle the ranks, every rank raises
        half = len(r) // world
        sl_ = slice(rank * half, (rank + 1) * half)
        try:
            distributed.advantages(r[sl_], group_ids=ids[sl_], scale="batch")
            out["straddle"] = np.array("")
        except StraddlingGroupsError as e:
            out["straddle"] = np.array(str(e))
        np.savez(os.path.join(outdir, f"rank{rank}.npz"), **out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks(tmp_path, backend_name):
    pytest.importorskip("torch")
    import torch.distributed
    import torch.multiprocessing as mp

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp_path), backend_name), nprocs=WORLD, join=True)
    res = [dict(np.load(tmp_path / f"rank{k}.npz")) for k in range(WORLD)]
    r, ids, lengths = _batch()
    whole = BatchMoments.from_rewards(r, group_ids=ids)
    tok = BatchMoments.from_rewards(r, group_ids=ids, weights=lengths)
    for k, out in enumerate(res):
        mine = ids % WORLD == k
        total = BatchMoments.from_array(out["total"])
        assert total.count == len(r)
        for scale in ("batch", "batch_residual"):
            for ddof in (0, 1):
                assert abs(total.std(scale, ddof) - whole.std(scale, ddof)) <= 1e-12 * whole.std(scale, ddof)
        np.testing.assert_allclose(out["plain"], Moments.from_values(r).to_array(), rtol=1e-12)
        t = BatchMoments.from_array(out["tok"], weighted=True)
        assert abs(t.std("batch") - tok.std("batch")) <= 1e-12 * tok.std("batch")
        for scale in ("batch", "batch_residual", "group"):
            want = ga.grpo(r, group_ids=ids, scale=scale, ddof=1, eps=1e-6)[mine]
            np.testing.assert_allclose(out[f"adv_{scale}"], want, rtol=1e-12, atol=1e-14)
        want_tok = ga.grpo(r, group_ids=ids, scale="batch", batch_std=tok.std("batch"))[mine]
        np.testing.assert_allclose(out["adv_tok"], want_tok, rtol=1e-12, atol=1e-14)
        assert "straddle ranks" in str(out["straddle"])
    np.testing.assert_allclose(res[0]["adv_empty"], ga.grpo(r, group_ids=ids, scale="batch"), rtol=1e-12, atol=1e-14)
    assert res[1]["adv_empty"].shape == (0,)
