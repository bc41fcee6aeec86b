/**
 * Shared benchmark fixtures: a tmpfs to measure on (this host's disk throttles
 * after bursts, see FINDINGS), a real Debian rootfs packed as a gzip layer
 * (debootstrap, built once and cached), and a big layer of many files for the
 * flat-RSS check. Fixtures are cached under `/var/tmp/strata-bench/` (override
 * with `$STRATA_BENCH_CACHE`) and built under a lock, so concurrent
 * benchmarks share one copy.
 *
 * @module
 */

import { createGzip } from "node:zlib";
import { createHash } from "node:crypto";
import { join } from "@std/path";
import { TarWriter } from "../layer/tar_writer.ts";
import { exists } from "../sys/files.ts";

/**
 * The default cache directory of the fixtures (`$STRATA_BENCH_CACHE` or `/var/tmp/strata-bench`).
 *
 * @example Usage
 * ```ts
 * import { DEFAULT_CACHE } from "./fixtures.ts";
 * console.log(`fixtures live in ${DEFAULT_CACHE}`);
 * ```
 */
export const DEFAULT_CACHE: string = Deno.env.get("STRATA_BENCH_CACHE") ?? "/var/tmp/strata-bench";

/** A mounted tmpfs; `unmount()` (or `await using`) unmounts it and removes the directory if made here. */
export interface TmpfsMount extends AsyncDisposable {
  /** The mountpoint. */
  path: string;
  /** Unmounts (idempotent). */
  unmount(): Promise<void>;
}

async function sh(cmd: string, args: string[], options: Deno.CommandOptions = {}): Promise<string> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", ...options })
    .output();
  if (!r.success) {
    const err = new TextDecoder().decode(r.stderr).trim();
    throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${err.slice(-2000)}`);
  }
  return new TextDecoder().decode(r.stdout);
}

/**
 * Mounts a tmpfs at `path` (created if missing). Needs root (or a user+mount
 * namespace).
 *
 * @example Usage
 * ```ts ignore
 * import { mountTmpfs } from "./fixtures.ts";
 * await using fs = await mountTmpfs("/tmp/bench-fs", { size: "4g" });
 * await Deno.writeTextFile(`${fs.path}/x`, "in memory");
 * ```
 */
export async function mountTmpfs(
  path: string,
  options: { size?: string | number; mode?: number } = {},
): Promise<TmpfsMount> {
  const created = !(await exists(path));
  await Deno.mkdir(path, { recursive: true });
  const size = options.size ?? "8g";
  const mode = (options.mode ?? 0o755).toString(8).padStart(4, "0");
  try {
    await sh("mount", ["-t", "tmpfs", "-o", `size=${size},mode=${mode}`, "tmpfs", path]);
  } catch (e) {
    if (created) await Deno.remove(path).catch(() => {});
    throw new Error(
      `Cannot mount a tmpfs at ${path} (benchmarks need root): ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  let mounted = true;
  const unmount = async () => {
    if (!mounted) return;
    mounted = false;
    await sh("umount", [path]).catch(() => sh("umount", ["-l", path]));
    if (created) await Deno.remove(path).catch(() => {});
  };
  return { path, unmount, [Symbol.asyncDispose]: unmount };
}

/** A layer blob on disk: the gzip blob, the tar inside it, their digests and sizes. */
export interface LayerFixture {
  /** The `tar+gzip` blob. */
  tarGz: string;
  /** The uncompressed tar (what the diff_id covers). */
  tar: string;
  /** `sha256:<hex>` of the gzip blob (the layer digest). */
  digestGz: string;
  /** `sha256:<hex>` of the tar (the diff_id). */
  digestTar: string;
  /** Size of the gzip blob in bytes. */
  sizeGz: number;
  /** Size of the tar in bytes. */
  sizeTar: number;
  /** Number of tar entries (as `tar -t` lists them). */
  entries: number;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path);
  const buf = new Uint8Array(1 << 20);
  while (true) {
    const n = await f.read(buf);
    if (n === null) break;
    h.update(buf.subarray(0, n));
  }
  return `sha256:${h.digest("hex")}`;
}

/** Runs `build` once per `name` under an exclusive lock; later calls read the cached JSON. */
async function cached(
  cacheDir: string,
  name: string,
  build: (dir: string) => Promise<LayerFixture>,
): Promise<LayerFixture> {
  await Deno.mkdir(cacheDir, { recursive: true });
  const meta = join(cacheDir, `${name}.json`);
  const readMeta = async (): Promise<LayerFixture | null> => {
    try {
      const f = JSON.parse(await Deno.readTextFile(meta)) as LayerFixture;
      if (await exists(f.tarGz) && await exists(f.tar)) return f;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return null;
  };
  const hit = await readMeta();
  if (hit) return hit;
  using lock = await Deno.open(join(cacheDir, `${name}.lock`), { create: true, write: true });
  await lock.lock(true); // released when the file closes
  const again = await readMeta();
  if (again) return again;
  const f = await build(cacheDir);
  await Deno.writeTextFile(meta + ".tmp", JSON.stringify(f, null, 2));
  await Deno.rename(meta + ".tmp", meta);
  return f;
}

/**
 * The Debian mirror apt is configured with (deb822 or one-line sources), for debootstrap.
 *
 * @example Usage
 * ```ts
 * import { debianMirror } from "./fixtures.ts";
 * const mirror = await debianMirror();
 * if (!mirror.startsWith("http")) throw new Error(mirror);
 * ```
 */
export async function debianMirror(): Promise<string> {
  const files = ["/etc/apt/sources.list"];
  try {
    for await (const e of Deno.readDir("/etc/apt/sources.list.d")) {
      if (e.name.endsWith(".sources") || e.name.endsWith(".list")) {
        files.push(join("/etc/apt/sources.list.d", e.name));
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  for (const file of files) {
    const text = await Deno.readTextFile(file).catch(() => "");
    // deb822: a stanza with URIs and Suites: bookworm
    for (const stanza of text.split(/\n\s*\n/)) {
      const uris = stanza.match(/^URIs:\s*(\S+)/m)?.[1];
      const suites = stanza.match(/^Suites:\s*(.+)$/m)?.[1].split(/\s+/) ?? [];
      if (uris && suites.includes("bookworm") && !/^Enabled:\s*no/im.test(stanza)) return uris;
    }
    for (const line of text.split("\n")) {
      const m = line.match(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/);
      if (m) return m[1];
    }
  }
  return "http://deb.debian.org/debian";
}

/**
 * A real Debian bookworm rootfs (`debootstrap --variant=minbase`), packed as
 * a layer: `tar --numeric-owner --xattrs -cf - . | gzip`. Built once (about a
 * minute) and cached in `cacheDir`.
 *
 * @example Usage
 * ```ts ignore
 * import { debianRootfsLayer } from "./fixtures.ts";
 * const layer = await debianRootfsLayer();
 * console.log(layer.tarGz, layer.digestGz, layer.entries);
 * ```
 */
export function debianRootfsLayer(cacheDir: string = DEFAULT_CACHE): Promise<LayerFixture> {
  return cached(cacheDir, "debian-bookworm", async (dir) => {
    const rootfs = join(dir, "debian-bookworm.rootfs");
    const tar = join(dir, "debian-bookworm.tar");
    const tarGz = join(dir, "debian-bookworm.tar.gz");
    await sh("rm", ["-rf", rootfs]);
    const mirror = await debianMirror();
    await sh("debootstrap", ["--variant=minbase", "bookworm", rootfs, mirror]);
    // Drop apt's downloaded .debs: a layer built by a Dockerfile would not have them.
    await sh("sh", ["-c", `rm -rf '${rootfs}'/var/cache/apt/archives/*.deb`]);
    await sh("sh", [
      "-c",
      `tar -C '${rootfs}' --numeric-owner --xattrs -cf '${tar}.tmp' . && gzip -c '${tar}.tmp' > '${tarGz}.tmp'`,
    ]);
    await Deno.rename(`${tar}.tmp`, tar);
    await Deno.rename(`${tarGz}.tmp`, tarGz);
    await sh("rm", ["-rf", rootfs]);
    return await describe(tar, tarGz);
  });
}

async function describe(tar: string, tarGz: string): Promise<LayerFixture> {
  const list = await sh("tar", ["-tf", tar]);
  return {
    tarGz,
    tar,
    digestGz: await sha256File(tarGz),
    digestTar: await sha256File(tar),
    sizeGz: (await Deno.stat(tarGz)).size,
    sizeTar: (await Deno.stat(tar)).size,
    entries: list.split("\n").filter((l) => l !== "").length,
  };
}

/**
 * A layer of about `sizeBytes` (default 1 GiB) spread over many files (sizes
 * from 0 to 1 MiB, a few of 16 MiB, in 256 directories, plus symlinks and
 * hardlinks), written piece by piece so building it needs little memory. The
 * contents are random, so gzip (level 1) cannot shrink it much: decompression
 * and hashing cost what they would for binaries. Cached in `cacheDir`.
 *
 * @example Usage
 * ```ts ignore
 * import { bigLayer } from "./fixtures.ts";
 * const layer = await bigLayer(1 << 30);
 * console.log(layer.sizeTar, layer.entries);
 * ```
 */
export function bigLayer(
  sizeBytes = 1 << 30,
  cacheDir: string = DEFAULT_CACHE,
): Promise<LayerFixture> {
  return cached(cacheDir, `big-${sizeBytes}`, async (dir) => {
    const tar = join(dir, `big-${sizeBytes}.tar`);
    const tarGz = join(dir, `big-${sizeBytes}.tar.gz`);
    // 4 MiB of random bytes; files are slices at varying offsets, farther apart than gzip's 32 KiB window.
    const pool = new Uint8Array(4 << 20);
    for (let o = 0; o < pool.length; o += 65536) {
      crypto.getRandomValues(pool.subarray(o, o + 65536));
    }
    const out = await Deno.open(`${tar}.tmp`, { write: true, create: true, truncate: true });
    const w = new TarWriter({ defaultMtime: 1700000000 });
    let written = 0;
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    for (let d = 0; d < 256; d++) w.directory(`data/d${d}/`, { mode: 0o755 });
    for (let i = 0; written < sizeBytes; i++) {
      const r = rand();
      const size = i % 97 === 0 ? 16 << 20 : r % 7 === 0 ? 0 : rand() % (1 << 20);
      const name = `data/d${i % 256}/file-${i}.bin`;
      const data = new Uint8Array(size);
      for (let o = 0; o < size; o += pool.length / 2) {
        const n = Math.min(pool.length / 2, size - o);
        const from = rand() % (pool.length / 2);
        data.set(pool.subarray(from, from + n), o);
      }
      w.file(name, data, { mode: i % 13 === 0 ? 0o755 : 0o644, uid: i % 3, gid: i % 5 });
      if (i % 50 === 0) w.symlink(`data/d${i % 256}/link-${i}`, `file-${i}.bin`);
      if (i % 71 === 0) w.hardlink(`data/d${(i + 1) % 256}/hard-${i}`, name);
      written += size + 512;
      const chunk = w.take();
      await writeAll(out, chunk, 0);
    }
    await writeAll(out, w.bytes(), 0);
    out.close();
    await Deno.rename(`${tar}.tmp`, tar);
    await gzipFile(tar, `${tarGz}.tmp`, 1);
    await Deno.rename(`${tarGz}.tmp`, tarGz);
    return await describe(tar, tarGz);
  });
}

async function writeAll(f: Deno.FsFile, buf: Uint8Array, done: number): Promise<void> {
  while (done < buf.length) done += await f.write(buf.subarray(done));
}

async function gzipFile(from: string, to: string, level: number): Promise<void> {
  using src = await Deno.open(from);
  using dst = await Deno.open(to, { write: true, create: true, truncate: true });
  const gz = createGzip({ level });
  const done = new Promise<void>((resolve, reject) => {
    let chain = Promise.resolve(); // writes in order, one at a time
    gz.on("data", (c: Uint8Array) => (chain = chain.then(() => writeAll(dst, c, 0))));
    gz.on("end", () => chain.then(resolve, reject));
    gz.on("error", reject);
  });
  const buf = new Uint8Array(1 << 20);
  while (true) {
    const n = await src.read(buf);
    if (n === null) break;
    if (!gz.write(buf.slice(0, n))) await new Promise((r) => gz.once("drain", r));
  }
  gz.end();
  await done;
}
