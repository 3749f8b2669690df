"""The argument parser and the entry point of the ``groupadv`` script."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import groupadv as ga

from .. import _bench
from .commands import ESTIMATORS, cmd_bench, cmd_compute, cmd_stats
from .errors import CLIError, Interrupted


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

    b = sub.add_parser("bench", help="short benchmark: groupadv vs numpy, numba and a memory copy (issue 14's rows)")
    b.add_argument("--sizes", default="5000000", help="comma-separated numbers of rewards of the large rows")
    b.add_argument("--rows", default=",".join(_bench.ROWS), help="comma-separated, from %(default)s")
    b.add_argument("--group-size", type=int, default=16)
    b.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    b.add_argument("--repeats", type=int, default=3, help="interleaved rounds per case")
    b.add_argument("--threads", type=int, help="threads for groupadv (default: all)")
    b.add_argument("--json", action="store_true")
    b.add_argument("-q", "--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def one_line(msg: str) -> str:
    """An error message on one line (pyarrow's CSV errors quote the offending row)."""
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``groupadv`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ValueError, TypeError, OSError, OverflowError) as e:
        parser.exit(2, f"groupadv: error: {one_line(str(e))}\n")
    except Interrupted as e:
        # the temporary output is gone; the usual status of a process ended by the signal
        parser.exit(128 + e.signum, f"groupadv: interrupted by {e.name}; no output written\n")
    return 0
