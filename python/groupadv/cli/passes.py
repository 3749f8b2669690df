"""The two passes of ``compute`` over a file: group moments, then advantages batch by batch.

The numbers come from :mod:`._numerics` through its narrow interface; this module only walks
the batches, numbers the groups file-wide and names rows and labels in errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import groupadv as ga

from . import columns
from ._numerics import Coefficients, FileMoments, batch_moments, check_overflow
from .errors import CLIError
from .layout import LabelIndex, Layout, pylist
from .progress import Progress
from .readers import Reader


@contextmanager
def damaged(reader: Reader, start: int, n: int) -> Iterator[None]:
    """pyarrow errors while a batch's columns are converted: a damaged file, named."""
    try:
        yield
    except columns.arrow_errors() as e:
        raise CLIError(f"{reader.path}: cannot read rows {start}..{start + n - 1}: {e}") from None


def pass1(reader: Reader, layout: Layout, reward_col: str, nan: str, batch_rows: int,
          progress: Progress) -> tuple[FileMoments, LabelIndex, np.dtype]:
    """Per-group moments over the whole file, the numbering of its labels, and the result
    dtype (float32 if every reward batch is float32, else float64)."""
    acc = FileMoments()
    index = LabelIndex()
    dtype = None
    start = 0
    for batch in reader.batches(batch_rows):
        n = columns.num_rows(batch)
        if n == 0:
            continue
        with damaged(reader, start, n):
            g, labels = layout.batch_groups(batch, start, n)
            x = columns.rewards(batch, reward_col, start)
        dtype = x.dtype if dtype in (None, x.dtype) else np.dtype(np.float64)
        try:
            part = batch_moments(x, g, nan)
        except ga.errors.NonFiniteRewardError as e:
            # the core names the reward (e.index) of each non-finite fault under nan="raise"
            where = "" if e.index is None else f" ({x[e.index]}) at row {start + e.index}"
            raise CLIError(
                f"reward column {reward_col!r} has a non-finite value{where}; "
                "pass --nan propagate or --nan omit to allow it"
            ) from None
        except ValueError as e:
            # the core numbers groups within the batch: name the label instead
            names = pylist(labels)

            def label(m: re.Match) -> str:
                return f"group {names[int(m.group(1))]!r}"

            msg = re.sub(r"group (\d+)", label, str(e), count=1)
            raise CLIError(f"rows {start}..{start + n - 1}: {msg}") from None
        gi = index.codes(labels)
        acc.merge_at(gi, part)
        bad = ~np.isfinite(x)  # counted for `stats` and to tell overflow from NaN
        if bad.any():
            acc.add_nonfinite(gi[g.codes()[bad]])
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
    lost = check_overflow(acc, nan)
    if lost is not None:
        raise CLIError(f"the rewards of group {index.label(lost)!r} overflow float64 in its statistics; rescale the rewards")
    return acc, index, np.dtype(dtype)


def pass2(reader: Reader, layout: Layout, reward_col: str, index: LabelIndex, coef: Coefficients, rows: int,
          nan: str, dtype: np.dtype, decimals: int | None, batch_rows: int,
          progress: Progress) -> Iterator[tuple[Any, np.ndarray]]:
    """Each batch with its advantages. The file must still hold what pass 1 read: a label
    pass 1 did not see, or a different number of rows, is an error."""
    start = 0
    for batch in reader.batches(batch_rows):
        n = columns.num_rows(batch)
        if n == 0:
            continue
        if start + n > rows:
            raise CLIError(f"the input changed between the two passes ({rows} rows, then more)")
        with damaged(reader, start, n):
            x = columns.rewards(batch, reward_col, start)
            g, labels = layout.batch_groups(batch, start, n)
        yield batch, coef.advantages(x, g, index.known_codes(labels), nan, dtype, decimals)
        start += n
        progress.update(n)
    if start != rows:
        raise CLIError(f"the input changed between the two passes ({rows} then {start} rows)")
    progress.close()
