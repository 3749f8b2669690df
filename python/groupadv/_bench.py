"""The benchmark harness: workloads, competitors, an interleaved timer, the cases of issue 14 with
their targets, and the report.

Used by ``groupadv bench`` (large rows up to 5e6 rewards, a minute or so) and by the full
benchmark ``benches/bench.py`` (N = 1e7, several runs). Every case is timed against

* ``memcpy``: ``np.copyto`` of the same rewards into a preallocated array (the memory floor);
* ``numpy``: the strongest plain numpy we know (``numpy_*`` of :mod:`groupadv._peer_kernels`:
  einsum sums, reduceat, a dict factorisation of object labels), and, in the numpy-backend rows,
  also the straightforward references below (the faster of the two is "numpy");
* ``numba``: the peer kernels (``parallel=True, fastmath=True``, numba's workqueue threading
  layer), when numba imports.

``groupadv/_peer_kernels.py`` is a byte-for-byte copy of the team's ``shared/bench/peer_kernels.py``
(also in ``benches/peer_kernels.py``; a test keeps the copies identical), shipped in the package so
that ``groupadv bench`` on an installed wheel has its numba and numpy competitors.

Timing is the way users call: the implementations of a case are interleaved round by round (the
order rotates), each gets one "cold" call after an idle gap (``gap`` seconds of sleep: caches and
thread pools cool down as between training steps) and then back-to-back "warm" calls; each mode
is reported as median, p25 and p75 over all rounds.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

LAYOUTS = ("uniform", "ragged", "ids", "blocks", "uids")
EPS = 1e-6


def time_call(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_time: float = 0.0,
    max_repeats: int = 1000,
) -> float:
    """Median wall time of ``fn()`` in seconds, measured with ``time.perf_counter``.

    ``warmup`` untimed calls first; then at least ``repeats`` timed calls, and more (up to
    ``max_repeats``) until the timed calls add up to ``min_time`` seconds.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(max(0, warmup)):
        fn()
    times: list[float] = []
    total = 0.0
    while len(times) < repeats or (total < min_time and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return statistics.median(times)


# ============================================================================ workloads


@dataclass
class Workload:
    """Rewards plus the groupadv keyword arguments that describe their groups.

    ``kwargs`` is one of ``{"group_size": G}``, ``{"offsets": ...}`` or ``{"group_ids": ...}``,
    ready to pass to :func:`groupadv.advantages`.
    """

    name: str
    rewards: np.ndarray
    kwargs: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rewards)


def rewards(n: int, *, dtype=np.float32, seed: int = 0, binary: bool = False) -> np.ndarray:
    """``n`` random rewards: uniform in [0, 1), or 0/1 pass/fail rewards with ``binary``."""
    rng = np.random.default_rng(seed)
    if binary:
        return (rng.random(n) < 0.5).astype(dtype)
    return rng.random(n, dtype=np.float64).astype(dtype)


def uniform(n: int, group_size: int = 16, *, dtype=np.float32, seed: int = 0) -> Workload:
    """Consecutive groups of ``group_size`` rewards (``n`` is rounded down to a multiple)."""
    n = max(group_size, n - n % group_size)
    return Workload("uniform", rewards(n, dtype=dtype, seed=seed), {"group_size": group_size})


def ragged_offsets(n: int, mean_size: int = 16, *, seed: int = 0) -> np.ndarray:
    """Offsets of consecutive groups with sizes drawn uniformly from 1..2*mean_size-1, covering n."""
    rng = np.random.default_rng(seed + 1)
    sizes = rng.integers(1, 2 * mean_size, size=n // max(1, mean_size) + 2)
    ends = np.cumsum(sizes)
    ends = ends[ends < n]
    return np.concatenate(([0], ends, [n])).astype(np.int64)


def ragged(n: int, mean_size: int = 16, *, dtype=np.float32, seed: int = 0) -> Workload:
    """Consecutive groups of varying size (1..2*mean_size-1), given as ``offsets``."""
    return Workload("ragged", rewards(n, dtype=dtype, seed=seed), {"offsets": ragged_offsets(n, mean_size, seed=seed)})


def int_ids(n: int, group_size: int = 16, *, shuffle: bool = True, seed: int = 0) -> np.ndarray:
    """Integer group labels, ``group_size`` rewards per label; shuffled (non-contiguous) by default."""
    ids = np.repeat(np.arange((n + group_size - 1) // group_size, dtype=np.int64), group_size)[:n]
    if shuffle:
        np.random.default_rng(seed + 2).shuffle(ids)
    return ids


def ids(n: int, group_size: int = 16, *, dtype=np.float32, shuffle: bool = True, seed: int = 0) -> Workload:
    """Integer ``group_ids`` (non-contiguous when ``shuffle``)."""
    return Workload("ids", rewards(n, dtype=dtype, seed=seed), {"group_ids": int_ids(n, group_size, shuffle=shuffle, seed=seed)})


def blocks(n: int, group_size: int = 16, *, dtype=np.float32, seed: int = 0) -> Workload:
    """Integer ``group_ids`` in contiguous blocks of ``group_size``, the blocks in shuffled order
    (verl's batch after ``balance_batch``): runs of equal labels, labels not sorted."""
    k = (n + group_size - 1) // group_size
    order = np.random.default_rng(seed + 3).permutation(k).astype(np.int64)
    return Workload("blocks", rewards(n, dtype=dtype, seed=seed), {"group_ids": np.repeat(order, group_size)[:n]})


def uid_strings(k: int) -> np.ndarray:
    """``k`` distinct uuid4-like strings in an object array."""
    return np.array([f"{i:08x}-5f1c-4e2a-9b7d-{i * 2654435761 % (1 << 48):012x}" for i in range(k)], dtype=object)


def uids(n: int, group_size: int = 16, *, dtype=np.float32, shuffle: bool = False, seed: int = 0) -> Workload:
    """String uids as verl makes them: ``np.repeat`` of distinct strings (an object array whose
    equal labels are the same str object, as ``DataProto.repeat`` makes them); with ``shuffle``
    the same rows (rewards and their uids) in a random order."""
    k = (n + group_size - 1) // group_size
    labels = np.repeat(uid_strings(k), group_size)[:n]
    x = rewards(n, dtype=dtype, seed=seed)
    if shuffle:
        p = np.random.default_rng(seed + 4).permutation(n)
        labels, x = labels[p], x[p]
    return Workload("uids shuffled" if shuffle else "uids", x, {"group_ids": labels})


def make_workload(layout: str, n: int, group_size: int = 16, *, dtype=np.float32, seed: int = 0) -> Workload:
    """A workload by name: one of :data:`LAYOUTS`."""
    if layout == "uniform":
        return uniform(n, group_size, dtype=dtype, seed=seed)
    if layout == "ragged":
        return ragged(n, group_size, dtype=dtype, seed=seed)
    if layout == "ids":
        return ids(n, group_size, dtype=dtype, seed=seed)
    if layout == "blocks":
        return blocks(n, group_size, dtype=dtype, seed=seed)
    if layout == "uids":
        return uids(n, group_size, dtype=dtype, seed=seed)
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


# ============================================================================ competitors
# The straightforward numpy GRPO (z-score, ddof=0, statistics in float64): what most users write.
# The tuned numpy and the numba kernels are groupadv._peer_kernels (a copy kept identical).


def numpy_uniform(r: np.ndarray, group_size: int, eps: float = EPS) -> np.ndarray:
    """GRPO with ``reshape``: the usual vectorized numpy/torch formulation."""
    x = r.reshape(-1, group_size).astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    return ((x - mean) / (std + eps)).reshape(-1).astype(r.dtype)


def numpy_ragged(r: np.ndarray, offsets: np.ndarray, eps: float = EPS) -> np.ndarray:
    """GRPO over consecutive groups of varying size with ``np.add.reduceat`` (empty groups
    are not supported here; the generators never make them)."""
    x = r.astype(np.float64)
    starts = np.asarray(offsets[:-1])
    sizes = np.diff(offsets)
    mean = np.add.reduceat(x, starts) / sizes
    m = np.repeat(mean, sizes)
    dev = x - m
    std = np.sqrt(np.add.reduceat(dev * dev, starts) / sizes)
    return (dev / (np.repeat(std, sizes) + eps)).astype(r.dtype)


def numpy_ids(r: np.ndarray, group_ids, eps: float = EPS) -> np.ndarray:
    """GRPO over labelled groups in any order with ``np.unique`` + ``np.bincount``."""
    x = r.astype(np.float64)
    _, codes = np.unique(np.asarray(group_ids), return_inverse=True)
    codes = codes.reshape(-1)
    counts = np.bincount(codes)
    mean = np.bincount(codes, weights=x) / counts
    dev = x - mean[codes]
    std = np.sqrt(np.bincount(codes, weights=dev * dev) / counts)
    return (dev / (std[codes] + eps)).astype(r.dtype)


def numpy_reference(w: Workload, eps: float = EPS) -> np.ndarray:
    """The straightforward numpy implementation matching a workload's layout."""
    if "group_size" in w.kwargs:
        return numpy_uniform(w.rewards, w.kwargs["group_size"], eps)
    if "offsets" in w.kwargs:
        return numpy_ragged(w.rewards, w.kwargs["offsets"], eps)
    return numpy_ids(w.rewards, w.kwargs["group_ids"], eps)


_peer: Any = None


def peer_module() -> Any:
    """The peer kernels module: groupadv._peer_kernels unless :func:`use_peer` chose another copy."""
    global _peer
    if _peer is None:
        from . import _peer_kernels

        _peer = _peer_kernels
    return _peer


def use_peer(module: Any) -> None:
    """Take the competitors from ``module`` (benches/bench.py passes benches/peer_kernels.py)."""
    global _peer
    _peer = module


def peer_numpy(w: Workload, out: np.ndarray, eps: float = EPS) -> Callable[[], np.ndarray]:
    """The tuned numpy of the peer kernels for a workload's layout, writing into ``out``."""
    P = peer_module()
    x, kw = w.rewards, w.kwargs
    if "group_size" in kw:
        g = kw["group_size"]
        return lambda: P.numpy_uniform(x, g, out, eps)
    if "offsets" in kw:
        offs = kw["offsets"]
        return lambda: P.numpy_ragged(x, offs, out, eps)
    labels = kw["group_ids"]
    return lambda: P.numpy_labels(x, labels, out, eps)


def numba_kernels() -> dict | None:
    """The peer numba kernels (parallel, fastmath, workqueue layer), or None without numba."""
    P = peer_module()  # its import sets NUMBA_THREADING_LAYER before numba is imported
    try:
        return P.numba_kernels()
    except ImportError:
        return None


def numba_info(kernels: dict | None) -> str:
    """One line saying where the numba column comes from (or why there is none)."""
    if kernels is None:
        return "numba: not installed (no numba column; pip install 'groupadv[bench]')"
    import numba

    layer: str
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = os.environ.get("NUMBA_THREADING_LAYER", "default")
    where = os.path.basename(os.path.dirname(peer_module().__file__)) + "/" + os.path.basename(peer_module().__file__)
    return (f"numba {numba.__version__}: {where} (parallel=True, fastmath=True), "
            f"threading layer {layer}, {numba.get_num_threads()} threads")


def peer_numba(w: Workload, out: np.ndarray, kernels: dict, eps: float = EPS) -> Callable[[], Any]:
    """The peer numba kernel for a workload's layout, writing into ``out``."""
    x, kw = w.rewards, w.kwargs
    if "group_size" in kw:
        g, f = kw["group_size"], kernels["uniform"]
        return lambda: (f(x, g, out, eps), out)[1]
    if "offsets" in kw:
        offs, f = kw["offsets"], kernels["ragged"]
        return lambda: (f(x, offs, out, eps), out)[1]
    labels, f = kw["group_ids"], kernels["labels"]
    return lambda: f(x, labels, out, eps)


def memcpy_baseline(r: np.ndarray) -> Callable[[], None]:
    """A callable copying ``r`` into a preallocated array: the memory-bandwidth floor."""
    out = np.empty_like(r)

    def copy() -> None:
        np.copyto(out, r)

    return copy


# ============================================================================ the timer


@dataclass
class Timing:
    """Seconds per call of one implementation: cold calls (after an idle gap) and warm calls."""

    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)

    def stat(self, mode: str) -> tuple[float, float, float]:
        """(p25, median, p75) of ``mode`` ("cold" or "warm")."""
        ts = np.asarray(getattr(self, mode), dtype=np.float64)
        if ts.size == 0:
            return (float("nan"),) * 3
        p25, med, p75 = np.percentile(ts, [25, 50, 75])
        return float(p25), float(med), float(p75)


def interleaved(
    impls: dict[str, Callable[[], Any]],
    *,
    rounds: int = 5,
    warm: int = 5,
    gap: float = 0.02,
    warm_budget: float = 0.25,
) -> dict[str, Timing]:
    """Time each implementation in ``rounds`` interleaved rounds (the order rotates each round):
    one cold call after ``gap`` seconds of sleep, then up to ``warm`` back-to-back calls
    (fewer for slow ones: about ``warm_budget`` seconds of warm calls per round)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(impls)
    n_warm = {}
    for name in names:  # one untimed call each: compiles numba, faults the output's pages in
        t0 = time.perf_counter()
        impls[name]()
        n_warm[name] = max(1, min(warm, int(warm_budget / max(time.perf_counter() - t0, 1e-9))))
    res = {name: Timing() for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, t = impls[name], res[name]
            time.sleep(gap)
            t0 = time.perf_counter()
            fn()
            t.cold.append(time.perf_counter() - t0)
            for _ in range(n_warm[name]):
                t0 = time.perf_counter()
                fn()
                t.warm.append(time.perf_counter() - t0)
    return res


# ============================================================================ cases and targets


@dataclass
class Target:
    """A target of issue 14 (or 10) on one case: ``value(medians) op bound``."""

    text: str
    value: Callable[[dict], float]  # from {implementation: median seconds}
    op: str  # "<=", ">=" or "<"
    bound: float
    unit: str = "x"  # "x" (a ratio) or "us" (microseconds)

    def met(self, v: float) -> bool:
        if not np.isfinite(v):
            return False
        return v <= self.bound if self.op == "<=" else v >= self.bound if self.op == ">=" else v < self.bound

    def show(self, v: float) -> str:
        if not np.isfinite(v):
            return "-"
        return f"{v * 1e6:.1f} us" if self.unit == "us" else f"{v:.2f}x"


def _ratio(a: str, b: str) -> Callable[[dict], float]:
    return lambda t: t[a] / t[b] if a in t and b in t else float("nan")


def _best_numpy(t: dict) -> float:
    vals = [v for k, v in t.items() if k.startswith("numpy")]
    return min(vals) if vals else float("nan")


@dataclass
class Case:
    """One row: ``setup()`` builds the implementations ({name: callable returning its output,
    or None for memcpy}) when the case runs, so that only one case's arrays are alive."""

    key: str
    title: str
    n: int
    setup: Callable[[], dict]
    targets: list = field(default_factory=list)
    backend: str | None = None  # run under this groupadv backend (None: the active one)


@contextlib.contextmanager
def using_backend(name: str | None) -> Iterator[None]:
    """The groupadv backend ``name`` for the duration (None: leave it as it is)."""
    from . import _backend

    if name is None or name == _backend.name:
        yield
        return
    before = _backend.name
    _backend.use(name)
    try:
        yield
    finally:
        _backend.use(before)


NUMPY_BACKEND_LAYOUTS = ("uniform", "ragged", "ids", "blocks", "uids", "uids-shuffled")
ROWS = ("uniform", "ragged", "threads", "blocks", "uids", "uids-shuffled", "small", "numpy-backend")


def cases(
    n: int = 5_000_000,
    rows: Sequence[str] = ROWS,
    *,
    group_size: int = 16,
    dtype=np.float32,
    num_threads: int | None = None,
    numba_k: dict | None = None,
    numpy_sizes: Sequence[int] = (10_000, 100_000, 1_000_000),
    eps: float = EPS,
) -> list[Case]:
    """The cases of issue 14 (large rows at ``n`` rewards; uids at min(n, 1e6); small calls at
    8192) and issue 10's numpy-backend rows (``numpy_sizes`` up to ``n``), with their targets."""
    import groupadv as ga

    for r in rows:
        if r not in ROWS:
            raise ValueError(f"unknown row {r!r}; choose from {', '.join(ROWS)}")
    G = group_size
    out: list[Case] = []

    def competitors(w: Workload, impls: dict) -> dict:
        impls["numpy"] = peer_numpy(w, np.empty_like(w.rewards), eps)
        if numba_k is not None:
            impls["numba"] = peer_numba(w, np.empty_like(w.rewards), numba_k, eps)
        return impls

    def grouped(make: Callable[[], Workload], reuse: bool) -> Callable[[], dict]:
        def setup() -> dict:
            w = make()
            x, kw, o = w.rewards, w.kwargs, np.empty_like(w.rewards)
            impls: dict = {"memcpy": memcpy_baseline(x)}
            impls["groupadv"] = lambda: ga.advantages(x, eps=eps, out=o, num_threads=num_threads, **kw)
            if reuse:
                g, o2 = ga.make_groups(w.n, **kw), np.empty_like(x)
                impls["groupadv groups="] = lambda: ga.advantages(x, groups=g, eps=eps, out=o2, num_threads=num_threads)
            return competitors(w, impls)

        return setup

    x_memcpy = _ratio("groupadv", "memcpy")
    vs_numba = _ratio("numba", "groupadv")
    vs_numpy = _ratio("numpy", "groupadv")
    if "uniform" in rows:
        out.append(Case("uniform", f"uniform G={G}, out=", n, grouped(lambda: uniform(n, G, dtype=dtype), False), [
            Target("<= 1.3x memcpy", x_memcpy, "<=", 1.3),
            Target(">= 1.25x faster than numba `uniform`", vs_numba, ">=", 1.25),
        ]))
    if "ragged" in rows:
        out.append(Case("ragged", f"ragged sizes 1..{2 * G - 1}, offsets=, out=", n,
                        grouped(lambda: ragged(n, G, dtype=dtype), True), [
            Target("<= 2x memcpy", x_memcpy, "<=", 2.0),
            Target(">= 1.25x faster than numba `ragged`", vs_numba, ">=", 1.25),
        ]))
    if "threads" in rows and (os.cpu_count() or 1) >= 2:
        def threads_setup() -> dict:
            w = uniform(n, G, dtype=dtype)
            x, o = w.rewards, np.empty_like(w.rewards)
            impls: dict = {
                "groupadv 1 thread": lambda: ga.advantages(x, G, eps=eps, out=o, num_threads=1),
                "groupadv": lambda: ga.advantages(x, G, eps=eps, out=o, num_threads=2),
            }
            if numba_k is not None:
                import numba

                f, o2, default = numba_k["uniform"], np.empty_like(x), numba.get_num_threads()

                def on(k: int) -> Callable[[], np.ndarray]:
                    def call() -> np.ndarray:
                        numba.set_num_threads(k)
                        try:
                            f(x, G, o2, eps)
                        finally:
                            numba.set_num_threads(default)
                        return o2

                    return call

                impls["numba 1 thread"], impls["numba"] = on(1), on(2)
            return impls

        out.append(Case("threads", f"1 -> 2 threads, uniform G={G} (groupadv/numba columns: 2 threads)", n,
                        threads_setup, [
            Target(">= 1.8x from 1 to 2 threads", _ratio("groupadv 1 thread", "groupadv"), ">=", 1.8),
        ]))
    if "blocks" in rows:
        out.append(Case("blocks", f"int ids, blocks of {G} contiguous, block order shuffled, labels in the call", n,
                        grouped(lambda: blocks(n, G, dtype=dtype), True), [
            Target("<= 4x memcpy", x_memcpy, "<=", 4.0),
        ]))
    n_uids = min(n, 1_000_000)
    if "uids" in rows:
        out.append(Case("uids", f"string uids by np.repeat, {n_uids // G:,} uids", n_uids,
                        grouped(lambda: uids(n_uids, G, dtype=dtype), False), [
            Target(">= 10x faster than the dict reference", vs_numpy, ">=", 10.0),
        ]))
    if "uids-shuffled" in rows:
        out.append(Case("uids-shuffled", f"the same uid rows shuffled, {n_uids // G:,} uids", n_uids,
                        grouped(lambda: uids(n_uids, G, dtype=dtype, shuffle=True), False), [
            Target(">= 5x faster than the dict reference", vs_numpy, ">=", 5.0),
        ]))
    if "small" in rows:
        n_small = min(n, 8192)
        out.append(Case("small", f"small calls, uniform G={G}, out=", n_small,
                        grouped(lambda: uniform(n_small, G, dtype=dtype), False), [
            Target("< 20 us per call", lambda t: t.get("groupadv", float("nan")), "<", 20e-6, "us"),
        ]))
    if "numpy-backend" in rows:
        for size in [s for s in numpy_sizes if s <= n]:
            for layout in NUMPY_BACKEND_LAYOUTS:
                def nb_setup(layout=layout, size=size) -> dict:
                    w = (uids(size, G, dtype=dtype, shuffle=True) if layout == "uids-shuffled"
                         else make_workload(layout, size, G, dtype=dtype))
                    x, kw, o = w.rewards, w.kwargs, np.empty_like(w.rewards)
                    return {
                        "memcpy": memcpy_baseline(x),
                        "groupadv": lambda: ga.advantages(x, eps=eps, out=o, **kw),
                        "numpy": peer_numpy(w, np.empty_like(x), eps),
                        "numpy reference": lambda: numpy_reference(w, eps),
                    }

                out.append(Case(f"numpy-backend {layout}", f"numpy backend, {layout}, vs the best plain numpy", size,
                                nb_setup, [Target(">= 1.0x the best numpy", lambda t: _best_numpy(t) / t["groupadv"], ">=", 1.0)],
                                backend="numpy"))
    return out


def _agree(case: Case, outputs: dict) -> None:
    """Every implementation gives the groupadv result (float32 tolerance)."""
    ours = outputs.get("groupadv")
    if ours is None:
        return
    for name, res in outputs.items():
        if res is None or name == "groupadv":
            continue
        if not np.allclose(np.asarray(res, dtype=np.float64), ours, rtol=1e-3, atol=1e-3):
            raise AssertionError(f"{name} disagrees with groupadv on {case.key} n={case.n}")


def run_case(case: Case, *, rounds: int = 5, warm: int = 5, gap: float = 0.02, runs: int = 1) -> dict:
    """Measure one case ``runs`` times (each ``rounds`` interleaved rounds); check first that the
    implementations agree. Returns a JSON-ready dict."""
    with using_backend(case.backend):
        impls = case.setup()
        outputs = {}
        for name, fn in impls.items():
            res = fn()
            outputs[name] = None if res is None else np.array(res, dtype=np.float64)
        _agree(case, outputs)
        del outputs
        measured = [interleaved(impls, rounds=rounds, warm=warm, gap=gap) for _ in range(runs)]
    row: dict = {"key": case.key, "title": case.title, "n": case.n, "backend": case.backend, "runs": []}
    for timings in measured:
        one: dict = {}
        for name, t in timings.items():
            one[name] = {mode: dict(zip(("p25", "median", "p75"), t.stat(mode)), samples=getattr(t, mode))
                         for mode in ("cold", "warm")}
        row["runs"].append(one)
    row["targets"] = []
    for tg in case.targets:
        entry: dict = {"target": tg.text, "unit": tg.unit}
        for mode in ("cold", "warm"):
            vals = [tg.value(medians(one, mode)) for one in row["runs"]]
            lo, hi = tg.show(min(vals)), tg.show(max(vals))
            entry[mode] = {"values": vals, "met": [tg.met(v) for v in vals], "shown": lo if lo == hi else f"{lo} - {hi}"}
        row["targets"].append(entry)
    return row


def medians(one_run: dict, mode: str) -> dict:
    """{implementation: median seconds} of one run of a case."""
    return {name: v[mode]["median"] for name, v in one_run.items()}


def run(
    case_list: Sequence[Case],
    *,
    rounds: int = 5,
    warm: int = 5,
    gap: float = 0.02,
    runs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """:func:`run_case` over the cases."""
    rows = []
    for c in case_list:
        if progress:
            progress(f"{c.key} n={c.n:,}")
        rows.append(run_case(c, rounds=rounds, warm=warm, gap=gap, runs=runs))
    return rows


# ============================================================================ the report


def fmt_time(s: float) -> str:
    if s is None or not np.isfinite(s):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _cell_ratio(vals: list) -> str:
    vals = [v for v in vals if np.isfinite(v)]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f} - {hi:.2f}x"


def markdown_table(rows: Sequence[dict]) -> str:
    """The main table: medians of the last run per mode; the ratios over all runs (a range when
    there are several). ``numpy`` is the fastest numpy implementation of the case."""
    lines = [
        "| case | n | mode | memcpy | groupadv | numpy | numba | groupadv / memcpy | numpy / groupadv | numba / groupadv |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for mode in ("cold", "warm"):
            per_run = [medians(one, mode) for one in r["runs"]]
            last = per_run[-1]
            np_best = [_best_numpy(t) for t in per_run]
            ga_t = [t.get("groupadv", float("nan")) for t in per_run]
            lines.append(
                f"| {r['key']} | {r['n']:,} | {mode} | {fmt_time(last.get('memcpy', float('nan')))} "
                f"| {fmt_time(last.get('groupadv', float('nan')))} | {fmt_time(np_best[-1])} "
                f"| {fmt_time(last.get('numba', float('nan')))} "
                f"| {_cell_ratio([g / t.get('memcpy', float('nan')) for g, t in zip(ga_t, per_run)])} "
                f"| {_cell_ratio([b / g for b, g in zip(np_best, ga_t)])} "
                f"| {_cell_ratio([t.get('numba', float('nan')) / g for g, t in zip(ga_t, per_run)])} |"
            )
    return "\n".join(lines)


def _met(flags: list) -> str:
    if not flags:
        return "-"
    k = sum(flags)
    return "yes" if k == len(flags) else "no" if k == 0 else f"{k}/{len(flags)} runs"


def targets_table(rows: Sequence[dict]) -> str:
    """Each target with its value (range over runs) and pass/fail, cold and warm."""
    lines = ["| case | n | target | cold | met (cold) | warm | met (warm) |", "|---|---:|---|---:|---|---:|---|"]
    for r in rows:
        for t in r["targets"]:
            lines.append(
                f"| {r['key']} | {r['n']:,} | {t['target']} | {t['cold']['shown']} | {_met(t['cold']['met'])} "
                f"| {t['warm']['shown']} | {_met(t['warm']['met'])} |"
            )
    return "\n".join(lines)


def detail_table(rows: Sequence[dict]) -> str:
    """Every implementation of every case: median (p25 - p75) per mode, last run."""
    lines = ["| case | n | implementation | cold: median (p25 - p75) | warm: median (p25 - p75) |", "|---|---:|---|---|---|"]
    for r in rows:
        for name, v in r["runs"][-1].items():
            cells = [f"{fmt_time(v[m]['median'])} ({fmt_time(v[m]['p25'])} - {fmt_time(v[m]['p75'])})" for m in ("cold", "warm")]
            lines.append(f"| {r['key']} | {r['n']:,} | {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)
