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
import { MediaType } from "../image/types.ts";
import type { Layer } from "../image/types.ts";
import { openLayerTar } from "../image/blob.ts";
import { applyLayer } from "../layer/applicator.ts";
import { bigLayer, debianRootfsLayer, type LayerFixture, mountTmpfs } from "./fixtures.ts";

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

/**
 * A gzip layer over a fixture's blob file; `uncompressed()` verifies both
 * digests while streaming (image/blob.ts), as real layer sources do.
 *
 * @example Usage
 * ```ts ignore
 * import { debianRootfsLayer } from "./fixtures.ts";
 * const layer = fixtureLayer(await debianRootfsLayer());
 * ```
 */
export function fixtureLayer(f: LayerFixture): Layer {
  const layer: Layer = {
    digest: f.digestGz,
    diffID: f.digestTar,
    mediaType: MediaType.OciLayerGzip,
    size: f.sizeGz,
    compressed: async () => (await Deno.open(f.tarGz)).readable,
    uncompressed: (signal) => openLayerTar(layer, signal),
  };
  return layer;
}

type Who = "strata" | "main" | "tar";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The child mode: applies one layer and prints its peak RSS. */
async function child(fixtureJson: string, root: string): Promise<void> {
  await applyLayer(fixtureLayer(JSON.parse(fixtureJson)), root);
  const status = await Deno.readTextFile("/proc/self/status");
  const hwm = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  console.log(JSON.stringify({ peakRssKiB: Number(hwm) }));
}

/** Peak RSS (KiB) of a fresh process applying `f` to `root`. */
async function peakRss(f: LayerFixture, root: string): Promise<number> {
  await Deno.mkdir(root);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--child", JSON.stringify(f), root],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("peak RSS child failed");
  await Deno.remove(root, { recursive: true });
  return JSON.parse(new TextDecoder().decode(out.stdout)).peakRssKiB;
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
  ctx.log("Debian rootfs layer (debootstrap, cached by bench/fixtures.ts)");
  const debian = await debianRootfsLayer();
  const layer = fixtureLayer(debian);
  const gz = debian.tarGz;
  const times: Record<Who, number[]> = { strata: [], main: [], tar: [] };
  let entries = 0;
  for (let i = 0; i < runs; i++) {
    // Rotate who goes first so that none always gets the warmer cache.
    const order: Who[] = ["strata", "tar", "main"];
    for (let k = 0; k < i % 3; k++) order.push(order.shift()!);
    for (const who of order) {
      const dir = join(ctx.tmpfs, `${who}${i}`);
      await Deno.mkdir(dir);
      const t0 = performance.now();
      if (who === "tar") {
        await sh("tar", [
          "--numeric-owner",
          "--same-owner",
          "-p",
          "--xattrs",
          "--xattrs-include=*",
          "-xzf",
          gz,
          "-C",
          dir,
        ]);
      } else {
        // strata: the default (a worker thread writes while this one inflates);
        // main: everything on this thread.
        const threads = who === "main" ? "main" : undefined;
        entries = (await applyLayer(layer, dir, { threads })).entries;
      }
      times[who].push(performance.now() - t0);
      await Deno.remove(dir, { recursive: true });
    }
    ctx.log(
      `run ${i}: strata ${times.strata[i].toFixed(0)} ms, strata (one thread) ${
        times.main[i].toFixed(0)
      } ms, tar -xzf ${times.tar[i].toFixed(0)} ms`,
    );
  }
  const ms = median(times.strata), mms = median(times.main), tarMs = median(times.tar);
  const result: Record<string, number | string> = {
    layer_entries: entries,
    layer_bytes: debian.sizeTar,
    strata_ms: Math.round(ms),
    strata_one_thread_ms: Math.round(mms),
    tar_xzf_ms: Math.round(tarMs),
    ratio: Number((ms / tarMs).toFixed(3)),
    ratio_one_thread: Number((mms / tarMs).toFixed(3)),
  };
  if (Deno.env.get("STRATA_BENCH_BIG") !== "0") {
    const bytes = Number(Deno.env.get("STRATA_BENCH_BIG_BYTES") ?? 1 << 30);
    ctx.log(`${bytes >> 20} MiB layer for the peak RSS check (cached by bench/fixtures.ts)`);
    const big = await bigLayer(bytes);
    result.big_layer_mib = big.sizeTar >> 20;
    result.big_peak_rss_mib = Math.round(await peakRss(big, join(ctx.tmpfs, "big")) / 1024);
    result.debian_peak_rss_mib = Math.round(await peakRss(debian, join(ctx.tmpfs, "deb")) / 1024);
  }
  return result;
}

if (import.meta.main) {
  if (Deno.args[0] === "--child") {
    await child(Deno.args[1], Deno.args[2]);
  } else {
    const dir = await Deno.makeTempDir({ prefix: "strata-bench-apply-" });
    await using fs = await mountTmpfs(dir, { size: "8g" });
    const r = await bench({ tmpfs: fs.path, log: (l) => console.error(`   ${l}`) });
    for (const [k, v] of Object.entries(r)) console.log(`apply.${k}\t${v}`);
  }
}
