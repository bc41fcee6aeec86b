/**
 * The layer cache: resolves an image layer to an extracted, overlay-ready
 * directory on disk, extracting it the first time and returning the cached
 * directory (one stat) after that.
 *
 * @module
 */
import { join } from "@std/path";
import { sha256Hex } from "../sys/sha256.ts";
import { accessible, AT, close, O, openat, readSmallText } from "../sys/fs.ts";
import { ErrnoError } from "../sys/libc.ts";
import type { TreeIds } from "../layer/record.ts";
import type { Layer } from "../image/types.ts";
// The extraction code (the applicator, the tar parser, the tree record, the
// workdir overlay) loads when a layer is actually extracted: a warm run
// resolves every layer with one stat and must not pay for ~150 KB of modules.
import type { ApplyOptions, ApplyResult, ApplyWorkers } from "../layer/applicator.ts";
import { type IdMap, onOverlayfs, openCache } from "./cache.ts";
import {
  describeMisfit,
  idMapKey,
  type IdMisfit,
  isIdMap,
  isTreeIds,
  layerMisfit,
} from "./idmap.ts";
import { FileLock, reclaimTemp, TempWork } from "./lock.ts";
import { mountOf } from "../sys/mount.ts";
import type { NewOverlayMountFn } from "./workdir.ts";
import type { ResolveAllOptions } from "./prefetch.ts";
import {
  mkdir,
  readTextFile,
  rename,
  writeFile,
  writeFileSync,
  writeTextFile,
} from "../sys/files.ts";

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
  /**
   * A cached layer whose files would show other owners under this process's
   * uid/gid mapping (see `idmap.ts`) is extracted again under this mapping,
   * into a directory of its own (`layers/<key>~<id map key>`), instead of
   * being refused with a {@linkcode LayerIdMapError}. The shared copy stays
   * as it is. Default false. (The CLI's `--reextract-unmapped`.)
   */
  reextractUnmapped?: boolean;
}

/** `layer.json`: what a published layer is. */
export interface LayerRecord {
  /** The layer's diff_id (the cache key). */
  diffID: string;
  /**
   * The extracted tree depends on the parent layers (see `ApplyResult`):
   * published as `layers/<alg>-<hex>@<chain hex>`, not shared across bases.
   */
  dependsOnLowers?: boolean;
  /** The OCI chain ID of the layer over the parents it was extracted on. */
  chainID?: string;
  /** Digest of the blob it was extracted from. */
  digest: string;
  /** Media type of that blob. */
  mediaType: string;
  /** Size of that blob. */
  size: number;
  /** `treeRecord` of `fs/` as published (`strata verify` compares against it). */
  record: { digest: string; files: number; bytes: number };
  /**
   * The uids and gids of every inode of `fs/` (its root, implied parent
   * directories and whiteouts included), as the extracting process saw them:
   * sorted `[first, count]` runs. Absent in layers an older strata wrote.
   */
  ids?: TreeIds;
  /**
   * Some owner could not be set at extraction (the files kept the extracting
   * user's ids): the tree is right for {@linkcode idmap} alone.
   */
  ownersLost?: boolean;
  /**
   * Set on a layer extracted for one mapping alone, published as
   * `layers/<key>~<idMapKey>`: {@linkcode idMapKey} of {@linkcode idmap}.
   */
  idmapKey?: string;
  /** When it was published (RFC 3339). */
  created: string;
  /** How it was extracted. */
  mode: ResolveMode;
  /** The uid/gid mapping of the process that extracted it (inside to host). */
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

/**
 * A cached layer's files would show other owners under this process's
 * uid/gid mapping than those they were extracted with (see `idmap.ts`): the
 * message names the layer, its directory, the id, and both mappings.
 */
export class LayerIdMapError extends LayerResolveError {
  /** The layer's directory in the cache (`layers/<key>`). */
  readonly dir: string;
  /** Why it does not read back the same. */
  readonly misfit: IdMisfit;
  /** The mapping it was extracted under. */
  readonly written: IdMap;
  /** This process's mapping. */
  readonly current: IdMap;
  /** Creates the error. */
  constructor(diffID: string, dir: string, misfit: IdMisfit, written: IdMap, current: IdMap) {
    super(
      diffID,
      `its cached copy ${dir} was ${
        describeMisfit(misfit, written, current)
      }: its files would show wrong owners here. Pass --reextract-unmapped (the ` +
        "reextractUnmapped option) to extract it again under this mapping, into a copy of its own",
    );
    this.name = "LayerIdMapError";
    this.dir = dir;
    this.misfit = misfit;
    this.written = written;
    this.current = current;
  }
}

/** Maps a digest to its directory name in `layers/`: `sha256:ab..` becomes `sha256-ab..`. */
export function layerKey(diffID: string): string {
  const m = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-fA-F0-9]{32,})$/.exec(diffID);
  if (!m) throw new LayerResolveError(diffID, "the diff_id is not a valid digest");
  return `${m[1]}-${m[2].toLowerCase()}`;
}

/**
 * The OCI chain ID of the last of `diffIDs` (bottom first), per the image
 * spec's config.md: chainID(L1) = diffID(L1), chainID(Ln) =
 * sha256(chainID(Ln-1) + " " + diffID(Ln)).
 *
 * @example Usage
 * ```ts
 * import { chainID } from "./resolver.ts";
 * const a = "sha256:" + "a".repeat(64);
 * console.log(chainID([a]) === a); // true
 * ```
 */
export function chainID(diffIDs: readonly string[]): string {
  if (diffIDs.length === 0) throw new TypeError("chainID of no layers");
  let id = diffIDs[0];
  for (let i = 1; i < diffIDs.length; i++) {
    // Each step hashed once per process: the chain of layer n repeats the
    // steps of layers 2..n-1, which a run resolving every layer just did.
    const input = `${id} ${diffIDs[i]}`;
    let next = chainSteps.get(input);
    if (next === undefined) {
      next = "sha256:" + sha256Hex(input);
      if (chainSteps.size >= 4096) chainSteps.clear();
      chainSteps.set(input, next);
    }
    id = next;
  }
  return id;
}

const chainSteps = new Map<string, string>();

/**
 * The directory name in `layers/` of a layer whose tree depends on its
 * parents: `<alg>-<hex>@<chain hex>`, the chain being the layer's over
 * `parents` (diff_ids or layers, bottom first).
 *
 * @example Usage
 * ```ts
 * import { chainKey } from "./resolver.ts";
 * const a = "sha256:" + "a".repeat(64), b = "sha256:" + "b".repeat(64);
 * console.log(chainKey(b, [a])); // sha256-bbbb…@<hex of chainID([a, b])>
 * ```
 */
export function chainKey(
  diffID: string,
  parents: readonly (string | { diffID: string })[] = [],
): string {
  const ids = parents.map((p) => typeof p === "string" ? p : p.diffID);
  ids.push(diffID);
  const memo = ids.join(" ");
  let key = chainKeys.get(memo);
  if (key === undefined) {
    const chain = chainID(ids);
    key = `${layerKey(diffID)}@${chain.slice(chain.indexOf(":") + 1)}`;
    if (chainKeys.size >= 4096) chainKeys.clear();
    chainKeys.set(memo, key);
  }
  return key;
}

/** Chain keys computed in this process (a run looks each one up more than once). */
const chainKeys = new Map<string, string>();

/**
 * The diff_id key (`<alg>-<hex>`) of a directory name in `layers/`, with or
 * without an `@<chain hex>` suffix; undefined for other names.
 *
 * @example Usage
 * ```ts
 * import { keyOfLayerDir } from "./resolver.ts";
 * console.log(keyOfLayerDir("sha256-" + "a".repeat(64) + "@" + "c".repeat(64)));
 * ```
 */
export function keyOfLayerDir(name: string): string | undefined {
  const m = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*-[a-f0-9]{32,})(?:@[a-f0-9]{32,})?(?:~[a-f0-9]{16})?$/
    .exec(name);
  return m?.[1];
}

/** A lower directory of a layer extracted for one mapping alone (`layers/<key>~<id map key>/fs`). */
/** A layer written and not yet published: its tree, through an fd, for the layers over it. */
interface Staged {
  /** `/proc/self/fd/<fd>`: the staged tree. */
  path: string;
  /** The `O_PATH` fd of the tree, closed once the layer is published or failed. */
  fd: number;
  /** Where its tree will be published. */
  final: string;
  /** Settles when it is published (or failed). */
  published: Promise<string>;
}

function isOwnCopy(fs: string): boolean {
  return /~[a-f0-9]{16}\/fs$/.test(fs);
}

/**
 * The name, in a published layer's directory beside `fs/` and `layer.json`,
 * of the empty file that says which mapping extracted it
 * (`idmap-<idMapKey of layer.json's idmap>`): a process under that same
 * mapping knows with one `faccessat(2)` that the layer reads back as
 * extracted, without reading `layer.json`, and a verdict kept in memory
 * stays good while the file that named its mapping is there (a layer dir
 * replaced by another mapping's extraction has another one).
 */
export function idmapMarker(mapKey: string): string {
  return `idmap-${mapKey}`;
}

/**
 * A {@linkcode LayerResolver} that extracts each layer once into a cache
 * directory and returns the cached directory afterwards.
 *
 * - Keyed by diff_id: `layers/<alg>-<hex>/fs`. A cached resolve is one stat.
 *   A layer whose tree depends on its parents (`ApplyResult.dependsOnLowers`:
 *   an implied parent directory, a hardlink copied up, merged whiteouts) is
 *   keyed by its chain too: `layers/<alg>-<hex>@<chain hex>/fs` (a second
 *   stat), so the same layer over another base gets its own tree.
 * - Digests are verified while streaming (the layer's `uncompressed()`), so
 *   only verified bytes are ever published.
 * - Publishing is atomic: the layer is extracted below `tmp/<random>/`, its
 *   `layer.json` written, and the directory renamed into `layers/`.
 * - One extraction per layer: concurrent calls in this process share one
 *   promise; other processes wait on the flock(2) `locks/<key>.lock`, which a
 *   crashed holder does not keep.
 * - Leftovers of dead processes in `tmp/` are reclaimed at creation.
 * - One cache for every uid/gid mapping: a cached layer is used when its
 *   files show, under this process's mapping, the owners they were
 *   extracted with (the ids its `layer.json` records, see `idmap.ts`; read
 *   once per layer and process by a mapping other than the one that
 *   extracted it, never a tree walk). One that would show others is
 *   refused with a {@linkcode LayerIdMapError} before anything is extracted,
 *   or, with `reextractUnmapped`, extracted again under this mapping into
 *   `layers/<key>~<id map key>/`. So is a layer whose owners this mapping
 *   cannot set (a user namespace mapping only root): its tree, whose files
 *   kept the extracting user's ids, never takes the shared key, and neither
 *   does a layer whose tree depends on such a parent.
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
  /** Whether the cache's filesystem can hold layers (checked before the first extraction). */
  #fsChecked?: Promise<void>;
  #inflight = new Map<string, Promise<string>>();
  /** Layers this resolver has written and is recording, by chain key (see {@linkcode resolveEarly}). */
  #staged = new Map<string, Staged>();
  /** Applicator workers started ahead while a {@linkcode resolveAll} extracts, and how many run. */
  #workers?: ApplyWorkers;
  #workersUsers = 0;
  /**
   * Per published layer directory read here: the key of the mapping that
   * extracted it (its {@linkcode idmapMarker}), and why this mapping may not
   * use it, if so.
   */
  #fits = new Map<string, { writer: string; refusal?: LayerIdMapError }>();
  #mapKey?: string;
  /** `<root>/layers`, normalised once. */
  #layers?: string;

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

  /**
   * The directory the layer with this diff_id over `parents` (bottom first;
   * none: a base layer) is published as: `layers/<key>` when it is there or
   * nowhere, else `layers/<key>@<chain hex>` when that is there.
   */
  layerDir(diffID: string, parents: readonly (string | { diffID: string })[] = []): string {
    const fs = this.cachedPath(diffID, parents);
    return fs ? join(fs, "..") : join(this.root, "layers", layerKey(diffID));
  }

  /**
   * The lower directory of the layer with this diff_id over `parents`
   * (bottom first): the published one (see {@linkcode cachedPath}), else
   * where an independent layer would be published (`layers/<key>/fs`).
   */
  layerPath(diffID: string, parents: readonly (string | { diffID: string })[] = []): string {
    return this.cachedPath(diffID, parents) ?? join(this.root, "layers", layerKey(diffID), "fs");
  }

  /**
   * The published lower directory of the layer with this diff_id over
   * `parents` (bottom first) that this process may use, or undefined:
   * `layers/<key>/fs` (a layer whose tree does not depend on its parents),
   * else `layers/<key>@<chain hex>/fs`, when its files show the owners they
   * were extracted with under this process's mapping; else this mapping's
   * own copy, `layers/<key>[@<chain hex>]~<id map key>/fs`. One
   * `faccessat(2)` per directory looked at (two the first time in a
   * process); under another mapping than the one that extracted the layer,
   * a read of its `layer.json` too, once per process.
   *
   * @throws {LayerResolveError} when the layer's `layer.json` cannot be read.
   */
  cachedPath(
    diffID: string,
    parents: readonly (string | { diffID: string })[] = [],
  ): string | undefined {
    return this.#lookup(diffID, parents).path;
  }

  /**
   * Finds the layer: the path this process may use, or why the cached copy
   * (if any) may not be used.
   */
  #lookup(
    diffID: string,
    parents: readonly (string | { diffID: string })[],
  ): { path?: string; refusal?: LayerIdMapError } {
    const key = layerKey(diffID);
    const layers = this.#layers ??= join(this.root, "layers");
    let dir = `${layers}/${key}`;
    let v = this.#verdict(diffID, dir);
    if (v === "absent") {
      dir = `${layers}/${chainKey(diffID, parents)}`;
      v = this.#verdict(diffID, dir);
    }
    if (v === "fits") return { path: `${dir}/fs` };
    // This mapping's own copies: none unless the shared key was taken by a
    // copy it cannot use, or it could not set a layer's owners.
    const mapKey = this.#mapKey ??= idMapKey(this.idmap);
    for (const name of [`${key}~${mapKey}`, `${chainKey(diffID, parents)}~${mapKey}`]) {
      const own = `${layers}/${name}`;
      const r = this.#verdict(diffID, own);
      if (r === "absent") continue;
      if (r !== "fits") throw r; // its record says another mapping wrote it: damaged
      return { path: `${own}/fs` };
    }
    return { refusal: v === "absent" ? undefined : v };
  }

  /**
   * Whether the published layer directory `dir` is there and this
   * process's mapping shows its files with the owners they were extracted
   * with: `fits`, `absent`, or the error to refuse it with. One
   * `faccessat(2)` when this mapping extracted it (its marker file) or was
   * told before in this process; else decided from its `layer.json`.
   */
  #verdict(diffID: string, dir: string): "fits" | "absent" | LayerIdMapError {
    // Paths built by hand: `dir` is already normal, and a warm run makes a
    // few of them per layer.
    const known = this.#fits.get(dir);
    if (known) {
      if (accessible(`${dir}/${idmapMarker(known.writer)}`)) return known.refusal ?? "fits";
      this.#fits.delete(dir); // replaced, or removed
    }
    if (!accessible(`${dir}/fs`)) return "absent";
    const mapKey = this.#mapKey ??= idMapKey(this.idmap);
    if (accessible(`${dir}/${idmapMarker(mapKey)}`)) {
      this.#remember(dir, { writer: mapKey });
      return "fits";
    }
    const file = `${dir}/layer.json`;
    let record: LayerRecord;
    try {
      record = JSON.parse(readSmallText(file));
    } catch (e) {
      throw new LayerResolveError(
        diffID,
        `its record ${file} cannot be read (${(e as Error).message}); \`strata verify\` ` +
          "removes a damaged layer so that the next pull extracts it again",
        { cause: e },
      );
    }
    if (
      typeof record !== "object" || record === null || !isIdMap(record.idmap) ||
      (record.ids !== undefined && !isTreeIds(record.ids))
    ) {
      throw new LayerResolveError(
        diffID,
        `its record ${file} does not say which uid/gid mapping and ids its files were ` +
          "extracted with; `strata verify` removes a damaged layer so that the next pull " +
          "extracts it again",
      );
    }
    const misfit = layerMisfit(record, this.idmap);
    const refusal = misfit
      ? new LayerIdMapError(diffID, dir, misfit, record.idmap, this.idmap)
      : undefined;
    // Kept while the marker of the mapping that wrote it is there. An older
    // strata's layer has none: it gets one (it only repeats what layer.json
    // says), so later lookups and processes need no read either.
    const writer = idMapKey(record.idmap);
    const marker = `${dir}/${idmapMarker(writer)}`;
    if (!accessible(marker)) {
      try {
        writeFileSync(marker, new Uint8Array(), { mode: 0o600, createNew: true });
      } catch {
        return refusal ?? "fits"; // a read-only cache: read again next time
      }
    }
    this.#remember(dir, { writer, refusal });
    return refusal ?? "fits";
  }

  #remember(dir: string, verdict: { writer: string; refusal?: LayerIdMapError }): void {
    if (this.#fits.size >= 4096) this.#fits.clear();
    this.#fits.set(dir, verdict);
  }

  /**
   * The refusal of the first of `layers` (bottom first, each over those
   * before it) that is cached in a copy this mapping may not use and has no
   * copy of its own here; undefined when there is none or re-extraction was
   * asked for. Checked before anything is extracted, so that a refused image
   * changes nothing in the cache.
   */
  #firstRefusal(layers: readonly Layer[], from = 0): LayerIdMapError | undefined {
    if (this.#o.reextractUnmapped) return undefined;
    for (let i = from; i < layers.length; i++) {
      const r = this.#lookup(layers[i].diffID, layers.slice(0, i)).refusal;
      if (r) return r;
    }
    return undefined;
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
    try {
      const found = this.#lookup(layer.diffID, parents);
      if (found.path) return Promise.resolve(found.path);
      // Refused: this layer, or a parent that would be extracted first.
      const refusal = this.#o.reextractUnmapped
        ? undefined
        : found.refusal ?? this.#firstRefusal(parents);
      if (refusal) return Promise.reject(refusal);
    } catch (e) {
      return Promise.reject(e);
    }
    const key = chainKey(layer.diffID, parents);
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
    // Every layer cached (a warm run): their paths, without loading the
    // download machinery (overlay/prefetch.ts) into the process.
    const paths: string[] = [];
    try {
      options.signal?.throwIfAborted();
      for (let i = 0; i < layers.length; i++) {
        const path = this.cachedPath(layers[i].diffID, layers.slice(0, i));
        if (path === undefined) {
          // A layer cached in a copy this mapping may not use: refused
          // before anything is fetched or extracted.
          const refusal = this.#firstRefusal(layers, i);
          if (refusal) return Promise.reject(refusal);
          return this.#withWorkers(
            layers.slice(i),
            () => import("./prefetch.ts").then((m) => m.resolveLayers(this, layers, options)),
          );
        }
        paths.push(path);
      }
    } catch (e) {
      return Promise.reject(e);
    }
    for (const [i, path] of paths.entries()) {
      options.onLayer?.({
        type: "cached",
        index: i,
        layer: layers[i],
        at: performance.now(),
        path,
      });
    }
    return Promise.resolve(paths);
  }

  /**
   * Runs `resolve` with applicator workers started ahead for the layers of
   * `layers` big enough to be applied in one (4 MiB of blob or more), two
   * at most: one applies a layer while the other records the one before.
   * Started now, they load while the image's first layer is opened. Not
   * with an `apply` of the caller's own.
   */
  async #withWorkers<T>(layers: readonly Layer[], resolve: () => Promise<T>): Promise<T> {
    const big = layers.filter((l) => l.size >= 4 << 20).length;
    const cores = navigator.hardwareConcurrency ?? 1;
    if (this.#o.apply || big === 0 || cores < 2) return await resolve();
    const { ApplyWorkers } = await import("../layer/applicator.ts");
    const workers = this.#workers ??= new ApplyWorkers({ hashes: this.mode === "direct" });
    this.#workersUsers++;
    workers.warm(Math.min(big, 2));
    try {
      return await resolve();
    } finally {
      if (--this.#workersUsers === 0) {
        workers.close();
        this.#workers = undefined;
      }
    }
  }

  /** Reads the `layer.json` of a published layer (over `parents`, bottom first). */
  async record(
    diffID: string,
    parents: readonly (string | { diffID: string })[] = [],
  ): Promise<LayerRecord> {
    return JSON.parse(
      await readTextFile(join(this.layerDir(diffID, parents), "layer.json")),
    );
  }

  /**
   * Resolves `layer` as {@linkcode resolve} does, but settles as soon as the
   * layer is in the cache or, when this call extracts it, once its tree is
   * written: the next layer (over this one) may then be extracted while this
   * one is recorded and published. `published` settles with the published
   * lower directory, as `resolve` would. Used by {@linkcode resolveAll}.
   *
   * @example Usage
   * ```ts ignore
   * const { published } = await resolver.resolveEarly(image.layers[0], []);
   * const next = resolver.resolve(image.layers[1], [image.layers[0]]);
   * console.log(await published, await next);
   * ```
   */
  resolveEarly(
    layer: Layer,
    parents: readonly Layer[],
    signal?: AbortSignal,
  ): Promise<{ published: Promise<string> }> {
    try {
      const found = this.#lookup(layer.diffID, parents);
      if (found.path) return Promise.resolve({ published: Promise.resolve(found.path) });
      const refusal = this.#o.reextractUnmapped
        ? undefined
        : found.refusal ?? this.#firstRefusal(parents);
      if (refusal) return Promise.reject(refusal);
    } catch (e) {
      return Promise.reject(e);
    }
    const key = chainKey(layer.diffID, parents);
    const running = this.#inflight.get(key);
    if (running) return Promise.resolve({ published: running });
    let written!: () => void;
    const early = new Promise<void>((r) => (written = r));
    const published = this.#extract(layer, [...parents], signal, written)
      .finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, published);
    return Promise.race([early, published]).then(() => ({ published }));
  }

  /**
   * The lower directories for a layer over `parents`: each parent's
   * published one (resolving it first), or, for a parent this resolver has
   * written and is still recording (`#staged`), a path to its staged tree
   * through an `O_PATH` fd of our own (`fds`, to close once the layer is
   * applied). `finals` are where each parent is or will be published.
   */
  async #lowersFor(
    parents: readonly Layer[],
    signal?: AbortSignal,
  ): Promise<{ dirs: string[]; finals: string[]; staged: Staged[]; fds: number[] }> {
    const out = {
      dirs: [] as string[],
      finals: [] as string[],
      staged: [] as Staged[],
      fds: [] as number[],
    };
    try {
      for (let i = 0; i < parents.length; i++) {
        const st = this.#staged.get(chainKey(parents[i].diffID, parents.slice(0, i)));
        if (st) {
          // Opened now, while the owner's fd surely names the tree: ours
          // stays valid whatever the owner does next.
          const fd = openat(AT.FDCWD, st.path, O.PATH | O.DIRECTORY, 0);
          if (fd >= 0) {
            out.fds.push(fd);
            out.dirs.push(`/proc/self/fd/${fd}`);
            out.finals.push(st.final);
            out.staged.push(st);
            continue;
          }
          // No /proc here: the parent once it is published (or its failure).
          const dir = await st.published;
          out.dirs.push(dir);
          out.finals.push(dir);
          continue;
        }
        const dir = await this.resolve(parents[i], parents.slice(0, i), signal);
        out.dirs.push(dir);
        out.finals.push(dir);
      }
    } catch (e) {
      for (const fd of out.fds) close(fd);
      throw e;
    }
    return out;
  }

  async #extract(
    layer: Layer,
    parents: Layer[],
    signal?: AbortSignal,
    written?: () => void,
  ): Promise<string> {
    // Extraction on an overlayfs would publish layers until the first
    // whiteout fails (EPERM, as if unprivileged), and no mount of them could
    // work anyway. Checked before the first extraction, not when the cache
    // opens: a warm run, which extracts nothing, does not read mountinfo.
    this.#fsChecked ??= mountOf(this.root).then((m) => {
      if (m.fstype === "overlay") throw new Error(onOverlayfs(this.root));
    });
    await this.#fsChecked;
    const key = layerKey(layer.diffID);
    const chained = chainKey(layer.diffID, parents);
    const lockPath = join(this.root, "locks", `${key}.lock`);
    // Parents first, one at a time, before taking this layer's lock.
    let lowers = await this.#lowersFor(parents, signal);
    let lock: FileLock | null = null;
    try {
      signal?.throwIfAborted();
      // One lock per diff_id: one process extracts, the others then find
      // either key. A process never waits for a lock while holding another:
      // a parent still being recorded holds its lock, so this one is only
      // tried; when it is taken, the parents are waited for first.
      if (lowers.staged.length) lock = FileLock.tryAcquire(lockPath);
      if (!lock) {
        if (lowers.staged.length) {
          for (const fd of lowers.fds.splice(0)) close(fd);
          await Promise.allSettled(lowers.staged.map((s) => s.published));
          lowers = await this.#lowersFor(parents, signal);
        }
        lock = await FileLock.acquire(lockPath, signal);
      }
    } catch (e) {
      for (const fd of lowers.fds) close(fd);
      throw e;
    }
    let staging: Staged | undefined;
    try {
      // Another process published it while we waited.
      const published = this.#lookup(layer.diffID, parents);
      if (published.path) return published.path;
      if (published.refusal && !this.#o.reextractUnmapped) throw published.refusal;
      let dest = join(this.root, "layers", key);
      this.#o.onEvent?.({ type: "extract", diffID: layer.diffID, path: dest });
      const started = performance.now();
      const work = await TempWork.create(this.root);
      try {
        const staged = join(work.path, "layer");
        await mkdir(staged, { mode: 0o700 });
        let result: ApplyResult;
        try {
          result = await this.#applyTo(layer, join(staged, "fs"), work.path, lowers.dirs, signal)
            .catch((e) => {
              throw new LayerResolveError(layer.diffID, `extraction failed: ${e.message}`, {
                cause: e,
              });
            });
        } finally {
          for (const fd of lowers.fds.splice(0)) close(fd);
        }
        // The applicator hashed the files as it wrote them, and records the
        // tree from those digests (in its worker, while the next layer is
        // applied); else the record reads the files. The tree is in our
        // private tmp/ dir: nobody else writes to it meanwhile.
        const tree = result.record ??
          import("../layer/record.ts").then((m) =>
            m.treeRecord(join(staged, "fs"), { fileDigests: result.fileDigests })
          );
        tree.catch(() => {});
        // This mapping's own copy, never the shared key: when the shared
        // copy is one it may not use, when it could not set the owners the
        // layer names (that tree is right for this mapping only), or when
        // the tree took metadata from a parent that is such a copy.
        const own = published.refusal !== undefined || result.ownersLost ||
          (result.dependsOnLowers && lowers.finals.some(isOwnCopy));
        const mapKey = this.#mapKey ??= idMapKey(this.idmap);
        const name = (result.dependsOnLowers ? chained : key) + (own ? `~${mapKey}` : "");
        dest = join(this.root, "layers", name);
        const fs = join(dest, "fs");
        if (written) {
          // Written: the next layer may read this tree from here on.
          const fd = openat(AT.FDCWD, join(staged, "fs"), O.PATH | O.DIRECTORY, 0);
          if (fd < 0) throw new ErrnoError("open", -fd, join(staged, "fs"));
          staging = {
            path: `/proc/self/fd/${fd}`,
            fd,
            final: fs,
            // This very extraction's promise (resolveEarly set it before
            // the first await here).
            published: this.#inflight.get(chained) ??
              Promise.reject(new Error(`layer ${layer.diffID} is not in flight`)),
          };
          staging.published.catch(() => {});
          this.#staged.set(chained, staging);
          written();
        }
        const record: LayerRecord = {
          diffID: layer.diffID,
          dependsOnLowers: result.dependsOnLowers,
          chainID: chainID([...parents.map((p) => p.diffID), layer.diffID]),
          digest: layer.digest,
          mediaType: layer.mediaType,
          size: layer.size,
          record: await tree.then((t) => ({ digest: t.digest, files: t.files, bytes: t.bytes })),
          ids: (await tree).ids,
          ownersLost: result.ownersLost,
          ...(own ? { idmapKey: mapKey } : {}),
          created: new Date().toISOString(),
          mode: this.mode,
          idmap: this.idmap,
          warnings: result.warnings,
        };
        await writeTextFile(
          join(staged, "layer.json"),
          JSON.stringify(record, null, 2) + "\n",
          { mode: 0o600 },
        );
        await writeFile(join(staged, idmapMarker(mapKey)), new Uint8Array(), { mode: 0o600 });
        // Parents first: a layer written over a staged parent is published
        // only once that parent is (had it failed, this tree could be wrong).
        for (const st of lowers.staged) await st.published;
        try {
          await rename(staged, dest);
        } catch (e) {
          // Another process won the race (possible only if the lock file was
          // removed under us, e.g. by prune): its copy is as good as ours,
          // if this mapping may use it.
          const code = (e as { code?: string }).code;
          if (!(e instanceof Deno.errors.AlreadyExists) && code !== "ENOTEMPTY") throw e;
          const theirs = this.#lookup(layer.diffID, parents);
          if (!theirs.path) throw theirs.refusal ?? e;
          return theirs.path;
        }
        this.#o.onEvent?.({
          type: "published",
          diffID: layer.diffID,
          path: dest,
          ms: performance.now() - started,
        });
        return fs;
      } finally {
        if (staging) {
          this.#staged.delete(chained);
          close(staging.fd);
        }
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
      await mkdir(fs, { mode: 0o755 });
      return await this.#apply(layer, fs, {
        whiteouts: "direct",
        lowerDirs,
        signal,
        onWarning,
        record: true,
        workers: this.#workers,
      });
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
        workers: this.#workers,
      });
      await wd.seal();
      await rename(wd.resultPath(), fs);
      return r;
    } finally {
      await wd.cleanup();
    }
  }
}
