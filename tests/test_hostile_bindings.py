"""Hostile inputs at the library API (issue 11): thread counts, out= aliasing, typed errors,
labels, rounding, pickling. Run on whichever backend is active (the suite runs once per
backend), and on the torch CPU path where it applies. Every case names the bug it pins down."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import groupadv as ga
from groupadv import _backend
from groupadv.errors import (
    AdvantageOverflowError,
    BadLabelError,
    GroupadvError,
    InternalError,
    NonFiniteRewardError,
    OutOverlapError,
    SingletonGroupError,
    ThreadCountError,
)

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")
native_only = pytest.mark.skipif(_backend.name != "native", reason="the compiled core only")

BIG = (1 << 17) + 64  # above the core's serial threshold: pools are really used
ROOT = Path(__file__).resolve().parents[1]


def _threads_of_process() -> int:
    return len(os.listdir("/proc/self/task"))


# --- 1. bounded threads ---------------------------------------------------------------------


def test_max_threads_is_exposed_and_matches_the_core():
    assert ga.MAX_THREADS == 1024
    if _backend.name == "native":
        assert _backend.impl.MAX_THREADS == ga.MAX_THREADS


@pytest.mark.parametrize("n", [2**31, ga.MAX_THREADS + 1, 20_000, 2**64, 0, -1])
def test_num_threads_out_of_range_is_a_thread_count_error(n):
    r = np.random.default_rng(0).random(BIG)
    ids = np.arange(BIG) // 4
    with pytest.raises(ThreadCountError, match="num_threads must be from 1 to 1024") as e:
        ga.grpo(r, group_ids=ids, num_threads=n)
    assert e.value.value == n
    with pytest.raises(ValueError):
        ga.grpo(r, group_size=64, num_threads=n)
    with pytest.raises(ValueError):
        ga.group_stats(r, group_size=64, num_threads=n)
    tok = np.ones((4, 3))
    with pytest.raises(ThreadCountError):
        ga.token_advantages(tok, tok != 0, 2, num_threads=n)


@pytest.mark.parametrize("n", [2**40, 2**64, ga.MAX_THREADS + 1, -1])
def test_set_num_threads_out_of_range_is_a_value_error_and_changes_nothing(n):
    before = ga.get_num_threads()
    with pytest.raises(ThreadCountError, match="from 0 to 1024"):
        ga.set_num_threads(n)
    assert ga.get_num_threads() == before
    assert ga.grpo(np.arange(8.0), 4).shape == (8,)  # the next call still works


def test_max_threads_itself_is_accepted():
    ga.set_num_threads(ga.MAX_THREADS)
    try:
        assert ga.get_num_threads() == ga.MAX_THREADS
    finally:
        ga.set_num_threads(0)
    r = np.arange(8.0)
    np.testing.assert_array_equal(ga.grpo(r, 4, num_threads=ga.MAX_THREADS), ga.grpo(r, 4))


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_hundreds_of_distinct_thread_counts_keep_os_threads_bounded():
    """Each distinct num_threads used to build a pool that lived forever: 200 calls left
    21,302 OS threads. Now at most MAX_POOLS pools are cached and evicted ones end."""
    r = np.random.default_rng(1).random(BIG).astype(np.float32)
    expected = ga.grpo(r, 64, num_threads=1)
    base = _threads_of_process()
    counts = list(range(2, 202))
    peak = 0
    for k in counts:
        np.testing.assert_array_equal(ga.grpo(r, 64, num_threads=k), expected)
        peak = max(peak, _threads_of_process())
    # 4 cached pools of at most 201 threads, plus evicted ones still exiting: far below the
    # ~20,000 an unbounded cache reaches.
    assert peak - base <= 4 * max(counts) + 400, (base, peak)
    if _backend.name == "native":
        pools, threads = _backend.impl._pool_cache()
        assert pools <= 4 and threads <= 4 * max(counts)


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT / "python"), **env}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1025", "4000", "2.5", "99999999999999999999999", "٣"])
def test_bad_environment_thread_count_is_a_clear_error(value):
    code = (
        "import groupadv as ga, numpy as np\n"
        "from groupadv.errors import ThreadCountError\n"
        "for f in (lambda: ga.grpo(np.random.rand(1 << 18), 4), ga.get_num_threads):\n"
        "    try:\n"
        "        f()\n"
        "    except ThreadCountError as e:\n"
        "        assert 'GROUPADV_NUM_THREADS' in str(e), e\n"
        "    else:\n"
        "        raise SystemExit('no error')\n"
        "print(ga.grpo(np.arange(4.0), 2, num_threads=2).tolist())\n"  # an explicit count still works
    )
    p = _run(code, {"GROUPADV_NUM_THREADS": value, "GROUPADV_BACKEND": _backend.name})
    assert p.returncode == 0, p.stderr + p.stdout
    assert p.stdout.strip() == "[-1.0, 1.0, -1.0, 1.0]"


@pytest.mark.parametrize("value", ["3", " 7 ", ""])
def test_good_environment_thread_count(value):
    p = _run("import groupadv as ga; print(ga.get_num_threads())",
             {"GROUPADV_NUM_THREADS": value, "GROUPADV_BACKEND": _backend.name})
    assert p.returncode == 0, p.stderr
    assert int(p.stdout) == (int(value) if value.strip() else min(os.cpu_count() or 1, ga.MAX_THREADS))


# --- 2. no PanicException: out= overlap, borrow conflicts, the last resort -------------------


def _overlap_cases():
    buf = np.zeros(8)
    ib = np.arange(4, dtype=np.int64)
    be = np.arange(4.0).astype(">f8")
    ids = np.array([0, 0, 1, 1], dtype=np.int64)
    r = np.arange(4.0)
    return [
        ("strided rewards", dict(rewards=buf[::2], group_size=2, out=buf[:4]), "rewards"),
        ("negative-stride rewards", dict(rewards=buf[7::-2], group_size=2, out=buf[:4]), "rewards"),
        ("int rewards viewed as out", dict(rewards=ib, group_size=2, out=ib.view(np.float64)), "rewards"),
        ("big-endian rewards", dict(rewards=be, group_size=2, out=be.view("<f8")), "rewards"),
        ("int labels", dict(rewards=r, group_ids=ids, out=ids.view(np.float64)), "group_ids"),
    ]


@pytest.mark.parametrize("name,kwargs,arg", _overlap_cases(), ids=[c[0] for c in _overlap_cases()])
def test_out_overlapping_any_input_is_an_error_and_input_untouched(name, kwargs, arg):
    inputs = {k: np.array(v, copy=True) for k, v in kwargs.items() if k in ("rewards", "group_ids")}
    with pytest.raises(OutOverlapError, match="overlap") as e:
        ga.grpo(**kwargs)
    assert e.value.names == ("out", arg)
    for k, v in inputs.items():
        np.testing.assert_array_equal(kwargs[k], v)


def test_out_overlapping_offsets_is_an_error():
    offs = np.array([0, 2, 4, 0], dtype=np.int64)
    out = offs.view(np.float64)
    with pytest.raises(OutOverlapError, match="offsets"):
        ga.grpo(np.arange(4.0), offsets=offs[:3], out=out)
    assert offs.tolist() == [0, 2, 4, 0]


def test_out_disjoint_views_of_one_buffer_are_fine():
    buf = np.arange(8.0)
    res = ga.grpo(buf[::2], 2, out=buf[4:].copy())
    np.testing.assert_array_equal(res, ga.grpo(buf[::2].copy(), 2))
    ga.grpo(buf[:4], 2, out=buf[4:])  # adjacent halves of one buffer do not overlap
    np.testing.assert_array_equal(buf[4:], ga.grpo(np.arange(4.0), 2))


def test_token_advantages_out_is_the_mask():
    tok = np.random.default_rng(2).random((4, 3))
    m = np.ones((4, 3))
    with pytest.raises(OutOverlapError, match="response_mask"):
        ga.token_advantages(tok, m, 2, out=m)
    assert (m == 1).all()
    with pytest.raises(OutOverlapError, match="token_level_rewards"):
        ga.token_advantages(tok, m, 2, out=tok)


def test_packed_token_advantages_out_is_an_input():
    tok = np.random.default_rng(3).random(12)
    lens = np.array([3, 3, 3, 3])
    m = np.ones(12)
    for kwargs, arg in [
        (dict(out=tok), "token_rewards"),
        (dict(response_mask=m, out=m), "response_mask"),
        (dict(response_mask=m, out=np.empty(12)), None),
    ]:
        if arg is None:
            ga.packed_token_advantages(tok, lens, 2, **kwargs)
            continue
        with pytest.raises(OutOverlapError, match=arg):
            ga.packed_token_advantages(tok, lens, 2, **kwargs)
    big = np.zeros(16, dtype=np.int64)
    big[:4] = 3
    with pytest.raises(OutOverlapError, match="lengths"):
        ga.packed_token_advantages(tok, big[:4], 2, out=big.view(np.float64)[2:14])
    assert big[:4].tolist() == [3, 3, 3, 3]


@needs_torch
def test_torch_out_overlapping_the_rewards_is_an_error():
    t = torch.arange(8.0, dtype=torch.float64)
    with pytest.raises(OutOverlapError):
        ga.grpo(t[:4], 2, out=t[2:6])
    with pytest.raises(OutOverlapError):
        ga.grpo(t[::2], 2, out=t[:4])
    tok = torch.rand(4, 3, dtype=torch.float64)
    m = torch.ones(4, 3, dtype=torch.float64)
    with pytest.raises(OutOverlapError):
        ga.token_advantages(tok, m, 2, out=m)


def _hammer(calls, seconds_of_calls: int = 30):
    """Run `calls` concurrently; return the exceptions they raised (BaseException included)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(calls))

    def worker(f):
        try:
            barrier.wait()
            for _ in range(seconds_of_calls):
                try:
                    f()
                except OutOverlapError as e:
                    assert "in use by another groupadv call" in str(e)
        except BaseException as e:  # noqa: BLE001 - a PanicException is what this test catches
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(f,)) for f in calls]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in ts)
    return errors


def test_threads_sharing_one_out_buffer_never_panic():
    r = np.random.default_rng(4).random(1 << 20)
    out = np.empty_like(r)
    errors = _hammer([lambda: ga.grpo(r, 16, out=out)] * 4)
    assert not errors, errors
    np.testing.assert_array_equal(ga.grpo(r, 16, out=out), ga.grpo(r, 16))


def test_one_thread_reads_what_another_writes_never_panics():
    r = np.random.default_rng(5).random(1 << 20)
    buf = ga.grpo(r, 16)  # finite values throughout, whatever the racing reader sees
    tok = np.random.default_rng(6).random((1 << 12, 256))
    tok_out = np.zeros_like(tok)
    errors = _hammer([
        lambda: ga.grpo(r, 16, out=buf),
        lambda: ga.grpo(buf, 16),
        lambda: ga.token_advantages(tok, tok_out != 0, 16, out=tok_out),
        lambda: ga.packed_token_advantages(tok_out.reshape(-1), np.full(1 << 12, 256), 16),
    ], 15)
    assert not errors, errors


@native_only
def test_a_rust_panic_is_an_internal_error_not_a_panic_exception():
    with pytest.raises(InternalError, match="a bug, please report it") as e:
        _backend.impl._panic_for_test()
    assert isinstance(e.value, ValueError)
    assert "deliberate panic" in str(e.value)


@native_only
def test_native_entry_points_turn_borrow_conflicts_into_errors():
    """The private functions too: out= the same array as rewards is a ValueError, not a panic."""
    x = np.ones(8)
    g = ga.make_groups(8, 4)
    with pytest.raises(OutOverlapError, match="in use"):
        _backend.impl.advantages(x, x, g._impl, "mean", "group", 0, 0.0, "zero", "raise", 1)
    adv = np.ones(2)
    with pytest.raises(OutOverlapError):
        _backend.impl.broadcast_tokens(adv, None, None, adv, 1)


# --- 3. typed errors ----------------------------------------------------------------------------


def test_typed_error_classes_derive_from_value_or_type_error():
    for cls in (NonFiniteRewardError, SingletonGroupError, AdvantageOverflowError, BadLabelError,
                OutOverlapError, ThreadCountError, InternalError):
        assert issubclass(cls, ValueError) and issubclass(cls, GroupadvError)
    assert ga.errors.NonFiniteRewardError is NonFiniteRewardError


@pytest.mark.parametrize("layout", ["uniform", "ragged", "labels", "str labels"])
def test_non_finite_reward_error_has_index_group_and_label(layout):
    r = np.array([1.0, 2.0, 3.0, np.inf, 5.0, 6.0])
    kw = {
        "uniform": dict(group_size=2),
        "ragged": dict(offsets=[0, 2, 4, 6]),
        "labels": dict(group_ids=[7, 8, 9, 8, 7, 9]),
        "str labels": dict(group_ids=["a", "b", "c", "b", "a", "c"]),
    }[layout]
    with pytest.raises(NonFiniteRewardError, match=r"rewards\[3\] is inf") as e:
        ga.grpo(r, **kw)
    assert e.value.index == 3 and e.value.value == np.inf
    assert e.value.group == 1
    assert e.value.label == {"uniform": None, "ragged": None, "labels": 8, "str labels": "b"}[layout]


def test_singleton_error_has_index_group_and_label():
    with pytest.raises(SingletonGroupError, match=r"group 1 \(rewards\[2\]\)") as e:
        ga.grpo([1.0, 3.0, 2.0, 4.0, 5.0], group_ids=["x", "x", "y", "z", "z"], singleton="error")
    assert (e.value.index, e.value.group, e.value.label) == (2, 1, "y")


def test_overflow_error_has_the_group():
    with pytest.raises(AdvantageOverflowError, match="group 1") as e:
        ga.drgrpo([0.0, 1.0, -1.7e308, 1.7e308], 2)
    assert e.value.group == 1


def test_typed_errors_pickle_with_their_attributes():
    e = NonFiniteRewardError("rewards[3] is NaN", index=3, group=1, label="b", value=float("nan"))
    f = pickle.loads(pickle.dumps(e))
    assert type(f) is NonFiniteRewardError and str(f) == str(e)
    assert (f.index, f.group, f.label) == (3, 1, "b")


@needs_torch
def test_torch_cpu_errors_are_typed_too():
    with pytest.raises(NonFiniteRewardError) as e:
        ga.grpo(torch.tensor([1.0, float("nan"), 2.0, 3.0]), group_ids=["a", "b", "a", "b"])
    assert (e.value.index, e.value.group, e.value.label) == (1, 1, "b")


# --- 4. silently wrong --------------------------------------------------------------------------


NAN_LABELS = [
    ("list of float('nan')", lambda: [float("nan"), float("nan"), 1, 1]),
    ("list of np.nan", lambda: [np.nan, np.nan, 1, 1]),
    ("object array", lambda: np.array(["a", np.nan, "a", np.nan], dtype=object)),
    ("mixed list", lambda: ["a", "b", float("nan"), "a"]),
    ("float array", lambda: np.array([1.0, np.nan, 1.0, 2.0])),
    ("NaT", lambda: [np.datetime64("NaT"), 1, 1, 2]),
    ("Decimal NaN", lambda: [__import__("decimal").Decimal("NaN"), 1, 1, 2]),
]


@pytest.mark.parametrize("name,ids", NAN_LABELS, ids=[n for n, _ in NAN_LABELS])
def test_nan_labels_are_an_error(name, ids):
    with pytest.raises(BadLabelError, match="not equal to itself") as e:
        ga.grpo(np.arange(4.0), group_ids=ids())
    assert e.value.index in (0, 1, 2)
    with pytest.raises(ValueError):
        ga.make_groups(group_ids=ids())


def test_nan_labels_from_pandas_are_an_error():
    pd = pytest.importorskip("pandas")
    for ids in (pd.Categorical(["a", np.nan, "a", np.nan]), pd.Categorical([1.0, np.nan, 1.0, 2.0]),
                pd.Series(["a", None, "a", np.nan], dtype=object).where(lambda s: s.notna(), np.nan),
                pd.array(["a", pd.NA, "a", "b"], dtype="string")):
        with pytest.raises(BadLabelError):
            ga.grpo(np.arange(4.0), group_ids=ids)


def test_verl_object_index_with_nan_is_an_error():
    index = np.array(["uid-0", "uid-0", float("nan"), "uid-1"], dtype=object)  # verl's `index`
    with pytest.raises(BadLabelError) as e:
        ga.grpo(np.arange(4.0), group_ids=index)
    assert e.value.index == 2


@needs_torch
def test_verl_adapter_with_a_nan_index_is_an_error():
    from groupadv.integrations import verl

    # verl passes tensors (token_level_rewards, response_mask) and an object array of uids
    tok = torch.from_numpy(np.random.default_rng(7).random((4, 3)))
    index = np.array(["u0", "u0", np.nan, np.nan], dtype=object)
    with pytest.raises(BadLabelError):
        verl.compute_grpo_outcome_advantage(tok, torch.ones((4, 3), dtype=torch.bool), index)


@needs_torch
def test_nan_labels_in_a_tensor_are_an_error():
    with pytest.raises(BadLabelError):
        ga.grpo(torch.arange(4.0), group_ids=torch.tensor([1.0, float("nan"), 1.0, 2.0]))


def test_none_is_still_a_label():
    np.testing.assert_array_equal(ga.grpo(np.arange(4.0), group_ids=[None, None, 1, 1]),
                                  ga.grpo(np.arange(4.0), 2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unaligned_arrays_work(dtype):
    item = np.dtype(dtype).itemsize
    raw = bytearray(item * 6 + 1)
    r = np.frombuffer(raw, dtype=dtype, offset=1)
    r[:] = [0.2, 0.5, 0.8, 0.3, 0.7, 0.1]
    assert not r.flags.aligned
    np.testing.assert_array_equal(ga.grpo(r, 3), ga.grpo(r.copy(), 3))
    offs_raw = bytearray(8 * 3 + 1)
    offs = np.frombuffer(offs_raw, dtype=np.int64, offset=1)
    offs[:] = [0, 3, 6]
    np.testing.assert_array_equal(ga.grpo(r, offsets=offs), ga.grpo(r.copy(), 3))
    ids = np.frombuffer(bytearray(8 * 6 + 1), dtype=np.int64, offset=1)
    ids[:] = [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(ga.grpo(r, group_ids=ids), ga.grpo(r.copy(), 3))
    tok = np.frombuffer(bytearray(item * 6 + 1), dtype=dtype, offset=1).reshape(2, 3)
    tok[:] = 1.0
    tok[1] = 2.0
    mask = np.frombuffer(bytearray(item * 6 + 1), dtype=dtype, offset=1).reshape(2, 3)
    mask[:] = 1.0
    np.testing.assert_array_equal(ga.token_advantages(tok, mask, 2), ga.token_advantages(tok.copy(), mask.copy(), 2))


def test_unaligned_out_is_an_error_not_a_crash():
    out = np.frombuffer(bytearray(8 * 4 + 1), dtype=np.float64, offset=1)
    with pytest.raises(ValueError, match="aligned"):
        ga.grpo(np.arange(4.0), 2, out=out)


# --- 5. other exception types -----------------------------------------------------------------


R6 = np.array([0.2, 0.5, 0.8, 0.3, 0.7, 0.1])


@pytest.mark.parametrize("d", [10**20, -(10**20), 2**31, 2**63])
def test_huge_decimals_is_a_value_error(d):
    with pytest.raises(ValueError, match="decimals"):
        ga.grpo(R6, 3, decimals=d)


@pytest.mark.parametrize("d", [17, 30, 308, 400, 2**31 - 1])
def test_large_decimals_change_nothing(d):
    np.testing.assert_array_equal(ga.grpo(R6, 3, decimals=d), ga.grpo(R6, 3))


@pytest.mark.parametrize("d", [-310, -400, -(2**31) + 1])
def test_very_negative_decimals_give_signed_zeros(d):
    res = ga.grpo(R6, 3, decimals=d)
    assert (res == 0).all() and np.array_equal(np.signbit(res), np.signbit(ga.grpo(R6, 3)))


def test_decimals_on_float32_near_its_range_stay_finite():
    r = np.array([1e30, -1e30, 0.0, 0.0], dtype=np.float32)
    res = ga.advantages(r, 2, scale="none", decimals=10)
    assert np.isfinite(res).all()
    np.testing.assert_array_equal(res, ga.advantages(r, 2, scale="none"))
    assert ga.grpo(R6.astype(np.float32), 3, decimals=4).tolist() == \
        np.round(ga.grpo(R6.astype(np.float32), 3), 4).tolist()


@needs_torch
@pytest.mark.parametrize("d", [10, 400, -400])
def test_decimals_on_tensors(d):
    t = torch.tensor([1e30, -1e30, 0.0, 0.0])
    res = ga.advantages(t, 2, scale="none", decimals=d)
    assert bool(torch.isfinite(res).all()) and not bool(torch.isnan(res).any())
    with pytest.raises(ValueError, match="decimals"):
        ga.grpo(t, 2, decimals=10**20)


@pytest.mark.parametrize("n", [-1, -(2**70), 2**70])
def test_make_groups_with_an_impossible_n(n):
    for kw in (dict(group_size=1), dict(offsets=[0, 1])):
        with pytest.raises(ValueError, match="n must be"):
            ga.make_groups(n=n, **kw)


@needs_torch
def test_meta_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="meta"):
        ga.grpo(torch.ones(4, device="meta"), 2)


def test_lone_surrogate_str_labels_work():
    ids = ["\ud800", "a", "\ud800", "a", "\udfff", "\udfff"]
    np.testing.assert_array_equal(ga.grpo(R6, group_ids=ids), ga.grpo(R6, group_ids=[0, 1, 0, 1, 2, 2]))
    assert ga.make_groups(group_ids=ids).labels == ["\ud800", "a", "\udfff"]


@pytest.mark.parametrize("eps", ["0.5", b"0.5", np.str_("1")])
def test_eps_as_a_string_is_a_type_error(eps):
    with pytest.raises(TypeError, match="eps must be a number"):
        ga.grpo(R6, 3, eps=eps)


@pytest.mark.parametrize("eps", [float("nan"), -1e-8, float("inf")])
def test_whiten_rejects_a_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        ga.pipeline.whiten(R6, eps=eps)
    with pytest.raises(TypeError):
        ga.pipeline.whiten(R6, eps="1e-8")


@needs_torch
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_weights_sum_to_one(dtype):
    w = ga.self_normalized_weights(torch.ones(100_000, dtype=getattr(torch, dtype)))
    assert w.dtype == getattr(torch, dtype)
    assert abs(float(w.double().sum()) - 1.0) < 5e-3
    w = ga.self_normalized_weights(torch.ones(4, 50_000, dtype=getattr(torch, dtype)), axis=1)
    np.testing.assert_allclose(w.double().sum(dim=1).numpy(), 1.0, atol=5e-3)


def test_half_precision_numpy_weights_sum_to_one():
    w = ga.self_normalized_weights(np.ones(100_000, dtype=np.float16))
    assert w.dtype == np.float16 and abs(float(w.astype(np.float64).sum()) - 1.0) < 5e-3


LAYOUTS = [
    dict(n=6, group_size=3),
    dict(offsets=[0, 1, 4, 6]),
    dict(group_ids=["b", "a", "b", "c", "a", "c"]),
    dict(group_ids=np.array([5, 5, 2, 2, 9, 9])),
]


@pytest.mark.parametrize("kw", LAYOUTS, ids=["uniform", "ragged", "str labels", "int labels"])
@pytest.mark.parametrize("clone", [lambda g: pickle.loads(pickle.dumps(g)), copy.deepcopy, copy.copy],
                         ids=["pickle", "deepcopy", "copy"])
def test_groups_pickle_and_copy(kw, clone):
    g = ga.make_groups(**kw)
    h = clone(g)
    assert (h.kind, h.n, h.n_groups) == (g.kind, g.n, g.n_groups)
    np.testing.assert_array_equal(h.codes(), g.codes())
    np.testing.assert_array_equal(h.sizes(), g.sizes())
    if g.labels is not None:
        assert list(h.labels) == list(g.labels)
    np.testing.assert_array_equal(ga.grpo(R6, groups=h), ga.grpo(R6, groups=g))
    if _backend.name == "native":
        gi = pickle.loads(pickle.dumps(g._impl))
        assert type(gi) is type(g._impl) and repr(gi) == repr(g._impl)


def test_corrupt_pickled_grouping_is_an_error():
    if _backend.name != "native":
        pytest.skip("the native Grouping's restore")
    with pytest.raises(ValueError):
        _backend.impl._grouping_restore("nonsense", 4, 2)
    with pytest.raises(ValueError):
        _backend.impl._grouping_restore("ragged", 4, np.array([0, 5], dtype=np.int64))


def test_groups_labels_are_not_the_callers_list():
    ids = ["b", "a", "b", "c"]
    g = ga.make_groups(group_ids=ids)
    ids[0] = "zz"
    got = g.labels
    got[0] = "yy"
    assert g.labels == ["b", "a", "c"]
    arr = np.array([3, 1, 3, 2])
    g = ga.make_groups(group_ids=arr)
    arr[0] = 99
    assert g.labels.tolist() == [3, 1, 2]
    with pytest.raises(ValueError):
        g.labels[0] = 7  # read-only
    st = ga.group_stats(np.arange(4.0), groups=g)
    assert st.labels.tolist() == [3, 1, 2]


# --- 6. more hostile inputs found while here -----------------------------------------------------


class _RaisingHash:
    def __hash__(self):
        raise RuntimeError("no hash for you")


class _RaisingEq:
    def __hash__(self):
        return 1

    def __eq__(self, other):
        raise RuntimeError("no eq for you")

    __ne__ = __eq__


@pytest.mark.parametrize("bad", [_RaisingHash, _RaisingEq], ids=["hash", "eq"])
def test_labels_whose_hash_or_eq_raise_are_a_type_error(bad):
    with pytest.raises(TypeError, match="group_ids"):
        ga.grpo(np.arange(4.0), group_ids=[bad(), bad(), 1, 1])


def test_mixed_label_types_stay_distinct():
    res = ga.grpo(np.arange(6.0), group_ids=[1, "1", 1, "1", 1.5, 1.5])
    np.testing.assert_array_equal(res, ga.grpo(np.arange(6.0), group_ids=[0, 1, 0, 1, 2, 2]))


def test_big_endian_and_strided_labels_and_offsets():
    r = np.arange(6.0)
    ids = np.array([0, 0, 0, 1, 1, 1], dtype=">i8")
    offs = np.array([0, 0, 3, 3, 6, 6], dtype=">i4")[::2]
    expected = ga.grpo(r, 3)
    np.testing.assert_array_equal(ga.grpo(r, group_ids=ids), expected)
    np.testing.assert_array_equal(ga.grpo(r, offsets=offs), expected)
    np.testing.assert_array_equal(ga.grpo(r, group_ids=np.array([7, 7, 7, 2**63 + 1, 2**63 + 1, 2**63 + 1],
                                                               dtype=">u8")), expected)


def test_failed_calls_leave_the_library_usable():
    """A mix of every error above, then a normal call: nothing is left borrowed or locked."""
    r = np.arange(8.0)
    for f in (
        lambda: ga.grpo(r, 4, out=r),
        lambda: ga.grpo(r, 4, num_threads=10**9),
        lambda: ga.grpo([1.0, np.nan], 2),
        lambda: ga.grpo(r, group_ids=[np.nan] * 8),
        lambda: ga.set_num_threads(2**64),
        lambda: ga.grpo(r, 4, decimals=10**30),
    ):
        with pytest.raises((ValueError, TypeError)):
            f()
    np.testing.assert_array_equal(ga.grpo(r, 4, out=np.empty(8)), ga.grpo(r.copy(), 4))
