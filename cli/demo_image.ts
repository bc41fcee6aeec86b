/**
 * Builds small OCI images locally, with no network: the image `strata demo`,
 * the examples and the CLI tests run. {@linkcode buildOciLayout} writes any
 * list of tarballs as a gzip-layered OCI image layout; {@linkcode buildDemoImage}
 * makes a three-layer image from the host's static busybox that exercises an
 * override (layer 2 replaces a layer-1 file), a whiteout and an opaque
 * directory (layer 3), an `app` user, and a config with Entrypoint, Cmd, Env,
 * WorkingDir and User.
 *
 * Everything is reproducible: fixed mtimes and a gzip header without a time,
 * so the same busybox always gives the same image digest (and so a warm cache
 * really is warm across demo runs with `--cache`).
 *
 * @module
 */
import { join } from "@std/path";
import { createHash } from "node:crypto";
import { gzip, TarWriter } from "../layer/tar_writer.ts";
import type {
  ContainerConfig,
  Descriptor,
  ImageConfig,
  ImageIndex,
  ImageManifest,
} from "../image/types.ts";
import { MediaType } from "../image/types.ts";
import { mkdir, readFile, writeFile, writeTextFile } from "../sys/files.ts";
import { getUid } from "../sys/process.ts";
import { commandOutput } from "../sys/spawn.ts";

/** The mtime every demo entry carries (2024-01-01T00:00:00Z), for reproducible digests. */
export const DEMO_MTIME = 1704067200;

/** The tag the demo image is written under in its layout. */
export const DEMO_TAG = "demo";

/** The uid and gid of the demo image's `app` user. */
export const DEMO_APP_ID = 1000;

/** A tarball to write as one layer. */
export interface LayoutLayer {
  /** The uncompressed tar bytes. */
  tar: Uint8Array;
  /** A history comment (`created_by`) for the image config. */
  createdBy?: string;
}

/** Options of {@linkcode buildOciLayout}. */
export interface BuildLayoutOptions {
  /** The layers, bottom first. */
  layers: LayoutLayer[];
  /** The runtime defaults of the image. */
  config?: ContainerConfig;
  /** The tag (`org.opencontainers.image.ref.name`) in index.json. Default `latest`. */
  tag?: string;
  /** CPU architecture in Go's names. Default: the host's. */
  architecture?: string;
}

/** What {@linkcode buildOciLayout} wrote. */
export interface BuiltLayout {
  /** The layout directory. */
  dir: string;
  /** The reference to open it with, `oci:DIR:TAG`. */
  ref: string;
  /** The manifest digest (the image digest strata prints on pull). */
  digest: string;
  /** The config digest. */
  configDigest: string;
  /** Per layer: blob digest, diff_id and blob size, bottom first. */
  layers: { digest: string; diffID: string; size: number }[];
}

function sha256(bytes: Uint8Array | string): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}

/** Host architecture in the OCI image spec's (Go's) names. */
export function hostArchitecture(): string {
  const map: Record<string, string> = {
    x86_64: "amd64",
    aarch64: "arm64",
    arm: "arm",
    riscv64: "riscv64",
    s390x: "s390x",
    powerpc64le: "ppc64le",
  };
  return map[Deno.build.arch] ?? Deno.build.arch;
}

async function writeBlob(dir: string, bytes: Uint8Array | string): Promise<Descriptor> {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  const digest = sha256(data);
  await writeFile(join(dir, "blobs", "sha256", digest.slice(7)), data);
  return { mediaType: "", digest, size: data.length };
}

/**
 * Writes an OCI image layout (spec 1.0: `oci-layout`, `index.json`,
 * `blobs/sha256/...`) holding one image made of `layers` gzip-compressed, with
 * correct digests and diff_ids. The directory is created when missing.
 *
 * @example Usage
 * ```ts
 * import { buildOciLayout } from "./demo_image.ts";
 * import { TarWriter } from "../layer/tar_writer.ts";
 * const dir = await Deno.makeTempDir();
 * const tar = new TarWriter().file("hello.txt", "hi\n").bytes();
 * const built = await buildOciLayout(dir, { layers: [{ tar }], tag: "v1" });
 * console.log(built.ref); // oci:/tmp/...:v1
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function buildOciLayout(
  dir: string,
  options: BuildLayoutOptions,
): Promise<BuiltLayout> {
  const tag = options.tag ?? "latest";
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  await writeTextFile(
    join(dir, "oci-layout"),
    JSON.stringify({ imageLayoutVersion: "1.0.0" }),
  );
  const layers: BuiltLayout["layers"] = [];
  const layerDescs: Descriptor[] = [];
  for (const l of options.layers) {
    const blob = gzip(l.tar, 6);
    const d = await writeBlob(dir, blob);
    const diffID = sha256(l.tar);
    layers.push({ digest: d.digest, diffID, size: d.size });
    layerDescs.push({ ...d, mediaType: MediaType.OciLayerGzip });
  }
  const created = new Date(DEMO_MTIME * 1000).toISOString();
  const config: ImageConfig = {
    created,
    architecture: options.architecture ?? hostArchitecture(),
    os: "linux",
    config: options.config ?? {},
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffID) },
    history: options.layers.map((l, i) => ({
      created,
      created_by: l.createdBy ?? `layer ${i + 1}`,
    })),
  };
  const configDesc = await writeBlob(dir, JSON.stringify(config));
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { ...configDesc, mediaType: MediaType.OciConfig },
    layers: layerDescs,
  };
  const manifestDesc = await writeBlob(dir, JSON.stringify(manifest));
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [{
      ...manifestDesc,
      mediaType: MediaType.OciManifest,
      annotations: { "org.opencontainers.image.ref.name": tag },
      platform: { os: "linux", architecture: config.architecture },
    }],
  };
  await writeTextFile(join(dir, "index.json"), JSON.stringify(index));
  return {
    dir,
    ref: `oci:${dir}:${tag}`,
    digest: manifestDesc.digest,
    configDigest: configDesc.digest,
    layers,
  };
}

/** Why the demo image cannot be built: busybox is missing or not static. */
export class BusyboxError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BusyboxError";
  }
}

/**
 * Tells whether an ELF executable is statically linked (no `PT_INTERP`
 * program header), so that it runs inside an image that has no libc.
 *
 * @example Usage
 * ```ts
 * import { isStaticElf } from "./demo_image.ts";
 * console.log(isStaticElf(await Deno.readFile("/bin/busybox")));
 * ```
 */
export function isStaticElf(bytes: Uint8Array): boolean {
  if (bytes.length < 64 || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c) {
    return false;
  }
  const is64 = bytes[4] === 2;
  const le = bytes[5] === 1;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const phoff = is64 ? Number(v.getBigUint64(32, le)) : v.getUint32(28, le);
  const phentsize = v.getUint16(is64 ? 54 : 42, le);
  const phnum = v.getUint16(is64 ? 56 : 44, le);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > bytes.length) break;
    if (v.getUint32(at, le) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/**
 * Installs a Debian package with apt-get (root only), refreshing the package
 * lists once if the first attempt fails (a fresh machine has none).
 *
 * @throws {BusyboxError} naming the package and apt-get's last message.
 *
 * @example Usage
 * ```ts ignore
 * import { aptInstall } from "./demo_image.ts";
 * await aptInstall("runc");
 * ```
 */
export async function aptInstall(pkg: string): Promise<void> {
  const apt = (args: string[]) =>
    commandOutput("apt-get", {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { DEBIAN_FRONTEND: "noninteractive" },
    });
  let r = await apt(["install", "-y", "-qq", "--no-install-recommends", pkg]);
  if (!r.success) {
    await apt(["update", "-qq"]);
    r = await apt(["install", "-y", "-qq", "--no-install-recommends", pkg]);
  }
  if (!r.success) {
    const msg = new TextDecoder().decode(r.stderr).trim().split("\n").at(-1);
    throw new BusyboxError(`apt-get install ${pkg} failed: ${msg}`);
  }
}

/** Options of {@linkcode findBusybox}. */
export interface FindBusyboxOptions {
  /** Path to a static busybox; default `/bin/busybox`. */
  path?: string;
  /** As root, install Debian's busybox-static with apt-get when missing (default true). */
  install?: boolean;
  /** Called with a line for people (for example "installing busybox-static"). */
  log?: (line: string) => void;
}

/**
 * Finds a static busybox binary: `/bin/busybox` (Debian's busybox-static). As
 * root, a missing one is installed with `apt-get install -y busybox-static`;
 * otherwise the error says exactly what to install.
 *
 * @example Usage
 * ```ts ignore
 * import { findBusybox } from "./demo_image.ts";
 * const path = await findBusybox({ log: console.error });
 * ```
 */
export async function findBusybox(options: FindBusyboxOptions = {}): Promise<string> {
  const path = options.path ?? "/bin/busybox";
  const tryRead = async () => {
    try {
      return await readFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  };
  let bytes = await tryRead();
  if (!bytes && !options.path && (options.install ?? true) && getUid() === 0) {
    options.log?.("busybox not found: installing Debian's busybox-static with apt-get");
    await aptInstall("busybox-static");
    bytes = await tryRead();
  }
  if (!bytes) {
    throw new BusyboxError(
      `${path} not found: the demo image is built from a static busybox; install it with ` +
        "`sudo apt-get install busybox-static` (Debian/Ubuntu)",
    );
  }
  if (!isStaticElf(bytes)) {
    throw new BusyboxError(
      `${path} is dynamically linked and would not run in an image without libc; install ` +
        "the static build with `sudo apt-get install busybox-static`",
    );
  }
  return path;
}

/** Options of {@linkcode buildDemoImage}. */
export interface DemoImageOptions {
  /** A static busybox to build from; default {@linkcode findBusybox}'s. */
  busybox?: string;
  /** The tag in index.json; default {@linkcode DEMO_TAG}. */
  tag?: string;
  /** Called with lines for people. */
  log?: (line: string) => void;
  /** More layers on top of the three (examples add their program this way). */
  extraLayers?: LayoutLayer[];
  /** Changes to the runtime config (merged over the demo's). */
  config?: ContainerConfig;
}

/** What the demo image's entrypoint prints with no arguments; the demo and tests check it. */
export const DEMO_EXPECTED = {
  motd: "hello from layer 2 (it overrides layer 1)",
  whiteout: "/etc/secret is gone (layer 3 whited it out)",
  opaque: "/data/cache holds: fresh.txt",
} as const;

const SHOW_SCRIPT = `#!/bin/sh
# Prints what the three layers did, as the container sees it.
echo "user: $(id -un) (uid $(id -u), gid $(id -g)), cwd: $(pwd), GREETING=$GREETING"
echo "/etc/motd says: $(cat /etc/motd)"
if [ -e /etc/secret ]; then
  echo "/etc/secret still exists: the whiteout did NOT work"
else
  echo "/etc/secret is gone (layer 3 whited it out)"
fi
echo "/data/cache holds: $(ls /data/cache | tr '\\n' ' ' | sed 's/ $//')"
`;

const ENTRYPOINT_SCRIPT = `#!/bin/sh
# With arguments, run them (so 'strata run IMAGE CMD...' runs CMD); else show the layers.
if [ "$#" -gt 0 ]; then exec "$@"; fi
exec /app/show.sh
`;

async function busyboxApplets(busybox: string): Promise<string[]> {
  const r = await commandOutput(busybox, {
    args: ["--list"],
    stdout: "piped",
    stderr: "piped",
  });
  if (!r.success) {
    throw new BusyboxError(`${busybox} --list failed: ${new TextDecoder().decode(r.stderr)}`);
  }
  return new TextDecoder().decode(r.stdout).split("\n").map((s) => s.trim())
    .filter((s) => s && s !== "busybox" && /^[A-Za-z0-9._[\]-]+$/.test(s));
}

/**
 * Builds the demo image as an OCI layout in `dir`:
 * - layer 1: `/bin/busybox` and its applet symlinks, `/etc/passwd` and
 *   `/etc/group` with an `app` user (uid/gid 1000), `/etc/motd`,
 *   `/etc/secret`, `/data/cache/{old1,old2}.txt`, `/home/app`, `/tmp`;
 * - layer 2: a new `/etc/motd` (the override), `/app/entrypoint.sh`,
 *   `/app/show.sh`, and a hard link `/app/show-link.sh`;
 * - layer 3: a whiteout `/etc/.wh.secret` and an opaque `/data/cache` (its
 *   `.wh..wh..opq`) holding only `fresh.txt`;
 * - config: Entrypoint `/app/entrypoint.sh`, Cmd `/app/show.sh`, Env PATH and
 *   GREETING, WorkingDir `/home/app`, User `app`.
 *
 * @example Usage
 * ```ts ignore
 * import { buildDemoImage } from "./demo_image.ts";
 * const dir = await Deno.makeTempDir();
 * const img = await buildDemoImage(dir);
 * console.log(img.ref, img.digest);
 * ```
 */
export async function buildDemoImage(
  dir: string,
  options: DemoImageOptions = {},
): Promise<BuiltLayout> {
  const busybox = options.busybox ?? await findBusybox({ log: options.log });
  const applets = await busyboxApplets(busybox);
  const bin = await readFile(busybox);
  const m = { mtime: DEMO_MTIME };
  const root = { ...m, uid: 0, gid: 0 };
  const app = { ...m, uid: DEMO_APP_ID, gid: DEMO_APP_ID, uname: "app", gname: "app" };

  const l1 = new TarWriter({ defaultMtime: DEMO_MTIME });
  for (const d of ["bin/", "etc/", "data/", "data/cache/", "home/", "root/"]) {
    l1.directory(d, { ...root, mode: d === "root/" ? 0o700 : 0o755 });
  }
  l1.directory("tmp/", { ...root, mode: 0o1777 });
  l1.directory("home/app/", { ...app, mode: 0o755 });
  l1.file("bin/busybox", bin, { ...root, mode: 0o755 });
  for (const a of applets) l1.symlink(`bin/${a}`, "busybox", root);
  l1.file(
    "etc/passwd",
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n" +
      "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    { ...root, mode: 0o644 },
  );
  l1.file("etc/group", "root:x:0:\napp:x:1000:app\nnogroup:x:65534:\n", {
    ...root,
    mode: 0o644,
  });
  l1.file("etc/motd", "hello from layer 1\n", root);
  l1.file("etc/secret", "layer 3 deletes this file\n", { ...root, mode: 0o600 });
  l1.file("data/cache/old1.txt", "stale\n", root);
  l1.file("data/cache/old2.txt", "stale\n", root);
  l1.file("home/app/.profile", "export PS1='demo$ '\n", app);

  const l2 = new TarWriter({ defaultMtime: DEMO_MTIME });
  l2.directory("etc/", { ...root, mode: 0o755 });
  l2.file("etc/motd", `${DEMO_EXPECTED.motd}\n`, root);
  l2.directory("app/", { ...root, mode: 0o755 });
  l2.file("app/entrypoint.sh", ENTRYPOINT_SCRIPT, { ...root, mode: 0o755 });
  l2.file("app/show.sh", SHOW_SCRIPT, { ...root, mode: 0o755 });
  l2.hardlink("app/show-link.sh", "app/show.sh", root);

  const l3 = new TarWriter({ defaultMtime: DEMO_MTIME });
  l3.directory("etc/", { ...root, mode: 0o755 });
  l3.file("etc/.wh.secret", "", root);
  l3.directory("data/", { ...root, mode: 0o755 });
  l3.directory("data/cache/", { ...root, mode: 0o755 });
  l3.file("data/cache/.wh..wh..opq", "", root);
  l3.file("data/cache/fresh.txt", "fresh\n", root);

  return await buildOciLayout(dir, {
    tag: options.tag ?? DEMO_TAG,
    layers: [
      { tar: l1.bytes(), createdBy: "busybox, applets, /etc/passwd with an app user" },
      { tar: l2.bytes(), createdBy: "override /etc/motd, add /app scripts" },
      { tar: l3.bytes(), createdBy: "whiteout /etc/secret, opaque /data/cache" },
      ...(options.extraLayers ?? []),
    ],
    config: {
      User: "app",
      Env: ["PATH=/bin", "GREETING=hello from the image config"],
      Entrypoint: ["/app/entrypoint.sh"],
      Cmd: ["/app/show.sh"],
      WorkingDir: "/home/app",
      Labels: { "org.opencontainers.image.title": "strata demo" },
      ...options.config,
    },
  });
}
