"""Speed of the optimal token baseline (verl ``optimal_token_baseline`` /
``tir_optimal_token_baseline``) in verl's layout, as ratios measured in the same run.

    python benches/bench_estimators_otb.py                    # bs=16384, L=2048 float32 (verl's layout)
    python benches/bench_estimators_otb.py --bs 512 --L 256   # small: seconds, a check that it runs

Inputs as verl's trainer passes them (``ray_trainer.py`` ``compute_advantage``): float32
token rewards (the reward at each response's last valid token), an int64 response mask of
random lengths, float32 old_log_probs and sum_pi_squared, optionally float32 rollout IS
weights (``--is``), string uids of 16 responses each (shuffled).

Reported for each estimator:

* ``copy``: the bytes the estimator must move, copied: each input (rewards, mask, log-probs,
  sum_pi_squared[, IS weights]) ``np.copyto`` into a preallocated array of its size, and the
  two outputs (advantages, returns) written once (``fill``). The target is within 1.25x of it.
* ``groupadv``: the verl adapter (``groupadv.integrations.verl``), end to end (string uids
  factorized inside the call, verl's output dtype).
* ``verl``: verl's own function (skipped with ``--no-verl`` or when verl is not importable;
  it loops over the uid groups in Python).

Timings on a shared machine are noise: the lead measures on a quiet one.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from groupadv._bench import time_call


def make_inputs(bs: int, L: int, group: int, with_is: bool, seed: int = 0):
    import torch

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, L + 1, bs)
    mask = torch.from_numpy(np.arange(L)[None, :] < lengths[:, None]).to(torch.int64)
    tlr = torch.zeros(bs, L, dtype=torch.float32)
    tlr[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(rng.random(bs).astype(np.float32))
    pi = torch.from_numpy(rng.uniform(0.05, 1.0, (bs, L)).astype(np.float32))
    lp = pi.log()
    spi2 = pi * pi + 0.5 * (1 - pi) ** 2
    rho = torch.from_numpy(rng.uniform(0.5, 1.5, (bs, L)).astype(np.float32)) if with_is else None
    names = np.array([f"{k:08x}-uid" for k in rng.permutation(bs // group)], dtype=object)
    uids = np.repeat(names, group)[rng.permutation(bs)]
    return tlr, mask, uids, lp, spi2, rho


def copy_baseline(inputs, outputs_like):
    """Read every input and write the two outputs: the bytes an estimator must move
    (``np.copyto`` on the tensors' memory, as benches/bench.py's memory-copy floor: one
    thread, no thread-pool start-up in the timing)."""
    srcs = [x.numpy() for x in inputs if x is not None]
    dsts = [np.empty_like(x) for x in srcs]
    outs = [np.empty_like(outputs_like.numpy()) for _ in range(2)]

    def copy():
        for d, s in zip(dsts, srcs):
            np.copyto(d, s)
        for o in outs:
            o.fill(0.0)

    moved = sum(x.nbytes for x in srcs) + sum(o.nbytes for o in outs)
    return copy, moved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bs", type=int, default=16384)
    ap.add_argument("--L", type=int, default=2048)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--is", dest="with_is", action="store_true", help="pass rollout IS weights")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-verl", action="store_true", help="skip verl's own function")
    args = ap.parse_args(argv)
    if args.bs % args.group:
        ap.error("--bs must be a multiple of --group")

    from groupadv.integrations import verl as ours

    verl = None
    if not args.no_verl:
        try:
            from verl.trainer.ppo import core_algos as verl
        except Exception as exc:  # optional
            print(f"verl not importable ({type(exc).__name__}); its column is skipped", file=sys.stderr)

    tlr, mask, uids, lp, spi2, rho = make_inputs(args.bs, args.L, args.group, args.with_is)
    copy, moved = copy_baseline((tlr, mask, lp, spi2, rho), tlr)
    t_copy = time_call(copy, repeats=args.repeats)
    print(f"bs={args.bs} L={args.L} group={args.group} IS={'yes' if args.with_is else 'no'}: "
          f"{moved / 1e6:.1f} MB moved; copy {t_copy * 1e3:.1f} ms ({moved / t_copy / 1e9:.2f} GB/s)")
    print("| estimator | groupadv ms | groupadv / copy | verl ms | verl / groupadv |")
    print("|---|---:|---:|---:|---:|")
    for name, attr in (("optimal_token_baseline", "compute_optimal_token_baseline_advantage"),
                       ("tir_optimal_token_baseline", "compute_multi_turn_optimal_token_baseline_advantage")):
        fn = ours.SUPPORTED[name][1]

        def run_ours(fn=fn):
            fn(tlr, mask, uids, lp, spi2, rho)

        t_ours = time_call(run_ours, repeats=args.repeats)
        v = "n/a", "n/a"
        if verl is not None:
            vfn = getattr(verl, attr)
            if vfn is fn:  # installed over verl's: take verl's own from before install()
                vfn = ours._originals[name][0]

            def run_verl(vfn=vfn):
                vfn(tlr, mask, uids, lp, spi2, rho)

            t_verl = time_call(run_verl, repeats=1, warmup=0)
            v = f"{t_verl * 1e3:.1f}", f"{t_verl / t_ours:.1f}x"
        print(f"| {name} | {t_ours * 1e3:.1f} | {t_ours / t_copy:.2f}x | {v[0]} | {v[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
