"""The README's "Command line" examples print exactly what is shown (timings aside)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = re.compile(r" in \d+\.\d\d s$")


def _console_blocks():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Command line"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```console\n(.*?)```", section, re.S)


def _steps(block):
    """(command, expected output lines) pairs of a console block."""
    steps = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def test_the_command_line_examples_print_what_the_readme_shows(tmp_path):
    blocks = _console_blocks()
    assert len(blocks) >= 3
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "groupadv").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m groupadv.cli "$@"\n')
    (shim / "groupadv").chmod(0o755)
    (shim / "python").symlink_to(sys.executable)
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    checked = 0
    for block in blocks:
        for cmd, expected in _steps(block):
            if cmd.startswith("groupadv bench"):  # timings
                continue
            if cmd == "cat rollouts.csv":  # the example's input, as shown
                (tmp_path / "rollouts.csv").write_text("\n".join(expected) + "\n")
            p = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            got = [TIMING.sub(" in T s", line.rstrip("\r")) for line in (p.stdout + p.stderr).splitlines()]
            assert got == [TIMING.sub(" in T s", line) for line in expected], cmd
            checked += 1
    assert checked >= 10
