/**
 * Reading a cache directory for `ls`, `prune` and `verify`: which layers it
 * holds, which images and live containers reference them, how much disk it
 * uses, and how to take a layer out of it safely.
 *
 * @module
 */
import { join } from "@std/path";
import { ImageStore, type StoredImage } from "../image/store.ts";
import { liveBundles } from "../bundle/bundler.ts";
import { FileLock, TempWork } from "../overlay/lock.ts";
import type { LayerRecord } from "../overlay/resolver.ts";

/** One directory under `layers/`. */
export interface CachedLayer {
  /**
   * Directory name: `sha256-<hex>`, or `sha256-<hex>@<chain hex>` for a layer
   * whose tree depends on its parents (extracted over one chain of them);
   * either may end in `~<id map key>`, a copy for one uid/gid mapping.
   */
  key: string;
  /** The hex of the layer's OCI chain ID, for a `@<chain hex>` directory. */
  chain?: string;
  /**
   * For a layer extracted for one uid/gid mapping alone (`<key>~<id map
   * key>`, see `overlay/idmap.ts`): that mapping's key.
   */
  idmapKey?: string;
  /** `layers/<key>`. */
  path: string;
  /** The diff_id (from the name). */
  diffID: string;
  /** Its `layer.json`, when readable. */
  record?: LayerRecord;
}

import { exists } from "../sys/files.ts";
import { lstat, readDir, readDirSync, readTextFile, remove, rename } from "../sys/files.ts";
export { exists };

/**
 * Lists the published layers of the cache at `root`.
 *
 * @example Usage
 * ```ts ignore
 * import { cachedLayers } from "./cache_scan.ts";
 * for (const l of await cachedLayers("/var/lib/strata")) console.log(l.diffID);
 * ```
 */
export async function cachedLayers(root: string): Promise<CachedLayer[]> {
  const out: CachedLayer[] = [];
  const dir = join(root, "layers");
  try {
    for await (const e of readDir(dir)) {
      const m = /^([a-z0-9]+)-([a-f0-9]+)(?:@([a-f0-9]+))?(?:~([a-f0-9]{16}))?$/.exec(e.name);
      if (!e.isDirectory || !m) continue;
      const path = join(dir, e.name);
      let record: LayerRecord | undefined;
      try {
        record = JSON.parse(await readTextFile(join(path, "layer.json")));
      } catch {
        record = undefined;
      }
      const layer: CachedLayer = { key: e.name, path, diffID: `${m[1]}:${m[2]}`, record };
      if (m[3]) layer.chain = m[3];
      if (m[4]) layer.idmapKey = m[4];
      out.push(layer);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort((a, b) => a.key < b.key ? -1 : 1);
}

/** A stored image with the diff_ids of its layers. */
export interface ImageEntry extends StoredImage {
  /** Per layer: blob digest, diff_id and blob size, bottom first. */
  layers: { digest: string; diffID: string; size: number }[];
  /** Why its manifest or config could not be read, if so. */
  error?: string;
}

/**
 * Lists the images of the cache's image store with their layers (read from
 * the stored manifests and configs; no network).
 *
 * @example Usage
 * ```ts ignore
 * import { storedImages } from "./cache_scan.ts";
 * console.log((await storedImages("/var/lib/strata")).map((i) => i.name));
 * ```
 */
export async function storedImages(root: string): Promise<ImageEntry[]> {
  if (!(await exists(join(root, "images")))) return [];
  const store = await ImageStore.create(root);
  const out: ImageEntry[] = [];
  for (const rec of await store.list()) {
    try {
      const image = await store.open(rec.name);
      out.push({
        ...rec,
        layers: image.layers.map((l) => ({ digest: l.digest, diffID: l.diffID, size: l.size })),
      });
    } catch (e) {
      out.push({ ...rec, layers: [], error: (e as Error).message });
    }
  }
  return out;
}

/**
 * The diff_ids that must stay: those of every stored image and of every
 * live container (its bundle lock is held).
 *
 * @example Usage
 * ```ts ignore
 * import { referencedLayers } from "./cache_scan.ts";
 * const keep = await referencedLayers("/var/lib/strata");
 * ```
 */
export async function referencedLayers(
  root: string,
): Promise<{ images: Set<string>; live: Map<string, string> }> {
  const images = new Set<string>();
  for (const img of await storedImages(root)) for (const l of img.layers) images.add(l.diffID);
  return { images, live: await liveLayers(root) };
}

/** diff_id -> id of a live container using it. */
export async function liveLayers(root: string): Promise<Map<string, string>> {
  const live = new Map<string, string>();
  for (const b of await liveBundles(root)) {
    for (const d of b.record?.diffIDs ?? []) live.set(d, b.id);
  }
  return live;
}

/**
 * Disk use of `path` in bytes (allocated blocks, each inode counted once).
 *
 * @example Usage
 * ```ts ignore
 * import { diskUsage } from "./cache_scan.ts";
 * console.log(await diskUsage("/var/lib/strata"));
 * ```
 */
export async function diskUsage(path: string, seen = new Set<string>()): Promise<number> {
  let st: Deno.FileInfo;
  try {
    st = await lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
  const key = `${st.dev}:${st.ino}`;
  if (seen.has(key)) return 0;
  seen.add(key);
  let total = (st.blocks ?? 0) * 512;
  if (st.isDirectory) {
    const names: string[] = [];
    try {
      for await (const e of readDir(path)) names.push(e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    for (const n of names) total += await diskUsage(join(path, n), seen);
  }
  return total;
}

/**
 * Takes a layer out of the cache: under its lock (so no extraction of it is
 * running), renames it into a temporary directory (readers see it either
 * whole or gone), checks that no live container started using it meanwhile
 * (else puts it back), then deletes it. Returns `removed`, `busy` (being
 * extracted right now) or `in use by <id>`.
 *
 * @example Usage
 * ```ts ignore
 * import { removeLayer } from "./cache_scan.ts";
 * await removeLayer("/var/lib/strata", layer);
 * ```
 */
export async function removeLayer(
  root: string,
  layer: CachedLayer,
  options: { force?: boolean } = {},
): Promise<"removed" | "busy" | `in use by ${string}`> {
  // The lock is the diff_id's, shared by its `@<chain>` directories.
  const lockPath = join(root, "locks", `${layer.diffID.replace(":", "-")}.lock`);
  const lock = FileLock.tryAcquire(lockPath);
  if (!lock) return "busy";
  try {
    const work = await TempWork.create(root);
    try {
      const parked = join(work.path, "layer");
      await rename(layer.path, parked);
      const user = (await liveLayers(root)).get(layer.diffID);
      if (user && !options.force) {
        await rename(parked, layer.path);
        return `in use by ${user}`;
      }
    } finally {
      await work.remove();
    }
    // Keep the lock file while another directory of the diff_id remains.
    const siblings = (await cachedLayers(root)).some((l) => l.diffID === layer.diffID);
    if (!siblings) await remove(lockPath).catch(() => {});
    return "removed";
  } finally {
    lock.release();
  }
}

/**
 * Removes the lock files of layers that are not in the cache: an extraction
 * that failed (say, ENOSPC) leaves its diff_id's lock, an inode that no later
 * command would free. Each is unlinked under the lock, so an extraction
 * running now keeps its own, and one waiting for it retries on a new file
 * (see {@linkcode FileLock.acquire}). Returns the paths removed.
 *
 * @example Usage
 * ```ts ignore
 * import { reclaimLayerLocks } from "./cache_scan.ts";
 * console.log(await reclaimLayerLocks("/var/lib/strata"));
 * ```
 */
export async function reclaimLayerLocks(root: string): Promise<string[]> {
  if (!(await exists(join(root, "locks"))) || !(await exists(join(root, "layers")))) return [];
  // `sha256-<hex>` of every directory under layers/, `@<chain>` and
  // `~<id map key>` ones included.
  const keys = () => {
    const out = new Set<string>();
    for (const e of readDirSync(join(root, "layers"))) out.add(e.name.split(/[@~]/)[0]);
    return out;
  };
  const cached = keys();
  const removed: string[] = [];
  for (const e of readDirSync(join(root, "locks"))) {
    const m = /^(sha256-[0-9a-f]{64})\.lock$/.exec(e.name);
    if (!m || cached.has(m[1])) continue;
    const path = join(root, "locks", e.name);
    const lock = FileLock.tryAcquire(path);
    if (!lock) continue;
    try {
      // Published while we looked: keep its lock.
      if (keys().has(m[1])) continue;
      await remove(path).catch(() => {});
      removed.push(path);
    } finally {
      lock.release();
    }
  }
  return removed;
}
