/**
 * Real images for the conformance tests, built the way users build them:
 * with buildah (containers/storage's overlay driver computes each layer's
 * diff, Go's archive/tar writes it), committed step by step like a
 * Dockerfile and pushed to an OCI layout, a docker-archive and an
 * oci-archive. No network: the base is the host's static busybox plus a
 * dynamic binary (`env`) with its libraries, or (when given) the Debian
 * rootfs tar that bench/fixtures.ts builds with debootstrap.
 *
 * Every step works on the buildah container's own mount or through
 * `buildah run --isolation chroot`; nothing outside the temp dir is written.
 *
 * @module
 */
import { join } from "@std/path";
import { have, isRoot, run, sh } from "./_helpers.ts";

/** Images written by {@linkcode buildBusyboxImages} or {@linkcode buildDebianImages}. */
export interface RealImages {
  /** The OCI layout holding every tag. */
  layout: string;
  /** Tags in `layout`, one per build step (each adds one layer). */
  tags: string[];
  /** `docker-archive:` file of the last tag. */
  dockerArchive: string;
  /** `oci-archive:` file of the last tag (tagged as in `layout`). */
  ociArchive: string;
  /** Last tag (the one the archives hold). */
  last: string;
  /** Tags in `layout` holding `last` with zstd and zstd:chunked layer blobs. */
  zstdTags: string[];
}

/**
 * Makes sure the commands the image builds drive are there, installing their
 * Debian packages with apt-get when missing (root only): buildah, setcap
 * (libcap2-bin), setfattr (attr), and podman (the second reference). Returns
 * the first command still missing.
 */
export async function ensureBuildTools(): Promise<string | undefined> {
  const wanted: [string, string][] = [
    ["buildah", "buildah"],
    ["setcap", "libcap2-bin"],
    ["setfattr", "attr"],
    ["podman", "podman"],
  ];
  const missing = [];
  for (const [cmd, pkg] of wanted) if (!(await have(cmd))) missing.push(pkg);
  if (missing.length && isRoot) {
    const env = { DEBIAN_FRONTEND: "noninteractive" };
    const install = ["install", "-y", "-qq", "--no-install-recommends", ...missing];
    if ((await run("apt-get", install, { env })).code !== 0) {
      await run("apt-get", ["update", "-qq"], { env });
      await run("apt-get", install, { env });
    }
  }
  for (const [cmd] of wanted) if (!(await have(cmd))) return cmd;
  return undefined;
}

/** Shell prelude: `$B` is buildah with a private store below `$W`. */
const PRELUDE = `
set -euo pipefail
W=$1
B="buildah --root $W/storage --runroot $W/run --storage-driver overlay"
# commit CONTAINER TAG: commit, drop the container, start the next step from TAG
commit() { $B commit -q "$1" "$2" >/dev/null; $B rm "$1" >/dev/null; }
`;

/**
 * Step 0, host side on the mount: merged /usr, static busybox and its
 * applets, GNU env with libc and the loader, users, owners, modes, a
 * hardlink pair, symlinks, nanosecond mtimes.
 */
const BUSYBOX_L0 = `
c=$($B from scratch)
m=$($B mount "$c")
cd "$m"
mkdir -p usr/bin usr/lib/x86_64-linux-gnu usr/lib64 usr/sbin etc tmp root home/app \\
  var/lib/thing opt/data/sub srv/dir2file/sub usr/share/doc
ln -s usr/bin bin; ln -s usr/lib lib; ln -s usr/lib64 lib64; ln -s usr/sbin sbin
cp /bin/busybox usr/bin/busybox
cp /usr/bin/env usr/bin/env
cp -L /lib/x86_64-linux-gnu/libc.so.6 usr/lib/x86_64-linux-gnu/libc.so.6
cp -L /lib64/ld-linux-x86-64.so.2 usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2
for a in $(./usr/bin/busybox --list); do
  [ -e "usr/bin/$a" ] || [ -L "usr/bin/$a" ] || ln -s busybox "usr/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\\napp:x:1000:1000:app:/home/app:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/false\\n' > etc/passwd
printf 'root:x:0:\\napp:x:1000:\\nnogroup:x:65534:\\n' > etc/group
echo "base motd" > etc/motd
chmod 1777 tmp; chmod 0700 root
chown 1000:1000 home/app; chmod 0750 home/app
echo hello > home/app/.profile; chown 1000:1000 home/app/.profile
echo thing > var/lib/thing/state
echo a > opt/data/a; echo b > opt/data/sub/b
echo gone > srv/dir2file/sub/x
echo file > srv/file2dir
echo file > srv/file2link
echo "base file" > usr/share/doc/base-file
ln usr/share/doc/base-file usr/share/doc/base-file.hl
ln -s base-file usr/share/doc/link-to-retarget
ln -s /etc/motd usr/share/doc/abs-link
touch -d '2001-02-03 04:05:06.123456789' usr/share/doc/base-file
touch -h -d '2002-02-03 04:05:06' usr/share/doc/abs-link
cd /
$B umount "$c" >/dev/null
$B config --cmd /bin/sh --env PATH=/usr/bin:/bin --user 0 "$c"
commit "$c" l0
`;

/**
 * Step 1: inside the image (busybox sh under chroot isolation): deletions
 * (whiteouts), rm -rf + mkdir (opaque dirs), dir <-> file swaps, a hardlink to
 * a file of the layer below, setuid/setgid/sticky, a fifo, symlink changes;
 * then on the mount (host tools): file capabilities, user xattrs, a device
 * node, names past 100 and 255 bytes, long link targets, non-ASCII names.
 */
const BUSYBOX_L1 = `
c=$($B from l0)
$B run --isolation chroot "$c" -- sh -euc '
rm /etc/motd
rm -rf /opt/data && mkdir /opt/data && echo new > /opt/data/new
rm -rf /srv/dir2file && echo now-a-file > /srv/dir2file
rm /srv/file2dir && mkdir /srv/file2dir && echo inside > /srv/file2dir/inside
ln /usr/share/doc/base-file /usr/share/doc/base-file.hl2
cp /usr/bin/env /usr/bin/suid-env && chmod 4755 /usr/bin/suid-env
cp /usr/bin/env /usr/bin/sgid-env && chmod 2711 /usr/bin/sgid-env
mkdir /srv/sgid && chown 0:1000 /srv/sgid && chmod 2775 /srv/sgid
mkdir /srv/sticky && chmod 1777 /srv/sticky
mkfifo /srv/fifo && chmod 0640 /srv/fifo
ln -sfn ../../../etc/passwd /usr/share/doc/link-to-retarget
ln -s does/not/exist /srv/dangling && chown -h 1000:1000 /srv/dangling
ln -s /usr/share/doc /srv/doclink
echo "a file" > /srv/link2file && chown 1000:1000 /srv/link2file
rm /srv/file2link && ln -s /etc/passwd /srv/file2link
'
m=$($B mount "$c")
cd "$m"
cp usr/bin/env usr/bin/capprog
setcap cap_net_bind_service,cap_net_raw+ep usr/bin/capprog
setfattr -n user.foo -v bar srv/link2file
setfattr -n user.empty srv/sticky
setfattr -n user.dirattr -v 0sAAECAw== srv/sgid
mknod srv/null c 1 3
long1=$(printf 'd%.0s' $(seq 1 60))
long2=$(printf 'e%.0s' $(seq 1 60))
long3=$(printf 'f%.0s' $(seq 1 200))
mkdir -p "srv/$long1/$long2/$long3"
echo long > "srv/$long1/$long2/file-past-100-chars"
echo longer > "srv/$long1/$long2/$long3/file-past-255-chars-$long1"
ln -s "$long1/$long2/$long3/file-past-255-chars-$long1" srv/long-target-link
ln "srv/$long1/$long2/file-past-100-chars" "srv/$long1/$long2/$long3/hardlink-past-255-$long2"
mkdir "srv/héllo wörld" "srv/日本語"
echo "ünïcödé" > "srv/héllo wörld/fïlé €"
echo kanji > "srv/日本語/ファイル"
echo tab > "srv/tab	and space"
touch -d '1999-12-31 23:59:59.5' srv/link2file
cd /
$B umount "$c" >/dev/null
commit "$c" l1
`;

/**
 * Step 2: whiteouts of a lower directory and of a file of step 1, swaps
 * back, a re-created file, metadata-only changes (chmod, chown, touch: whole
 * files copied up), a hardlink whose source is then removed, opaque dirs
 * over two layers, a symlink replaced by a directory, xattrs changed.
 */
const BUSYBOX_L2 = `
c=$($B from l1)
$B run --isolation chroot "$c" -- sh -euc '
rm -rf /var/lib/thing
rm /srv/dir2file && mkdir /srv/dir2file && echo back > /srv/dir2file/again
rm -rf /srv/file2dir && echo "file again" > /srv/file2dir
echo new-motd > /etc/motd
ln /srv/link2file /srv/link2file.hl && rm /srv/link2file
chmod 0600 /usr/share/doc/base-file
chown 65534:65534 /home/app/.profile
chmod 0700 /srv/sticky
rm -rf /opt/data && mkdir -p /opt/data/sub && echo layer2 > /opt/data/sub/c
rm /srv/doclink && mkdir /srv/doclink && echo d > /srv/doclink/real
rm /usr/share/doc/base-file.hl
touch -d "2010-01-01 00:00:00" /usr/share/doc/base-file.hl2
rm /usr/share/doc/abs-link && echo now-a-file > /usr/share/doc/abs-link
'
m=$($B mount "$c")
setfattr -x user.foo "$m/srv/link2file.hl"
setfattr -n user.second -v two "$m/srv/link2file.hl"
$B umount "$c" >/dev/null
$B config --label conformance=yes --workingdir /srv "$c"
commit "$c" l2
`;

/**
 * Step 3: file names that are not UTF-8 (Latin-1 bytes, as old archives
 * hold): two that differ only in the invalid byte, and a whiteout of one.
 */
const BUSYBOX_L3 = `
c=$($B from l2)
m=$($B mount "$c")
mkdir "$m/srv/latin1"
echo e-acute > "$m/srv/latin1/caf$(printf '\\351')"
echo e-grave > "$m/srv/latin1/caf$(printf '\\350')"
echo gone > "$m/srv/latin1/d$(printf '\\351')j$(printf '\\340')"
ln -s "caf$(printf '\\351')" "$m/srv/latin1/link-$(printf '\\377')"
$B umount "$c" >/dev/null
commit "$c" l3
c=$($B from l3)
m=$($B mount "$c")
rm "$m/srv/latin1/d$(printf '\\351')j$(printf '\\340')"
$B umount "$c" >/dev/null
commit "$c" l4
`;

function pushAll(tags: string[], last: string): string {
  return [
    ...tags.map((t) => `$B push -q ${t} "oci:$W/layout:${t}"`),
    `$B push -q ${last} "docker-archive:$W/image.docker.tar:conformance:${last}"`,
    `$B push -q ${last} "oci-archive:$W/image.oci.tar:${last}"`,
    // the same image with zstd and zstd:chunked (skippable frames) layer blobs
    `$B push -q --compression-format zstd ${last} "oci:$W/layout:${last}-zstd"`,
    `$B push -q --compression-format zstd:chunked ${last} "oci:$W/layout:${last}-chunked"`,
    // the store is not needed any more
    `$B rm --all >/dev/null; $B rmi --all --force >/dev/null`,
  ].join("\n");
}

async function build(dir: string, script: string, args: string[] = []): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const file = join(dir, "build.sh");
  await Deno.writeTextFile(file, script);
  const r = await run("bash", [file, dir, ...args], { cwd: dir });
  if (r.code !== 0) {
    throw new Error(`building the images in ${dir} failed (${r.code}):\n${r.stderr.slice(-3000)}`);
  }
}

/**
 * Builds the busybox-based image (tags `l0` .. `l4`, one layer each) into
 * `dir`. Needs root and buildah. About three seconds.
 *
 * @example Usage
 * ```ts ignore
 * const images = await buildBusyboxImages("/tmp/work");
 * // umoci unpack --image ${images.layout}:l2 bundle
 * ```
 */
export async function buildBusyboxImages(dir: string): Promise<RealImages> {
  const tags = ["l0", "l1", "l2", "l3", "l4"];
  await build(
    dir,
    PRELUDE + BUSYBOX_L0 + BUSYBOX_L1 + BUSYBOX_L2 + BUSYBOX_L3 + pushAll(tags, "l2"),
  );
  return {
    layout: join(dir, "layout"),
    tags,
    dockerArchive: join(dir, "image.docker.tar"),
    ociArchive: join(dir, "image.oci.tar"),
    last: "l2",
    zstdTags: ["l2-zstd", "l2-chunked"],
  };
}

/**
 * Builds a Debian image from a rootfs tar (bench/fixtures.ts
 * `debianRootfsLayer().tar`): `d0` is the rootfs as one uncompressed layer,
 * `d1` adds a user (useradd), an emptied /usr/share/doc, removed apt lists
 * and logs, a purged package, setuid, a cross-layer hardlink, a changed
 * /bin/sh link, a fifo and a sticky dir. About ten seconds.
 *
 * @example Usage
 * ```ts ignore
 * const fixture = await debianRootfsLayer();
 * const images = await buildDebianImages("/tmp/work", fixture.tar);
 * ```
 */
export async function buildDebianImages(dir: string, rootfsTar: string): Promise<RealImages> {
  const script = PRELUDE + `
TAR=$2
c=$($B from scratch); m=$($B mount "$c")
tar -C "$m" --numeric-owner --xattrs --xattrs-include='*' -xpf "$TAR"
$B umount "$c" >/dev/null
$B config --cmd /bin/bash "$c"
$B commit -q --disable-compression "$c" d0 >/dev/null; $B rm "$c" >/dev/null
c=$($B from d0)
$B run --isolation chroot "$c" -- sh -euc '
useradd -m -u 1234 -s /bin/bash app2
rm -rf /usr/share/doc && mkdir /usr/share/doc && echo kept > /usr/share/doc/README
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*
chmod u+s /usr/bin/env
ln /usr/bin/bash /usr/local/bin/bash-hl
ln -sf bash /bin/sh
mkfifo -m 600 /run/fifo
mkdir -m 1777 /srv/scratch
dpkg --purge --force-remove-essential --force-depends e2fsprogs >/dev/null 2>&1
'
commit "$c" d1
` + pushAll(["d0", "d1"], "d1");
  await build(dir, script, [rootfsTar]);
  return {
    layout: join(dir, "layout"),
    tags: ["d0", "d1"],
    dockerArchive: join(dir, "image.docker.tar"),
    ociArchive: join(dir, "image.oci.tar"),
    last: "d1",
    zstdTags: ["d1-zstd", "d1-chunked"],
  };
}

/**
 * The reference: `umoci unpack` of `layout:tag` into `bundle` (its
 * `rootfs/` is the flattened image).
 *
 * @example Usage
 * ```ts ignore
 * await umociUnpack(images.layout, "l2", "/tmp/bundle");
 * ```
 */
export async function umociUnpack(layout: string, tag: string, bundle: string): Promise<string> {
  await sh("umoci", ["unpack", "--image", `${layout}:${tag}`, bundle]);
  return join(bundle, "rootfs");
}

/**
 * The second reference: podman (containers/storage's overlay driver, what
 * podman and buildah run containers on), with a private store below `dir`.
 * `view()` pulls `layout:tag`, mounts the image and hands `fn` the merged
 * view. Its run root must be short (podman wants under 50 characters), so it
 * is a temp dir of its own, removed on dispose with the store's images.
 *
 * @example Usage
 * ```ts ignore
 * await using podman = await PodmanStore.create("/tmp/work/podman");
 * const lines = await podman.view(images.layout, "l2", (p) => record(p));
 * ```
 */
export class PodmanStore implements AsyncDisposable {
  readonly #args: string[];
  readonly #runroot: string;

  private constructor(root: string, runroot: string) {
    this.#runroot = runroot;
    this.#args = ["--root", root, "--runroot", runroot, "--storage-driver", "overlay"];
  }

  /** Makes the store (nothing is pulled yet). */
  static async create(dir: string): Promise<PodmanStore> {
    await Deno.mkdir(dir, { recursive: true });
    const runroot = await Deno.makeTempDir({ prefix: "strata-pr-" });
    return new PodmanStore(join(dir, "root"), runroot);
  }

  /** Pulls and mounts `layout:tag`, runs `fn` on the merged view, unmounts. */
  async view<T>(layout: string, tag: string, fn: (rootfs: string) => Promise<T>): Promise<T> {
    const id = (await sh("podman", [...this.#args, "pull", "-q", `oci:${layout}:${tag}`])).trim();
    const mountpoint = (await sh("podman", [...this.#args, "image", "mount", id])).trim();
    try {
      return await fn(mountpoint);
    } finally {
      await sh("podman", [...this.#args, "image", "unmount", id]);
    }
  }

  /** Removes the store's images and the run root. */
  async [Symbol.asyncDispose](): Promise<void> {
    await run("podman", [...this.#args, "rmi", "--all", "--force"]);
    await run("umount", ["-R", "-l", this.#runroot]);
    await Deno.remove(this.#runroot, { recursive: true }).catch(() => {});
  }
}
