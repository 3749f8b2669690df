#!/usr/bin/env bash
# The pytest suite on the aarch64 wheel (dist/, from scripts/build_wheels.sh), run on an x86_64
# Debian/Ubuntu host under qemu-user emulation with Debian's arm64 Python and numpy. The arm64
# packages are unpacked into build/aarch64-root (nothing is installed on the host). Needs:
#   apt-get install qemu-user; dpkg --add-architecture arm64; apt-get update
# The Rust tests for aarch64 are `cargo test-aarch64` (see .cargo/config.toml).
# Timings under emulation mean nothing; this checks results only.
#
# usage: scripts/aarch64_emulated.sh [pytest arguments, default: tests]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/build/aarch64-root
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
wheel=$(ls dist/groupadv-"$version"-cp310-abi3-manylinux*_aarch64.whl)

if [ ! -x "$root/sys/usr/bin/python3" ]; then
    mkdir -p "$root/debs" "$root/sys"
    (cd "$root/debs" && apt-get download \
        python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
        python3-numpy:arm64 libc6:arm64 libgcc-s1:arm64 libstdc++6:arm64 libexpat1:arm64 \
        zlib1g:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 \
        libsqlite3-0:arm64 libuuid1:arm64 libncursesw6:arm64 libtinfo6:arm64 \
        libreadline8:arm64 libcrypt1:arm64 libblas3:arm64 liblapack3:arm64 libgfortran5:arm64)
    for deb in "$root"/debs/*.deb; do dpkg -x "$deb" "$root/sys"; done
    # the links update-alternatives would make
    lib="$root/sys/usr/lib/aarch64-linux-gnu"
    ln -sf blas/libblas.so.3 "$lib/libblas.so.3"
    ln -sf lapack/liblapack.so.3 "$lib/liblapack.so.3"
    ln -sf python3.11 "$root/sys/usr/bin/python3"
fi
# pytest and its dependencies are pure Python: the host's pip fetches them for any CPU.
if [ ! -d "$root/pure/pytest" ]; then
    "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --no-deps \
        --only-binary :all: --target "$root/pure" \
        "pytest>=8,<10" pluggy iniconfig packaging pygments
fi
rm -rf "$root/site" && mkdir -p "$root/site"
"${PYTHON:-python3}" -m zipfile -e "$wheel" "$root/site"

emulate=(qemu-aarch64 -L "$root/sys"
    -E PYTHONHOME="$root/sys/usr"
    -E LD_LIBRARY_PATH="$root/sys/usr/lib/aarch64-linux-gnu:$root/sys/lib/aarch64-linux-gnu"
    -E PYTHONPATH="$root/site:$root/sys/usr/lib/python3/dist-packages:$root/pure"
    -E GROUPADV_BACKEND=native
    "$root/sys/usr/bin/python3")
"${emulate[@]}" -c 'import platform, numpy, groupadv as ga
assert platform.machine() == "aarch64" and ga.backend() == "native", ga.backend()
print(platform.machine(), platform.python_version(), "numpy", numpy.__version__,
      "groupadv", ga.__version__, ga.backend(), ga.grpo([1.0, 0.0, 2.0, 2.0], 2))'
# Left out, as emulation cannot run them: hypothesis (its compiled part is x86_64 here),
# fork tests (qemu-user aborts in a forked child of a threaded process), and tests that start
# `python` in a subprocess (no binfmt handler for arm64 binaries).
"${emulate[@]}" -m pytest -q -p no:cacheprovider --confcutdir tests \
    --ignore tests/test_parity.py --ignore tests/test_properties.py \
    -k "not fork and not subprocess and not console_examples and not torch_distributed_example" \
    "${@:-tests}"
