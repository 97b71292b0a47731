#!/usr/bin/env bash
# Installs what the tests need (.venv exactly as requirements/test.lock pins it) and runs the linters and the whole test suite.
# Fails on any failure, including "no tests ran" (pytest exit 5). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# Tests run real servers: redis-server (Redis store, replicas) and nginx (load balancing replicas);
# The shellcheck tool lints the Linux startup script; Wine's cmd.exe runs the Windows boot file, with a stand-in for
# powershell.exe built by mingw-w64 (tests/provisioning/test_windows_boot.py).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v wine64 >/dev/null 2>&1 || [ -x /usr/lib/wine/wine64 ] || missing+=(wine64)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64-win32)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing ${missing[*]} (apt-get): the tests start their own instances"
        # Keep the packages from starting system-wide services: the tests run their own on free ports.
        policy=/usr/sbin/policy-rc.d
        created_policy=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
    else
        echo "${missing[*]} not installed and this script cannot install them (it needs root and apt-get):" >&2
        echo "install the packages (e.g. sudo apt-get install ${missing[*]}), then run it again." >&2
        exit 1
    fi
fi
# The toolchain comes from requirements/test.lock (exact versions and hashes), never "whatever is newest": a
# green run must not depend on the day or on an old .venv. A .venv made from another lock is made anew.
echo "== lock"
"$python" scripts/lockfile.py check
stamp="$(sha256sum requirements/test.lock | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/crc-lock-stamp 2>/dev/null)" != "$stamp" ]; then
    echo "== making .venv from requirements/test.lock"
    rm -rf .venv
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/test.lock
    echo "$stamp" > .venv/crc-lock-stamp
fi
# The project itself, against the locked setuptools: no download, no unpinned build backend.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# Wine and mingw-w64 are installed above: their absence is then a failure, not a skipped test.
# The whole suite, slow tests included (a bare pytest leaves those out; a -m given here wins).
CRC_REQUIRE_WINE=1 .venv/bin/python -m pytest -m "slow or not slow" "$@"
