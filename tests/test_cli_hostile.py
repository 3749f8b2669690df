"""The CLI tried as a hostile user would: encodings, quoting, nulls, Arrow column types, damaged
and empty files, absurd arguments. Every failure is one line ``groupadv: error: ...`` with exit
status 2, never a traceback; every success gives the numbers of ``ga.advantages``, and columns
pass through unchanged (CSV text exactly, with or without pyarrow)."""

from __future__ import annotations

import csv
import io
import os
import random

import numpy as np
import pytest

import groupadv as ga
from groupadv.cli import main, readers

WITH_AND_WITHOUT_PYARROW = [pytest.param(True, id="pyarrow"), pytest.param(False, id="stdlib")]


@pytest.fixture(params=WITH_AND_WITHOUT_PYARROW)
def csv_path(request, monkeypatch):
    """Run the test with CSV read by pyarrow.csv and by the standard library."""
    if request.param:
        pytest.importorskip("pyarrow")
    monkeypatch.setattr(readers, "have_pyarrow", lambda: request.param)
    return request.param


def err(capsys, *argv):
    """The error line of a failing command (asserting exit 2 and a single line)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    msg = capsys.readouterr().err
    last = msg.splitlines()[-1]  # progress lines may come first (no -q)
    assert last.startswith("groupadv: error: ") and msg.endswith(last + "\n") and "Traceback" not in msg, msg
    assert msg.count("groupadv: error") == 1, msg
    return last


def ok(*argv):
    assert main([str(a) for a in argv]) == 0


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\r\n') else cell


def _csv(path, header, rows, eol="\n", bom=False):
    text = eol.join(",".join(_quote(c) for c in row) for row in [header, *rows]) + eol
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


# --- absurd arguments -----------------------------------------------------------------------------


def test_absurd_numbers_are_errors_not_tracebacks(tmp_path, capsys):
    src = _csv(tmp_path / "in.csv", ["uid", "reward"], [["a", "1"], ["a", "2"], ["b", "3"], ["b", "5"]])
    out = tmp_path / "o.csv"
    assert "--decimals must be between -308 and 308, got 99999999999999999999" in err(
        capsys, "compute", src, "--group-col", "uid", "-o", out, "--decimals", "99999999999999999999")
    assert "--decimals must be between" in err(capsys, "compute", src, "--group-col", "uid", "-o", out, "--decimals", "400")
    assert "--group-size 99999999999999999999 does not divide the number of rows (4)" in err(
        capsys, "compute", src, "--group-size", "99999999999999999999", "-o", out)
    assert "--group-size must be >= 1, got 0" in err(capsys, "bench", "--group-size", "0", "--sizes", "100", "-q")
    assert "--sizes takes comma-separated numbers" in err(capsys, "bench", "--sizes", "abc", "-q")
    assert "--sizes takes comma-separated numbers" in err(capsys, "bench", "--sizes", "1e400", "-q")
    assert "--sizes must all be >= 1" in err(capsys, "bench", "--sizes", "0", "-q")
    assert "--repeats must be >= 1" in err(capsys, "bench", "--sizes", "100", "--repeats", "0", "-q")
    assert "--threads must be >= 1" in err(capsys, "bench", "--sizes", "100", "--threads", "0", "-q")
    assert "--batch-rows must be >= 1" in err(capsys, "stats", src, "--group-col", "uid", "--batch-rows", "0")
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "npz", "npy"])
def test_a_batch_larger_than_any_file_is_the_whole_file(tmp_path, fmt):
    ids, r = np.array([1, 1, 2, 2]), np.array([1.0, 2.0, 3.0, 5.0])
    src = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        _csv(src, ["uid", "reward"], [[str(i), str(v)] for i, v in zip(ids, r)])
    elif fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"uid": ids, "reward": r}), src)
    elif fmt == "npz":
        np.savez(src, uid=ids, reward=r)
    else:
        a = np.zeros(4, dtype=[("uid", "i8"), ("reward", "f8")])
        a["uid"], a["reward"] = ids, r
        np.save(src, a)
    ok("compute", src, "--group-col", "uid", "-o", tmp_path / "o.npy", "-q", "--batch-rows", "99999999999999999999")
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), ga.advantages(r, group_ids=ids))


# --- damaged, empty and wrong files ----------------------------------------------------------------


def _parquet_bytes(n=4000):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"uid": [f"u{i // 4}" for i in range(n)], "reward": np.arange(n) % 7 * 1.0}), buf,
                   row_group_size=500)
    return buf.getvalue()


def _arrow_bytes(n=4000):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.feather as feather

    buf = io.BytesIO()
    feather.write_feather(pa.table({"uid": [f"u{i // 4}" for i in range(n)], "reward": np.arange(n) % 7 * 1.0}), buf,
                          compression="uncompressed", chunksize=500)
    return buf.getvalue()


def _npz_bytes(compressed=False):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, uid=np.arange(1000) // 4, reward=np.arange(1000) % 3 * 1.0)
    return buf.getvalue()


def _npy_bytes():
    a = np.zeros(1000, dtype=[("uid", "i8"), ("reward", "f8")])
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _garbage(n=300):
    return bytes(random.Random(7).getrandbits(8) for _ in range(n))


def _scribble(data, at, n=400):
    b = bytearray(data)
    b[at:at + n] = _garbage(n)
    return bytes(b)


DAMAGED = {
    "empty.npy": lambda: b"",
    "empty.npz": lambda: b"",
    "empty.parquet": lambda: b"",
    "empty.arrow": lambda: b"",
    "garbage.npy": _garbage,
    "garbage.npz": _garbage,
    "garbage.csv": _garbage,
    "garbage.parquet": _garbage,
    "garbage.feather": _garbage,
    "truncated.npy": lambda: _npy_bytes()[:5000],
    "header-only.npy": lambda: _npy_bytes()[:128],
    "truncated.npz": lambda: _npz_bytes()[:9000],
    "bad-crc.npz": lambda: _scribble(_npz_bytes(compressed=True), 200, 60),
    "npy-named.npz": _npy_bytes,
    "truncated.parquet": lambda: _parquet_bytes()[:4000],
    "truncated.arrow": lambda: _arrow_bytes()[:30000],
}


@pytest.mark.parametrize("name", list(DAMAGED))
@pytest.mark.parametrize("command", ["compute", "stats"])
def test_damaged_files_are_one_error_line(tmp_path, capsys, name, command):
    src = tmp_path / name
    src.write_bytes(DAMAGED[name]())
    argv = ["--group-col", "uid", "-q"] if not name.endswith(".npy") else ["--group-size", "1", "--reward-col", "reward", "-q"]
    if command == "compute":
        argv += ["-o", tmp_path / "o.npy"]
    msg = err(capsys, command, src, *argv)
    assert str(src) in msg
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "npz", "npz-compressed", "npy"])
def test_scribbled_files_never_give_a_traceback(tmp_path, fmt):
    """Garbage written over 24 places of a file: a clean error, or (where the format cannot
    tell, e.g. inside float data) a normal run; never a traceback or a crash."""
    data = {"parquet": _parquet_bytes, "arrow": _arrow_bytes, "npz": _npz_bytes,
            "npz-compressed": lambda: _npz_bytes(compressed=True), "npy": _npy_bytes}[fmt]()
    ext = fmt.split("-")[0]
    argv = ["--group-size", "1"] if ext == "npy" else ["--group-col", "uid"]
    outcomes = {0: 0, 2: 0}
    for k in range(24):
        src = tmp_path / f"s{k}.{ext}"
        src.write_bytes(_scribble(data, k * len(data) // 24, 64))
        try:
            code = main(["compute", str(src), *argv, "-o", str(tmp_path / "o.npy"), "-q", "--nan", "propagate"])
        except SystemExit as e:
            code = e.code
        outcomes[code] += 1
    assert outcomes[2] > 0  # some damage is found


def test_the_reason_is_named(tmp_path, capsys):
    (tmp_path / "e.npy").write_bytes(b"")
    assert "e.npy: not a .npy file (it is empty)" in err(capsys, "stats", tmp_path / "e.npy", "--group-size", "1")
    (tmp_path / "g.npz").write_bytes(_garbage())
    assert "g.npz: not a .npz (zip) file" in err(capsys, "stats", tmp_path / "g.npz", "--group-size", "1")
    (tmp_path / "c.npz").write_bytes(_scribble(_npz_bytes(compressed=True), 200, 60))
    assert "Bad CRC-32" in err(capsys, "stats", tmp_path / "c.npz", "--group-size", "1")


def test_csv_empty_header_only_and_broken(tmp_path, capsys, csv_path):
    out = tmp_path / "o.csv"
    cases = {
        b"": "empty CSV file (a header row is needed)",
        b"\n\n": "empty CSV file (a header row is needed)",
        b"uid,reward\n": "the input has no rows",
        b"uid,reward\n\n\n": "the input has no rows",
        b"uid,reward\na,1,3\na,2\n": "3",  # a row with a field too many
        b"uid,reward\na,1\na\n": "1",
        b'uid,reward\n"a,1\na,2\n': "",  # an unterminated quote
        b"uid,reward,uid\na,1,x\n": "the header names column(s) 'uid' more than once",
    }
    for i, (data, text) in enumerate(cases.items()):
        src = tmp_path / f"c{i}.csv"
        src.write_bytes(data)
        assert text in err(capsys, "compute", src, "--group-col", "uid", "-o", out)
    assert not out.exists()


def test_inputs_and_outputs_that_are_not_files(tmp_path, capsys):
    src = _csv(tmp_path / "in.csv", ["uid", "reward"], [["a", "1"], ["a", "2"]])
    (tmp_path / "d.csv").mkdir()
    assert "input is a directory" in err(capsys, "compute", tmp_path / "d.csv", "--group-col", "uid", "-o", tmp_path / "o.csv")
    assert "the output is a directory" in err(capsys, "compute", src, "--group-col", "uid", "-o", tmp_path / "d.csv")
    assert "cannot create the output" in err(capsys, "compute", src, "--group-col", "uid", "-o", tmp_path / "no" / "o.csv")


# --- encodings ----------------------------------------------------------------------------------


def test_a_bom_is_not_part_of_the_first_column_name(tmp_path, csv_path):
    src = _csv(tmp_path / "in.csv", ["uid", "reward"], [["a", "1"], ["a", "2"], ["b", "3"], ["b", "5"]], bom=True)
    ok("compute", src, "--group-col", "uid", "-o", tmp_path / "o.csv", "-q")
    rows = _read_csv(tmp_path / "o.csv")
    assert rows[0] == ["uid", "reward", "advantage"]  # no \ufeff, and no BOM written
    assert (tmp_path / "o.csv").read_bytes().startswith(b"uid,")
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], ga.advantages([1.0, 2, 3, 5], group_ids=list("aabb")))


def test_crlf_and_lf_give_the_same_output(tmp_path, csv_path):
    rows = [["a", "1", "x"], ["a", "2", "y"], ["b", "3", ""], ["b", "5", "z"]]
    for eol in ("\n", "\r\n"):
        _csv(tmp_path / "in.csv", ["uid", "reward", "note"], rows, eol=eol)
        ok("compute", tmp_path / "in.csv", "--group-col", "uid", "-o", tmp_path / f"o{len(eol)}.csv", "-q")
    assert (tmp_path / "o1.csv").read_bytes() == (tmp_path / "o2.csv").read_bytes()
    assert [r[2] for r in _read_csv(tmp_path / "o1.csv")[1:]] == ["x", "y", "", "z"]


@pytest.mark.parametrize("data", [
    "uid,reward\ncaf\xe9,1\ncaf\xe9,2\n".encode("latin-1"),  # a latin-1 label
    "uid,rew\xe9rd\na,1\n".encode("latin-1"),  # a latin-1 header
    "uid,reward\na,1\n".encode("utf-16"),
    b"uid,reward\n" + b"a,1\n" * 100_000 + b"\xe9,2\n",  # past the first block
])
def test_text_that_is_not_utf8_is_an_error(tmp_path, capsys, csv_path, data):
    (tmp_path / "in.csv").write_bytes(data)
    assert "not UTF-8 text" in err(capsys, "compute", tmp_path / "in.csv", "--group-col", "uid", "-o", tmp_path / "o.csv",
                                   "--reward-col", "reward")
    assert os.listdir(tmp_path) == ["in.csv"]


# --- CSV text passes through exactly ---------------------------------------------------------------


def test_csv_pass_through_columns_keep_their_text(tmp_path, csv_path):
    cells = ["12345678901234567891", "007", "TRUE", "1.50", " x ", "", "NaN", "1e5", "-0", "null"]
    rows = [["a" if i % 2 else "b", ["1", "2.50", " 3 ", "4e0"][i % 4], c, "007"] for i, c in enumerate(cells)]
    src = _csv(tmp_path / "in.csv", ["uid", "reward", "note", "zip"], rows)
    ok("compute", src, "--group-col", "uid", "-o", tmp_path / "o.csv", "-q")
    got = _read_csv(tmp_path / "o.csv")
    assert got[0] == ["uid", "reward", "note", "zip", "advantage"]
    assert [r[:4] for r in got[1:]] == rows  # the reward cells too: " 3 " and "2.50" stay as written
    r = np.array([float(row[1]) for row in rows])
    np.testing.assert_allclose([float(x[4]) for x in got[1:]], ga.advantages(r, group_ids=[row[0] for row in rows]))


def test_csv_output_is_the_same_with_and_without_pyarrow(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    rng = random.Random(3)
    pieces = ["a", ",", '"', "\n", "\r\n", " ", "é", "007", "1.50", "TRUE", "12345678901234567891", "\t", "\u2028", ""]
    for case in range(30):
        rows = [[rng.choice(["q1", "q\n2", 'q"3', "q,4", " q5 "]), rng.choice(["0", "1", "0.5", " 2 ", ""]),
                 "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))] for _ in range(rng.randint(1, 9))]
        src = _csv(tmp_path / f"in{case}.csv", ["uid", "reward", "note"], rows, eol=rng.choice(["\n", "\r\n"]),
                   bom=rng.random() < 0.3)
        outs, batch_rows = [], rng.randint(1, 5)
        for arrow in (True, False):
            monkeypatch.setattr(readers, "have_pyarrow", lambda arrow=arrow: arrow)
            dst = tmp_path / f"o{case}{arrow}.csv"
            ok("compute", src, "--group-col", "uid", "-o", dst, "-q", "--nan", "omit", "--batch-rows", batch_rows)
            outs.append(dst.read_bytes())
        assert outs[0] == outs[1], case
        got = _read_csv(tmp_path / f"o{case}True.csv")[1:]
        assert [r[:3] for r in got] == rows, case


def test_quoted_labels_with_commas_newlines_and_quotes(tmp_path, csv_path):
    labels = ["a,b", "a\nb", 'a"b', "a\r\nb", "a b", " a,b"]
    ids = [labels[i % len(labels)] for i in range(24)]
    r = np.arange(24) % 5 * 1.0
    src = _csv(tmp_path / "in.csv", ["uid", "reward"], [[i, repr(float(v))] for i, v in zip(ids, r)])
    ok("compute", src, "--group-col", "uid", "-o", tmp_path / "o.npy", "-q", "--batch-rows", 5)
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), ga.advantages(r, group_ids=ids))


# --- nulls ----------------------------------------------------------------------------------------


def test_csv_nulls(tmp_path, capsys, csv_path):
    src = _csv(tmp_path / "in.csv", ["uid", "reward", "note"], [["a", "1", ""], ["a", "", "x"], ["b", "3", ""], ["b", "5", ""]])
    assert "non-finite value (nan) at row 1" in err(capsys, "compute", src, "--group-col", "uid", "-o", tmp_path / "o.csv")
    ok("compute", src, "--group-col", "uid", "-o", tmp_path / "o.csv", "-q", "--nan", "omit")
    got = _read_csv(tmp_path / "o.csv")[1:]
    assert [r[:3] for r in got] == [["a", "1", ""], ["a", "", "x"], ["b", "3", ""], ["b", "5", ""]]
    np.testing.assert_allclose([float(r[3]) for r in got],
                               ga.advantages([1, np.nan, 3, 5], group_ids=list("aabb"), nan="omit"))
    src = _csv(tmp_path / "in2.csv", ["uid", "reward"], [["a", "1"], ["", "2"]])
    assert "group column 'uid' has a missing value at row 1" in err(capsys, "compute", src, "--group-col", "uid", "-o",
                                                                    tmp_path / "o2.csv")
    src = _csv(tmp_path / "in3.csv", ["uid", "reward"], [["a", "1"], ["a", "NA"]])
    assert "not numeric: row 1 holds 'NA'" in err(capsys, "compute", src, "--group-col", "uid", "-o", tmp_path / "o3.csv")


def test_arrow_nulls_pass_through(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"uid": ["a", "a", "b", "b"], "reward": pa.array([1, None, 3, 5]),
                             "note": ["x", None, "y", None], "n": pa.array([1, None, 2, None])}), src)
    expected = ga.advantages([1, np.nan, 3, 5], group_ids=list("aabb"), nan="omit")
    for out in ("o.parquet", "o.csv", "o.npz"):
        ok("compute", src, "--group-col", "uid", "-o", tmp_path / out, "-q", "--nan", "omit")
    t = pq.read_table(tmp_path / "o.parquet")
    assert t.column("note").to_pylist() == ["x", None, "y", None] and t.column("n").to_pylist() == [1, None, 2, None]
    np.testing.assert_allclose(t.column("advantage").to_numpy(), expected)
    rows = _read_csv(tmp_path / "o.csv")
    assert [r[2] for r in rows[1:]] == ["x", "", "y", ""]
    z = np.load(tmp_path / "o.npz")
    assert z["note"].tolist() == ["x", "", "y", ""]
    np.testing.assert_allclose(z["advantage"], expected)
    pq.write_table(pa.table({"uid": ["a", None], "reward": [1.0, 2.0]}), src)
    assert "group column 'uid' has a missing value at row 1" in err(capsys, "compute", src, "--group-col", "uid", "-o",
                                                                    tmp_path / "x.npy")


# --- Arrow column types -------------------------------------------------------------------------


def _label_tables():
    pa = pytest.importorskip("pyarrow")
    s = ["a", "a", "b", "b", "c", "a"]
    return {
        "dictionary": (pa.array(s).dictionary_encode(), s),
        "large_string": (pa.array(s, pa.large_string()), s),
        "binary": (pa.array([x.encode() for x in s], pa.binary()), [x.encode() for x in s]),
        "large_binary": (pa.array([x.encode() for x in s], pa.large_binary()), [x.encode() for x in s]),
        "fixed_size_binary": (pa.array([x.encode() for x in s], pa.binary(1)), [x.encode() for x in s]),
        "non-UTF-8 binary": (pa.array([b"\xff", b"\xff", b"b", b"b", b"c", b"\xff"]), [b"\xff", b"\xff", b"b", b"b", b"c", b"\xff"]),
        "bool": (pa.array([True, True, False, False, None, True]).fill_null(True), [True, True, False, False, True, True]),
        "int8": (pa.array([1, 1, 2, 2, 3, 1], pa.int8()), [1, 1, 2, 2, 3, 1]),
        "dictionary of int": (pa.array([1, 1, 2, 2, 3, 1]).dictionary_encode(), [1, 1, 2, 2, 3, 1]),
    }


@pytest.mark.parametrize("kind", ["dictionary", "large_string", "binary", "large_binary", "fixed_size_binary",
                                  "non-UTF-8 binary", "bool", "int8", "dictionary of int"])
@pytest.mark.parametrize("out", ["o.parquet", "o.arrow", "o.npz", "o.npy", "o.csv"])
def test_arrow_label_types(tmp_path, capsys, kind, out):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    arr, labels = _label_tables()[kind]
    r = np.array([1.0, 2.0, 3.0, 5.0, 7.0, 4.0])
    for src in (tmp_path / "in.parquet", tmp_path / "in.arrow"):
        table = pa.table({"uid": arr, "reward": r})
        if src.suffix == ".parquet":
            pq.write_table(table, src)
        else:
            import pyarrow.feather as feather

            feather.write_feather(table, src)
        dst = tmp_path / out
        if kind == "non-UTF-8 binary" and out == "o.csv":
            assert "is not UTF-8 text" in err(capsys, "compute", src, "--group-col", "uid", "-o", dst, "--batch-rows", 4)
            assert not dst.exists()
            continue
        ok("compute", src, "--group-col", "uid", "-o", dst, "-q", "--batch-rows", 4)
        expected = ga.advantages(r, group_ids=labels)
        if out == "o.npy":
            got = np.load(dst)
        elif out == "o.npz":
            z = np.load(dst)
            got = z["advantage"]
            assert len(z["uid"]) == 6
        elif out == "o.csv":
            rows = _read_csv(dst)[1:]
            got = np.array([float(x[2]) for x in rows])
            assert [x[0] for x in rows] == [v.decode() if isinstance(v, bytes) else str(v) for v in labels]
        else:
            import pyarrow.feather as feather

            t = pq.read_table(dst) if out.endswith("parquet") else feather.read_table(dst)
            got = t.column("advantage").to_numpy()
            assert t.column("uid").to_pylist() == pa.table({"uid": arr}).column("uid").to_pylist()
        np.testing.assert_allclose(got, expected)


@pytest.mark.parametrize("kind", ["date32", "timestamp", "list", "struct", "decimal", "null"])
def test_unsupported_arrow_label_types_are_errors(tmp_path, capsys, kind):
    pa = pytest.importorskip("pyarrow")
    import decimal

    import pyarrow.parquet as pq

    arr = {"date32": pa.array([0, 0, 1, 1], pa.date32()), "timestamp": pa.array([0, 0, 1, 1], pa.timestamp("s")),
           "list": pa.array([[1], [1], [2], [2]]), "struct": pa.array([{"a": 1}] * 4),
           "decimal": pa.array([decimal.Decimal("1.5")] * 4), "null": pa.array([None] * 4)}[kind]
    pq.write_table(pa.table({"uid": arr, "reward": [1.0, 2.0, 3.0, 5.0]}), tmp_path / "in.parquet")
    msg = err(capsys, "compute", tmp_path / "in.parquet", "--group-col", "uid", "-o", tmp_path / "o.npy")
    assert "group column 'uid' has" in msg


def test_arrow_reward_types(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import decimal

    import pyarrow.parquet as pq

    ids = ["a", "a", "b", "b"]
    for arr, expected in [
        (pa.array([1.0, 2.0, 3.0, 5.0]).dictionary_encode(), [1.0, 2.0, 3.0, 5.0]),
        (pa.array(np.array([1, 2, 3, 5], dtype=np.float16)), np.array([1, 2, 3, 5], dtype=np.float32)),
        (pa.array([1, 2, 3, 5], pa.uint8()), [1.0, 2.0, 3.0, 5.0]),
        (pa.array([True, False, True, True]), [1.0, 0.0, 1.0, 1.0]),
    ]:
        pq.write_table(pa.table({"uid": ids, "reward": arr}), tmp_path / "in.parquet")
        ok("compute", tmp_path / "in.parquet", "--group-col", "uid", "-o", tmp_path / "o.npy", "-q")
        np.testing.assert_allclose(np.load(tmp_path / "o.npy"), ga.advantages(np.asarray(expected), group_ids=ids))
    for arr, text in [(pa.array([decimal.Decimal("1.5")] * 4), "not numeric (type decimal128"),
                      (pa.array([None] * 4), "not numeric (type null)"),
                      (pa.array(["1", "2", "x", "5"], pa.large_string()), "row 2 holds 'x'")]:
        pq.write_table(pa.table({"uid": ids, "reward": arr}), tmp_path / "in.parquet")
        assert text in err(capsys, "compute", tmp_path / "in.parquet", "--group-col", "uid", "-o", tmp_path / "o.npy")


def test_duplicate_arrow_columns_are_an_error(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    t = pa.Table.from_arrays([pa.array(["a", "a"]), pa.array([1.0, 2.0]), pa.array([1, 2])], names=["uid", "reward", "uid"])
    pq.write_table(t, tmp_path / "in.parquet")
    assert "column(s) 'uid' more than once" in err(capsys, "compute", tmp_path / "in.parquet", "--group-col", "uid", "-o",
                                                   tmp_path / "o.csv")


# --- numpy column types ---------------------------------------------------------------------------


def test_npz_label_and_reward_dtypes(tmp_path, capsys):
    r = np.array([1.0, 2.0, 3.0, 5.0])
    for ids in (np.array([True, True, False, False]), np.array([b"a", b"a", b"b", b"b"]), np.array(["é", "é", "b", "b"])):
        np.savez(tmp_path / "in.npz", uid=ids, reward=r)
        for out in ("o.npy", "o.csv", "o.npz"):
            ok("compute", tmp_path / "in.npz", "--group-col", "uid", "-o", tmp_path / out, "-q")
        np.testing.assert_allclose(np.load(tmp_path / "o.npy"), ga.advantages(r, group_ids=ids.tolist()))
        assert np.load(tmp_path / "o.npz")["uid"].tolist() == ids.tolist()
        assert [x[0] for x in _read_csv(tmp_path / "o.csv")[1:]] == [
            v.decode() if isinstance(v, bytes) else str(v) for v in ids.tolist()]
    for ids, text in [(np.array([1j, 1j, 2, 2]), "unsupported dtype complex128"),
                      (np.array(["2020-01-01"] * 4, dtype="M8[D]"), "unsupported dtype datetime64[D]"),
                      (np.zeros(4, dtype="V4"), "unsupported dtype"),
                      (np.zeros((4, 2)), "must be 1-D")]:
        np.savez(tmp_path / "in.npz", uid=ids, reward=r)
        assert text in err(capsys, "compute", tmp_path / "in.npz", "--group-col", "uid", "-o", tmp_path / "o.npy")
    for rw, text in [(np.array(["1", "2", "3", "4"]), "not numeric (dtype <U1)"), (np.array([1j, 1, 1, 1]), "not numeric"),
                     (np.array([1, 2, 3, 4], dtype="m8[s]"), "not numeric")]:
        np.savez(tmp_path / "in.npz", uid=[1, 1, 2, 2], reward=rw)
        assert text in err(capsys, "compute", tmp_path / "in.npz", "--group-col", "uid", "-o", tmp_path / "o.npy")


def test_structured_npy_with_an_array_field_is_an_error(tmp_path, capsys):
    a = np.zeros(4, dtype=[("uid", "i8"), ("reward", "f8", (2,))])
    np.save(tmp_path / "in.npy", a)
    assert "holds arrays of shape (2,)" in err(capsys, "compute", tmp_path / "in.npy", "--group-col", "uid", "-o",
                                               tmp_path / "o.npy")


def test_a_link_to_the_input_is_the_input(tmp_path, capsys):
    src = _csv(tmp_path / "in.csv", ["uid", "reward"], [["a", "1"], ["a", "2"]])
    os.symlink(src, tmp_path / "link.csv")
    os.link(src, tmp_path / "hard.csv")
    for out in ("link.csv", "hard.csv"):
        assert "must differ from the input" in err(capsys, "compute", src, "--group-col", "uid", "-o", tmp_path / out)
    assert src.read_text() == "uid,reward\na,1\na,2\n"


def test_huge_csv_cells_pass_through(tmp_path, csv_path):
    big = "x" * 300_000  # beyond the standard library's default field limit (128 KiB)
    src = _csv(tmp_path / "in.csv", ["uid", "reward", "note"], [["a", "1", big], ["a", "2", "y"]])
    ok("compute", src, "--group-col", "uid", "-o", tmp_path / "o.csv", "-q")
    assert [r[2] for r in _read_csv(tmp_path / "o.csv")[1:]] == [big, "y"]


def test_text_that_is_not_valid_unicode_is_an_error_when_written(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", uid=np.array(["\ud800", "\ud800", "b", "b"]), reward=[1.0, 2.0, 3.0, 5.0])
    ok("compute", tmp_path / "in.npz", "--group-col", "uid", "-o", tmp_path / "o.npy", "-q")
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), [-1.0, 1.0, -1.0, 1.0])
    outs = ["o.csv"] + (["o.parquet"] if _have_pyarrow() else [])
    for out in outs:
        msg = err(capsys, "compute", tmp_path / "in.npz", "--group-col", "uid", "-o", tmp_path / out)
        assert f"cannot write {tmp_path / out}: a text cell is not valid Unicode" in msg
        assert not (tmp_path / out).exists()
    assert not [f for f in os.listdir(tmp_path) if "tmp-groupadv" in f]


def _have_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True
