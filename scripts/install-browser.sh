#!/bin/sh
# Installs the headless browser the dashboard tests drive: Debian's chromium and its chromedriver.
# Idempotent: does nothing when /usr/bin/chromium is already there. Never fails the caller: where apt is
# missing or the install fails (no root, no package mirror), it says so and exits 0, and the browser tests
# skip with that reason.
set -u

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "install-browser: chromium already installed ($(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: apt-get not available; install chromium and chromedriver yourself to run the dashboard tests"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser: not root and no password-less sudo; skipping (dashboard browser tests will be skipped)"
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; then
    echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
    echo "install-browser: apt-get could not install chromium and chromium-driver; dashboard browser tests will be skipped"
fi
exit 0
