#!/usr/bin/env bash
# Build the release artefacts into dist/ (README "Installing: which artefact pip picks"):
#   groupadv-V-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl    compiled core
#   groupadv-V-cp310-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64.whl  compiled core
#   groupadv-V.tar.gz                                                         sdist (needs Rust)
#   groupadv-V-py3-none-any.whl       numpy backend only: what pip takes where no binary matches
# The binary wheels are abi3 (one wheel for CPython >= 3.10) and linked against glibc 2.17 with
# zig (manylinux2014), checked with `auditwheel show`. Tools (maturin, ziglang, auditwheel,
# wheel) come from PyPI into a build venv; Rust (cargo, rustup) must be installed.
#
# usage: scripts/build_wheels.sh [--x86_64-only]
#   --x86_64-only   skip the aarch64 wheel (.ci/run uses this)
# env:   GROUPADV_BUILD_VENV  the build venv (default build/wheel-venv, reused between runs)
#        PYTHON               the Python that creates it (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
for arg in "$@"; do
    case "$arg" in
        --x86_64-only) targets=(x86_64-unknown-linux-gnu) ;;
        -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "build_wheels.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

# Pinned build tools: the versions this script was checked with.
TOOLS=("maturin==1.16.0" "ziglang==0.17.1" "auditwheel==6.8.2" "wheel==0.48.0")
VENV=${GROUPADV_BUILD_VENV:-build/wheel-venv}
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}"
BIN=$(cd "$VENV/bin" && pwd)
# maturin --zig finds zig through the ziglang package of the Python that runs maturin.
export PATH="$BIN:$PATH"

for t in "${targets[@]}"; do
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$t"; then
        rustup target add "$t"
    fi
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
mkdir -p dist
rm -f dist/groupadv-"$version"[-.]*

for t in "${targets[@]}"; do
    echo "== wheel for $t (manylinux2014, zig)"
    maturin build --release --locked --zig --compatibility manylinux2014 --target "$t" --out dist
done

echo "== sdist"
maturin sdist --out dist

# The pure-Python wheel: the x86_64 wheel's files and metadata (same version, dependencies,
# entry points) without the compiled module, retagged py3-none-any.
echo "== py3-none-any wheel (numpy backend only)"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
"$BIN/wheel" unpack --dest "$stage" dist/groupadv-"$version"-cp310-abi3-manylinux*_x86_64.whl
root="$stage/groupadv-$version"
rm -rf "$root"/groupadv/_native.* "$root/groupadv-$version.dist-info/sboms"  # the Rust crates' SBOM
sed -i -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' -e '/^Tag: /d' \
    "$root/groupadv-$version.dist-info/WHEEL"
echo "Tag: py3-none-any" >>"$root/groupadv-$version.dist-info/WHEEL"
"$BIN/wheel" pack --dest-dir dist "$root" >/dev/null

echo "== auditwheel show"
for whl in dist/groupadv-"$version"-cp310-abi3-*.whl; do
    report=$("$BIN/auditwheel" show "$whl")
    echo "$report" | tr '\n' ' ' | sed 's/  */ /g'
    echo
    if ! grep -q 'manylinux_2_17' <<<"$report"; then
        echo "build_wheels.sh: $whl is not manylinux_2_17 (manylinux2014) compliant" >&2
        exit 1
    fi
done

echo "== artefacts (dist/)"
"$BIN/python" - "$version" <<'PY'
import glob, os, sys, zipfile

version = sys.argv[1]
for path in sorted(glob.glob(f"dist/groupadv-{version}[-.]*")):
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            wheel = z.read(f"groupadv-{version}.dist-info/WHEEL").decode()
        tags = ", ".join(l[5:] for l in wheel.splitlines() if l.startswith("Tag: "))
    else:
        tags = "sdist"
    print(f"{os.path.basename(path):78} {tags:60} {os.path.getsize(path) / 1024:8.0f} KiB")
PY
