#!/bin/bash
# CloudRemoteControl startup script (Linux): installs crc-daemon and connects this machine to its hub.
# Usable as a Vultr boot script and as cloud-init user-data. Rendered by crc for one machine: it holds that
# machine's private key, so it must be kept as secret as the key itself (`crc down` deletes it from Vultr).
#
# Each step is reported to the hub (POST /v1/boot, HMAC with the machine's report key) so `crc watch` shows it
# live; a failing step reports its output and stops the script. The key and the report key never appear in a
# command line: they are written by shell builtins and heredocs only.
#
# Environment overrides (for the local provider and tests): CRC_ROOT (prefix for every path, default none),
# CRC_SERVICE (systemd|process|auto), CRC_HOSTS_FILE, CRC_PYTHON (interpreter to use).
set -Eeuo pipefail
umask 077

@@SETTINGS@@

CRC_ROOT="${CRC_ROOT:-}"
CRC_SERVICE="${CRC_SERVICE:-auto}"
PREFIX_DIR="$CRC_ROOT/opt/crc"
VENV_DIR="$PREFIX_DIR/venv"
CONFIG_DIR="$CRC_ROOT/etc/crc"
CONFIG_FILE="$CONFIG_DIR/daemon.toml"
STATE_DIR="$CRC_ROOT/var/lib/crc"
LOG_DIR="$CRC_ROOT/var/log/crc"
RUN_DIR="$CRC_ROOT/run/crc"
HOSTS_FILE="${CRC_HOSTS_FILE:-$CRC_ROOT/etc/hosts}"
HUB_CA_FILE="$CONFIG_DIR/hub-ca.pem"
BOOT_LOG="$LOG_DIR/boot.log"
STEP_LOG="$LOG_DIR/step.log"
CURRENT_STEP="script"

mkdir -p "$PREFIX_DIR" "$CONFIG_DIR" "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
chmod 0700 "$CONFIG_DIR" "$STATE_DIR" "$LOG_DIR"
: >"$BOOT_LOG"
echo "crc startup script for machine $CRC_MACHINE_NAME ($CRC_MACHINE_ID) of scenario $CRC_SCENARIO" >>"$BOOT_LOG"

# --- boot reports ----------------------------------------------------------------------------------------
# HMAC-SHA256 from builtins and sha256sum, so the report key is never an argument of any program.
MAC_IPAD=""
MAC_OPAD=""
init_mac() {
  local i byte escaped
  for ((i = 0; i < 64; i++)); do
    byte=0
    if ((i < ${#CRC_REPORT_KEY} / 2)); then byte=$((16#${CRC_REPORT_KEY:i*2:2})); fi
    printf -v escaped '\\x%02x' $((byte ^ 0x36))
    MAC_IPAD+=$escaped
    printf -v escaped '\\x%02x' $((byte ^ 0x5c))
    MAC_OPAD+=$escaped
  done
}

hex_escapes() {
  local hex=$1 out="" i
  for ((i = 0; i < ${#hex}; i += 2)); do out+="\\x${hex:i:2}"; done
  printf '%s' "$out"
}

# mac STEP STATUS TIME BODY_FILE -> prints hmac-sha256=<hex> (see protocol/boot.py for the MAC input)
mac() {
  local inner outer
  inner=$({
    printf '%b' "$MAC_IPAD"
    printf 'crc-boot-v1\n%s\n%s\n%s\n%s\n' "$CRC_MACHINE_ID" "$3" "$1" "$2"
    cat "$4"
  } | sha256sum | cut -d' ' -f1)
  outer=$({
    printf '%b' "$MAC_OPAD"
    printf '%b' "$(hex_escapes "$inner")"
  } | sha256sum | cut -d' ' -f1)
  printf 'hmac-sha256=%s' "$outer"
}

http_tls_args() {
  if [ -s "$HUB_CA_FILE" ]; then printf '%s\n' --cacert "$HUB_CA_FILE"; fi
}

# report STEP STATUS [FILE]: best effort; a hub that cannot be reached must not stop the installation.
report() {
  local step=$1 status=$2 detail=${3:-} body now signature
  body=$(mktemp)
  if [ -n "$detail" ] && [ -f "$detail" ]; then tail -c 8192 "$detail" >"$body" || true; fi
  now=$(date +%s)
  signature=$(mac "$step" "$status" "$now" "$body")
  local -a tls=()
  mapfile -t tls < <(http_tls_args)
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 15 --retry 3 --retry-delay 1 "${tls[@]}" -X POST --data-binary "@$body" \
      -H "Content-Type: application/octet-stream" -H "X-CRC-Machine: $CRC_MACHINE_ID" -H "X-CRC-Time: $now" \
      -H "X-CRC-Step: $step" -H "X-CRC-Status: $status" -H "X-CRC-Signature: $signature" \
      "$CRC_HUB_HTTP/v1/boot" >/dev/null 2>>"$BOOT_LOG" || echo "boot report $step/$status not delivered" >>"$BOOT_LOG"
  fi
  rm -f "$body"
}

# step NAME: the step now running; its output goes to STEP_LOG, which a failure report carries.
step() {
  CURRENT_STEP=$1
  echo "== $1 ($(date -u +%H:%M:%S))" >>"$BOOT_LOG"
  : >"$STEP_LOG"
  report "$1" running
}

step_ok() {
  cat "$STEP_LOG" >>"$BOOT_LOG"
  report "$CURRENT_STEP" ok "$STEP_LOG"
}

on_error() {
  local status=$?
  trap - ERR
  echo "exit status $status at line $1" >>"$STEP_LOG"
  cat "$STEP_LOG" >>"$BOOT_LOG"
  report "$CURRENT_STEP" failed "$STEP_LOG"
  exit "$status"
}
trap 'on_error $LINENO' ERR

fetch() { # URL FILE
  local -a tls=()
  mapfile -t tls < <(http_tls_args)
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --max-time 300 --retry 5 --retry-delay 2 "${tls[@]}" -o "$2" "$1"
  else
    "$PYTHON" - "$1" "$2" "$HUB_CA_FILE" <<'PY'
import ssl, sys, urllib.request
url, path, ca = sys.argv[1:4]
context = ssl.create_default_context(cafile=ca) if ca and open(ca).read().strip() else None
with urllib.request.urlopen(url, timeout=300, context=context) as answer, open(path, "wb") as out:
    out.write(answer.read())
PY
  fi
}

# --- steps -----------------------------------------------------------------------------------------------
init_mac
if [ -n "$CRC_HUB_CA_PEM" ]; then printf '%s\n' "$CRC_HUB_CA_PEM" >"$HUB_CA_FILE"; fi
report script-started ok

step installing-python
PYTHON=""
find_python() {
  local candidate
  for candidate in ${CRC_PYTHON:-} python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      PYTHON=$(command -v "$candidate")
      return 0
    fi
  done
  return 1
}
if ! find_python; then
  echo "no Python >= 3.11 found; installing one" >>"$STEP_LOG"
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >>"$STEP_LOG" 2>&1
    apt-get install -y -q python3 python3-venv >>"$STEP_LOG" 2>&1 || true
    find_python || apt-get install -y -q python3.11 python3.11-venv >>"$STEP_LOG" 2>&1
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q python3.11 >>"$STEP_LOG" 2>&1
  elif command -v yum >/dev/null 2>&1; then
    yum install -y -q python3.11 >>"$STEP_LOG" 2>&1
  elif command -v apk >/dev/null 2>&1; then
    apk add --no-cache python3 >>"$STEP_LOG" 2>&1
  fi
  find_python || { echo "could not install Python >= 3.11 with this system's package manager" >>"$STEP_LOG"; false; }
fi
"$PYTHON" --version >>"$STEP_LOG" 2>&1
step_ok

step creating-venv
if [ ! -x "$VENV_DIR/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV_DIR" >>"$STEP_LOG" 2>&1; then
    # Debian and Ubuntu ship venv's pip bootstrap separately.
    rm -rf "$VENV_DIR"
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    command -v apt-get >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python$version-venv" >>"$STEP_LOG" 2>&1
    "$PYTHON" -m venv "$VENV_DIR" >>"$STEP_LOG" 2>&1
  fi
fi
step_ok

step downloading-daemon
WHEEL_FILE="$PREFIX_DIR/$CRC_WHEEL"
fetch "$CRC_HUB_HTTP/v1/dist/$CRC_WHEEL" "$WHEEL_FILE.part" >>"$STEP_LOG" 2>&1
actual=$(sha256sum "$WHEEL_FILE.part" | cut -d' ' -f1)
if [ "$actual" != "$CRC_WHEEL_SHA256" ]; then
  echo "SHA-256 mismatch for $CRC_WHEEL: expected $CRC_WHEEL_SHA256, got $actual" >>"$STEP_LOG"
  false
fi
mv -f "$WHEEL_FILE.part" "$WHEEL_FILE"
echo "$CRC_WHEEL ($actual)" >>"$STEP_LOG"
# The dependencies' versions and hashes: the lock the master signed (by its SHA-256) into this script.
LOCK_FILE="$PREFIX_DIR/$CRC_LOCK"
fetch "$CRC_HUB_HTTP/v1/dist/$CRC_LOCK" "$LOCK_FILE.part" >>"$STEP_LOG" 2>&1
actual=$(sha256sum "$LOCK_FILE.part" | cut -d' ' -f1)
if [ "$actual" != "$CRC_LOCK_SHA256" ]; then
  echo "SHA-256 mismatch for $CRC_LOCK: expected $CRC_LOCK_SHA256, got $actual" >>"$STEP_LOG"
  false
fi
mv -f "$LOCK_FILE.part" "$LOCK_FILE"
step_ok

step installing-daemon
PIP_TLS=()
if [ -s "$HUB_CA_FILE" ]; then PIP_TLS=(--cert "$HUB_CA_FILE"); fi
if [ "${CRC_HUB_HTTP#http://}" != "$CRC_HUB_HTTP" ]; then
  # pip ignores plain-HTTP links unless their host is trusted; every file is hash-checked (wheel above, the rest
  # by the master's lock), so the transport decides nothing.
  hub_host=${CRC_HUB_HTTP#http://}
  hub_host=${hub_host%%/*}
  hub_host=${hub_host%:*}
  PIP_TLS=(--trusted-host "$hub_host")
fi
pip_install() {
  "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 30 "${PIP_TLS[@]}" \
    --no-index --find-links "$CRC_HUB_HTTP/v1/dist/" "$@" >>"$STEP_LOG" 2>&1
}
# Only from the hub, only files whose hashes the master's lock names: no package index, so nothing unpinned.
if ! pip_install --require-hashes -r "$LOCK_FILE"; then
  echo "a dependency in $CRC_LOCK is not on the hub for this machine: run \`crc hub dist\` on the hub's machine" >>"$STEP_LOG"
  false
fi
pip_install --no-deps "$WHEEL_FILE"
"$VENV_DIR/bin/crc-daemon" --version >>"$STEP_LOG" 2>&1
step_ok

step writing-config
cat >"$CONFIG_FILE.part" <<'CRC_CONFIG_END'
@@CONFIG@@
CRC_CONFIG_END
chmod 0600 "$CONFIG_FILE.part"
mv -f "$CONFIG_FILE.part" "$CONFIG_FILE"
echo "wrote $CONFIG_FILE (0600)" >>"$STEP_LOG"
step_ok

step starting-daemon
if [ "$CRC_SERVICE" = auto ]; then
  if [ -z "$CRC_ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    CRC_SERVICE=systemd
  else
    CRC_SERVICE=process
  fi
fi
DAEMON_ARGS=(--config "$CONFIG_FILE" --state-dir "$STATE_DIR" --hosts-file "$HOSTS_FILE")
if [ "$CRC_SERVICE" = systemd ]; then
  cat >/etc/systemd/system/crc-daemon.service <<'CRC_UNIT_END'
@@UNIT@@
CRC_UNIT_END
  systemctl daemon-reload >>"$STEP_LOG" 2>&1
  systemctl enable --now crc-daemon.service >>"$STEP_LOG" 2>&1
  sleep 1
  systemctl is-active crc-daemon.service >>"$STEP_LOG" 2>&1
else
  # No service manager: a supervising loop in its own session, restarting the daemon unless it was revoked.
  touch "$HOSTS_FILE"
  # shellcheck disable=SC2016 # the inner shell expands these
  setsid bash -c '
    while :; do
      "$0" "$@" && break
      status=$?
      if [ "$status" -eq 3 ]; then break; fi
      sleep 2
    done' "$VENV_DIR/bin/crc-daemon" "${DAEMON_ARGS[@]}" \
    >>"$LOG_DIR/daemon.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/daemon.pid"
  sleep 1
  kill -0 "$(cat "$RUN_DIR/daemon.pid")" 2>>"$STEP_LOG"
  echo "daemon supervised by pid $(cat "$RUN_DIR/daemon.pid"); log in $LOG_DIR/daemon.log" >>"$STEP_LOG"
fi
step_ok
report daemon-started ok
