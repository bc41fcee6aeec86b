/**
 * Pull-through cache benchmark: the same image pulled into an empty layer
 * cache straight from an upstream `docker-registry` on 127.0.0.1, and through
 * a second `docker-registry` in Distribution's proxy mode in front of it,
 * named by a made-up prefix that registries.conf maps to the upstream with the
 * proxy as its mirror (what a fleet does), interleaved in the same run,
 * medians and ratios. The proxy is measured warm (it holds the blobs: every
 * node after the first) and cold (a new proxy each run, fetching from the
 * upstream while it serves: the first node).
 *
 * The image: incompressible files in two layers (32 and 64 MiB) and two small
 * layers. `$STRATA_BENCH_RUNS` sets the number of runs (default 5).
 *
 * Runnable alone: `deno run -A bench/mirror.ts` (mounts its own tmpfs as
 * root, else uses a temp dir).
 *
 * @module
 */
import { join } from "@std/path";
import { openImage, type OpenImageOptions } from "../image/open.ts";
import { CachingLayerResolver } from "../overlay/resolver.ts";
import { Registry } from "../tests/_registry.ts";
import { bigLayer, mountTmpfs } from "./fixtures.ts";
import { buildLayout, smallLayer } from "./pull.ts";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

let pulls = 0;

/** Pulls `ref` into a fresh cache below `dir` as `strata pull` does; returns milliseconds. */
async function pullInto(dir: string, ref: string, options: OpenImageOptions): Promise<number> {
  const cache = join(dir, `cache-${pulls++}`);
  try {
    const t0 = performance.now();
    const image = await openImage(ref, options);
    const r = await CachingLayerResolver.create(cache);
    await r.resolveAll(image.layers);
    return performance.now() - t0;
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
}

/** Writes a registries.conf: `fleet.example.com/bench` is the upstream's `bench`, mirrored by `proxy`. */
async function fleetConf(dir: string, upstream: string, proxy: string): Promise<string> {
  const file = join(dir, `registries-${proxy.replace(":", "-")}.conf`);
  await Deno.writeTextFile(
    file,
    `[[registry]]
prefix = "fleet.example.com/bench"
location = "${upstream}/bench"
insecure = true

[[registry.mirror]]
location = "${proxy}/bench"
insecure = true
`,
  );
  return file;
}

/** Runs the benchmark in `ctx.tmpfs`. */
export async function bench(
  ctx: { tmpfs: string; log: (line: string) => void },
): Promise<Record<string, number | string>> {
  const runs = Number(Deno.env.get("STRATA_BENCH_RUNS") ?? 5);
  const layers = [
    await bigLayer(32 << 20),
    await bigLayer(64 << 20),
    await smallLayer(ctx.tmpfs, "conf"),
    await smallLayer(ctx.tmpfs, "app"),
  ];
  const layout = join(ctx.tmpfs, "layout");
  await buildLayout(layout, layers);
  await using upstream = await Registry.start(undefined, ctx.tmpfs);
  await upstream.push(`oci:${layout}:bench`, "bench/image:latest");
  await using warm = await Registry.start(undefined, ctx.tmpfs, {
    proxy: `http://${upstream.host}`,
  });
  const noDropIns = join(ctx.tmpfs, "no-drop-ins");
  const warmConf = await fleetConf(ctx.tmpfs, upstream.host, warm.host);
  const compressed = layers.reduce((n, l) => n + l.sizeGz, 0);
  ctx.log(
    `${layers.length} layers, ${(compressed / 1e6).toFixed(0)} MB compressed, ` +
      `into an empty cache each time; ${runs} interleaved runs`,
  );
  const direct = () =>
    pullInto(ctx.tmpfs, `docker://${upstream.host}/bench/image:latest`, {
      tlsVerify: false,
      registriesConf: false,
    });
  const viaProxy = (conf: string) =>
    pullInto(ctx.tmpfs, "fleet.example.com/bench/image:latest", {
      registriesConf: conf,
      registriesConfDir: noDropIns,
    });
  const cold = async () => {
    // A new pull-through cache: its start is not timed, its first pull is.
    await using proxy = await Registry.start(undefined, ctx.tmpfs, {
      proxy: `http://${upstream.host}`,
    });
    return await viaProxy(await fleetConf(ctx.tmpfs, upstream.host, proxy.host));
  };
  await viaProxy(warmConf); // fills the warm proxy, and warms the page cache and the JIT
  await direct();
  const times = { direct: [] as number[], warm: [] as number[], cold: [] as number[] };
  for (let i = 0; i < runs; i++) {
    times.direct.push(await direct());
    times.warm.push(await viaProxy(warmConf));
    times.cold.push(await cold());
  }
  const m = { direct: median(times.direct), warm: median(times.warm), cold: median(times.cold) };
  ctx.log(
    `straight from the upstream ${m.direct.toFixed(0)} ms; through the pull-through cache: warm ${
      m.warm.toFixed(0)
    } ms (${(m.warm / m.direct).toFixed(2)}x), cold ${m.cold.toFixed(0)} ms (${
      (m.cold / m.direct).toFixed(2)
    }x)`,
  );
  return {
    layers: layers.length,
    compressedMB: Math.round(compressed / 1e6),
    directMs: Math.round(m.direct),
    proxyWarmMs: Math.round(m.warm),
    proxyColdMs: Math.round(m.cold),
    warmRatio: Number((m.warm / m.direct).toFixed(3)),
    coldRatio: Number((m.cold / m.direct).toFixed(3)),
  };
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "strata-bench-mirror-" });
  const fs = Deno.uid() === 0 ? await mountTmpfs(dir, { size: "4g" }) : undefined;
  try {
    const r = await bench({ tmpfs: dir, log: (l) => console.error(`   ${l}`) });
    for (const [k, v] of Object.entries(r)) console.log(`mirror.${k}\t${v}`);
  } finally {
    await fs?.unmount();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
