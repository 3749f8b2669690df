"""The fast path of `advantages` (issue 14: small calls under 20 µs) against the general path.

The fast path takes plain contiguous float32/float64 arrays with group_size= / offsets= / groups=
and plain parameters; it must give bit-identical results and the same typed exceptions (type,
message, index/group attributes) as the general path, and hand every input it does not cover
to the general path. `_api._general` is the general path itself (the fast path falls back to it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

import groupadv as ga
from groupadv import _api, _backend
from groupadv.errors import GroupadvError

ROOT = Path(__file__).resolve().parents[1]
_GENERAL = _api._general  # before any test replaces it

KEYS = ("group_size", "offsets", "group_ids", "groups", "center", "scale", "ddof", "eps", "singleton", "nan",
        "decimals", "out", "num_threads", "batch_std", "moments", "preset")


def general(rewards, **kw):
    """The general path, called as `advantages` calls it."""
    args = {k: kw.get(k) for k in KEYS}
    args.update(center=kw.get("center", "mean"), scale=kw.get("scale", "group"), nan=kw.get("nan", "raise"))
    return _GENERAL(rewards, *(args[k] for k in KEYS))


@pytest.fixture
def fast_only(monkeypatch):
    """`ga.advantages` with the general path made unreachable: proves the fast path ran."""

    def refuse(*a, **k):
        raise AssertionError("the general path was used")

    monkeypatch.setattr(_api, "_general", refuse)
    return ga.advantages


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def layouts(n: int, rng, kinds=("group_size", "offsets", "groups")):
    """(name, kwargs) of each layout the fast path covers, for n rewards."""
    for kind in kinds:
        if kind == "group_size":
            g = int(rng.choice([d for d in (1, 2, 3, 4, 8, 16) if n % d == 0]))
            ga.make_groups(n, g)  # what the general path caches: the fast path reuses it
            yield kind, {"group_size": g}
        elif kind == "offsets":
            cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, max(1, n // 5)), replace=False))
            yield kind, {"offsets": np.concatenate(([0], cuts, [n])).astype(np.int64)}
        else:
            yield kind, {"groups": ga.make_groups(n, 1 if n % 2 else 2)}


PARAMS = [
    {},
    {"eps": 1e-6},
    {"center": "loo", "scale": "none"},
    {"center": "none", "scale": "group", "ddof": 1, "eps": 1e-4},
    {"scale": "batch", "ddof": 1},
    {"scale": "batch_residual", "eps": 0.5},
    {"scale": "batch", "batch_std": 2.5},
    {"singleton": "raw", "ddof": 1, "eps": 1e-6},
    {"nan": "propagate"},
    {"nan": "omit", "singleton": "zero"},
    {"decimals": 3},
    {"num_threads": 1},
    {"num_threads": 2},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_fast_path_is_bit_identical_to_general_path(fast_only, dtype, params):
    rng = np.random.default_rng(zlib.crc32(repr(sorted(params.items())).encode()))
    for n in (1, 2, 7, 16, 96, 8192):
        x = (rng.normal(size=n) * 10.0 ** rng.integers(-3, 4)).astype(dtype)
        if n > 7 and rng.random() < 0.5:
            x[rng.integers(0, n, size=n // 4)] = x[0]  # ties and all-equal groups
        if params.get("nan") in ("propagate", "omit") and n > 2:
            x[rng.integers(0, n)] = np.nan
        for name, layout in layouts(n, rng):
            want = general(x, **layout, **params)
            got = fast_only(x, **layout, **params)
            assert got.dtype == want.dtype == dtype and bits(got) == bits(want), (name, n)
            out = np.full_like(x, 7.0)
            assert fast_only(x, **layout, out=out, **params) is out
            assert bits(out) == bits(want), (name, n, "out=")


def test_disjoint_views_of_one_buffer_take_the_fast_path(fast_only):
    """out= and rewards cut from one buffer without overlap: numpy is asked, and says disjoint."""
    buf = np.random.default_rng(6).random(256)
    x, out = buf[:128], buf[128:]
    ga.make_groups(128, 8)
    want = general(x.copy(), group_size=8)
    assert fast_only(x, 8, out=out) is out and bits(out) == bits(want)


def test_grpo_family_take_the_fast_path(fast_only):
    x = np.random.default_rng(1).random(8192).astype(np.float32)
    ga.make_groups(8192, 16)
    for fn in (ga.grpo, ga.drgrpo, ga.rloo):
        assert bits(fn(x, 16)) == bits(general(x, group_size=16, **_family(fn)))


def _family(fn):
    return {ga.grpo: {}, ga.drgrpo: {"scale": "none"}, ga.rloo: {"center": "loo", "scale": "none"}}[fn]


def test_general_path_takes_what_the_fast_path_does_not_cover(monkeypatch):
    """Lists, ints, float16, strided and byte-swapped arrays, labels, presets, moments, numpy
    scalars as parameters: the general path (and the same answer as for a plain array)."""
    used = []
    real = _api._general
    monkeypatch.setattr(_api, "_general", lambda *a: used.append(1) or real(*a))
    x = np.random.default_rng(2).random(64)
    ref = general(x, group_size=4)
    for rewards, kw in [
        (x.tolist(), {"group_size": 4}),
        (x[::-1].copy()[::-1], {"group_size": 4}),
        (x.astype(">f8"), {"group_size": 4}),
        (x, {"group_size": np.int64(4)}),
        (x, {"group_ids": np.repeat(np.arange(16), 4)}),
        (x, {"offsets": np.arange(0, 65, 4, dtype=np.int32)}),
        (x, {"offsets": list(range(0, 65, 4))}),
        (x, {"group_size": 4, "eps": 0}),
        (x, {"group_size": 4, "eps": np.float64(0.0)}),
        (x, {"group_size": 4, "ddof": np.int64(0)}),
        (x, {"group_size": 4, "num_threads": np.int32(1)}),
    ]:
        used.clear()
        got = ga.advantages(rewards, **kw)
        assert used, kw
        assert bits(got) == bits(general(rewards, **kw)), kw
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    used.clear()
    np.testing.assert_array_equal(ga.advantages(np.arange(64) % 5, group_size=4),
                                  general((np.arange(64) % 5).astype(np.float64), group_size=4))
    assert used


def _bad_cases():
    """(name, rewards, kwargs) of bad inputs, each an error of the general path."""
    rng = np.random.default_rng(3)
    x = rng.random(64).astype(np.float32)
    nan = x.copy()
    nan[37] = np.nan
    inf = x.copy()
    inf[5] = -np.inf
    huge = np.array([0, 3e38, -3e38, 1, 2, 3, 4, 5], dtype=np.float32)
    big = np.array([1.7e308, 1.7e308, -1.7e308, -1.7e308, 1.7e308, 1.7e308, 1, 2])
    offs = np.arange(0, 65, 8, dtype=np.int64)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    both = np.zeros(128, dtype=np.float32)
    other = ga.make_groups(32, 4)
    return [
        ("nan reward", nan, {"group_size": 8}),
        ("nan reward, offsets", nan, {"offsets": offs}),
        ("inf reward, groups", inf, {"groups": ga.make_groups(64, 8)}),
        ("f32 rloo overflow", huge, {"group_size": 8, "center": "loo", "scale": "none"}),
        ("f64 batch overflow", big, {"group_size": 2, "scale": "batch"}),
        ("singleton error", x, {"group_size": 1, "singleton": "error"}),
        ("2-D", x.reshape(8, 8), {"group_size": 8}),
        ("empty", x[:0], {"group_size": 8}),
        ("object dtype", x.astype(object), {"group_size": 8}),
        ("complex dtype", x.astype(np.complex64), {"group_size": 8}),
        ("masked", np.ma.masked_array(x), {"group_size": 8}),
        ("group size not a divisor", x, {"group_size": 7}),
        ("group size 0", x, {"group_size": 0}),
        ("group size negative", x, {"group_size": -8}),
        ("group size bool", x, {"group_size": True}),
        ("group size float", x, {"group_size": 8.0}),
        ("no layout", x, {}),
        ("two layouts", x, {"group_size": 8, "offsets": offs}),
        ("groups and group_size", x, {"group_size": 8, "groups": ga.make_groups(64, 8)}),
        ("groups of another length", x, {"groups": other}),
        ("groups not Groups", x, {"groups": 8}),
        ("offsets not starting at 0", x, {"offsets": np.array([1, 64], dtype=np.int64)}),
        ("offsets decreasing", x, {"offsets": np.array([0, 40, 20, 64], dtype=np.int64)}),
        ("offsets wrong end", x, {"offsets": np.array([0, 32, 63], dtype=np.int64)}),
        ("offsets 2-D", x, {"offsets": offs.reshape(3, 3)}),
        ("offsets float", x, {"offsets": offs.astype(float)}),
        ("out wrong shape", x, {"group_size": 8, "out": np.empty(63, dtype=np.float32)}),
        ("out wrong dtype", x, {"group_size": 8, "out": np.empty(64)}),
        ("out 2-D", x, {"group_size": 8, "out": np.empty((8, 8), dtype=np.float32)}),
        ("out strided", x, {"group_size": 8, "out": np.empty(128, dtype=np.float32)[::2]}),
        ("out read-only", x, {"group_size": 8, "out": ro}),
        ("out a list", x, {"group_size": 8, "out": [0.0] * 64}),
        ("out is rewards", x, {"group_size": 8, "out": x}),
        ("out overlaps rewards", both[:64], {"group_size": 8, "out": both[32:96]}),
        ("out overlaps offsets", x, {"offsets": offs, "out": offs.view(np.float32)[:64]}),
        ("center unknown", x, {"group_size": 8, "center": "median"}),
        ("center not str", x, {"group_size": 8, "center": 1}),
        ("scale unknown", x, {"group_size": 8, "scale": "foo"}),
        ("scale None", x, {"group_size": 8, "scale": None}),
        ("nan unknown", x, {"group_size": 8, "nan": "ignore"}),
        ("singleton unknown", x, {"group_size": 8, "singleton": "one"}),
        ("singleton not str", x, {"group_size": 8, "singleton": 0}),
        ("ddof 2", x, {"group_size": 8, "ddof": 2}),
        ("ddof -1", x, {"group_size": 8, "ddof": -1}),
        ("ddof bool", x, {"group_size": 8, "ddof": True}),
        ("ddof float", x, {"group_size": 8, "ddof": 1.0}),
        ("eps negative", x, {"group_size": 8, "eps": -1e-6}),
        ("eps nan", x, {"group_size": 8, "eps": float("nan")}),
        ("eps inf", x, {"group_size": 8, "eps": float("inf")}),
        ("eps str", x, {"group_size": 8, "eps": "1e-6"}),
        ("num_threads 0", x, {"group_size": 8, "num_threads": 0}),
        ("num_threads huge", x, {"group_size": 8, "num_threads": 5000}),
        ("num_threads float", x, {"group_size": 8, "num_threads": 2.0}),
        ("batch_std with scale group", x, {"group_size": 8, "batch_std": 1.0}),
        ("batch_std negative", x, {"group_size": 8, "scale": "batch", "batch_std": -1.0}),
        ("batch_std inf", x, {"group_size": 8, "scale": "batch", "batch_std": float("inf")}),
        ("batch_std str", x, {"group_size": 8, "scale": "batch", "batch_std": "1"}),
        ("batch_std overflow", x, {"group_size": 8, "scale": "batch", "batch_std": 1e-300}),
        ("decimals str", x, {"group_size": 8, "decimals": "2"}),
        ("decimals huge", x, {"group_size": 8, "decimals": 2**40}),
        ("preset unknown", x, {"group_size": 8, "preset": "foo"}),
    ]


def _outcome(call):
    try:
        res = call()
    except Exception as e:  # noqa: BLE001 - compared below
        attrs = {k: getattr(e, k, None) for k in ("index", "group", "label", "names", "value")}
        return type(e), str(e), repr(attrs)
    return None, bits(res), ""


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_raises_the_same_typed_error_on_both_paths(case):
    name, rewards, kw = case
    ga.make_groups(64, 8)  # the cached uniform layout the fast path looks up
    ga.make_groups(8, 8)
    ga.make_groups(8, 2)
    kind, text, attrs = _outcome(lambda: ga.advantages(rewards, **kw))
    assert kind is not None, f"{name}: no error"
    assert issubclass(kind, (ValueError, TypeError)), (name, kind)
    assert (kind, text, attrs) == _outcome(lambda: general(rewards, **kw)), name


def test_core_faults_are_raised_by_the_fast_path_itself(fast_only):
    """NaN rewards and overflow are checked once, by the core, inside the fast path's one call;
    the error carries the index and group, as on the general path."""
    x = np.random.default_rng(4).random(8192).astype(np.float32)
    x[1234] = np.nan
    ga.make_groups(8192, 16)
    with pytest.raises(ValueError) as e:
        fast_only(x, 16)
    assert isinstance(e.value, GroupadvError) and e.value.index == 1234 and e.value.group == 1234 // 16
    offs = np.arange(0, 8193, 16, dtype=np.int64)
    with pytest.raises(ValueError) as e2:
        fast_only(x, offsets=offs)
    assert str(e2.value) == str(e.value) and e2.value.group == e.value.group
    huge = np.tile(np.array([0, 3e38, -3e38, 1], dtype=np.float32), 4)
    ga.make_groups(16, 4)
    with pytest.raises(ValueError, match="overflow"):
        fast_only(huge, 4, center="loo", scale="none")


def test_offsets_read_in_place_match_a_made_layout(fast_only):
    """offsets= (the backend checks them as it reads them; the native core without copying
    them) against groups= from make_groups: the same bits on long calls cut into many
    batches, empty groups included; the same errors for bad offsets anywhere; and offsets
    changed between calls are read afresh."""
    rng = np.random.default_rng(11)
    sizes = rng.integers(0, 32, size=40_000)
    offs = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    n = int(offs[-1])
    x = rng.normal(size=n).astype(np.float32)
    for threads in (1, 2, 3):
        want = ga.advantages(x, groups=ga.make_groups(n, offsets=offs), eps=1e-6, num_threads=threads)
        assert bits(fast_only(x, offsets=offs, eps=1e-6, num_threads=threads)) == bits(want)
    for at, value in ((1, -1), (20_000, offs[19_999] - 1), (39_999, n + 1), (40_000, n - 1)):
        bad = offs.copy()
        bad[at] = value
        with pytest.raises(ValueError) as made:
            ga.make_groups(n, offsets=bad)
        with pytest.raises(ValueError) as read:
            fast_only(x, offsets=bad)
        assert type(read.value) is type(made.value) and str(read.value) == str(made.value)
    moved = offs.copy()
    first = fast_only(x, offsets=moved)
    moved[1:-1] = moved[2:]  # merge the first two groups, in place
    moved[-1] = n
    again = fast_only(x, offsets=moved)
    assert bits(again) == bits(ga.advantages(x, groups=ga.make_groups(n, offsets=moved)))
    assert bits(again) != bits(first)


def test_bad_thread_environment_raises_on_the_fast_path(fast_only, monkeypatch):
    """GROUPADV_NUM_THREADS is read on every call that does not pass num_threads=, as before."""
    x = np.random.default_rng(5).random(64)
    ga.make_groups(64, 8)
    monkeypatch.setenv("GROUPADV_NUM_THREADS", "lots")
    with pytest.raises(ValueError, match="GROUPADV_NUM_THREADS") as e:
        fast_only(x, 8)
    with pytest.raises(ValueError) as e2:
        general(x, group_size=8)
    assert type(e.value) is type(e2.value) and str(e.value) == str(e2.value)
    offs = np.arange(0, 65, 8, dtype=np.int64)
    with pytest.raises(ValueError, match="GROUPADV_NUM_THREADS"):
        fast_only(x, offsets=offs)  # the one-off offsets route reads it too
    fast_only(x, 8, num_threads=1)  # an explicit count does not read it
    fast_only(x, offsets=offs, num_threads=1)
    monkeypatch.setenv("GROUPADV_NUM_THREADS", "")  # empty: unset
    fast_only(x, offsets=offs)
    monkeypatch.setenv("GROUPADV_NUM_THREADS", "2")
    fast_only(x, 8)
    monkeypatch.delenv("GROUPADV_NUM_THREADS")
    fast_only(x, 8)


SMALL_CALLS_STAY_SERIAL = """
import os, time, numpy as np, groupadv as ga
def worker_switches(main):
    # context switches of each thread but the caller: a woken worker adds some
    out = {}
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != main:
            with open(f"/proc/self/task/{tid}/status") as f:
                out[tid] = [l for l in f if "ctxt_switches" in l]
    return out
main = os.getpid()
before = len(os.listdir("/proc/self/task"))
x = np.random.default_rng(0).random(8192).astype(np.float32)
for _ in range(200):
    ga.grpo(x, 16, num_threads=2)
    ga.grpo(x, 16)
assert len(os.listdir("/proc/self/task")) == before, "a small call started worker threads"
big = np.random.default_rng(0).random(1 << 20).astype(np.float32)
ga.grpo(big, 16, num_threads=2)  # the pool now exists
time.sleep(0.05)  # its worker has stopped spinning and parked
seen = worker_switches(main)
for _ in range(200):
    ga.grpo(x, 16, num_threads=2)
assert worker_switches(main) == seen, "a small call woke a worker"
print("OK")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_small_call_never_wakes_a_worker():
    """N=8192 runs on the calling thread (issue 14): no worker is started or woken."""
    if _backend.name != "native":
        pytest.skip("the numpy backend has no worker pool")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPADV_")}
    env.update(PYTHONPATH=str(ROOT / "python"), GROUPADV_BACKEND="native", OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(SMALL_CALLS_STAY_SERIAL)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "OK", p.stdout + p.stderr
