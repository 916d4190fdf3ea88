#!/usr/bin/env bash
# Sets up (idempotent), then runs the whole chain on built-in defaults: collect -> train -> eval -> report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec .venv/bin/mmvla demo "$@"
