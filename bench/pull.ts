/**
 * Pull benchmark: the end-to-end pull of a multi-layer image INTO the layer
 * cache (open, fetch, verify both digests, decompress, extract, publish)
 * from Debian's `docker-registry` on 127.0.0.1 and from an OCI layout of the
 * same image on the same tmpfs, interleaved in the same run, medians and
 * their ratio (goal: registry ≤ 1.1 × layout, i.e. the network overlaps
 * extraction). Each source is pulled the way `strata pull` pulls it: the
 * registry with `resolveAll` (later layers download into spools while the
 * current one is applied, in order), the layout one layer at a time (its
 * blobs are local files; spooling them ahead only copies them, which is
 * measured too). The registry is also pulled one layer at a time (the way
 * before prefetching).
 *
 * A third source is the same registry behind bench/throttle_proxy.ts, which
 * gives each connection `$STRATA_BENCH_LINK_MBPS` (default 40) MB/s, as a
 * distant registry or CDN does: there the network costs as much as
 * extraction, and overlapping them is what prefetching is for.
 *
 * The image: the Debian rootfs layer, incompressible files from the
 * big-layer maker in two layers (32 and 64 MiB), and two small layers. Every
 * pull starts from an empty cache on the tmpfs.
 *
 * `$STRATA_BENCH_RUNS` sets the number of runs (default 5),
 * `$STRATA_PULL_CONCURRENCY` resolveAll's concurrency (default 3).
 *
 * Runnable alone: `deno run -A bench/pull.ts` (mounts its own tmpfs as root,
 * else uses a temp dir).
 *
 * @module
 */
import { join } from "@std/path";
import { digestOf } from "../image/blob.ts";
import { openImage } from "../image/open.ts";
import { MediaType } from "../image/types.ts";
import { CachingLayerResolver } from "../overlay/resolver.ts";
import { Registry } from "../tests/_registry.ts";
import { bigLayer, debianRootfsLayer, type LayerFixture, mountTmpfs } from "./fixtures.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { gzipSync } from "node:zlib";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Writes an OCI layout whose layers are existing gzip blobs (copied, not recompressed). */
export async function buildLayout(dir: string, layers: LayerFixture[]): Promise<void> {
  const blobs = join(dir, "blobs", "sha256");
  await Deno.mkdir(blobs, { recursive: true });
  const put = async (bytes: Uint8Array) => {
    const d = digestOf(bytes);
    await Deno.writeFile(join(blobs, d.slice(7)), bytes);
    return d;
  };
  for (const l of layers) await Deno.copyFile(l.tarGz, join(blobs, l.digestGz.slice(7)));
  const config = new TextEncoder().encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    config: { Cmd: ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.digestTar) },
  }));
  const manifest = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: await put(config), size: config.length },
    layers: layers.map((l) => ({
      mediaType: MediaType.OciLayerGzip,
      digest: l.digestGz,
      size: l.sizeGz,
    })),
  }));
  const md = await put(manifest);
  await Deno.writeTextFile(join(dir, "oci-layout"), `{"imageLayoutVersion":"1.0.0"}`);
  await Deno.writeTextFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{
        mediaType: MediaType.OciManifest,
        digest: md,
        size: manifest.length,
        annotations: { "org.opencontainers.image.ref.name": "bench" },
      }],
    }),
  );
}

/** A gzip layer of 200 small text files under `etc/NAME/`. */
export async function smallLayer(dir: string, name: string): Promise<LayerFixture> {
  const w = new TarWriter({ defaultMtime: 1700000000 });
  for (let i = 0; i < 200; i++) w.file(`etc/${name}/f${i}`, `${name} ${i}\n`.repeat(50));
  const tar = w.bytes();
  const gz = gzipSync(tar);
  const tarPath = join(dir, `${name}.tar`);
  const gzPath = join(dir, `${name}.tar.gz`);
  await Deno.writeFile(tarPath, tar);
  await Deno.writeFile(gzPath, gz);
  return {
    tar: tarPath,
    tarGz: gzPath,
    digestTar: digestOf(tar),
    digestGz: digestOf(gz),
    sizeTar: tar.length,
    sizeGz: gz.length,
    entries: 200,
  };
}

/** Runs bench/throttle_proxy.ts as its own process in front of `upstream`. */
async function startThrottle(
  upstream: string,
  rate: number,
): Promise<{ host: string } & AsyncDisposable> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      join(import.meta.dirname!, "throttle_proxy.ts"),
      upstream,
      `${rate}`,
    ],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) throw new Error("throttle_proxy.ts exited before listening");
    line += value;
  }
  reader.releaseLock();
  return {
    host: line.trim(),
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

let pulls = 0;
/** `resolveAll`'s concurrency (`$STRATA_PULL_CONCURRENCY`, default its own: 3). */
const CONCURRENCY = Deno.env.get("STRATA_PULL_CONCURRENCY")
  ? Number(Deno.env.get("STRATA_PULL_CONCURRENCY"))
  : undefined;

/** Pulls `ref` into a fresh cache below `dir`; returns milliseconds and the files published. */
async function pullInto(
  dir: string,
  ref: string,
  prefetch: "none" | "auto" | "always",
): Promise<{ ms: number; files: number }> {
  const cache = join(dir, `cache-${pulls++}`);
  try {
    const t0 = performance.now();
    const image = await openImage(ref, { tlsVerify: false });
    const r = await CachingLayerResolver.create(cache);
    if (prefetch !== "none") {
      await r.resolveAll(image.layers, { concurrency: CONCURRENCY, prefetch });
    } else {
      for (let i = 0; i < image.layers.length; i++) {
        await r.resolve(image.layers[i], image.layers.slice(0, i));
      }
    }
    const ms = performance.now() - t0;
    let files = 0;
    for (const [i, l] of image.layers.entries()) {
      files += (await r.record(l.diffID, image.layers.slice(0, i))).record.files;
    }
    return { ms, files };
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
}

/** Runs the benchmark in `ctx.tmpfs`. */
export async function bench(
  ctx: { tmpfs: string; log: (line: string) => void },
): Promise<Record<string, number | string>> {
  const runs = Number(Deno.env.get("STRATA_BENCH_RUNS") ?? 5);
  const layers = [
    await debianRootfsLayer(),
    await bigLayer(32 << 20),
    await bigLayer(64 << 20),
    await smallLayer(ctx.tmpfs, "conf"),
    await smallLayer(ctx.tmpfs, "app"),
  ];
  const layout = join(ctx.tmpfs, "layout");
  await buildLayout(layout, layers);
  await using reg = await Registry.start(undefined, ctx.tmpfs);
  await reg.push(`oci:${layout}:bench`, "bench/image:latest");
  const compressed = layers.reduce((n, l) => n + l.sizeGz, 0);
  const tarBytes = layers.reduce((n, l) => n + l.sizeTar, 0);
  ctx.log(
    `${layers.length} layers, ${(compressed / 1e6).toFixed(0)} MB compressed, ${
      (tarBytes / 1e6).toFixed(0)
    } MB of tar, into an empty cache each time; ${runs} interleaved runs`,
  );
  // The same registry behind a link that gives each connection LINK_MBPS.
  const linkMBps = Number(Deno.env.get("STRATA_BENCH_LINK_MBPS") ?? 40);
  await using link = await startThrottle(reg.host, linkMBps * 1e6);
  const refs = {
    layout: `oci:${layout}:bench`,
    registry: `docker://${reg.host}/bench/image:latest`,
    link: `docker://${link.host}/bench/image:latest`,
  };
  // Each variant: a source and whether later layers download ahead: `auto`
  // (resolveAll's default, what `strata pull` does for registries: once
  // extraction waits on the network), `always` (from the start), or `none`
  // (each layer fetched when its turn comes: what strata does for layouts
  // and archives, and what it did for everything before prefetching).
  const variants: Record<string, [keyof typeof refs, "none" | "auto" | "always"]> = {
    layout: ["layout", "none"],
    registry: ["registry", "auto"],
    registrySequential: ["registry", "none"],
    registryAlways: ["registry", "always"],
    layoutSpooled: ["layout", "always"],
    link: ["link", "auto"],
    linkSequential: ["link", "none"],
  };
  const times: Record<string, number[]> = Object.fromEntries(
    Object.keys(variants).map((k) => [k, []]),
  );
  let files = -1;
  const once = async (key: string) => {
    const [source, prefetch] = variants[key];
    const r = await pullInto(ctx.tmpfs, refs[source], prefetch);
    if (files >= 0 && r.files !== files) {
      throw new Error(`${key}: published ${r.files} files, another pull ${files}`);
    }
    files = r.files;
    times[key].push(r.ms);
  };
  await once("layout"); // warm the page cache and the JIT
  times.layout = [];
  for (let i = 0; i < runs; i++) {
    for (const key of Object.keys(variants)) await once(key);
  }
  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  const ratio = m.registry / m.layout;
  ctx.log(
    `layout ${m.layout.toFixed(0)} ms, registry ${m.registry.toFixed(0)} ms: ${
      ratio.toFixed(2)
    }x (goal <= 1.1x); registry one layer at a time ${
      m.registrySequential.toFixed(0)
    } ms, downloading ahead from the start ${
      m.registryAlways.toFixed(0)
    } ms, layout spooled ahead ${m.layoutSpooled.toFixed(0)} ms`,
  );
  ctx.log(
    `registry behind a ${linkMBps} MB/s-per-connection link: resolveAll ${
      m.link.toFixed(0)
    } ms, one layer at a time ${m.linkSequential.toFixed(0)} ms (${
      (m.linkSequential / m.link).toFixed(2)
    }x faster)`,
  );
  return {
    layers: layers.length,
    compressedMB: Math.round(compressed / 1e6),
    tarMB: Math.round(tarBytes / 1e6),
    files,
    layoutMs: Math.round(m.layout),
    registryMs: Math.round(m.registry),
    ratio: Number(ratio.toFixed(3)),
    registrySequentialMs: Math.round(m.registrySequential),
    registrySpeedup: Number((m.registrySequential / m.registry).toFixed(3)),
    registryAlwaysMs: Math.round(m.registryAlways),
    layoutSpooledMs: Math.round(m.layoutSpooled),
    linkMBps,
    linkMs: Math.round(m.link),
    linkSequentialMs: Math.round(m.linkSequential),
    linkSpeedup: Number((m.linkSequential / m.link).toFixed(3)),
    tarMBps: Math.round(tarBytes / 1e6 / (m.layout / 1000)),
  };
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "strata-bench-pull-" });
  const fs = Deno.uid() === 0 ? await mountTmpfs(dir, { size: "6g" }) : undefined;
  try {
    const r = await bench({ tmpfs: dir, log: (l) => console.error(`   ${l}`) });
    for (const [k, v] of Object.entries(r)) console.log(`pull.${k}\t${v}`);
  } finally {
    await fs?.unmount();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
