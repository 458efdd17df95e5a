#!/usr/bin/env bash
# The main job on the embedded sample data, from nothing: set up .venv, make sure a Docker engine
# and a local base image exist (scripts/docker-engine.sh), then
#   ./submit.sh drac22-task1 --demo --base-image eyegc-base:bookworm
# which generates sample data, trains a small model on the CPU (~3 min), builds the
# grand-challenge algorithm image, test-runs it offline like the platform, checks it against
# `eyegc predict`, prints the local leaderboard and exports dist/. Extra arguments go to submit.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
base="${EYEGC_BASE_IMAGE:-eyegc-base:bookworm}"
scripts/docker-engine.sh || echo "demo: continuing without Docker: submit.sh runs the container entrypoint in-process and fails at the end"
exec ./submit.sh drac22-task1 --demo --base-image "$base" "$@"
