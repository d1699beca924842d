#!/usr/bin/env bash
# Prove the Pi stack on arm64: a Debian 12 (Bookworm) arm64 root run under QEMU user emulation,
# blankfilter installed into it by deploy/install.sh exactly as on a Pi, then the trap run there.
# tests/test_arm64.py drives it and checks the results; docs/arm64.md explains it.
#
#   sudo deploy/test-arm64.sh --check                 # can this machine do it? rc 0, or rc 3 and why
#   sudo deploy/test-arm64.sh --build-only            # build (or find) the cached arm64 root
#   sudo deploy/test-arm64.sh --out DIR [--inbox DIR] [--mqtt-port PORT] [--trap-id ID] [--cutoff P]
#
# With --out: the cached root is unpacked into a fresh working root, deploy/install.sh runs inside
# it (chroot, clean environment), then as the `blankfilter` user with the unit's environment:
# `blankfilter classify --json` on tests/fixtures/frames (or --frames DIR) and `blankfilter run
# --once` (the unit's ExecStart) on a copy of --inbox, publishing to 127.0.0.1:--mqtt-port (the chroot
# shares this machine's loopback), at the model card's cutoff or --cutoff P. DIR receives: install.log, classify.tsv (arrival time<TAB>JSON
# line), classify.err, run.log, store/ (/var/lib/blankfilter after the run, ledger included),
# versions.json and timings.json. The working root is unmounted and removed afterwards, also on
# failure (--keep: unmounted and kept, its path printed).
#
# Environment: BLANKFILTER_ARM64_CACHE (default /var/cache/blankfilter-arm64: the root as a
# .tar.zst, rebuilt when missing or when its recipe changes, and pip's cache),
# BLANKFILTER_ARM64_WORK (default /var/tmp: where working roots go), BLANKFILTER_ARM64_MIRROR
# (default: this machine's Debian mirror), BLANKFILTER_ARM64_FAIL_AT=install (a test hook: fail
# once the working root is mounted, to prove the clean-up).
#
# Exit status: 0 done; 3 this machine cannot run arm64 code (not root, no binfmt_misc, arch-test
# fails), with the reason on stderr; anything else: a step failed (its output says which).
set -euo pipefail

SUITE=bookworm
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(cd "$SCRIPT_DIR/.." && pwd)
CACHE=${BLANKFILTER_ARM64_CACHE:-/var/cache/blankfilter-arm64}
WORK_BASE=${BLANKFILTER_ARM64_WORK:-/var/tmp}
FAIL_AT=${BLANKFILTER_ARM64_FAIL_AT:-}
HOST_TOOLS=(qemu-user-static binfmt-support debootstrap arch-test zstd)
# Bumped when the way the root is built changes (the recipe hash then changes: a rebuild).
RECIPE_VERSION=1
# Packages Raspberry Pi OS has and plain Debian does not: empty stand-ins from a local apt source,
# so install.sh's apt line runs unchanged (the picamera2 source itself is tested with fakes).
STAND_INS=(python3-picamera2)
# Besides install.sh's own apt packages: what a Raspberry Pi OS image already has.
IMAGE_PACKAGES=(python3 ca-certificates systemd)
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
IN_ROOT_SRC=/usr/src/blankfilter
IN_ROOT_FRAMES=/srv/blankfilter-test/frames

MODE=run
OUT=""
INBOX=""
FRAMES="$SOURCE/tests/fixtures/frames"
MQTT_PORT=""
TRAP_ID=arm64-qemu
CUTOFF=""
KEEP=0
REBUILD=0

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf '[test-arm64 %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'test-arm64: error: %s\n' "$*" >&2; exit 1; }
# This machine cannot run it: a distinct status, so a test can say so plainly (and not as a bug).
cannot() { printf 'test-arm64: CANNOT RUN ARM64 HERE: %s\n' "$*" >&2; exit 3; }

while [ $# -gt 0 ]; do
  case "$1" in
    --check) MODE=check ;;
    --build-only) MODE=build ;;
    --rebuild) REBUILD=1 ;;
    --keep) KEEP=1 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift ;;
    --inbox) [ $# -ge 2 ] || die "--inbox needs a directory"; INBOX=$2; shift ;;
    --frames) [ $# -ge 2 ] || die "--frames needs a directory"; FRAMES=$2; shift ;;
    --mqtt-port) [ $# -ge 2 ] || die "--mqtt-port needs a number"; MQTT_PORT=$2; shift ;;
    --trap-id) [ $# -ge 2 ] || die "--trap-id needs a value"; TRAP_ID=$2; shift ;;
    --cutoff) [ $# -ge 2 ] || die "--cutoff needs a value"; CUTOFF=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
if [ "$MODE" = run ] && [ -z "$OUT" ]; then die "--out DIR is needed (or --check / --build-only)"; fi

T_START=$EPOCHREALTIME
declare -A TIMES=()
# elapsed seconds since $1 (an $EPOCHREALTIME), 1 decimal
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# -- the machine: root, tools, binfmt_misc, arch-test --------------------------------------------
preflight() {
  [ "$(id -u)" = 0 ] || cannot "not root: chroot, mounts and binfmt_misc need root (run it with sudo)"
  local missing=() tool
  for tool in qemu-aarch64-static update-binfmts debootstrap arch-test zstd; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing the host tools (${missing[*]} missing): ${HOST_TOOLS[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${HOST_TOOLS[@]}" >/dev/null; } || cannot "apt-get install ${HOST_TOOLS[*]} failed"
  fi
  if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    say "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
      cannot "cannot mount binfmt_misc (a container without it? the kernel must offer binfmt_misc)"
  fi
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true # already enabled: not an error
  local verdict
  verdict=$(arch-test arm64 2>&1) || true
  [ "$verdict" = "arm64: ok" ] ||
    cannot "arch-test arm64 says '$verdict': no working qemu-aarch64 binfmt handler"
  local qemu
  qemu=$(qemu-aarch64-static --version | head -n1)
  say "arm64 emulation ok ($qemu)"
}

# -- mounts: /proc, /sys, /dev into a root; always undone -----------------------------------------
# Every mount point at or under $1, deepest first (from mountinfo: the kernel's own list).
mounts_under() {
  awk -v r="$1" '{ t = $5; gsub(/\\040/, " ", t); if (t == r || index(t, r "/") == 1) print t }' \
    /proc/self/mountinfo | sort -r
}

mount_root() {
  local root=$1
  mount -t proc proc "$root/proc"
  # rslave: unmounting these copies can never propagate back and unmount the host's /dev or /sys.
  mount --rbind /sys "$root/sys"
  mount --make-rslave "$root/sys"
  mount --rbind /dev "$root/dev"
  mount --make-rslave "$root/dev"
}

umount_root() {
  local root=$1 m
  [ -n "$root" ] && [ -d "$root" ] || return 0
  for m in "$root/root/.cache/pip" "$root/dev" "$root/sys" "$root/proc"; do
    if mountpoint -q "$m"; then umount -R "$m" 2>/dev/null || umount -R -l "$m"; fi
  done
  local left
  left=$(mounts_under "$root")
  if [ -n "$left" ]; then
    say "still mounted under $root after umount -R:"$'\n'"$left"
    return 1
  fi
}

# rm -rf a root only when nothing is mounted under it (never with /dev bound), one file system only.
remove_root() {
  local root=$1 left
  [ -n "$root" ] && [ -e "$root" ] || return 0
  left=$(mounts_under "$root")
  if [ -n "$left" ]; then
    say "NOT removing $root: still mounted:"$'\n'"$left"
    return 1
  fi
  rm -rf --one-file-system -- "$root"
}

# The root currently mounted (cleaned up on any exit) and the working dir to remove.
ACTIVE_ROOT=""
REMOVE_AFTER=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$ACTIVE_ROOT" ]; then
    umount_root "$ACTIVE_ROOT" || [ "$rc" != 0 ] || rc=1
  fi
  if [ -n "$REMOVE_AFTER" ]; then
    if [ "$KEEP" = 1 ]; then
      say "kept (unmounted): $REMOVE_AFTER"
    else
      remove_root "$REMOVE_AFTER" || [ "$rc" != 0 ] || rc=1
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
# A failing command says where it failed: set -e alone would exit without a word.
set -E
trap 'say "failed (rc $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'say "interrupted (SIGINT): cleaning up"; exit 130' INT
trap 'say "terminated (SIGTERM): cleaning up"; exit 143' TERM

# A command inside a root: chroot, clean environment (the host exports PIP_* and the like).
in_root() {
  local root=$1
  shift
  chroot "$root" /usr/bin/env -i PATH="$ROOT_PATH" HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# -- the cached root --------------------------------------------------------------------------------
host_mirror() {
  local uri
  uri=$(grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '{ print $2 }' | grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' \
      /etc/apt/sources.list || true)
  fi
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

# install.sh's own apt packages (its APT_PACKAGES array): the cache follows the installer.
installer_apt_packages() {
  sed -n '/^APT_PACKAGES=(/,/^)/p' "$SOURCE/deploy/install.sh" | sed '1d;$d' | awk '{ print $1 }'
}

MIRROR=${BLANKFILTER_ARM64_MIRROR:-$(host_mirror)}
MIRROR=${MIRROR%/}
mapfile -t INSTALLER_PACKAGES < <(installer_apt_packages)
[ ${#INSTALLER_PACKAGES[@]} -gt 0 ] || die "no APT_PACKAGES found in deploy/install.sh"
RECIPE="recipe $RECIPE_VERSION
suite $SUITE arm64 minbase
mirror $MIRROR
image ${IMAGE_PACKAGES[*]}
installer ${INSTALLER_PACKAGES[*]}
stand-ins ${STAND_INS[*]}"
KEY=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
TARBALL=$CACHE/bookworm-arm64-$KEY.tar.zst

sources_list() {
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE"
  if [[ $MIRROR == */debian ]]; then printf 'deb %s-security %s-security main\n' "$MIRROR" "$SUITE"; fi
  printf 'deb [trusted=yes] file:/var/local/blankfilter-stand-ins ./\n'
}

# Empty packages standing in for Raspberry Pi OS-only ones (see STAND_INS), as a local apt source.
make_stand_ins() {
  local repo=$1 tmp name
  install -d "$repo"
  tmp=$(mktemp -d)
  for name in "${STAND_INS[@]}"; do
    install -d "$tmp/$name/DEBIAN"
    cat >"$tmp/$name/DEBIAN/control" <<EOF
Package: $name
Version: 0~blankfilter.stand.in
Architecture: all
Maintainer: blankfilter tests <tests@example.invalid>
Description: empty stand-in made by blankfilter's deploy/test-arm64.sh
 $name exists only in the Raspberry Pi OS archive. This empty package lets deploy/install.sh's
 apt line run unchanged in a plain Debian root; it installs no files.
EOF
    dpkg-deb --root-owner-group --build "$tmp/$name" "$repo/${name}_0~blankfilter.stand.in_all.deb" >/dev/null
  done
  (cd "$repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages)
  rm -rf "$tmp"
}

build_root() {
  local build=$1 t
  t=$EPOCHREALTIME
  say "debootstrap --arch=arm64 --variant=minbase $SUITE from $MIRROR (about 90 s)"
  debootstrap --arch=arm64 --variant=minbase "$SUITE" "$build" "$MIRROR" >"$CACHE/build.log" 2>&1 ||
    { tail -n 30 "$CACHE/build.log" >&2; die "debootstrap failed (whole log: $CACHE/build.log)"; }
  TIMES[build_debootstrap_s]=$(since "$t")
  sources_list >"$build/etc/apt/sources.list"
  make_stand_ins "$build/var/local/blankfilter-stand-ins"
  # Nothing may start services inside a chroot being built.
  printf '#!/bin/sh\nexit 101\n' >"$build/usr/sbin/policy-rc.d"
  chmod 0755 "$build/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$build/etc/resolv.conf"
  ACTIVE_ROOT=$build
  mount_root "$build"
  t=$EPOCHREALTIME
  say "apt-get install in the arm64 root: ${IMAGE_PACKAGES[*]} ${INSTALLER_PACKAGES[*]} (about 5 min)"
  {
    in_root "$build" apt-get update &&
      in_root "$build" apt-get install -y --no-install-recommends "${IMAGE_PACKAGES[@]}" "${INSTALLER_PACKAGES[@]}" &&
      in_root "$build" apt-get clean
  } >>"$CACHE/build.log" 2>&1 ||
    { tail -n 30 "$CACHE/build.log" >&2; die "apt-get in the arm64 root failed (whole log: $CACHE/build.log)"; }
  TIMES[build_apt_s]=$(since "$t")
  umount_root "$build" || die "cannot unmount $build"
  ACTIVE_ROOT=""
  rm -f "$build/usr/sbin/policy-rc.d"
  # A running systemd is detected by /run/systemd/system: a chroot must not look booted.
  find "$build/run" -mindepth 1 -delete
}

ensure_root_cache() {
  install -d -m 0755 "$CACHE" "$CACHE/pip"
  exec 9>"$CACHE/.lock"
  flock 9 # one build at a time; a second run waits for it and then reuses it
  if [ -f "$TARBALL" ] && [ "$REBUILD" = 0 ]; then
    say "cached arm64 root: $TARBALL"
    TIMES[cache]=hit
    flock -u 9
    return
  fi
  local t build
  t=$EPOCHREALTIME
  TIMES[cache]=built
  say "building the arm64 root (cold cache: about 7 min), recipe $KEY"
  build=$(mktemp -d "$CACHE/build.XXXXXX")
  REMOVE_AFTER=$build
  build_root "$build"
  chmod 0755 "$build" # mktemp made it 0700: the root's / must let the blankfilter user in
  say "packing $TARBALL"
  tar -C "$build" --numeric-owner --xattrs --zstd -cf "$TARBALL.part" .
  mv -f "$TARBALL.part" "$TARBALL"
  printf '%s\n' "$RECIPE" >"${TARBALL%.tar.zst}.recipe"
  # Older recipes' roots are stale now.
  find "$CACHE" -maxdepth 1 -name 'bookworm-arm64-*.tar.zst' ! -name "${TARBALL##*/}" -delete
  find "$CACHE" -maxdepth 1 -name 'bookworm-arm64-*.recipe' ! -name "${TARBALL##*/}" ! \
    -name "$(basename "${TARBALL%.tar.zst}.recipe")" -delete
  remove_root "$build" || die "cannot remove $build"
  REMOVE_AFTER=""
  TIMES[build_total_s]=$(since "$t")
  flock -u 9
}

# -- a run ----------------------------------------------------------------------------------------
# As the trap runs: the blankfilter user and group, its groups, the unit's Environment= lines.
as_trap() {
  local root=$1
  shift
  local -a env_lines=()
  mapfile -t env_lines < <(sed -n 's/^Environment=//p' "$root/etc/systemd/system/blankfilter.service")
  chroot "$root" /usr/bin/setpriv --reuid=blankfilter --regid=blankfilter --init-groups \
    /usr/bin/env -i PATH="$ROOT_PATH" HOME=/var/lib/blankfilter LANG=C.UTF-8 "${env_lines[@]}" "$@"
}

copy_source() {
  local root=$1
  install -d "$root$IN_ROOT_SRC"
  # As install.sh builds it, but with models/ (it installs them) and without the training build.
  tar -C "$SOURCE" -cf - --exclude=./.git --exclude='./.venv*' --exclude=./models/build --exclude=./tests \
    --exclude=./bench --exclude=./demo --exclude=./build --exclude=./dist --exclude=./test-output \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='./.*_cache' . | tar -C "$root$IN_ROOT_SRC" -xf -
}

host_ca_into_root() {
  # pip goes through this machine's egress: the root trusts what the host trusts locally.
  local root=$1 crt changed=0
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    if ! cmp -s "$crt" "$root$crt"; then
      install -D -m 0644 "$crt" "$root$crt"
      changed=1
    fi
  done
  if [ "$changed" = 1 ]; then in_root "$root" update-ca-certificates >/dev/null 2>&1; fi
}

run_in_root() {
  local work root t
  install -d "$OUT"
  OUT=$(realpath "$OUT")
  install -d "$WORK_BASE"
  work=$(mktemp -d "$WORK_BASE/blankfilter-arm64.XXXXXX")
  REMOVE_AFTER=$work
  root=$work/root
  say "working root: $root"
  printf '%s\n' "$root" >"$OUT/root-path"

  t=$EPOCHREALTIME
  install -d -m 0755 "$root"
  tar -C "$root" --numeric-owner --xattrs --zstd -xf "$TARBALL"
  chmod 0755 "$root" # the root's / as on a Pi (a mktemp'd build dir was 0700)
  TIMES[unpack_s]=$(since "$t")
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  ACTIVE_ROOT=$root
  mount_root "$root"
  install -d "$root/root/.cache/pip"
  mount --bind "$CACHE/pip" "$root/root/.cache/pip"
  if [ "$FAIL_AT" = install ]; then die "BLANKFILTER_ARM64_FAIL_AT=install: failing on purpose, mounted"; fi

  t=$EPOCHREALTIME
  host_ca_into_root "$root"
  copy_source "$root"
  say "deploy/install.sh --no-start inside the arm64 root (as on the Pi: sudo deploy/install.sh)"
  if ! in_root "$root" bash -c "cd $IN_ROOT_SRC && deploy/install.sh --no-start" >"$OUT/install.log" 2>&1; then
    tail -n 40 "$OUT/install.log" >&2
    die "deploy/install.sh failed in the arm64 root (whole log: $OUT/install.log)"
  fi
  TIMES[install_s]=$(since "$t")
  umount "$root/root/.cache/pip"

  as_trap "$root" /opt/blankfilter/venv/bin/python - >"$OUT/versions.json" <<'PY'
import json, platform, sys
import numpy, tflite_runtime
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "numpy": numpy.__version__, "tflite_runtime": tflite_runtime.__version__,
                  "numpy_file": numpy.__file__, "executable": sys.executable}))
PY

  # classify: each JSON line stamped as it arrives (classify flushes per frame): the gaps between
  # lines are the emulated per-frame time, start-up and model loading excluded.
  install -d "$root$IN_ROOT_FRAMES"
  cp -r "$FRAMES"/. "$root$IN_ROOT_FRAMES/"
  say "blankfilter classify --json (arm64, emulated)"
  t=$EPOCHREALTIME
  printf '%s\tSTART\n' "$t" >"$OUT/classify.tsv"
  as_trap "$root" /usr/local/bin/blankfilter classify --json "$IN_ROOT_FRAMES" 2>"$OUT/classify.err" |
    while IFS= read -r line; do printf '%s\t%s\n' "$EPOCHREALTIME" "$line"; done >>"$OUT/classify.tsv" ||
    { cat "$OUT/classify.err" >&2; die "blankfilter classify failed in the arm64 root"; }
  TIMES[classify_s]=$(since "$t")

  if [ -n "$INBOX" ]; then
    # Frames as an uploader in group blankfilter leaves them: capture times (mtimes) kept.
    cp -a "$INBOX"/. "$root/var/lib/blankfilter/inbox/"
    in_root "$root" chown -R blankfilter:blankfilter /var/lib/blankfilter/inbox
  fi
  # The installed config, with what a test needs: no settle wait, no disk floor, no random audit sample.
  local -a exec_start=() sets=(--set "trap.id=$TRAP_ID" --set source.settle_s=0 --set store.min_free_mb=0
    --set store.audit_rate=0)
  read -ra exec_start <<<"$(sed -n 's/^ExecStart=//p' "$root/etc/systemd/system/blankfilter.service")"
  if [ -n "$CUTOFF" ]; then
    sets+=(--set "model.cutoff=$CUTOFF")
  fi
  if [ -n "$MQTT_PORT" ]; then
    sets+=(--set mqtt.host=127.0.0.1 --set "mqtt.port=$MQTT_PORT" --set mqtt.drain_s=120)
  fi
  say "${exec_start[*]} --once ${sets[*]} (as blankfilter)"
  t=$EPOCHREALTIME
  local rc=0
  as_trap "$root" "${exec_start[@]}" --once "${sets[@]}" >"$OUT/run.log" 2>&1 || rc=$?
  TIMES[run_once_s]=$(since "$t")
  TIMES[run_once_rc]=$rc
  rm -rf "$OUT/store"
  cp -a "$root/var/lib/blankfilter" "$OUT/store"
  [ "$rc" = 0 ] || { tail -n 40 "$OUT/run.log" >&2; die "blankfilter run --once exited $rc in the arm64 root"; }
}

write_times() {
  [ -n "$OUT" ] && [ -d "$OUT" ] || return 0
  local k
  {
    printf '{"qemu": "%s", "cache_dir": "%s", "tarball": "%s"' \
      "$(qemu-aarch64-static --version | head -n1)" "$CACHE" "$TARBALL"
    for k in "${!TIMES[@]}"; do
      if [[ ${TIMES[$k]} =~ ^[0-9.]+$ ]]; then
        printf ', "%s": %s' "$k" "${TIMES[$k]}"
      else
        printf ', "%s": "%s"' "$k" "${TIMES[$k]}"
      fi
    done
    printf ', "total_s": %s}\n' "$(since "$T_START")"
  } >"$OUT/timings.json"
}

preflight
[ "$MODE" = check ] && exit 0
ensure_root_cache
[ "$MODE" = build ] && exit 0
run_in_root
write_times
say "done in $(since "$T_START") s: results in $OUT"
