"""`groupadv compute` and its files: a unique temporary file beside the output, removed on any
error, a full disk or a signal; the output replaced only after the whole run succeeded."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import groupadv as ga
from groupadv.cli import commands, main
from groupadv.cli.readers import NpzReader, Reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
# The CLI in a subprocess; "nopa" hides pyarrow from it (the stdlib CSV path).
RUN = "import sys\nif sys.argv[1] == 'nopa': sys.modules['pyarrow'] = None\nfrom groupadv.cli import main\nsys.exit(main(sys.argv[2:]))"


def _cli(*argv, pyarrow=True, **kw):
    return subprocess.run([sys.executable, "-c", RUN, "pa" if pyarrow else "nopa", *map(str, argv)],
                          capture_output=True, text=True, env=ENV, timeout=120, **kw)


def _err(capsys, *argv, code=2):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == code
    return capsys.readouterr().err


def _leftovers(folder):
    return sorted(f for f in os.listdir(folder) if "tmp-groupadv" in f)


FORMATS = ["npy", "npz", "csv", "parquet", "arrow"]


def _needs(fmt):
    if fmt in ("parquet", "arrow"):
        pytest.importorskip("pyarrow")


# --- the input changes between the two passes ----------------------------------------------------


class Changing(Reader):
    """Reads ``first`` in pass 1 and ``second`` afterwards (a file rewritten between the passes)."""

    def __init__(self, first: Reader, second: Reader) -> None:
        self.first, self.second, self.calls = first, second, 0
        self.path, self.columns, self.num_rows = first.path, first.columns, first.num_rows

    def _batches(self, rows):
        r = self.first if self.calls == 0 else self.second
        self.calls += 1
        yield from r.batches(rows)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("change", ["new label", "more rows", "fewer rows"])
def test_a_changed_input_leaves_the_old_output_and_no_temp_file(tmp_path, monkeypatch, capsys, fmt, change):
    _needs(fmt)
    ids = np.repeat(np.arange(10), 4)
    r = np.random.default_rng(0).random(40)
    np.savez(tmp_path / "a.npz", uid=ids, reward=r)
    ids2, r2 = {"new label": (np.where(ids == 9, 99, ids), r),
                "more rows": (np.concatenate([ids, ids]), np.concatenate([r, r])),
                "fewer rows": (ids[:20], r[:20])}[change]
    np.savez(tmp_path / "b.npz", uid=ids2, reward=r2)
    monkeypatch.setattr(commands, "open_reader",
                        lambda path: Changing(NpzReader(str(tmp_path / "a.npz")), NpzReader(str(tmp_path / "b.npz"))))
    out = tmp_path / "out" / f"o.{fmt}"
    out.parent.mkdir()
    out.write_bytes(b"the previous output")
    msg = _err(capsys, "compute", tmp_path / "a.npz", "--group-col", "uid", "-o", out, "-q", "--batch-rows", 7)
    assert msg.startswith("groupadv: error: the input changed between the two passes")
    assert ("99" in msg) if change == "new label" else ("40" in msg)
    assert out.read_bytes() == b"the previous output"
    assert os.listdir(out.parent) == ["o." + fmt]


# --- temporary files -------------------------------------------------------------------------------


def test_the_temp_file_is_unique_beside_the_output_and_the_output_gets_the_usual_mode(tmp_path):
    from groupadv.cli.writers import open_writer

    a = open_writer(str(tmp_path / "o.npy"), 3, np.dtype(np.float64), "adv")
    b = open_writer(str(tmp_path / "o.npy"), 3, np.dtype(np.float64), "adv")
    assert a.tmp != b.tmp and os.path.dirname(a.tmp) == os.path.dirname(b.tmp) == str(tmp_path)
    a.write({}, np.arange(3.0))
    a.commit()
    b.discard()
    assert os.listdir(tmp_path) == ["o.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), [0.0, 1.0, 2.0])
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "o.npy").st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("fmt", FORMATS)
def test_any_exception_in_pass_2_removes_the_temp_file(tmp_path, monkeypatch, fmt):
    """Even an unexpected one (here a RuntimeError from the numbers of pass 2)."""
    _needs(fmt)
    from groupadv.cli import _numerics

    src = tmp_path / "in.npz"
    np.savez(src, uid=[1, 1, 2, 2], reward=[0.0, 1.0, 3.0, 2.0])
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(_numerics.Coefficients, "advantages", boom)
    with pytest.raises(RuntimeError, match="boom"):
        main(["compute", str(src), "--group-col", "uid", "-o", str(tmp_path / f"o.{fmt}"), "-q"])
    assert os.listdir(tmp_path) == ["in.npz"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_signal_handlers_are_restored_after_compute(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    np.savez(tmp_path / "in.npz", uid=[1, 1], reward=[0.0, 1.0])
    assert main(["compute", str(tmp_path / "in.npz"), "--group-col", "uid", "-o", str(tmp_path / "o.npy"), "-q"]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# --- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    d = tmp_path / "full"
    d.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def _big_input(tmp_path, fmt_in="npz"):
    n = 40_000  # 320 KB of float64 advantages: five times the disk
    rng = np.random.default_rng(0)
    src = tmp_path / f"big.{fmt_in}"
    np.savez(src, uid=np.arange(n) // 4, reward=rng.random(n))
    return src


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_is_one_error_line_for_every_format(tmp_path, full_disk, fmt):
    _needs(fmt)
    src = _big_input(tmp_path)
    (full_disk / f"o.{fmt}").write_bytes(b"old")
    p = _cli("compute", src, "--group-col", "uid", "-o", full_disk / f"o.{fmt}", "-q")
    assert p.returncode == 2, (p.returncode, p.stderr)  # was SIGBUS (exit 135) for .npy
    assert p.stderr == f"groupadv: error: cannot write {full_disk / f'o.{fmt}'}: No space left on device\n"
    assert os.listdir(full_disk) == [f"o.{fmt}"] and (full_disk / f"o.{fmt}").read_bytes() == b"old"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_size_limit_is_one_error_line_for_every_format(tmp_path, fmt):
    """The same without root: RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG."""
    _needs(fmt)
    import resource

    src = _big_input(tmp_path)
    out = tmp_path / "out" / f"o.{fmt}"
    out.parent.mkdir()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    p = _cli("compute", src, "--group-col", "uid", "-o", out, "-q", preexec_fn=limit)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr == f"groupadv: error: cannot write {out}: File too large\n"
    assert os.listdir(out.parent) == []


# --- signals ----------------------------------------------------------------------------------------


# The CLI in a subprocess whose input is slow: pass 2 reads one batch, then waits a minute.
SLOW = """import sys, time
from groupadv.cli import commands, main, readers
real = readers.open_reader
class Slow(readers.Reader):
    def __init__(self, r):
        self.r, self.calls, self.path, self.columns, self.num_rows = r, 0, r.path, r.columns, r.num_rows
    def _batches(self, rows):
        self.calls += 1
        for i, b in enumerate(self.r.batches(rows)):
            yield b
            if self.calls == 2:
                time.sleep(60)
commands.open_reader = lambda path: Slow(real(path))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_pass_2_removes_the_temp_file(tmp_path, sig, fmt):
    _needs(fmt)
    src = tmp_path / "in.csv"
    src.write_text("uid,reward\na,1\na,0\nb,2\nb,3\n")
    out = tmp_path / "out" / f"o.{fmt}"
    out.parent.mkdir()
    out.write_text("old\n")
    p = subprocess.Popen([sys.executable, "-c", SLOW, "compute", str(src), "--group-col", "uid", "-o", str(out),
                          "-q", "--batch-rows", "2"], stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 60
    while not _leftovers(out.parent) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.01)
    if not _leftovers(out.parent):
        p.kill()
        pytest.fail(f"no temporary file: {p.communicate()[1]}")
    time.sleep(0.3)  # into the wait
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + sig, err
    assert err == f"groupadv: interrupted by {signal.Signals(sig).name}; no output written\n"
    assert os.listdir(out.parent) == [f"o.{fmt}"] and out.read_text() == "old\n"


def test_a_successful_run_replaces_the_output(tmp_path):
    np.savez(tmp_path / "in.npz", uid=[1, 1, 2, 2], reward=[0.0, 1.0, 2.0, 4.0])
    out = tmp_path / "o.npy"
    out.write_bytes(b"old")
    assert main(["compute", str(tmp_path / "in.npz"), "--group-col", "uid", "-o", str(out), "-q"]) == 0
    np.testing.assert_array_equal(np.load(out), ga.grpo(np.array([0.0, 1.0, 2.0, 4.0]), 2))
    assert sorted(os.listdir(tmp_path)) == ["in.npz", "o.npy"]
