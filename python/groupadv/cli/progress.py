"""A minimal progress line on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Rows done, and the percent when the total is known; redrawn only on a terminal."""

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
