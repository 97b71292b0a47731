#!/bin/sh
# CloudRemoteControl installer for an existing Linux machine (issue 20): installs crc-daemon from the hub and joins
# a scenario with an enrollment token. Served as is at HUB/v1/install.sh; `crc enroll create --print-install`
# prints the one line that fetches it, checks its SHA-256 against the master's own copy, and runs it:
#
#   sh install.sh --hub URL [--hub-fingerprint sha256:HEX] --wheel NAME --wheel-sha256 HEX --lock NAME
#                 --lock-sha256 HEX [--token TOKEN|@FILE] [--name NAME] [-- ARGS FOR crc-daemon enroll]
#
# This file is the same for every machine and every master: nothing is rendered into it, so a master can hash its
# own packaged copy (provisioning/installers/). The daemon wheel and the dependency lock are those the master
# vouches for (their SHA-256s are arguments, never read from the hub); pip installs with --no-index
# --require-hashes from the hub only. A hub can make this fail, not install anything else.
#
# The token: CRC_ENROLL_TOKEN in the environment (what the one-liner sets) or --token @FILE; a token given as
# --token TOKEN is on this process's command line, which every local user can read while it runs.
#
# Same layout and environment overrides as the startup script (provisioning/scripts/linux.sh): CRC_ROOT (prefix
# for every path), CRC_SERVICE (systemd|process|auto), CRC_HOSTS_FILE, CRC_PYTHON (interpreter to use).
#
# Exit status: 0 joined and the daemon started; 1 it failed (the hub unreachable, a SHA-256 or the hub's
# certificate not the pinned one, pip failed, the hub refused the token); 2 a usage error or this machine has
# joined already (crc-daemon enroll's own status is passed on). Every failure says why in one line on stderr.
set -eu
umask 077

die() { # STATUS MESSAGE
  printf 'crc install: %s\n' "$2" >&2
  exit "$1"
}
say() { printf 'crc install: %s\n' "$*"; }

HUB=""
PIN=""
WHEEL=""
WHEEL_SHA256=""
LOCK=""
LOCK_SHA256=""
TOKEN_ARG=""
NAME=""
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; break ;;
    --hub | --hub-fingerprint | --wheel | --wheel-sha256 | --lock | --lock-sha256 | --token | --name)
      [ $# -ge 2 ] || die 2 "$1 needs a value"
      case $1 in
        --hub) HUB=$2 ;;
        --hub-fingerprint) PIN=$2 ;;
        --wheel) WHEEL=$2 ;;
        --wheel-sha256) WHEEL_SHA256=$2 ;;
        --lock) LOCK=$2 ;;
        --lock-sha256) LOCK_SHA256=$2 ;;
        --token) TOKEN_ARG=$2 ;;
        --name) NAME=$2 ;;
      esac
      shift 2
      ;;
    *) die 2 "unknown argument $1 (arguments for crc-daemon enroll go after --)" ;;
  esac
done
# What is left ("$@") goes to crc-daemon enroll as it is (--force, ...).

is_sha256() { # 64 lower-case hex digits
  [ ${#1} -eq 64 ] && case $1 in *[!0-9a-f]*) false ;; *) true ;; esac
}
is_file_name() { # a name under HUB/v1/dist/: no slash, nothing a shell or URL would read otherwise
  [ -n "$1" ] && case $1 in .* | *[!A-Za-z0-9_.+-]*) false ;; *) true ;; esac
}
case $HUB in
  http://?* | https://?*) HUB=${HUB%/} ;;
  *) die 2 "--hub must be the hub's http:// or https:// URL, not '$HUB'" ;;
esac
is_wheel_name() { is_file_name "$1" && case $1 in *.whl) true ;; *) false ;; esac; }
is_pin() { [ "${1#sha256:}" != "$1" ] && is_sha256 "${1#sha256:}"; }
is_file_name "$LOCK" || die 2 "--lock must name the dependency lock"
is_sha256 "$WHEEL_SHA256" || die 2 "--wheel-sha256 must be 64 lower-case hex digits"
is_sha256 "$LOCK_SHA256" || die 2 "--lock-sha256 must be 64 lower-case hex digits"
is_wheel_name "$WHEEL" || die 2 "--wheel must name a wheel"
if [ -n "$PIN" ]; then
  is_pin "$PIN" || die 2 "--hub-fingerprint must be sha256:<64 hex digits>"
  case $HUB in https://*) ;; *) die 2 "a --hub-fingerprint is given but $HUB does not use TLS" ;; esac
fi
# The token stays out of the environment of everything but crc-daemon enroll (pip, Python, curl).
ENROLL_TOKEN=${CRC_ENROLL_TOKEN:-}
unset CRC_ENROLL_TOKEN
if [ -z "$TOKEN_ARG" ] && [ -z "$ENROLL_TOKEN" ]; then
  die 2 "no enrollment token: set CRC_ENROLL_TOKEN or pass --token @FILE (crc enroll create makes one)"
fi
case $TOKEN_ARG in @*) [ -r "${TOKEN_ARG#@}" ] || die 2 "cannot read the token file ${TOKEN_ARG#@}" ;; esac

CRC_ROOT=${CRC_ROOT:-}
CRC_SERVICE=${CRC_SERVICE:-auto}
PREFIX_DIR="$CRC_ROOT/opt/crc"
VENV_DIR="$PREFIX_DIR/venv"
CONFIG_DIR="$CRC_ROOT/etc/crc"
CONFIG_FILE="$CONFIG_DIR/daemon.toml"
STATE_DIR="$CRC_ROOT/var/lib/crc"
LOG_DIR="$CRC_ROOT/var/log/crc"
RUN_DIR="$CRC_ROOT/run/crc"
HOSTS_FILE=${CRC_HOSTS_FILE:-$CRC_ROOT/etc/hosts}
HUB_CA_FILE="$CONFIG_DIR/hub-ca.pem"
LOG="$LOG_DIR/install.log"
case $CRC_SERVICE in
  auto)
    if [ -z "$CRC_ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      CRC_SERVICE=systemd
    else
      CRC_SERVICE=process
    fi
    ;;
  systemd | process) ;;
  *) die 2 "CRC_SERVICE must be systemd, process or auto, not '$CRC_SERVICE'" ;;
esac
if [ -e "$CONFIG_FILE" ]; then
  case " $* " in
    *" --force "*) ;;
    *) die 2 "$CONFIG_FILE exists: this machine has joined already (add -- --force to join anew)" ;;
  esac
fi
mkdir -p "$PREFIX_DIR" "$CONFIG_DIR" "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" || die 1 "cannot create $PREFIX_DIR (run as root)"
chmod 0700 "$CONFIG_DIR" "$STATE_DIR" "$LOG_DIR"
: >"$LOG"

# log_tail: the last line of the install log, so a failure is one line that says what went wrong.
log_tail() { tail -n 1 "$LOG" 2>/dev/null | cut -c1-300; }

# --- Python >= 3.11: the one this machine has, else its package manager's (as linux.sh) ---------------------------
PYTHON=""
find_python() {
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
  say "no Python >= 3.11 found; installing one"
  if command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOG" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >>"$LOG" 2>&1 || true
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q python3.11 >>"$LOG" 2>&1 || true
  elif command -v yum >/dev/null 2>&1; then
    yum install -y -q python3.11 >>"$LOG" 2>&1 || true
  elif command -v apk >/dev/null 2>&1; then
    apk add --no-cache python3 >>"$LOG" 2>&1 || true
  fi
  find_python || die 1 "no Python >= 3.11 and none could be installed with this system's package manager"
fi

# --- the hub's certificate: checked against the pin before anything is fetched ---------------------------------
# With a pin, the certificate is taken from a first handshake (not verified), its SHA-256 compared with the pin,
# and then trusted alone by curl (--cacert) and added to pip's CA bundle: a man in the middle is refused here.
if [ -n "$PIN" ]; then
  "$PYTHON" - "$HUB" "$PIN" "$HUB_CA_FILE" <<'PY' || exit 1
import hashlib, socket, ssl, sys
from urllib.parse import urlsplit

url, pin, out = sys.argv[1:4]
parts = urlsplit(url)
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the pin is checked instead
try:
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            der = tls.getpeercert(binary_form=True)
except OSError as exc:
    sys.exit(f"crc install: cannot reach the hub at {url}: {exc}")
actual = "sha256:" + hashlib.sha256(der).hexdigest()
if actual != pin.lower():
    sys.exit(f"crc install: the hub's certificate is {actual}, not the pinned {pin}: nothing was installed")
with open(out, "w") as f:
    f.write(ssl.DER_cert_to_PEM_cert(der))
PY
fi

fetch() { # URL FILE
  if command -v curl >/dev/null 2>&1; then
    if [ -s "$HUB_CA_FILE" ] && [ -n "$PIN" ]; then
      curl -fsSL --max-time 300 --retry 3 --retry-delay 2 --cacert "$HUB_CA_FILE" -o "$2" "$1"
    else
      curl -fsSL --max-time 300 --retry 3 --retry-delay 2 -o "$2" "$1"
    fi
  else
    "$PYTHON" - "$1" "$2" "$HUB_CA_FILE" "$PIN" <<'PY'
import ssl, sys, urllib.request
url, path, ca, pin = sys.argv[1:5]
context = None
if pin:
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # the one certificate trusted is the pinned one
with urllib.request.urlopen(url, timeout=300, context=context) as answer, open(path, "wb") as out:
    out.write(answer.read())
PY
  fi
}

sha256_of() { "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"; }

# fetch_checked NAME SHA256: HUB/v1/dist/NAME into PREFIX_DIR, refused unless its SHA-256 is the master's.
fetch_checked() {
  fetch "$HUB/v1/dist/$1" "$PREFIX_DIR/$1.part" >>"$LOG" 2>&1 ||
    die 1 "cannot download $HUB/v1/dist/$1: $(log_tail)"
  actual=$(sha256_of "$PREFIX_DIR/$1.part")
  if [ "$actual" != "$2" ]; then
    rm -f "$PREFIX_DIR/$1.part"
    die 1 "SHA-256 mismatch for $1 from the hub: expected $2 (the master's), got $actual; nothing was installed"
  fi
  mv -f "$PREFIX_DIR/$1.part" "$PREFIX_DIR/$1"
}

# --- the daemon build the master vouches for, checked before anything is installed -----------------------------
say "downloading $WHEEL and $LOCK from $HUB"
fetch_checked "$WHEEL" "$WHEEL_SHA256"
fetch_checked "$LOCK" "$LOCK_SHA256"

say "installing crc-daemon into $VENV_DIR"
if [ ! -x "$VENV_DIR/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV_DIR" >>"$LOG" 2>&1; then
    # Debian and Ubuntu ship venv's pip bootstrap separately.
    rm -rf "$VENV_DIR"
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python$version-venv" >>"$LOG" 2>&1 || true
    fi
    "$PYTHON" -m venv "$VENV_DIR" >>"$LOG" 2>&1 || die 1 "cannot make a virtual environment: $(log_tail)"
  fi
fi
hub_host=${HUB#*://}
hub_host=${hub_host%%/*}
hub_host=${hub_host%:*}
PIP_TLS_OPT=""
PIP_TLS_VALUE=""
case $HUB in
  # pip ignores plain-HTTP links unless their host is trusted; every file is hash-checked (the wheel above, the
  # rest by the master's lock), so the transport decides nothing.
  http://*)
    PIP_TLS_OPT=--trusted-host
    PIP_TLS_VALUE=$hub_host
    ;;
  *)
    if [ -n "$PIN" ]; then
      # pip's own CA bundle plus the pinned certificate (a CA-signed hub still verifies through the bundle).
      bundle=$("$VENV_DIR/bin/python" -c 'import pip._vendor.certifi as c; print(c.where())' 2>>"$LOG") || bundle=""
      { if [ -n "$bundle" ]; then cat "$bundle"; fi; cat "$HUB_CA_FILE"; } >"$CONFIG_DIR/pip-ca.pem"
      PIP_TLS_OPT=--cert
      PIP_TLS_VALUE="$CONFIG_DIR/pip-ca.pem"
    fi
    ;;
esac
# In a subshell without REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE: requests lets them override the CA bundle pip is
# given with --cert (psf/requests#4650, #4726), and pip talks to the hub only (--no-index), so no other CA matters.
pip_install() (
  unset REQUESTS_CA_BUNDLE CURL_CA_BUNDLE
  if [ -n "$PIP_TLS_OPT" ]; then set -- "$PIP_TLS_OPT" "$PIP_TLS_VALUE" "$@"; fi
  "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 30 --no-index \
    --find-links "$HUB/v1/dist/" "$@" >>"$LOG" 2>&1
)
# Only from the hub, only files whose hashes the master's lock names: no package index, so nothing unpinned.
pip_install --require-hashes -r "$PREFIX_DIR/$LOCK" ||
  die 1 "pip could not install the locked dependencies from the hub (run \`crc hub dist\` there?): $(log_tail)"
pip_install --no-deps "$PREFIX_DIR/$WHEEL" || die 1 "pip could not install $WHEEL: $(log_tail)"
"$VENV_DIR/bin/crc-daemon" --version >>"$LOG" 2>&1 || die 1 "the installed crc-daemon does not run: $(log_tail)"

# --- join: crc-daemon enroll makes this machine's key pair (it never leaves the machine) and registers it --------
if [ -n "$NAME" ]; then set -- --name "$NAME" "$@"; fi
if [ -n "$PIN" ]; then set -- --hub-fingerprint "$PIN" "$@"; fi
if [ -n "$TOKEN_ARG" ]; then set -- --token "$TOKEN_ARG" "$@"; fi
if [ "$CRC_SERVICE" = process ]; then set -- --no-service "$@"; fi
status=0
CRC_ENROLL_TOKEN=$ENROLL_TOKEN "$VENV_DIR/bin/crc-daemon" enroll --hub "$HUB" --config "$CONFIG_FILE" "$@" ||
  status=$?
if [ "$status" -ne 0 ]; then exit "$status"; fi # crc-daemon enroll said why, in one line

if [ "$CRC_SERVICE" = process ]; then
  # No service manager (containers, tests): a supervising loop in its own session, restarting the daemon unless it
  # was revoked (exit 3), as linux.sh does.
  touch "$HOSTS_FILE"
  # shellcheck disable=SC2016 # the inner shell expands these
  setsid sh -c '
    while :; do
      "$0" "$@" && break
      status=$?
      if [ "$status" -eq 3 ]; then break; fi
      sleep 2
    done' "$VENV_DIR/bin/crc-daemon" --config "$CONFIG_FILE" --state-dir "$STATE_DIR" --hosts-file "$HOSTS_FILE" \
    >>"$LOG_DIR/daemon.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/daemon.pid"
  sleep 1
  kill -0 "$(cat "$RUN_DIR/daemon.pid")" 2>/dev/null || die 1 "the daemon exited at once: see $LOG_DIR/daemon.log"
  say "crc-daemon runs as pid $(cat "$RUN_DIR/daemon.pid") (no service manager); log in $LOG_DIR/daemon.log"
fi
