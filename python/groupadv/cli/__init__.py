"""The ``groupadv`` command line: advantages for a table on disk, a short benchmark, diagnostics.

    groupadv compute IN --group-col uid --reward-col reward [--estimator grpo|drgrpo|rloo] -o OUT
    groupadv stats IN --group-col uid --reward-col reward [--json]
    groupadv bench

Inputs by extension: ``.parquet``, ``.arrow``/``.feather`` (pyarrow, ``pip install
groupadv[parquet]``), ``.csv`` (UTF-8; pyarrow.csv when installed, else the stdlib: every cell
is read as text either way), ``.npy`` (a structured array whose fields are the columns, or a
plain 1-D array read as one column named ``reward``) and ``.npz`` (one 1-D array per column).
The output format follows the extension of ``-o``; ``.npy`` output holds the advantage column
only.

Streaming: a group's rows may be anywhere in the file, so ``compute`` reads the input twice in
batches of ``--batch-rows`` rows. Pass 1 accumulates per-group count, mean and spread (merged
across batches with Chan's formula, in float64); pass 2 writes the advantages of each batch
from those statistics. Memory is O(number of groups + batch), not O(rows), except for
``.npz`` files (loaded whole) and ``.npz`` output (built in memory).

The package, one concept per module: :mod:`.errors` (CLIError, Interrupted),
:mod:`.formats` (extensions, optional pyarrow),
:mod:`.readers` (formats in), :mod:`.columns` (a batch's reward and label columns),
:mod:`.layout` (groups of a batch, file-wide label numbers), :mod:`._numerics` (all the maths),
:mod:`.passes` (the two passes), :mod:`.progress` (the progress line), :mod:`.writers` (formats out, temporary files),
:mod:`.commands` (compute, stats, bench), :mod:`.main` (the parser and the entry point).
"""

from __future__ import annotations

from .errors import CLIError
from .main import build_parser, main

__all__ = ["CLIError", "build_parser", "main"]
