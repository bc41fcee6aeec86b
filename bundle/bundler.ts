/**
 * The seed's `CachingBundler`: turns an image into a runnable bundle whose
 * rootfs is a temporary overlay on the image's cached layers.
 *
 * Each bundle lives at `<root>/containers/<id>/`:
 *
 * ```
 * containers/<id>/lock         flock(2)ed while the bundle exists (dies with its process)
 * containers/<id>/bundle.json  the image and the layer diff_ids the bundle uses
 * containers/<id>/bundle/      the bundle itself (tmpfs: upper, work, rootfs, config.json)
 * ```
 *
 * The directory is prepared under a temporary name with its lock held and
 * `bundle.json` written, then renamed into place, so `prune` never sees a
 * bundle without its record, and sees a bundle's layers before they are
 * resolved. {@linkcode liveBundles} lists the bundles whose lock is held;
 * {@linkcode reclaimStaleBundles} removes those of dead processes (unmounting
 * what a crash left mounted).
 *
 * @module
 */

import { join } from "@std/path";
import type { Image } from "../image/types.ts";
import { CachingLayerResolver, type LayerResolver } from "../overlay/resolver.ts";
import { unmountBelow } from "../sys/mount.ts";
import {
  bootstrapBundle,
  type Bundle,
  type BundleBootstrapper,
  BundleError,
  type OverlayBundle,
} from "./bootstrap.ts";
import { withImageConfig, withRootFS } from "./options.ts";
import type { SpecOption } from "./spec.ts";
import { JSONSpecWriter, type RuntimeSpecWriter } from "./writer.ts";
import { exists } from "../sys/files.ts";
import { MAX_LOWER_LAYERS } from "../sys/mount.ts";
import {
  lstat,
  mkdirSync,
  type OpenFile,
  openFile,
  openFileSync,
  readDir,
  readTextFile,
  remove,
  removeSync,
  renameSync,
  writeTextFileSync,
} from "../sys/files.ts";

/** What `containers/<id>/bundle.json` records. */
export interface BundleRecord {
  /** The bundle id. */
  id: string;
  /** The image's name, when known. */
  image?: string;
  /** The image's manifest digest. */
  imageDigest: string;
  /** The diff_ids of the layers the bundle mounts, bottom first. */
  diffIDs: string[];
  /** The pid of the process that made it. */
  pid: number;
  /** When it was made (RFC 3339). */
  created: string;
}

/** Options of {@linkcode CachingBundler.create}. */
export interface CachingBundlerOptions {
  /** Resolves layers to lower directories. Default: `CachingLayerResolver.create(root)`. */
  resolver?: LayerResolver;
  /** Writes `config.json`. Default: a {@linkcode JSONSpecWriter}. */
  writer?: RuntimeSpecWriter;
  /** Mounts the bundle. Default: {@linkcode bootstrapBundle}. */
  bootstrap?: BundleBootstrapper;
  /** Size limit of each bundle's tmpfs. */
  tmpfsSize?: string | number;
  /** Receives warnings (from the default spec writer). */
  onWarning?: (message: string) => void;
}

/** A bundle made by {@linkcode CachingBundler.bundle}. */
export interface CachedBundle extends Bundle, AsyncDisposable {
  /** The bundle id. */
  readonly id: string;
  /** The bundle directory (`containers/<id>/bundle`). */
  readonly path: string;
  /** The rootfs (`containers/<id>/bundle/rootfs`). */
  readonly rootfs: string;
  /** The lower directories, bottom first. */
  readonly lower: readonly string[];
  /** Unmounts, releases the lock and removes `containers/<id>`; idempotent. */
  cleanup(): Promise<void>;
}

/**
 * A bundle id is already in use by a live bundle.
 *
 * @example Usage
 * ```ts
 * import { BundleExistsError } from "./bundler.ts";
 * console.log(new BundleExistsError("c1", "/var/lib/strata/containers/c1").message);
 * ```
 */
export class BundleExistsError extends Error {
  /** Creates the error. */
  constructor(readonly id: string, readonly path: string, options?: ErrorOptions) {
    super(`cannot create bundle "${id}": ${path} is in use by a running container`, options);
    this.name = "BundleExistsError";
  }
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * Tells whether `id` is a valid bundle (and runc container) id.
 *
 * @example Usage
 * ```ts
 * import { validBundleId } from "./bundler.ts";
 * console.log(validBundleId("web-1"), validBundleId("../x")); // true false
 * ```
 */
export function validBundleId(id: string): boolean {
  return ID_RE.test(id);
}

/**
 * Creates bundles for images, caching their layers (the seed's
 * `CachingBundler`).
 *
 * @example Usage
 * ```ts ignore
 * import { CachingBundler } from "./bundler.ts";
 * import { runContainer } from "./run.ts";
 * import { withArgs } from "./options.ts";
 * const bundler = await CachingBundler.create("/var/lib/strata");
 * const bundle = await bundler.bundle(image, "c1", withArgs("/bin/echo", "hi"));
 * const { status } = await runContainer(bundle); // cleans the bundle up
 * ```
 */
export class CachingBundler {
  /** The cache root. */
  readonly root: string;
  /** `<root>/containers`. */
  readonly containers: string;
  #resolver: LayerResolver;
  #writer?: RuntimeSpecWriter;
  #bootstrap: BundleBootstrapper;
  #o: CachingBundlerOptions;

  private constructor(root: string, resolver: LayerResolver, o: CachingBundlerOptions) {
    this.root = root;
    this.containers = join(root, "containers");
    this.#resolver = resolver;
    this.#writer = o.writer;
    this.#bootstrap = o.bootstrap ?? bootstrapBundle;
    this.#o = o;
  }

  /**
   * Opens the cache at `root` (creating it), ready to make bundles.
   *
   * @example Usage
   * ```ts ignore
   * import { CachingBundler } from "./bundler.ts";
   * const bundler = await CachingBundler.create("/var/lib/strata");
   * ```
   */
  static async create(root: string, options: CachingBundlerOptions = {}): Promise<CachingBundler> {
    const resolver = options.resolver ?? await CachingLayerResolver.create(root);
    mkdirSync(join(root, "containers"), { recursive: true, mode: 0o700 });
    return new CachingBundler(root, resolver, options);
  }

  /**
   * Makes a bundle for `image` with id `id`: resolves (extracting when
   * needed) every layer, mounts the rootfs overlay, and writes `config.json`
   * from the image config first and `options` after (so the caller's win).
   * On any failure everything made is removed.
   *
   * @throws {BundleExistsError} when a live bundle already has this id.
   *
   * @example Usage
   * ```ts ignore
   * import { CachingBundler } from "./bundler.ts";
   * import { withUser } from "./options.ts";
   * const bundler = await CachingBundler.create("/var/lib/strata");
   * await using bundle = await bundler.bundle(image, "c1", withUser("1000:1000"));
   * ```
   */
  async bundle(
    image: Image,
    id: string,
    ...options: (SpecOption | AbortSignal)[]
  ): Promise<CachedBundle> {
    if (!validBundleId(id)) {
      throw new BundleError(id, `invalid bundle id "${id}": use letters, digits, "_", "." and "-"`);
    }
    if (image.layers.length > MAX_LOWER_LAYERS) {
      // Refused before any layer is fetched: the overlay could never be mounted.
      throw new BundleError(
        id,
        `image ${image.name ?? image.digest} has ${image.layers.length} layers; ` +
          `overlayfs stacks at most ${MAX_LOWER_LAYERS}`,
      );
    }
    const signal = options.find((o): o is AbortSignal => o instanceof AbortSignal);
    const specOptions = options.filter((o): o is SpecOption => typeof o === "function");
    const dir = join(this.containers, id);
    const { lock, tmp } = await this.#claim(id, image);
    let overlay: OverlayBundle | undefined;
    let placed = false;
    try {
      try {
        renameSync(tmp, dir); // synchronous: one rename, on every run
      } catch (e) {
        // A directory of that name: live (refuse) or left by a dead process (reclaim, retry).
        if (!(e instanceof Deno.errors.AlreadyExists) && !/ENOTEMPTY|not empty/i.test(String(e))) {
          throw e;
        }
        if (!(await reclaimBundle(this.root, id))) throw new BundleExistsError(id, dir);
        renameSync(tmp, dir);
      }
      placed = true;
      const lower: string[] = [];
      if (this.#resolver.resolveAll) {
        // Downloads overlap extraction; layers still apply in order.
        lower.push(...await this.#resolver.resolveAll(image.layers, { signal }));
      } else {
        for (let i = 0; i < image.layers.length; i++) {
          lower.push(
            await this.#resolver.resolve(image.layers[i], image.layers.slice(0, i), signal),
          );
        }
      }
      overlay = await this.#bootstrap(join(dir, "bundle"), lower, {
        tmpfsSize: this.#o.tmpfsSize,
        signal,
      });
      const writer = this.#writer ??
        new JSONSpecWriter({ what: image.name ?? image.digest, onWarning: this.#o.onWarning });
      await writer.write(
        overlay.configPath,
        withRootFS(overlay.rootfs),
        withImageConfig(image.config, overlay.rootfs),
        ...specOptions,
      );
    } catch (e) {
      await overlay?.cleanup().catch(() => {});
      await remove(placed ? dir : tmp, { recursive: true }).catch(() => {});
      lock.close();
      throw e;
    }
    const stop: unknown = image.config.config?.StopSignal;
    return cachedBundle(id, dir, overlay, lock, typeof stop === "string" ? stop : undefined);
  }

  /** Makes `containers/.tmp-<random>` with its lock held and the record written. */
  #claim(id: string, image: Image): Promise<{ lock: OpenFile; tmp: string }> {
    return claimContainer(this.containers, id, image);
  }
}

/**
 * Claims `image`'s layers under the name `id`: makes
 * `containersDir/.tmp-<random>/` holding a `lock` (held by the returned
 * file) and a `bundle.json` record listing the diff_ids, which `prune` and
 * `verify` honour while the lock is held. The caller renames the directory
 * to its name and closes the lock when done; on failure nothing is left.
 *
 * @example Usage
 * ```ts ignore
 * import { claimContainer } from "./bundler.ts";
 * const { lock, tmp } = await claimContainer("/var/lib/strata/containers", "export-1", image);
 * ```
 */
export async function claimContainer(
  containersDir: string,
  id: string,
  image: Image,
): Promise<{ lock: OpenFile; tmp: string }> {
  // Synchronous calls: a fresh directory, a lock nobody else can hold yet and
  // a small record cost less here than a thread-pool round trip each.
  const tmp = join(containersDir, `.tmp-${crypto.randomUUID().slice(0, 13)}`);
  mkdirSync(tmp, { mode: 0o700 });
  const lock = openFileSync(join(tmp, "lock"), { write: true, create: true, mode: 0o600 });
  try {
    lock.lockSync(true);
    const record: BundleRecord = {
      id,
      image: image.name,
      imageDigest: image.digest,
      diffIDs: image.layers.map((l) => l.diffID),
      pid: Deno.pid,
      created: new Date().toISOString(),
    };
    writeTextFileSync(join(tmp, "bundle.json"), JSON.stringify(record));
  } catch (e) {
    lock.close();
    await remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return { lock, tmp };
}

function cachedBundle(
  id: string,
  dir: string,
  overlay: OverlayBundle,
  lock: OpenFile,
  stopSignal: string | undefined,
): CachedBundle {
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    cleaning ??= (async () => {
      try {
        await overlay.cleanup();
        try {
          removeSync(dir, { recursive: true }); // a lock and a record: small
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
      } catch (e) {
        cleaning = undefined;
        throw e;
      }
      // Released last: until now prune must keep this bundle's layers.
      try {
        lock.close();
      } catch {
        // already closed
      }
    })();
  return {
    id,
    path: overlay.path,
    rootfs: overlay.rootfs,
    lower: overlay.lower,
    ...(stopSignal ? { stopSignal } : {}),
    cleanup,
    [Symbol.asyncDispose]: cleanup,
  };
}

/** A bundle directory found under `containers/`. */
export interface BundleInfo {
  /** Its id (the directory name). */
  id: string;
  /** `containers/<id>`. */
  path: string;
  /** Its record, when readable. */
  record?: BundleRecord;
}

/** Tries the lock of `containers/<name>`; returns the open, locked file when it was free. */
async function tryLockDir(dir: string): Promise<OpenFile | "held" | "missing"> {
  let f: OpenFile;
  try {
    f = await openFile(join(dir, "lock"), { write: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "missing";
    throw e;
  }
  if (await f.tryLock(true)) return f;
  f.close();
  return "held";
}

async function readRecord(dir: string): Promise<BundleRecord | undefined> {
  try {
    return JSON.parse(await readTextFile(join(dir, "bundle.json"))) as BundleRecord;
  } catch {
    return undefined;
  }
}

async function* bundleDirs(root: string): AsyncGenerator<{ name: string; path: string }> {
  const containers = join(root, "containers");
  try {
    for await (const e of readDir(containers)) {
      if (e.isDirectory) yield { name: e.name, path: join(containers, e.name) };
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

async function youngerThan(path: string, ms: number): Promise<boolean> {
  try {
    const st = await lstat(path);
    return Date.now() - (st.mtime?.getTime() ?? 0) < ms;
  } catch {
    return false;
  }
}

/**
 * Lists the bundles in use (their lock is held by a live process), with the
 * layers each one mounts: `prune` must keep those layers.
 *
 * @example Usage
 * ```ts ignore
 * import { liveBundles } from "./bundler.ts";
 * const keep = new Set((await liveBundles("/var/lib/strata")).flatMap((b) => b.record?.diffIDs ?? []));
 * ```
 */
export async function liveBundles(root: string): Promise<BundleInfo[]> {
  const out: BundleInfo[] = [];
  for await (const { name, path } of bundleDirs(root)) {
    const l = await tryLockDir(path);
    if (l === "held") {
      const record = await readRecord(path);
      out.push({ id: record?.id ?? name, path, record });
    } else if (l !== "missing") l.close();
  }
  return out;
}

/**
 * Lists the bundle directories no live process holds: left by a process that
 * died before cleaning up (or half-made ones).
 *
 * @example Usage
 * ```ts ignore
 * import { staleBundles } from "./bundler.ts";
 * console.log((await staleBundles("/var/lib/strata")).map((b) => b.id));
 * ```
 */
export async function staleBundles(root: string): Promise<BundleInfo[]> {
  const out: BundleInfo[] = [];
  for await (const { name, path } of bundleDirs(root)) {
    const l = await tryLockDir(path);
    if (l === "held") continue;
    if (l !== "missing") l.close();
    else if (name.startsWith(".tmp-") && await youngerThan(path, 60_000)) continue; // being made
    out.push({ id: name, path, record: await readRecord(path) });
  }
  return out;
}

/**
 * Removes the bundle directory `containers/<id>` if no live process holds it,
 * unmounting whatever a crashed process left mounted there. Returns false
 * when it is in use.
 *
 * @example Usage
 * ```ts ignore
 * import { reclaimBundle } from "./bundler.ts";
 * await reclaimBundle("/var/lib/strata", "c1");
 * ```
 */
export async function reclaimBundle(root: string, id: string): Promise<boolean> {
  const dir = join(root, "containers", id);
  if (!(await exists(dir))) return true;
  const l = await tryLockDir(dir);
  if (l === "held") return false;
  try {
    await unmountBelow(dir);
    await remove(dir, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  } finally {
    if (l !== "missing") l.close();
  }
  return true;
}

/**
 * Removes every stale bundle (see {@linkcode staleBundles}); returns their ids.
 *
 * @example Usage
 * ```ts ignore
 * import { reclaimStaleBundles } from "./bundler.ts";
 * console.log(await reclaimStaleBundles("/var/lib/strata"));
 * ```
 */
export async function reclaimStaleBundles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const b of await staleBundles(root)) {
    if (await reclaimBundle(root, b.path.split("/").at(-1)!)) out.push(b.id);
  }
  return out;
}
