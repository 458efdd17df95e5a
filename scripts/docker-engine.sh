#!/usr/bin/env bash
# Make sure a Docker engine answers and the local base image exists (shared/docs/DOCKER.md):
#   - an engine that already answers is used as it is (and never stopped);
#   - otherwise, as root, docker.io is installed from Debian if missing and dockerd is started in
#     the background with the flags these machines need (no iptables, no bridge), left running;
#   - the base image eyegc-base:bookworm is made by debootstrap when absent (no registry needed).
# Exits non-zero with one line when no engine can be had (e.g. not root and none running).
set -euo pipefail
cd "$(dirname "$0")/.."
base="${EYEGC_BASE_IMAGE:-eyegc-base:bookworm}"

apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "docker-engine: need root to install $* (apt-get); install it, or start a Docker engine" >&2
        return 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || apt_install docker.io
    if [[ $(id -u) -ne 0 ]]; then
        echo "docker-engine: no Docker engine answers and only root can start one here" >&2
        exit 1
    fi
    echo "docker-engine: starting dockerd (log /tmp/eyegc-dockerd.log)"
    nohup dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
        </dev/null >/tmp/eyegc-dockerd.log 2>&1 &
    # Who started it: scripts/test.sh stops an engine that its own run started, and no other.
    echo $! > "${EYEGC_DOCKERD_PIDFILE:-/tmp/eyegc-dockerd.pid}"
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    if ! docker info >/dev/null 2>&1; then
        echo "docker-engine: dockerd did not start; /tmp/eyegc-dockerd.log ends with:" >&2
        tail -5 /tmp/eyegc-dockerd.log >&2
        exit 1
    fi
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    containers/make_base_image.sh "$base"
fi
