/**
 * Worker side of `TarApplicator`: parses the tar and writes the entries on
 * a second thread, while the calling thread reads, hashes and decompresses
 * the layer. Messages (see {@linkcode ToWorker} and {@linkcode FromWorker}):
 * optionally `warm` first (load what a layer will need before it comes),
 * then per layer `init`, `data` per chunk (each acknowledged, for flow
 * control), then `end` (or `abort`); the worker answers `done` with the
 * result, `error` or `aborted`, and, when the layer asked for its tree
 * record, `record` or `record-error` after `done`. After `done` (and its
 * record) the worker takes the next layer's `init`: an `ApplyWorkers` pool
 * reuses it. After `error` or `aborted` it is only terminated. The message
 * types live in `writer.ts`.
 *
 * @module
 */
import { asDamaged, serializeError } from "./errors.ts";
import { TarParser } from "./tar.ts";
import { treeRecord } from "./record.ts";
import type * as NodeCrypto from "node:crypto";
import { libc } from "../sys/libc.ts";
import { type FromWorker, LayerWriter, type ToWorker, type WriterOptions } from "./writer.ts";

// The worker global scope, typed without the deno.worker lib (which would
// clash with the window types of the modules checked together with this one).
const scope = globalThis as unknown as {
  postMessage(m: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
};

let writer: LayerWriter | undefined;
let parser: TarParser | undefined;
let failed = false;
let layer: string | undefined;
let settings: { root: string; options: WriterOptions } | undefined;
/** node:crypto's `createHash`, once loaded (for `fileDigests` and `record`). */
let createHash: typeof NodeCrypto.createHash | undefined;
let loadingCrypto: Promise<typeof NodeCrypto.createHash> | undefined;

function loadCrypto(): Promise<typeof NodeCrypto.createHash> {
  return loadingCrypto ??= import("node:crypto").then((m) => createHash = m.createHash);
}

function post(m: FromWorker): void {
  scope.postMessage(m);
}

function fail(e: unknown): void {
  failed = true;
  writer?.dispose();
  writer = undefined;
  post({ t: "error", e: serializeError(asDamaged(e, layer)) });
}

/** Messages that came while node:crypto loaded (with `fileDigests`). */
let queued: ToWorker[] | undefined;

scope.onmessage = (ev: MessageEvent<ToWorker>) => {
  const m = ev.data;
  if (queued && m.t !== "abort") {
    queued.push(m);
    return;
  }
  handle(m);
};

function handle(m: ToWorker): void {
  if (m.t === "abort") {
    writer?.dispose();
    writer = undefined;
    failed = true;
    post({ t: "aborted" });
    return;
  }
  if (m.t === "warm") {
    // What the first layer would otherwise load when it comes: the libc
    // bindings, and node:crypto (~40 ms of this thread) when it will hash.
    try {
      libc();
    } catch {
      // the layer's init reports it
    }
    if (m.crypto) loadCrypto().catch(() => {});
    return;
  }
  if (failed) return;
  try {
    if (m.t === "init") {
      layer = m.options.layer;
      if ((m.options.fileDigests || m.options.record) && !createHash) {
        // Loaded only when asked for; what comes meanwhile waits.
        queued = [];
        loadCrypto().then((createHash) => {
          const waiting = queued!;
          queued = undefined;
          if (failed) return;
          try {
            init(m.root, m.options, createHash);
          } catch (e) {
            return fail(e);
          }
          for (const q of waiting) handle(q);
        }, fail);
        return;
      }
      init(m.root, m.options, createHash);
    } else if (m.t === "data") {
      parser!.push(m.buf);
      // The buffer goes back (transferred) for the next batch.
      scope.postMessage({ t: "ack", buf: m.buf }, [m.buf.buffer as ArrayBuffer]);
    } else {
      parser!.end();
      writer!.finish();
      const { entries, bytes, warnings, dependsOnLowers, ownersLost, fileDigests } = writer!;
      writer!.dispose();
      writer = undefined;
      parser = undefined;
      const { root, options } = settings!;
      const asked = options.fileDigests ? fileDigests : undefined;
      post({
        t: "done",
        entries,
        bytes,
        warnings,
        dependsOnLowers,
        ownersLost,
        fileDigests: asked,
      });
      if (options.record) {
        // The tree is written: its record, while the caller goes on. The
        // next `init` comes only after this is posted.
        treeRecord(root, { fileDigests }).then(
          (record) => post({ t: "record", record }),
          (e) => post({ t: "record-error", e: serializeError(e) }),
        );
      }
    }
  } catch (e) {
    fail(e);
  }
}

function init(
  root: string,
  options: WriterOptions,
  createHash?: typeof NodeCrypto.createHash,
): void {
  settings = { root, options };
  writer = new LayerWriter(root, {
    ...options,
    onWarning: (w) => post({ t: "warn", m: w }),
  }, createHash);
  const w = writer;
  parser = new TarParser(w, { onWarning: (x) => w.warn(x) });
}
