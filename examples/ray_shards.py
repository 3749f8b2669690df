"""Normalize a sharded batch on Ray actors with the *global* batch std.

Each actor holds whole groups (all samples of a prompt); the driver merges the shards'
batch moments (6 numbers each) and every actor divides by the global std, so the result equals
normalizing the whole batch in one process.

    pip install ray
    python examples/ray_shards.py
"""

from __future__ import annotations

import numpy as np
import ray

import groupadv as ga
from groupadv.distributed import ShardWorker, ray_advantages


def main() -> None:
    rng = np.random.default_rng(0)
    n_prompts, group = 64, 8
    rewards = (rng.random(n_prompts * group) < np.repeat(rng.random(n_prompts), group)).astype(np.float64)
    uids = np.repeat(np.array([f"prompt-{i}" for i in range(n_prompts)]), group)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        Worker = ray.remote(ShardWorker)
        # shard by prompt, never by sample: groups must not straddle actors
        halves = [uids < "prompt-32", uids >= "prompt-32"]
        actors = [Worker.remote(rewards[h], group_ids=uids[h]) for h in halves]
        shard_adv = ray.get(ray_advantages(actors, scale="batch", ddof=1))
    finally:
        ray.shutdown()

    whole = ga.grpo(rewards, group_ids=uids, scale="batch", ddof=1)
    for h, adv in zip(halves, shard_adv):
        np.testing.assert_allclose(adv, whole[h], rtol=1e-12, atol=1e-14)
    print(f"2 actors, {len(rewards)} rewards: shard advantages == whole-batch advantages "
          f"(global batch std {ga.BatchMoments.from_rewards(rewards, group_ids=uids).std('batch', 1):.6f})")


if __name__ == "__main__":
    main()
