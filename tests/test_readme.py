"""The README's examples run, and print exactly what the README shows.

- ```python blocks holding `>>>` lines are doctests; blocks without them must run without error.
  All blocks share one namespace, in README order (later examples use earlier names).
- ```console blocks: each `$ command` runs in a scratch folder (`groupadv` and `python` are this
  interpreter's), and its output (stdout and stderr) must be the lines shown under it. Timings
  (`0.04 s`) are compared as `<t> s`; a last shown line `...` means "and more".
- `<!-- readme-test: skip ... -->` on the line before a block leaves it out (it says why).
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import groupadv

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = "<!-- readme-test: skip"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(line number, text) of the README's fenced blocks in `lang`, without skipped ones."""
    text = README.read_text()
    found = []
    for m in FENCE.finditer(text):
        if m.group(1) != lang:
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.startswith(SKIP):
            continue
        found.append((text.count("\n", 0, m.start()) + 1, m.group(2)))
    return found


def test_python_examples_print_what_the_readme_shows():
    pytest.importorskip("torch")  # the framework examples use torch tensors
    globs: dict = {"__name__": "readme"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    blocks = _blocks("python")
    assert len(blocks) >= 8, "README python examples not found"
    for line, code in blocks:
        name = f"README.md:{line}"
        if ">>>" in code:
            test = parser.get_doctest(code, globs, name, str(README), line)
            test.globs = globs  # DocTest copies the namespace; the blocks share one
            runner.run(test, clear_globs=False)
        else:
            exec(compile(code, name, "exec"), globs)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted > 20
    assert failed == 0, f"{failed} README example(s) print something else (diff above)"


def _normalize(out: str) -> str:
    out = re.sub(r"\b\d+\.\d+ s\b", "<t> s", out)
    return "\n".join(line.rstrip() for line in out.strip("\n").split("\n"))


def test_console_examples_print_what_the_readme_shows(tmp_path):
    blocks = _blocks("console")
    assert blocks, "README console examples not found"
    pkg_parent = str(Path(groupadv.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg_parent, os.environ.get("PYTHONPATH", "")]))
    env.pop("COLUMNS", None)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # `groupadv` and `python` in the examples: this interpreter and this checkout's package.
    (bindir / "groupadv").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m groupadv.cli "$@"\n')
    (bindir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for f in bindir.iterdir():
        f.chmod(0o755)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    work = tmp_path / "work"
    work.mkdir()
    for line, block in blocks:
        steps = re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]
        for step in steps:
            command, _, shown = step.partition("\n")
            cat = re.fullmatch(r"cat (\S+)", command)
            if cat and not (work / cat.group(1)).exists():
                # `$ cat F` of a file no earlier command wrote shows an input file: write it.
                (work / cat.group(1)).write_text(shown)
            run = subprocess.run(
                ["bash", "-c", command], check=False, cwd=work, env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
            )
            got, want = _normalize(run.stdout), _normalize(shown)
            where = f"README.md:{line}: $ {command}"
            if want.endswith("\n...") or want == "...":
                assert got.startswith(want[:-3].rstrip("\n")), f"{where}\n{got}"
            else:
                assert got == want, f"{where}\n--- shown\n{want}\n--- printed\n{got}"


def test_torch_distributed_example_runs():
    """The README's torch.distributed snippet is not run as pasted (it needs a process group per
    rank); examples/torch_distributed.py runs it on two gloo ranks, and must agree."""
    pytest.importorskip("torch.distributed")
    pkg_parent = str(Path(groupadv.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg_parent, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "torch_distributed.py")], check=False, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
    )
    assert run.returncode == 0, run.stdout
    assert "sharded == whole batch: True" in run.stdout, run.stdout
    assert "global batch std on every rank: [0.459013, 0.459013]" in run.stdout, run.stdout
