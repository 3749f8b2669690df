"""The reward and label columns of a batch, as the arrays groupadv takes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CLIError


def arrow_errors() -> tuple[type[BaseException], ...]:
    """pyarrow's exception base class, when pyarrow is installed: a damaged Arrow or Parquet
    file can raise it (from a lazy decode) while a batch's columns are converted."""
    try:
        import pyarrow as pa
    except ImportError:
        return ()
    return (pa.ArrowException,)


def is_arrow(batch: Any) -> bool:
    return not isinstance(batch, dict)


def num_rows(batch: Any) -> int:
    return batch.num_rows if is_arrow(batch) else len(next(iter(batch.values()))) if batch else 0


def rewards(batch: Any, col: str, start: int) -> np.ndarray:
    """The reward column of a batch as float32/float64 (nulls and empty cells become NaN)."""
    if is_arrow(batch):
        import pyarrow as pa

        arr = batch.column(col)
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = arr.dictionary_decode()
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
        if pa.types.is_floating(t) and t.bit_width == 16:
            arr = arr.cast(pa.float32())
        x = arr.to_numpy(zero_copy_only=False)
        if x.dtype == object:  # booleans with nulls
            x = np.array([np.nan if v is None else float(v) for v in x], dtype=np.float64)
    else:
        x = batch[col]
        if x.dtype == object:  # CSV cells
            x = parse_cells(x, col, start)
        elif x.dtype.kind not in "fiub":
            raise CLIError(f"reward column {col!r} is not numeric (dtype {x.dtype})")
        elif x.ndim != 1:
            raise CLIError(f"reward column {col!r} holds arrays of shape {x.shape[1:]}, not numbers")
    if x.dtype.kind == "f" and x.dtype.itemsize <= 4:
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float64)


def parse_cells(cells: Any, col: str, start: int) -> np.ndarray:
    """CSV reward cells as float64: an empty cell is a missing reward (NaN); anything that
    ``float()`` does not read is an error naming its row."""
    try:  # the common case in one C loop (float() of each cell)
        return np.asarray(cells, dtype=object).astype(np.float64)
    except (TypeError, ValueError):
        pass
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


def labels(batch: Any, col: str, start: int) -> Any:
    """The group column of a batch as something groupadv accepts as ``group_ids``."""
    if is_arrow(batch):
        import pyarrow as pa

        arr = batch.column(col)
        if arr.null_count:
            i = next(k for k, v in enumerate(arr.is_null().to_pylist()) if v)
            raise CLIError(f"group column {col!r} has a missing value at row {start + i}")
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        t = arr.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t)
                or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)
                or getattr(pa.types, "is_binary_view", lambda _: False)(t)):
            raise CLIError(f"group column {col!r} has unsupported type {t} (use integers or strings)")
        ids = arr.to_numpy(zero_copy_only=False)
    else:
        ids = batch[col]
        if ids.ndim != 1:
            raise CLIError(f"group column {col!r} holds arrays of shape {ids.shape[1:]}, not labels")
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
