/**
 * What every image source shares: given a way to fetch manifests and blobs
 * (an OCI layout, an archive, a registry), walk from the root document
 * through indexes to one manifest, verify each document against the digest
 * that names it, and build the {@linkcode Image} and {@linkcode Layer}
 * objects the layer cache consumes.
 *
 * @module
 */
import { digestOf, openLayerTar, parseDigest, verifyDocument } from "./blob.ts";
import { choosePlatform, formatPlatform, hostPlatform, parsePlatform } from "./platform.ts";
import {
  type Descriptor,
  type Digest,
  type Image,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Layer,
  MediaType,
  type Platform,
} from "./types.ts";
import { openFile, openFileSync, statSync } from "../sys/files.ts";

/** Manifests and configs larger than this are refused (the OCI distribution spec suggests 4 MiB). */
export const MAX_DOCUMENT_SIZE = 4 << 20;

/**
 * A manifest, index or config that cannot be used: not JSON, the wrong
 * schema, a Docker schema 1 manifest, layers that do not match the config.
 *
 * @example Usage
 * ```ts
 * import { ManifestError } from "./source.ts";
 * const e = new ManifestError("manifest sha256:… of x", "not JSON");
 * console.assert(e.message.includes("not JSON"));
 * ```
 */
export class ManifestError extends Error {
  /** Builds the error for document `what`. */
  constructor(what: string, reason: string, options?: ErrorOptions) {
    super(`Invalid ${what}: ${reason}`, options);
    this.name = "ManifestError";
  }
}

/** A document fetched from a source, with the media type the source reported. */
export interface FetchedDocument {
  /** The bytes exactly as stored. */
  bytes: Uint8Array;
  /** Media type from the transport (a registry's Content-Type), if any. */
  mediaType?: string;
}

/**
 * Where an image's documents and blobs come from. The resolver verifies
 * what it reads; implementations only fetch.
 */
export interface ImageSource {
  /** The source as the user named it, for messages. */
  readonly name: string;
  /** Fetches the manifest or index that `desc` names (registries use their manifests endpoint). */
  fetchManifest(desc: Descriptor, signal?: AbortSignal): Promise<FetchedDocument>;
  /** Fetches a small blob (a config) whole. */
  fetchBlob(desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array>;
  /** Opens a (layer) blob as a stream, unverified. */
  openBlob(desc: Descriptor, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>>;
}

/** Options for {@linkcode resolveImage}. */
export interface ResolveOptions {
  /** `os/arch[/variant]` or a parsed platform; default the host's. */
  platform?: string | Platform;
  /** Cancels fetching. */
  signal?: AbortSignal;
}

const INDEX_TYPES = new Set<string>([MediaType.OciIndex, MediaType.DockerManifestList]);
const MANIFEST_TYPES = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest]);

/** A layer read from an {@linkcode ImageSource}. */
export class SourceLayer implements Layer {
  readonly digest: Digest;
  readonly diffID: Digest;
  readonly mediaType: string;
  readonly size: number;
  /** The layer's descriptor in the manifest. */
  readonly descriptor: Descriptor;
  #open: (signal?: AbortSignal) => Promise<ReadableStream<Uint8Array>>;

  /**
   * Builds a layer whose blob `open` returns.
   *
   * @example Usage
   * ```ts ignore
   * const layer = new SourceLayer(desc, diffID, (signal) => source.openBlob(desc, signal));
   * ```
   */
  constructor(
    descriptor: Descriptor,
    diffID: Digest,
    open: (signal?: AbortSignal) => Promise<ReadableStream<Uint8Array>>,
  ) {
    this.descriptor = descriptor;
    this.digest = descriptor.digest;
    this.diffID = diffID;
    this.mediaType = descriptor.mediaType;
    this.size = descriptor.size;
    this.#open = open;
  }

  /**
   * Opens the blob as stored, its digest unverified but its length held to
   * the descriptor's `size`: reading stops with {@linkcode BlobSizeError} at
   * the first byte past it, or at an end before it (whatever the source).
   */
  async compressed(signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const blob = await this.#open(signal);
    return blob.pipeThrough(exactSize(this.size, `layer ${this.digest}`));
  }

  /** Opens the tar, verifying the blob digest and diff_id as it streams. */
  uncompressed(signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    return openLayerTar(this, signal);
  }
}

/** The image strata's sources produce: an {@linkcode Image} that keeps its documents' bytes. */
export class SourceImage implements Image {
  readonly digest: Digest;
  readonly manifest: ImageManifest;
  readonly configDigest: Digest;
  readonly config: ImageConfig;
  readonly layers: readonly Layer[];
  readonly name?: string;
  /** The manifest's bytes, which hash to {@linkcode digest}. */
  readonly manifestBytes: Uint8Array;
  /** The config's bytes, which hash to {@linkcode configDigest}. */
  readonly configBytes: Uint8Array;
  /** The digest of the index the manifest was chosen from, if any. */
  readonly indexDigest?: Digest;

  /**
   * Assembles an image from verified parts.
   *
   * @example Usage
   * ```ts ignore
   * const image = new SourceImage({ digest, manifest, manifestBytes, config, configBytes, layers, name });
   * ```
   */
  constructor(parts: {
    digest: Digest;
    manifest: ImageManifest;
    manifestBytes: Uint8Array;
    config: ImageConfig;
    configBytes: Uint8Array;
    layers: Layer[];
    name?: string;
    indexDigest?: Digest;
  }) {
    this.digest = parts.digest;
    this.manifest = parts.manifest;
    this.manifestBytes = parts.manifestBytes;
    this.configDigest = parts.manifest.config.digest;
    this.config = parts.config;
    this.configBytes = parts.configBytes;
    this.layers = Object.freeze(parts.layers);
    if (parts.name !== undefined) this.name = parts.name;
    if (parts.indexDigest !== undefined) this.indexDigest = parts.indexDigest;
  }
}

/** Parses a JSON document, naming it in the error. */
export function parseJSON<T>(bytes: Uint8Array, what: string): T {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new ManifestError(what, `not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ManifestError(what, "not a JSON object");
  }
  return v as T;
}

/**
 * Checks that `d` is a descriptor (digest, media type, size) whose digest is
 * well formed, before anything uses it (a digest becomes a blob path).
 *
 * @example Usage
 * ```ts ignore
 * const desc = checkDescriptor(index.manifests[0], "index.json of oci:/x");
 * ```
 */
export function checkDescriptor(d: unknown, what: string): Descriptor {
  const desc = d as Descriptor;
  if (
    typeof desc !== "object" || desc === null || typeof desc.digest !== "string" ||
    typeof desc.mediaType !== "string" || typeof desc.size !== "number" || desc.size < 0 ||
    !Number.isSafeInteger(desc.size)
  ) {
    throw new ManifestError(what, `bad descriptor ${JSON.stringify(d)}`);
  }
  try {
    parseDigest(desc.digest);
  } catch (e) {
    throw new ManifestError(what, (e as Error).message, { cause: e });
  }
  return desc;
}

/** Tells what a parsed document is: by its mediaType field, else the transport's, else its shape. */
export function documentKind(
  doc: Record<string, unknown>,
  transportType: string | undefined,
  what: string,
): "index" | "manifest" {
  if (doc.schemaVersion === 1) {
    throw new ManifestError(
      what,
      "Docker schema 1 manifests are not supported (re-push the image with a current tool)",
    );
  }
  const mt = typeof doc.mediaType === "string" ? doc.mediaType : transportType;
  if (mt && INDEX_TYPES.has(mt)) return "index";
  if (mt && MANIFEST_TYPES.has(mt)) return "manifest";
  if (Array.isArray(doc.manifests)) return "index";
  if (doc.config && Array.isArray(doc.layers)) return "manifest";
  throw new ManifestError(
    what,
    `neither an image manifest nor an index (media type ${mt ?? "none"})`,
  );
}

/**
 * Refuses a document whose kind its bytes and a type declared for it (the
 * transport's Content-Type, the descriptor's mediaType) disagree on, or
 * whose bytes hold both an index's `manifests` and a manifest's `config` or
 * `layers`: the media type confusion of CVE-2021-41190, where one digest is
 * an image to one client and an index to another. containerd refuses the
 * same. A declared type that names neither kind (`application/json`) is no
 * claim.
 */
function checkKind(
  doc: Record<string, unknown>,
  kind: "index" | "manifest",
  declared: (string | undefined)[],
  what: string,
): void {
  if (doc.manifests !== undefined && (doc.config !== undefined || doc.layers !== undefined)) {
    throw new ManifestError(
      what,
      "it holds both an index's manifests and an image manifest's config or layers",
    );
  }
  for (const t of declared) {
    const k = !t
      ? undefined
      : INDEX_TYPES.has(t)
      ? "index"
      : MANIFEST_TYPES.has(t)
      ? "manifest"
      : undefined;
    if (k && k !== kind) {
      throw new ManifestError(
        what,
        `served as ${t}, but it is ${kind === "index" ? "an index" : "an image manifest"}`,
      );
    }
  }
}

/**
 * Resolves the image a root descriptor names: fetches the document, checks
 * it against the descriptor's digest and size, descends through indexes by
 * platform, then fetches and verifies the config. `prefetched` supplies the
 * root document when the caller already holds it (a registry tag, fetched
 * before its digest was known); it is still verified against `root.digest`.
 *
 * @example Usage
 * ```ts ignore
 * const image = await resolveImage(source, rootDescriptor, { platform: "linux/arm64" });
 * ```
 */
export async function resolveImage(
  source: ImageSource,
  root: Descriptor,
  options: ResolveOptions & { prefetched?: FetchedDocument } = {},
): Promise<SourceImage> {
  const want = typeof options.platform === "string"
    ? parsePlatform(options.platform)
    : options.platform ?? hostPlatform();
  let prefetched = options.prefetched;
  let desc = root;
  let indexDigest: Digest | undefined;
  for (let depth = 0;; depth++) {
    if (depth > 4) {
      throw new ManifestError(
        `index ${desc.digest} of ${source.name}`,
        "indexes nested too deeply",
      );
    }
    const what = `manifest ${desc.digest} of ${source.name}`;
    const fetched = prefetched ?? await source.fetchManifest(desc, options.signal);
    prefetched = undefined;
    checkSize(fetched.bytes, desc, what);
    await verifyDocument(fetched.bytes, desc.digest, what);
    const doc = parseJSON<Record<string, unknown>>(fetched.bytes, what);
    const kind = documentKind(doc, fetched.mediaType ?? desc.mediaType, what);
    checkKind(doc, kind, [fetched.mediaType, desc.mediaType], what);
    if (kind === "index") {
      const index = doc as unknown as ImageIndex;
      const iwhat = `index ${desc.digest} of ${source.name}`;
      if (!Array.isArray(index.manifests)) throw new ManifestError(iwhat, "no manifests array");
      const manifests = index.manifests.map((d) => checkDescriptor(d, iwhat));
      indexDigest ??= desc.digest;
      desc = choosePlatform(manifests, want, source.name);
      continue;
    }
    return await buildImage(source, desc, fetched.bytes, doc as unknown as ImageManifest, {
      signal: options.signal,
      indexDigest,
    });
  }
}

function checkSize(bytes: Uint8Array, desc: Descriptor, what: string) {
  if (desc.size !== UNKNOWN_SIZE && bytes.length !== desc.size) {
    throw new ManifestError(
      what,
      `size ${bytes.length} bytes, but its descriptor says ${desc.size}`,
    );
  }
}

/** Marks a root descriptor whose size is not known (a registry tag). */
export const UNKNOWN_SIZE: number = -1;

/**
 * Builds an image from a verified manifest: fetches and verifies the config,
 * checks the layers against the config's diff_ids.
 */
export async function buildImage(
  source: ImageSource,
  desc: Descriptor,
  manifestBytes: Uint8Array,
  manifest: ImageManifest,
  options: { signal?: AbortSignal; indexDigest?: Digest } = {},
): Promise<SourceImage> {
  const what = `manifest ${desc.digest} of ${source.name}`;
  if (manifest.schemaVersion !== 2) {
    throw new ManifestError(what, `schemaVersion ${manifest.schemaVersion}, expected 2`);
  }
  const configDesc = checkDescriptor(manifest.config, what);
  checkImageConfigType(manifest, configDesc, what);
  if (!Array.isArray(manifest.layers)) throw new ManifestError(what, "no layers array");
  const layerDescs = manifest.layers.map((d) => checkDescriptor(d, what));
  const cwhat = `config ${configDesc.digest} of ${source.name}`;
  if (configDesc.size > MAX_DOCUMENT_SIZE) {
    throw new ManifestError(cwhat, `${configDesc.size} bytes is larger than ${MAX_DOCUMENT_SIZE}`);
  }
  const configBytes = await source.fetchBlob(configDesc, options.signal);
  checkSize(configBytes, configDesc, cwhat);
  await verifyDocument(configBytes, configDesc.digest, cwhat);
  const config = parseJSON<ImageConfig>(configBytes, cwhat);
  checkContainerConfig(config, cwhat);
  const diffIDs = config.rootfs?.diff_ids;
  if (!Array.isArray(diffIDs)) throw new ManifestError(cwhat, "no rootfs.diff_ids");
  if (diffIDs.length !== layerDescs.length) {
    throw new ManifestError(
      what,
      `${layerDescs.length} layers but the config lists ${diffIDs.length} diff_ids`,
    );
  }
  const layers = layerDescs.map((d, i) => {
    try {
      parseDigest(diffIDs[i]);
    } catch (e) {
      throw new ManifestError(cwhat, `diff_ids[${i}]: ${(e as Error).message}`, { cause: e });
    }
    return new SourceLayer(d, diffIDs[i], (signal) => source.openBlob(d, signal));
  });
  return new SourceImage({
    digest: desc.digest,
    manifest,
    manifestBytes,
    config,
    configBytes,
    layers,
    name: source.name,
    indexDigest: options.indexDigest,
  });
}

const CONFIG_TYPES = new Set<string>([MediaType.OciConfig, MediaType.DockerConfig]);

/**
 * Refuses a manifest whose config is not an image config: an OCI artifact
 * (a Helm chart, a signature, an SBOM, a WASM module) stored in a registry
 * or layout like an image. Its "layers" are no filesystem, and its config
 * no container defaults; containers/image (podman, skopeo) refuses the same
 * ("unsupported image-specific operation on artifact"), and the artifact's
 * type is named (`artifactType`, else the config's media type). Either
 * config type goes with either manifest type, as containerd reads them.
 */
function checkImageConfigType(manifest: ImageManifest, config: Descriptor, what: string): void {
  if (CONFIG_TYPES.has(config.mediaType)) return;
  const artifactType: unknown = manifest.artifactType;
  const kind = typeof artifactType === "string" && artifactType
    ? `${JSON.stringify(artifactType)} (config media type ${JSON.stringify(config.mediaType)})`
    : JSON.stringify(config.mediaType);
  throw new ManifestError(
    what,
    `it is not a container image but an OCI artifact of type ${kind}; ` +
      `strata runs images whose config is ${MediaType.OciConfig} or ${MediaType.DockerConfig}`,
  );
}

/**
 * Checks the types of the container defaults strata uses (`config.config`:
 * `Env`, `Entrypoint`, `Cmd`, `User`, `WorkingDir`), as Go's JSON decoding
 * does for docker and containerd: a string where a list belongs would
 * otherwise be split into characters (`Cmd: "/bin/true"` ran `/`), and a
 * number in `Env` failed deep in the spec code. `null` means absent.
 */
function checkContainerConfig(config: ImageConfig, what: string): void {
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new ManifestError(what, "not a JSON object");
  }
  const c: unknown = config.config;
  if (c === undefined || c === null) return;
  if (typeof c !== "object" || Array.isArray(c)) {
    throw new ManifestError(what, "config is not a JSON object");
  }
  const fields = c as Record<string, unknown>;
  for (const key of ["Env", "Entrypoint", "Cmd"]) {
    const v = fields[key];
    if (v === undefined || v === null) continue;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) {
      throw new ManifestError(
        what,
        `config.${key} must be an array of strings, not ${JSON.stringify(v).slice(0, 80)}`,
      );
    }
  }
  for (const key of ["User", "WorkingDir"]) {
    const v = fields[key];
    if (v !== undefined && v !== null && typeof v !== "string") {
      throw new ManifestError(
        what,
        `config.${key} must be a string, not ${JSON.stringify(v).slice(0, 80)}`,
      );
    }
  }
}

/** Describes the platforms of an image for listings: `linux/amd64`. */
export function imagePlatform(config: ImageConfig): string {
  return formatPlatform({
    os: config.os,
    architecture: config.architecture,
    variant: config.variant,
  });
}

/** The digest of a document's bytes (sha256). */
export function documentDigest(bytes: Uint8Array): Digest {
  return digestOf(bytes);
}

/**
 * A blob or manifest the source does not have (deleted from a registry,
 * missing from a layout).
 *
 * @example Usage
 * ```ts
 * import { BlobNotFoundError } from "./source.ts";
 * const e = new BlobNotFoundError("sha256:ab", "oci:/tmp/x", "no file blobs/sha256/ab");
 * console.assert(e.digest === "sha256:ab");
 * ```
 */
export class BlobNotFoundError extends Error {
  /** The digest (or tag) that was looked up. */
  readonly digest: string;
  /** Builds the error for `digest` in source `where`. */
  constructor(digest: string, where: string, reason: string, options?: ErrorOptions) {
    super(`Blob ${digest} not found in ${where}: ${reason}`, options);
    this.name = "BlobNotFoundError";
    this.digest = digest;
  }
}

/**
 * A blob that is longer or shorter than the descriptor naming it says.
 *
 * @example Usage
 * ```ts
 * import { BlobSizeError } from "./source.ts";
 * const e = new BlobSizeError("layer sha256:ab", 10, "11 bytes or more");
 * console.assert(e.message.includes("descriptor says 10"));
 * ```
 */
export class BlobSizeError extends Error {
  /** Builds the error for content `what`; `actual` says what was found. */
  constructor(what: string, expected: number, actual: string, options?: ErrorOptions) {
    super(
      `Wrong size for ${what}: its descriptor says ${expected} bytes, the blob has ${actual}`,
      options,
    );
    this.name = "BlobSizeError";
  }
}

/**
 * A pass-through stage that errors with {@linkcode BlobSizeError} as soon as
 * more than `size` bytes arrive (so nothing past the size is read on), or
 * when the stream ends short of it.
 *
 * @example Usage
 * ```ts
 * import { exactSize } from "./source.ts";
 * const s = new Blob(["abc"]).stream().pipeThrough(exactSize(3, "a blob"));
 * console.assert(await new Response(s).text() === "abc");
 * ```
 */
export function exactSize(size: number, what: string): TransformStream<Uint8Array, Uint8Array> {
  let seen = 0;
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      seen += chunk.length;
      if (seen > size) throw new BlobSizeError(what, size, `${seen} bytes or more`);
      controller.enqueue(chunk);
    },
    flush() {
      if (seen < size) throw new BlobSizeError(what, size, `${seen} (it ends early)`);
    },
  });
}

/**
 * Reads a small file whole, refusing one that is not a regular file (a FIFO
 * would block, `/dev/zero` never end) or is larger than `max` bytes before
 * reading it, and one that grows while it is read: a manifest, index or
 * config must never make strata read without bound.
 *
 * @example Usage
 * ```ts ignore
 * const bytes = await readSmallFile("/tmp/layout/index.json", "index.json of oci:/tmp/layout");
 * ```
 */
export function readSmallFile(
  path: string,
  what: string,
  max = MAX_DOCUMENT_SIZE,
): Promise<Uint8Array> {
  // Synchronous: a few small files per image, each cheaper to read here than
  // through three round trips to Deno's thread pool (a warm `strata run`
  // reads index, manifest and config of a layout).
  try {
    const st = statSync(path);
    if (!st.isFile) throw new ManifestError(what, `${path} is not a regular file`);
    if (st.size > max) {
      throw new ManifestError(what, `${st.size} bytes is larger than the ${max} strata reads`);
    }
    const file = openFileSync(path, { read: true });
    try {
      // Still the regular file stat saw (not swapped for a FIFO meanwhile).
      const now = file.statSync();
      if (!now.isFile || now.ino !== st.ino || now.dev !== st.dev) {
        throw new ManifestError(what, `${path} changed while it was opened`);
      }
      // One byte more than stat said, to notice a file that grows meanwhile.
      const buf = new Uint8Array(st.size + 1);
      let off = 0;
      while (off < buf.length) {
        const n = file.readSync(buf.subarray(off));
        if (n === null || n === 0) break;
        off += n;
      }
      if (off > st.size) throw new ManifestError(what, `${path} grew while it was read`);
      return Promise.resolve(buf.subarray(0, off));
    } finally {
      file.close();
    }
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Bytes per read when streaming blobs from files (1 MiB): large reads keep per-chunk overhead low. */
export const FILE_CHUNK = 1024 * 1024;

/**
 * Streams `length` bytes of the file at `path` from `offset` (the whole file
 * from `offset` when `length` is undefined) in {@linkcode FILE_CHUNK} reads.
 * The file is opened before this resolves, so a missing file rejects here.
 *
 * @example Usage
 * ```ts ignore
 * const s = await fileStream("/tmp/archive.tar", 1536, 4096);
 * ```
 */
export async function fileStream(
  path: string,
  offset = 0,
  length?: number,
  signal?: AbortSignal,
): Promise<ReadableStream<Uint8Array>> {
  const file = await openFile(path, { read: true });
  try {
    if (offset) await file.seek(offset, Deno.SeekMode.Start);
  } catch (e) {
    file.close();
    throw e;
  }
  let left = length ?? Infinity;
  let closed = false;
  const close = () => {
    if (!closed) {
      closed = true;
      file.close();
    }
  };
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      try {
        signal?.throwIfAborted();
        if (left <= 0) {
          close();
          return c.close();
        }
        const buf = new Uint8Array(Math.min(FILE_CHUNK, left));
        const n = await file.read(buf);
        if (n === null) {
          close();
          if (left !== Infinity) {
            throw new RangeError(`Unexpected end of ${path}: ${left} bytes missing`);
          }
          return c.close();
        }
        left -= n;
        c.enqueue(n === buf.length ? buf : buf.subarray(0, n));
      } catch (e) {
        close();
        throw e;
      }
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 2 });
}
