#!/usr/bin/env bash
# Creates .venv and installs mmvla with its extras. Idempotent: a second run with an unchanged
# pyproject.toml only checks a stamp and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.mmvla-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/mmvla" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
# torch first: a bare requirement would pull a multi-GB CUDA build. GPU users: see README.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  pip install "torch==${MMVLA_TORCH_VERSION:-2.13.0}"
fi
pip install -e ".[dev,pretrained,metaworld]"
"$VENV/bin/python" -c "import mmvla, torch, mujoco" # fail here, not later, if the install is broken
echo "$want" >"$STAMP"
