#!/usr/bin/env bash
# Create ./.venv (once) and install eyegc editable with the pinned versions of constraints.txt.
# Re-running is cheap: it reinstalls only when constraints.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.eyegc-installed
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing eyegc and its pinned dependencies into .venv (CPU torch from constraints.txt)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch==2.13.0 is pinned in constraints.txt: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,paddle]"
  echo "$want" > "$stamp"
fi
