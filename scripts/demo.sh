#!/usr/bin/env bash
# The main job on the embedded sample data: set up .venv, then sample data -> train (a few CPU
# minutes) -> predict with TTA -> local leaderboard -> official submission zip, all under ./demo.
# Arguments go to `eyegc demo`, e.g. scripts/demo.sh --epochs 20.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
exec .venv/bin/eyegc demo drac22-task1 --out demo "$@"
