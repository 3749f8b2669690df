"""Token-level estimators (issue 12, "Speed"): each one in verl's layout (bs x L float32 token
rewards and values, an int64 response mask of random lengths, 16 responses per string uid),
timed against

* a copy of the bytes it must move: every input it reads (rewards, mask, values, baselines)
  copied into a preallocated buffer of its own (``np.copyto``: reads and writes the input
  bytes once) plus one write of each output it returns (``out.fill(0)``), summed (numpy's
  single-threaded copy, the floor used by benches/bench.py);
* verl's own function (``verl.trainer.ppo.core_algos``, when verl is importable).

    python benches/bench_estimators_tokens.py               # verl's size: bs=16384, L=2048
    python benches/bench_estimators_tokens.py --bs 256 --L 256 --repeat 2   # a quick check

Targets (issue 12): within 1.25x of the copy; GAE and discounted returns >= 20x faster than
verl's torch loop over tokens. Times taken on a shared machine are noise: measure quietly.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

import groupadv as ga
from groupadv.integrations import verl as ours


def best(fn, repeat: int) -> float:
    fn()  # warm (allocations, pools)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def inputs(bs: int, L: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(L // 8, L + 1, bs)
    mask = torch.from_numpy(np.arange(L)[None, :] < lengths[:, None]).to(torch.int64)
    tlr = torch.zeros(bs, L, dtype=torch.float32)
    tlr[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(rng.normal(size=bs)).float()
    values = torch.from_numpy(rng.normal(size=(bs, L)).astype(np.float32))
    uids = np.repeat(np.array([f"uid-{i:08d}" for i in range(bs // 16 + 1)], dtype=object), 16)[:bs]
    uids = uids[rng.permutation(bs)]
    baselines = torch.from_numpy(rng.normal(size=bs).astype(np.float32))
    return tlr, values, mask, uids, baselines


def copy_of(reads, n_writes: int, like):
    """The bandwidth floor of an estimator: copy every input once, write every output once."""
    srcs = [x.numpy() for x in reads]
    dsts = [np.empty_like(x) for x in srcs]
    outs = [np.empty_like(like.numpy()) for _ in range(n_writes)]

    def run():
        for d, s in zip(dsts, srcs):
            np.copyto(d, s)
        for o in outs:
            o.fill(0.0)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bs", type=int, default=16384)
    ap.add_argument("--L", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-verl", action="store_true", help="skip verl's functions (they take minutes at full size)")
    args = ap.parse_args()
    t, v, m, uids, base = inputs(args.bs, args.L)
    cfg = SimpleNamespace(gamma=0.99)
    try:
        from verl.trainer.ppo import core_algos as ca

        verl = None if args.no_verl else dict(ca.ADV_ESTIMATOR_REGISTRY)
    except Exception:
        verl = None
    # name: (groupadv call, inputs read, outputs written, verl call)
    cases = {
        "masked_whiten": (lambda: ga.masked_whiten(t, m), [t, m], 1, None),
        "discounted_returns": (lambda: ga.discounted_returns(t, m, 0.99), [t, m], 1, None),
        "gae (scan only)": (lambda: ga.gae(t, v, m, 0.99, 0.95), [t, v, m], 2, None),
        "verl gae": (lambda: ours.compute_gae_advantage_return(t, v, m, 0.99, 0.95), [t, v, m], 2,
                     verl and (lambda: verl["gae"](t, v, m, 0.99, 0.95))),
        "verl reinforce_plus_plus": (lambda: ours.compute_reinforce_plus_plus_outcome_advantage(t, m, config=cfg),
                                     [t, m], 2,
                                     verl and (lambda: verl["reinforce_plus_plus"](t, m, config=cfg))),
        "verl reinforce_plus_plus_baseline": (
            lambda: ours.compute_reinforce_plus_plus_baseline_outcome_advantage(t, m, uids), [t, m], 1,
            verl and (lambda: verl["reinforce_plus_plus_baseline"](t, m, uids))),
        "verl remax": (lambda: ours.compute_remax_outcome_advantage(t, base, m), [t, m, base], 2,
                       verl and (lambda: verl["remax"](t, base, m))),
    }
    print(f"bs={args.bs} L={args.L} float32, int64 mask, {ga.get_num_threads()} threads, backend {ga.backend()}")
    print(f"{'estimator':36s} {'groupadv s':>11s} {'copy s':>9s} {'x copy':>7s} {'verl s':>9s} {'verl/ours':>9s}")
    for name, (fn, reads, writes, vfn) in cases.items():
        ours_s = best(fn, args.repeat)
        copy_s = best(copy_of(reads, writes, t), args.repeat)
        line = f"{name:36s} {ours_s:11.4f} {copy_s:9.4f} {ours_s / copy_s:7.2f}"
        if vfn:
            verl_s = best(vfn, 1)
            line += f" {verl_s:9.4f} {verl_s / ours_s:9.1f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
