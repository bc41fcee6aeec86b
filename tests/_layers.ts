/**
 * Test layers built in code: a {@linkcode Layer} over tar bytes held in
 * memory, with real digests, whose `uncompressed()` goes through
 * `image/blob.ts` `openLayerTar` (so digests are verified as in production).
 *
 * @module
 */
import { digestOf, openLayerTar } from "../image/blob.ts";
import { type Layer, MediaType } from "../image/types.ts";
import { gzip, TarWriter, zstd } from "../layer/tar_writer.ts";

/** How a test layer's blob is compressed. */
export type TestCompression = "none" | "gzip" | "zstd";

/** A {@linkcode Layer} over bytes in memory, counting how often it was opened. */
export interface MemoryLayer extends Layer {
  /** The uncompressed tar. */
  readonly tar: Uint8Array;
  /** The blob as stored. */
  readonly blob: Uint8Array;
  /** How many times `compressed()` was called. */
  readonly opened: number;
}

/**
 * Wraps tar bytes (or a {@linkcode TarWriter}) as a layer.
 *
 * @example Usage
 * ```ts
 * import { memoryLayer } from "./_layers.ts";
 * import { TarWriter } from "../layer/tar_writer.ts";
 * const layer = memoryLayer(new TarWriter().file("hello", "world"), "gzip");
 * console.log(layer.diffID.startsWith("sha256:")); // true
 * ```
 */
export function memoryLayer(
  tar: Uint8Array | TarWriter,
  compression: TestCompression = "gzip",
  options: { corruptDiffID?: boolean } = {},
): MemoryLayer {
  const bytes = tar instanceof TarWriter ? tar.bytes() : tar;
  const blob = compression === "gzip" ? gzip(bytes) : compression === "zstd" ? zstd(bytes) : bytes;
  const mediaType = compression === "gzip"
    ? MediaType.OciLayerGzip
    : compression === "zstd"
    ? MediaType.OciLayerZstd
    : MediaType.OciLayer;
  let opened = 0;
  const diffID = options.corruptDiffID ? digestOf("not the tar") : digestOf(bytes);
  const layer: MemoryLayer = {
    digest: digestOf(blob),
    diffID,
    mediaType,
    size: blob.length,
    tar: bytes,
    blob,
    get opened() {
      return opened;
    },
    compressed(): Promise<ReadableStream<Uint8Array>> {
      opened++;
      let sent = 0;
      return Promise.resolve(
        new ReadableStream<Uint8Array>({
          pull(c) {
            if (sent >= blob.length) return c.close();
            const n = Math.min(64 * 1024, blob.length - sent);
            c.enqueue(blob.slice(sent, sent + n));
            sent += n;
          },
        }),
      );
    },
    uncompressed(signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
      return openLayerTar(layer, signal);
    },
  };
  return layer;
}

/**
 * A layer with a `./` root entry and the given files (`name -> content`),
 * parents of each file listed as directories, everything with fixed times.
 *
 * @example Usage
 * ```ts
 * import { filesLayer } from "./_layers.ts";
 * const layer = filesLayer({ "etc/a": "1", "etc/b": "2" });
 * console.log(layer.size > 0); // true
 * ```
 */
export function filesLayer(
  files: Record<string, string>,
  compression: TestCompression = "gzip",
): MemoryLayer {
  const tar = new TarWriter({ defaultMtime: 1_700_000_000 });
  tar.directory("./", { mode: 0o755 });
  const dirs = new Set<string>();
  for (const name of Object.keys(files)) {
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  for (const d of [...dirs].sort()) tar.directory(`${d}/`, { mode: 0o755 });
  for (const [name, content] of Object.entries(files)) tar.file(name, content, { mode: 0o644 });
  return memoryLayer(tar, compression);
}

/**
 * Wraps a layer so that its blob trickles out: `delayMs` before each chunk of
 * `chunkSize` bytes (for killing a process in the middle of an extraction).
 *
 * @example Usage
 * ```ts
 * import { filesLayer, slowLayer } from "./_layers.ts";
 * const slow = slowLayer(filesLayer({ a: "1" }), 10, 512);
 * console.log(slow.diffID.length); // 71
 * ```
 */
export function slowLayer(layer: MemoryLayer, delayMs: number, chunkSize = 4096): MemoryLayer {
  const slow: MemoryLayer = {
    ...layer,
    get opened() {
      return layer.opened;
    },
    compressed(): Promise<ReadableStream<Uint8Array>> {
      let sent = 0;
      const blob = layer.blob;
      return Promise.resolve(
        new ReadableStream<Uint8Array>({
          async pull(c) {
            if (sent >= blob.length) return c.close();
            await new Promise((r) => setTimeout(r, delayMs));
            const n = Math.min(chunkSize, blob.length - sent);
            c.enqueue(blob.slice(sent, sent + n));
            sent += n;
          },
        }),
      );
    },
    uncompressed(signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
      return openLayerTar(slow, signal);
    },
  };
  return slow;
}

/** One entry of {@linkcode snapshotTree}. */
export interface TreeEntry {
  type: "file" | "dir" | "symlink" | "char" | "other";
  mode: number;
  uid: number;
  gid: number;
  size: number;
  content?: string;
  target?: string;
  rdev?: number;
}

/**
 * A comparable picture of a directory tree: every path with its type, mode,
 * owner, size, and file content or link target (times left out).
 *
 * @example Usage
 * ```ts ignore
 * import { snapshotTree } from "./_layers.ts";
 * console.log(await snapshotTree("/etc/apt"));
 * ```
 */
export async function snapshotTree(root: string): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {};
  async function walk(rel: string): Promise<void> {
    const abs = rel ? `${root}/${rel}` : root;
    const st = await Deno.lstat(abs);
    const e: TreeEntry = {
      type: st.isFile
        ? "file"
        : st.isDirectory
        ? "dir"
        : st.isSymlink
        ? "symlink"
        : st.isCharDevice
        ? "char"
        : "other",
      mode: st.mode! & 0o7777,
      uid: st.uid!,
      gid: st.gid!,
      size: st.isDirectory ? 0 : st.size,
    };
    if (st.isFile) e.content = await Deno.readTextFile(abs);
    if (st.isSymlink) e.target = await Deno.readLink(abs);
    if (st.isCharDevice) e.rdev = st.rdev!;
    out[rel || "."] = e;
    if (st.isDirectory) {
      const names = (await Array.fromAsync(Deno.readDir(abs))).map((d) => d.name).sort();
      for (const n of names) await walk(rel ? `${rel}/${n}` : n);
    }
  }
  await walk("");
  return out;
}

/**
 * A deterministic sample image of `count` layers (same bytes, same digests in
 * every process): layer i writes `etc/layer` (overridden by each layer),
 * `data/f<i>` and `keep/k<i>`; from layer 1 on each layer whites out
 * `data/f<i-1>`, and every third layer makes `keep/` opaque. Every entry's
 * parents are listed, as image builders write them. `pad` adds a file of
 * that many bytes to each layer.
 *
 * @example Usage
 * ```ts
 * import { sampleImage } from "./_layers.ts";
 * const layers = sampleImage(3);
 * console.log(layers.length); // 3
 * ```
 */
export function sampleImage(
  count: number,
  options: { pad?: number; compression?: TestCompression } = {},
): MemoryLayer[] {
  const layers: MemoryLayer[] = [];
  for (let i = 0; i < count; i++) {
    const t = new TarWriter({ defaultMtime: 1_700_000_000 + i });
    t.directory("./", { mode: 0o755 });
    t.directory("etc/", { mode: 0o755 });
    t.file("etc/layer", `layer ${i}\n`, { mode: 0o644 });
    t.directory("data/", { mode: 0o755 });
    t.file(`data/f${i}`, `data ${i}\n`, { mode: 0o600, uid: i % 3 === 0 ? 0 : 1000, gid: 0 });
    if (i > 0) t.file(`data/.wh.f${i - 1}`, "");
    t.directory("keep/", { mode: 0o755 });
    if (i > 0 && i % 3 === 0) t.file("keep/.wh..wh..opq", "");
    t.file(`keep/k${i}`, `keep ${i}\n`);
    t.symlink(`etc/link${i}`, `../data/f${i}`);
    if (options.pad) {
      const pad = new Uint8Array(options.pad);
      for (let j = 0; j < pad.length; j += 4096) pad[j] = (i + j) & 0xff;
      t.file(`data/pad${i}`, pad);
    }
    layers.push(memoryLayer(t, options.compression ?? "gzip"));
  }
  return layers;
}
