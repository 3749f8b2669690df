"""Ray scale-out: 2 local actors normalize their shards with the global batch std."""

from __future__ import annotations

import numpy as np
import pytest

import groupadv as ga
from groupadv.distributed import ShardWorker, StraddlingGroupsError, ray_advantages

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.remote(ShardWorker)
    finally:
        ray.shutdown()


def _batch():
    rng = np.random.default_rng(0)
    r = rng.normal(0.4, 0.3, 48 * 6)
    ids = np.repeat(np.arange(48), 6)
    perm = rng.permutation(len(r))
    return r[perm], ids[perm]


@pytest.mark.parametrize("scale", ["batch", "batch_residual", "group"])
def test_two_actors_equal_whole_batch(ray_cluster, scale):
    r, ids = _batch()
    parts = [ids % 2 == 0, ids % 2 == 1]  # whole groups per actor, interleaved in the batch
    actors = [ray_cluster.remote(r[p], group_ids=ids[p]) for p in parts]
    got = ray.get(ray_advantages(actors, scale=scale, ddof=1, eps=1e-6))
    whole = ga.grpo(r, group_ids=ids, scale=scale, ddof=1, eps=1e-6)
    for p, adv in zip(parts, got):
        np.testing.assert_allclose(adv, whole[p], rtol=1e-12, atol=1e-14)
    if scale != "group":  # the local std alone would give a different answer
        local = ga.grpo(r[parts[0]], group_ids=ids[parts[0]], scale=scale, ddof=1, eps=1e-6)
        assert np.max(np.abs(local - whole[parts[0]])) > 1e-6


def test_straddling_groups_are_an_error(ray_cluster):
    r, ids = _batch()
    half = len(r) // 2  # split by position: groups straddle the two actors
    actors = [ray_cluster.remote(r[:half], group_ids=ids[:half]), ray_cluster.remote(r[half:], group_ids=ids[half:])]
    with pytest.raises(StraddlingGroupsError, match="straddle actors.*shard by group"):
        ray_advantages(actors, scale="batch")

