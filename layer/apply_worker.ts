/**
 * Worker side of `TarApplicator`: parses the tar and writes the entries on
 * a second thread, while the calling thread reads, hashes and decompresses
 * the layer. Messages (see {@linkcode ToWorker} and {@linkcode FromWorker}):
 * `init` once, `data` per chunk (each acknowledged, for flow control), then
 * `end` (or `abort`); the worker answers `done` with the result, `error`
 * or `aborted`. The message types live in `writer.ts`.
 *
 * @module
 */
import { asDamaged, serializeError } from "./errors.ts";
import { TarParser } from "./tar.ts";
import { type FromWorker, LayerWriter, type ToWorker } from "./writer.ts";

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

function post(m: FromWorker): void {
  scope.postMessage(m);
}

function fail(e: unknown): void {
  failed = true;
  writer?.dispose();
  writer = undefined;
  post({ t: "error", e: serializeError(asDamaged(e, layer)) });
}

scope.onmessage = (ev: MessageEvent<ToWorker>) => {
  const m = ev.data;
  if (m.t === "abort") {
    writer?.dispose();
    writer = undefined;
    failed = true;
    post({ t: "aborted" });
    return;
  }
  if (failed) return;
  try {
    if (m.t === "init") {
      layer = m.options.layer;
      writer = new LayerWriter(m.root, {
        ...m.options,
        onWarning: (w) => post({ t: "warn", m: w }),
      });
      const w = writer;
      parser = new TarParser(w, { onWarning: (x) => w.warn(x) });
    } else if (m.t === "data") {
      parser!.push(m.buf);
      // The buffer goes back (transferred) for the next batch.
      scope.postMessage({ t: "ack", buf: m.buf }, [m.buf.buffer as ArrayBuffer]);
    } else {
      parser!.end();
      writer!.finish();
      const { entries, bytes, warnings, dependsOnLowers, ownersLost } = writer!;
      writer!.dispose();
      writer = undefined;
      post({ t: "done", entries, bytes, warnings, dependsOnLowers, ownersLost });
    }
  } catch (e) {
    fail(e);
  }
};
