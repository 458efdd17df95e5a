#!/usr/bin/env bash
# The browser of the `eyegc serve` browser test: Debian's chromium and chromium-driver
# (/usr/bin/chromium, /usr/bin/chromedriver). Nothing downloads a browser at run time.
# Installed with apt-get when missing and this is root; otherwise it says what to install, and the
# test is skipped (or fails under CI, where CI=... is set).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-browser: the browser test needs Debian's chromium and chromium-driver; install them as root" >&2
    exit 0
fi
echo "setup-browser: installing chromium and chromium-driver (apt-get)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
