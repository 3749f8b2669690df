"""Hostile files for `groupadv compute`: CSV quoting, odd reward cells, encodings, corrupt and
odd files, unusual Parquet column types. Run in-process through `groupadv.cli.main`, with and
without pyarrow (hidden through sys.modules), because the output must not depend on an
optional dependency.

Expected (README "Command line" / "Errors", Guarantees): either the numbers of
`groupadv.advantages` on the whole column with every input column kept, or one line
`groupadv: error: ...` and exit status 2; never a traceback, and no output file after a failure.
"""

from __future__ import annotations

import csv
import io
import sys

import numpy as np
import pytest

import groupadv as ga
from groupadv.cli import main

MODES = ["pyarrow", "stdlib"]


def cli(argv, monkeypatch, capsys, mode="pyarrow"):
    """(exit status, stderr) of one in-process run; any exception but SystemExit fails the test."""
    with monkeypatch.context() as m:
        if mode == "stdlib":
            for name in [k for k in sys.modules if k == "pyarrow" or k.startswith("pyarrow.")]:
                m.delitem(sys.modules, name)
            m.setitem(sys.modules, "pyarrow", None)
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # noqa: BLE001 - a traceback is the finding
            pytest.fail(f"traceback instead of 'groupadv: error:' ({mode}): {type(e).__name__}: {e}")
    err = capsys.readouterr().err
    return code, err


def assert_clean_error(code, err, out_path=None):
    assert code == 2, (code, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("groupadv: error: "), err
    if out_path is not None:
        assert not out_path.exists(), "a failed run left its output file"
        leftovers = [p.name for p in out_path.parent.iterdir() if p.name.startswith(out_path.name)]
        assert not leftovers, f"temporary files left: {leftovers}"


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture
def pyarrow_or_skip():
    return pytest.importorskip("pyarrow")


# ---------------------------------------------------------------- CSV quoting ----------------

TRICKY_LABELS = [
    "q,1", 'q"2', "q\n3", " q4", "q4", "q4 ", "1", "01", "1.0", "nan", "NaN", "null", "NA", "N/A",
    "None", "-0", "0", "\u00e9", "e\u0301", "\U0001f600", "\u202eRTL", "\t", "TRUE", "true",
]


@pytest.mark.parametrize("mode", MODES)
def test_csv_labels_are_text_whatever_they_look_like(tmp_path, monkeypatch, capsys, mode):
    """Labels are read as text: quoted commas, quotes and newlines, spaces, "1" vs "01" vs
    "1.0", "nan"/"NA"/"null" strings, combining characters are all distinct labels."""
    rng = np.random.default_rng(0)
    labels = [TRICKY_LABELS[i] for i in rng.integers(0, len(TRICKY_LABELS), 300)]
    rewards = rng.integers(0, 4, 300).astype(np.float64)
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["uid", "reward", "note"])
        for u, r in zip(labels, rewards):
            w.writerow([u, repr(float(r)), u])
    out = tmp_path / "out.csv"
    code, err = cli(["compute", src, "--group-col", "uid", "-o", out, "-q"], monkeypatch, capsys, mode)
    assert code in (0, None), err
    rows = read_csv(out)
    assert rows[0] == ["uid", "reward", "note", "advantage"]
    assert [r[0] for r in rows[1:]] == labels and [r[2] for r in rows[1:]] == labels
    want = ga.advantages(rewards, group_ids=labels)
    np.testing.assert_allclose([float(r[3]) for r in rows[1:]], want, rtol=1e-12, atol=1e-12)


REWARD_CELLS = [
    " 1 ", "+1", "-0", "1e309", "-1e309", "1e-400", "1_000", "\uff11", "0x10", "1e", ".", "-", "+",
    "inf", "-Infinity", "nan", "NaN", "1.5f", "1,5", "١", "1 000", "0.1e1", "1E2", "00012", "\u00a01",
]


@pytest.mark.parametrize("cell", REWARD_CELLS, ids=[repr(c) for c in REWARD_CELLS])
def test_odd_reward_cells_do_not_depend_on_pyarrow(tmp_path, monkeypatch, capsys, cell, pyarrow_or_skip):
    """Each odd reward cell gives the same outcome with and without pyarrow (the same numbers,
    or both a clean error): output must not depend on an optional dependency."""
    src = tmp_path / "in.csv"
    src.write_text(f'uid,reward\na,1\na,"{cell}"\nb,2\nb,3\n', encoding="utf-8")
    results = {}
    for mode in MODES:
        out = tmp_path / f"out-{mode}.csv"
        code, err = cli(["compute", src, "--group-col", "uid", "--nan", "omit", "-o", out, "-q"], monkeypatch, capsys, mode)
        if code in (0, None):
            results[mode] = ("ok", [r[2] for r in read_csv(out)[1:]])
        else:
            assert_clean_error(code, err, out)
            results[mode] = ("error", None)
    assert results["pyarrow"] == results["stdlib"], results


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "content,why",
    [
        (b"", "empty file"),
        (b"uid,reward\n", "header only"),
        (b"uid,reward\na,1\na,2,3\n", "a row with an extra field"),
        (b"uid,reward\na,1\na\n", "a row with a missing field"),
        (b'uid,reward\na,1\n"a,2\n', "an unterminated quote"),
        (b"uid,reward\na,1\n\x00\x00,2\n", "NUL bytes"),
        (b"uid,uid,reward\na,a,1\nb,b,2\n", "a duplicated column name"),
        (b"\xff\xfeu\x00i\x00d\x00,\x00r\x00e\x00w\x00a\x00r\x00d\x00\n\x00a\x00,\x001\x00\n\x00", "UTF-16"),
    ],
    ids=["empty", "header-only", "extra-field", "missing-field", "open-quote", "nul-bytes", "dup-column", "utf16"],
)
def test_broken_csv_is_one_line_error(tmp_path, monkeypatch, capsys, mode, content, why):
    src = tmp_path / "in.csv"
    src.write_bytes(content)
    out = tmp_path / "out.csv"
    code, err = cli(["compute", src, "--group-col", "uid", "-o", out, "-q"], monkeypatch, capsys, mode)
    if code in (0, None):  # acceptable only if it is a well-formed result
        rows = read_csv(out)
        assert rows and rows[0][-1] == "advantage", (why, rows)
        return
    assert_clean_error(code, err, out)


@pytest.mark.parametrize("mode", MODES)
def test_latin1_bytes_in_labels(tmp_path, monkeypatch, capsys, mode):
    """Bytes that are not UTF-8 (a Latin-1 file): a clean error, or the same groups either way."""
    src = tmp_path / "in.csv"
    src.write_bytes(b"uid,reward\ncaf\xe9,1\ncaf\xe9,2\ncafe,3\ncafe,5\n")
    out = tmp_path / "out.csv"
    code, err = cli(["compute", src, "--group-col", "uid", "-o", out, "-q"], monkeypatch, capsys, mode)
    if code in (0, None):
        adv = [float(r[-1]) for r in read_csv(out)[1:]]
        np.testing.assert_allclose(adv, [-1, 1, -1, 1])
    else:
        assert_clean_error(code, err, out)


@pytest.mark.parametrize("mode", MODES)
def test_crlf_and_missing_final_newline(tmp_path, monkeypatch, capsys, mode):
    src = tmp_path / "in.csv"
    src.write_bytes(b"uid,reward\r\na,1\r\na,2\r\nb,3\r\nb,5")
    out = tmp_path / "out.csv"
    code, err = cli(["compute", src, "--group-col", "uid", "-o", out, "-q"], monkeypatch, capsys, mode)
    assert code in (0, None), err
    rows = read_csv(out)
    assert [r[0] for r in rows[1:]] == ["a", "a", "b", "b"]
    np.testing.assert_allclose([float(r[-1]) for r in rows[1:]], [-1, 1, -1, 1])


# ---------------------------------------------------------------- corrupt / odd files -------


def _npz_not_zip(p):
    p.write_bytes(b"PK\x03\x04 this is not a zip")


def _npy_truncated(p):
    buf = io.BytesIO()
    np.save(buf, np.arange(100.0))
    p.write_bytes(buf.getvalue()[:90])


def _npy_2d(p):
    np.save(p, np.ones((3, 2)))


def _npy_strings(p):
    np.save(p, np.array(["a", "b"]))


def _npy_0d(p):
    np.save(p, np.float64(1.0))


def _npy_object(p):
    np.save(p, np.array([1.0, None], dtype=object), allow_pickle=True)


def _npz_ragged(p):
    np.savez(p, uid=np.array([1, 2, 3]), reward=np.array([1.0, 2.0]))


def _npz_2d(p):
    np.savez(p, uid=np.array([[1, 2]]), reward=np.array([[1.0, 2.0]]))


def _parquet_truncated(p):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"uid": ["a", "a"], "reward": [1.0, 2.0]}), p)
    p.write_bytes(p.read_bytes()[:-20])


def _parquet_garbage(p):
    p.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")


def _arrow_garbage(p):
    p.write_bytes(b"ARROW1\x00\x00garbage")


CORRUPT = {
    "npz-not-zip.npz": _npz_not_zip,
    "npy-truncated.npy": _npy_truncated,
    "npy-2d.npy": _npy_2d,
    "npy-strings.npy": _npy_strings,
    "npy-0d.npy": _npy_0d,
    "npy-object.npy": _npy_object,
    "npz-ragged.npz": _npz_ragged,
    "npz-2d.npz": _npz_2d,
    "parquet-truncated.parquet": _parquet_truncated,
    "parquet-garbage.parquet": _parquet_garbage,
    "arrow-garbage.arrow": _arrow_garbage,
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_files_are_one_line_errors(tmp_path, monkeypatch, capsys, name):
    src = tmp_path / name
    CORRUPT[name](src)
    out = tmp_path / "out.csv"
    args = ["compute", src, "-o", out, "-q"]
    args += ["--group-size", "1"] if name.startswith("npy") else ["--group-col", "uid"]
    code, err = cli(args, monkeypatch, capsys)
    assert_clean_error(code, err, out)


def test_odd_paths_are_one_line_errors(tmp_path, monkeypatch, capsys):
    src = tmp_path / "in.csv"
    src.write_text("uid,reward\na,1\na,2\n")
    (tmp_path / "adir.csv").mkdir()
    cases = [
        ["compute", tmp_path / "adir.csv", "--group-col", "uid", "-o", tmp_path / "o1.csv"],
        ["compute", tmp_path / "missing.csv", "--group-col", "uid", "-o", tmp_path / "o2.csv"],
        ["compute", src, "--group-col", "uid", "-o", tmp_path / "no" / "such" / "dir.csv"],
        ["compute", src, "--group-col", "uid", "-o", tmp_path / "adir.csv"],
        ["compute", src, "--group-col", "uid", "-o", tmp_path / "." / "in.csv"],
        ["compute", src, "--group-col", "uid", "-o", tmp_path / "o3.unknown"],
        ["compute", "/dev/null", "--group-col", "uid", "-o", tmp_path / "o4.csv"],
    ]
    for argv in cases:
        code, err = cli(argv + ["-q"], monkeypatch, capsys)
        assert_clean_error(code, err)
    assert src.read_text() == "uid,reward\na,1\na,2\n", "the input was overwritten"


# ---------------------------------------------------------------- Parquet column types ------


def _table_cases(pa):
    uid = ["a", "b", "a", "b", "c", "c"]
    rew = [1.0, 2.0, 3.0, 5.0, 0.0, 4.0]
    return {
        "dictionary-uid": pa.table({"uid": pa.array(uid).dictionary_encode(), "reward": rew}),
        "large-string-uid": pa.table({"uid": pa.array(uid, pa.large_string()), "reward": rew}),
        "binary-uid": pa.table({"uid": pa.array([u.encode() for u in uid], pa.binary()), "reward": rew}),
        "large-binary-uid": pa.table({"uid": pa.array([u.encode() for u in uid], pa.large_binary()), "reward": rew}),
        "string-view-uid": pa.table({"uid": pa.array(uid, pa.string_view()), "reward": rew}) if hasattr(pa, "string_view") else None,
        "int8-uid": pa.table({"uid": pa.array([1, 2, 1, 2, 3, 3], pa.int8()), "reward": rew}),
        "uint64-uid": pa.table({"uid": pa.array([2**64 - 1, 2, 2**64 - 1, 2, 0, 0], pa.uint64()), "reward": rew}),
        "dictionary-int-uid": pa.table({"uid": pa.array([1, 2, 1, 2, 3, 3]).dictionary_encode(), "reward": rew}),
        "float32-reward": pa.table({"uid": uid, "reward": pa.array(rew, pa.float32())}),
        "float16-reward": pa.table({"uid": uid, "reward": pa.array(np.array(rew, np.float16), pa.float16())}),
        "int8-reward": pa.table({"uid": uid, "reward": pa.array([int(r) for r in rew], pa.int8())}),
        "decimal-reward": pa.table({"uid": uid, "reward": pa.array([__import__("decimal").Decimal(str(r)) for r in rew], pa.decimal128(6, 2))}),
        "dictionary-reward": pa.table({"uid": uid, "reward": pa.array(rew).dictionary_encode()}),
        "list-passthrough": pa.table({"uid": uid, "reward": rew, "toks": pa.array([[1, 2]] * 6)}),
        "struct-passthrough": pa.table({"uid": uid, "reward": rew, "meta": pa.array([{"k": 1}] * 6)}),
    }


CASE_NAMES = [
    "dictionary-uid", "large-string-uid", "binary-uid", "large-binary-uid", "string-view-uid", "int8-uid",
    "uint64-uid", "dictionary-int-uid", "float32-reward", "float16-reward", "int8-reward", "decimal-reward",
    "dictionary-reward", "list-passthrough", "struct-passthrough",
]


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("ext", ["parquet", "arrow"])
def test_parquet_and_arrow_column_types(tmp_path, monkeypatch, capsys, case, ext, pyarrow_or_skip):
    """Every column type Arrow writers produce for labels and rewards either gives the numbers
    of ga.advantages (pass-through columns kept as they were) or a one-line error."""
    pa = pyarrow_or_skip
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    table = _table_cases(pa)[case]
    if table is None:
        pytest.skip("this pyarrow has no string_view")
    src = tmp_path / f"in.{ext}"
    try:
        pq.write_table(table, src) if ext == "parquet" else feather.write_feather(table, src)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as e:
        pytest.skip(f"pyarrow cannot write {case} as {ext}: {e}")
    out = tmp_path / f"out.{ext}"
    code, err = cli(["compute", src, "--group-col", "uid", "-o", out, "-q"], monkeypatch, capsys)
    if code not in (0, None):
        assert_clean_error(code, err, out)
        assert case in ("decimal-reward", "dictionary-reward", "float16-reward"), f"{case} refused: {err}"
        return
    res = pq.read_table(out) if ext == "parquet" else feather.read_table(out)
    back = pq.read_table(src) if ext == "parquet" else feather.read_table(src)
    for name in back.column_names:
        assert res.column(name).equals(back.column(name)), f"column {name!r} changed"
    uid = [str(u) for u in back.column("uid").to_pylist()]
    rew = np.array([float(r) for r in back.column("reward").to_pylist()])
    want = ga.advantages(rew, group_ids=uid)
    got = np.array(res.column("advantage").to_pylist(), dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "column,values",
    [
        ("uid", ["a", None, "a", "b"]),
        ("uid", [1.0, float("nan"), 1.0, 2.0]),
        ("reward", [1.0, None, 2.0, 3.0]),
    ],
    ids=["null-label", "nan-float-label", "null-reward"],
)
def test_parquet_nulls(tmp_path, monkeypatch, capsys, column, values, pyarrow_or_skip):
    pa = pyarrow_or_skip
    import pyarrow.parquet as pq

    cols = {"uid": ["a", "b", "a", "b"], "reward": [1.0, 2.0, 3.0, 5.0]}
    cols[column] = values
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table(cols), src)
    out = tmp_path / "out.parquet"
    code, err = cli(["compute", src, "--group-col", "uid", "-o", out, "-q"], monkeypatch, capsys)
    assert_clean_error(code, err, out)
    assert "row 1" in err, err


def test_stdlib_mode_really_hides_pyarrow(tmp_path, monkeypatch, capsys, pyarrow_or_skip):
    """The "stdlib" runs above mean something: with pyarrow hidden, Parquet needs pyarrow."""
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pyarrow_or_skip.table({"uid": ["a", "a"], "reward": [1.0, 2.0]}), src)
    code, err = cli(["compute", src, "--group-col", "uid", "-o", tmp_path / "o.csv", "-q"], monkeypatch, capsys, "stdlib")
    assert_clean_error(code, err)
    assert "pyarrow" in err
