/**
 * Applies OCI layer tarballs to a directory, exactly and safely: every entry
 * type, owners, modes, times and xattrs, whiteouts in two forms, and no entry
 * able to touch or read anything outside the root.
 *
 * ## Path policy: confine
 * Entry names and hardlink targets are confined to the root, never refused:
 * `..` and absolute names resolve as if the root were `/` (see
 * {@link ./path.ts}), and each entry's parent directory is opened with
 * `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` on the root, so symlinks
 * in the path (from this layer, an earlier one, or pointing at `/`) are
 * followed only inside the root. The last component is then created, replaced
 * or removed with `*at()` calls that never follow it (`O_NOFOLLOW`,
 * `AT_SYMLINK_NOFOLLOW`, `unlinkat`). Symlink targets are stored verbatim:
 * they are text, resolved (confined) only when used. Hardlink targets must
 * exist inside the root (in direct mode, a target only a lower layer holds is
 * copied up first); a link to anything else is a {@linkcode HardlinkTargetError},
 * so no entry can read a host file. Whiteout names that name nothing (`.wh..`)
 * are a {@linkcode WhiteoutError}. Behind openat2, every directory opened is
 * checked to lie below the root before anything is done through it.
 *
 * ## Whiteouts (OCI image-spec layer.md)
 * `.wh.NAME` hides NAME of lower layers, `.wh..wh..opq` hides all lower
 * children of its directory; neither hides what this layer adds, whatever the
 * order in the tar (the applicator tracks the paths the layer wrote).
 * - `direct` (default): the root is a future overlay layer dir. A whiteout
 *   becomes a char 0/0 device (works as root and in a user namespace, kernel
 *   5.8+), an opaque dir gets `user.overlay.opaque=y` (or `trusted.` with
 *   `overlayXattr: "trusted"`). A whiteout of a directory this layer also
 *   writes makes that directory opaque.
 * - `merged`: the root is the merged view of an overlay of the parent layers
 *   (the seed's `LayerWorkdir`): whited-out paths are deleted from the view,
 *   and opaque directories are emptied of what lower layers hold. When the
 *   marker comes before anything the layer writes into the directory, the
 *   directory is removed and re-created, which overlayfs turns into an opaque
 *   directory (the same result as `direct`).
 *
 * ## Metadata
 * Owners are numeric (`fchownat(AT_SYMLINK_NOFOLLOW)`); where they cannot be
 * set (a user namespace mapping one id gives EINVAL, an unprivileged user
 * EPERM) the files keep the applier's ids and ONE warning per layer says so,
 * as the seed did. Modes, including setuid/setgid/sticky, are set with
 * `fchmod` after `chown` (which clears them); the umask plays no part.
 * Files, symlinks and devices get their mtime (atime = the later of atime and
 * mtime) straight away, directories at the end, after all their children.
 *
 * Xattrs from the tarball: `user.*` and `system.posix_acl_*` are applied;
 * `security.capability` is applied (the kernel allows it to root and to a
 * user namespace's root); `trusted.*` only when running as real root (others
 * skipped silently); other `security.*` (SELinux and other LSM labels belong
 * to the host's policy) are skipped silently. `trusted.overlay.*` and
 * `user.overlay.*` are NEVER applied from a tarball (they would forge
 * whiteouts, opaque dirs or redirects): they are dropped with a warning. A
 * file system refusing an xattr (EPERM, ENOTSUP) gives one warning per layer.
 * Directories and whiteouts the tar implies but does not list take the
 * metadata of the lower layer's directory, or the implying entry's time, so
 * the same layer always gives the same tree.
 *
 * ## Speed
 * Entries are written with synchronous FFI calls as the stream delivers them
 * (no promise per entry, file data never buffered, parent directory fds
 * cached); by default a worker thread does that while the calling thread
 * reads, hashes and inflates (see `threads`). On the Debian bookworm rootfs
 * layer (61 MB gzip, 179 MB tar, 6680 entries), digests verified and all
 * metadata applied, on a tmpfs, medians of interleaved runs against GNU
 * `tar -xzf` of the same blob on 2 cores: 0.73 (0.96 on one thread)
 * (`deno task bench --only apply`). Peak RSS applying a 1 GiB layer:
 * about 130 MiB, as for a 179 MB one (streaming, bounded queues).
 *
 * @module
 */
import type { Layer } from "../image/types.ts";
import type { FileDigest, TreeRecord } from "./record.ts";
import {
  asDamaged,
  DamagedLayerError,
  EntryWriteError,
  reviveError,
  serializeError,
} from "./errors.ts";
import { TarParser } from "./tar.ts";
import { type FromWorker, LayerWriter, type ToWorker } from "./writer.ts";
import { workerModule } from "../sys/worker.ts";

export {
  ApplyError,
  DamagedLayerError,
  DeviceNotPermittedError,
  EntryWriteError,
  HardlinkTargetError,
  WhiteoutError,
} from "./errors.ts";

/** How whiteouts are applied; see the module docs. */
export type WhiteoutMode = "direct" | "merged";

/** Options of a {@linkcode TarApplicator}. */
export interface ApplyOptions {
  /**
   * `direct` (default): the root is a future overlay upper/lower dir:
   * `.wh.x` becomes a char 0/0 device `x`, `.wh..wh..opq` the opaque xattr.
   * `merged`: the root is the merged view of an overlay whose lowers are the
   * parent layers: whiteouts delete from the view, opaque dirs are emptied of
   * what lower layers hold.
   */
  whiteouts?: WhiteoutMode;
  /**
   * Parent layer dirs, bottom first. Direct mode reads them to satisfy a
   * hardlink whose target only a lower layer holds (the file is copied up
   * first), and to give implied parent directories their lower metadata.
   */
  lowerDirs?: string[];
  /** Namespace of the opaque xattr in direct mode; default `user` (strata mounts with `userxattr`). */
  overlayXattr?: "user" | "trusted";
  /** When mknod of a real device is not permitted: `skip` (default, one warning per layer) or `error`. */
  devices?: "skip" | "error";
  /** Called with each warning as it happens (they are also returned in {@linkcode ApplyResult}). */
  onWarning?: (message: string) => void;
  /** The layer's digest (or another name), used in error and warning messages. */
  layer?: string;
  /**
   * Where entries are parsed and written. `main`: on the calling thread,
   * with synchronous FFI calls between reads of the stream. `worker`: on a
   * worker thread, while the calling thread reads, hashes and inflates (which
   * node:zlib does on the calling thread). `auto` (default): the worker once
   * a layer has delivered 4 MiB on a machine with two or more CPUs, so small
   * layers skip the worker's start-up (~20-40 ms). Measured on the Debian
   * layer, 2 cores: 0.79 s with the worker vs 0.99 s on the main thread when
   * the other core is free; about even when it is busy.
   */
  threads?: "auto" | "main" | "worker";
  /**
   * Direct mode: hash each regular file's content as it is written (sparse
   * files aside) and return the digests as {@linkcode ApplyResult.fileDigests},
   * so that a tree record of the fresh tree (`treeRecord`'s `fileDigests`)
   * need not read the files again. Loads `node:crypto`.
   */
  fileDigests?: boolean;
  /**
   * Also make the tree record of the root once the layer is written
   * (`treeRecord` of `layer/record.ts`, from the files' digests taken while
   * writing, so it reads no file content in direct mode), as
   * {@linkcode ApplyResult.record}. A worker that applied the layer records
   * it after `apply` has resolved, while the caller goes on (with the next
   * layer, say); the root must not change until the record settles.
   */
  record?: boolean;
  /**
   * Workers to apply in (see {@linkcode ApplyWorkers}): one started ahead is
   * taken instead of starting one (~50-150 ms before it takes data), and
   * given back for the next layer once this one is done (and recorded).
   */
  workers?: ApplyWorkers;
  /**
   * The layer's blob size, when known: under `threads: "auto"`, a layer of
   * 4 MiB or more goes to a worker at once, without reading ahead to see.
   */
  expectedSize?: number;
}

/** What an apply did. */
export interface ApplyResult {
  /** Tar entries read (including whiteouts). */
  entries: number;
  /** Bytes of file content written. */
  bytes: number;
  /** Warnings (at most one per kind per layer). */
  warnings: string[];
  /**
   * The tree written depends on the lower layers, so the same layer over
   * other parents may give another tree (a layer cache must then key it by
   * its chain, not its diff_id alone). Direct mode: an implied parent
   * directory was made (it takes the topmost lower's metadata, 0755 root
   * when none holds it) or a hardlink target was copied up from a lower.
   * Merged mode: the layer wrote below a directory it did not name, applied
   * a whiteout or an opaque marker, or replaced something it did not write.
   */
  dependsOnLowers: boolean;
  /**
   * Some owner could not be set (an id this user namespace does not map):
   * those files keep the applier's ids, so the tree is this mapping's own,
   * not the layer's (a layer cache must not serve it to a mapping that can
   * set those ids).
   */
  ownersLost: boolean;
  /**
   * With the `fileDigests` option: the sha256 of every regular file written
   * whole, by inode number (for `treeRecord`'s `fileDigests`).
   */
  fileDigests?: Map<bigint, FileDigest>;
  /** With the `record` option: the tree record of the root as written. */
  record?: Promise<TreeRecord>;
}

/**
 * Applies an OCI layer tarball (an uncompressed tar stream) to a root
 * directory. Applying all of an image's layers in order gives the image's
 * flattened file system (or, in direct mode, its overlay layer dirs).
 */
export interface TarballApplicator {
  /** Applies `tarball` to `root`; rejects when the tar is damaged or an entry cannot be written. */
  apply(
    tarball: ReadableStream<Uint8Array>,
    root: string,
    signal?: AbortSignal,
  ): Promise<ApplyResult>;
}

/**
 * The applicator: streams a tar through the parser and writes each entry
 * with synchronous `*at()` calls as it arrives (no per-entry promise, file
 * content never buffered), confined to the root (see the module docs for the
 * policy).
 *
 * @example Usage
 * ```ts ignore
 * import { TarApplicator } from "./applicator.ts";
 * const file = await Deno.open("layer.tar");
 * const result = await new TarApplicator({ whiteouts: "direct" }).apply(file.readable, "/tmp/layer");
 * console.log(result.entries, result.bytes, result.warnings);
 * ```
 */
export class TarApplicator implements TarballApplicator {
  readonly #options: ApplyOptions;

  /** Creates an applicator; `options` apply to every `apply`. */
  constructor(options: ApplyOptions = {}) {
    this.#options = options;
  }

  /**
   * Applies `tarball` to `root` (an existing directory). On failure the
   * root may hold part of the layer; nothing outside it is touched.
   */
  async apply(
    tarball: ReadableStream<Uint8Array>,
    root: string,
    signal?: AbortSignal,
  ): Promise<ApplyResult> {
    signal?.throwIfAborted();
    const o = this.#options;
    const reader = tarball.getReader();
    const stop: { abort?: () => void } = {};
    const onAbort = () => {
      reader.cancel(signal?.reason).catch(() => {});
      stop.abort?.();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    const read = async (): Promise<Uint8Array | undefined> => {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (e) {
        if (signal?.aborted) throw signal.reason;
        throw new DamagedLayerError(
          `reading the layer failed: ${(e as Error)?.message ?? e}`,
          undefined,
          o.layer,
          { cause: e },
        );
      }
      signal?.throwIfAborted();
      return r.done ? undefined : r.value;
    };
    try {
      const threads = o.threads ?? "auto";
      let head: Uint8Array[] = [];
      let ended = false;
      const cores = navigator.hardwareConcurrency ?? 1;
      if (threads === "auto" && cores >= 2 && (o.expectedSize ?? 0) >= WORKER_MIN) {
        // Big enough to be worth a worker: no need to look.
      } else if (threads === "auto" && cores >= 2) {
        // Look ahead: a layer that ends within WORKER_MIN is applied here.
        let n = 0;
        while (n < WORKER_MIN) {
          const c = await read();
          if (!c) {
            ended = true;
            break;
          }
          head.push(c);
          n += c.length;
        }
      } else if (threads === "auto") ended = true;
      const useWorker = threads === "worker" || (threads === "auto" && !ended);
      // Replays the looked-ahead chunks, then reads on.
      const next = () => head.length ? Promise.resolve(head.shift()) : read();
      if (!useWorker) {
        const all = head;
        head = [];
        let i = 0;
        const replay = () => i < all.length ? Promise.resolve(all[i++]) : read();
        return await this.#here(root, replay);
      }
      return await this.#inWorker(root, next, stop);
    } catch (e) {
      reader.cancel(e).catch(() => {});
      throw e;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      reader.releaseLock();
    }
  }

  async #here(root: string, read: () => Promise<Uint8Array | undefined>): Promise<ApplyResult> {
    const o = this.#options;
    const createHash = o.fileDigests || o.record
      ? (await import("node:crypto")).createHash
      : undefined;
    const w = new LayerWriter(root, o, createHash);
    try {
      const parser = new TarParser(w, { onWarning: (m) => w.warn(m) });
      const push = (c: Uint8Array) => {
        try {
          parser.push(c);
        } catch (e) {
          throw asDamaged(e, o.layer);
        }
      };
      for (let c = await read(); c; c = await read()) push(c);
      try {
        parser.end();
      } catch (e) {
        throw asDamaged(e, o.layer);
      }
      w.finish();
      const record = o.record
        ? import("./record.ts").then((m) => m.treeRecord(root, { fileDigests: w.fileDigests }))
        : undefined;
      record?.catch(() => {}); // the caller's to handle; never unhandled meanwhile
      return {
        entries: w.entries,
        bytes: w.bytes,
        warnings: w.warnings,
        dependsOnLowers: w.dependsOnLowers,
        ownersLost: w.ownersLost,
        ...(o.fileDigests && w.fileDigests ? { fileDigests: w.fileDigests } : {}),
        ...(record ? { record } : {}),
      };
    } finally {
      w.dispose();
    }
  }

  async #inWorker(
    root: string,
    read: () => Promise<Uint8Array | undefined>,
    stop: { abort?: () => void },
  ): Promise<ApplyResult> {
    const { onWarning, threads: _, workers, expectedSize: __, ...options } = this.#options;
    const worker = workers?.take() ?? newApplyWorker();
    // Given back to the pool when the layer is done (and recorded), not
    // after a failure or an abort.
    let reusable = false;
    const finished = () => {
      if (workers && reusable) workers.give(worker);
      else worker.terminate();
    };
    // With `record`, the worker goes on after `done`: the record settles this.
    let recorded: ((m: FromWorker) => void) | undefined;
    const record = options.record
      ? new Promise<TreeRecord>((resolve, reject) => {
        recorded = (m) => {
          if (m.t === "record") resolve(m.record);
          else if (m.t === "record-error") reject(reviveError(m.e));
          else reject(new Error("the applicator worker stopped before recording the tree"));
        };
      })
      : undefined;
    record?.catch(() => {});
    let inflight = 0;
    const pool: Uint8Array<ArrayBuffer>[] = [];
    let failure: unknown;
    let result: ApplyResult | undefined;
    let wake: (() => void) | undefined;
    let settle!: () => void;
    const settled = new Promise<void>((r) => (settle = r));
    const kick = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    worker.onmessage = (ev: MessageEvent<FromWorker>) => {
      const m = ev.data;
      if (m.t === "ack") {
        inflight -= m.buf.length;
        if (m.buf.length === WORKER_BATCH) pool.push(m.buf as Uint8Array<ArrayBuffer>); // reused: no fresh pages to fault in
        if (inflight <= WORKER_WINDOW / 2) kick();
      } else if (m.t === "warn") {
        onWarning?.(m.m);
      } else if (m.t === "done") {
        result = {
          entries: m.entries,
          bytes: m.bytes,
          warnings: m.warnings,
          dependsOnLowers: m.dependsOnLowers,
          ownersLost: m.ownersLost,
          ...(m.fileDigests ? { fileDigests: m.fileDigests } : {}),
          ...(record ? { record } : {}),
        };
        settle();
      } else if (m.t === "record" || m.t === "record-error") {
        reusable = m.t === "record";
        finished();
        recorded?.(m);
      } else if (m.t === "error") {
        failure ??= reviveError(m.e);
        settle();
        kick();
      } else if (m.t === "aborted") {
        settle();
        kick();
      }
    };
    worker.onerror = (ev) => {
      ev.preventDefault();
      const e = new EntryWriteError(
        `the applicator worker failed: ${ev.message}`,
        undefined,
        options.layer,
      );
      failure ??= e;
      settle();
      kick();
      worker.terminate();
      recorded?.({ t: "record-error", e: serializeError(e) });
    };
    stop.abort = () => {
      // Let the worker close its fds (they are the process's) before it goes.
      worker.postMessage({ t: "abort" } satisfies ToWorker);
      kick();
    };
    // Chunks are copied into 1 MiB batches the worker then owns (the
    // producer, zlib, may reuse its buffers; and one message per 64 KiB
    // chunk costs more than the copy).
    let batch = new Uint8Array(WORKER_BATCH);
    let fill = 0;
    const flush = () => {
      if (fill === 0) return;
      const buf = fill === batch.length ? batch : batch.slice(0, fill);
      inflight += buf.length;
      worker.postMessage({ t: "data", buf } satisfies ToWorker, [buf.buffer]);
      batch = pool.pop() ?? new Uint8Array(WORKER_BATCH);
      fill = 0;
    };
    const send = (c: Uint8Array) => {
      let off = 0;
      while (off < c.length) {
        const n = Math.min(c.length - off, batch.length - fill);
        batch.set(off === 0 && n === c.length ? c : c.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === batch.length) flush();
      }
    };
    try {
      worker.postMessage({ t: "init", root, options } satisfies ToWorker);
      for (;;) {
        while (inflight > WORKER_WINDOW && failure === undefined) {
          await new Promise<void>((r) => (wake = r));
        }
        if (failure !== undefined) break;
        const c = await read();
        if (!c) break;
        send(c);
      }
      if (failure === undefined) {
        flush();
        worker.postMessage({ t: "end" } satisfies ToWorker);
      }
      await settled;
      if (failure !== undefined) throw failure;
      return result!;
    } catch (e) {
      if (result === undefined && failure === undefined) {
        // Reading failed or was aborted: stop the worker cleanly first.
        worker.postMessage({ t: "abort" } satisfies ToWorker);
        await settled;
      }
      throw e;
    } finally {
      // Recording, the worker ends itself (above); otherwise it goes now.
      if (!record || result === undefined || failure !== undefined) {
        reusable = !record && result !== undefined && failure === undefined;
        finished();
        recorded?.({ t: "aborted" });
      }
    }
  }
}

/** A new applicator worker. */
function newApplyWorker(): Worker {
  return new Worker(workerModule(WORKER_URL), { type: "module" });
}

/**
 * Applicator workers started ahead and reused across layers, for a caller
 * that knows layers are coming (a pull): a worker's start (a V8 isolate, its
 * modules, the libc bindings, node:crypto) takes ~50-150 ms before it takes
 * the first byte, and started ahead it does so while the calling thread
 * opens the image and the first layer's stream. Pass it as
 * {@linkcode ApplyOptions.workers}; {@linkcode ApplyWorkers.close} (or
 * `using`) ends the idle ones, and those still busy when they finish. An
 * idle worker keeps the process alive until then.
 *
 * @example Usage
 * ```ts ignore
 * import { applyLayer, ApplyWorkers } from "./applicator.ts";
 * using workers = new ApplyWorkers({ hashes: true });
 * workers.warm(2);
 * for (const [i, layer] of image.layers.entries()) {
 *   await applyLayer(layer, `/tmp/layers/${i}`, { workers });
 * }
 * ```
 */
export class ApplyWorkers implements Disposable {
  #idle: Worker[] = [];
  #closed = false;
  readonly #hashes: boolean;

  /**
   * A pool of none yet. `hashes`: the layers will hash what they write
   * (`fileDigests` or `record`), so warmed workers load node:crypto ahead.
   */
  constructor(options: { hashes?: boolean } = {}) {
    this.#hashes = options.hashes ?? false;
  }

  /** Starts workers until `count` are idle (none once closed). */
  warm(count: number): void {
    while (!this.#closed && this.#idle.length < count) {
      const w = newApplyWorker();
      w.postMessage({ t: "warm", crypto: this.#hashes } satisfies ToWorker);
      this.#idle.push(w);
    }
  }

  /** An idle worker, or a new one. */
  take(): Worker {
    return this.#idle.pop() ?? newApplyWorker();
  }

  /** Takes back a worker that finished a layer cleanly (ends it once closed). */
  give(worker: Worker): void {
    worker.onmessage = null;
    worker.onerror = null;
    if (this.#closed) worker.terminate();
    else this.#idle.push(worker);
  }

  /** Ends the idle workers, and the busy ones when they are given back. */
  close(): void {
    this.#closed = true;
    for (const w of this.#idle.splice(0)) w.terminate();
  }

  /** Same as {@linkcode ApplyWorkers.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The worker's module: `apply_worker.ts` beside this file; in the bundled
 * CLI (`deno task build`: this code is then in a `.js` chunk at the top of
 * the output directory), the worker's own bundle, `layer/apply_worker.js`.
 */
const WORKER_URL = import.meta.url.endsWith(".ts")
  ? new URL("./apply_worker.ts", import.meta.url)
  : new URL("./layer/apply_worker.js", import.meta.url);

/** Layers shorter than this are applied on the calling thread under `threads: "auto"`. */
const WORKER_MIN = 4 << 20;
/** Size of the batches sent to the worker. */
const WORKER_BATCH = 1 << 20;
/** Bytes sent to the worker and not yet written, at most (keeps memory flat). */
const WORKER_WINDOW = 16 << 20;

/**
 * Applies `layer` to `root`: opens its verified, uncompressed tar
 * (`layer.uncompressed()` checks the blob digest and the diff_id while
 * streaming) and applies it. A digest mismatch rejects with a
 * {@linkcode DamagedLayerError} whose `cause` is the mismatch; the caller
 * must then discard `root` (the store publishes a layer only after this
 * resolves).
 *
 * @example Usage
 * ```ts ignore
 * import { applyLayer } from "./applicator.ts";
 * declare const layer: import("../image/types.ts").Layer;
 * await applyLayer(layer, "/var/lib/strata/tmp/x/fs", { whiteouts: "direct" });
 * ```
 */
export async function applyLayer(
  layer: Layer,
  root: string,
  options: ApplyOptions & { signal?: AbortSignal } = {},
): Promise<ApplyResult> {
  const { signal, ...o } = options;
  const stream = await layer.uncompressed(signal);
  return await new TarApplicator({ layer: layer.digest, expectedSize: layer.size, ...o })
    .apply(stream, root, signal);
}
