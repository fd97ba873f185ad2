#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for gorde, then optionally runs one job:
#   bash scripts/setup.sh demo    set up, then run the demo (gorde demo)
#   bash scripts/setup.sh test    set up, then run the whole test suite (npm test)
# As root it installs missing Debian packages with apt-get; otherwise it says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

job="${1:-}"
case "$job" in ""|demo|test) ;; *) echo "usage: bash scripts/setup.sh [demo|test]" >&2; exit 2 ;; esac

# Debian packages: command -> package.
declare -A need=(
  [node]=nodejs [npm]=npm [cc]=gcc [make]=make [mkfs.ext4]=e2fsprogs [setfattr]=attr [setfacl]=acl
  # the demo guests: QEMU, busybox and cpio for the VM's initramfs (its kernel is downloaded, not installed)
  [qemu-system-x86_64]=qemu-system-x86 [qemu-img]=qemu-utils [busybox]=busybox-static [cpio]=cpio [lxc-start]=lxc [nsenter]=util-linux
  # the scheduler's calendar events are cross-checked against systemd's
  [systemd-analyze]=systemd
  # the fault suite kills GC and prune on entering chosen file-system calls
  [strace]=strace
  # the cluster's state: gorde runs its own etcd members (src/cluster/)
  [etcd]=etcd-server
  # the partition tests: network namespaces joined by a bridge, links cut with nft rules
  [ip]=iproute2 [nft]=nftables
  # the web interface's browser tests
  [chromium]=chromium
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # Debian's etcd-server enables a default etcd on localhost:2379; gorde's members are its own.
    if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
      systemctl disable --now etcd.service >/dev/null 2>&1 || true
    fi
  else
    echo "setup: missing Debian packages: ${missing[*]} (run this script as root, or install them)" >&2
    exit 1
  fi
fi

# The demo VM's kernel comes from Debian's linux-image-amd64 (apt-get download): package lists needed.
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  apt-get update -qq
fi

# npm packages, Node 24 (the node@24 devDependency) and the native helper (postinstall).
if [ ! -x node_modules/.bin/node ] || [ package.json -nt node_modules/.package-lock.json ] || [ ! -f src/sys/build/posix.node ]; then
  echo "setup: npm install"
  if node -e 'process.exit(+process.versions.node.split(".")[0] < 24 ? 0 : 1)'; then
    # npm checks every package's "engines" against the Node running npm: here the system's
    # (Debian 12's is 18), not the Node 24 that runs every one of them, so its EBADENGINE
    # warnings speak of the wrong Node. Those alone are dropped; every other warning shows.
    { npm install --no-audit --no-fund 2>&1 1>&3 | { grep -v EBADENGINE || true; } >&2; } 3>&1
  else
    npm install --no-audit --no-fund
  fi
fi
node_modules/.bin/node -e 'if (+process.versions.node.split(".")[0] < 24) { console.error("setup: Node 24 did not install"); process.exit(1) }'
bash src/sys/build.sh
# The web interface (ui/ → ui/dist), served by every gorde node.
npm run build --silent

case "$job" in
  demo) exec npx gorde demo ;;
  test) exec npm test ;;
esac
