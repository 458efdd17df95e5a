#!/usr/bin/env bash
# The project's test command (README, .ci/run): set up .venv and the test browser (Debian's chromium),
# lint, run every test, then the
# container end to end (./submit.sh drac22-task1 --demo and goals-glaucoma --demo: image sockets and a
# JSON value socket, exec and invoke mode, each also under the platform's runner sagemaker-shim from a
# local S3; then goals-glaucoma with a PaddlePaddle bundle: the image gets
# the paddle extra; then goals-layers with an nnU-Net bundle (the nnunet extra); then drive-vessels with
# an smp + super-resolution + CBCE/RMI bundle and a dense-CRF bundle (the smp and crf extras); then an
# image on a base that has its own torch: exactly one torch, the base's;
# build, offline test runs, export). The test images are tagged eyegc-test-* and removed with their
# archives once each step has passed.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow".
# EYEGC_SKIP_CONTAINER=1 skips the container stage.
set -euo pipefail
cd "$(dirname "$0")/.."
# Logs, not terminals: progress bars update at most every 10 s.
[ -t 1 ] || export TQDM_MININTERVAL="${TQDM_MININTERVAL:-10}"
scripts/setup-venv.sh
scripts/setup-browser.sh
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache  # the layering (pyproject.toml)
set +e
.venv/bin/python -m pytest -ra "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
[ "$status" -eq 0 ] || exit "$status"

if [ "${EYEGC_SKIP_CONTAINER:-0}" = 1 ]; then
  echo "test.sh: container stage skipped (EYEGC_SKIP_CONTAINER=1)"
  exit 0
fi
echo "== container end to end: drac22-task1 --demo, goals-glaucoma --demo, goals-glaucoma with a paddle bundle, goals-layers with an nnU-Net bundle, drive-vessels with the seeds' methods, drac22-task1 on a base with its own torch"
started=$(date +%s)
export EYEGC_DOCKERD_PIDFILE="${TMPDIR:-/tmp}/eyegc-dockerd-test-$$.pid"
stop_engine() {
  # Only an engine this run started is stopped.
  if [ -f "$EYEGC_DOCKERD_PIDFILE" ]; then
    kill "$(cat "$EYEGC_DOCKERD_PIDFILE")" 2>/dev/null || true
    rm -f "$EYEGC_DOCKERD_PIDFILE"
  fi
}
trap stop_engine EXIT
base_image="${EYEGC_BASE_IMAGE:-eyegc-base:bookworm}"
# Each step's image (about 2 GB), its shim-wrapped twin and its exported archive (about 0.8 GB) are
# removed once the step has passed: kept, the stage's images fill a small CI disk (it did: "No space
# left on device" at the last export). Test images are tagged eyegc-test-*, so a user's own
# eyegc-<task> images are never replaced or removed by the tests.
drop_test_image() {
  docker image rm "$1-sagemaker-shim" "$1" >/dev/null 2>&1 || true
  rm -f build/test-dist/"$1"-2*.tar.gz
  echo "test.sh: removed the test image $1 and its archive; $(df -h --output=avail . | tail -1 | tr -d ' ') free"
}
if scripts/docker-engine.sh; then
  for task in drac22-task1 goals-glaucoma; do
    ./submit.sh "$task" --demo --tag "eyegc-test-$task" --base-image "$base_image" --out build/test-dist
    drop_test_image "eyegc-test-$task"
  done
  # A bundle of the paddle backend: submit.sh must add the paddle extra to the image, and the
  # container must predict with paddle exactly as `eyegc predict` does.
  rm -rf build/test-paddle-gc
  .venv/bin/eyegc train goals-glaucoma --data demo/goals-glaucoma/data --out build/test-paddle-gc \
    --backend paddle --network-kwargs '{"depth": 18}' --epochs 2 --folds 2 --input-size 200,276 --device cpu
  ./submit.sh goals-glaucoma --model build/test-paddle-gc --data demo/goals-glaucoma/data --max-cases 2 \
    --tag eyegc-test-goals-glaucoma-paddle --base-image "$base_image" --out build/test-dist --no-shim
  drop_test_image eyegc-test-goals-glaucoma-paddle
  # An imported nnU-Net model (trained here by eyegc train --backend nnunet with a tiny CPU plan, then its
  # nnU-Net model folder imported as a user's would be): the image gets the nnunet extra and must predict
  # through nnU-Net's predictor exactly as `eyegc predict` does, also under the platform's runner.
  rm -rf build/test-nnunet-data build/test-nnunet-gl build/test-nnunet-imported
  .venv/bin/eyegc sample-data goals-layers build/test-nnunet-data --cases 4 --test-cases 2
  .venv/bin/eyegc train goals-layers --data build/test-nnunet-data --out build/test-nnunet-gl --backend nnunet \
    --folds 2 --epochs 1 --working-scale 0.5 --device cpu \
    --network-kwargs '{"gpu_memory_target": 0.05, "base_features": 8, "max_features": 32, "iterations_per_epoch": 3, "val_iterations": 1}'
  .venv/bin/eyegc nnunet import goals-layers --out build/test-nnunet-imported \
    --results build/test-nnunet-gl/nnunet/results/Dataset500_goals_layers/nnUNetTrainer__nnUNetPlans__2d
  ./submit.sh goals-layers --model build/test-nnunet-imported --data build/test-nnunet-data --max-cases 2 \
    --tag eyegc-test-goals-layers-nnunet --base-image "$base_image" --out build/test-dist
  drop_test_image eyegc-test-goals-layers-nnunet
  # The seeds' methods in one image: an smp network, super-resolution-aided, trained with CBCE + RMI, and
  # first in the ensemble a bundle whose tuning kept a dense CRF: the image gets the smp and crf extras
  # and must predict exactly as `eyegc predict` does.
  rm -rf build/test-seed-data build/test-seed-crf build/test-seed-smp
  .venv/bin/eyegc sample-data drive-vessels build/test-seed-data --cases 4 --test-cases 2
  .venv/bin/eyegc train drive-vessels --data build/test-seed-data --out build/test-seed-crf --folds 2 --epochs 1 \
    --device cpu --crf
  .venv/bin/python -c "import json, sys; sys.exit(0 if json.load(open('build/test-seed-crf/bundle.json'))['postprocessing']['crf'] else 'the CRF bundle kept no CRF')"
  .venv/bin/eyegc train drive-vessels --data build/test-seed-data --out build/test-seed-smp --folds 2 --epochs 1 \
    --device cpu --model smp:Unet --network-kwargs '{"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]}' \
    --super-resolution 2 --patch-size 128 --loss cbce --rmi-weight 0.5
  ./submit.sh drive-vessels --model build/test-seed-crf build/test-seed-smp --data build/test-seed-data --max-cases 2 \
    --tag eyegc-test-drive-vessels-seed-methods --base-image "$base_image" --out build/test-dist --no-shim
  drop_test_image eyegc-test-drive-vessels-seed-methods
  # A base image that carries its own torch (as pytorch/pytorch images do): the image must use it and
  # hold no second torch (the build checks both).
  containers/make_torch_base_image.sh eyegc-base-torch:bookworm "$base_image"
  ./submit.sh drac22-task1 --demo --no-test --tag eyegc-test-drac22-task1-basetorch --base-image eyegc-base-torch:bookworm \
    --out build/test-dist
  drop_test_image eyegc-test-drac22-task1-basetorch
elif [ -n "${CI:-}" ]; then
  echo "test.sh: CI needs a Docker engine for the container stage" >&2
  exit 1
else
  echo "test.sh: no Docker engine here; checking the container entrypoint in-process only (--no-docker)"
  for task in drac22-task1 goals-glaucoma; do
    ./submit.sh "$task" --demo --no-docker --out build/test-dist
  done
fi
echo "test.sh: container stage took $(( $(date +%s) - started )) s"
