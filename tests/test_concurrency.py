"""Threads, fork and long runs: shared inputs give identical results from many Python threads,
the library works in a forked child (no deadlock on the parent's thread pools), and 1e5
calls do not grow memory."""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time

import numpy as np
import pytest

import groupadv as ga

N = 300_000  # large enough for the native backend to split the work over its pool


def _inputs():
    rng = np.random.default_rng(0)
    r = rng.random(N).astype(np.float32)
    ids = rng.integers(0, N // 16, N)
    uids = np.array([f"u{k}" for k in range(N // 16)], dtype=object)[rng.integers(0, N // 16, N)]
    return r, ids, uids


def _calls(r, ids, uids, groups):
    return [
        lambda: ga.grpo(r, 16),
        lambda: ga.grpo(r, 16, scale="batch", eps=1e-6, num_threads=1),
        lambda: ga.rloo(r, offsets=np.arange(0, N + 1, 8)),
        lambda: ga.advantages(r, group_ids=ids, num_threads=2),
        lambda: ga.advantages(r, groups=groups, scale="batch_residual"),
        lambda: ga.drgrpo(r, group_ids=uids),
        lambda: ga.group_stats(r, group_ids=ids).std,
    ]


def test_threads_sharing_inputs_get_identical_results():
    r, ids, uids = _inputs()
    groups = ga.make_groups(N, group_ids=ids)
    r.flags.writeable = False
    calls = _calls(r, ids, uids, groups)
    expected = [c() for c in calls]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(seed):
        try:
            barrier.wait()
            order = np.random.default_rng(seed).permutation(len(calls) * 2) % len(calls)
            for k in order:
                got = calls[k]()
                if not np.array_equal(got, expected[k], equal_nan=True):
                    raise AssertionError(f"call {k} differs in thread {seed}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors


def test_threads_writing_to_their_own_out_buffers():
    r, ids, _ = _inputs()
    expected = ga.advantages(r, group_ids=ids)
    outs = [np.empty_like(r) for _ in range(6)]

    def worker(out):
        for _ in range(5):
            out.fill(np.nan)
            ga.advantages(r, group_ids=ids, out=out)

    threads = [threading.Thread(target=worker, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for o in outs:
        np.testing.assert_array_equal(o, expected)


def test_set_num_threads_while_other_threads_compute():
    r, ids, _ = _inputs()
    expected = ga.advantages(r, group_ids=ids)
    before = ga.get_num_threads()
    stop = threading.Event()
    errors = []

    def toggler():
        k = 0
        while not stop.is_set():
            ga.set_num_threads(1 + k % 3)
            k += 1

    def worker():
        try:
            for _ in range(10):
                np.testing.assert_array_equal(ga.advantages(r, group_ids=ids), expected)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t0 = threading.Thread(target=toggler)
    ws = [threading.Thread(target=worker) for _ in range(3)]
    t0.start()
    for w in ws:
        w.start()
    for w in ws:
        w.join(timeout=300)
    stop.set()
    t0.join(timeout=60)
    ga.set_num_threads(0)
    assert ga.get_num_threads() == before
    assert not errors, errors


def _wait(pid: int, timeout: float) -> int | None:
    """Exit status of child `pid`, or None (after killing it) if it is still running at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("busy_parent", [False, True])
def test_fork_then_call_in_child_and_parent(busy_parent):
    r, ids, uids = _inputs()
    expected = ga.advantages(r, group_ids=ids)  # the parent's pools exist now
    expected_u = ga.grpo(r, 16)
    stop = threading.Event()
    busy = None
    if busy_parent:
        # fork while another thread of the parent is inside the library
        def spin():
            while not stop.is_set():
                ga.advantages(r, group_ids=ids)

        busy = threading.Thread(target=spin)
        busy.start()
        time.sleep(0.05)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, report through the pipe and _exit
        code = 1
        try:
            os.close(rfd)
            a = ga.advantages(r, group_ids=ids)
            b = ga.grpo(r, 16, num_threads=2)
            c = ga.advantages(r, group_ids=ids, num_threads=1)
            ok = np.array_equal(a, expected) and np.array_equal(b, expected_u) and np.array_equal(c, expected)
            os.write(wfd, b"ok" if ok else b"mismatch")
            code = 0
        except BaseException as e:  # noqa: BLE001
            os.write(wfd, repr(e).encode()[:200])
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        status = _wait(pid, timeout=120)
        msg = b""
        while select.select([rfd], [], [], 0)[0]:
            chunk = os.read(rfd, 1024)
            if not chunk:
                break
            msg += chunk
    finally:
        os.close(rfd)
        stop.set()
        if busy is not None:
            busy.join(timeout=120)
    assert status is not None, "the forked child deadlocked (killed after 120 s)"
    assert status == 0 and msg == b"ok", (status, msg)
    # the parent still works, in parallel
    np.testing.assert_array_equal(ga.advantages(r, group_ids=ids), expected)
    np.testing.assert_array_equal(ga.grpo(r, 16, num_threads=2), expected_u)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_from_a_forked_child():
    r, ids, _ = _inputs()
    expected = ga.advantages(r, group_ids=ids)
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            ga.advantages(r, group_ids=ids)
            pid2 = os.fork()
            if pid2 == 0:
                ok = np.array_equal(ga.advantages(r, group_ids=ids), expected)
                os._exit(0 if ok else 1)
            st = _wait(pid2, timeout=100)
            code = 0 if st == 0 else 2
        finally:
            os._exit(code)
    assert _wait(pid, timeout=120) == 0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def test_no_memory_growth_over_1e5_calls():
    r = np.array([0.2, 0.5, 0.8, 0.3, 0.7, 0.1, 0.9, 0.4])
    r32 = r.astype(np.float32)
    bad = r.copy()
    bad[3] = np.nan
    ids = np.array([3, 1, 3, 1, 2, 2, 2, 1])
    uids = ["a", "b", "a", "b", "c", "c", "c", "b"]
    offs = np.array([0, 3, 8])
    out = np.empty_like(r)

    def batch(k):
        m = k % 8
        if m == 0:
            ga.grpo(r, 4)
        elif m == 1:
            ga.advantages(r32, group_ids=ids, scale="batch")
        elif m == 2:
            ga.rloo(r, offsets=offs, out=out)
        elif m == 3:
            ga.drgrpo(r, group_ids=uids)
        elif m == 4:
            ga.group_stats(r, group_ids=uids)
        elif m == 5:
            try:  # the error path must not leak either
                ga.grpo(bad, 4)
            except ValueError:
                pass
        elif m == 6:
            try:
                ga.grpo(r, 3)
            except ValueError:
                pass
        else:
            ga.advantages(bad, group_ids=ids, nan="omit", decimals=3)

    for k in range(10_000):  # warm up caches, pools and allocator arenas
        batch(k)
    before = _rss_bytes()
    for k in range(100_000):
        batch(k)
    grown = _rss_bytes() - before
    # A leak of even 100 bytes per call would add ~10 MB.
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 1e5 calls"
