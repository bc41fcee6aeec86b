/**
 * Blob plumbing shared by every image source: a pass-through stage that
 * verifies a digest while bytes stream by, decompression chosen by media type
 * and checked against the stream's magic bytes, and {@linkcode openLayerTar},
 * which chains both so that a layer is read once and verified twice (blob
 * digest and diff_id) on the way.
 *
 * Decompression uses `node:zlib`, the fastest decompressor available to Deno
 * here (gzip and zstd; see FINDINGS.md), whose work runs on libuv's thread
 * pool rather than on the JavaScript thread.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import * as zlib from "node:zlib";
import { type Digest, type Layer, MediaType } from "./types.ts";

/** Hash algorithms strata verifies, with the length of their hex encoding. */
const ALGORITHMS: Record<string, number> = { sha256: 64, sha512: 128 };

/**
 * A digest string that is malformed or names an algorithm strata cannot
 * verify.
 *
 * @example Usage
 * ```ts
 * import { InvalidDigestError, parseDigest } from "./blob.ts";
 * try {
 *   parseDigest("md5:abc");
 * } catch (e) {
 *   console.assert(e instanceof InvalidDigestError);
 * }
 * ```
 */
export class InvalidDigestError extends Error {
  /** The offending digest string. */
  readonly digest: string;
  /** Builds the error; `reason` says what is wrong with `digest`. */
  constructor(digest: string, reason: string, options?: ErrorOptions) {
    super(`Invalid digest ${JSON.stringify(digest)}: ${reason}`, options);
    this.name = "InvalidDigestError";
    this.digest = digest;
  }
}

/**
 * Splits `algorithm:hex` and checks both halves.
 *
 * @example Usage
 * ```ts
 * import { parseDigest } from "./blob.ts";
 * const { algorithm, hex } = parseDigest(
 *   "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
 * );
 * console.assert(algorithm === "sha256" && hex.length === 64);
 * ```
 */
export function parseDigest(digest: Digest): { algorithm: string; hex: string } {
  if (typeof digest !== "string") {
    throw new InvalidDigestError(String(digest), "not a string");
  }
  const colon = digest.indexOf(":");
  if (colon <= 0) throw new InvalidDigestError(digest, "expected ALGORITHM:HEX");
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  const len = ALGORITHMS[algorithm];
  if (len === undefined) {
    throw new InvalidDigestError(
      digest,
      `unsupported algorithm ${JSON.stringify(algorithm)} (strata verifies ${
        Object.keys(ALGORITHMS).join(", ")
      })`,
    );
  }
  if (hex.length !== len || !/^[0-9a-f]+$/.test(hex)) {
    throw new InvalidDigestError(
      digest,
      `expected ${len} lowercase hex digits after "${algorithm}:"`,
    );
  }
  return { algorithm, hex };
}

/**
 * Content did not hash to the digest that names it.
 *
 * @example Usage
 * ```ts
 * import { DigestMismatchError } from "./blob.ts";
 * const e = new DigestMismatchError("sha256:aa", "sha256:bb", "layer x");
 * console.assert(e.expected === "sha256:aa" && e.actual === "sha256:bb");
 * ```
 */
export class DigestMismatchError extends Error {
  /** The digest the content was named by. */
  readonly expected: Digest;
  /** The digest the content actually has. */
  readonly actual: Digest;
  /** What was verified, for example `layer sha256:… of busybox`. */
  readonly what: string;
  /** Builds the error for content `what`. */
  constructor(expected: Digest, actual: Digest, what: string, options?: ErrorOptions) {
    super(
      `Digest mismatch for ${what}: expected ${expected}, got ${actual} (the content is corrupt or was tampered with)`,
      options,
    );
    this.name = "DigestMismatchError";
    this.expected = expected;
    this.actual = actual;
    this.what = what;
  }
}

/**
 * A media type strata cannot read (for a layer: not a tar, tar+gzip or
 * tar+zstd in its OCI or Docker spelling).
 *
 * @example Usage
 * ```ts
 * import { decompress, UnsupportedMediaTypeError } from "./blob.ts";
 * try {
 *   decompress("application/x-foo", "layer x");
 * } catch (e) {
 *   console.assert(e instanceof UnsupportedMediaTypeError);
 * }
 * ```
 */
export class UnsupportedMediaTypeError extends Error {
  /** The media type. */
  readonly mediaType: string;
  /** Builds the error for content `what`. */
  constructor(mediaType: string, what: string, options?: ErrorOptions) {
    super(
      `Unsupported media type ${
        JSON.stringify(mediaType)
      } for ${what}: expected an OCI or Docker layer (tar, tar+gzip or tar+zstd)`,
      options,
    );
    this.name = "UnsupportedMediaTypeError";
    this.mediaType = mediaType;
  }
}

/**
 * The bytes of a blob are not in the format its media type claims (for
 * example a `tar+gzip` layer that does not start with the gzip magic), or
 * they fail to decompress.
 *
 * @example Usage
 * ```ts
 * import { BlobFormatError } from "./blob.ts";
 * const e = new BlobFormatError("layer x", "not gzip");
 * console.assert(e.message.includes("layer x"));
 * ```
 */
export class BlobFormatError extends Error {
  /** Builds the error for content `what`. */
  constructor(what: string, reason: string, options?: ErrorOptions) {
    super(`Cannot read ${what}: ${reason}`, options);
    this.name = "BlobFormatError";
  }
}

/**
 * Returns a pass-through stage that hashes every chunk and, at the end of the
 * stream, errors with {@linkcode DigestMismatchError} unless the bytes hash to
 * `expected`. Chunks are passed on unchanged (no copies).
 *
 * @param expected `sha256:…` or `sha512:…`
 * @param what what the bytes are, for the error message
 *
 * @example Usage
 * ```ts
 * import { verifyDigest } from "./blob.ts";
 * const empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
 * const out = new Response(new Blob([]).stream().pipeThrough(verifyDigest(empty, "nothing")));
 * console.assert((await out.arrayBuffer()).byteLength === 0);
 * ```
 */
export function verifyDigest(
  expected: Digest,
  what: string,
): TransformStream<Uint8Array, Uint8Array> {
  const { algorithm } = parseDigest(expected);
  let hash: Hash = createHash(algorithm);
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      hash.update(chunk);
      controller.enqueue(chunk);
    },
    flush() {
      const actual = `${algorithm}:${hash.digest("hex")}`;
      hash = createHash(algorithm);
      if (actual !== expected) throw new DigestMismatchError(expected, actual, what);
    },
  });
}

/** Computes the digest of `bytes` (`sha256` unless told otherwise). */
export function digestOf(bytes: Uint8Array | string, algorithm = "sha256"): Digest {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
}

/**
 * Checks that `bytes` hash to `expected`, throwing {@linkcode DigestMismatchError}
 * otherwise. For small documents (manifests, indexes, configs) held in memory.
 *
 * @example Usage
 * ```ts
 * import { verifyBytes } from "./blob.ts";
 * verifyBytes(
 *   new Uint8Array(),
 *   "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
 *   "an empty blob",
 * );
 * ```
 */
export function verifyBytes(bytes: Uint8Array, expected: Digest, what: string): void {
  const { algorithm } = parseDigest(expected);
  const actual = digestOf(bytes, algorithm);
  if (actual !== expected) throw new DigestMismatchError(expected, actual, what);
}

/** Compression of a layer blob. */
export type Compression = "none" | "gzip" | "zstd";

const LAYER_COMPRESSION: Record<string, Compression> = {
  [MediaType.OciLayer]: "none",
  [MediaType.OciLayerGzip]: "gzip",
  [MediaType.OciLayerZstd]: "zstd",
  [MediaType.OciLayerNondistributable]: "none",
  [MediaType.OciLayerNondistributableGzip]: "gzip",
  [MediaType.OciLayerNondistributableZstd]: "zstd",
  [MediaType.DockerLayer]: "none",
  [MediaType.DockerLayerGzip]: "gzip",
  [MediaType.DockerLayerZstd]: "zstd",
  [MediaType.DockerForeignLayerGzip]: "gzip",
  "application/vnd.docker.image.rootfs.foreign.diff.tar": "none",
};

/**
 * Tells the compression a layer media type declares, or throws
 * {@linkcode UnsupportedMediaTypeError}.
 *
 * @example Usage
 * ```ts
 * import { compressionOf } from "./blob.ts";
 * console.assert(compressionOf("application/vnd.oci.image.layer.v1.tar+zstd") === "zstd");
 * ```
 */
export function compressionOf(mediaType: string, what = "a layer"): Compression {
  const c = LAYER_COMPRESSION[mediaType];
  if (c === undefined) throw new UnsupportedMediaTypeError(mediaType, what);
  return c;
}

/** Recognises compression from the first bytes of a blob. */
export function sniffCompression(head: Uint8Array): Compression | undefined {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (
    head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f &&
    head[3] === 0xfd
  ) return "zstd";
  if (head.length >= 4) return "none";
  return undefined;
}

/** Output chunk size of the decompressors: large chunks keep per-chunk overhead low. */
const ZLIB_CHUNK = 256 * 1024;

/**
 * Returns a stage that decompresses a layer blob of `mediaType` into its tar
 * (plain tar passes through). The first bytes are checked against the media
 * type: a gzip or zstd media type whose bytes are something else, or a plain
 * tar media type whose bytes are compressed, errors with
 * {@linkcode BlobFormatError} naming both. An unknown media type throws
 * {@linkcode UnsupportedMediaTypeError} straight away.
 *
 * @example Usage
 * ```ts
 * import { gzipSync } from "node:zlib";
 * import { decompress } from "./blob.ts";
 * const gz = new Uint8Array(gzipSync(new TextEncoder().encode("hello")));
 * const out = new Blob([gz]).stream()
 *   .pipeThrough(decompress("application/vnd.oci.image.layer.v1.tar+gzip", "a layer"));
 * console.assert(await new Response(out).text() === "hello");
 * ```
 */
export function decompress(
  mediaType: string,
  what: string,
): TransformStream<Uint8Array, Uint8Array> {
  const declared = compressionOf(mediaType, what);
  let head: Uint8Array | undefined = new Uint8Array(0);
  let inner: Inner | undefined;

  const mismatch = (found: Compression | undefined) =>
    new BlobFormatError(
      what,
      `media type ${mediaType} declares ${
        declared === "none" ? "an uncompressed tar" : declared
      } but the content ${
        found === "none" || found === undefined
          ? `does not start with the ${declared} magic bytes`
          : `is ${found}-compressed`
      }`,
    );

  const start = (controller: TransformStreamDefaultController<Uint8Array>, bytes: Uint8Array) => {
    const found = sniffCompression(bytes);
    if (declared === "none") {
      if (found === "gzip" || found === "zstd") throw mismatch(found);
    } else if (found !== declared) throw mismatch(found);
    inner = declared === "none" ? passThrough(controller) : zlibStage(declared, controller, what);
  };

  return new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, controller) {
      if (!inner) {
        // Gather the first 4 bytes to sniff; chunks this small only happen in tests.
        const joined = new Uint8Array(head!.length + chunk.length);
        joined.set(head!);
        joined.set(chunk, head!.length);
        if (joined.length < 4) {
          head = joined;
          return;
        }
        head = undefined;
        start(controller, joined);
        chunk = joined;
      }
      await inner!.write(chunk);
    },
    async flush(controller) {
      if (!inner) {
        const bytes = head!;
        head = undefined;
        if (bytes.length === 0 && declared === "none") return; // an empty plain blob
        start(controller, bytes);
        if (bytes.length) await inner!.write(bytes);
      }
      await inner!.end();
    },
    cancel() {
      inner?.destroy();
    },
  });
}

interface Inner {
  write(chunk: Uint8Array): Promise<void> | void;
  end(): Promise<void> | void;
  destroy(): void;
}

function passThrough(controller: TransformStreamDefaultController<Uint8Array>): Inner {
  return {
    write: (chunk) => controller.enqueue(chunk),
    end: () => {},
    destroy: () => {},
  };
}

/**
 * Drives a node:zlib decompressor from a TransformStream: input is written
 * without waiting for each chunk to be processed (only for `drain`), so the
 * thread pool works while JavaScript hands over the next chunk.
 */
function zlibStage(
  kind: "gzip" | "zstd",
  controller: TransformStreamDefaultController<Uint8Array>,
  what: string,
): Inner {
  // A deep input queue keeps the thread pool busy while JavaScript is elsewhere.
  const opts = { chunkSize: ZLIB_CHUNK, writableHighWaterMark: 4 << 20 };
  const z = kind === "gzip" ? zlib.createGunzip(opts) : zlib.createZstdDecompress(opts);
  let failed: Error | undefined;
  let ended = false;
  const waiters = new Set<(e?: Error) => void>();
  const wake = (e?: Error) => {
    for (const w of [...waiters]) w(e);
  };
  z.on("data", (b: Uint8Array) => {
    if (failed) return;
    try {
      controller.enqueue(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
    } catch (e) {
      // The readable side was cancelled; stop decompressing.
      failed = e as Error;
      z.destroy();
    }
  });
  z.on("error", (e: Error) => {
    failed ??= new BlobFormatError(what, `${kind} decompression failed: ${e.message}`, {
      cause: e,
    });
    wake(failed);
  });
  z.on("end", () => {
    ended = true;
    wake();
  });
  const wait = (done: () => boolean) =>
    new Promise<void>((resolve, reject) => {
      const w = (e?: Error) => {
        if (e) {
          waiters.delete(w);
          reject(e);
        } else if (done()) {
          waiters.delete(w);
          resolve();
        }
      };
      waiters.add(w);
    });
  let drained = true;
  z.on("drain", () => {
    drained = true;
    wake();
  });
  return {
    async write(chunk) {
      if (failed) throw failed;
      if (!z.write(chunk)) {
        drained = false;
        await wait(() => drained);
      }
      if (failed) throw failed;
    },
    async end() {
      if (failed) throw failed;
      z.end();
      if (!ended) await wait(() => ended);
      if (failed) throw failed;
    },
    destroy() {
      failed ??= new Error(`${what}: decompression cancelled`);
      z.destroy();
    },
  };
}

/**
 * Opens the uncompressed tar of `layer`: the blob as stored, verified against
 * `layer.digest`, decompressed by `layer.mediaType`, verified against
 * `layer.diffID`. The stream errors (rather than closes) on any mismatch, so a
 * consumer that saw it close normally has read verified bytes. Layer sources
 * implement {@linkcode Layer.uncompressed} with it.
 *
 * @example Usage
 * ```ts ignore
 * import { openLayerTar } from "./blob.ts";
 * const tar = await openLayerTar(image.layers[0]);
 * for await (const chunk of tar) consume(chunk);
 * ```
 */
export async function openLayerTar(
  layer: Layer,
  signal?: AbortSignal,
): Promise<ReadableStream<Uint8Array>> {
  const what = `layer ${layer.digest}`;
  const compression = compressionOf(layer.mediaType, what);
  parseDigest(layer.digest);
  parseDigest(layer.diffID);
  const blob = await layer.compressed(signal);
  let s = blob.pipeThrough(verifyDigest(layer.digest, `${what} (blob)`), { signal });
  if (compression === "none" && layer.diffID === layer.digest) {
    // Same bytes, same digest: one hash suffices. Still refuse compressed bytes.
    return s.pipeThrough(decompress(layer.mediaType, what), { signal });
  }
  s = s.pipeThrough(decompress(layer.mediaType, what), { signal });
  return s.pipeThrough(verifyDigest(layer.diffID, `${what} (uncompressed, diff_id)`), { signal });
}
