"""The groupadv benchmark: every result as a time, a ratio to a plain memory copy of the same
buffer and a ratio to the best numpy implementation, all measured in the same run.

    python benches/bench.py               # full run (a few minutes; N up to 1e8)
    python benches/bench.py --quick       # N up to 1e6, seconds
    python benches/bench.py --out benches/results   # writes results.md / .json / .png

Competitors: np.copyto into a preallocated array (the memory-bandwidth floor), numpy
(reshape for uniform groups, np.add.reduceat for ragged offsets, np.unique + np.bincount for
labels; statistics in float64), numba (parallel, if installed), torch CPU (if installed), and
groupadv with a fresh output and with out=. Thread counts are whatever each library uses by
default on this machine (groupadv: all CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

import groupadv as ga
from groupadv import _bench as B

EPS = 1e-6


# --- optional competitors ------------------------------------------------------------------


def numba_kernels():
    """GRPO z-score kernels in numba (parallel over groups), or None if numba is missing."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def ragged(x, offsets, out, eps):
        for g in numba.prange(len(offsets) - 1):
            a, b = offsets[g], offsets[g + 1]
            n = b - a
            if n == 0:
                continue
            s = 0.0
            for i in range(a, b):
                s += x[i]
            mean = s / n
            m2 = 0.0
            for i in range(a, b):
                d = x[i] - mean
                m2 += d * d
            k = 1.0 / (np.sqrt(m2 / n) + eps)
            for i in range(a, b):
                out[i] = (x[i] - mean) * k

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def uniform(x, size, out, eps):
        for g in numba.prange(len(x) // size):
            a = g * size
            s = 0.0
            for i in range(a, a + size):
                s += x[i]
            mean = s / size
            m2 = 0.0
            for i in range(a, a + size):
                d = x[i] - mean
                m2 += d * d
            k = 1.0 / (np.sqrt(m2 / size) + eps)
            for i in range(a, a + size):
                out[i] = (x[i] - mean) * k

    return {"uniform": uniform, "ragged": ragged}


def torch_module():
    try:
        import torch
    except ImportError:
        return None
    return torch


# --- one case --------------------------------------------------------------------------------


def measure(w: B.Workload, *, numba_k, torch, repeats: int, with_numpy: bool = True) -> dict:
    x = w.rewards
    out = np.empty_like(x)
    kw = w.kwargs
    reps = repeats if w.n >= 1_000_000 else max(repeats, 30)
    row = {"layout": w.name, "n": w.n, "dtype": str(x.dtype), "group_size": kw.get("group_size")}
    row["memcpy_s"] = B.time_call(B.memcpy_baseline(x), repeats=reps)
    # Correctness first: groupadv against the numpy reference.
    ours = ga.advantages(x, eps=EPS, **kw)
    if with_numpy:
        ref = B.numpy_reference(w, EPS)
        tol = 1e-4 if x.dtype == np.float32 else 1e-9
        assert np.allclose(ours, ref, rtol=tol, atol=tol), f"disagreement on {w.name} n={w.n}"
        row["numpy_s"] = B.time_call(lambda: B.numpy_reference(w, EPS), warmup=0, repeats=max(2, reps // 5))
    row["groupadv_s"] = B.time_call(lambda: ga.advantages(x, eps=EPS, **kw), repeats=reps)
    row["groupadv_out_s"] = B.time_call(lambda: ga.advantages(x, eps=EPS, out=out, **kw), repeats=reps)
    if numba_k is not None and w.name in ("uniform", "ragged"):
        xf = x
        if w.name == "uniform":
            fn = lambda: numba_k["uniform"](xf, kw["group_size"], out, EPS)  # noqa: E731
        else:
            offs = kw["offsets"]
            fn = lambda: numba_k["ragged"](xf, offs, out, EPS)  # noqa: E731
        fn()  # compile
        row["numba_s"] = B.time_call(fn, repeats=reps)
    if torch is not None and w.name == "uniform":
        t = torch.from_numpy(x)
        g = kw["group_size"]

        def torch_view():
            v = t.view(-1, g).double()
            return ((v - v.mean(1, keepdim=True)) / (v.std(1, unbiased=False, keepdim=True) + EPS)).to(t.dtype)

        row["torch_s"] = B.time_call(torch_view, repeats=max(2, reps // 3))
    return row


def overhead_sweep(repeats: int) -> list[dict]:
    """Small-N calls: native vs the numpy backend (and numpy itself), out= given."""
    from groupadv import _backend

    rows = []
    for n in (64, 256, 1024, 8192, 65536, 1 << 20):
        w = B.uniform(n, 16)
        out = np.empty_like(w.rewards)
        reps = max(repeats, 2000 if n <= 8192 else 50)
        row = {"n": n}
        for name in ("native", "numpy"):
            _backend.use(name)
            try:
                row[f"{name}_s"] = B.time_call(
                    lambda: ga.grpo(w.rewards, 16, eps=EPS, out=out), repeats=reps, warmup=20
                )
            finally:
                _backend.use("native")
        row["numpy_ref_s"] = B.time_call(lambda: B.numpy_reference(w, EPS), repeats=max(20, reps // 10))
        rows.append(row)
    return rows


_MEM_SNIPPET = r"""
import sys, numpy as np, groupadv as ga
from groupadv import _bench as B
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
case, n = sys.argv[1], int(sys.argv[2])
w = B.make_workload("ids" if case == "ids" else "uniform", n, 16)
x = w.rewards; out = np.empty_like(x); out.fill(0)
kw = w.kwargs
ga.advantages(x[:4096], **({"group_size": 16} if "group_size" in kw else {"group_ids": kw["group_ids"][:4096]}))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
before = status("VmRSS")
if case in ("out", "ids"): ga.advantages(x, out=out, **kw)
elif case == "fresh": r = ga.advantages(x, **kw)
elif case == "numpy": r = B.numpy_reference(w)
print(status("VmHWM") - before)
"""


def peak_memory(n: int) -> dict:
    """Peak extra resident memory of one call, in bytes (a fresh process per case)."""
    res = {}
    for case in ("out", "fresh", "ids", "numpy"):
        p = subprocess.run([sys.executable, "-c", _MEM_SNIPPET, case, str(n)], capture_output=True, text=True)
        res[case] = int(p.stdout.strip()) if p.returncode == 0 else None
    return res


# --- report ------------------------------------------------------------------------------------


def fmt(s) -> str:
    if s is None or (isinstance(s, float) and np.isnan(s)):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def ratio(a, b) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}"


def markdown(rows, sweep, mem, n_mem, meta) -> str:
    lines = [
        f"Machine: {meta['machine']}; {meta['cpus']} CPUs; numpy {meta['numpy']}; "
        f"groupadv backend {meta['backend']}, {meta['threads']} threads; {meta['date']}.",
        "",
        "| layout | G | n | dtype | memcpy | numpy | numba | torch | groupadv | groupadv out= "
        "| out= / memcpy | numpy / out= | numba / out= |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layout']} | {r.get('group_size') or '-'} | {r['n']:,} | {r['dtype']} | {fmt(r['memcpy_s'])} "
            f"| {fmt(r.get('numpy_s'))} | {fmt(r.get('numba_s'))} | {fmt(r.get('torch_s'))} "
            f"| {fmt(r['groupadv_s'])} | {fmt(r['groupadv_out_s'])} "
            f"| {ratio(r['groupadv_out_s'], r['memcpy_s'])}x | {ratio(r.get('numpy_s'), r['groupadv_out_s'])}x "
            f"| {ratio(r.get('numba_s'), r['groupadv_out_s'])}x |"
        )
    lines += [
        "",
        "Per-call cost at small N (uniform G=16, float32, out= given):",
        "",
        "| n | native | numpy backend | numpy reference | numpy backend / native |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in sweep:
        lines.append(
            f"| {r['n']:,} | {fmt(r['native_s'])} | {fmt(r['numpy_s'])} | {fmt(r['numpy_ref_s'])} "
            f"| {ratio(r['numpy_s'], r['native_s'])}x |"
        )
    if mem:
        mb = lambda v: "-" if v is None else f"{v / 2**20:.1f} MiB"  # noqa: E731
        lines += [
            "",
            f"Peak extra resident memory of one call at n = {n_mem:,} float32 "
            f"(input {n_mem * 4 / 2**20:.0f} MiB; fresh process each):",
            "",
            "| groupadv out= | groupadv fresh output | groupadv int ids, out= | numpy reference |",
            "|---:|---:|---:|---:|",
            f"| {mb(mem['out'])} | {mb(mem['fresh'])} | {mb(mem['ids'])} | {mb(mem['numpy'])} |",
        ]
    return "\n".join(lines) + "\n"


def plot(rows, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sel = [r for r in rows if r["layout"] == "uniform" and r["group_size"] == 16 and r["dtype"] == "float32"]
    if not sel:
        return False
    ns = [r["n"] for r in sel]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in [
        ("memcpy_s", "memcpy (np.copyto)"),
        ("numpy_s", "numpy (reshape)"),
        ("numba_s", "numba parallel"),
        ("torch_s", "torch CPU (view)"),
        ("groupadv_s", "groupadv"),
        ("groupadv_out_s", "groupadv out="),
    ]:
        ys = [r.get(key) for r in sel]
        if all(y is not None for y in ys):
            ax.loglog(ns, [y * 1e3 for y in ys], marker="o", label=label)
    ax.set_xlabel("rewards (float32, groups of 16)")
    ax.set_ylabel("time per call (ms)")
    ax.set_title("GRPO advantages: time per call")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N up to 1e6 only")
    ap.add_argument("--out", default=None, help="write OUT.md, OUT.json and OUT.png")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    numba_k, torch = numba_kernels(), torch_module()
    sizes = [10_000, 1_000_000] if args.quick else [10_000, 1_000_000, 10_000_000, 100_000_000]
    cases = []
    for n in sizes:
        for dtype in (np.float32, np.float64):
            for g in (4, 16, 64):
                if n >= 100_000_000 and (g != 16 or dtype != np.float32):
                    continue
                cases.append(lambda n=n, g=g, d=dtype: B.uniform(n, g, dtype=d))
            if n < 100_000_000 or dtype == np.float32:
                cases.append(lambda n=n, d=dtype: B.ragged(n, 16, dtype=d))
            if n <= 10_000_000 and dtype == np.float32:
                cases.append(lambda n=n: B.ids(n, 16))
    rows = []
    for make in cases:
        w = make()
        t0 = time.perf_counter()
        rows.append(measure(w, numba_k=numba_k, torch=torch, repeats=args.repeats, with_numpy=w.n <= 100_000_000))
        print(f"{w.name:8s} G={w.kwargs.get('group_size', '-')!s:3s} n={w.n:>11,} {w.rewards.dtype}: "
              f"{rows[-1]['groupadv_out_s'] * 1e3:9.3f} ms out=, memcpy {rows[-1]['memcpy_s'] * 1e3:8.3f} ms "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    # String uids at 1e6, end to end (labels resolved inside the call), as verl passes them.
    for shuffle in (False, True):
        w = B.uids(1_000_000, 16, shuffle=shuffle)
        w.name = "uids shuffled" if shuffle else "uids (verl layout)"
        rows.append(measure(w, numba_k=None, torch=None, repeats=args.repeats))
    sweep = overhead_sweep(args.repeats)
    n_mem = 1_000_000 if args.quick else 10_000_000
    mem = peak_memory(n_mem)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "backend": ga.backend(),
        "threads": ga.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    md = markdown(rows, sweep, mem, n_mem, meta)
    print(md)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(md)
        with open(args.out + ".json", "w") as f:
            json.dump({"meta": meta, "rows": rows, "small_n": sweep, "peak_memory": mem}, f, indent=1)
        if plot(rows, args.out + ".png"):
            print(f"wrote {args.out}.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
