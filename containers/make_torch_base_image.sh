#!/usr/bin/env bash
# Make a local base image that carries its own torch, as pytorch/pytorch images do (no registry
# needed): BASE (default eyegc-base:bookworm) plus the CPU torch of submit.sh's wheelhouse, installed
# in the system Python. An eyegc image built on it must use that torch and install no second one.
#
#   containers/make_torch_base_image.sh [NAME:TAG] [BASE]   (default eyegc-base-torch:bookworm)
#
# Needs the wheelhouse (build/container/wheelhouse/deps), which any ./submit.sh build leaves.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-eyegc-base-torch:bookworm}"
base="${2:-eyegc-base:bookworm}"
if docker image inspect "$name" >/dev/null 2>&1; then
    echo "$name already exists"
    exit 0
fi
wheels=build/container/wheelhouse/deps
ls "$wheels"/torch-*.whl >/dev/null 2>&1 || { echo "no torch wheel in $wheels: run ./submit.sh once first" >&2; exit 1; }
context="$(mktemp -d /tmp/eyegc-torch-base.XXXXXX)"
trap 'rm -rf "$context"' EXIT
mkdir "$context/wheels"
cp -l "$wheels"/*.whl "$context/wheels/" 2>/dev/null || cp "$wheels"/*.whl "$context/wheels/"
cat > "$context/Dockerfile" <<DOCKERFILE
FROM $base
COPY wheels/ /tmp/wheels/
RUN python3 -m pip install --break-system-packages --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /tmp/wheels torch \
    && rm -rf /tmp/wheels \
    && python3 -c "import torch; print('base torch', torch.__version__, torch.__file__)"
DOCKERFILE
docker build -q -t "$name" "$context" >/dev/null
echo "$name: $(docker run --rm --network none "$name" python3 -c 'import torch; print(torch.__version__, torch.__file__)')"
