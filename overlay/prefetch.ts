/**
 * Pulling many layers at once while applying them one by one, in order.
 *
 * {@linkcode resolveLayers} (what `CachingLayerResolver.resolveAll` runs)
 * brings every layer of an image into the cache:
 * - layers the cache already holds (by diff_id) are never fetched;
 * - the first missing layer streams straight from its source into
 *   extraction, no full download first;
 * - once that layer turns out to wait on the network (this process leaving
 *   CPU idle while it streams in: a slow or distant registry; by default),
 *   or from the start (`prefetch: "always"`), up to `concurrency` of the
 *   following missing layers download in parallel into spool files
 *   ({@linkcode LayerSpool}), each in its own
 *   flock'd directory below the cache's `tmp/` (a crash leaves only
 *   leftovers the next process reclaims), their blob digest verified while
 *   spooling;
 * - each layer is then applied strictly in order, from its spool file, or,
 *   when its turn comes before its download ends, from the download itself:
 *   the spool is a tee, its reader follows the writer through the file;
 * - memory stays bounded: one chunk in flight per download and per reader,
 *   never a whole blob;
 * - a failed download (a digest mismatch, a dropped registry) stops
 *   everything at once; an abort stops every download; either way every
 *   spool is removed and the error names the layer's digest.
 *
 * @module
 */
import { join } from "@std/path";
import type { Hash } from "node:crypto";
import {
  compressionOf,
  decompress,
  DigestMismatchError,
  openLayerTar,
  parseDigest,
  verifyDigest,
} from "../image/blob.ts";
import type { Layer } from "../image/types.ts";
import { TempWork } from "./lock.ts";
import { readProcText } from "../sys/proc.ts";
import { type OpenFile, openFile } from "../sys/files.ts";

/** How many following layers download while one is applied, by default. */
export const DEFAULT_PREFETCH_CONCURRENCY = 3;

/** A layer blob could not be downloaded (or did not verify); the message names its digest. */
export class LayerFetchError extends Error {
  /** The layer's blob digest. */
  readonly digest: string;
  /** Creates the error. */
  constructor(digest: string, message: string, options?: ErrorOptions) {
    super(`Cannot fetch layer ${digest}: ${message}`, options);
    this.name = "LayerFetchError";
    this.digest = digest;
  }
}

/** What happens to one layer during {@linkcode resolveLayers}. */
export interface LayerEvent {
  /**
   * - `cached`: the cache holds it; it is not fetched.
   * - `fetch-start`: its blob download started (`spooled`: into a spool file).
   * - `fetch-bytes`: `bytes` more blob bytes arrived.
   * - `fetch-end`: the blob is downloaded (and, when spooled, verified).
   * - `apply-start`: its turn came; extraction reads it from now on.
   * - `apply-bytes`: `bytes` more uncompressed bytes were applied.
   * - `applied`: its tree is written (or was found cached); the next layer
   *   may be applied over it while it is recorded and published.
   * - `done`: it is in the cache at `path` (`extracted`: by this call);
   *   layers are done in order.
   * - `failed`: it failed with `error`.
   */
  type:
    | "cached"
    | "fetch-start"
    | "fetch-bytes"
    | "fetch-end"
    | "apply-start"
    | "apply-bytes"
    | "applied"
    | "done"
    | "failed";
  /** The layer's position in the image (0 is the bottom). */
  index: number;
  /** The layer. */
  layer: Layer;
  /** `fetch-bytes`, `apply-bytes`: how many bytes. */
  bytes?: number;
  /** `fetch-start`: the download goes to a spool file (not straight into extraction). */
  spooled?: boolean;
  /** `cached`, `done`: the lower directory. */
  path?: string;
  /** `done`: this call extracted it (false: another caller or process did). */
  extracted?: boolean;
  /** `failed`: why. */
  error?: unknown;
  /** `performance.now()` when it happened. */
  at: number;
}

/** Options of {@linkcode resolveLayers} (and `CachingLayerResolver.resolveAll`). */
export interface ResolveAllOptions {
  /** Stops every download and extraction; spools are removed. */
  signal?: AbortSignal;
  /**
   * How many layers after the one being applied may download at once
   * (default {@linkcode DEFAULT_PREFETCH_CONCURRENCY}; 0: one layer at a time,
   * each streamed straight into extraction).
   */
  concurrency?: number;
  /**
   * When downloads ahead start: `auto` (default) once a layer streamed into
   * extraction turns out to leave CPU idle (this process using less than
   * 0.7 of a core over 200 ms and more: a slow or distant registry), never
   * while extraction is the bottleneck (a registry on a fast link, where
   * spooling ahead would only take CPU from it); `always` from the start.
   */
  prefetch?: "auto" | "always";
  /** Receives what happens to each layer (progress displays, tests). */
  onLayer?: (event: LayerEvent) => void;
}

/** What {@linkcode resolveLayers} needs of a layer cache. */
export interface PrefetchTarget {
  /** The cache root (spools go below `tmp/`). */
  readonly root: string;
  /**
   * The lower directory of the published layer with this diff_id over
   * `parents` (bottom first), or undefined when it is not in the cache.
   */
  cachedPath(diffID: string, parents: readonly Layer[]): string | undefined;
  /** Resolves one layer whose parents are all resolved, extracting it from `layer.uncompressed()`. */
  resolve(layer: Layer, parents?: readonly Layer[], signal?: AbortSignal): Promise<string>;
  /**
   * As `resolve`, but settles once the layer's tree is written, its parents
   * being resolved or written: the next layer is then applied while this
   * one is recorded and published (`published`). Optional.
   */
  resolveEarly?(
    layer: Layer,
    parents: readonly Layer[],
    signal?: AbortSignal,
  ): Promise<{ published: Promise<string> }>;
}

/** Reads of a spool file: 1 MiB (async reads of 256 KiB cost three times as much per byte). */
const READ_CHUNK = 1 << 20;
/** Writes to a spool file are gathered up to this size. */
const WRITE_CHUNK = 1 << 20;

function counter(report: (n: number) => void): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(chunk, controller) {
      report(chunk.byteLength);
      controller.enqueue(chunk);
    },
  });
}

async function writeAll(file: OpenFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

/**
 * One layer blob downloading into a spool file below the cache's `tmp/`
 * (its own {@linkcode TempWork}: a flock'd directory, reclaimable after a
 * crash), its digest and size checked while it is written. Readers of
 * {@linkcode LayerSpool.stream} follow the download through the file, so a
 * layer can be applied before its download ends; their stream closes only
 * once the whole blob is written and verified, and errors otherwise.
 *
 * @example Usage
 * ```ts ignore
 * import { LayerSpool } from "./prefetch.ts";
 * const spool = LayerSpool.start("/var/lib/strata", image.layers[1]);
 * try {
 *   for await (const chunk of spool.stream()) consume(chunk); // verified blob bytes
 * } finally {
 *   await spool.remove();
 * }
 * ```
 */
export class LayerSpool {
  /** The layer being downloaded. */
  readonly layer: Layer;
  #root: string;
  #ctl = new AbortController();
  #work?: TempWork;
  #file?: string;
  #written = 0;
  #state: "running" | "done" | "failed" = "running";
  #error?: Error;
  #waiters: (() => void)[] = [];
  #task: Promise<void>;
  #onBytes?: (n: number) => void;
  #unlink?: () => void;

  private constructor(
    root: string,
    layer: Layer,
    o: { signal?: AbortSignal; onBytes?: (n: number) => void },
  ) {
    this.#root = root;
    this.layer = layer;
    this.#onBytes = o.onBytes;
    if (o.signal) {
      const outer = o.signal;
      const onAbort = () => this.#ctl.abort(outer.reason);
      if (outer.aborted) onAbort();
      else {
        outer.addEventListener("abort", onAbort, { once: true });
        this.#unlink = () => outer.removeEventListener("abort", onAbort);
      }
    }
    this.#task = this.#run();
  }

  /**
   * Starts downloading `layer.compressed()` into a new spool below
   * `root/tmp/`. Never throws: failures show through
   * {@linkcode LayerSpool.done} and {@linkcode LayerSpool.stream}.
   */
  static start(
    root: string,
    layer: Layer,
    options: { signal?: AbortSignal; onBytes?: (n: number) => void } = {},
  ): LayerSpool {
    return new LayerSpool(root, layer, options);
  }

  /** Blob bytes written (and readable) so far. */
  get written(): number {
    return this.#written;
  }

  /** The spool file, once created. */
  get path(): string | undefined {
    return this.#file;
  }

  /** Resolves when the blob is written and verified; rejects with a {@linkcode LayerFetchError}. */
  async done(): Promise<void> {
    await this.#task;
    if (this.#state === "failed") throw this.#error!;
  }

  /** Whether the download is over (`running`), verified (`done`) or `failed`. */
  get state(): "running" | "done" | "failed" {
    return this.#state;
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  #changed(): Promise<void> {
    return new Promise((r) => this.#waiters.push(r));
  }

  async #run(): Promise<void> {
    const layer = this.layer;
    const signal = this.#ctl.signal;
    let file: OpenFile | undefined;
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    const onAbort = () => reader?.cancel(signal.reason).catch(() => {});
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const { algorithm } = parseDigest(layer.digest);
      signal.throwIfAborted();
      this.#work = await TempWork.create(this.#root);
      const path = join(this.#work.path, "blob");
      file = await openFile(path, { write: true, createNew: true, mode: 0o600 });
      this.#file = path;
      signal.throwIfAborted();
      const stream = await layer.compressed(signal);
      reader = stream.getReader();
      signal.throwIfAborted();
      // Loaded here: a `node:` module costs a process ~20 ms at start-up, and a
      // warm `strata run` (every layer cached) never spools a blob.
      const { createHash } = await import("node:crypto");
      const hash: Hash = createHash(algorithm);
      // Network chunks are gathered into 1 MiB writes (each write is an
      // operation on Deno's thread pool; 4x fewer of them cost half as much),
      // unless a reader has caught up with the download and waits for more.
      const pending = new Uint8Array(WRITE_CHUNK);
      let fill = 0;
      let received = 0;
      const flush = async () => {
        if (fill === 0) return;
        await writeAll(file!, pending.subarray(0, fill));
        this.#written += fill;
        fill = 0;
        this.#wake();
      };
      for (;;) {
        const { done, value } = await reader.read();
        signal.throwIfAborted();
        if (done) break;
        received += value.byteLength;
        if (received > layer.size) {
          throw new Error(
            `the blob is larger than the ${layer.size} bytes its descriptor declares`,
          );
        }
        hash.update(value);
        this.#onBytes?.(value.byteLength);
        if (fill + value.byteLength > WRITE_CHUNK) await flush();
        if (value.byteLength >= WRITE_CHUNK) {
          await writeAll(file, value);
          this.#written += value.byteLength;
          this.#wake();
        } else {
          pending.set(value, fill);
          fill += value.byteLength;
          // A reader waiting at the end of the file gets the bytes at once.
          if (fill === WRITE_CHUNK || this.#waiters.length > 0) await flush();
        }
      }
      await flush();
      const actual = `${algorithm}:${hash.digest("hex")}`;
      if (actual !== layer.digest) {
        throw new DigestMismatchError(layer.digest, actual, `layer ${layer.digest} (blob)`);
      }
      this.#state = "done";
    } catch (e) {
      this.#state = "failed";
      const err = e instanceof Error ? e : new Error(String(e));
      this.#error = signal.aborted && e === signal.reason
        ? err
        : new LayerFetchError(layer.digest, err.message, { cause: e });
      await reader?.cancel(e).catch(() => {});
    } finally {
      signal.removeEventListener("abort", onAbort);
      try {
        file?.close();
      } catch {
        // already closed
      }
      this.#wake();
    }
  }

  /**
   * The blob as stored, read from the spool file as the download writes it:
   * closes once the whole blob is written and its digest verified, errors if
   * the download fails. Bounded memory: one chunk at a time.
   */
  stream(): ReadableStream<Uint8Array> {
    let file: OpenFile | undefined;
    let pos = 0;
    const close = () => {
      try {
        file?.close();
      } catch {
        // already closed
      }
      file = undefined;
    };
    return new ReadableStream<Uint8Array>({
      pull: async (c) => {
        for (;;) {
          if (this.#state === "failed") {
            close();
            throw this.#error;
          }
          if (pos < this.#written) {
            file ??= await openFile(this.#file!, { read: true });
            const buf = new Uint8Array(Math.min(READ_CHUNK, this.#written - pos));
            const n = await file.read(buf);
            if (n === null || n === 0) {
              throw new LayerFetchError(this.layer.digest, `spool ${this.#file} ended early`);
            }
            pos += n;
            c.enqueue(n === buf.length ? buf : buf.subarray(0, n));
            return;
          }
          if (this.#state === "done") {
            close();
            c.close();
            return;
          }
          await this.#changed();
        }
      },
      cancel: () => close(),
    });
  }

  /**
   * Stops the download (if still running) and removes the spool directory
   * and its lock. Idempotent.
   */
  async remove(): Promise<void> {
    if (this.#state === "running") this.#ctl.abort(new DOMException("spool removed", "AbortError"));
    await this.#task;
    this.#unlink?.();
    this.#unlink = undefined;
    const work = this.#work;
    this.#work = undefined;
    await work?.remove();
  }
}

/**
 * A layer that reads its blob from `compressed` and verifies only the
 * diff_id (the spool verified the blob digest), counting applied bytes.
 */
function spooledLayer(
  layer: Layer,
  spool: LayerSpool,
  onApplied?: (n: number) => void,
): Layer {
  return {
    digest: layer.digest,
    diffID: layer.diffID,
    mediaType: layer.mediaType,
    size: layer.size,
    compressed: () => Promise.resolve(spool.stream()),
    uncompressed(signal?: AbortSignal) {
      const what = `layer ${layer.digest}`;
      const compression = compressionOf(layer.mediaType, what);
      parseDigest(layer.diffID);
      let s = spool.stream().pipeThrough(decompress(layer.mediaType, what), { signal });
      if (compression !== "none" || layer.diffID !== layer.digest) {
        s = s.pipeThrough(verifyDigest(layer.diffID, `${what} (uncompressed, diff_id)`), {
          signal,
        });
      }
      if (onApplied) s = s.pipeThrough(counter(onApplied), { signal });
      return Promise.resolve(s);
    },
  };
}

/**
 * When to download ahead: a layer streamed straight into extraction for at
 * least {@linkcode STARVED_AFTER_MS} while this process used less than
 * {@linkcode STARVED_CPU} of a core is held back by the network, not by
 * extraction (which, fed fast enough, keeps a core and more busy). Then
 * spare CPU is there to download the next layers in parallel; otherwise
 * spooling ahead would only take CPU from extraction.
 */
const STARVED_AFTER_MS = 200;
const STARVED_CPU = 0.7;

/** CPU time of this process (all threads) in ms, from `/proc/self/stat`; undefined when unreadable. */
function processCpuMs(): number | undefined {
  try {
    const stat = readProcText("/proc/self/stat");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime (fields 14 and 15 of proc(5)) are in clock ticks (USER_HZ, 100 on Linux).
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return undefined;
  }
}

/**
 * A layer streamed straight from its source, reporting bytes fetched and
 * applied, and calling `onStarved` once if extraction turns out to wait on
 * the network (the cue to download later layers in parallel).
 */
function watchedLayer(
  layer: Layer,
  onStart: () => void,
  onFetched: (n: number) => void,
  onEnd: () => void,
  onApplied: ((n: number) => void) | undefined,
  onStarved: (() => void) | undefined,
): Layer {
  const watched: Layer = {
    digest: layer.digest,
    diffID: layer.diffID,
    mediaType: layer.mediaType,
    size: layer.size,
    async compressed(signal?: AbortSignal) {
      onStart();
      const s = await layer.compressed(signal);
      const started = performance.now();
      const cpu0 = onStarved ? processCpuMs() : undefined;
      let next = started + STARVED_AFTER_MS;
      return s.pipeThrough(
        new TransformStream({
          transform(chunk, controller) {
            onFetched(chunk.byteLength);
            controller.enqueue(chunk);
            if (cpu0 === undefined || !onStarved) return;
            const now = performance.now();
            if (now < next) return;
            next = now + 50;
            const cpu = processCpuMs();
            if (cpu !== undefined && cpu - cpu0 < (now - started) * STARVED_CPU) {
              onStarved();
              onStarved = undefined;
            }
          },
          flush: onEnd,
        }),
        { signal },
      );
    },
    async uncompressed(signal?: AbortSignal) {
      const s = await openLayerTar(watched, signal);
      return onApplied ? s.pipeThrough(counter(onApplied), { signal }) : s;
    },
  };
  return watched;
}

/**
 * Resolves every layer of an image (bottom first) into `target`'s cache and
 * returns their lower directories, bottom first: cached layers are not
 * fetched, the first missing one streams straight into extraction while up
 * to `concurrency` of the following ones download into spool files, and
 * layers are applied strictly in order (see the module documentation).
 *
 * @throws {LayerFetchError} when a prefetched blob cannot be downloaded or
 *   does not verify (nothing of it is published; other downloads stop).
 * @throws {LayerResolveError} when a layer cannot be extracted.
 *
 * @example Usage
 * ```ts ignore
 * import { CachingLayerResolver } from "./resolver.ts";
 * import { resolveLayers } from "./prefetch.ts";
 * const resolver = await CachingLayerResolver.create("/var/lib/strata");
 * const lowers = await resolveLayers(resolver, image.layers, {
 *   concurrency: 3,
 *   onLayer: (e) => console.log(e.index, e.type),
 * });
 * ```
 */
export async function resolveLayers(
  target: PrefetchTarget,
  layers: readonly Layer[],
  options: ResolveAllOptions = {},
): Promise<string[]> {
  const { signal, onLayer } = options;
  const concurrency = Math.max(0, Math.floor(options.concurrency ?? DEFAULT_PREFETCH_CONCURRENCY));
  signal?.throwIfAborted();
  const emit = onLayer
    ? (type: LayerEvent["type"], index: number, extra: Partial<LayerEvent> = {}) =>
      onLayer({ type, index, layer: layers[index], at: performance.now(), ...extra })
    : undefined;

  // Which layers must be fetched: the first occurrence of each diff_id the cache lacks.
  const paths: (string | undefined)[] = new Array(layers.length);
  const missing: number[] = [];
  const planned = new Set<string>();
  for (let i = 0; i < layers.length; i++) {
    const path = target.cachedPath(layers[i].diffID, layers.slice(0, i));
    if (path !== undefined) {
      paths[i] = path;
      emit?.("cached", i, { path });
    } else if (!planned.has(layers[i].diffID)) {
      planned.add(layers[i].diffID);
      missing.push(i);
    }
  }
  if (missing.length === 0) return paths as string[];

  // One controller for everything: the caller's abort, or the first failed download.
  const ctl = new AbortController();
  let failure: unknown;
  const fail = (e: unknown) => {
    failure ??= e;
    ctl.abort(e);
  };
  const onAbort = () => fail(signal!.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  const spools = new Map<number, LayerSpool>();
  let current = -1; // the layer being applied
  const publishing: Promise<void>[] = []; // layers written, being recorded and published (never rejects)
  const startSpool = (i: number) => {
    emit?.("fetch-start", i, { spooled: true });
    const spool = LayerSpool.start(target.root, layers[i], {
      signal: ctl.signal,
      onBytes: emit && ((n) => emit("fetch-bytes", i, { bytes: n })),
    });
    spools.set(i, spool);
    spool.done().then(
      () => emit?.("fetch-end", i, { spooled: true }),
      (e) => {
        if (e instanceof LayerFetchError && i !== current) emit?.("failed", i, { error: e });
        fail(e);
      },
    );
  };

  // Downloads ahead start once a layer streamed into extraction turns out to
  // wait on the network (or at once, when asked): on a fast link extraction
  // is the bottleneck, and spooling ahead would only take CPU from it.
  let ahead = concurrency > 0 && options.prefetch === "always";
  let k = 0;
  const topUp = () => {
    if (!ahead || failure) return;
    for (let j = k + 1; j <= k + concurrency && j < missing.length; j++) {
      if (!spools.has(missing[j])) startSpool(missing[j]);
    }
  };
  const onStarved = concurrency > 0 && !ahead
    ? () => {
      ahead = true;
      topUp();
    }
    : undefined;

  try {
    for (; k < missing.length; k++) {
      // Keep `concurrency` downloads going ahead of the layer applied now.
      topUp();
      const i = missing[k];
      current = i;
      // Layers before this one (cached, or applied earlier in this loop) are all in the cache.
      const spool = spools.get(i);
      let applied = false;
      const onApplied = (n: number) => {
        applied = true;
        emit?.("apply-bytes", i, { bytes: n });
      };
      let layer: Layer;
      if (spool) {
        layer = spooledLayer(layers[i], spool, emit && onApplied);
      } else if (emit || (onStarved && !ahead && k + 1 < missing.length)) {
        layer = watchedLayer(
          layers[i],
          () => emit?.("fetch-start", i, { spooled: false }),
          (n) => emit?.("fetch-bytes", i, { bytes: n }),
          () => emit?.("fetch-end", i, { spooled: false }),
          emit && onApplied,
          k + 1 < missing.length ? onStarved : undefined,
        );
      } else {
        layer = layers[i];
      }
      emit?.("apply-start", i);
      try {
        if (target.resolveEarly) {
          // Written: the next layer goes on while this one is recorded and published.
          const { published } = await target.resolveEarly(layer, layers.slice(0, i), ctl.signal);
          if (!failure) emit?.("applied", i);
          publishing.push(published.then((path) => {
            paths[i] = path;
            emit?.("done", i, { path, extracted: applied });
          }, (e) => {
            if (!failure) emit?.("failed", i, { error: e });
            fail(e);
          }));
        } else {
          const path = await target.resolve(layer, layers.slice(0, i), ctl.signal);
          paths[i] = path;
          if (!failure) emit?.("applied", i);
          if (!failure) emit?.("done", i, { path, extracted: applied });
        }
      } catch (e) {
        throw failure ?? e;
      }
      if (failure) throw failure;
      current = -1;
      if (spool) {
        spools.delete(i);
        await spool.remove();
      }
    }
    await Promise.all(publishing);
    if (failure) throw failure;
    // Repeated diff_ids, resolved by their first occurrence.
    for (let i = 0; i < layers.length; i++) {
      if (paths[i] !== undefined) continue;
      paths[i] = await target.resolve(layers[i], layers.slice(0, i), ctl.signal);
      emit?.("done", i, { path: paths[i], extracted: false });
    }
    return paths as string[];
  } catch (e) {
    const err = failure ?? e;
    if (current >= 0) emit?.("failed", current, { error: err });
    ctl.abort(err);
    throw err;
  } finally {
    // Written layers finish (publish or fail) before this returns.
    await Promise.all(publishing);
    signal?.removeEventListener("abort", onAbort);
    const left = [...spools.values()];
    spools.clear();
    await Promise.all(left.map((s) => s.remove().catch(() => {})));
  }
}
