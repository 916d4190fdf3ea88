#!/usr/bin/env bash
# Sets up (idempotent), then lints, type-checks and runs the test suite. Extra args go to pytest,
# e.g. `scripts/test.sh -m "not slow"` for the fast suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/install-chromium.sh  # Debian's chromium for the HTML report render test (idempotent)
export MUJOCO_GL=${MUJOCO_GL:-egl}
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir site  # the guide: no broken links or references
.venv/bin/python -m pytest "$@"
