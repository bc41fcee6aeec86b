/**
 * Layer cache benchmark: the cost of a cached `resolve` (a stat; the target
 * is at most 1 ms), and the time to extract a multi-layer image in the two
 * modes, `direct` (tar straight into the layer dir) and `workdir` (the seed's
 * way: through an overlay of the parents), interleaved, medians, on a tmpfs.
 *
 * @module
 */
import { join } from "@std/path";
import { CachingLayerResolver, type ResolveMode } from "../overlay/resolver.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { type MemoryLayer, memoryLayer } from "../tests/_layers.ts";

/** What the benchmark receives (see bench/main.ts). */
export interface BenchContext {
  /** A tmpfs directory to work in. */
  tmpfs: string;
  /** Prints one progress line. */
  log: (line: string) => void;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/**
 * An image of `layers` layers of `files` files each (4 KiB, in 20 dirs);
 * every layer after the first deletes a tenth of the previous layer's files
 * and makes one of its dirs opaque, so both modes do whiteout work.
 */
function image(layers: number, files: number): MemoryLayer[] {
  const out: MemoryLayer[] = [];
  const body = new Uint8Array(4096).map((_, i) => i & 0xff);
  for (let l = 0; l < layers; l++) {
    const t = new TarWriter({ defaultMtime: 1_700_000_000 });
    t.directory("./");
    for (let d = 0; d < 20; d++) {
      t.directory(`d${d}/`);
      if (l > 0 && d === l % 20) t.file(`d${d}/.wh..wh..opq`);
    }
    for (let f = 0; f < files; f++) t.file(`d${f % 20}/l${l}-f${f}`, body);
    if (l > 0) {
      for (let f = 0; f < files; f += 10) t.file(`d${f % 20}/.wh.l${l - 1}-f${f}`);
    }
    out.push(memoryLayer(t, "gzip"));
  }
  return out;
}

async function extractImage(root: string, mode: ResolveMode, layers: MemoryLayer[]) {
  const r = await CachingLayerResolver.create(root, { mode });
  const t0 = performance.now();
  for (let i = 0; i < layers.length; i++) await r.resolve(layers[i], layers.slice(0, i));
  return performance.now() - t0;
}

/**
 * Runs the benchmark.
 *
 * @example Usage
 * ```ts ignore
 * import { bench } from "./resolve.ts";
 * console.log(await bench({ tmpfs: "/mnt/tmpfs", log: console.error }));
 * ```
 */
export async function bench(ctx: BenchContext): Promise<Record<string, number | string>> {
  const LAYERS = 6, FILES = 2000, RUNS = 5;
  ctx.log(`building an image of ${LAYERS} layers x ${FILES} files`);
  const layers = image(LAYERS, FILES);
  const times: Record<ResolveMode, number[]> = { direct: [], workdir: [] };
  for (let run = 0; run < RUNS; run++) {
    for (const mode of ["direct", "workdir"] as const) {
      const root = join(ctx.tmpfs, `${mode}-${run}`);
      times[mode].push(await extractImage(root, mode, layers));
      await Deno.remove(root, { recursive: true });
    }
  }
  ctx.log(
    `extract direct ${median(times.direct).toFixed(1)} ms, workdir ${
      median(times.workdir).toFixed(1)
    } ms (medians of ${RUNS})`,
  );

  // Cached resolves on a warm cache: every call is one stat.
  const root = join(ctx.tmpfs, "cached");
  await extractImage(root, "direct", layers);
  const r = await CachingLayerResolver.create(root);
  const per: number[] = [];
  for (let i = 0; i < 5000; i++) {
    const l = i % LAYERS;
    const t0 = performance.now();
    await r.resolve(layers[l], layers.slice(0, l));
    per.push(performance.now() - t0);
  }
  const t0 = performance.now();
  for (let n = 0; n < 200; n++) {
    for (let i = 0; i < LAYERS; i++) await r.resolve(layers[i], layers.slice(0, i));
  }
  const imageMs = (performance.now() - t0) / 200;
  await Deno.remove(root, { recursive: true });
  const cached = median(per);
  ctx.log(
    `cached resolve median ${(cached * 1000).toFixed(1)} µs, p99 ${
      (quantile(per, 0.99) * 1000).toFixed(1)
    } µs (target <= 1 ms)`,
  );
  return {
    cached_resolve_median_ms: Number(cached.toFixed(4)),
    cached_resolve_p99_ms: Number(quantile(per, 0.99).toFixed(4)),
    cached_image_resolve_ms: Number(imageMs.toFixed(4)),
    cached_resolve_target_met: cached <= 1 ? "yes" : "no",
    extract_direct_ms: Number(median(times.direct).toFixed(1)),
    extract_workdir_ms: Number(median(times.workdir).toFixed(1)),
    workdir_over_direct: Number((median(times.workdir) / median(times.direct)).toFixed(2)),
    image: `${LAYERS} layers x ${FILES} files of 4 KiB, gzip, whiteouts + opaque dirs`,
  };
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "strata-bench-resolve-" });
  const mount = (args: string[]) => new Deno.Command(args[0], { args: args.slice(1) }).output();
  await mount(["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", dir]);
  try {
    const r = await bench({ tmpfs: dir, log: (l) => console.error(`   ${l}`) });
    for (const [k, v] of Object.entries(r)) console.log(`resolve.${k}\t${v}`);
  } finally {
    await mount(["umount", "-l", dir]);
    await Deno.remove(dir, { recursive: true });
  }
}
