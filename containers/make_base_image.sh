#!/usr/bin/env bash
# Make a local base image without a registry: Debian bookworm (Python 3.11) by debootstrap.
#
#   containers/make_base_image.sh [NAME:TAG]      (default eyegc-base:bookworm; needs root)
#
# Then: ./submit.sh TASK ... --base-image eyegc-base:bookworm. See shared/docs/DOCKER.md.
set -euo pipefail

name="${1:-eyegc-base:bookworm}"
if docker image inspect "$name" >/dev/null 2>&1; then
    echo "$name already exists"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
rootfs="$(mktemp -d /tmp/eyegc-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" >/tmp/eyegc-debootstrap.log 2>&1 \
    || { tail -20 /tmp/eyegc-debootstrap.log >&2; exit 1; }
tar -C "$rootfs" -c . | docker import - "$name" >/dev/null
echo "$name: $(docker image inspect -f '{{.Size}}' "$name") bytes"
