/**
 * Pull benchmark: the end-to-end pull of a multi-layer image INTO the layer
 * cache (open, fetch, verify both digests, decompress, extract, publish)
 * from Debian's `docker-registry` on 127.0.0.1 and from an OCI layout of the
 * same image on the same tmpfs, interleaved in the same run, medians and
 * their ratio (goal: registry ≤ 1.1 × layout, i.e. the network overlaps
 * extraction). Each source is pulled two ways:
 * - `resolveAll` (what `strata pull` does): later layers download into
 *   spools while the current one is applied, in order;
 * - one layer after another (`resolve` in a loop, the way before prefetch).
 *
 * The image: the Debian rootfs layer, 64 MiB of incompressible files split
 * into two layers (32 + 64 MiB makers), and two small layers. Every pull
 * starts from an empty cache on the tmpfs.
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
async function buildLayout(dir: string, layers: LayerFixture[]): Promise<void> {
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

async function smallLayer(dir: string, name: string): Promise<LayerFixture> {
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

let pulls = 0;
/** `resolveAll`'s concurrency (`$STRATA_PULL_CONCURRENCY`, default its own: 3). */
const CONCURRENCY = Deno.env.get("STRATA_PULL_CONCURRENCY")
  ? Number(Deno.env.get("STRATA_PULL_CONCURRENCY"))
  : undefined;

/** Pulls `ref` into a fresh cache below `dir`; returns milliseconds and the files published. */
async function pullInto(
  dir: string,
  ref: string,
  prefetch: boolean,
): Promise<{ ms: number; files: number }> {
  const cache = join(dir, `cache-${pulls++}`);
  try {
    const t0 = performance.now();
    const image = await openImage(ref, { tlsVerify: false });
    const r = await CachingLayerResolver.create(cache);
    if (prefetch) await r.resolveAll(image.layers, { concurrency: CONCURRENCY });
    else {
      for (let i = 0; i < image.layers.length; i++) {
        await r.resolve(image.layers[i], image.layers.slice(0, i));
      }
    }
    const ms = performance.now() - t0;
    let files = 0;
    for (const l of image.layers) files += (await r.record(l.diffID)).record.files;
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
  const refs = {
    layout: `oci:${layout}:bench`,
    registry: `docker://${reg.host}/bench/image:latest`,
  };
  const times: Record<string, number[]> = {
    layout: [],
    registry: [],
    layoutSequential: [],
    registrySequential: [],
  };
  let files = -1;
  const once = async (key: string, source: "layout" | "registry", prefetch: boolean) => {
    const r = await pullInto(ctx.tmpfs, refs[source], prefetch);
    if (files >= 0 && r.files !== files) {
      throw new Error(`${key}: published ${r.files} files, another pull ${files}`);
    }
    files = r.files;
    times[key].push(r.ms);
  };
  await once("layout", "layout", true); // warm the page cache and the JIT
  times.layout = [];
  for (let i = 0; i < runs; i++) {
    await once("layout", "layout", true);
    await once("registry", "registry", true);
    await once("layoutSequential", "layout", false);
    await once("registrySequential", "registry", false);
  }
  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  const ratio = m.registry / m.layout;
  const ratioSeq = m.registrySequential / m.layoutSequential;
  ctx.log(
    `resolveAll: layout ${m.layout.toFixed(0)} ms, registry ${m.registry.toFixed(0)} ms (${
      ratio.toFixed(2)
    }x, goal <= 1.1x); one layer at a time: layout ${m.layoutSequential.toFixed(0)} ms, registry ${
      m.registrySequential.toFixed(0)
    } ms (${ratioSeq.toFixed(2)}x)`,
  );
  return {
    layers: layers.length,
    compressedMB: Math.round(compressed / 1e6),
    tarMB: Math.round(tarBytes / 1e6),
    files,
    layoutMs: Math.round(m.layout),
    registryMs: Math.round(m.registry),
    layoutSequentialMs: Math.round(m.layoutSequential),
    registrySequentialMs: Math.round(m.registrySequential),
    ratio: Number(ratio.toFixed(3)),
    ratioSequential: Number(ratioSeq.toFixed(3)),
    registrySpeedup: Number((m.registrySequential / m.registry).toFixed(3)),
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
