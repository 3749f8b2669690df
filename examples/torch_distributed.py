"""Normalize a sharded batch over torch.distributed ranks with the *global* batch std.

The README's torch.distributed snippet, runnable: two gloo ranks on this machine, each holding
whole prompts; the result equals normalizing the whole batch in one process.

    pip install "groupadv[distributed]"
    python examples/torch_distributed.py
"""

from __future__ import annotations

import socket

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

import groupadv as ga
from groupadv.distributed import advantages, all_reduce_moments
from groupadv.moments import BatchMoments

WORLD = 2
REWARDS = np.array([1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 0.5, 0, 1, 0.25], dtype=float)
UIDS = np.repeat(["p0", "p1", "p2", "p3"], 4)


def rank_main(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        # shard by prompt, never by sample: rank 0 holds p0, p1; rank 1 holds p2, p3
        shard = slice(8 * rank, 8 * (rank + 1))
        shard_rewards, shard_uids = REWARDS[shard], UIDS[shard]
        # the README snippet: a collective, every rank calls it
        adv = advantages(shard_rewards, group_ids=shard_uids, scale="batch")  # global batch std
        total = all_reduce_moments(BatchMoments.from_rewards(shard_rewards, group_ids=shard_uids))
        results[rank] = (adv, total.std("batch"))
    finally:
        dist.destroy_process_group()


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(rank_main, args=(port, results), nprocs=WORLD, join=True)
        parts = [results[r][0] for r in range(WORLD)]
        stds = [results[r][1] for r in range(WORLD)]
    whole = ga.advantages(REWARDS, group_ids=UIDS, scale="batch")
    print("global batch std on every rank:", [round(s, 6) for s in stds])
    print("sharded == whole batch:", np.allclose(np.concatenate(parts), whole))


if __name__ == "__main__":
    main()
