#!/usr/bin/env bash
# Installs what a fresh machine lacks, then configures and builds SHC into build/.
# Idempotent: with everything present it only runs the (incremental) build.
#
#   scripts/setup.sh           CPU lane  -> build/bin/shc
#   scripts/setup.sh --cuda    also the CUDA/NCCL lane -> build-cuda/bin/shc (compile and link)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

want_cuda=0
for arg in "$@"; do
  case "$arg" in
    --cuda) want_cuda=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*"; }

# --- Debian packages (SPEC §2) -------------------------------------------------------------
apt_packages=(
  build-essential cmake ninja-build ccache
  python3 python3-venv
  libopenmpi-dev openmpi-bin
  libhdf5-dev
  libboost-program-options-dev libboost-log-dev
  libsentencepiece-dev sentencepiece
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libxxhash-dev
  gnuplot-nox
  bible-kjv
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing apt packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- LibTorch from the pinned PyPI wheel (and the test-only Python packages), in a venv -------
venv="$root/.venv"
pins_satisfied() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$root/scripts/requirements.txt" <<'PY'
import importlib.metadata as m, sys
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, version = line.split("==")
    try:
        if m.version(name) != version:
            sys.exit(1)
    except m.PackageNotFoundError:
        sys.exit(1)
PY
}
if ! pins_satisfied; then
  log "installing scripts/requirements.txt into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/requirements.txt
fi
torch_prefix=$("$venv/bin/python" -c 'import os, importlib.util as u; print(os.path.join(os.path.dirname(u.find_spec("torch").origin), "share", "cmake"))')

# --- Configure and build ------------------------------------------------------------------------
export CCACHE_BASEDIR="$root"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-10G}"

build_lane() {  # build_lane DIR CUDA(ON|OFF)
  local dir=$1 cuda=$2
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    log "configuring $dir (SHC_WITH_CUDA=$cuda)"
    cmake -S "$root" -B "$dir" -G Ninja \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$torch_prefix" \
      -DPython3_EXECUTABLE="$venv/bin/python" \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
      -DSHC_WITH_CUDA="$cuda" >"$dir.configure.log" 2>&1 ||
      { cat "$dir.configure.log"; exit 1; }
  fi
  log "building $dir"
  cmake --build "$dir" -j 2
}

build_lane build OFF
((want_cuda)) && build_lane build-cuda ON
log "done: $root/build/bin/shc"
