#!/usr/bin/env bash
# Install verl 0.9.1 for the live peer tests (tests/test_verl_live.py) without its heavy
# dependencies (ray[default], vllm, datasets, wandb, ...): verl itself with --no-deps, plus the
# few packages `import verl.trainer.ppo.core_algos` needs, also --no-deps and pinned inside
# verl's own bounds (setup.py: tensordict<=0.10.0, transformers>=5.5.3,<5.11). torch and numpy
# must already be installed; ray, requests, pyyaml, regex, packaging come with the test
# extras. Also unpacks verl's sdist tests (not in the wheel) into build/verl-0.9.1/.
#
#   PYTHON=.venv/bin/python bash scripts/install_verl.sh    # into a venv
#   bash scripts/install_verl.sh                             # into python3's environment (CI)
#
# Idempotent: does nothing when verl 0.9.1 imports and its tests are unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VERL=0.9.1
DEST=build/verl-$VERL
TESTS=$DEST/tests/trainer/ppo/test_core_algos_on_cpu.py

imports() {
    "$PY" - "$VERL" >/dev/null 2>&1 <<'EOF'
import sys
import verl
from verl.trainer.ppo import core_algos  # noqa: F401
sys.exit(verl.__version__ != sys.argv[1])
EOF
}

if imports && [ -f "$TESTS" ]; then
    echo "install_verl: verl $VERL already importable, tests in $DEST"
    exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check --quiet)
if ! imports; then
    # Exactly what `import verl.trainer.ppo.core_algos` loads beyond torch/numpy and the test
    # extras (found by importing it in a bare venv until it succeeded).
    "${PIP[@]}" install --no-deps \
        "verl==$VERL" \
        "tensordict==0.10.0" pyvers \
        "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" codetiming \
        "transformers==5.10.4" "huggingface_hub==1.33.0" "tokenizers==0.22.2" "safetensors==0.8.0" \
        "httpx==0.28.1" "httpcore==1.0.9" "h11==0.16.0" tqdm
fi
if [ ! -f "$TESTS" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # Reading the sdist's metadata needs setuptools: the installed one when there is one (12 s
    # faster than an isolated build environment), else pip's isolated one.
    "${PIP[@]}" download "verl==$VERL" --no-deps --no-binary :all: --no-build-isolation -d "$tmp" 2>/dev/null ||
        "${PIP[@]}" download "verl==$VERL" --no-deps --no-binary :all: -d "$tmp"
    mkdir -p build
    tar -xzf "$tmp/verl-$VERL.tar.gz" -C build "verl-$VERL/tests"
fi
if ! imports; then
    echo "install_verl: verl $VERL is installed but does not import:" >&2
    "$PY" -c "from verl.trainer.ppo import core_algos" >&2 || true
    exit 1
fi
echo "install_verl: verl $VERL ready (tests in $DEST)"
