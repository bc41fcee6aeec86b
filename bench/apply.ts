/**
 * Benchmark of the layer applicator: a real Debian rootfs layer (debootstrap,
 * packed as a gzip OCI layer) applied by strata with both digests verified
 * and all metadata applied, interleaved with GNU `tar -xzf` of the same blob
 * on the same tmpfs; medians and the ratio. Then the peak RSS of a child
 * process applying a ~1 GB layer, which must stay flat (streaming).
 *
 * Run alone: `deno run -A bench/apply.ts` (root: it mounts a tmpfs).
 *
 * @module
 */
import { join } from "@std/path";
import { createHash } from "node:crypto";
import { MediaType } from "../image/types.ts";
import type { Layer } from "../image/types.ts";
import { openLayerTar } from "../image/blob.ts";
import { applyLayer } from "../layer/applicator.ts";

/** What {@linkcode bench} receives (see bench/main.ts). */
export interface BenchContext {
  /** A tmpfs to work on. */
  tmpfs: string;
  /** Prints one progress line. */
  log: (line: string) => void;
}

async function sh(cmd: string, args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stderr: "piped", stdout: "null" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  const f = await Deno.open(path);
  for await (const c of f.readable) h.update(c);
  return `sha256:${h.digest("hex")}`;
}

/**
 * A gzip layer whose blob is a file; `uncompressed()` verifies both digests
 * (image/blob.ts), as real layer sources do.
 *
 * @example Usage
 * ```ts ignore
 * const layer = await fileLayer("/tmp/layer.tar.gz", "/tmp/layer.tar");
 * ```
 */
export async function fileLayer(gz: string, tar: string): Promise<Layer> {
  const digest = await sha256File(gz);
  const diffID = await sha256File(tar);
  const size = (await Deno.stat(gz)).size;
  const layer: Layer = {
    digest,
    diffID,
    mediaType: MediaType.OciLayerGzip,
    size,
    compressed: async () => (await Deno.open(gz)).readable,
    uncompressed: (signal) => openLayerTar(layer, signal),
  };
  return layer;
}

/** Builds (or reuses) a debootstrap minbase rootfs layer under `dir`. */
async function debianLayer(dir: string, log: (l: string) => void): Promise<{ gz: string; tar: string }> {
  // Prefer the shared fixture when L1's bench/fixtures.ts provides one.
  try {
    const fx = await import("./fixtures.ts") as {
      debianLayer?: (o?: unknown) => Promise<{ gz?: string; tar?: string; path?: string }>;
    };
    if (fx.debianLayer) {
      const l = await fx.debianLayer();
      if (l.gz && l.tar) return { gz: l.gz, tar: l.tar };
    }
  } catch { /* no fixtures module yet */ }
  const cache = Deno.env.get("STRATA_BENCH_CACHE") ?? "/var/tmp/strata-bench";
  const gz = join(cache, "debian-layer.tar.gz"), tar = join(cache, "debian-layer.tar");
  try {
    await Deno.stat(gz);
    await Deno.stat(tar);
    return { gz, tar };
  } catch { /* build it */ }
  await Deno.mkdir(cache, { recursive: true });
  const rootfs = join(dir, "rootfs");
  log("debootstrap --variant=minbase bookworm (once, cached in " + cache + ")");
  await sh("debootstrap", ["--variant=minbase", "bookworm", rootfs]);
  await sh("tar", ["--numeric-owner", "--xattrs", "-C", rootfs, "-cf", tar, "."]);
  await sh("sh", ["-c", `gzip -c '${tar}' > '${gz}'`]);
  await Deno.remove(rootfs, { recursive: true });
  return { gz, tar };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The child mode: applies one layer and prints its peak RSS. */
async function child(gz: string, tar: string, root: string): Promise<void> {
  const layer = await fileLayer(gz, tar);
  await applyLayer(layer, root);
  const status = await Deno.readTextFile("/proc/self/status");
  const hwm = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  console.log(JSON.stringify({ peakRssKiB: Number(hwm) }));
}

async function peakRss(gz: string, tar: string, root: string): Promise<number> {
  await Deno.mkdir(root);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--child", gz, tar, root],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("peak RSS child failed");
  await Deno.remove(root, { recursive: true });
  return JSON.parse(new TextDecoder().decode(out.stdout)).peakRssKiB;
}

/** Builds a ~`mb` MB layer of a few big and many small files (incompressible content). */
async function bigLayer(dir: string, mb: number): Promise<{ gz: string; tar: string }> {
  const src = join(dir, "big-src");
  await Deno.mkdir(src);
  const chunk = new Uint8Array(1 << 20);
  const big = Math.floor(mb * 0.9);
  const f = await Deno.open(join(src, "big.bin"), { write: true, create: true });
  for (let i = 0; i < big; i++) {
    crypto.getRandomValues(chunk.subarray(0, 65536));
    for (let k = 65536; k < chunk.length; k += 65536) chunk.copyWithin(k, 0, 65536);
    chunk[0] = i & 255;
    await f.write(chunk);
  }
  f.close();
  for (let i = 0; i < 2000; i++) {
    await Deno.writeFile(join(src, `f${i}`), chunk.subarray(0, ((mb - big) << 20) / 2000 | 0));
  }
  const tar = join(dir, "big.tar"), gz = join(dir, "big.tar.gz");
  await sh("tar", ["-C", src, "-cf", tar, "."]);
  await sh("sh", ["-c", `gzip -1 -c '${tar}' > '${gz}'`]);
  await Deno.remove(src, { recursive: true });
  return { gz, tar };
}

/**
 * Runs the benchmark on `ctx.tmpfs`.
 *
 * @example Usage
 * ```ts ignore
 * import { bench } from "./apply.ts";
 * console.log(await bench({ tmpfs: "/mnt/tmpfs", log: console.error }));
 * ```
 */
export async function bench(ctx: BenchContext): Promise<Record<string, number | string>> {
  const runs = Number(Deno.env.get("STRATA_BENCH_RUNS") ?? 5);
  const { gz, tar } = await debianLayer(ctx.tmpfs, ctx.log);
  const layer = await fileLayer(gz, tar);
  const strata: number[] = [], gnu: number[] = [];
  let entries = 0;
  for (let i = 0; i < runs; i++) {
    const a = join(ctx.tmpfs, `s${i}`), b = join(ctx.tmpfs, `t${i}`);
    await Deno.mkdir(a);
    await Deno.mkdir(b);
    // Alternate who goes first so neither always gets the warmer cache.
    const order = i % 2 ? ["tar", "strata"] : ["strata", "tar"];
    for (const who of order) {
      const t0 = performance.now();
      if (who === "strata") entries = (await applyLayer(layer, a)).entries;
      else {
        await sh("tar", [
          "--numeric-owner",
          "--same-owner",
          "-p",
          "--xattrs",
          "--xattrs-include=*",
          "-xzf",
          gz,
          "-C",
          b,
        ]);
      }
      (who === "strata" ? strata : gnu).push(performance.now() - t0);
    }
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
    ctx.log(`run ${i}: strata ${strata[i].toFixed(0)} ms, tar -xzf ${gnu[i].toFixed(0)} ms`);
  }
  const ms = median(strata), tarMs = median(gnu);
  const result: Record<string, number | string> = {
    layer_entries: entries,
    layer_bytes: (await Deno.stat(tar)).size,
    strata_ms: Math.round(ms),
    tar_xzf_ms: Math.round(tarMs),
    ratio: Number((ms / tarMs).toFixed(3)),
  };
  if (Deno.env.get("STRATA_BENCH_BIG") !== "0") {
    const mb = Number(Deno.env.get("STRATA_BENCH_BIG_MB") ?? 1024);
    ctx.log(`building a ${mb} MB layer for the peak RSS check`);
    const big = await bigLayer(ctx.tmpfs, mb);
    result.big_layer_mb = mb;
    result.big_peak_rss_mb = Math.round(await peakRss(big.gz, big.tar, join(ctx.tmpfs, "big")) / 1024);
    const small = await peakRss(gz, tar, join(ctx.tmpfs, "small"));
    result.debian_peak_rss_mb = Math.round(small / 1024);
    await Deno.remove(big.gz);
    await Deno.remove(big.tar);
  }
  return result;
}

if (import.meta.main) {
  if (Deno.args[0] === "--child") {
    await child(Deno.args[1], Deno.args[2], Deno.args[3]);
  } else {
    const dir = await Deno.makeTempDir({ prefix: "strata-bench-apply-" });
    await sh("mount", ["-t", "tmpfs", "-o", "size=8g", "tmpfs", dir]);
    try {
      const r = await bench({ tmpfs: dir, log: (l) => console.error(`   ${l}`) });
      for (const [k, v] of Object.entries(r)) console.log(`apply.${k}\t${v}`);
    } finally {
      await sh("umount", ["-l", dir]);
      await Deno.remove(dir, { recursive: true });
    }
  }
}
