"""The `groupadv` command line: compute (streamed, two passes) gives the numbers of
ga.advantages on the whole column, for every input/output format; stats; bench; errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import groupadv as ga
from groupadv import _bench
from groupadv.cli import main


def _data(n=1000, n_groups=70, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_groups, n)  # non-contiguous groups
    r = rng.random(n).astype(dtype)
    r[rng.random(n) < 0.2] = 1.0  # ties across groups
    r[ids == 3] = 0.1  # an all-equal group (0.1 is inexact in binary)
    return ids, r


def _write_csv(path, ids, r, extra=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "reward"] + (["note"] if extra else []))
        for i, v in zip(ids.tolist(), r.tolist()):
            w.writerow([f"q{i}", repr(float(v))] + (["x,y"] if extra else []))


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(argv, capsys=None):
    code = main([str(a) for a in argv])
    return code


def _expected(ids, r, **kw):
    return ga.advantages(r, group_ids=[f"q{i}" for i in ids.tolist()], **kw)


def _close(a, b, dtype=np.float64):
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, equal_nan=True)


OPTIONS = [
    [],
    ["--estimator", "drgrpo"],
    ["--estimator", "rloo"],
    ["--estimator", "rloo", "--singleton", "raw"],
    ["--scale", "batch", "--eps", "1e-6"],
    ["--scale", "batch_residual", "--ddof", "1"],
    ["--scale", "none"],
    ["--ddof", "1", "--eps", "0.01", "--singleton", "raw"],
]


def _kwargs(opts):
    kw = {}
    est = "grpo"
    it = iter(opts)
    for flag in it:
        val = next(it)
        if flag == "--estimator":
            est = val
        else:
            key = flag[2:]
            kw[key] = float(val) if key == "eps" else int(val) if key in ("ddof", "decimals") else val
    center = {"grpo": "mean", "drgrpo": "mean", "rloo": "loo"}[est]
    if est != "grpo":
        kw["scale"] = "none"
    return {"center": center, **kw}


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: " ".join(o) or "default")
@pytest.mark.parametrize("batch_rows", [1, 37, 100000])
def test_csv_compute_matches_the_library(tmp_path, opts, batch_rows):
    ids, r = _data()
    ids[5] = 999  # a singleton group
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_csv(src, ids, r)
    assert _run(["compute", src, "--group-col", "uid", "--reward-col", "reward", "-o", dst, "-q",
                 "--batch-rows", batch_rows, *opts]) == 0
    rows = _read_csv(dst)
    assert [row["uid"] for row in rows] == [f"q{i}" for i in ids.tolist()]
    assert all(row["note"] == "x,y" for row in rows)
    got = np.array([float(row["advantage"]) for row in rows])
    _close(got, _expected(ids, r, **_kwargs(opts)))


def test_all_equal_groups_are_exactly_zero_across_batches(tmp_path):
    ids, r = _data()
    src, dst = tmp_path / "in.npz", tmp_path / "out.npy"
    np.savez(src, uid=ids, reward=r)
    assert _run(["compute", src, "--group-col", "uid", "-o", dst, "-q", "--batch-rows", 7]) == 0
    a = np.load(dst)
    assert np.all(a[ids == 3] == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_structured_npy_in_npz_out_keeps_dtype(tmp_path, dtype):
    ids, r = _data(dtype=dtype)
    arr = np.zeros(len(r), dtype=[("uid", np.int64), ("score", dtype)])
    arr["uid"], arr["score"] = ids, r
    src, dst = tmp_path / "in.npy", tmp_path / "out.npz"
    np.save(src, arr)
    assert _run(["compute", src, "--group-col", "uid", "--reward-col", "score", "-o", dst, "-q",
                 "--batch-rows", 64, "--output-col", "adv"]) == 0
    z = np.load(dst)
    assert z["adv"].dtype == dtype
    np.testing.assert_array_equal(z["uid"], ids)
    _close(z["adv"], ga.advantages(r, group_ids=ids), dtype)


def test_plain_npy_with_group_size_and_decimals(tmp_path):
    r = np.random.default_rng(1).random(64)
    src, dst = tmp_path / "r.npy", tmp_path / "a.npy"
    np.save(src, r)
    assert _run(["compute", src, "--group-size", 8, "-o", dst, "-q", "--batch-rows", 5, "--decimals", 3]) == 0
    _close(np.load(dst), ga.grpo(r, 8, decimals=3))


def test_nan_policies(tmp_path):
    ids, r = _data(n=200, n_groups=20)
    r[[4, 50]] = np.nan
    src = tmp_path / "in.npz"
    np.savez(src, uid=ids, reward=r)
    with pytest.raises(SystemExit) as e:
        main(["compute", str(src), "--group-col", "uid", "-o", str(tmp_path / "x.npy"), "-q"])
    assert e.value.code == 2
    assert not (tmp_path / "x.npy").exists()
    for nan in ("propagate", "omit"):
        for scale in ("group", "batch"):
            dst = tmp_path / f"{nan}{scale}.npy"
            assert _run(["compute", src, "--group-col", "uid", "-o", dst, "-q", "--nan", nan, "--scale", scale,
                         "--batch-rows", 13]) == 0
            _close(np.load(dst), ga.advantages(r, group_ids=ids, nan=nan, scale=scale))


def test_error_messages(tmp_path, capsys):
    ids, r = _data(n=50)
    src = tmp_path / "in.csv"
    _write_csv(src, ids, r)

    def err(*argv):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        assert e.value.code == 2
        return capsys.readouterr().err

    out = tmp_path / "o.csv"
    assert "no column 'group'" in err("compute", src, "--group-col", "group", "-o", out)
    assert "no column 'r'" in err("compute", src, "--group-col", "uid", "--reward-col", "r", "-o", out)
    assert "not numeric" in err("compute", src, "--group-col", "uid", "--reward-col", "note", "-o", out)
    assert "exactly one of --group-col or --group-size" in err("compute", src, "-o", out)
    assert "input file not found" in err("compute", tmp_path / "nope.csv", "--group-col", "uid", "-o", out)
    assert "unknown file type" in err("compute", src, "--group-col", "uid", "-o", tmp_path / "o.xlsx")
    assert "--scale applies to --estimator grpo" in err("compute", src, "--group-col", "uid", "--estimator", "rloo",
                                                         "--scale", "batch", "-o", out)
    assert "already has a column 'reward'" in err("compute", src, "--group-col", "uid", "--output-col", "reward", "-o", out)
    assert "must differ" in err("compute", src, "--group-col", "uid", "-o", src)
    assert "does not divide" in err("compute", src, "--group-size", 7, "-o", out)
    assert "single reward" in err("compute", src, "--group-size", 1, "--singleton", "error", "-o", out)
    assert "No such file or directory" in err("compute", src, "--group-col", "uid", "-o", tmp_path / "no" / "o.csv")
    (tmp_path / "junk.npy").write_bytes(b"not an npy file")
    assert "groupadv: error:" in err("stats", tmp_path / "junk.npy", "--group-size", 1)
    assert not out.exists()

    # a non-numeric cell deep in the file names its row; NaN names its row
    bad = tmp_path / "bad.csv"
    src_rows = open(src).read().splitlines()
    src_rows[31] = "q1,abc,n"
    bad.write_text("\n".join(src_rows) + "\n")
    msg = err("compute", bad, "--group-col", "uid", "-o", out, "--batch-rows", 8)
    assert "not numeric: row 30 holds 'abc'" in msg
    src_rows[31] = "q1,nan,n"
    bad.write_text("\n".join(src_rows) + "\n")
    msg = err("compute", bad, "--group-col", "uid", "-o", out, "--batch-rows", 8)
    assert "non-finite" in msg and "row 30" in msg and "--nan" in msg
    src_rows[31] = "q1,,n"  # an empty cell is a missing reward
    bad.write_text("\n".join(src_rows) + "\n")
    assert "non-finite value (nan) at row 30" in err("compute", bad, "--group-col", "uid", "-o", out, "--batch-rows", 8)
    src_rows[31] = ",0.5,n"  # an empty label is a missing label
    bad.write_text("\n".join(src_rows) + "\n")
    assert "missing value at row 30" in err("compute", bad, "--group-col", "uid", "-o", out, "--batch-rows", 8)


@pytest.mark.parametrize("arrow", [True, False])
def test_csv_cells_parse_the_same_with_and_without_pyarrow(tmp_path, monkeypatch, arrow):
    import groupadv.cli.readers  # noqa: F401
    from groupadv import cli

    if arrow:
        pytest.importorskip("pyarrow")
    monkeypatch.setattr(cli.readers, "have_pyarrow", lambda: arrow)
    src, dst = tmp_path / "in.csv", tmp_path / "out.npy"
    src.write_text("uid,reward\na,1\na, 2.5 \nb,nan\nb,inf\nb,3\nc,\nc,-1e300\nc,1e300\n")
    assert _run(["compute", src, "--group-col", "uid", "-o", dst, "-q", "--nan", "omit", "--batch-rows", 3]) == 0
    r = np.array([1, 2.5, np.nan, np.inf, 3, np.nan, -1e300, 1e300])
    _close(np.load(dst), ga.advantages(r, group_ids=list("aabbbccc"), nan="omit"))


def test_csv_without_pyarrow_uses_the_stdlib(tmp_path, monkeypatch):
    import groupadv.cli.readers  # noqa: F401
    from groupadv import cli

    monkeypatch.setattr(cli.readers, "have_pyarrow", lambda: False)
    ids, r = _data(n=300)
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_csv(src, ids, r)
    assert _run(["compute", src, "--group-col", "uid", "-o", dst, "-q", "--batch-rows", 41]) == 0
    got = np.array([float(row["advantage"]) for row in _read_csv(dst)])
    _close(got, _expected(ids, r))
    bad = tmp_path / "bad.csv"
    bad.write_text("uid,reward\na,1\na,zz\n")
    with pytest.raises(SystemExit):
        main(["compute", str(bad), "--group-col", "uid", "-o", str(dst), "-q"])


def test_stats_matches_group_stats(tmp_path, capsys):
    ids, r = _data()
    src = tmp_path / "in.npz"
    np.savez(src, uid=ids, reward=r)
    assert _run(["stats", src, "--group-col", "uid", "--json", "-q", "--batch-rows", 33]) == 0
    s = json.loads(capsys.readouterr().out)
    ref = ga.group_stats(r, group_ids=ids)
    assert s["rows"] == len(r) and s["n_groups"] == ref.n_groups
    assert s["frac_zero_std"] == pytest.approx(ref.frac_zero_std)
    assert s["mean_within_std"] == pytest.approx(ref.mean_within_std, rel=1e-12)
    assert s["reward_mean"] == pytest.approx(r.mean(), rel=1e-12)
    assert s["reward_std"] == pytest.approx(r.std(), rel=1e-12)
    assert _run(["stats", src, "--group-col", "uid", "-q"]) == 0
    table = capsys.readouterr().out
    assert "| n_groups | 70 |" in table


def test_parquet_and_arrow_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    ids, r = _data(n=3000, n_groups=200, dtype=np.float32)
    uids = np.array([f"u{i}" for i in ids], dtype=object)
    table = pa.table({"uid": uids, "reward": r, "step": np.arange(len(r))})
    src = tmp_path / "in.parquet"
    pq.write_table(table, src, row_group_size=500)
    expected = ga.advantages(r, group_ids=uids)
    for out in ("out.parquet", "out.arrow", "out.feather", "out.csv", "out.npz"):
        dst = tmp_path / out
        assert _run(["compute", src, "--group-col", "uid", "-o", dst, "-q", "--batch-rows", 256]) == 0
        if out.endswith("parquet"):
            t = pq.read_table(dst)
        elif out.endswith(("arrow", "feather")):
            import pyarrow.feather as feather

            t = feather.read_table(dst)
        else:
            continue
        assert t.column_names == ["uid", "reward", "step", "advantage"]
        assert t.column("uid").to_pylist() == uids.tolist()
        adv = t.column("advantage").to_numpy()
        assert adv.dtype == np.float32
        _close(adv, expected, np.float32)
    # arrow file as input, scale batch
    dst = tmp_path / "b.npy"
    assert _run(["compute", tmp_path / "out.arrow", "--group-col", "uid", "--scale", "batch", "-o", dst, "-q",
                 "--batch-rows", 300]) == 0
    _close(np.load(dst), ga.advantages(r, group_ids=uids, scale="batch"), np.float32)


def test_parquet_bad_columns(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    table = {"uid": ["a", "a", "b"], "gap": ["a", None, "b"], "reward": ["1", "x", "3"], "r": [1.0, None, 2.0]}
    pq.write_table(pa.table(table), src)
    for argv, msg in [
        (["--reward-col", "reward"], "not numeric (type string): row 1 holds 'x'"),
        (["--reward-col", "r"], "non-finite value (nan) at row 1"),
        (["--reward-col", "r", "--group-col", "gap"], "group column 'gap' has a missing value at row 1"),
        (["--reward-col", "zz"], "no column 'zz'"),
    ]:
        with pytest.raises(SystemExit):
            main(["compute", str(src), "--group-col", "uid", "-o", str(tmp_path / "o.npy"), *argv])
        assert msg in capsys.readouterr().err


def test_missing_pyarrow_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("no pyarrow")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    src = tmp_path / "in.parquet"
    src.write_bytes(b"PAR1")
    with pytest.raises(SystemExit):
        main(["compute", str(src), "--group-col", "uid", "-o", str(tmp_path / "o.npy")])
    assert "pip install 'groupadv[parquet]'" in capsys.readouterr().err


def test_bench_module_pieces():
    w = _bench.make_workload("ids", 1000, 8, dtype=np.float64)
    np.testing.assert_allclose(ga.advantages(w.rewards, eps=1e-6, **w.kwargs), _bench.numpy_reference(w), atol=1e-9)
    w = _bench.make_workload("ragged", 1000, 8, dtype=np.float64)
    np.testing.assert_allclose(ga.advantages(w.rewards, eps=1e-6, **w.kwargs), _bench.numpy_reference(w), atol=1e-9)
    w = _bench.make_workload("uids", 1000, 8, dtype=np.float64)
    np.testing.assert_allclose(ga.advantages(w.rewards, eps=1e-6, **w.kwargs), _bench.numpy_reference(w), atol=1e-9)
    calls = []
    t = _bench.time_call(lambda: calls.append(1), warmup=2, repeats=3)
    assert t >= 0 and len(calls) == 5


def test_bench_workloads_have_the_layouts_of_issue_14():
    # blocks: runs of 16 equal labels, the runs in shuffled order
    ids = _bench.blocks(160, 16).kwargs["group_ids"]
    assert (ids.reshape(10, 16) == ids[::16, None]).all() and sorted(ids[::16]) == list(range(10))
    assert list(ids[::16]) != list(range(10))
    # uids: np.repeat of strings, so equal labels are the same object; shuffled: the same rows
    w, s = _bench.uids(64, 16), _bench.uids(64, 16, shuffle=True)
    labels = w.kwargs["group_ids"]
    assert labels.dtype == object and all(labels[i] is labels[i - i % 16] for i in range(64))
    assert sorted(zip(s.kwargs["group_ids"], s.rewards)) == sorted(zip(labels, w.rewards))
    sizes = np.diff(_bench.ragged_offsets(10_000, 16))
    assert sizes.min() >= 1 and sizes.max() <= 31


def test_bench_timer_interleaves_cold_and_warm_calls():
    order = []
    impls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    res = _bench.interleaved(impls, rounds=2, warm=3, gap=0.0)
    assert len(res["a"].cold) == 2 and len(res["a"].warm) == 6  # cheap calls get all the warm calls
    # one untimed call each, then round 1 a (1 cold + 3 warm), b; round 2 starts with b
    assert "".join(order) == "ab" + "aaaa" + "bbbb" + "bbbb" + "aaaa"
    p25, med, p75 = res["a"].stat("cold")
    assert 0 <= p25 <= med <= p75


def test_bench_cases_check_agreement_and_targets():
    rows = _bench.run(_bench.cases(4096, ["uniform", "ragged", "blocks", "small", "numpy-backend"],
                                   numpy_sizes=(1000,)), rounds=1, warm=1, gap=0.0)
    keys = [r["key"] for r in rows]
    assert keys[:4] == ["uniform", "ragged", "blocks", "small"]
    assert keys[4:] == [f"numpy-backend {lay}" for lay in ("uniform", "ragged", "ids", "blocks", "uids", "uids-shuffled")]
    assert all(r["backend"] == "numpy" for r in rows[4:])
    run = rows[1]["runs"][0]
    assert {"memcpy", "groupadv", "groupadv groups=", "numpy"} <= set(run)
    assert [t["target"] for t in rows[0]["targets"]][0] == "<= 1.3x memcpy"
    table, targets = _bench.markdown_table(rows), _bench.targets_table(rows)
    assert "| ragged | 4,096 | cold |" in table and "| small | 4,096 | < 20 us per call |" in targets
    assert ga.backend() == os.environ.get("GROUPADV_BACKEND", ga.backend())  # switched back


def test_bench_targets_judge_pass_and_fail():
    t = _bench.Target("<= 1.3x memcpy", _bench._ratio("groupadv", "memcpy"), "<=", 1.3)
    assert t.met(t.value({"groupadv": 1.2, "memcpy": 1.0})) and not t.met(t.value({"groupadv": 1.4, "memcpy": 1.0}))
    assert not t.met(t.value({"groupadv": 1.0}))  # a missing competitor is not a pass
    small = _bench.Target("< 20 us", lambda m: m["groupadv"], "<", 20e-6, "us")
    assert small.met(19e-6) and not small.met(20e-6) and small.show(19e-6) == "19.0 us"


def test_bench_disagreeing_implementation_is_an_error():
    case = _bench.Case("bad", "bad", 16, lambda: {"groupadv": lambda: np.zeros(16), "numpy": lambda: np.ones(16)})
    with pytest.raises(AssertionError, match="numpy disagrees with groupadv on bad"):
        _bench.run_case(case, rounds=1)


def test_bench_command(capsys):
    assert _run(["bench", "--sizes", "1000,2000", "--rows", "uniform,small", "--repeats", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "| uniform | 2,000 | warm |" in out and "| uniform | 1,000 | cold |" in out and "groupadv / memcpy" in out
    assert "| small | 2,000 | < 20 us per call |" in out
    assert "| uniform | 1,000 | memcpy |" in out  # every implementation, median (p25 - p75)
    assert "numba" in out.splitlines()[1]  # where the numba column comes from, or that it is absent
    assert _run(["bench", "--sizes", "1000", "--rows", "ragged", "--repeats", "1", "-q", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["key"] == "ragged" and rows[0]["targets"][0]["target"] == "<= 2x memcpy"


def test_bench_command_rejects_an_unknown_row(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--rows", "nope", "--sizes", "100", "-q"])
    assert "unknown row 'nope'; choose from uniform, ragged" in capsys.readouterr().err


def test_subprocess_entry_point(tmp_path):
    ids, r = _data(n=100)
    src, dst = tmp_path / "in.csv", tmp_path / "out.npy"
    _write_csv(src, ids, r, extra=False)
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-m", "groupadv.cli", "compute", str(src), "--group-col", "uid", "-o", str(dst)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "wrote 100 advantages" in p.stderr
    _close(np.load(dst), _expected(ids, r))
    p = subprocess.run([sys.executable, "-m", "groupadv.cli", "compute", str(src), "--group-col", "nope", "-o", str(dst)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "no column 'nope'" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("batch_rows", [1, 3, 100])
def test_extreme_magnitudes_are_exact_or_an_error(tmp_path, batch_rows, capsys):
    def compute(r, ids, *opts):
        src, dst = tmp_path / "in.npz", tmp_path / "out.npy"
        np.savez(src, uid=np.asarray(ids), reward=np.asarray(r, dtype=np.float64))
        assert _run(["compute", src, "--group-col", "uid", "-o", dst, "-q", "--batch-rows", batch_rows, *opts]) == 0
        return np.load(dst)

    # subnormal spread: 1/std overflows, the residuals are divided instead
    _close(compute([1e-310, 0.0, 4e-323, 0.0], [1, 1, 2, 2]), [1.0, -1.0, 1.0, -1.0])
    # squares of the rewards overflow float64, their stds do not
    _close(compute([3e300, -3e300, 1e300, -1e300], [1, 1, 2, 2]), [1.0, -1.0, 1.0, -1.0])
    s = np.sqrt(0.5)
    _close(compute([1e200, -1e200, 1e200, 3e200], [1, 1, 2, 2], "--scale", "batch"), [s, -s, -s, s])
    _close(compute([1e-200, 0.0, 1e-200, 0.0], [1, 1, 2, 2], "--scale", "batch_residual"), [1.0, -1.0, 1.0, -1.0])
    # all equal at the top of the range: exactly 0
    assert np.all(compute([1.7e308] * 4, [1, 2, 1, 2]) == 0.0)
    # a group whose statistics overflow float64 is an error under every --nan policy
    for nan in ("raise", "propagate", "omit"):
        with pytest.raises(SystemExit):
            compute([1.7e308, 1.7e308, -1.7e308, 0.0, 1.0, 2.0], [1, 1, 1, 1, 2, 2], "--nan", nan)
        assert "overflow float64" in capsys.readouterr().err


@pytest.mark.parametrize("dtype,big", [(np.float64, 1.2e308), (np.float32, 3e38)])
def test_rloo_overflow_is_an_error_not_inf(tmp_path, capsys, dtype, big):
    """Issue 10: `compute --estimator rloo` wrote inf/-inf with exit 0 for rewards
    [0, big, -big] (its own maths); the core's rules now raise the overflow error, as ga.rloo."""
    src, dst = tmp_path / "in.npz", tmp_path / "out.npy"
    np.savez(src, uid=np.array(["a", "a", "a"]), reward=np.array([0.0, big, -big], dtype=dtype))
    with pytest.raises(ValueError):
        ga.rloo(np.array([0.0, big, -big], dtype=dtype), 3)
    with pytest.raises(SystemExit) as e:
        main(["compute", str(src), "--group-col", "uid", "--estimator", "rloo", "-o", str(dst), "-q"])
    assert e.value.code == 2 and not dst.exists()
    err = capsys.readouterr().err
    assert "overflow" in err and "group 'a'" in err and "Traceback" not in err
