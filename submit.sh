#!/usr/bin/env bash
# Build, test-run and export the grand-challenge.org algorithm container of one task.
#
#   ./submit.sh TASK [--model RUN ...] [--data ROOT] [--base-image IMG] [--tag T] [--gpus]
#                    [--memory 8g] [--sockets FILE] [--print-sockets] [--no-test] [--no-docker] [--out dist] [--demo]
#
# e.g. ./submit.sh drac22-task1 --demo --base-image eyegc-base:bookworm
# The work is done by eyegc.common.deploy (python -m eyegc.common.deploy.submit) with the project's
# Python, building from this checkout (see containers/README.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${EYEGC_PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then
        python="$root/.venv/bin/python"
    else
        python="$(command -v python3 || true)"
    fi
fi
if [[ -z "$python" ]] || ! "$python" -c "import eyegc.common.container" 2>/dev/null; then
    echo "submit.sh: eyegc is not importable with ${python:-python3}; install it (pip install -e .) or set EYEGC_PYTHON" >&2
    exit 1
fi
EYEGC_SOURCE="$root" exec "$python" -m eyegc.common.deploy.submit "$@"
