#!/usr/bin/env bash
# Installs Debian's `chromium` for the report render test (tests/reporting/test_page.py renders report.html in
# headless Chromium). Idempotent and instant when Chromium is already installed. Needs root (or sudo) for
# apt-get; without either it says so and exits 0, and the render test skips with a clear reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-chromium: not root and no sudo: the Chromium render test will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null && echo "install-chromium: $(chromium --version 2>/dev/null || echo chromium installed)"
