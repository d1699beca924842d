#!/usr/bin/env bash
# Install blankfilter as a systemd service on a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit).
#
#   sudo deploy/install.sh                       # install or upgrade, enable and (re)start
#   sudo deploy/install.sh --dry-run             # print every step, change nothing
#   sudo deploy/install.sh --uninstall           # remove unit, venv and /opt/blankfilter
#   deploy/install.sh --root /tmp/img --no-start # into a throw-away root (tests, inspection)
#
# Options: --runtime tflite-runtime|ai-edge-litert (default tflite-runtime), --source DIR (the
# project to install; default: the checkout this script is in), --python PY (default
# /usr/bin/python3), --no-start, --root PREFIX, --dry-run, --uninstall.
#
# Idempotent: run it again to upgrade. /etc/blankfilter (config) and /var/lib/blankfilter (frames,
# ledger, references) are never overwritten or removed, not even by --uninstall.
#
# Layout: /opt/blankfilter/{venv,models,config.example.toml}, /usr/local/bin/blankfilter (link),
# /etc/blankfilter/config.toml, /var/lib/blankfilter/inbox, /etc/systemd/system/blankfilter.service.
set -euo pipefail

APP_DIR=/opt/blankfilter
VENV=$APP_DIR/venv
MODELS=$APP_DIR/models
DATA_DIR=/var/lib/blankfilter
CONF_DIR=/etc/blankfilter
CONF=$CONF_DIR/config.toml
UNIT_NAME=blankfilter.service
UNIT_DIR=/etc/systemd/system
BIN_LINK=/usr/local/bin/blankfilter
USER_NAME=blankfilter
# video: camera, media and DMA-heap nodes; gpio: /dev/gpiochip* (the unit's SupplementaryGroups=).
GROUPS_NEEDED=(video gpio)
# Each one is needed; --no-install-recommends keeps picamera2's GUI stack (Qt, OpenGL) off a trap.
APT_PACKAGES=(
  python3-venv       # venv + ensurepip for /opt/blankfilter/venv
  python3-picamera2  # the picamera2 source: libcamera's Python bindings exist only in apt
  python3-opencv     # the opencv source (USB/RTSP cameras), built for apt's numpy 1.x
  python3-gpiozero   # the PIR trigger
  mosquitto-clients  # mosquitto_sub, to watch the status topic (the check printed at the end)
)

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(cd "$SCRIPT_DIR/.." && pwd)
ROOT=""
DRY_RUN=0
UNINSTALL=0
START=1
RUNTIME=tflite-runtime
PYTHON=/usr/bin/python3
SKIPPED=()

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
# Print a command, then run it unless --dry-run: the dry run shows exactly what would happen.
run() {
  printf '    $'
  printf ' %q' "$@"
  printf '\n'
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}
# A step that needs the real system (apt, users, a running systemd): said, remembered, not done.
skip() {
  note "skipped ($1): $2"
  SKIPPED+=("$2")
}
# A path on the target system, under --root when given.
p() { printf '%s%s' "$ROOT" "$1"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --no-start) START=0 ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
    --root=*) ROOT=${1#*=} ;;
    --source) [ $# -ge 2 ] || die "--source needs a directory"; SOURCE=$2; shift ;;
    --source=*) SOURCE=${1#*=} ;;
    --runtime) [ $# -ge 2 ] || die "--runtime needs a value"; RUNTIME=$2; shift ;;
    --runtime=*) RUNTIME=${1#*=} ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift ;;
    --python=*) PYTHON=${1#*=} ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

case "$RUNTIME" in
  tflite-runtime | ai-edge-litert) ;;
  *) die "--runtime must be tflite-runtime or ai-edge-litert, not '$RUNTIME'" ;;
esac
if [ -n "$ROOT" ]; then
  # Absolute, without a trailing slash (it may not exist yet), so $ROOT/etc/... is one clean path.
  ROOT=$(realpath -m -- "$ROOT")
  [ "$ROOT" != / ] || ROOT=""
fi
SOURCE=$(realpath -e -- "$SOURCE" 2>/dev/null) || die "--source $SOURCE: no such directory"
PYTHON=$(command -v -- "$PYTHON" || printf '%s' "$PYTHON")
[ -f "$SOURCE/pyproject.toml" ] || die "$SOURCE is not the blankfilter project (no pyproject.toml)"

SYSTEMD_UP=0
if [ -d /run/systemd/system ]; then SYSTEMD_UP=1; fi
if [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run it as root (sudo $0 ...), or try --dry-run / --root PREFIX"
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "DRY RUN: printing every step; nothing is changed."
fi
if [ -n "$ROOT" ]; then
  echo "Working in the root $ROOT: apt, users, ownership and the running systemd are left alone."
  echo "(The venv refers to its own path under $ROOT: a root made here is for tests, not an image.)"
fi

# ------------------------------------------------------------------------------------------------
uninstall() {
  step "stop and disable $UNIT_NAME"
  if [ ! -e "$(p "$UNIT_DIR/$UNIT_NAME")" ]; then
    note "no $(p "$UNIT_DIR/$UNIT_NAME"): nothing to disable"
  elif [ -n "$ROOT" ] && command -v systemctl >/dev/null; then
    run systemctl --root="$ROOT" disable "$UNIT_NAME"
  elif [ -n "$ROOT" ]; then
    run rm -f "$(p "$UNIT_DIR/multi-user.target.wants/$UNIT_NAME")"
  elif [ "$SYSTEMD_UP" = 1 ]; then
    run systemctl disable --now "$UNIT_NAME"
  else
    run systemctl disable "$UNIT_NAME"
  fi

  step "remove the unit, the venv and $APP_DIR"
  run rm -f "$(p "$UNIT_DIR/$UNIT_NAME")"
  if [ -z "$ROOT" ] && [ "$SYSTEMD_UP" = 1 ]; then run systemctl daemon-reload; fi
  if [ -L "$(p "$BIN_LINK")" ]; then run rm -f "$(p "$BIN_LINK")"; fi
  run rm -rf "$(p "$APP_DIR")"

  step "kept"
  note "$(p "$DATA_DIR") (frames, ledger, references) and $(p "$CONF_DIR") (config, password) are KEPT."
  note "The user $USER_NAME and the apt packages are kept too. To remove them as well:"
  note "  sudo userdel $USER_NAME && sudo rm -rf $DATA_DIR $CONF_DIR"
}

# ------------------------------------------------------------------------------------------------
check_system() {
  step "check the system"
  if [ -z "$ROOT" ]; then
    local arch os
    arch=$(uname -m)
    # shellcheck source=/dev/null
    os=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-?}")
    [ "$arch" = aarch64 ] || note "warning: this is $arch; the installer is made for 64-bit Raspberry Pi OS (aarch64)"
    [ "$os" = bookworm ] || note "warning: this is '$os'; the installer is made for Bookworm"
  fi
  if [ ! -x "$PYTHON" ]; then
    [ "$DRY_RUN" = 1 ] || [ -z "$ROOT" ] || die "--python $PYTHON: not found"
    note "$PYTHON not found yet (python3 comes with the apt step)"
    return
  fi
  note "python: $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
  if [ "$RUNTIME" = tflite-runtime ] &&
    ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] > (3, 11))'; then
    die "tflite-runtime 2.14 has wheels only for Python <= 3.11; use --runtime ai-edge-litert"
  fi
}

install_apt() {
  step "apt packages: ${APT_PACKAGES[*]}"
  if [ -n "$ROOT" ]; then
    skip "--root" "apt-get install --no-install-recommends ${APT_PACKAGES[*]}"
    return
  fi
  command -v apt-get >/dev/null || die "apt-get not found: this installer is for Raspberry Pi OS / Debian"
  run apt-get update
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
}

install_user() {
  step "system user $USER_NAME (groups ${GROUPS_NEEDED[*]})"
  local groups_csv
  groups_csv=$(IFS=,; printf '%s' "${GROUPS_NEEDED[*]}")
  if [ -n "$ROOT" ]; then
    skip "--root" "useradd --system --user-group --groups $groups_csv $USER_NAME"
    return
  fi
  local g
  for g in "${GROUPS_NEEDED[@]}"; do
    # Raspberry Pi OS has both; elsewhere create them, or the unit's SupplementaryGroups= fails.
    getent group "$g" >/dev/null || run groupadd --system "$g"
  done
  if id "$USER_NAME" >/dev/null 2>&1; then
    note "user $USER_NAME exists"
    run usermod --append --groups "$groups_csv" "$USER_NAME"
  else
    run useradd --system --user-group --groups "$groups_csv" --home-dir "$DATA_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "blankfilter camera-trap daemon" "$USER_NAME"
  fi
}

# install -d with owner/group on the real system; in --root the ownership is skipped (no user there).
make_dir() {
  local mode=$1 owner=$2 group=$3 dir=$4
  if [ -n "$ROOT" ]; then
    run install -d -m "$mode" "$(p "$dir")"
    if [ "$owner:$group" != root:root ]; then skip "--root" "chown $owner:$group $dir"; fi
  else
    run install -d -m "$mode" -o "$owner" -g "$group" "$dir"
  fi
}

install_dirs() {
  step "directories"
  make_dir 0755 root root "$APP_DIR"
  # The data: kept/, quarantine/, audit/, blank/ and ledger.db are made by blankfilter itself.
  make_dir 0750 "$USER_NAME" "$USER_NAME" "$DATA_DIR"
  # setgid: files a camera uploader (in group blankfilter) drops here stay readable to the trap.
  make_dir 2770 "$USER_NAME" "$USER_NAME" "$DATA_DIR/inbox"
  make_dir 0750 root "$USER_NAME" "$CONF_DIR"
}

# The project's own dependencies from its pyproject.toml, less the TFLite runtime not chosen:
# the project depends on ai-edge-litert, which tflite-runtime installs must leave out.
requirements() {
  "$PYTHON" - "$SOURCE/pyproject.toml" "$1" <<'PY'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as fh:
    deps = tomllib.load(fh)["project"]["dependencies"]
for dep in deps:
    name = re.split(r"[\s<>=!~;\[(]", dep, maxsplit=1)[0].lower().replace("_", "-")
    if name != sys.argv[2]:
        print(dep)
PY
}

install_venv() {
  local venv_py runtime_pkg drop
  venv_py=$(p "$VENV")/bin/python
  step "venv $VENV (--system-site-packages: apt's picamera2, opencv and numpy 1.x stay visible)"
  # Re-running venv on an existing one is an in-place update: upgrades stay cheap and idempotent.
  run "$PYTHON" -m venv --system-site-packages "$(p "$VENV")"

  if [ "$RUNTIME" = tflite-runtime ]; then
    runtime_pkg=tflite-runtime drop=ai-edge-litert
  else
    runtime_pkg=ai-edge-litert drop=tflite-runtime
  fi
  step "Python packages: $runtime_pkg, numpy<2 (deploy/constraints-pi.txt); no TensorFlow, no torch"
  local -a reqs=()
  if [ -x "$PYTHON" ]; then
    mapfile -t reqs < <(requirements "$drop")
  else
    reqs=("(the dependencies in $SOURCE/pyproject.toml)")
  fi
  # Never the `pi` extra: it would pip-install OpenCV, which on the Pi must come from apt.
  run "$venv_py" -m pip install --upgrade --constraint "$SOURCE/deploy/constraints-pi.txt" \
    "${reqs[@]}" "$runtime_pkg"

  step "blankfilter from $SOURCE"
  # Built from a copy: pip builds in the source tree, which would leave root-owned build/ and
  # *.egg-info in the user's checkout. --no-deps: the dependencies were installed just above, so
  # the runtime not chosen (the project's ai-edge-litert dependency) stays out.
  local build=/tmp/blankfilter-build.XXXXXX
  if [ "$DRY_RUN" = 0 ]; then
    build=$(mktemp -d /tmp/blankfilter-build.XXXXXX)
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf '$build'" EXIT
  fi
  run tar -C "$SOURCE" -cf "$build/src.tar" --exclude=./.git --exclude='./.venv*' --exclude=./models \
    --exclude=./tests --exclude=./bench --exclude=./demo --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='./.*_cache' .
  run tar -C "$build" -xf "$build/src.tar"
  run "$venv_py" -m pip install --upgrade --force-reinstall --no-deps "$build"
  if [ "$DRY_RUN" = 0 ]; then
    # Fail here, not at the first frame: the runtime imports and numpy is the 1.x the Pi stack needs.
    local module=tflite_runtime.interpreter
    if [ "$RUNTIME" = ai-edge-litert ]; then module=ai_edge_litert.interpreter; fi
    "$venv_py" -c "import $module, numpy
assert int(numpy.__version__.split('.')[0]) < 2, 'numpy ' + numpy.__version__ + ' in the venv: apt picamera2/opencv need 1.x'
print('    runtime: $module, numpy', numpy.__version__)"
    note "installed: $("$(p "$VENV")/bin/blankfilter" --version)"
  fi
}

install_models() {
  step "models -> $MODELS (replaced on every run; BLANKFILTER_MODELS_DIR in the unit points here)"
  local -a found=()
  local f
  for f in "$SOURCE"/models/*.tflite "$SOURCE"/models/context/*.tflite; do
    if [ -e "$f" ]; then found+=("$f"); fi
  done
  if [ ${#found[@]} = 0 ]; then
    note "warning: no *.tflite in $SOURCE/models: set model.path in $CONF"
    return
  fi
  # Replaced whole: a model renamed upstream must not linger ("several models in ..." at start).
  run rm -rf "$(p "$MODELS")"
  run install -d -m 0755 "$(p "$MODELS")" "$(p "$MODELS/context")"
  local -A cards=()
  for f in "${found[@]}"; do
    local card
    run install -m 0644 "$f" "$(p "$MODELS/${f#"$SOURCE/models/"}")"
    # The card: x.json for x.tflite and for its Edge TPU twin x_edgetpu.tflite.
    card=${f%.tflite}
    card=${card%_edgetpu}.json
    if [ -f "$card" ] && [ -z "${cards[$card]:-}" ]; then
      cards[$card]=1
      run install -m 0644 "$card" "$(p "$MODELS/${card#"$SOURCE/models/"}")"
    fi
  done
}

install_config() {
  step "config $CONF (installed only if absent: an existing config is never overwritten)"
  run install -m 0644 "$SOURCE/deploy/config.example.toml" "$(p "$APP_DIR/config.example.toml")"
  if [ -e "$(p "$CONF")" ]; then
    note "$(p "$CONF") exists: kept as it is (never overwritten)."
    note "New keys of this version: compare it with $APP_DIR/config.example.toml."
  elif [ -n "$ROOT" ]; then
    run install -m 0640 "$SOURCE/deploy/config.example.toml" "$(p "$CONF")"
    skip "--root" "chown root:$USER_NAME $CONF"
  else
    run install -m 0640 -o root -g "$USER_NAME" "$SOURCE/deploy/config.example.toml" "$CONF"
  fi
  if [ ! -e "$(p "$CONF_DIR/mqtt_password")" ]; then
    note "no $CONF_DIR/mqtt_password: fine without a broker or for an anonymous one"
  fi
  if [ "$DRY_RUN" = 0 ]; then
    # A bad value would make the service exit 2 at every start; say it now, with the key named.
    "$(p "$VENV")/bin/blankfilter" config --config "$(p "$CONF")" ||
      die "$(p "$CONF") is refused (above): fix it, then run the installer again"
  fi
}

install_unit() {
  step "unit $UNIT_DIR/$UNIT_NAME"
  run install -d -m 0755 "$(p "$UNIT_DIR")" "$(p "$(dirname "$BIN_LINK")")"
  run install -m 0644 "$SOURCE/systemd/$UNIT_NAME" "$(p "$UNIT_DIR/$UNIT_NAME")"
  # The command for people (`sudo -u blankfilter blankfilter stats`); the target is the path on the
  # target system, so under --root the link resolves inside the root, not on this machine.
  run ln -sfn "$VENV/bin/blankfilter" "$(p "$BIN_LINK")"

  step "enable $UNIT_NAME"
  if [ -n "$ROOT" ]; then
    if command -v systemctl >/dev/null; then
      # Works without a running systemd: it only makes the multi-user.target.wants/ link.
      run systemctl --root="$ROOT" enable "$UNIT_NAME"
    else
      run install -d -m 0755 "$(p "$UNIT_DIR/multi-user.target.wants")"
      run ln -sfn "$UNIT_DIR/$UNIT_NAME" "$(p "$UNIT_DIR/multi-user.target.wants/$UNIT_NAME")"
    fi
    skip "--root" "systemctl daemon-reload && systemctl restart $UNIT_NAME"
    return
  fi
  if [ "$SYSTEMD_UP" = 0 ]; then
    # A chroot or an image being built: enable (links only) and let the first boot start it.
    run systemctl enable "$UNIT_NAME"
    skip "systemd is not running" "systemctl restart $UNIT_NAME"
    return
  fi
  run systemctl daemon-reload
  run systemctl enable "$UNIT_NAME"
  if command -v systemd-analyze >/dev/null && [ "$DRY_RUN" = 0 ]; then
    systemd-analyze verify "$UNIT_DIR/$UNIT_NAME" || note "warning: systemd-analyze verify complains (above)"
  fi
  if [ "$START" = 1 ]; then
    # restart, not start: an upgrade must replace the running daemon.
    run systemctl restart "$UNIT_NAME"
  else
    skip "--no-start" "systemctl restart $UNIT_NAME"
  fi
}

print_checks() {
  step "done"
  if [ ${#SKIPPED[@]} -gt 0 ]; then
    note "Not done here (do it on the Pi, or let the installer do it there):"
    local s
    for s in "${SKIPPED[@]}"; do note "  - $s"; done
  fi
  cat <<EOF

Check it works:
  journalctl -u blankfilter -f                      # start-up line: trap, model, runtime; errors name file and key
  systemctl status blankfilter                      # active (running); watchdog and restarts
  sudo -u blankfilter blankfilter stats             # frames per day, blank ratio, errors (run it as $USER_NAME:
                                                    # as root it could leave root-owned ledger files)
The retained heartbeat, through the broker as deploy/mosquitto/ ships it (TLS on 8883, a user and
password; a trap's own user may not read it back, so log in as the dashboard user). BROKER is
mqtt.host, the CA file mqtt.ca_file; the password is asked for (it stays out of the shell history):
  read -rs -p 'MQTT password of the dashboard user: ' PW; echo
  mosquitto_sub -h BROKER -p 8883 --cafile $CONF_DIR/broker-ca.crt -u dashboard -P "\$PW" -t 'blankfilter/+/status' -v -C 1 -W 10
Config: $CONF (then: sudo systemctl restart blankfilter). Frames go into $DATA_DIR/inbox.
MQTT password: sudo install -m 0600 /dev/stdin $CONF_DIR/mqtt_password   (type it, then Ctrl-D)
Coral Edge TPU: see deploy/CORAL.md.
EOF
}

if [ "$UNINSTALL" = 1 ]; then
  uninstall
  exit 0
fi
check_system
install_apt
install_user
install_dirs
install_venv
install_models
install_config
install_unit
print_checks
