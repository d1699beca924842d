# Shared by scripts/demo and scripts/test (sourced, never run): which Python, which torch, which
# system packages. Each function only looks and prints; nothing here installs unless its name says so.
# tests/test_demo.py calls these functions directly, so what they decide is tested without installing.

TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
PYPI_INDEX=https://pypi.org/simple

# python_version PY: "3.11" when PY runs and is CPython 3.x, else nothing (a pyenv shim of a version
# that is not selected exits non-zero: it does not count).
python_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

# python_executable PY: the interpreter itself behind PY (a pyenv shim, a symlink).
python_executable() {
  "$1" -c 'import sys; print(sys.executable)'
}

# find_python [exact]: the interpreter to build a venv with, on stdout (why, on stderr).
# Order: $PYTHON if set (then only it); python3.11 on PATH; pyenv's newest 3.11.x; python3 if it is >= 3.11.
# `exact`: only 3.11 (tflite-runtime 2.14, the Raspberry Pi OS stack, has wheels for 3.11 only).
# Nothing suitable: a line saying what to install, and status 1.
find_python() {
  local exact=${1:-} candidate version root
  local candidates=()
  if [ -n "${PYTHON:-}" ]; then
    candidates=("$PYTHON")  # asked for: that one or none
  else
    command -v python3.11 >/dev/null 2>&1 && candidates+=("$(command -v python3.11)")
    root=${PYENV_ROOT:-$HOME/.pyenv}
    for candidate in $(ls -d "$root"/versions/3.11.*/bin/python3.11 2>/dev/null | sort -V -r); do
      candidates+=("$candidate")
    done
    command -v python3 >/dev/null 2>&1 && candidates+=("$(command -v python3)")
  fi
  for candidate in "${candidates[@]}"; do
    version=$(python_version "$candidate") || continue
    if python_fits "$version" "$exact"; then
      candidate=$(python_executable "$candidate")
      echo "== Python $version: $candidate" >&2
      echo "$candidate"
      return 0
    fi
  done
  if [ -n "${PYTHON:-}" ]; then
    echo "PYTHON=$PYTHON is not a Python $([ -n "$exact" ] || echo '>= ')3.11 that runs; unset PYTHON to let the scripts look for one" >&2
  elif [ -n "$exact" ]; then
    echo "no Python 3.11 found (python3.11 on PATH, pyenv's 3.11.x): apt-get install python3.11 (Debian 12), or pyenv install 3.11" >&2
  else
    echo "no Python >= 3.11 found (python3.11, pyenv's 3.11.x, python3): apt-get install python3.11 python3.11-venv, or pyenv install 3.11" >&2
  fi
  return 1
}

# pip_find_links PY: the folders pip looks in for local wheels (pip's config and PIP_FIND_LINKS).
pip_find_links() {
  local links
  links=$("$1" -m pip config list 2>/dev/null | sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p")
  for dir in ${PIP_FIND_LINKS:-} $links; do
    dir=${dir#file://}
    [ -d "$dir" ] && echo "$dir"
  done | awk '!seen[$0]++'
}

# local_torch_wheel PY: the folder holding a CPU wheel of torch $TORCH_VERSION for PY's Python and
# this machine, if pip's find-links have one.
local_torch_wheel() {
  local tag dir
  tag=cp$("$1" -c 'import sys; print("%d%d" % sys.version_info[:2])')
  for dir in $(pip_find_links "$1"); do
    if ls "$dir"/torch-"$TORCH_VERSION"+cpu-"$tag"-"$tag"-*_"$(uname -m)".whl >/dev/null 2>&1; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

# torch_install_args PY: pip's arguments for torch's CPU build. The plain index's torch==X is the
# CUDA build with GBs of NVIDIA libraries; the CPU build is `X+cpu`, from a local wheel when pip's
# find-links have one, else from PyTorch's CPU index (PyPI beside it for torch's own dependencies).
torch_install_args() {
  local dir
  if dir=$(local_torch_wheel "$1"); then
    echo "--find-links $dir torch==$TORCH_VERSION+cpu"
  else
    echo "--index-url $TORCH_CPU_INDEX --extra-index-url $PYPI_INDEX torch==$TORCH_VERSION+cpu"
  fi
}

# missing_apt_packages [arm64]: the Debian packages the tests need that are not installed; `arm64`
# adds the emulated Raspberry Pi OS root's (tests/test_arm64.py, which needs root anyway).
missing_apt_packages() {
  local missing=()
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  # The monitor's browser test (tests/test_monitor_e2e.py) drives headless Chromium through Selenium.
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  # mosquitto_sub: the installer's closing hint, run against the shipped broker (tests/test_mosquitto_acl.py);
  # Node.js and npm: tests/test_node_red.py npm-installs Node-RED 4.1 into ~/.cache/blankfilter itself.
  command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ "${1:-}" = arm64 ]; then
    [ -e /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
    [ -e /usr/sbin/update-binfmts ] || missing+=(binfmt-support)
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    command -v arch-test >/dev/null || missing+=(arch-test)
    command -v zstd >/dev/null || missing+=(zstd)
  fi
  echo "${missing[*]}"
}

# install_apt_packages [arm64]: install what is missing when root with apt; otherwise stop with the
# one command that installs it.
install_apt_packages() {
  # shellcheck disable=SC2046  # one word per package
  apt_install $(missing_apt_packages "${1:-}")
}

# apt_install PACKAGE...: as root with apt, install them; otherwise say the one line that does, status 1.
apt_install() {
  [ $# -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages: $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    return 0
  fi
  echo "missing system packages; install them with: sudo apt-get install -y $*" >&2
  return 1
}

# python_fits VERSION [exact]: VERSION (like 3.12) is >= 3.11, or with `exact` is 3.11.
python_fits() {
  [ "$1" = 3.11 ] || { [ -z "${2:-}" ] && [ "${1%%.*}" = 3 ] && [ "${1#*.}" -ge 11 ]; }
}

# make_venv DIR PY [exact]: a venv in DIR made with PY, unless DIR already holds one on a fitting
# Python; one on another Python stops the script with the command that removes it.
make_venv() {
  local version
  if [ -x "$1/bin/python" ]; then
    version=$(python_version "$1/bin/python") || version="a Python that no longer runs"
    python_fits "$version" "${3:-}" && return 0
    echo "$1 is on $version, which does not fit: remove it (rm -rf $1) and run again" >&2
    return 1
  fi
  if ! "$2" -c 'import ensurepip' 2>/dev/null; then # Debian's Python makes venvs only with its -venv package
    apt_install "python$(python_version "$2")-venv" || return 1
  fi
  echo "== creating $1 with $2"
  "$2" -m venv "$1"
}
