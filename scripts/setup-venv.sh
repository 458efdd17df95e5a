#!/usr/bin/env bash
# Create ./.venv (once) and install eyegc editable with the pinned versions of constraints.txt.
# Re-running is cheap: it reinstalls only when constraints.txt, pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.eyegc-installed
# This script is in the stamp too: a change of the extras installed below reinstalls.
want=$(cat constraints.txt pyproject.toml scripts/setup-venv.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing eyegc and its pinned dependencies into .venv (CPU torch from constraints.txt)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch==2.13.0 is pinned in constraints.txt: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,paddle,nnunet,smp,crf,gcapi,shim]"
  # The platform's runner for the tests that run the entrypoint under it. It declares Python 3.12
  # only; the pinned version runs on 3.11 (its tests here pass), so the check is skipped for it alone.
  .venv/bin/python -m pip install --quiet --ignore-requires-python -c constraints.txt sagemaker-shim
  echo "$want" > "$stamp"
fi
