"""Readers: a table on disk, read (twice) in batches of rows.

A batch is a ``{column name: numpy array}`` dict (.npy, .npz, CSV) or a pyarrow RecordBatch
(Parquet, Arrow). CSV cells are text in every batch, read with pyarrow.csv when it is installed
and with the standard library otherwise, so that both give the same strings: the columns that
pass through to the output keep the text of the input exactly.
"""

from __future__ import annotations

import csv
import os
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import CLIError
from .formats import file_format, have_pyarrow, pyarrow

# What a damaged file can raise while numpy, zipfile or zlib read it (numpy parses a .npy
# header with the tokenizer: TokenError, SyntaxError).
_DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError,
            tokenize.TokenError, SyntaxError, MemoryError, OverflowError)


class Reader:
    """A table on disk, readable (more than once) in batches of rows."""

    path: str
    columns: list[str]
    num_rows: int | None = None

    def batches(self, rows: int) -> Iterator[Any]:
        """Batches of at most ``rows`` rows, in file order."""
        try:
            yield from self._batches(rows)
        except CLIError:
            raise
        except _DAMAGED as e:
            raise CLIError(f"{self.path}: cannot read: {_reason(e)}") from None

    def _batches(self, rows: int) -> Iterator[Any]:
        raise NotImplementedError


def _reason(e: BaseException) -> str:
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text (save it as UTF-8)"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _slices(n: int, rows: int) -> Iterator[slice]:
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def _check_magic(path: str, magic: bytes, what: str) -> None:
    """A file that does not start like the format would otherwise reach numpy's pickle
    fallback, whose message talks about pickled data."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(magic))
    except OSError as e:
        raise CLIError(f"{path}: cannot read: {_reason(e)}") from None
    if head != magic:
        raise CLIError(f"{path}: not {what} file" + (" (it is empty)" if not head else ""))


class NpyReader(Reader):
    def __init__(self, path: str) -> None:
        self.path = path
        _check_magic(path, b"\x93NUMPY", "a .npy")
        try:
            self.arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except _DAMAGED as e:
            raise CLIError(f"{path}: cannot read as .npy: {_reason(e)}") from None
        if not isinstance(self.arr, np.ndarray):
            raise CLIError(f"{path}: not a .npy file")
        if self.arr.ndim != 1:
            raise CLIError(f"{path}: expected a 1-D array (structured, or plain rewards), got shape {self.arr.shape}")
        self.structured = self.arr.dtype.names is not None
        self.columns = list(self.arr.dtype.names) if self.structured else ["reward"]
        self.num_rows = len(self.arr)

    def _batches(self, rows: int) -> Iterator[dict]:
        for s in _slices(len(self.arr), rows):
            part = self.arr[s]
            if self.structured:
                yield {c: np.asarray(part[c]) for c in self.columns}
            else:
                yield {"reward": np.asarray(part)}


class NpzReader(Reader):
    def __init__(self, path: str) -> None:
        self.path = path
        _check_magic(path, b"PK", "a .npz (zip)")
        try:
            with np.load(path, allow_pickle=False) as z:
                self.data = {k: z[k] for k in z.files}
        except AttributeError:  # np.load gave an array, not an archive: a .npy file named .npz
            raise CLIError(f"{path}: not a .npz archive") from None
        except _DAMAGED as e:
            raise CLIError(f"{path}: cannot read as .npz: {_reason(e)}") from None
        lengths = set()
        for k, v in self.data.items():
            if v.ndim != 1:
                raise CLIError(f"{path}: array {k!r} must be 1-D, got shape {v.shape}")
            lengths.add(len(v))
        if len(lengths) > 1:
            raise CLIError(f"{path}: the arrays have different lengths {sorted(lengths)}")
        self.columns = list(self.data)
        self.num_rows = lengths.pop() if lengths else 0

    def _batches(self, rows: int) -> Iterator[dict]:
        for s in _slices(self.num_rows or 0, rows):
            yield {k: v[s] for k, v in self.data.items()}


# The standard library refuses fields over 128 KiB; pyarrow does not: read both alike.
_FIELD_LIMIT = 1 << 30


class CsvReader(Reader):
    """CSV with a header row, UTF-8 (a byte-order mark is skipped). Every cell is read as text,
    so labels ``07`` and ``7`` differ and pass-through columns keep their text; an empty reward
    cell is a missing reward (NaN)."""

    def __init__(self, path: str, use_arrow: bool) -> None:
        self.path = path
        self.use_arrow = use_arrow
        csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), None)
        except UnicodeDecodeError as e:
            raise CLIError(f"{path}: {_reason(e)}") from None
        except csv.Error as e:
            raise CLIError(f"{path}: the header row: {e}") from None
        if not header:
            raise CLIError(f"{path}: empty CSV file (a header row is needed)")
        dup = sorted({c for c in header if header.count(c) > 1})
        if dup:
            raise CLIError(f"{path}: the header names column(s) {', '.join(map(repr, dup))} more than once")
        self.columns = header

    def _batches(self, rows: int) -> Iterator[dict]:
        yield from (self._arrow_batches(rows) if self.use_arrow else self._stdlib_batches(rows))

    def _stdlib_batches(self, rows: int) -> Iterator[dict]:
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                next(reader)
                width = len(self.columns)
                buf: list[list[str]] = []
                for row in reader:
                    if not row:
                        continue
                    if len(row) != width:
                        raise CLIError(f"{self.path}: line {reader.line_num} has {len(row)} fields, the header has {width}")
                    buf.append(row)
                    if len(buf) >= rows:
                        yield self._columns(buf)
                        buf = []
            except csv.Error as e:
                raise CLIError(f"{self.path}: line {reader.line_num}: {e}") from None
            if buf:
                yield self._columns(buf)

    def _columns(self, buf: list[list[str]]) -> dict:
        cols = list(zip(*buf))
        return {name: _text(col) for name, col in zip(self.columns, cols)}

    def _arrow_batches(self, rows: int) -> Iterator[dict]:
        pa = pyarrow("reading CSV with pyarrow")
        import pyarrow.csv as pacsv

        conv = pacsv.ConvertOptions(column_types={c: pa.string() for c in self.columns},
                                    strings_can_be_null=False, quoted_strings_can_be_null=False)
        parse = pacsv.ParseOptions(newlines_in_values=True)
        try:
            reader = pacsv.open_csv(self.path, convert_options=conv, parse_options=parse,
                                    read_options=pacsv.ReadOptions(block_size=1 << 22))
            for rb in reader:
                if rb.schema.names != self.columns:
                    raise CLIError(f"{self.path}: the header changed while it was read")
                for s in _slices(rb.num_rows, rows):
                    part = rb.slice(s.start, s.stop - s.start)
                    yield {name: _text(part.column(i).to_numpy(zero_copy_only=False))
                           for i, name in enumerate(self.columns)}
        except pa.ArrowInvalid as e:
            msg = str(e)
            if "invalid UTF8" in msg or "UTF8" in msg:
                msg = "not UTF-8 text (save it as UTF-8)"
            raise CLIError(f"{self.path}: {msg}") from None


def _text(cells: Any) -> np.ndarray:
    """A column of CSV cells as an object array of str."""
    out = np.empty(len(cells), dtype=object)
    out[:] = list(cells)
    return out


class ArrowReader(Reader):
    def __init__(self, path: str, fmt: str) -> None:
        pa = pyarrow(f"reading {fmt} files")
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
        except (OSError, pa.ArrowException, ValueError) as e:
            raise CLIError(f"{path}: cannot read as {fmt}: {e}") from None
        self.columns = list(schema.names)
        dup = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dup:
            raise CLIError(f"{path}: the file has column(s) {', '.join(map(repr, dup))} more than once")

    def _batches(self, rows: int) -> Iterator[Any]:
        pa = pyarrow("reading")
        try:
            if self.fmt == "parquet":
                yield from self.pf.iter_batches(batch_size=rows)
                return
            src = pa.memory_map(self.path)
            reader = self.ipc.open_stream(src) if self.stream else self.ipc.open_file(src)
            it = reader if self.stream else (reader.get_batch(i) for i in range(reader.num_record_batches))
            for rb in it:
                # IPC buffers are used as they lie on disk: damaged offsets would crash the
                # conversion (a segfault), so check them first
                rb.validate(full=True)
                for s in _slices(rb.num_rows, rows):
                    yield rb.slice(s.start, s.stop - s.start)
        except pa.ArrowException as e:
            raise CLIError(f"{self.path}: cannot read as {self.fmt}: {e}") from None


def open_reader(path: str) -> Reader:
    """A reader for ``path`` chosen by its extension."""
    if not os.path.exists(path):
        raise CLIError(f"input file not found: {path}")
    if os.path.isdir(path):
        raise CLIError(f"input is a directory, not a file: {path}")
    fmt = file_format(path)
    if fmt == "npy":
        return NpyReader(path)
    if fmt == "npz":
        return NpzReader(path)
    if fmt == "csv":
        return CsvReader(path, have_pyarrow())
    return ArrowReader(path, fmt)


__all__ = ["Reader", "open_reader"]
