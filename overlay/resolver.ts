/**
 * The layer cache: resolves an image layer to an extracted, overlay-ready
 * directory on disk, extracting it the first time and returning the cached
 * directory (one stat) after that.
 *
 * @module
 */
import { join } from "@std/path";
import type { Layer } from "../image/types.ts";
// The extraction code (the applicator, the tar parser, the tree record, the
// workdir overlay) loads when a layer is actually extracted: a warm run
// resolves every layer with one stat and must not pay for ~150 KB of modules.
import type { ApplyOptions, ApplyResult } from "../layer/applicator.ts";
import { type IdMap, openCache } from "./cache.ts";
import { FileLock, reclaimTemp, TempWork } from "./lock.ts";
import type { NewOverlayMountFn } from "./workdir.ts";
import { type ResolveAllOptions, resolveLayers } from "./prefetch.ts";

/** Resolves a layer to a path suitable for use as an overlayfs lower directory. */
export interface LayerResolver {
  /**
   * Resolves `layer`, whose `parents` (bottom first) are the layers below it
   * in its image, to a lower directory.
   */
  resolve(layer: Layer, parents?: readonly Layer[], signal?: AbortSignal): Promise<string>;
  /**
   * Resolves every layer of an image (bottom first) to lower directories,
   * bottom first; resolvers that can fetch several layers at once implement it.
   */
  resolveAll?(layers: readonly Layer[], options?: ResolveAllOptions): Promise<string[]>;
}

/** Applies a layer to a directory (the seam to `layer/applicator.ts`). */
export type ApplyLayerFn = (
  layer: Layer,
  root: string,
  options: ApplyOptions & { signal?: AbortSignal },
) => Promise<ApplyResult>;

/**
 * How layers become directories:
 * - `direct` (default): the tar is extracted straight into the new layer's
 *   directory, OCI whiteouts written as char 0/0 devices and opaque
 *   directories as `user.overlay.opaque` xattrs. No mount; works in a user
 *   namespace (mknod of 0/0 is allowed there since Linux 5.8).
 * - `workdir`: the seed's way: the tar is applied to an overlay of the parent
 *   layers and the overlay's upper directory is kept (`LayerWorkdir` of `workdir.ts`).
 */
export type ResolveMode = "direct" | "workdir";

/** What a resolver did, for logs and tests. */
export interface ResolverEvent {
  /** `extract`: this process extracts the layer; `published`: it is in the cache; `reclaimed`: a dead process' temp dir was removed. */
  type: "extract" | "published" | "reclaimed";
  /** The layer's diff_id (not for `reclaimed`). */
  diffID?: string;
  /** The path concerned. */
  path: string;
  /** Milliseconds the extraction took (`published`). */
  ms?: number;
}

/** Options of {@linkcode CachingLayerResolver.create}. */
export interface CachingLayerResolverOptions {
  /** How layers are extracted (default `direct`). */
  mode?: ResolveMode;
  /** The overlay a `workdir` extraction mounts (default `defaultNewOverlayMount` of `workdir.ts`). */
  newOverlayMount?: NewOverlayMountFn;
  /** Applies a layer (default `applyLayer` of `layer/applicator.ts`). */
  apply?: ApplyLayerFn;
  /** Receives applicator warnings (devices skipped, ...). */
  onWarning?: (message: string) => void;
  /** Receives what the resolver does. */
  onEvent?: (event: ResolverEvent) => void;
}

/** `layer.json`: what a published layer is. */
export interface LayerRecord {
  /** The layer's diff_id (the cache key). */
  diffID: string;
  /** Digest of the blob it was extracted from. */
  digest: string;
  /** Media type of that blob. */
  mediaType: string;
  /** Size of that blob. */
  size: number;
  /** `treeRecord` of `fs/` as published (`strata verify` compares against it). */
  record: { digest: string; files: number; bytes: number };
  /** When it was published (RFC 3339). */
  created: string;
  /** How it was extracted. */
  mode: ResolveMode;
  /** The uid/gid mapping it was written under. */
  idmap: IdMap;
  /** Warnings from the applicator. */
  warnings: string[];
}

/** A layer could not be resolved; the message names the layer and the reason. */
export class LayerResolveError extends Error {
  /** The layer's diff_id. */
  readonly diffID: string;
  /** Creates the error. */
  constructor(diffID: string, message: string, options?: ErrorOptions) {
    super(`Cannot resolve layer ${diffID}: ${message}`, options);
    this.name = "LayerResolveError";
    this.diffID = diffID;
  }
}

/** Maps a digest to its directory name in `layers/`: `sha256:ab..` becomes `sha256-ab..`. */
export function layerKey(diffID: string): string {
  const m = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-fA-F0-9]{32,})$/.exec(diffID);
  if (!m) throw new LayerResolveError(diffID, "the diff_id is not a valid digest");
  return `${m[1]}-${m[2].toLowerCase()}`;
}

/**
 * A {@linkcode LayerResolver} that extracts each layer once into a cache
 * directory and returns the cached directory afterwards.
 *
 * - Keyed by diff_id: `layers/<alg>-<hex>/fs`. A cached resolve is one stat.
 * - Digests are verified while streaming (the layer's `uncompressed()`), so
 *   only verified bytes are ever published.
 * - Publishing is atomic: the layer is extracted below `tmp/<random>/`, its
 *   `layer.json` written, and the directory renamed into `layers/`.
 * - One extraction per layer: concurrent calls in this process share one
 *   promise; other processes wait on the flock(2) `locks/<key>.lock`, which a
 *   crashed holder does not keep.
 * - Leftovers of dead processes in `tmp/` are reclaimed at creation.
 *
 * @example Usage
 * ```ts ignore
 * import { CachingLayerResolver } from "./resolver.ts";
 * const resolver = await CachingLayerResolver.create("/var/lib/strata");
 * const lowers: string[] = [];
 * for (const [i, layer] of image.layers.entries()) {
 *   lowers.push(await resolver.resolve(layer, image.layers.slice(0, i)));
 * }
 * ```
 */
export class CachingLayerResolver implements LayerResolver {
  /** The cache root. */
  readonly root: string;
  /** How layers are extracted. */
  readonly mode: ResolveMode;
  /** The uid/gid mapping of this process (compatible with the cache's). */
  readonly idmap: IdMap;
  #o: CachingLayerResolverOptions;
  #apply: ApplyLayerFn;
  #inflight = new Map<string, Promise<string>>();

  private constructor(root: string, idmap: IdMap, o: CachingLayerResolverOptions) {
    this.root = root;
    this.idmap = idmap;
    this.mode = o.mode ?? "direct";
    this.#o = o;
    this.#apply = o.apply ??
      (async (layer, root, options) =>
        (await import("../layer/applicator.ts")).applyLayer(layer, root, options));
  }

  /**
   * Opens (creating if needed) the cache at `root`, checks its uid/gid
   * mapping, and reclaims the temporary directories of dead processes.
   *
   * @throws {IdMapMismatchError} when the cache was written under another mapping.
   */
  static async create(
    root: string,
    options: CachingLayerResolverOptions = {},
  ): Promise<CachingLayerResolver> {
    const { idmap } = await openCache(root);
    const r = new CachingLayerResolver(root, idmap, options);
    for (const path of await reclaimTemp(root)) options.onEvent?.({ type: "reclaimed", path });
    return r;
  }

  /** The directory a layer with this diff_id is (or would be) published as. */
  layerDir(diffID: string): string {
    return join(this.root, "layers", layerKey(diffID));
  }

  /** The lower directory of a layer with this diff_id (`layers/<key>/fs`). */
  layerPath(diffID: string): string {
    return join(this.root, "layers", layerKey(diffID), "fs");
  }

  /**
   * Resolves `layer` to its cached lower directory, extracting it first when
   * needed. `parents` are the layers below it, bottom first (also accepted as
   * rest arguments, as in the seed); they are resolved first when the layer
   * must be extracted.
   */
  resolve(layer: Layer, parents?: readonly Layer[], signal?: AbortSignal): Promise<string>;
  /** Resolves `layer` over `parents` given as rest arguments (the seed's shape). */
  resolve(layer: Layer, ...parents: Layer[]): Promise<string>;
  resolve(
    layer: Layer,
    ...rest: (Layer | readonly Layer[] | AbortSignal | undefined)[]
  ): Promise<string> {
    const parents: Layer[] = [];
    let signal: AbortSignal | undefined;
    for (const a of rest) {
      if (a === undefined) continue;
      if (a instanceof AbortSignal) signal = a;
      else if (Array.isArray(a)) parents.push(...a);
      else parents.push(a as Layer);
    }
    const fs = this.layerPath(layer.diffID);
    try {
      Deno.statSync(fs);
      return Promise.resolve(fs);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) return Promise.reject(e);
    }
    const key = layerKey(layer.diffID);
    let p = this.#inflight.get(key);
    if (!p) {
      p = this.#extract(layer, parents, signal).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    return p;
  }

  /**
   * Resolves every layer of an image (bottom first) and returns their lower
   * directories, bottom first. Cached layers are never fetched; the first
   * missing layer streams straight into extraction while up to
   * `concurrency` (default 3) of the following ones download in parallel into
   * spool files below `tmp/`; layers are applied strictly in order (see
   * `overlay/prefetch.ts`). A failed download or an abort stops every
   * download and removes every spool.
   *
   * @example Usage
   * ```ts ignore
   * import { CachingLayerResolver } from "./resolver.ts";
   * const resolver = await CachingLayerResolver.create("/var/lib/strata");
   * const lowers = await resolver.resolveAll(image.layers, { concurrency: 3 });
   * ```
   */
  resolveAll(layers: readonly Layer[], options: ResolveAllOptions = {}): Promise<string[]> {
    return resolveLayers(this, layers, options);
  }

  /** Reads the `layer.json` of a published layer. */
  async record(diffID: string): Promise<LayerRecord> {
    return JSON.parse(await Deno.readTextFile(join(this.layerDir(diffID), "layer.json")));
  }

  async #extract(layer: Layer, parents: Layer[], signal?: AbortSignal): Promise<string> {
    const key = layerKey(layer.diffID);
    const dest = join(this.root, "layers", key);
    const fs = join(dest, "fs");
    // Parents first, one at a time, before taking this layer's lock: a
    // process never waits for a lock while holding another.
    const lowerDirs: string[] = [];
    for (let i = 0; i < parents.length; i++) {
      lowerDirs.push(await this.resolve(parents[i], parents.slice(0, i), signal));
    }
    signal?.throwIfAborted();
    const lock = await FileLock.acquire(join(this.root, "locks", `${key}.lock`), signal);
    try {
      if (await exists(fs)) return fs; // another process published it while we waited
      this.#o.onEvent?.({ type: "extract", diffID: layer.diffID, path: dest });
      const started = performance.now();
      const work = await TempWork.create(this.root);
      try {
        const staged = join(work.path, "layer");
        await Deno.mkdir(staged, { mode: 0o700 });
        const result = await this.#applyTo(layer, join(staged, "fs"), work.path, lowerDirs, signal)
          .catch((e) => {
            throw new LayerResolveError(layer.diffID, `extraction failed: ${e.message}`, {
              cause: e,
            });
          });
        const { treeRecord } = await import("../layer/record.ts");
        const record: LayerRecord = {
          diffID: layer.diffID,
          digest: layer.digest,
          mediaType: layer.mediaType,
          size: layer.size,
          record: await treeRecord(join(staged, "fs")).then((r) => ({
            digest: r.digest,
            files: r.files,
            bytes: r.bytes,
          })),
          created: new Date().toISOString(),
          mode: this.mode,
          idmap: this.idmap,
          warnings: result.warnings,
        };
        await Deno.writeTextFile(
          join(staged, "layer.json"),
          JSON.stringify(record, null, 2) + "\n",
          { mode: 0o600 },
        );
        try {
          await Deno.rename(staged, dest);
        } catch (e) {
          // Another process won the race (possible only if the lock file was
          // removed under us, e.g. by prune): its copy is as good as ours.
          const code = (e as { code?: string }).code;
          if (!(e instanceof Deno.errors.AlreadyExists) && code !== "ENOTEMPTY") throw e;
        }
        this.#o.onEvent?.({
          type: "published",
          diffID: layer.diffID,
          path: dest,
          ms: performance.now() - started,
        });
        return fs;
      } finally {
        await work.remove();
      }
    } finally {
      lock.release();
    }
  }

  async #applyTo(
    layer: Layer,
    fs: string,
    workPath: string,
    lowerDirs: string[],
    signal?: AbortSignal,
  ): Promise<ApplyResult> {
    const onWarning = this.#o.onWarning;
    if (this.mode === "direct") {
      await Deno.mkdir(fs, { mode: 0o755 });
      return await this.#apply(layer, fs, { whiteouts: "direct", lowerDirs, signal, onWarning });
    }
    const workdir = await import("./workdir.ts");
    const wd = await workdir.LayerWorkdir.create(workPath, layer.diffID, lowerDirs, {
      newOverlayMount: this.#o.newOverlayMount ?? workdir.defaultNewOverlayMount,
    });
    try {
      const r = await this.#apply(layer, wd.applyPath(), {
        whiteouts: "merged",
        lowerDirs,
        signal,
        onWarning,
      });
      await wd.seal();
      await Deno.rename(wd.resultPath(), fs);
      return r;
    } finally {
      await wd.cleanup();
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
