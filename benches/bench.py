"""The groupadv benchmark: every row of issue 14's targets (and issue 10's numpy-backend rows),
each against a plain memory copy of the same bytes, the strongest numpy and the strongest numba
we know, measured in the same run.

    python benches/bench.py                         # full run: N = 1e7, 3 runs (several minutes)
    python benches/bench.py --quick                 # N = 1e6, 1 run (about a minute)
    python benches/bench.py --out benches/results   # where results.md / .json / .png go (default)

Competitors: benches/peer_kernels.py, a byte-for-byte copy of the team's
shared/bench/peer_kernels.py (numba parallel=True, fastmath=True on the workqueue threading
layer; tuned numpy: einsum sums, reduceat, a dict factorisation of object labels), and
np.copyto into a preallocated array (the memory floor). numba and matplotlib come with the
`bench` extra (`pip install -e ".[bench]"`); without numba the numba column is empty, without
matplotlib no png is written.

Timing the way users call: the implementations of a case are interleaved round by round; each
round gives every implementation one cold call after ~20 ms of sleep and then back-to-back warm
calls; both are reported (median, p25, p75). With --runs K each case is measured K times and the
ratios are reported as ranges over the runs. The cases, the timer and the report are
groupadv._bench (shared with `groupadv bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
import peer_kernels  # noqa: E402  (sets NUMBA_THREADING_LAYER=workqueue before numba is imported)

import groupadv as ga  # noqa: E402
from groupadv import _bench as B  # noqa: E402

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
    """Peak extra resident memory of one call, in bytes (a fresh process per case; Linux only)."""
    res: dict = {}
    if not os.path.exists("/proc/self/clear_refs"):
        return res
    for case in ("out", "fresh", "ids", "numpy"):
        p = subprocess.run([sys.executable, "-c", _MEM_SNIPPET, case, str(n)], capture_output=True, text=True)
        res[case] = int(p.stdout.strip()) if p.returncode == 0 and p.stdout.strip() else None
    return res


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "groupadv": ga.__version__, "backend": ga.backend(), "threads": ga.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown(rows, mem, n_mem, meta, args) -> str:
    lines = [
        f"Machine: {meta['cpu']}; {meta['cpus']} CPUs; Python {meta['python']}; numpy {meta['numpy']}; "
        f"groupadv {meta['groupadv']} (backend {meta['backend']}, {meta['threads']} threads); {meta['date']}.",
        f"{meta['numba']}.",
        f"float32 rewards, eps={B.EPS}; {args.runs} run(s) of {args.rounds} interleaved rounds per case; "
        f"cold: one call after {args.gap * 1e3:.0f} ms idle per round; warm: up to {args.warm} back-to-back calls "
        "per round. Times: medians of the last run; ratios: range over the runs. \"numpy\" is the fastest numpy "
        "implementation of the case (the peer's tuned numpy; in the numpy-backend rows also the "
        "straightforward reference of groupadv._bench).",
        "",
        "## Targets",
        "",
        B.targets_table(rows),
        "",
        "## Ratios",
        "",
        B.markdown_table(rows),
        "",
        "## Every implementation (last run)",
        "",
        B.detail_table(rows),
    ]
    if mem:
        mb = lambda v: "-" if v is None else f"{v / 2**20:.1f} MiB"  # noqa: E731
        lines += [
            "",
            f"## Peak extra resident memory of one call at n = {n_mem:,} float32 "
            f"(input {n_mem * 4 / 2**20:.0f} MiB; fresh process each)",
            "",
            "| groupadv out= | groupadv fresh output | groupadv shuffled int ids, out= | numpy reference |",
            "|---:|---:|---:|---:|",
            f"| {mb(mem.get('out'))} | {mb(mem.get('fresh'))} | {mb(mem.get('ids'))} | {mb(mem.get('numpy'))} |",
        ]
    return "\n".join(lines) + "\n"


def plot(rows, path) -> bool:
    """Speedups (competitor time / groupadv time, warm medians of the last run) per case."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, series = [], {"memcpy / groupadv": [], "numpy / groupadv": [], "numba / groupadv": []}
    for r in rows:
        t = B.medians(r["runs"][-1], "warm")
        g = t.get("groupadv")
        if not g:
            continue
        labels.append(f"{r['key']} ({r['n']:.0e})".replace("e+0", "e"))
        best_np = min([v for k, v in t.items() if k.startswith("numpy")], default=float("nan"))
        series["memcpy / groupadv"].append(t.get("memcpy", float("nan")) / g)
        series["numpy / groupadv"].append(best_np / g)
        series["numba / groupadv"].append(t.get("numba", float("nan")) / g)
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(labels) + 1.5))
    y = np.arange(len(labels))
    for i, (name, vals) in enumerate(series.items()):
        ax.barh(y + (i - 1) * 0.27, vals, height=0.27, label=name)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel("time of the other / time of groupadv (warm medians; > 1: groupadv is faster)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 1e6 and one run (a check that it runs)")
    ap.add_argument("--out", default=str(HERE / "results"), help="write OUT.md, OUT.json, OUT.png (default %(default)s)")
    ap.add_argument("--n", type=float, default=None, help="rewards in the large rows (default 1e7; --quick 1e6)")
    ap.add_argument("--runs", type=int, default=None, help="measurements of each case (default 3; --quick 1)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per run (default 7; --quick 3)")
    ap.add_argument("--warm", type=int, default=5, help="back-to-back warm calls per round (at most)")
    ap.add_argument("--gap", type=float, default=0.02, help="idle seconds before each cold call")
    ap.add_argument("--rows", default=",".join(B.ROWS), help="comma-separated, from %(default)s")
    args = ap.parse_args(argv)
    n = int(args.n or (1e6 if args.quick else 1e7))
    args.runs = args.runs or (1 if args.quick else 3)
    args.rounds = args.rounds or (3 if args.quick else 7)

    B.use_peer(peer_kernels)
    numba_k = B.numba_kernels()
    case_list = B.cases(n, args.rows.split(","), numba_k=numba_k)
    t0 = time.perf_counter()
    rows = B.run(case_list, rounds=args.rounds, warm=args.warm, gap=args.gap, runs=args.runs,
                 progress=lambda m: print(f"  {time.perf_counter() - t0:6.1f} s  {m}", file=sys.stderr))
    n_mem = min(n, 10_000_000)
    mem = peak_memory(n_mem)
    meta = dict(machine(), numba=B.numba_info(numba_k), n=n, runs=args.runs, rounds=args.rounds, warm=args.warm,
                gap=args.gap, seconds=round(time.perf_counter() - t0, 1))
    md = markdown(rows, mem, n_mem, meta, args)
    print(md)
    with open(args.out + ".md", "w") as f:
        f.write(md)
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "cases": rows, "peak_memory": mem}, f, indent=1)
    print(f"wrote {args.out}.md, {args.out}.json", file=sys.stderr)
    if plot(rows, args.out + ".png"):
        print(f"wrote {args.out}.png", file=sys.stderr)
    else:
        print("no png: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
