"""benches/ compares against the team's peer kernels unchanged: benches/peer_kernels.py and the
copy shipped for `groupadv bench` (groupadv/_peer_kernels.py) are byte-for-byte the shared file."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_COPY = ROOT / "benches" / "peer_kernels.py"
PACKAGE_COPY = ROOT / "python" / "groupadv" / "_peer_kernels.py"
SHARED = ROOT / ".." / "shared" / "bench" / "peer_kernels.py"


def test_the_benchmark_and_the_package_use_the_same_peer_kernels():
    assert BENCH_COPY.read_bytes() == PACKAGE_COPY.read_bytes()


def test_the_peer_kernels_are_the_shared_file_unchanged():
    if not SHARED.exists():
        pytest.skip("../shared/bench/peer_kernels.py is not there (a clean checkout)")
    assert BENCH_COPY.read_bytes() == SHARED.read_bytes(), "benches/peer_kernels.py differs from ../shared/bench"


def test_the_benchmark_has_no_numba_of_its_own():
    # numba is timed only through the peer kernels (parallel, fastmath, workqueue layer)
    for f in (ROOT / "benches" / "bench.py", ROOT / "python" / "groupadv" / "_bench.py"):
        text = f.read_text()
        assert "njit" not in text and "fastmath=False" not in text, f
