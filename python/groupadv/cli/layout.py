"""How the CLI finds each row's group, and the file-wide numbering of the group labels."""

from __future__ import annotations

from typing import Any

import numpy as np

import groupadv as ga

from . import columns
from .errors import CLIError
from .readers import Reader

# Row numbers stay below 2**62, so a group size above it puts every row in group 0 (and
# numpy's int64 floor division cannot take a larger Python int).
_MAX_GROUP_SIZE = 1 << 62


class Layout:
    """A label column, or consecutive groups of ``group_size`` rows."""

    def __init__(self, group_col: str | None, group_size: int | None) -> None:
        self.group_col, self.group_size = group_col, group_size

    def batch_groups(self, batch: Any, start: int, n: int) -> tuple[ga.Groups, Any]:
        """The batch's groups (numbered within the batch) and the label of each of them."""
        if self.group_size is not None:
            ids = np.arange(start, start + n, dtype=np.int64) // min(self.group_size, _MAX_GROUP_SIZE)
        else:
            assert self.group_col is not None
            ids = columns.labels(batch, self.group_col, start)
        g = ga.make_groups(n, group_ids=ids)
        return g, g.labels


class LabelIndex:
    """File-wide group numbers: each label gets the next number the first time it is seen."""

    def __init__(self) -> None:
        self.index: dict = {}

    def __len__(self) -> int:
        return len(self.index)

    def codes(self, labels: Any) -> np.ndarray:
        """The file-wide number of each label (new labels are numbered)."""
        idx = self.index
        keys = pylist(labels)
        return np.fromiter((idx.setdefault(k, len(idx)) for k in keys), dtype=np.int64, count=len(keys))

    def known_codes(self, labels: Any) -> np.ndarray:
        """The file-wide number of each label; a label not seen before is an error (pass 2
        reads what pass 1 read, unless the file changed in between)."""
        idx = self.index
        keys = pylist(labels)
        try:
            return np.fromiter((idx[k] for k in keys), dtype=np.int64, count=len(keys))
        except KeyError as e:
            raise CLIError(
                f"the input changed between the two passes (group {e.args[0]!r} was not there in pass 1)"
            ) from None

    def label(self, code: int) -> Any:
        return next(lab for lab, i in self.index.items() if i == code)


def pylist(labels: Any) -> list:
    return labels.tolist() if isinstance(labels, np.ndarray) else list(labels)


def check_columns(reader: Reader, path: str, *cols: str | None) -> None:
    missing = [c for c in cols if c is not None and c not in reader.columns]
    if missing:
        raise CLIError(
            f"{path}: no column {', '.join(map(repr, missing))}; the columns are {', '.join(map(repr, reader.columns))}"
        )
