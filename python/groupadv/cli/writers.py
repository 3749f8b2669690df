"""Writers: the output of ``compute``, written to a temporary file beside it.

Each writer writes into a file made by ``tempfile.mkstemp`` in the output's directory (a name no
other run shares); :meth:`Writer.commit` renames it over the output only after the whole run
succeeded, and :meth:`Writer.discard` removes it on any error or signal. Every write error
(a full disk included) is an ``OSError`` from an ordinary ``write``: no memory map, which would
turn a full disk into SIGBUS.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from typing import Any

import numpy as np

from .columns import is_arrow
from .errors import CLIError
from .formats import file_format, pyarrow


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Writer:
    """Rows in, one temporary file beside ``path`` out; ``commit`` puts it in place."""

    def __init__(self, path: str, n_rows: int, dtype: np.dtype, out_col: str) -> None:
        self.path, self.n_rows, self.dtype, self.out_col = path, n_rows, dtype, out_col
        folder = os.path.dirname(os.path.abspath(path))
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp-groupadv",
                                            dir=folder)
        except OSError as e:
            raise CLIError(f"cannot create the output {path}: {e.strerror or e}") from None
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # the mode open() would give, not mkstemp's 0600
        except OSError:
            pass
        self.file: Any = os.fdopen(fd, "wb")

    def write(self, batch: Any, adv: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Write what is still buffered (format trailers) into the temporary file."""

    def commit(self) -> None:
        """Finish the file and rename it over the output."""
        self._finish()
        self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Close and remove the temporary file (after an error or a signal). Best effort, and
        it always reaches the removal: nothing raised here (a second signal included) may
        replace the error that is on its way out."""
        for step in (self._abandon, self.file.close):
            try:
                step()
            except BaseException:  # noqa: BLE001, S110
                pass
        try:
            os.remove(self.tmp)
        except OSError:
            pass

    def _abandon(self) -> None:
        """Let go of format-specific handles without finishing the file."""


class NpyWriter(Writer):
    """The advantage column alone: the .npy header, then each batch appended."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(self.dtype)), "fortran_order": False,
                  "shape": (self.n_rows,)}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.pos = 0

    def write(self, batch: Any, adv: np.ndarray) -> None:
        if self.pos + len(adv) > self.n_rows:
            raise CLIError(f"the input changed between the two passes (more than {self.n_rows} rows)")
        self.file.write(np.ascontiguousarray(adv, dtype=self.dtype).data)
        self.pos += len(adv)


def _to_numpy(col: Any) -> np.ndarray:
    if isinstance(col, np.ndarray):
        return col
    return col.to_numpy(zero_copy_only=False)


def _fixed_width(col: np.ndarray) -> np.ndarray:
    """An object column (text, bytes, nulls) as a numpy bytes or str array; nulls become
    empty, as in CSV."""
    cells = ["" if v is None else v for v in col.tolist()]
    if cells and all(isinstance(v, bytes) or v == "" for v in cells):
        return np.array([b"" if v == "" else v for v in cells], dtype=bytes)
    return np.array([str(v) for v in cells], dtype=str)


def _text_cell(v: Any) -> Any:
    """A cell for the CSV writer: bytes are written as their UTF-8 text."""
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise CLIError(f"a binary cell ({v[:20]!r}) is not UTF-8 text; write .parquet, .arrow or .npz instead") from None
    return v


class NpzWriter(Writer):
    """All columns plus the advantages, as one .npz (built in memory)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.parts: dict[str, list] = {}

    def write(self, batch: Any, adv: np.ndarray) -> None:
        names = batch.schema.names if is_arrow(batch) else list(batch)
        for name in names:
            col = _to_numpy(batch.column(name) if is_arrow(batch) else batch[name])
            if col.dtype == object:
                col = _fixed_width(col)
            self.parts.setdefault(name, []).append(col)
        self.parts.setdefault(self.out_col, []).append(adv)

    def _finish(self) -> None:
        np.savez(self.file, **{k: np.concatenate(v) for k, v in self.parts.items()})  # type: ignore[arg-type]


class CsvWriter(Writer):
    """UTF-8 CSV: the input's cells (CSV text passes through unchanged), then the advantage."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.file = io.TextIOWrapper(self.file, encoding="utf-8", newline="")
        self.w = csv.writer(self.file)
        self.header = False

    def write(self, batch: Any, adv: np.ndarray) -> None:
        if is_arrow(batch):
            names = batch.schema.names
            cols = [batch.column(c).to_pylist() for c in names]
        else:
            names = list(batch)
            cols = [batch[c].tolist() for c in names]
        if not self.header:
            self.w.writerow(names + [self.out_col])
            self.header = True
        cols = [[_text_cell(v) for v in col] if any(isinstance(v, bytes) for v in col) else col for col in cols]
        cols.append(adv.tolist())
        self.w.writerows(zip(*cols))


class ArrowWriter(Writer):
    """Parquet or Arrow IPC: the input's columns plus the advantages, batch by batch."""

    def __init__(self, path: str, n_rows: int, dtype: np.dtype, out_col: str, fmt: str) -> None:
        self.pa = pyarrow(f"writing {fmt} files")
        super().__init__(path, n_rows, dtype, out_col)
        self.fmt = fmt
        self.sink: Any = None

    def write(self, batch: Any, adv: np.ndarray) -> None:
        pa = self.pa
        if is_arrow(batch):
            rb = batch.append_column(self.out_col, pa.array(adv))
        else:
            cols = {k: (v.astype(str) if v.dtype == object else v) for k, v in batch.items()}
            cols[self.out_col] = adv
            rb = pa.record_batch(cols)
        if self.sink is None:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self.sink = pq.ParquetWriter(self.file, rb.schema)
            else:
                import pyarrow.ipc as ipc

                self.sink = ipc.new_file(self.file, rb.schema)
        self.sink.write_batch(rb)

    def _finish(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def _abandon(self) -> None:
        if self.sink is not None:
            self.sink.close()


def open_writer(path: str, n_rows: int, dtype: np.dtype, out_col: str) -> Writer:
    fmt = file_format(path)
    if fmt == "npy":
        return NpyWriter(path, n_rows, dtype, out_col)
    if fmt == "npz":
        return NpzWriter(path, n_rows, dtype, out_col)
    if fmt == "csv":
        return CsvWriter(path, n_rows, dtype, out_col)
    return ArrowWriter(path, n_rows, dtype, out_col, fmt)
