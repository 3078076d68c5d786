#!/usr/bin/env bash
# Installs dependencies, builds the guest kernel (cached outside the tree) and vessel.
# Usage: scripts/build.sh [BUILD_TYPE [BUILD_DIR]]   (default: RelWithDebInfo build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
type=${1:-RelWithDebInfo}
dir=${2:-$root/build}

bash "$root/scripts/setup.sh" >&2
bash "$root/guest/kernel/build.sh" >/dev/null
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE="$type" >/dev/null
cmake --build "$dir" -j"$(nproc)" >&2
