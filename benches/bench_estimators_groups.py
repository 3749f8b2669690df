"""Speed of the group-level estimators of issue 12 (pass@k, GPG, OPO, GDPO / multi-reward), as
ratios measured in the same run:

* (N, K) multi-reward advantages (GDPO's normalize_then_sum, TRL's sum_then_normalize) at
  N = 1e7, K = 4 float32, groups of 16, against ``np.copyto`` of the N x K buffer
  (target: normalize_then_sum <= 1.5x);
* verl's token layout (bs = 16384, L = 2048 float32, 16 responses per string uid, an int64
  mask of random lengths) for each verl adapter (grpo_passk, opo, gpg, gdpo), against a
  pass that moves the same bytes (``torch.mul(rewards, mask, out=buf)``: read the rewards and
  the mask, write the output; target within 1.25x; gdpo also whitens, so it reads and writes
  the output once more) and against verl's own function.

    python benches/bench_estimators_groups.py            # full sizes (minutes: verl's loops)
    python benches/bench_estimators_groups.py --small    # N = 1e5, bs = 512, L = 256: seconds

Timings are the best of ``--repeat`` runs. Run it on a quiet machine for numbers worth
reporting; ``--small`` only checks that it works.
"""

from __future__ import annotations

import argparse
import time
import uuid

import numpy as np

import groupadv as ga


def best(fn, repeat):
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def multi_reward(n, k, repeat):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (n, k)).astype(np.float32)
    buf = np.empty_like(x)
    out = np.empty(n, dtype=np.float32)
    copy = best(lambda: np.copyto(buf, x), repeat)
    rows = [("copy of the N x K buffer", copy)]
    for agg in ("normalize_then_sum", "sum_then_normalize"):
        t = best(lambda: ga.multi_reward_advantages(x, 16, aggregation=agg, preset="verl", out=out), repeat)
        rows.append((f"multi_reward_advantages {agg}", t))
    print(f"\n(N, K) multi-reward, N={n:.0e}, K={k}, float32, groups of 16")
    for name, t in rows:
        print(f"  {name:45s} {t * 1e3:9.2f} ms   {t / copy:5.2f}x copy")


def verl_layout(bs, length, repeat, with_verl):
    import torch

    from groupadv.integrations import verl as ours

    rng = np.random.default_rng(1)
    names = np.array([str(uuid.UUID(int=int(v))) for v in rng.integers(0, 2**62, bs // 16)], dtype=object)
    uids = np.repeat(names, 16)[rng.permutation(bs)]
    lengths = torch.from_numpy(rng.integers(1, length + 1, bs))
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    tlr = torch.zeros(bs, length)
    tlr[torch.arange(bs), lengths - 1] = torch.from_numpy(rng.integers(0, 2, bs).astype(np.float32))
    buf = torch.empty_like(tlr)
    moved = best(lambda: torch.mul(tlr, mask, out=buf), repeat)
    cfg = {"norm_adv_by_std_in_grpo": True}
    print(f"\nverl layout bs={bs}, L={length}, float32 rewards, int64 mask, string uids (16 per uid)")
    print(f"  {'same bytes: torch.mul(rewards, mask, out=)':45s} {moved * 1e3:9.2f} ms")
    verl = None
    if with_verl:
        try:
            from verl.trainer.ppo import core_algos as ca

            verl = dict(ca.ADV_ESTIMATOR_REGISTRY)
        except Exception as exc:  # verl is optional
            print(f"  (verl not importable: {type(exc).__name__}: {exc})")
    for name in ("grpo_passk", "opo", "gpg", "gdpo"):
        if name not in ours.SUPPORTED:
            continue
        fn = ours.SUPPORTED[name][1]
        t = best(lambda: fn(tlr, mask, uids, config=cfg), repeat)
        line = f"  {name:45s} {t * 1e3:9.2f} ms   {t / moved:5.2f}x same bytes"
        if verl is not None and name in verl:
            tv = best(lambda: verl[name](tlr, mask, uids, config=cfg), 1)
            line += f"   verl {tv * 1e3:9.2f} ms ({tv / t:6.1f}x slower)"
        print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="small sizes: checks that it runs")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-verl", action="store_true", help="skip verl's functions")
    a = ap.parse_args(argv)
    n, bs, length = (10**5, 512, 256) if a.small else (10**7, 16384, 2048)
    print(f"groupadv {ga.__version__}, backend {ga.backend()}, {ga.get_num_threads()} threads")
    multi_reward(n, 4, a.repeat)
    verl_layout(bs, length, a.repeat, not a.no_verl)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
