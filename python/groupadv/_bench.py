"""Reusable benchmark pieces: a timer, workload generators and reference numpy implementations.

Used by ``groupadv bench`` (a short run on a fresh machine) and by the full benchmark in
``benches/``. Everything here is deliberately general: a workload is a reward array plus the
keyword arguments that describe its groups, and every reference implementation computes the
GRPO z-score ``(r - mean) / (std + eps)`` (population std, ddof=0) with plain numpy.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

LAYOUTS = ("uniform", "ragged", "ids", "uids")


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
    """Consecutive groups of varying size, given as ``offsets``."""
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


def uids(n: int, group_size: int = 16, *, dtype=np.float32, shuffle: bool = False, seed: int = 0) -> Workload:
    """String uids as verl makes them (``np.repeat`` of uuid4-like strings; an object array)."""
    codes = int_ids(n, group_size, shuffle=shuffle, seed=seed)
    names = np.array([f"{k:08x}-5f1c-4e2a-9b7d-{k * 2654435761 % (1 << 48):012x}" for k in range(int(codes.max()) + 1)], dtype=object)
    return Workload("uids", rewards(n, dtype=dtype, seed=seed), {"group_ids": names[codes]})


def make_workload(layout: str, n: int, group_size: int = 16, *, dtype=np.float32, seed: int = 0) -> Workload:
    """A workload by name: one of :data:`LAYOUTS`."""
    if layout == "uniform":
        return uniform(n, group_size, dtype=dtype, seed=seed)
    if layout == "ragged":
        return ragged(n, group_size, dtype=dtype, seed=seed)
    if layout == "ids":
        return ids(n, group_size, dtype=dtype, seed=seed)
    if layout == "uids":
        return uids(n, group_size, dtype=dtype, seed=seed)
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


# --- reference numpy implementations (GRPO z-score, ddof=0, stats in float64) -------------


def numpy_uniform(r: np.ndarray, group_size: int, eps: float = 1e-6) -> np.ndarray:
    """GRPO with ``reshape``: the usual vectorized numpy/torch formulation."""
    x = r.reshape(-1, group_size).astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    return ((x - mean) / (std + eps)).reshape(-1).astype(r.dtype)


def numpy_ragged(r: np.ndarray, offsets: np.ndarray, eps: float = 1e-6) -> np.ndarray:
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


def numpy_ids(r: np.ndarray, group_ids, eps: float = 1e-6) -> np.ndarray:
    """GRPO over labelled groups in any order with ``np.unique`` + ``np.bincount``."""
    x = r.astype(np.float64)
    _, codes = np.unique(np.asarray(group_ids), return_inverse=True)
    codes = codes.reshape(-1)
    counts = np.bincount(codes)
    mean = np.bincount(codes, weights=x) / counts
    dev = x - mean[codes]
    std = np.sqrt(np.bincount(codes, weights=dev * dev) / counts)
    return (dev / (std[codes] + eps)).astype(r.dtype)


def numpy_reference(w: Workload, eps: float = 1e-6) -> np.ndarray:
    """The reference numpy implementation matching a workload's layout."""
    if "group_size" in w.kwargs:
        return numpy_uniform(w.rewards, w.kwargs["group_size"], eps)
    if "offsets" in w.kwargs:
        return numpy_ragged(w.rewards, w.kwargs["offsets"], eps)
    return numpy_ids(w.rewards, w.kwargs["group_ids"], eps)


def memcpy_baseline(r: np.ndarray) -> Callable[[], None]:
    """A callable copying ``r`` into a preallocated array: the memory-bandwidth floor."""
    out = np.empty_like(r)

    def copy() -> None:
        np.copyto(out, r)

    return copy


# --- the short benchmark -----------------------------------------------------------------


def run(
    sizes: Sequence[int] = (10_000, 1_000_000, 5_000_000),
    layouts: Sequence[str] = ("uniform", "ragged", "ids"),
    *,
    group_size: int = 16,
    dtype=np.float32,
    eps: float = 1e-6,
    repeats: int = 5,
    num_threads: int | None = None,
    check: bool = True,
    reuse_groups: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Time groupadv, the numpy reference and a memory copy on each (layout, size).

    Returns one dict per case: layout, n, groupadv_s, numpy_s, memcpy_s, x_memcpy
    (groupadv time / copy time: 1.0 would be bandwidth-bound), speedup_vs_numpy.
    With ``check``, the groupadv result is compared with the numpy reference first.
    By default each groupadv call resolves its layout (labels included), as the numpy
    reference does; ``reuse_groups`` times calls with a prebuilt ``groups=`` instead.
    """
    import groupadv as ga

    rows = []
    for layout in layouts:
        for n in sizes:
            w = make_workload(layout, int(n), group_size, dtype=dtype)
            if progress:
                progress(f"{layout} n={w.n:,}")
            groups = ga.make_groups(w.n, **w.kwargs) if reuse_groups and layout != "uniform" else None
            kw = {"groups": groups} if groups is not None else w.kwargs
            out = np.empty_like(w.rewards)

            def ours() -> None:
                ga.advantages(w.rewards, eps=eps, out=out, num_threads=num_threads, **kw)

            if check:
                ours()
                ref = numpy_reference(w, eps)
                tol = 1e-4 if w.rewards.dtype == np.float32 else 1e-9
                if not np.allclose(out, ref, rtol=tol, atol=tol):
                    raise AssertionError(f"groupadv and numpy disagree on {layout} n={w.n}")
            reps = repeats if w.n >= 1_000_000 else max(repeats, 20)
            t_ours = time_call(ours, repeats=reps)
            # The check above already warmed the numpy path up; it is slow on big inputs.
            t_np = time_call(lambda: numpy_reference(w, eps), warmup=0 if check else 1,
                             repeats=max(1, reps // 2) if w.n < 1_000_000 else 2)
            t_copy = time_call(memcpy_baseline(w.rewards), repeats=reps)
            rows.append(
                {
                    "layout": layout,
                    "n": w.n,
                    "dtype": str(np.dtype(dtype)),
                    "groupadv_s": t_ours,
                    "numpy_s": t_np,
                    "memcpy_s": t_copy,
                    "x_memcpy": t_ours / t_copy if t_copy > 0 else float("nan"),
                    "speedup_vs_numpy": t_np / t_ours if t_ours > 0 else float("nan"),
                }
            )
    return rows


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def markdown_table(rows: Sequence[dict]) -> str:
    """Rows from :func:`run` as a markdown table."""
    lines = [
        "| layout | n | groupadv | numpy | memcpy | groupadv / memcpy | numpy / groupadv |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layout']} | {r['n']:,} | {_fmt_time(r['groupadv_s'])} | {_fmt_time(r['numpy_s'])} | "
            f"{_fmt_time(r['memcpy_s'])} | {r['x_memcpy']:.1f}x | {r['speedup_vs_numpy']:.1f}x |"
        )
    return "\n".join(lines)
