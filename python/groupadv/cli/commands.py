"""The commands: ``compute``, ``stats`` and ``bench``."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

import groupadv as ga

from .. import _bench
from ._numerics import Coefficients, summary
from .columns import arrow_errors
from .errors import CLIError, Interrupted
from .formats import file_format
from .layout import Layout, check_columns
from .passes import pass1, pass2
from .progress import Progress
from .readers import Reader, open_reader
from .writers import open_writer

ESTIMATORS = {"grpo": "mean", "drgrpo": "mean", "rloo": "loo"}

# A batch larger than this is the whole file (pyarrow takes batch sizes up to int64).
MAX_BATCH_ROWS = 1 << 40

# Rounding to more decimals than a float64 carries (or fewer than its range) is meaningless.
MAX_DECIMALS = 308


def _layout(args: argparse.Namespace, reader: Reader) -> Layout:
    if (args.group_col is None) == (args.group_size is None):
        raise CLIError("give exactly one of --group-col or --group-size")
    if args.group_size is not None and args.group_size < 1:
        raise CLIError(f"--group-size must be >= 1, got {args.group_size}")
    check_columns(reader, args.input, args.group_col, args.reward_col)
    return Layout(args.group_col, args.group_size)


def _check_batch_rows(args: argparse.Namespace) -> None:
    if args.batch_rows < 1:
        raise CLIError(f"--batch-rows must be >= 1, got {args.batch_rows}")
    args.batch_rows = min(args.batch_rows, MAX_BATCH_ROWS)


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (a link to the input is the input)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`Interrupted` (so the temporary file is removed);
    the previous handlers are restored afterwards. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_compute(args: argparse.Namespace) -> int:
    """Two passes over the input: per-group moments, then advantages batch by batch."""
    if args.estimator != "grpo" and args.scale not in (None, "none"):
        raise CLIError(f"--scale applies to --estimator grpo only ({args.estimator} does not divide by a std)")
    center = ESTIMATORS[args.estimator]
    scale = (args.scale or "group") if args.estimator == "grpo" else "none"
    if not (math.isfinite(args.eps) and args.eps >= 0):
        raise CLIError(f"--eps must be a finite number >= 0, got {args.eps}")
    if args.decimals is not None and abs(args.decimals) > MAX_DECIMALS:
        raise CLIError(f"--decimals must be between {-MAX_DECIMALS} and {MAX_DECIMALS}, got {args.decimals}")
    _check_batch_rows(args)
    if os.path.abspath(args.output) == os.path.abspath(args.input) or _same_file(args.output, args.input):
        raise CLIError("the output file must differ from the input file")
    if os.path.isdir(args.output):
        raise CLIError(f"the output is a directory: {args.output}")
    file_format(args.output)
    reader = open_reader(args.input)
    layout = _layout(args, reader)
    if args.output_col in reader.columns and file_format(args.output) != "npy":
        raise CLIError(f"the input already has a column {args.output_col!r}; choose another --output-col")

    with signals_raise():
        acc, index, dtype = pass1(reader, layout, args.reward_col, args.nan, args.batch_rows,
                                  Progress("pass 1/2 (group statistics)", reader.num_rows, args.quiet))
        coef = Coefficients(acc, center, scale, args.ddof, args.eps, args.singleton, index.label)
        batches = pass2(reader, layout, args.reward_col, index, coef, acc.rows, args.nan, dtype, args.decimals,
                        args.batch_rows, Progress("pass 2/2 (advantages)", acc.rows, args.quiet))
        writer = None
        try:
            writer = open_writer(args.output, acc.rows, dtype, args.output_col)
            for batch, adv in batches:
                try:
                    writer.write(batch, adv)
                except OSError as e:
                    raise CLIError(f"cannot write {args.output}: {e.strerror or e}") from None
                except arrow_errors() as e:  # a pass-through column of a damaged file
                    raise CLIError(f"{args.input}: cannot read: {e}") from None
                except UnicodeError as e:  # e.g. a lone surrogate in a .npz text column
                    # only the encode/decode/translate subclasses carry a reason; a bare UnicodeError has none
                    reason = getattr(e, "reason", e)
                    raise CLIError(f"cannot write {args.output}: a text cell is not valid Unicode ({reason})") from None
            try:
                writer.commit()
            except OSError as e:
                raise CLIError(f"cannot write {args.output}: {e.strerror or e}") from None
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
    if not args.quiet:
        sys.stderr.write(f"wrote {acc.rows:,} advantages ({acc.n_groups:,} groups) to {args.output}\n")
    return 0


def file_stats(args: argparse.Namespace) -> dict:
    """Diagnostics of a file (streamed: one pass)."""
    _check_batch_rows(args)
    reader = open_reader(args.input)
    layout = _layout(args, reader)
    acc, _, _ = pass1(reader, layout, args.reward_col, args.nan, args.batch_rows,
                      Progress("reading", reader.num_rows, args.quiet))
    return summary(acc, args.ddof)


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
    try:
        sizes = [int(float(s)) for s in args.sizes.split(",")]
    except (ValueError, OverflowError):
        raise CLIError(f"--sizes takes comma-separated numbers of rewards, got {args.sizes!r}") from None
    if any(s < 1 for s in sizes):
        raise CLIError(f"--sizes must all be >= 1, got {args.sizes!r}")
    if args.group_size < 1:
        raise CLIError(f"--group-size must be >= 1, got {args.group_size}")
    if args.repeats < 1:
        raise CLIError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    rows = args.rows.split(",")
    for row in rows:
        if row not in _bench.ROWS:
            raise CLIError(f"unknown row {row!r}; choose from {', '.join(_bench.ROWS)}")

    numba_k = _bench.numba_kernels() if any(r in rows for r in _NUMBA_ROWS) else None
    # The large rows at every size; uids, small calls and the numpy-backend rows once, up to the
    # largest size.
    large = [r for r in rows if r in _LARGE_ROWS]
    case_list = []
    for n in sizes:
        case_list += _bench.cases(n, large, group_size=args.group_size, dtype=np.dtype(args.dtype),
                                  num_threads=args.threads, numba_k=numba_k)
    case_list += _bench.cases(max(sizes), [r for r in rows if r not in _LARGE_ROWS], group_size=args.group_size,
                              dtype=np.dtype(args.dtype), num_threads=args.threads, numba_k=numba_k)

    def report(m: str) -> None:
        sys.stderr.write(f"  timing {m}\n")

    results = _bench.run(case_list, rounds=args.repeats, progress=None if args.quiet else report)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    threads = ga.get_num_threads() if args.threads is None else args.threads
    print(f"groupadv {ga.__version__}, backend {ga.backend()}, {threads} threads, {args.dtype}, GRPO z-score, "
          f"group size {args.group_size}, {args.repeats} interleaved rounds (cold: after {_GAP_MS} ms idle; warm: back to back)")
    if any(r in rows for r in _NUMBA_ROWS):
        print(_bench.numba_info(numba_k))
    print()
    print(_bench.markdown_table(results))
    print()
    print(_bench.targets_table(results))
    print()
    print(_bench.detail_table(results))
    return 0


_LARGE_ROWS = ("uniform", "ragged", "threads", "blocks")
_NUMBA_ROWS = ("uniform", "ragged", "threads", "blocks", "uids", "uids-shuffled", "small")
_GAP_MS = 20
