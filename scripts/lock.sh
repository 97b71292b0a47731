#!/usr/bin/env bash
# Remakes requirements/test.lock, the pinned test/lint/type-check environment, from pyproject.toml, then runs
# the whole suite against it (scripts/test.sh makes .venv anew whenever the lock changed).
#   bash scripts/lock.sh                      keep every pin that still fits; resolve only what pyproject changed
#   bash scripts/lock.sh --upgrade            the newest versions pyproject.toml allows, everywhere
#   bash scripts/lock.sh --upgrade-package mypy [--upgrade-package ruff ...]   just those
#   bash scripts/lock.sh --no-test ...        write the lock, run nothing (the commit must still pass the suite)
# Commit the lock with the pyproject.toml change that needed it: upgrading is a deliberate, tested commit.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
uv_version=0.13.8   # the resolver itself is pinned too: its output format is part of the lock
lock=requirements/test.lock
run_tests=1
uv_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-test) run_tests=0 ;;
        --upgrade) uv_args+=(--upgrade) ;;
        --upgrade-package) uv_args+=(--upgrade-package "$2"); shift ;;
        *) echo "lock.sh: unknown argument $1 (see the comment at the top of scripts/lock.sh)" >&2; exit 2 ;;
    esac
    shift
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/uv"
"$work/uv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
mkdir -p "$(dirname "$lock")"
# uv prefers the versions already in its output file, so a plain run changes only what it must.
if [ -f "$lock" ]; then cp "$lock" "$work/test.lock"; fi
"$python" scripts/lockfile.py build-inputs |
    "$work/uv/bin/uv" pip compile --quiet --universal --generate-hashes --no-header \
        --python-version "$("$python" scripts/lockfile.py python-floor)" \
        --extra test pyproject.toml - -o "$work/test.lock" ${uv_args[@]+"${uv_args[@]}"}
{ "$python" scripts/lockfile.py header --uv-version "$uv_version"; sed '/./,$!d' "$work/test.lock"; } > "$lock"
"$python" scripts/lockfile.py runtime --write
"$python" scripts/lockfile.py check
echo "== wrote $lock ($(grep -c '==' "$lock") packages pinned)"
git --no-pager diff --stat -- "$lock" 2>/dev/null || true
if [ "$run_tests" = 1 ]; then
    exec bash scripts/test.sh
fi
