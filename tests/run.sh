#!/usr/bin/env bash
# The test command (README "Run the tests"; .ci/run calls it): build the extension from this
# checkout, then run the lint and type checks (ruff, mypy; configured in pyproject.toml), the
# Rust unit tests and the Python suite on both backends.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# The optional integrations are tested too: torch (CPU and the device code path, gloo
# scale-out), pyarrow (Parquet CLI), ray (sharded example). Set GROUPADV_TEST_EXTRAS=test to
# skip them (their tests then report as skipped).
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[${GROUPADV_TEST_EXTRAS:-test,torch,parquet,ray}]"
"$PY" -m ruff check
"$PY" -m mypy python/groupadv
cargo test --quiet --locked
GROUPADV_BACKEND=native "$PY" -m pytest -q -p no:cacheprovider tests
GROUPADV_BACKEND=numpy "$PY" -m pytest -q -p no:cacheprovider tests
