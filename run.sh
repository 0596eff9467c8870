#!/usr/bin/env bash
# kilolearn quick start. Each command installs what it needs first (apt + a
# Python venv in .venv), so both work on a fresh Debian 12 / Ubuntu 24.04:
#
#   ./run.sh main   a continual-learning session on the emulated Cortex-M4 (QEMU
#                   mps2-an386): split digits, 5 tasks, int8, latent replay vs
#                   naive fine-tuning vs joint training, beside the numpy twin
#   ./run.sh test   run the whole test suite (lint, host + ASan/UBSan, QEMU
#                   M3/M4/M7/M33/M55)
#
# Extra arguments go to `kilolearn session` (main) or pytest (test).
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm cmake ninja-build
              gcc libc6-dev python3 python3-venv python3-pip dataset-fashion-mnist clang)

apt_install_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "run.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_system() {
  apt_install_missing "${APT_PACKAGES[@]}"
  # libFuzzer and the sanitizer runtimes of that clang (14 on Debian 12, 18 on Ubuntu 24.04)
  local v
  v=$(clang --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n 1)
  apt_install_missing "libfuzzer-$v-dev" "libclang-rt-$v-dev"
}

install_python() {
  local py=${PYTHON:-python3}
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "run.sh: kilolearn needs Python >= 3.11 ($py is $("$py" --version 2>&1))" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
  fi
  if ! .venv/bin/python -c 'import kilolearn, pytest, ruff' 2>/dev/null \
     || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test,plot]'
    touch .venv/.installed
  fi
}

cmd=${1:-main}
shift || true
case "$cmd" in
  main)
    install_system
    install_python
    exec .venv/bin/kilolearn session --plot session.png --json session.json "$@"
    ;;
  test)
    install_system
    install_python
    .venv/bin/ruff check scripts tests
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh main|test [args]" >&2
    exit 2
    ;;
esac
