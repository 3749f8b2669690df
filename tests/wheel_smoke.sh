#!/usr/bin/env bash
# The built wheels work where no Rust is installed (.ci/run runs this after
# scripts/build_wheels.sh --x86_64-only): each goes into a fresh venv, run with a clean
# environment whose PATH has no cargo/rustc, from a folder outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

smoke() {  # smoke WHEEL BACKEND
    local venv="$scratch/venv-$2"
    local clean=(env -i HOME="$HOME" PATH=/usr/bin:/bin LANG=C.UTF-8)
    "${clean[@]}" "$PY" -m venv "$venv"
    "${clean[@]}" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --only-binary :all: "$1"
    (cd "$scratch" && "${clean[@]}" "$venv/bin/python" - "$2" "$version" <<'PY'
import shutil, sys
import numpy as np
import groupadv as ga

backend, version = sys.argv[1], sys.argv[2]
assert shutil.which("cargo") is None and shutil.which("rustc") is None, "Rust is on PATH"
assert ga.backend() == backend, (ga.backend(), backend)
assert ga.__version__ == version, (ga.__version__, version)
assert "site-packages" in ga.__file__, ga.__file__
got = ga.grpo([1.0, 0.0, 0.5, 0.5, 2.0, 4.0], group_size=2)
assert np.array_equal(got, [1.0, -1.0, 0.0, 0.0, -1.0, 1.0]), got
got = ga.rloo(np.array([1, 0, 0, 1], np.float32), group_ids=["a", "b", "a", "b"])
assert got.dtype == np.float32 and np.array_equal(got, [1, -1, -1, 1]), got
print(f"ok: groupadv {ga.__version__}, backend {ga.backend()}, numpy {np.__version__}")
PY
    )
    "${clean[@]}" "$venv/bin/groupadv" --help >/dev/null
}

# Which artefact pip picks per platform (dist/ only, no index): the binary wheel where it
# matches, else the py3-none-any wheel, never the sdist.
picks() {  # picks PLATFORM EXPECTED-FILE-GLOB
    local into="$scratch/pick-$1"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-index --find-links dist \
        --no-deps --platform "$1" --python-version 3.12 --only-binary :all: -d "$into" groupadv
    # shellcheck disable=SC2053
    [[ $(ls "$into") == $2 ]] || { echo "pip picked $(ls "$into") for $1" >&2; exit 1; }
}
picks manylinux2014_x86_64 "groupadv-$version-cp310-abi3-manylinux*_x86_64.whl"
picks manylinux_2_12_x86_64 "groupadv-$version-py3-none-any.whl"
picks macosx_11_0_arm64 "groupadv-$version-py3-none-any.whl"

smoke "$(ls dist/groupadv-"$version"-cp310-abi3-manylinux*_x86_64.whl)" native
smoke "dist/groupadv-$version-py3-none-any.whl" numpy
