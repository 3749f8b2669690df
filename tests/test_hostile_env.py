"""Hostile environments, each in a fresh subprocess: garbage GROUPADV_BACKEND /
GROUPADV_NUM_THREADS, a missing or corrupt compiled module, and SIGINT (KeyboardInterrupt)
while a long call runs in the main thread or in a worker thread.

Expected (README "Backends and threads", Guarantees, issue 11): a clear error naming the
variable, never a silent fallback, a hang, a crash or a wrong number after an interrupt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "python"


def run_py(code: str, env: dict | None = None, timeout: float = 60, pythonpath: Path = PKG):
    e = {k: v for k, v in os.environ.items() if not k.startswith("GROUPADV_")}
    e["PYTHONPATH"] = str(pythonpath) + os.pathsep + str(ROOT / "tests")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=e, capture_output=True, text=True, timeout=timeout
    )


# The subprocesses use the backend of this run (GROUPADV_BACKEND), so the per-backend runs of
# the suite cover both without repeating each other.
BACKENDS = [__import__("groupadv").backend()]

CALL = """
import numpy as np
x = np.arange(2**18, dtype=np.float64) % 7
try:
    import groupadv as ga  # the variable may be read at import or at the first call
    r = ga.grpo(x, 8)
    n = ga.get_num_threads()
except ValueError as e:
    print("VALUEERROR", e)
else:
    assert np.isfinite(r).all()
    print("OK", n)
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "0x10", "99999999999999999999", "nan"])
def test_garbage_num_threads_env_is_a_clear_error(backend, value):
    """GROUPADV_NUM_THREADS that is not a positive integer: a ValueError naming the variable
    (at import or at the first call), on both backends; not silently ignored (native) or
    silently accepted (numpy: get_num_threads() returns 99999999999999999999)."""
    p = run_py(CALL, {"GROUPADV_BACKEND": backend, "GROUPADV_NUM_THREADS": value})
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert p.stdout.startswith("VALUEERROR") and "GROUPADV_NUM_THREADS" in p.stdout, out


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_num_threads_env_is_refused_or_bounded(backend):
    """GROUPADV_NUM_THREADS=4000 (issue 11: the first call took 50 s): a ValueError naming
    the variable (above the documented maximum), or a call that finishes promptly."""
    try:
        p = run_py(CALL, {"GROUPADV_BACKEND": backend, "GROUPADV_NUM_THREADS": "4000"}, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("GROUPADV_NUM_THREADS=4000: one 2^18-reward call ran for more than 20 s")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    if "OK" not in p.stdout:
        assert p.stdout.startswith("VALUEERROR") and "GROUPADV_NUM_THREADS" in p.stdout, out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", ["1", "2", "3"])
def test_good_num_threads_env(backend, value):
    p = run_py(CALL, {"GROUPADV_BACKEND": backend, "GROUPADV_NUM_THREADS": value})
    assert p.stdout.split() == ["OK", value], p.stdout + p.stderr


@pytest.mark.parametrize("value", ["garbage", "Native2", "torch", "numpy,native"])
def test_garbage_backend_env_names_the_variable(value):
    p = run_py("import groupadv", {"GROUPADV_BACKEND": value})
    assert p.returncode == 1, p.stdout + p.stderr
    assert "GROUPADV_BACKEND" in p.stderr and "Traceback" in p.stderr


@pytest.mark.parametrize("value", [" numpy ", "NUMPY", "numpy\n"])
def test_backend_env_tolerates_case_and_space(value):
    p = run_py("import groupadv as ga; print(ga.backend())", {"GROUPADV_BACKEND": value})
    assert p.stdout.strip() == "numpy", p.stderr


def _copy_package(tmp_path: Path, native: bytes | None) -> Path:
    dst = tmp_path / "pkg"
    shutil.copytree(PKG, dst, ignore=shutil.ignore_patterns("_native*.so", "_native*.pyd", "__pycache__"))
    if native is not None:
        (dst / "groupadv" / "_native.abi3.so").write_bytes(native)
    return dst


def test_missing_native_module(tmp_path):
    """Absent compiled module: numpy fallback; but GROUPADV_BACKEND=native is an ImportError."""
    pkg = _copy_package(tmp_path, None)
    p = run_py("import groupadv as ga; print(ga.backend())", pythonpath=pkg)
    assert p.stdout.strip() == "numpy", p.stderr
    p = run_py("import groupadv", {"GROUPADV_BACKEND": "native"}, pythonpath=pkg)
    assert p.returncode == 1 and "ImportError" in p.stderr and "GROUPADV_BACKEND" in p.stderr


def test_corrupt_native_module_raises_instead_of_falling_back(tmp_path):
    """README: a compiled module that is present but broken raises (never silently slow)."""
    pkg = _copy_package(tmp_path, b"\x7fELF this is not a shared object")
    p = run_py("import groupadv as ga; print(ga.backend())", pythonpath=pkg)
    assert p.returncode == 1 and "ImportError" in p.stderr, p.stdout + p.stderr
    p = run_py("import groupadv as ga; print(ga.backend())", {"GROUPADV_BACKEND": "numpy"}, pythonpath=pkg)
    assert p.stdout.strip() == "numpy", p.stderr


INTERRUPT_WORKER = """
import os, signal, threading, time
import numpy as np, groupadv as ga
rng = np.random.default_rng(0)
n = 1 << 23
x = rng.random(n)
ids = rng.integers(0, 1 << 16, n)
want = ga.grpo(x[:4096], group_ids=ids[:4096])
res = {}
done = threading.Event()
def work():
    try:
        res["r"] = ga.grpo(x, group_ids=ids)
    finally:
        done.set()
t = threading.Thread(target=work)
t.start()
threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    while not done.wait(0.01):
        pass
except KeyboardInterrupt:
    print("INTERRUPTED")
# (not t.join(): CPython's join interrupted by KeyboardInterrupt may report a live thread dead)
assert done.wait(60), "the worker never finished"
again = ga.grpo(x[:4096], group_ids=ids[:4096])
assert np.array_equal(again, want)
ref = ga.grpo(x, group_ids=ids)
assert np.array_equal(res["r"], ref), "the worker's result changed"
print("DONE")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyboardinterrupt_while_a_worker_thread_computes(backend):
    p = run_py(INTERRUPT_WORKER, {"GROUPADV_BACKEND": backend}, timeout=120)
    assert p.returncode == 0 and "DONE" in p.stdout, (p.returncode, p.stdout, p.stderr[-2000:])


INTERRUPT_MAIN = """
import os, signal, threading
import numpy as np, groupadv as ga
rng = np.random.default_rng(1)
n = 1 << 23
x = rng.random(n)
ids = rng.integers(0, 1 << 16, n)
want = ga.grpo(x[:4096], group_ids=ids[:4096])
import time
for delay in (0.0, 0.02, 0.1, 0.3):
    out = np.zeros(n)
    try:
        threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        r = ga.grpo(x, group_ids=ids, out=out)
        print("RETURNED", delay, flush=True)
        time.sleep(1.0)  # let a late signal land here
    except KeyboardInterrupt:
        print("INTERRUPTED", delay, flush=True)
    again = ga.grpo(x[:4096], group_ids=ids[:4096])
    assert np.array_equal(again, want), "wrong numbers after an interrupt"
print("DONE")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyboardinterrupt_during_a_call_in_the_main_thread(backend):
    """SIGINT while the main thread is inside the library: a KeyboardInterrupt (during or
    after the call), the process survives, and later calls are right."""
    p = run_py(INTERRUPT_MAIN, {"GROUPADV_BACKEND": backend}, timeout=180)
    assert p.returncode == 0 and "DONE" in p.stdout, (p.returncode, p.stdout, p.stderr[-2000:])


SIGTERM_CHILD = """
import numpy as np, groupadv as ga, sys
x = np.random.default_rng(0).random(1 << 24)
print("READY", flush=True)
while True:
    ga.grpo(x, 8, num_threads=2)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_during_calls_terminates_the_process(backend):
    """SIGTERM while the pools compute ends the process by the signal (no hang in a pool
    thread, no abort/segfault core)."""
    import signal
    import time

    e = {k: v for k, v in os.environ.items() if not k.startswith("GROUPADV_")}
    e.update(PYTHONPATH=str(PKG), GROUPADV_BACKEND=backend)
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD], env=e, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "READY"
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == -signal.SIGTERM, rc
