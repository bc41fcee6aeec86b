/**
 * Blob plumbing shared by every image source: a pass-through stage that
 * verifies a digest while bytes stream by, decompression chosen by media type
 * and checked against the stream's magic bytes, and {@linkcode openLayerTar},
 * which chains both so that a layer is read once and verified twice (blob
 * digest and diff_id) on the way.
 *
 * Decompression uses `node:zlib`, the fastest decompressor available to Deno
 * here (gzip and zstd; see FINDINGS.md), whose work runs on libuv's thread
 * pool rather than on the JavaScript thread; streamed hashing uses
 * `node:crypto`. Both are loaded only when a stream needs them: the first
 * `node:` module a process loads boots Deno's Node compatibility layer
 * (~20 ms), which a warm `strata run` (no layer to read) must not pay. Small
 * documents (manifests, indexes, configs) are hashed with WebCrypto
 * ({@linkcode verifyDocument}, {@linkcode hashDocument}).
 *
 * @module
 */
import type { Hash } from "node:crypto";
import type * as Zlib from "node:zlib";
import { type Digest, type Layer, MediaType } from "./types.ts";

type NodeCrypto = typeof import("node:crypto");

let cryptoModule: Promise<NodeCrypto> | undefined;
let zlibModule: Promise<typeof Zlib> | undefined;
let cryptoSync: NodeCrypto | undefined;

/** `node:crypto`, imported on first use. */
function nodeCrypto(): Promise<NodeCrypto> {
  return cryptoModule ??= import("node:crypto");
}

/** `node:crypto` for the synchronous helpers, loaded on first use without an `await`. */
function nodeCryptoSync(): NodeCrypto {
  if (cryptoSync) return cryptoSync;
  const proc = (globalThis as { process?: { getBuiltinModule?(id: string): unknown } }).process;
  const mod = proc?.getBuiltinModule?.("node:crypto") as NodeCrypto | undefined;
  if (!mod) throw new Error("node:crypto is not available in this runtime");
  return cryptoSync = mod;
}

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
  let createHash: NodeCrypto["createHash"];
  let hash: Hash;
  return new TransformStream<Uint8Array, Uint8Array>({
    async start() {
      createHash = (await nodeCrypto()).createHash;
      hash = createHash(algorithm);
    },
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

/**
 * Computes the digest of `bytes` (`sha256` unless told otherwise),
 * synchronously. The first call loads `node:crypto` (~20 ms in a process that
 * has no `node:` module yet); code on a latency-sensitive path should use
 * {@linkcode hashDocument} instead.
 *
 * @example Usage
 * ```ts
 * import { digestOf } from "./blob.ts";
 * console.log(digestOf("")); // "sha256:e3b0c442…"
 * ```
 */
export function digestOf(bytes: Uint8Array | string, algorithm = "sha256"): Digest {
  return `${algorithm}:${nodeCryptoSync().createHash(algorithm).update(bytes).digest("hex")}`;
}

const WEBCRYPTO: Record<string, string> = { sha256: "SHA-256", sha512: "SHA-512" };
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * Computes the digest of `bytes` (`sha256` or `sha512`) with WebCrypto: for
 * documents held in memory, without loading `node:crypto`.
 *
 * @example Usage
 * ```ts
 * import { hashDocument } from "./blob.ts";
 * console.log(await hashDocument(new TextEncoder().encode("{}"))); // "sha256:44136fa3…"
 * ```
 */
export async function hashDocument(
  bytes: Uint8Array | string,
  algorithm = "sha256",
): Promise<Digest> {
  const name = WEBCRYPTO[algorithm];
  if (!name) {
    throw new InvalidDigestError(
      `${algorithm}:`,
      `unsupported algorithm ${JSON.stringify(algorithm)} (strata verifies ${
        Object.keys(ALGORITHMS).join(", ")
      })`,
    );
  }
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  const sum = new Uint8Array(await crypto.subtle.digest(name, data as Uint8Array<ArrayBuffer>));
  let hex = "";
  for (const b of sum) hex += HEX[b];
  return `${algorithm}:${hex}`;
}

/**
 * Checks that `bytes` hash to `expected`, rejecting with
 * {@linkcode DigestMismatchError} otherwise; the asynchronous twin of
 * {@linkcode verifyBytes}, with WebCrypto (no `node:crypto`). For small
 * documents (manifests, indexes, configs) held in memory.
 *
 * @example Usage
 * ```ts
 * import { verifyDocument } from "./blob.ts";
 * await verifyDocument(
 *   new Uint8Array(),
 *   "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
 *   "an empty blob",
 * );
 * ```
 */
export async function verifyDocument(
  bytes: Uint8Array,
  expected: Digest,
  what: string,
): Promise<void> {
  const { algorithm } = parseDigest(expected);
  const actual = await hashDocument(bytes, algorithm);
  if (actual !== expected) throw new DigestMismatchError(expected, actual, what);
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
  // A zstd skippable frame (RFC 8878 section 3.1.2) may come first.
  if (
    head.length >= 4 && (head[0] & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d &&
    head[3] === 0x18
  ) return "zstd";
  if (head.length >= 4) return "none";
  return undefined;
}

/**
 * Output chunk size of the decompressors: large chunks keep per-chunk
 * overhead low (1 MiB against 256 KiB, with 1 MiB file reads: ~10% less
 * time to inflate and verify the bench's Debian and 32 MiB layers).
 */
const ZLIB_CHUNK = 1024 * 1024;

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
  const check = (bytes: Uint8Array) => {
    const found = sniffCompression(bytes);
    const bad = declared === "none" ? found === "gzip" || found === "zstd" : found !== declared;
    if (!bad) return;
    throw new BlobFormatError(
      what,
      `media type ${mediaType} declares ${
        declared === "none" ? "an uncompressed tar" : declared
      } but the content ${
        found === "none" || found === undefined
          ? `does not start with the ${declared} magic bytes`
          : `is ${found}-compressed`
      }`,
    );
  };
  // Gathers the first 4 bytes (chunks that small only happen in tests) and checks them.
  let head: Uint8Array | undefined = new Uint8Array(0);
  const sniff = (chunk: Uint8Array | undefined): Uint8Array | undefined => {
    if (!head) return chunk;
    const joined = chunk ? new Uint8Array(head.length + chunk.length) : head;
    if (chunk) {
      joined.set(head);
      joined.set(chunk, head.length);
    }
    if (chunk && joined.length < 4) {
      head = joined;
      return undefined;
    }
    head = undefined;
    if (joined.length === 0 && declared === "none") return joined; // an empty plain blob
    check(joined);
    return joined;
  };
  if (declared === "none") {
    return new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        const c = sniff(chunk);
        if (c) controller.enqueue(c);
      },
      flush(controller) {
        const c = sniff(undefined);
        if (c?.length) controller.enqueue(c);
      },
    });
  }
  return zlibPair(declared, what, sniff);
}

/**
 * Follows the frame structure of a zstd stream (RFC 8878 section 3.1) without
 * decompressing: frame headers and block headers are read, block contents
 * skipped, so it costs a few operations per 128 KiB block. node:zlib's zstd
 * decoder in Deno ends quietly on a truncated frame (yielding what it has, or
 * nothing) and ignores bytes after the last frame, where the zstd CLI and Go
 * refuse both; this is what notices them, so a damaged zstd layer is called
 * truncated rather than a diff_id mismatch, and a compressed archive is not
 * silently cut short.
 *
 * It also cuts the stream for that decoder, which drops the rest of a write
 * once a frame ends in it (and outputs nothing for a stream that starts with
 * a skippable frame): {@linkcode ZstdFrames.push} returns the data frames'
 * bytes in pieces that never run past the end of a frame, skippable frames
 * left out, so that several frames (zstd:chunked layers hold one per file
 * chunk) decode as the zstd CLI decodes them.
 */
class ZstdFrames {
  #what: string;
  #state: "magic" | "skippable" | "descriptor" | "header" | "block" | "checksum" = "magic";
  #need = 4;
  #buf = new Uint8Array(16);
  #have = 0;
  #skip = 0;
  #checksum = false;
  #frames = 0;
  #offset = 0;
  /** The bytes being skipped are a skippable frame's (else a block's). */
  #skippable = false;
  /** A frame ends when the bytes being skipped (its last block's) are. */
  #lastBlock = false;
  /** A data frame ended at the current position. */
  #ended = false;

  constructor(what: string) {
    this.#what = what;
  }

  /**
   * Follows `chunk`; returns its data frames' bytes, cut at each frame's end,
   * without skippable frames.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    const pieces: Uint8Array[] = [];
    // Where the data frame being read starts in `chunk` (-1: not in one).
    const inFrame = this.#state === "magic"
      ? this.#skip > 0 && !this.#skippable
      : this.#state !== "skippable";
    let start = inFrame ? 0 : -1;
    let i = 0;
    while (i < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - i);
        this.#skip -= n;
        i += n;
        this.#offset += n;
        if (this.#skip === 0 && this.#lastBlock && this.#state === "magic") this.#ended = true;
      } else {
        const magic = this.#state === "magic";
        const from = i - this.#have; // where the field began (< 0: in an earlier chunk)
        const n = Math.min(this.#need - this.#have, chunk.length - i);
        this.#buf.set(chunk.subarray(i, i + n), this.#have);
        this.#have += n;
        i += n;
        this.#offset += n;
        if (this.#have < this.#need) break;
        this.#have = 0;
        this.#field();
        if (magic && this.#state === "descriptor") {
          // A data frame begins with these 4 bytes.
          if (from >= 0) start = from;
          else {
            pieces.push(this.#buf.slice(0, 4));
            start = i;
          }
        }
      }
      if (this.#ended) {
        this.#ended = false;
        if (start >= 0 && i > start) pieces.push(chunk.subarray(start, i));
        start = -1;
      }
    }
    if (start >= 0 && i > start) pieces.push(chunk.subarray(start, i));
    return pieces;
  }

  end(): void {
    const complete = this.#state === "magic" && this.#have === 0 && this.#skip === 0;
    if (complete && this.#frames > 0) return;
    const where = complete
      ? "it holds no zstd frame"
      : this.#skip > 0
      ? `it ends inside a ${this.#skippable ? "skippable frame" : "block"}`
      : this.#state === "checksum"
      ? "it ends inside a frame checksum"
      : this.#state === "block"
      ? "it ends before the last block"
      : "it ends inside a frame header";
    throw new BlobFormatError(
      this.#what,
      `zstd stream truncated at byte ${this.#offset}: ${where}`,
    );
  }

  #field(): void {
    const b = this.#buf;
    switch (this.#state) {
      case "magic": {
        const m = (b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24) >>> 0;
        if (m === 0xfd2fb528) {
          this.#state = "descriptor";
          this.#need = 1;
        } else if ((m & 0xfffffff0) >>> 0 === 0x184d2a50) {
          this.#state = "skippable";
          this.#need = 4;
        } else {
          throw new BlobFormatError(
            this.#what,
            this.#frames === 0
              ? "not a zstd frame"
              : `bytes that are not a zstd frame after the end of the stream (at byte ${
                this.#offset - 4
              })`,
          );
        }
        return;
      }
      case "skippable":
        this.#skip = (b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24) >>> 0;
        this.#skippable = true;
        this.#lastBlock = false;
        this.#state = "magic";
        this.#need = 4;
        return;
      case "descriptor": {
        const d = b[0];
        if (d & 0x08) {
          throw new BlobFormatError(this.#what, `zstd frame header has its reserved bit set`);
        }
        const fcs = d >> 6;
        const single = (d >> 5) & 1;
        this.#checksum = ((d >> 2) & 1) === 1;
        const rest = (single ? 0 : 1) + [0, 1, 2, 4][d & 3] +
          (fcs === 0 ? single : [0, 2, 4, 8][fcs]);
        this.#state = rest ? "header" : "block";
        this.#need = rest || 3;
        return;
      }
      case "header":
        this.#state = "block";
        this.#need = 3;
        return;
      case "block": {
        const h = b[0] | b[1] << 8 | b[2] << 16;
        const type = (h >> 1) & 3;
        if (type === 3) throw new BlobFormatError(this.#what, "zstd block of reserved type");
        this.#skip = type === 1 ? 1 : h >>> 3;
        this.#skippable = false;
        this.#lastBlock = (h & 1) === 1;
        if (h & 1) {
          if (this.#checksum) {
            this.#state = "checksum";
          } else {
            this.#frames++;
            this.#state = "magic";
            if (this.#skip === 0) this.#ended = true;
          }
          this.#need = 4;
        }
        return;
      }
      case "checksum":
        this.#frames++;
        this.#ended = true;
        this.#lastBlock = false;
        this.#state = "magic";
        this.#need = 4;
        return;
    }
  }
}

/**
 * A node:zlib decompressor as a writable/readable pair. Input is written
 * without waiting for each chunk to be processed (only for `drain`, with a
 * deep queue), so the thread pool works while JavaScript hands over the next
 * chunk; output is paused while the reader is not reading, so a slow consumer
 * (or a decompression bomb) cannot pile decompressed bytes up in memory.
 */
function zlibPair(
  kind: "gzip" | "zstd",
  what: string,
  sniff: (chunk: Uint8Array | undefined) => Uint8Array | undefined,
): TransformStream<Uint8Array, Uint8Array> {
  const opts = { chunkSize: ZLIB_CHUNK, writableHighWaterMark: 4 << 20 };
  // Made once node:zlib is loaded; both halves' start() wait for that.
  let z: Zlib.Gunzip | Zlib.ZstdDecompress | undefined;
  const frames = kind === "zstd" ? new ZstdFrames(what) : undefined;
  let out!: ReadableStreamDefaultController<Uint8Array>;
  let failed: unknown;
  let ended = false;
  let drained = true;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of [...waiters]) w();
  };
  const wait = (done: () => boolean) =>
    new Promise<void>((resolve, reject) => {
      const w = () => {
        if (failed !== undefined) {
          waiters.delete(w);
          reject(failed);
        } else if (done()) {
          waiters.delete(w);
          resolve();
        }
      };
      waiters.add(w);
      w();
    });
  const fail = (e: unknown) => {
    if (failed !== undefined) return;
    failed = e;
    try {
      out.error(e);
    } catch { /* already closed or errored */ }
    z?.destroy();
    wake();
  };
  const setup = (zlib: typeof Zlib) => {
    const d = kind === "gzip" ? zlib.createGunzip(opts) : zlib.createZstdDecompress(opts);
    z = d;
    d.on("data", (b: Uint8Array) => {
      if (failed !== undefined) return;
      out.enqueue(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
      if ((out.desiredSize ?? 0) <= 0) d.pause();
    });
    d.pause();
    d.on("error", (e: Error) => {
      fail(new BlobFormatError(what, `${kind} decompression failed: ${e.message}`, { cause: e }));
    });
    d.on("end", () => {
      ended = true;
      if (failed === undefined) out.close();
      wake();
    });
    d.on("drain", () => {
      drained = true;
      wake();
    });
    if (failed !== undefined) d.destroy(); // cancelled before node:zlib was loaded
  };
  const ready = (zlibModule ??= import("node:zlib")).then(setup);
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      out = c;
      return ready;
    },
    pull() {
      z?.resume();
    },
    cancel(reason) {
      failed ??= reason ?? new Error(`${what}: reading was cancelled`);
      z?.destroy();
      wake();
    },
  }, { highWaterMark: 2 });
  const write = async (chunk: Uint8Array) => {
    if (!z!.write(chunk)) {
      drained = false;
      await wait(() => drained);
    }
  };
  const writable = new WritableStream<Uint8Array>({
    start() {
      return ready;
    },
    async write(chunk) {
      if (failed !== undefined) throw failed;
      let pieces: Uint8Array[];
      try {
        const c = sniff(chunk);
        pieces = !c ? [] : frames ? frames.push(c) : [c];
      } catch (e) {
        fail(e);
        throw e;
      }
      for (const p of pieces) await write(p);
    },
    async close() {
      if (failed !== undefined) throw failed;
      try {
        const c = sniff(undefined);
        if (c?.length) {
          for (const p of frames ? frames.push(c) : [c]) await write(p);
        }
        frames?.end();
      } catch (e) {
        fail(e);
        throw e;
      }
      z!.end();
      await wait(() => ended);
    },
    abort(reason) {
      fail(reason);
    },
  });
  // A readable/writable pair is what pipeThrough takes; it is a TransformStream in all but name.
  return { readable, writable } as TransformStream<Uint8Array, Uint8Array>;
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
