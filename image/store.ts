/**
 * The image metadata store, `<cacheRoot>/images/`: manifests and configs by
 * digest, and names pointing at manifest digests, so that an image pulled
 * once opens again offline (its layers live in the layer cache, keyed by
 * diff_id). Layout:
 *
 * - `blobs/ALG/HEX`     manifests and configs, exactly as pulled (verified on read)
 * - `refs/HEX.json`     one file per name (HEX = sha256 of the canonical name):
 *                       `{ name, digest, configDigest, source, platform, saved }`
 *
 * One file per name means two processes saving different names never lose
 * each other's update; every write is a temp file renamed into place.
 *
 * @module
 */
import { join } from "@std/path";
import { hashDocument, parseDigest, verifyDocument } from "./blob.ts";
import { parseRef, refString, registryRefString } from "./ref.ts";
import {
  buildImage,
  imagePlatform,
  type ImageSource,
  ManifestError,
  parseJSON,
  SourceImage,
} from "./source.ts";
import type { Descriptor, Digest, Image, ImageManifest } from "./types.ts";
import {
  lstatSync,
  mkdir,
  mkdirSync,
  readDir,
  readFile,
  readFileSync,
  remove,
  rename,
  writeFile,
} from "../sys/files.ts";

/** One name in the store. */
export interface StoredImage {
  /** Canonical name (`docker.io/library/busybox:latest`, `oci:/abs/dir:tag`). */
  name: string;
  /** Manifest digest. */
  digest: Digest;
  /** Config digest. */
  configDigest: Digest;
  /** Where the image came from (a transport reference), to fetch layers again. */
  source?: string;
  /** `os/arch[/variant]` from the config. */
  platform: string;
  /** Total size of the layer blobs. */
  size: number;
  /** When the name was saved pointing at this image (ISO 8601); saving it again keeps it. */
  saved: string;
}

/**
 * A name or digest the store does not hold.
 *
 * @example Usage
 * ```ts
 * import { ImageNotFoundError } from "./store.ts";
 * console.assert(new ImageNotFoundError("x", "/c/images").message.includes("x"));
 * ```
 */
export class ImageNotFoundError extends Error {
  /** The name or digest looked up. */
  readonly ref: string;
  /** Builds the error for `ref` in the store at `dir`. */
  constructor(ref: string, dir: string, options?: ErrorOptions) {
    super(`Image ${ref} is not in the image store ${dir}`, options);
    this.name = "ImageNotFoundError";
    this.ref = ref;
  }
}

/**
 * A stored image's layer whose blob is not available here: the store keeps
 * manifests and configs only, so a layer missing from the layer cache has to
 * come from the image's source, and that failed.
 *
 * @example Usage
 * ```ts
 * import { LayerNotAvailableError } from "./store.ts";
 * const e = new LayerNotAvailableError("sha256:ab", "busybox", "offline");
 * console.assert(e.message.includes("sha256:ab"));
 * ```
 */
export class LayerNotAvailableError extends Error {
  /** The layer's blob digest. */
  readonly digest: Digest;
  /** Builds the error for layer `digest` of image `name`. */
  constructor(digest: Digest, name: string, reason: string, options?: ErrorOptions) {
    super(
      `Layer ${digest} of ${name} is not available offline (the image store keeps only manifests and configs): ${reason}`,
      options,
    );
    this.name = "LayerNotAvailableError";
    this.digest = digest;
  }
}

/**
 * The canonical form of a name: registry references fully qualified
 * (`busybox` -> `docker.io/library/busybox:latest`), other transports with
 * absolute paths.
 *
 * @example Usage
 * ```ts
 * import { canonicalName } from "./store.ts";
 * console.assert(canonicalName("docker://busybox") === "docker.io/library/busybox:latest");
 * ```
 */
export function canonicalName(name: string): string {
  const r = parseRef(name);
  return r.transport === "docker" ? registryRefString(r) : refString(r);
}

const isDigest = (s: string) => {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
};

/**
 * Parses a name record (`refs/HEX.json`, named `what` in errors) and checks
 * its fields' types, so that a damaged one is named rather than failing
 * later where a field is used.
 */
function parseRecord(bytes: Uint8Array, what: string): StoredImage {
  const rec = parseJSON<Record<string, unknown>>(bytes, what);
  const bad = (why: string) => new ManifestError(what, why);
  if (typeof rec.name !== "string" || !rec.name) throw bad("name is not a string");
  for (const k of ["digest", "configDigest"]) {
    if (typeof rec[k] !== "string" || !isDigest(rec[k])) throw bad(`${k} is not a digest`);
  }
  if (typeof rec.platform !== "string") throw bad("platform is not a string");
  if (!Number.isSafeInteger(rec.size) || (rec.size as number) < 0) {
    throw bad("size is not a byte count");
  }
  if (typeof rec.saved !== "string") throw bad("saved is not a time");
  if (rec.source !== undefined && typeof rec.source !== "string") {
    throw bad("source is not a reference");
  }
  return rec as unknown as StoredImage;
}

/** Opens a stored image's source again (pinned to `digest`), to fetch layers not cached. */
export type SourceOpener = (source: string, digest: Digest, signal?: AbortSignal) => Promise<Image>;

/** Image metadata under `<cacheRoot>/images/`. */
export class ImageStore {
  /** The `images/` directory. */
  readonly dir: string;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * Opens (creating if needed) the store of the cache at `root`.
   *
   * @example Usage
   * ```ts
   * import { ImageStore } from "./store.ts";
   * const root = await Deno.makeTempDir();
   * const store = await ImageStore.create(root);
   * console.assert((await store.list()).length === 0);
   * await Deno.remove(root, { recursive: true });
   * ```
   */
  static create(root: string): Promise<ImageStore> {
    const dir = join(root, "images");
    // Synchronous: cheaper than a thread-pool round trip each (every run opens the store).
    try {
      for (const d of [root, dir, join(dir, "blobs"), join(dir, "refs")]) {
        mkdirSync(d, { recursive: true, mode: 0o700 });
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.resolve(new ImageStore(dir));
  }

  #blobPath(digest: Digest): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.dir, "blobs", algorithm, hex);
  }

  async #refPath(name: string): Promise<string> {
    return join(this.dir, "refs", `${(await hashDocument(name)).slice(7)}.json`);
  }

  /**
   * The file that records `name` (canonicalised), whether or not it exists:
   * `refs/<sha256 of the name>.json`.
   *
   * @example Usage
   * ```ts ignore
   * const file = await store.refFile("busybox"); // .../images/refs/<hex>.json
   * ```
   */
  refFile(name: string): Promise<string> {
    return this.#refPath(canonicalName(name));
  }

  async #atomicWrite(path: string, bytes: Uint8Array): Promise<void> {
    await mkdir(join(path, ".."), { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp-${crypto.randomUUID()}`;
    try {
      await writeFile(tmp, bytes, { mode: 0o600 });
      await rename(tmp, path);
    } catch (e) {
      await remove(tmp).catch(() => {});
      throw e;
    }
  }

  async #putBlob(bytes: Uint8Array, digest: Digest): Promise<void> {
    const path = this.#blobPath(digest);
    try {
      lstatSync(path); // synchronous: one metadata call, on every warm run
      return; // content-addressed: already there, verified when it was written
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    await verifyDocument(bytes, digest, `blob ${digest} to store`);
    await this.#atomicWrite(path, bytes);
  }

  /**
   * Saves `image`'s manifest and config and points `name` at it.
   *
   * @example Usage
   * ```ts ignore
   * const image = await openImage("oci:/tmp/layout:v1");
   * await store.save(image, "myapp:v1", { source: "oci:/tmp/layout:v1" });
   * ```
   */
  async save(image: Image, name: string, options: { source?: string } = {}): Promise<StoredImage> {
    const canonical = canonicalName(name);
    const enc = new TextEncoder();
    const manifestBytes = image instanceof SourceImage
      ? image.manifestBytes
      : enc.encode(JSON.stringify(image.manifest));
    const configBytes = image instanceof SourceImage
      ? image.configBytes
      : enc.encode(JSON.stringify(image.config));
    const refPath = await this.#refPath(canonical);
    await Promise.all([
      this.#putBlob(configBytes, image.configDigest),
      this.#putBlob(manifestBytes, image.digest),
    ]);
    let previous: StoredImage | undefined;
    try {
      previous = this.#readRecord(refPath, canonical);
    } catch {
      previous = undefined; // unreadable: rewrite it
    }
    const record: StoredImage = {
      name: canonical,
      digest: image.digest,
      configDigest: image.configDigest,
      ...(options.source ? { source: options.source } : {}),
      platform: imagePlatform(image.config),
      size: image.layers.reduce((n, l) => n + l.size, 0),
      saved: new Date().toISOString(),
    };
    // The name already points at this image (every warm `strata run` of a
    // layout saves it again): keep the record, and when it was first saved.
    if (
      previous && previous.digest === record.digest &&
      previous.configDigest === record.configDigest && previous.source === record.source &&
      previous.platform === record.platform && previous.size === record.size
    ) return previous;
    await this.#atomicWrite(refPath, enc.encode(JSON.stringify(record, null, 2) + "\n"));
    return record;
  }

  /**
   * Looks up a name (canonicalised) or a manifest digest. Returns undefined
   * when the store has neither.
   */
  async resolve(nameOrDigest: string): Promise<StoredImage | undefined> {
    if (isDigest(nameOrDigest)) {
      return (await this.list()).find((r) => r.digest === nameOrDigest);
    }
    let canonical: string;
    try {
      canonical = canonicalName(nameOrDigest);
    } catch {
      return undefined;
    }
    return this.#readRecord(await this.#refPath(canonical), canonical);
  }

  /** The record at `path` when it is the one of `canonical`, else undefined. */
  #readRecord(path: string, canonical: string): StoredImage | undefined {
    try {
      const rec = parseRecord(
        readFileSync(path), // a few hundred bytes
        `image store entry for ${canonical}`,
      );
      return rec.name === canonical ? rec : undefined;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  /** Lists every name, sorted. */
  async list(): Promise<StoredImage[]> {
    const out: StoredImage[] = [];
    for await (const e of readDir(join(this.dir, "refs"))) {
      if (!e.isFile || !e.name.endsWith(".json")) continue;
      try {
        out.push(parseRecord(
          await readFile(join(this.dir, "refs", e.name)),
          `image store entry ${e.name}`,
        ));
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err; // removed meanwhile
      }
    }
    return out.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  /**
   * The name records (`refs/*.json`) that cannot be read, are not records,
   * or are stored under a file that is not their name's: their file path
   * and why. `strata verify` removes them (the next pull saves the name again).
   */
  async damagedRecords(): Promise<{ path: string; reason: string }[]> {
    const out: { path: string; reason: string }[] = [];
    for await (const e of readDir(join(this.dir, "refs"))) {
      if (!e.isFile || !e.name.endsWith(".json")) continue;
      const path = join(this.dir, "refs", e.name);
      try {
        const rec = parseRecord(await readFile(path), `image store entry ${e.name}`);
        if (await this.#refPath(rec.name) !== path) {
          out.push({ path, reason: `it holds the name ${rec.name}, stored under another` });
        }
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) continue; // removed meanwhile
        out.push({ path, reason: (err as Error).message });
      }
    }
    return out;
  }

  /**
   * Removes a name, or every name of a manifest digest, then deletes the
   * manifests and configs no remaining name uses. Returns the removed names;
   * throws {@linkcode ImageNotFoundError} when nothing matched.
   */
  async remove(nameOrDigest: string): Promise<string[]> {
    const all = await this.list();
    let victims: StoredImage[];
    if (isDigest(nameOrDigest)) victims = all.filter((r) => r.digest === nameOrDigest);
    else {
      const rec = await this.resolve(nameOrDigest);
      victims = rec ? [rec] : [];
    }
    if (!victims.length) throw new ImageNotFoundError(nameOrDigest, this.dir);
    for (const v of victims) await remove(await this.#refPath(v.name)).catch(() => {});
    const keep = new Set<string>();
    for (const r of all) {
      if (victims.some((v) => v.name === r.name)) continue;
      keep.add(r.digest);
      keep.add(r.configDigest);
    }
    for (const v of victims) {
      for (const d of [v.digest, v.configDigest]) {
        if (!keep.has(d)) await remove(this.#blobPath(d)).catch(() => {});
      }
    }
    return victims.map((v) => v.name);
  }

  /**
   * Opens a stored image (by name or digest) from the store alone, verifying
   * manifest and config again. Its layers' blobs are fetched from the
   * recorded source only if something actually reads them (a layer missing
   * from the layer cache); when that fails, reading errors with
   * {@linkcode LayerNotAvailableError}.
   */
  async open(
    nameOrDigest: string,
    options: { openSource?: SourceOpener; signal?: AbortSignal } = {},
  ): Promise<SourceImage> {
    const rec = await this.resolve(nameOrDigest);
    if (!rec) throw new ImageNotFoundError(nameOrDigest, this.dir);
    const what = `stored image ${rec.name}`;
    const read = async (digest: Digest) => {
      try {
        return await readFile(this.#blobPath(digest));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) {
          throw new ImageNotFoundError(`${rec.name} (blob ${digest} is missing)`, this.dir, {
            cause: e,
          });
        }
        throw e;
      }
    };
    const manifestBytes = await read(rec.digest);
    await verifyDocument(manifestBytes, rec.digest, `manifest of ${what}`);
    const manifest = parseJSON<ImageManifest>(manifestBytes, `manifest of ${what}`);
    let remote: Promise<Image> | undefined;
    const openLayer = async (desc: Descriptor, signal?: AbortSignal) => {
      if (!rec.source || !options.openSource) {
        throw new LayerNotAvailableError(
          desc.digest,
          rec.name,
          "no source to fetch it from is recorded",
        );
      }
      try {
        remote ??= options.openSource(rec.source, rec.digest, signal);
        const image = await remote;
        const layer = image.layers.find((l) => l.digest === desc.digest);
        if (!layer) throw new Error(`${rec.source} no longer has this layer`);
        return await layer.compressed(signal);
      } catch (e) {
        remote = undefined;
        throw new LayerNotAvailableError(
          desc.digest,
          rec.name,
          `fetching it from ${rec.source} failed: ${(e as Error).message}`,
          { cause: e },
        );
      }
    };
    const source: ImageSource = {
      name: rec.name,
      fetchManifest: () => Promise.resolve({ bytes: manifestBytes }),
      fetchBlob: (desc) => read(desc.digest),
      openBlob: openLayer,
    };
    const image = await buildImage(
      source,
      { mediaType: manifest.mediaType ?? "", digest: rec.digest, size: manifestBytes.length },
      manifestBytes,
      manifest,
      { signal: options.signal },
    );
    return image;
  }
}
