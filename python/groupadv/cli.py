"""The ``groupadv`` command line: advantages for a table on disk, a short benchmark, diagnostics.

    groupadv compute IN --group-col uid --reward-col reward [--estimator grpo|drgrpo|rloo] -o OUT
    groupadv stats IN --group-col uid --reward-col reward [--json]
    groupadv bench

Inputs by extension: ``.parquet``, ``.arrow``/``.feather`` (pyarrow, ``pip install
groupadv[parquet]``), ``.csv`` (pyarrow.csv when installed, else the stdlib), ``.npy`` (a
structured array whose fields are the columns, or a plain 1-D array read as one column named
``reward``) and ``.npz`` (one 1-D array per column). The output format follows the extension
of ``-o``; ``.npy`` output holds the advantage column only.

Streaming: a group's rows may be anywhere in the file, so ``compute`` reads the input twice in
batches of ``--batch-rows`` rows. Pass 1 accumulates per-group count, mean and M2 (merged
across batches with Chan's formula, in float64); pass 2 writes the advantages of each batch
from those statistics. Memory is O(number of groups + batch), not O(rows), except for
``.npz`` files (loaded whole) and ``.npz`` output (built in memory).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import time
from typing import Any, Iterator, Sequence

import numpy as np

import groupadv as ga

from . import _bench


class CLIError(Exception):
    """A user error: printed as ``groupadv: error: ...`` with exit status 2."""


# --- optional pyarrow ------------------------------------------------------------------------


def _pyarrow(purpose: str) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise CLIError(
            f"{purpose} needs pyarrow, which is not installed: pip install 'groupadv[parquet]' "
            "(or pip install pyarrow); CSV, .npy and .npz work without it"
        ) from None
    return pyarrow


def _have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    fmt = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow",
           ".ipc": "arrow", ".csv": "csv", ".npy": "npy", ".npz": "npz"}.get(ext)
    if fmt is None:
        raise CLIError(
            f"unknown file type {ext or '(no extension)'!r} for {path!r}; "
            "use .parquet, .arrow, .feather, .csv, .npy or .npz"
        )
    return fmt


# --- readers: each yields batches as {column name: array} or pyarrow RecordBatches ------------


class Reader:
    """A table on disk, readable (more than once) in batches of rows."""

    columns: list[str]
    num_rows: int | None = None

    def batches(self, rows: int) -> Iterator[Any]:
        raise NotImplementedError


def _slices(n: int, rows: int) -> Iterator[slice]:
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


class NpyReader(Reader):
    def __init__(self, path: str) -> None:
        self.arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if self.arr.ndim != 1:
            raise CLIError(f"{path}: expected a 1-D array (structured, or plain rewards), got shape {self.arr.shape}")
        self.structured = self.arr.dtype.names is not None
        self.columns = list(self.arr.dtype.names) if self.structured else ["reward"]
        self.num_rows = len(self.arr)

    def batches(self, rows: int) -> Iterator[dict]:
        for s in _slices(len(self.arr), rows):
            part = self.arr[s]
            if self.structured:
                yield {c: np.asarray(part[c]) for c in self.columns}
            else:
                yield {"reward": np.asarray(part)}


class NpzReader(Reader):
    def __init__(self, path: str) -> None:
        with np.load(path, allow_pickle=False) as z:
            self.data = {k: z[k] for k in z.files}
        lengths = set()
        for k, v in self.data.items():
            if v.ndim != 1:
                raise CLIError(f"{path}: array {k!r} must be 1-D, got shape {v.shape}")
            lengths.add(len(v))
        if len(lengths) > 1:
            raise CLIError(f"{path}: the arrays have different lengths {sorted(lengths)}")
        self.columns = list(self.data)
        self.num_rows = lengths.pop() if lengths else 0

    def batches(self, rows: int) -> Iterator[dict]:
        for s in _slices(self.num_rows or 0, rows):
            yield {k: v[s] for k, v in self.data.items()}


class CsvReader(Reader):
    """CSV with a header row. Group labels are read as strings (so ``07`` and ``7`` differ);
    an empty reward cell is a missing reward (NaN)."""

    def __init__(self, path: str, group_col: str | None, reward_col: str | None, use_arrow: bool) -> None:
        self.path = path
        self.group_col = group_col
        self.reward_col = reward_col
        self.use_arrow = use_arrow
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if not header:
            raise CLIError(f"{path}: empty CSV file (a header row is needed)")
        self.columns = header

    def batches(self, rows: int) -> Iterator[Any]:
        if self.use_arrow:
            yield from self._arrow_batches(rows)
            return
        with open(self.path, newline="") as f:
            reader = csv.reader(f)
            next(reader)
            width = len(self.columns)
            buf: list[list[str]] = []
            line = 1
            for row in reader:
                line += 1
                if not row:
                    continue
                if len(row) != width:
                    raise CLIError(f"{self.path}: line {line} has {len(row)} fields, the header has {width}")
                buf.append(row)
                if len(buf) >= rows:
                    yield self._columns(buf)
                    buf = []
            if buf:
                yield self._columns(buf)

    def _columns(self, buf: list[list[str]]) -> dict:
        cols = list(zip(*buf))
        return {name: np.array(col, dtype=object) for name, col in zip(self.columns, cols)}

    def _arrow_batches(self, rows: int) -> Iterator[Any]:
        pa = _pyarrow("reading CSV with pyarrow")
        import pyarrow.csv as pacsv

        import pyarrow.compute as pc

        # Labels and rewards are read as text, as the stdlib path does; rewards are parsed below.
        types = {c: pa.string() for c in (self.group_col, self.reward_col) if c in self.columns}
        conv = pacsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=True)
        start = 0
        try:
            reader = pacsv.open_csv(self.path, convert_options=conv,
                                    read_options=pacsv.ReadOptions(block_size=1 << 22))
            for rb in reader:
                for s in _slices(rb.num_rows, rows):
                    part = rb.slice(s.start, s.stop - s.start)
                    if self.reward_col in types:
                        i = part.schema.get_field_index(self.reward_col)
                        cells = part.column(i)
                        try:
                            vals = pc.cast(cells, pa.float64())
                        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                            vals = pa.array(_parse_cells(cells.to_pylist(), self.reward_col, start))
                        part = part.set_column(i, self.reward_col, vals)
                    yield part
                    start += part.num_rows
        except pa.ArrowInvalid as e:
            raise CLIError(f"{self.path}: {e}") from None


class ArrowReader(Reader):
    def __init__(self, path: str, fmt: str) -> None:
        pa = _pyarrow(f"reading {fmt} files")
        self.path, self.fmt = path, fmt
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                self.pf = pq.ParquetFile(path)
                schema = self.pf.schema_arrow
                self.num_rows = self.pf.metadata.num_rows
            else:
                import pyarrow.ipc as ipc

                self.ipc = ipc
                try:
                    r = ipc.open_file(pa.memory_map(path))
                    schema, self.num_rows, self.stream = r.schema, r.count_rows() if hasattr(r, "count_rows") else None, False
                except pa.ArrowInvalid:
                    r = ipc.open_stream(pa.memory_map(path))
                    schema, self.num_rows, self.stream = r.schema, None, True
        except (OSError, pa.ArrowInvalid) as e:
            raise CLIError(f"{path}: cannot read as {fmt}: {e}") from None
        self.columns = list(schema.names)

    def batches(self, rows: int) -> Iterator[Any]:
        pa = _pyarrow("reading")
        if self.fmt == "parquet":
            yield from self.pf.iter_batches(batch_size=rows)
            return
        src = pa.memory_map(self.path)
        reader = self.ipc.open_stream(src) if self.stream else self.ipc.open_file(src)
        it = reader if self.stream else (reader.get_batch(i) for i in range(reader.num_record_batches))
        for rb in it:
            for s in _slices(rb.num_rows, rows):
                yield rb.slice(s.start, s.stop - s.start)


def open_reader(path: str, group_col: str | None = None, reward_col: str | None = None) -> Reader:
    """A reader for ``path`` chosen by its extension."""
    if not os.path.exists(path):
        raise CLIError(f"input file not found: {path}")
    fmt = _format(path)
    if fmt == "npy":
        return NpyReader(path)
    if fmt == "npz":
        return NpzReader(path)
    if fmt == "csv":
        return CsvReader(path, group_col, reward_col, _have_pyarrow())
    return ArrowReader(path, fmt)


def _is_arrow(batch: Any) -> bool:
    return not isinstance(batch, dict)


def _num_rows(batch: Any) -> int:
    return batch.num_rows if _is_arrow(batch) else len(next(iter(batch.values()))) if batch else 0


def _rewards(batch: Any, col: str, start: int) -> np.ndarray:
    """The reward column of a batch as float32/float64 (nulls and empty cells become NaN)."""
    if _is_arrow(batch):
        import pyarrow as pa

        arr = batch.column(col)
        t = arr.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            where = ""
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                for i, cell in enumerate(arr.to_pylist()):
                    try:
                        float(cell)
                    except (TypeError, ValueError):
                        where = f": row {start + i} holds {cell!r}"
                        break
            raise CLIError(f"reward column {col!r} is not numeric (type {t}){where}")
        x = arr.to_numpy(zero_copy_only=False)
        if x.dtype == object:  # booleans with nulls
            x = np.array([np.nan if v is None else float(v) for v in x], dtype=np.float64)
    else:
        x = batch[col]
        if x.dtype == object:  # CSV cells
            x = _parse_cells(x, col, start)
        elif x.dtype.kind not in "fiub":
            raise CLIError(f"reward column {col!r} is not numeric (dtype {x.dtype})")
    if x.dtype.kind == "f" and x.dtype.itemsize <= 4:
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float64)


def _parse_cells(cells: Any, col: str, start: int) -> np.ndarray:
    """CSV reward cells as float64: an empty cell is a missing reward (NaN); anything that
    ``float()`` does not read is an error naming its row."""
    vals = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        cell = "" if cell is None else cell.strip()
        if cell == "":
            vals[i] = np.nan
            continue
        try:
            vals[i] = float(cell)
        except ValueError:
            raise CLIError(f"reward column {col!r} is not numeric: row {start + i} holds {cell!r}") from None
    return vals


def _labels(batch: Any, col: str, start: int) -> Any:
    """The group column of a batch as something groupadv accepts as ``group_ids``."""
    if _is_arrow(batch):
        arr = batch.column(col)
        if arr.null_count:
            i = next(k for k, v in enumerate(arr.is_null().to_pylist()) if v)
            raise CLIError(f"group column {col!r} has a missing value at row {start + i}")
        ids = arr.to_numpy(zero_copy_only=False)
    else:
        ids = batch[col]
        if ids.dtype == object:  # CSV cells
            empty = np.flatnonzero(ids == "")
            if empty.size:
                raise CLIError(f"group column {col!r} has a missing value at row {start + int(empty[0])}")
    if ids.dtype.kind == "f" and np.isnan(ids).any():
        i = int(np.flatnonzero(np.isnan(ids))[0])
        raise CLIError(f"group column {col!r} has a NaN label at row {start + i}")
    if ids.dtype.kind not in "iubfUSO":
        raise CLIError(f"group column {col!r} has unsupported dtype {ids.dtype}")
    return ids


# --- pass 1: per-group moments, merged across batches ----------------------------------------


class GroupMoments:
    """Per-label count / mean / population std in float64, merged across batches (Chan et al.).

    The std is kept rather than M2 (the sum of squared deviations) so that rewards up to the
    float64 range do not overflow when squared: the merge is done with ``hypot``. ``bad``
    counts each group's non-finite rewards."""

    def __init__(self) -> None:
        self.index: dict = {}
        self.count = np.zeros(0, dtype=np.int64)
        self.mean = np.zeros(0)
        self.std = np.zeros(0)
        self.bad = np.zeros(0, dtype=np.int64)
        self.rows = 0
        self.nonfinite = 0

    def codes(self, labels) -> np.ndarray:
        """Global group index of each batch-local group label (new labels are added)."""
        idx = self.index
        keys = _pylist(labels)
        out = np.fromiter((idx.setdefault(k, len(idx)) for k in keys), dtype=np.int64, count=len(keys))
        k = len(idx)
        if k > len(self.count):
            grow = max(k, 2 * len(self.count)) - len(self.count)
            self.count = np.concatenate((self.count, np.zeros(grow, np.int64)))
            self.mean = np.concatenate((self.mean, np.zeros(grow)))
            self.std = np.concatenate((self.std, np.zeros(grow)))
            self.bad = np.concatenate((self.bad, np.zeros(grow, np.int64)))
        return out

    @property
    def n_groups(self) -> int:
        return len(self.index)

    def add(self, gi: np.ndarray, count: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        """Merge batch-local groups (global indices ``gi``; population stds) into the running
        statistics."""
        keep = count > 0
        gi, nb, mb, sb = gi[keep], count[keep].astype(np.float64), mean[keep], std[keep]
        na = self.count[gi].astype(np.float64)
        ma = self.mean[gi]
        n = na + nb
        first = na == 0
        with np.errstate(invalid="ignore", over="ignore"):
            delta = mb - ma
            merged_mean = np.where(delta == 0, ma, ma + delta * (nb / n))
            # n * s^2 = na * sa^2 + nb * sb^2 + delta^2 * na * nb / n
            merged_std = np.hypot(np.hypot(self.std[gi] * np.sqrt(na / n), sb * np.sqrt(nb / n)),
                                  delta * (np.sqrt(na * nb) / n))
        self.mean[gi] = np.where(first, mb, merged_mean)
        self.std[gi] = np.where(first, sb, merged_std)
        self.count[gi] += count[keep]

    def final(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.n_groups
        return self.count[:k], self.mean[:k], self.std[:k]


class Layout:
    """How the CLI finds each row's group: a label column, or consecutive groups of G rows."""

    def __init__(self, group_col: str | None, group_size: int | None) -> None:
        self.group_col, self.group_size = group_col, group_size

    def batch_groups(self, batch: Any, start: int, n: int) -> tuple[ga.Groups, Any]:
        if self.group_size is not None:
            ids = np.arange(start, start + n, dtype=np.int64) // self.group_size
        else:
            assert self.group_col is not None
            ids = _labels(batch, self.group_col, start)
        g = ga.make_groups(n, group_ids=ids)
        return g, g.labels


def _pylist(labels: Any) -> list:
    return labels.tolist() if isinstance(labels, np.ndarray) else list(labels)


def _check_columns(reader: Reader, path: str, *cols: str | None) -> None:
    missing = [c for c in cols if c is not None and c not in reader.columns]
    if missing:
        raise CLIError(
            f"{path}: no column {', '.join(map(repr, missing))}; the columns are {', '.join(map(repr, reader.columns))}"
        )


class Progress:
    """A minimal progress line on stderr (rows done, percent when the total is known)."""

    def __init__(self, label: str, total: int | None, quiet: bool) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.t0 = self.last = time.perf_counter()

    def update(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if self.quiet or not self.tty or now - self.last < 0.1:
            return
        self.last = now
        sys.stderr.write("\r" + self._line())
        sys.stderr.flush()

    def _line(self) -> str:
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            return f"{self.label} [{bar:<30}] {frac:6.1%} {self.done:,}/{self.total:,} rows"
        return f"{self.label} {self.done:,} rows"

    def close(self) -> None:
        if self.quiet:
            return
        dt = time.perf_counter() - self.t0
        sys.stderr.write(("\r" if self.tty else "") + self._line() + f" in {dt:.2f} s\n")
        sys.stderr.flush()


def pass1(reader: Reader, layout: Layout, reward_col: str, nan: str, batch_rows: int,
          progress: Progress) -> tuple[GroupMoments, np.dtype]:
    """Per-group moments over the whole file; also the result dtype (float32 if every reward
    batch is float32, else float64)."""
    acc = GroupMoments()
    dtype = None
    start = 0
    for batch in reader.batches(batch_rows):
        n = _num_rows(batch)
        if n == 0:
            continue
        g, labels = layout.batch_groups(batch, start, n)
        x = _rewards(batch, reward_col, start)
        dtype = x.dtype if dtype in (None, x.dtype) else np.dtype(np.float64)
        bad = ~np.isfinite(x)
        nbad = int(bad.sum())
        if nbad and nan == "raise":
            i = int(np.flatnonzero(bad)[0])
            raise CLIError(
                f"reward column {reward_col!r} has a non-finite value ({x[i]}) at row {start + i}; "
                "pass --nan propagate or --nan omit to allow it"
            )
        acc.nonfinite += nbad
        try:
            st = ga.group_stats(x, groups=g, ddof=0, nan=nan)
        except ValueError as e:
            # the core numbers groups within the batch: name the label instead
            msg = re.sub(r"group (\d+)", lambda m: f"group {_pylist(labels)[int(m.group(1))]!r}", str(e), count=1)
            raise CLIError(f"rows {start}..{start + n - 1}: {msg}") from None
        gi = acc.codes(labels)
        acc.add(gi, st.count, st.mean, st.std)
        if nbad:
            np.add.at(acc.bad, gi[g.codes()[bad]], 1)
        start += n
        progress.update(n)
    progress.close()
    acc.rows = start
    if start == 0:
        raise CLIError("the input has no rows")
    if layout.group_size is not None and start % layout.group_size:
        raise CLIError(
            f"--group-size {layout.group_size} does not divide the number of rows ({start})"
        )
    count, mean, std = acc.final()
    k = acc.n_groups
    with np.errstate(invalid="ignore"):
        lost = (count > 0) & ~(np.isfinite(mean) & np.isfinite(std))
    lost &= (acc.bad[:k] == 0) | (nan == "omit")
    if lost.any():
        first = int(np.flatnonzero(lost)[0])
        label = next(lab for lab, i in acc.index.items() if i == first)
        raise CLIError(f"the rewards of group {label!r} overflow float64 in its statistics; rescale the rewards")
    return acc, np.dtype(dtype)


def _std(std: np.ndarray, count: np.ndarray, ddof: int) -> np.ndarray:
    """Population stds turned into stds with ``ddof`` (NaN where count <= ddof)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > ddof, std * np.sqrt(count / np.maximum(count - ddof, 1)), np.nan)


def _norm(*parts: np.ndarray) -> float:
    """sqrt of the sum of squares of all parts, scaled so that it does not overflow."""
    x = np.abs(np.concatenate([np.ravel(p) for p in parts]))
    if x.size == 0:
        return 0.0
    big = float(x.max())
    if not math.isfinite(big) or big == 0.0:
        return big
    return big * math.sqrt(float(np.sum((x / big) ** 2)))


def _batch(count: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[float, float, float, float]:
    """(total count, batch mean, population std of the rewards, population std of the group
    residuals) over the groups with at least one (valid) reward."""
    valid = count > 0
    c, mu, s = count[valid].astype(np.float64), mean[valid], std[valid]
    total = float(c.sum())
    if total == 0:
        return 0.0, math.nan, math.nan, math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.sqrt(c / total)
        bmean = float(np.sum(c / total * mu))
        return total, bmean, _norm(s * w, (mu - bmean) * w), _norm(s * w)


def group_coefficients(acc: GroupMoments, center: str, scale: str, ddof: int, eps: float,
                       singleton: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-group coefficients ``(mu, k, slow_factor, slow_denom)`` so that
    ``A = (r - mu) * k`` with ``k = factor / denom``: the same case table as the core. Where
    ``k`` overflows (a subnormal denominator), ``slow_*`` hold ``factor`` and ``denom`` and
    :func:`_apply` computes ``(r - mu) / denom * factor`` instead (elsewhere they are NaN)."""
    count, mean, std = acc.final()
    lone = (count == 1) & np.isfinite(mean)
    if singleton == "error" and lone.any():
        g = int(np.flatnonzero(lone)[0])
        label = next(lab for lab, i in acc.index.items() if i == g)
        raise CLIError(f"group {label!r} has a single reward, and --singleton error; use --singleton zero or raw")
    valid = count > 0
    batch_denom = 1.0
    if scale in ("batch", "batch_residual"):
        total, _, bstd, rstd = _batch(count, mean, std)
        s = (bstd if scale == "batch" else rstd) * math.sqrt(total / (total - ddof)) if total > ddof else math.nan
        batch_denom = s + eps
    nonfinite = valid & ~np.isfinite(mean)
    multi = count >= 2
    n = count.astype(np.float64)
    mu = np.where(multi & (center != "none"), mean, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        factor = np.where(multi, n / (n - 1) if center == "loo" else 1.0, 0.0)
        if scale == "group":
            denom = np.where(multi, _std(std, count, ddof) + eps, 1.0)
        elif scale == "none":
            denom = np.ones_like(n)
        else:
            denom = np.where(multi, batch_denom, 1.0)
        if singleton == "raw":
            one = count == 1
            factor = np.where(one, 1.0, factor)
            denom = np.where(one, (1.0 + eps) if scale == "group" else (1.0 if scale == "none" else batch_denom), denom)
        k = np.where(denom == 0.0, 0.0, factor / denom)
    mu = np.where(nonfinite, np.nan, mu)
    k = np.where(nonfinite, np.nan, k)
    # a subnormal denominator: 1/denom overflows, so divide the residuals themselves
    slow = ~nonfinite & ~np.isfinite(k) & np.isfinite(denom) & (denom != 0.0)
    return mu, k, np.where(slow, factor, np.nan), np.where(slow, denom, np.nan)


def _apply(x: np.ndarray, gi: np.ndarray, mu: np.ndarray, k: np.ndarray, slow_factor: np.ndarray,
           slow_denom: np.ndarray) -> np.ndarray:
    """Advantages of one batch (float64) from the per-group coefficients."""
    with np.errstate(invalid="ignore", over="ignore"):
        a = (x - mu[gi]) * k[gi]
        slow = ~np.isnan(slow_denom[gi])
        if slow.any():
            g = gi[slow]
            a[slow] = (x[slow] - mu[g]) / slow_denom[g] * slow_factor[g]
    return a


# --- writers ---------------------------------------------------------------------------------


class Writer:
    def __init__(self, path: str, n_rows: int, dtype: np.dtype, out_col: str) -> None:
        self.path, self.n_rows, self.dtype, self.out_col = path, n_rows, dtype, out_col

    def write(self, batch, adv: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _tmp(path: str) -> str:
    return path + ".tmp-groupadv"


class NpyWriter(Writer):
    """The advantage column alone, written in place through a memory map."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.mm = np.lib.format.open_memmap(_tmp(self.path), mode="w+", dtype=self.dtype, shape=(self.n_rows,))
        self.pos = 0

    def write(self, batch: Any, adv: np.ndarray) -> None:
        self.mm[self.pos:self.pos + len(adv)] = adv
        self.pos += len(adv)

    def close(self) -> None:
        self.mm.flush()
        del self.mm
        os.replace(_tmp(self.path), self.path)


def _to_numpy(col: Any) -> np.ndarray:
    if isinstance(col, np.ndarray):
        return col
    return col.to_numpy(zero_copy_only=False)


class NpzWriter(Writer):
    """All columns plus the advantages, as one .npz (built in memory)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.parts: dict[str, list] = {}

    def write(self, batch: Any, adv: np.ndarray) -> None:
        names = batch.schema.names if _is_arrow(batch) else list(batch)
        for name in names:
            col = _to_numpy(batch.column(name) if _is_arrow(batch) else batch[name])
            if col.dtype == object:
                col = col.astype(str)
            self.parts.setdefault(name, []).append(col)
        self.parts.setdefault(self.out_col, []).append(adv)

    def close(self) -> None:
        with open(_tmp(self.path), "wb") as f:
            np.savez(f, **{k: np.concatenate(v) for k, v in self.parts.items()})  # type: ignore[arg-type]
        os.replace(_tmp(self.path), self.path)


class CsvWriter(Writer):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.f = open(_tmp(self.path), "w", newline="")
        self.w = csv.writer(self.f)
        self.header = False

    def write(self, batch: Any, adv: np.ndarray) -> None:
        if _is_arrow(batch):
            names = batch.schema.names
            cols = [batch.column(c).to_pylist() for c in names]
        else:
            names = list(batch)
            cols = [batch[c].tolist() for c in names]
        if not self.header:
            self.w.writerow(names + [self.out_col])
            self.header = True
        cols.append(adv.tolist())
        self.w.writerows(zip(*cols))

    def close(self) -> None:
        self.f.close()
        os.replace(_tmp(self.path), self.path)


class ArrowWriter(Writer):
    def __init__(self, path: str, n_rows: int, dtype: np.dtype, out_col: str, fmt: str) -> None:
        super().__init__(path, n_rows, dtype, out_col)
        self.pa = _pyarrow(f"writing {fmt} files")
        self.fmt = fmt
        self.sink: Any = None

    def write(self, batch: Any, adv: np.ndarray) -> None:
        pa = self.pa
        if _is_arrow(batch):
            rb = batch.append_column(self.out_col, pa.array(adv))
        else:
            cols = {k: (v.astype(str) if v.dtype == object else v) for k, v in batch.items()}
            cols[self.out_col] = adv
            rb = pa.record_batch(cols)
        if self.sink is None:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self.sink = pq.ParquetWriter(_tmp(self.path), rb.schema)
            else:
                import pyarrow.ipc as ipc

                self.sink = ipc.new_file(_tmp(self.path), rb.schema)
        self.sink.write_batch(rb)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
            os.replace(_tmp(self.path), self.path)


def open_writer(path: str, n_rows: int, dtype: np.dtype, out_col: str) -> Writer:
    fmt = _format(path)
    if fmt == "npy":
        return NpyWriter(path, n_rows, dtype, out_col)
    if fmt == "npz":
        return NpzWriter(path, n_rows, dtype, out_col)
    if fmt == "csv":
        return CsvWriter(path, n_rows, dtype, out_col)
    return ArrowWriter(path, n_rows, dtype, out_col, fmt)


# --- commands --------------------------------------------------------------------------------

ESTIMATORS = {"grpo": "mean", "drgrpo": "mean", "rloo": "loo"}


def _layout(args: argparse.Namespace, reader: Reader) -> Layout:
    if (args.group_col is None) == (args.group_size is None):
        raise CLIError("give exactly one of --group-col or --group-size")
    if args.group_size is not None and args.group_size < 1:
        raise CLIError(f"--group-size must be >= 1, got {args.group_size}")
    _check_columns(reader, args.input, args.group_col, args.reward_col)
    return Layout(args.group_col, args.group_size)


def cmd_compute(args: argparse.Namespace) -> int:
    """Two passes over the input: per-group moments, then advantages batch by batch."""
    if args.estimator != "grpo" and args.scale not in (None, "none"):
        raise CLIError(f"--scale applies to --estimator grpo only ({args.estimator} does not divide by a std)")
    center = ESTIMATORS[args.estimator]
    scale = (args.scale or "group") if args.estimator == "grpo" else "none"
    if not (math.isfinite(args.eps) and args.eps >= 0):
        raise CLIError(f"--eps must be a finite number >= 0, got {args.eps}")
    if args.batch_rows < 1:
        raise CLIError(f"--batch-rows must be >= 1, got {args.batch_rows}")
    if os.path.abspath(args.output) == os.path.abspath(args.input):
        raise CLIError("the output file must differ from the input file")
    _format(args.output)
    reader = open_reader(args.input, args.group_col, args.reward_col)
    layout = _layout(args, reader)
    if args.output_col in reader.columns and _format(args.output) != "npy":
        raise CLIError(f"the input already has a column {args.output_col!r}; choose another --output-col")

    acc, dtype = pass1(reader, layout, args.reward_col, args.nan, args.batch_rows,
                       Progress("pass 1/2 (group statistics)", reader.num_rows, args.quiet))
    mu, k, slow_factor, slow_denom = group_coefficients(acc, center, scale, args.ddof, args.eps, args.singleton)

    writer = open_writer(args.output, acc.rows, dtype, args.output_col)
    progress = Progress("pass 2/2 (advantages)", acc.rows, args.quiet)
    start = 0
    try:
        for batch in reader.batches(args.batch_rows):
            n = _num_rows(batch)
            if n == 0:
                continue
            x = _rewards(batch, args.reward_col, start)
            g, labels = layout.batch_groups(batch, start, n)
            gi = acc.codes(labels)[g.codes()]
            xf = x.astype(np.float64)
            a = _apply(xf, gi, mu, k, slow_factor, slow_denom)
            if args.nan == "omit":
                a[~np.isfinite(xf)] = 0.0
            a = a.astype(dtype)
            if args.decimals is not None:
                np.round(a, args.decimals, out=a)
            writer.write(batch, a)
            start += n
            progress.update(n)
        writer.close()
    except BaseException:
        try:
            os.remove(_tmp(args.output))
        except OSError:
            pass
        raise
    progress.close()
    if start != acc.rows:
        raise CLIError(f"the input changed between the two passes ({acc.rows} then {start} rows)")
    if not args.quiet:
        sys.stderr.write(f"wrote {acc.rows:,} advantages ({acc.n_groups:,} groups) to {args.output}\n")
    return 0


def file_stats(args: argparse.Namespace) -> dict:
    """Diagnostics of a file (streamed: one pass)."""
    reader = open_reader(args.input, args.group_col, args.reward_col)
    layout = _layout(args, reader)
    acc, _ = pass1(reader, layout, args.reward_col, args.nan, args.batch_rows,
                   Progress("reading", reader.num_rows, args.quiet))
    count, mean, pstd = acc.final()
    std = _std(pstd, count, args.ddof)
    multi = count >= 2
    ok = multi & np.isfinite(std)
    total, bmean, bstd, _ = _batch(count, mean, pstd)
    return {
        "rows": acc.rows,
        "n_groups": acc.n_groups,
        "group_size_min": int(count.min()) if acc.n_groups else 0,
        "group_size_mean": float(count.mean()) if acc.n_groups else math.nan,
        "group_size_max": int(count.max()) if acc.n_groups else 0,
        "singleton_groups": int(np.sum(count == 1)),
        "mean_within_std": float(std[ok].mean()) if ok.any() else math.nan,
        "frac_zero_std": float(np.sum(std[multi] == 0.0) / multi.sum()) if multi.any() else math.nan,
        "reward_mean": bmean,
        "reward_std": bstd * math.sqrt(total / (total - args.ddof)) if total > args.ddof else math.nan,
        "nonfinite_rewards": acc.nonfinite,
    }


def cmd_stats(args: argparse.Namespace) -> int:
    s = file_stats(args)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print("| statistic | value |\n|---|---:|")
        for key, v in s.items():
            print(f"| {key} | {v:.6g} |" if isinstance(v, float) else f"| {key} | {v:,} |")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    layouts = args.layouts.split(",")
    for lay in layouts:
        if lay not in _bench.LAYOUTS:
            raise CLIError(f"unknown layout {lay!r}; choose from {', '.join(_bench.LAYOUTS)}")
    def report(m: str) -> None:
        sys.stderr.write(f"  timing {m}\n")

    rows = _bench.run(sizes, layouts, group_size=args.group_size, dtype=np.dtype(args.dtype),
                      repeats=args.repeats, num_threads=args.threads,
                      progress=None if args.quiet else report)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"groupadv {ga.__version__}, backend {ga.backend()}, {ga.get_num_threads() if args.threads is None else args.threads} threads, "
              f"{args.dtype}, GRPO z-score, group size {args.group_size}, median of {args.repeats}+ runs\n")
        print(_bench.markdown_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="groupadv", description="Group-relative advantages (GRPO, Dr. GRPO, RLOO) for tables on disk.")
    p.add_argument("--version", action="version", version=f"groupadv {ga.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def table_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("input", help="input file: .parquet, .arrow/.feather, .csv, .npy or .npz")
        sp.add_argument("--group-col", help="column with the group label of each row (rows of a group may be anywhere)")
        sp.add_argument("--group-size", type=int, help="instead of --group-col: consecutive groups of this many rows")
        sp.add_argument("--reward-col", default="reward", help="column with the rewards (default: reward)")
        sp.add_argument("--nan", choices=("raise", "propagate", "omit"), default="raise",
                        help="non-finite or missing rewards: error (default), NaN for their group, or left out")
        sp.add_argument("--ddof", type=int, choices=(0, 1), default=0, help="std degrees of freedom (default 0)")
        sp.add_argument("--batch-rows", type=int, default=1 << 20, help="rows per batch when streaming (default 1048576)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    c = sub.add_parser("compute", help="write advantages for a table", description=cmd_compute.__doc__)
    table_args(c)
    c.add_argument("-o", "--output", required=True, help="output file; format by extension (.npy: the advantage column only)")
    c.add_argument("--estimator", choices=tuple(ESTIMATORS), default="grpo")
    c.add_argument("--scale", choices=("group", "batch", "batch_residual", "none"), help="grpo only (default group)")
    c.add_argument("--eps", type=float, default=0.0, help="added to the std (default 0)")
    c.add_argument("--singleton", choices=("zero", "raw", "error"), default="zero")
    c.add_argument("--decimals", type=int, help="round the advantages")
    c.add_argument("--output-col", default="advantage", help="name of the new column (default: advantage)")
    c.set_defaults(func=cmd_compute)

    s = sub.add_parser("stats", help="per-file group diagnostics")
    table_args(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_stats)

    b = sub.add_parser("bench", help="short benchmark: groupadv vs numpy vs a memory copy")
    b.add_argument("--sizes", default="10000,1000000,5000000", help="comma-separated numbers of rewards")
    b.add_argument("--layouts", default="uniform,ragged,ids", help=f"comma-separated, from {','.join(_bench.LAYOUTS)}")
    b.add_argument("--group-size", type=int, default=16)
    b.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--threads", type=int, help="threads for groupadv (default: all)")
    b.add_argument("--json", action="store_true")
    b.add_argument("-q", "--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``groupadv`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        parser.exit(2, f"groupadv: error: {e}\n")
    except (ValueError, TypeError, OSError) as e:
        parser.exit(2, f"groupadv: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
