/**
 * Tar parsing throughput on a real Debian rootfs layer (debootstrap, see
 * `fixtures.ts`): strata's {@linkcode TarParser} against GNU `tar -t` on the
 * same blob, plain and gzip, in the same run, interleaved, medians. Also the
 * npm parsers the layer issue names (`tar-stream`, `modern-tar`, `tar`), to
 * justify a parser of our own with numbers.
 *
 * Run alone: `deno run -A bench/tar.ts` (root: it mounts a tmpfs).
 *
 * @module
 */

import { createGunzip } from "node:zlib";
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { Buffer } from "node:buffer";
import { join } from "@std/path";
import { TarParser, untar } from "../layer/tar.ts";
import { debianRootfsLayer, mountTmpfs } from "./fixtures.ts";

const ROUNDS = 5;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function time(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function gnuTar(args: string[], cmd = "tar"): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  }
}

/** Counts entries and body bytes: the least a consumer does. */
function counter() {
  const c = { entries: 0, bytes: 0 };
  return {
    c,
    sink: {
      entry() {
        c.entries++;
      },
      data(chunk: Uint8Array) {
        c.bytes += chunk.length;
      },
      entryEnd() {},
    },
  };
}

function gunzipStream(path: string): ReadableStream<Uint8Array> {
  const node = createReadStream(path, { highWaterMark: 1 << 20 }).pipe(
    createGunzip({ chunkSize: 1 << 18 }),
  );
  return Readable.toWeb(node) as unknown as ReadableStream<Uint8Array>;
}

/** npm peers, imported lazily so a missing package only skips its line. */
async function npmPeers(
  bytes: Uint8Array,
  log: (l: string) => void,
): Promise<Record<string, () => Promise<number>>> {
  const peers: Record<string, () => Promise<number>> = {};
  // Node streams get Buffers (node-tar misreads plain Uint8Arrays), views without copies.
  const chunks = () => {
    const out: Uint8Array[] = [];
    for (let o = 0; o < bytes.length; o += 1 << 16) {
      out.push(
        Buffer.from(bytes.buffer, bytes.byteOffset + o, Math.min(1 << 16, bytes.length - o)),
      );
    }
    return out;
  };
  try {
    const ts = await import("tar-stream");
    peers["tar-stream"] = () =>
      new Promise((resolve, reject) => {
        let n = 0;
        const ex = ts.extract();
        ex.on(
          "entry",
          (
            _h: unknown,
            stream: { resume(): void; on(e: string, f: () => void): void },
            next: () => void,
          ) => {
            n++;
            stream.on("end", next);
            stream.resume();
          },
        );
        ex.on("finish", () => resolve(n));
        ex.on("error", reject);
        for (const c of chunks()) ex.write(c);
        ex.end(undefined);
      });
  } catch (e) {
    log(`tar-stream unavailable: ${(e as Error).message}`);
  }
  try {
    const mt = await import("modern-tar");
    peers["modern-tar"] = async () => {
      let n = 0;
      const src = new ReadableStream<Uint8Array>({
        start(c) {
          for (const ch of chunks()) c.enqueue(ch);
          c.close();
        },
      });
      for await (const entry of src.pipeThrough(mt.createTarDecoder())) {
        n++;
        const r = entry.body.getReader();
        while (!(await r.read()).done) { /* drain */ }
      }
      return n;
    };
  } catch (e) {
    log(`modern-tar unavailable: ${(e as Error).message}`);
  }
  try {
    const nt = await import("npm-tar");
    peers["tar (node-tar)"] = () =>
      new Promise((resolve, reject) => {
        let n = 0;
        const p = new nt.Parser({
          onReadEntry: (entry: { resume(): void }) => {
            n++;
            entry.resume();
          },
        });
        p.on("end", () => resolve(n));
        p.on("error", reject);
        for (const c of chunks()) p.write(c);
        p.end();
      });
  } catch (e) {
    log(`tar (node-tar) unavailable: ${(e as Error).message}`);
  }
  return peers;
}

/**
 * Measures parse throughput; returns medians in ms and the ratios to GNU tar.
 *
 * @example Usage
 * ```ts ignore
 * import { bench } from "./tar.ts";
 * console.log(await bench({ tmpfs: "/mnt/tmpfs", log: console.log }));
 * ```
 */
export async function bench(
  ctx: { tmpfs: string; log: (line: string) => void },
): Promise<Record<string, number | string>> {
  const { log } = ctx;
  const layer = await debianRootfsLayer();
  log(
    `debian layer: ${layer.entries} entries, tar ${(layer.sizeTar / 1e6).toFixed(0)} MB, gzip ${
      (layer.sizeGz / 1e6).toFixed(0)
    } MB`,
  );
  const tarPath = join(ctx.tmpfs, "layer.tar");
  const gzPath = join(ctx.tmpfs, "layer.tar.gz");
  await Deno.copyFile(layer.tar, tarPath);
  await Deno.copyFile(layer.tarGz, gzPath);
  const bytes = await Deno.readFile(tarPath);

  const memParse = () => {
    const { c, sink } = counter();
    const p = new TarParser(sink);
    for (let o = 0; o < bytes.length; o += 1 << 16) p.push(bytes.subarray(o, o + (1 << 16)));
    p.end();
    if (c.entries !== layer.entries) {
      throw new Error(`parsed ${c.entries} entries, tar -t lists ${layer.entries}`);
    }
  };
  // Deno's FsFile.readable hands out 64 KiB chunks and costs ~3x a 1 MiB read loop here.
  const fileParse = async () => {
    const { c, sink } = counter();
    using f = await Deno.open(tarPath);
    const p = new TarParser(sink);
    const buf = new Uint8Array(1 << 20);
    for (let n; (n = await f.read(buf)) !== null;) p.push(buf.subarray(0, n));
    p.end();
    if (c.entries !== layer.entries) throw new Error(`parsed ${c.entries} entries`);
  };
  const gzParse = async () => {
    const { c, sink } = counter();
    await untar(gunzipStream(gzPath), sink);
    if (c.entries !== layer.entries) throw new Error(`parsed ${c.entries} entries`);
  };
  const peers = await npmPeers(bytes, log);

  const t: Record<string, number[]> = {};
  const add = (k: string, ms: number) => (t[k] ??= []).push(ms);
  memParse(); // warm up the JIT
  for (let r = 0; r < ROUNDS; r++) {
    add("strata parse (memory)", await time(memParse));
    add("strata parse (file, 1 MiB reads)", await time(fileParse));
    // A layer arrives as a stream, so GNU tar reads from a pipe (on a file it seeks past bodies).
    add(
      "GNU tar -tf - (pipe)",
      await time(() => gnuTar(["-c", `cat '${tarPath}' | tar -tf - > /dev/null`], "sh")),
    );
    add("GNU tar -tf (file, seeks)", await time(() => gnuTar(["-tf", tarPath])));
    add("strata parse (gzip, node:zlib)", await time(gzParse));
    add("GNU tar -tzf", await time(() => gnuTar(["-tzf", gzPath])));
    for (const [name, fn] of Object.entries(peers)) {
      let n = 0;
      add(`${name} (memory)`, await time(async () => (n = await fn())));
      if (n !== layer.entries) log(`${name}: saw ${n} entries, expected ${layer.entries}`);
    }
  }
  const out: Record<string, number | string> = {};
  const mb = layer.sizeTar / 1e6;
  for (const [k, v] of Object.entries(t)) {
    const m = median(v);
    out[`${k} ms`] = Math.round(m * 10) / 10;
    log(
      `${k.padEnd(34)} ${m.toFixed(1).padStart(8)} ms  ${
        (mb / (m / 1000)).toFixed(0).padStart(6)
      } MB/s`,
    );
  }
  const ratio = (a: string, b: string) => Math.round((median(t[a]) / median(t[b])) * 1000) / 1000;
  out["ratio plain / tar -tf pipe"] = ratio(
    "strata parse (file, 1 MiB reads)",
    "GNU tar -tf - (pipe)",
  );
  out["ratio gzip / tar -tzf"] = ratio("strata parse (gzip, node:zlib)", "GNU tar -tzf");
  log(
    `ratio strata/GNU tar: plain ${out["ratio plain / tar -tf pipe"]}, gzip ${
      out["ratio gzip / tar -tzf"]
    } (lower is faster)`,
  );
  for (const name of Object.keys(peers)) {
    const r = ratio(`${name} (memory)`, "strata parse (memory)");
    out[`${name} / strata (memory)`] = r;
    log(`${name} is ${r}x strata's parse time from memory`);
  }
  out.entries = layer.entries;
  out["tar MB"] = Math.round(mb);
  return out;
}

if (import.meta.main) {
  const fs = await mountTmpfs(`/tmp/strata-bench-tar-${Deno.pid}`, { size: "2g" });
  const stop = () => fs.unmount().finally(() => Deno.exit(130));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    await bench({ tmpfs: fs.path, log: console.log });
  } finally {
    await fs.unmount();
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
  }
}
