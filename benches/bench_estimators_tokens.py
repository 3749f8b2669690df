"""Token-level estimators (issue 12, "Speed"): each one in verl's layout (bs x L float32 token
rewards and values, an int64 response mask of random lengths, 16 responses per string uid),
timed against

* a copy of the bytes it must move: every input it reads (rewards, mask, values, baselines)
  copied into a preallocated buffer of its own (``np.copyto``: reads and writes the input
  bytes once) plus one write of each output it returns (``out.fill(0)``), summed (numpy's
  single-threaded copy, the floor used by benches/bench.py);
* verl's own function (``verl.trainer.ppo.core_algos``, when verl is importable).

Repetitions are interleaved (each round times every estimator and its copy once) and the
medians reported, so that a machine whose load changes during the run biases no estimator.

    python benches/bench_estimators_tokens.py               # verl's size: bs=16384, L=2048
    python benches/bench_estimators_tokens.py --bs 256 --L 256 --repeat 2   # a quick check
    python benches/bench_estimators_tokens.py --only grpo,rloo --no-verl    # some of them

Targets (issue 12): within 1.25x of the copy; GAE and discounted returns >= 20x faster than
verl's torch loop over tokens. Times taken on a shared machine are noise: measure quietly.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

import groupadv as ga
from groupadv.integrations import verl as ours


def once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict, repeat: int) -> dict:
    """Median seconds of each function, timed in rounds that run every function once."""
    for fn in fns.values():
        fn()  # warm (allocations, pools)
    times: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            times[k].append(once(fn))
    return {k: statistics.median(v) for k, v in times.items()}


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
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated substrings of the estimators to run")
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
        "verl grpo": (lambda: ours.compute_grpo_outcome_advantage(t, m, uids), [t, m], 1,
                      verl and (lambda: verl["grpo"](t, m, uids))),
        "verl grpo_vectorized": (lambda: ours.compute_grpo_vectorized_outcome_advantage(t, m, uids), [t, m], 1,
                                 verl and (lambda: verl["grpo_vectorized"](t, m, uids))),
        "verl rloo": (lambda: ours.compute_rloo_outcome_advantage(t, m, uids), [t, m], 1,
                      verl and (lambda: verl["rloo"](t, m, uids))),
        "verl rloo_vectorized": (lambda: ours.compute_rloo_vectorized_outcome_advantage(t, m, uids), [t, m], 1,
                                 verl and (lambda: verl["rloo_vectorized"](t, m, uids))),
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
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        cases = {n: c for n, c in cases.items() if any(k in n for k in keys)}
    print(f"bs={args.bs} L={args.L} float32, int64 mask, {ga.get_num_threads()} threads, backend {ga.backend()}, "
          f"median of {args.repeat} interleaved rounds")
    fns = {}
    for name, (fn, reads, writes, _) in cases.items():
        fns[name] = fn
        fns[name + " copy"] = copy_of(reads, writes, t)
    med = interleaved(fns, args.repeat)
    print(f"{'estimator':36s} {'groupadv s':>11s} {'copy s':>9s} {'x copy':>7s} {'verl s':>9s} {'verl/ours':>9s}")
    for name, (_, _, _, vfn) in cases.items():
        ours_s, copy_s = med[name], med[name + " copy"]
        line = f"{name:36s} {ours_s:11.4f} {copy_s:9.4f} {ours_s / copy_s:7.2f}"
        if vfn:
            verl_s = once(vfn)
            line += f" {verl_s:9.4f} {verl_s / ours_s:9.1f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
