// The demo guests' software, built from Debian packages and cached: the Debian kernel, an
// initramfs with busybox and the modules the VM needs (virtio, ext4), and the files of
// the guests' HTTP service, whose answers come from data on the guest's own disk.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { GordeError } from "../errors.ts";

const run = promisify(execFile);

/** Loaded in this order by the initramfs (virtio_ring before virtio). */
export const VM_MODULES = [
  "crc16",
  "crc32c_generic",
  "mbcache",
  "jbd2",
  "ext4",
  "virtio_ring",
  "virtio",
  "virtio_pci_legacy_dev",
  "virtio_pci_modern_dev",
  "virtio_pci",
  "virtio_blk",
  "failover",
  "net_failover",
  "virtio_net",
  "virtio_console",
] as const;

/**
 * The demo VM's guest agent: a busybox script that speaks the part of the QEMU guest agent
 * protocol a backup needs (guest-sync-delimited, guest-ping, guest-fsfreeze-freeze and
 * -thaw of the data disk) on the virtio-serial port named org.qemu.guest_agent.0.
 */
const AGENT = String.raw`#!/bin/busybox sh
port=
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/$(basename "$p")
done
[ -n "$port" ] || exit 0
echo "gorde-guest: guest agent on $port"
exec 3<>"$port"
while :; do
  while read -r req <&3; do
    case "$req" in
      *guest-sync-delimited*) printf '\377{"return": %s}\n' "$(echo "$req" | sed -n 's/.*"id": *\([0-9]*\).*/\1/p')" >&3 ;;
      *guest-ping*) echo '{"return": {}}' >&3 ;;
      *guest-fsfreeze-freeze*) sync; if fsfreeze --freeze /mnt; then echo '{"return": 1}' >&3; else echo '{"error": {"class": "GenericError", "desc": "fsfreeze failed"}}' >&3; fi ;;
      *guest-fsfreeze-thaw*) fsfreeze --unfreeze /mnt; echo '{"return": 1}' >&3 ;;
      *) echo '{"error": {"class": "CommandNotFound", "desc": "this agent knows guest-sync-delimited, guest-ping and guest-fsfreeze-freeze/thaw"}}' >&3 ;;
    esac
  done
  sleep 1
done
`;

export interface GuestKit {
  kernel: string;
  initrd: string;
  busybox: string;
  kernelVersion: string;
}

export function defaultCacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "gorde", "guest-kit");
}

/** The guest's /init: modules, the disk, the network, then the service from the disk. */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${VM_MODULES.join(" ")}; do insmod /lib/modules/$m.ko || echo "gorde-guest: insmod $m failed"; done
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || { echo "gorde-guest: no disk"; sleep 5; poweroff -f; }
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
hostname "$(cat /mnt/etc/hostname 2>/dev/null || echo guest)"
/bin/agent &
echo "gorde-guest: up"
exec /mnt/service/run
`;

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(
    () => true,
    () => false,
  );
}

/** Debian's kernel package, downloaded (not installed) and unpacked below `dir`. */
async function fetchKernel(dir: string): Promise<{ root: string; version: string }> {
  const root = path.join(dir, "kernel");
  if (!(await exists(root))) {
    const tmp = `${root}.tmp-${process.pid}`;
    await fsp.rm(tmp, { recursive: true, force: true });
    await fsp.mkdir(tmp, { recursive: true });
    let pkg: string;
    try {
      const deps = (await run("apt-cache", ["depends", "linux-image-amd64"])).stdout;
      const m = /Depends: (linux-image-[0-9][^\s]*)/.exec(deps);
      if (!m) throw new Error("linux-image-amd64 names no kernel package");
      pkg = m[1]!;
      await run("apt-get", ["download", pkg], { cwd: tmp });
    } catch (err) {
      throw new GordeError("not-found", `cannot download Debian's kernel package (linux-image-amd64) for the demo VM: ${(err as Error).message.split("\n")[0]}.`);
    }
    const deb = (await fsp.readdir(tmp)).find((f) => f.endsWith(".deb"))!;
    await run("dpkg-deb", ["-x", path.join(tmp, deb), path.join(tmp, "x")]);
    await fsp.rename(path.join(tmp, "x"), root);
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  const versions = await fsp.readdir(path.join(root, "lib", "modules"));
  if (versions.length !== 1) throw new GordeError("corrupt", `the kernel cache ${root} holds ${versions.length} module trees; remove it.`);
  return { root, version: versions[0]! };
}

function busyboxPath(): string {
  for (const p of ["/bin/busybox", "/usr/bin/busybox"]) if (fs.existsSync(p)) return p;
  throw new GordeError("not-found", "busybox is missing: install Debian's busybox-static (scripts/setup.sh does as root).");
}

/** Kernel and initramfs for the demo VM, built once per kernel version and cached. */
export async function ensureGuestKit(cacheDir = defaultCacheDir()): Promise<GuestKit> {
  await fsp.mkdir(cacheDir, { recursive: true });
  const busybox = busyboxPath();
  const { stdout } = await run("file", ["-L", busybox]).catch(() => ({ stdout: "statically linked" }));
  if (!/statically linked|static-pie/.test(stdout)) throw new GordeError("unsupported", `${busybox} is not statically linked; install busybox-static.`);
  const { root, version } = await fetchKernel(cacheDir);
  const kernel = path.join(root, "boot", `vmlinuz-${version}`);
  // Named after what goes in, so a changed init or module list builds a new one.
  const recipe = createHash("sha256").update(INIT).update(AGENT).update(VM_MODULES.join(",")).digest("hex").slice(0, 12);
  const initrd = path.join(cacheDir, `initrd-${version}-${recipe}.cpio`);
  if (!(await exists(initrd))) {
    const tree = path.join(cacheDir, `initrd-${process.pid}`);
    await fsp.rm(tree, { recursive: true, force: true });
    for (const d of ["bin", "proc", "sys", "dev", "mnt", "lib/modules", "tmp"]) await fsp.mkdir(path.join(tree, d), { recursive: true });
    await fsp.copyFile(busybox, path.join(tree, "bin/busybox"));
    await fsp.chmod(path.join(tree, "bin/busybox"), 0o755);
    await fsp.writeFile(path.join(tree, "init"), INIT, { mode: 0o755 });
    await fsp.writeFile(path.join(tree, "bin/agent"), AGENT, { mode: 0o755 });
    const modRoot = path.join(root, "lib", "modules", version, "kernel");
    const all = await fsp.readdir(modRoot, { recursive: true });
    for (const m of VM_MODULES) {
      const rel = all.find((f) => path.basename(f) === `${m}.ko`);
      if (!rel) throw new GordeError("not-found", `kernel ${version} has no module ${m}.ko.`);
      await fsp.copyFile(path.join(modRoot, rel), path.join(tree, "lib/modules", `${m}.ko`));
    }
    const files = (await fsp.readdir(tree, { recursive: true })).map((f) => `./${f}`).sort();
    const tmp = `${initrd}.tmp-${process.pid}`;
    await new Promise<void>((resolve, reject) => {
      const child = execFile("cpio", ["--quiet", "-o", "-H", "newc", "-F", tmp], { cwd: tree }, (err) => (err ? reject(new Error(err.message)) : resolve()));
      child.stdin!.end(["."].concat(files).join("\n") + "\n");
    }).catch((err: Error) => {
      throw new GordeError("not-found", `cannot build the initramfs with cpio (install Debian's cpio): ${err.message.split("\n")[0]}.`);
    });
    await fsp.rename(tmp, initrd);
    await fsp.rm(tree, { recursive: true, force: true });
  }
  return { kernel, initrd, busybox, kernelVersion: version };
}

/**
 * The service of both demo guests, a busybox httpd whose answers come from their disk:
 * GET /cgi-bin/counter adds one to data/counter and answers it; GET /cgi-bin/note answers
 * data/note; POST /cgi-bin/note replaces it. Each change is synced to the disk. A VM with
 * raw disks vdb and vdc: GET /cgi-bin/ticker?start counts on in the background, writing
 * each count to the first sector of vdb, then of vdc (disks that change together, as a
 * database's data and log); GET /cgi-bin/ticker answers the count on vdc.
 */
export async function writeServiceFiles(root: string, name: string): Promise<void> {
  const w = async (rel: string, text: string, mode = 0o644): Promise<void> => {
    await fsp.mkdir(path.dirname(path.join(root, rel)), { recursive: true });
    await fsp.writeFile(path.join(root, rel), text, { mode });
  };
  await w("etc/hostname", `${name}\n`);
  await w("data/counter", "0\n");
  await w("data/note", `first note of ${name}\n`);
  await w("www/index.html", `<p>${name}: a gorde demo guest</p>\n`);
  // What real guests hold plenty of: the same license text in several packages' docs, and
  // a file of one block repeated (equal chunks in one backup, on disk images and trees).
  const license = Array.from({ length: 400 }, (_, i) => `${i + 1}. Permission is granted to use, copy and share this software.\n`).join("");
  for (const pkg of ["busybox", "httpd", "gorde-service"]) await w(`usr/share/doc/${pkg}/copyright`, license);
  const block = Buffer.alloc(64 * 1024);
  for (let i = 0; i < block.length; i += 4) block.writeUInt32LE(Math.imul(i + 1, 2654435761) >>> 0, i);
  await fsp.mkdir(path.join(root, "srv"), { recursive: true });
  await fsp.writeFile(path.join(root, "srv/blocks.bin"), Buffer.concat(Array.from({ length: 32 }, () => block)));
  await w(
    "service/run",
    `#!/bin/sh
# The demo service: busybox httpd on port 80 with its data on this disk.
cd "$(dirname "$0")/.."
export DATA="$PWD/data"
exec httpd -f -p 80 -h "$PWD/www"
`,
    0o755,
  );
  await w(
    "www/cgi-bin/counter",
    `#!/bin/sh
n=$(( $(cat "$DATA/counter") + 1 ))
echo "$n" > "$DATA/counter.new" && mv "$DATA/counter.new" "$DATA/counter" && sync
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "$n"
`,
    0o755,
  );
  await w(
    "www/cgi-bin/fill",
    `#!/bin/sh
# fill?<MiB>: writes that many MiB of new random data as a new file (a guest at work).
n=$(echo "$QUERY_STRING" | tr -cd 0-9)
f="$DATA/fill-$$-$RANDOM"
dd if=/dev/urandom of="$f" bs=1M count="\${n:-1}" 2>/dev/null && sync
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "$(wc -c < "$f")"
`,
    0o755,
  );
  await w(
    "www/cgi-bin/ticker",
    `#!/bin/sh
if [ "$QUERY_STRING" = start ] && [ -b /dev/vdb ] && [ -b /dev/vdc ]; then
  (
    i=0
    while :; do
      i=$((i + 1))
      echo "$i" | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null
      echo "$i" | dd of=/dev/vdc bs=512 count=1 conv=sync,fsync 2>/dev/null
    done
  ) </dev/null >/dev/null 2>&1 &
fi
printf 'Content-Type: text/plain\\r\\n\\r\\n'
dd if=/dev/vdc bs=512 count=1 2>/dev/null | head -n 1 | tr -cd 0-9
echo
`,
    0o755,
  );
  await w(
    "www/cgi-bin/note",
    `#!/bin/sh
if [ "$REQUEST_METHOD" = POST ]; then
  head -c "\${CONTENT_LENGTH:-0}" > "$DATA/note.new" && mv "$DATA/note.new" "$DATA/note" && sync
fi
printf 'Content-Type: text/plain\\r\\n\\r\\n'
cat "$DATA/note"
`,
    0o755,
  );
}

/** A raw ext4 disk image of `size` bytes (sparse) holding the service files. */
export async function buildVmDisk(file: string, size: number, name: string): Promise<void> {
  const tree = `${file}.tree-${process.pid}`;
  await fsp.rm(tree, { recursive: true, force: true });
  try {
    await writeServiceFiles(tree, name);
    await fsp.writeFile(file, "", { flag: "wx" });
    await fsp.truncate(file, size);
    await run("mkfs.ext4", ["-q", "-F", "-L", name, "-d", tree, file]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") throw new GordeError("exists", `disk ${file} exists already.`);
    throw err;
  } finally {
    await fsp.rm(tree, { recursive: true, force: true });
  }
}

/** The container's /init: LXC has mounted /proc, /sys and /dev and set the host name. */
const CT_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
ip link set lo up
echo "gorde-guest: up"
exec /service/run
`;

/**
 * A container's root file system in `dir`: Debian's static busybox, the service files and
 * an /init that starts the service. The service's data is in `dir`/data.
 */
export async function buildCtRootfs(dir: string, name: string): Promise<void> {
  const busybox = busyboxPath();
  const { stdout } = await run("file", ["-L", busybox]).catch(() => ({ stdout: "statically linked" }));
  // The root file system has no C library.
  if (!/statically linked|static-pie/.test(stdout)) throw new GordeError("unsupported", `${busybox} is not statically linked; install busybox-static.`);
  await fsp.mkdir(dir, { recursive: true });
  if ((await fsp.readdir(dir)).length > 0) throw new GordeError("exists", `container root file system ${dir} exists already and is not empty.`);
  for (const d of ["bin", "dev", "proc", "sys"]) await fsp.mkdir(path.join(dir, d));
  await fsp.copyFile(busybox, path.join(dir, "bin/busybox"));
  await fsp.chmod(path.join(dir, "bin/busybox"), 0o755);
  await writeServiceFiles(dir, name);
  await fsp.writeFile(path.join(dir, "init"), CT_INIT, { mode: 0o755 });
}
