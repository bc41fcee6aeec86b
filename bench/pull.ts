/**
 * Pull benchmark: streams every layer of a multi-layer image (a Debian rootfs,
 * 64 MiB of incompressible files, two small layers) through strata's
 * verifying, decompressing reader, once from Debian's `docker-registry` on
 * 127.0.0.1 and once from an OCI layout on the same tmpfs, interleaved, and
 * reports medians and their ratio (goal: registry ≤ 1.1 × layout, i.e. the
 * network costs next to nothing because it overlaps decompression and
 * hashing). Each run also reports the pipelined variant for both sources,
 * where every layer's stream is opened at once and read in order (so the next
 * layer's first chunks are fetched and decompressed while the current one is
 * consumed).
 *
 * Runnable alone: `deno run -A bench/pull.ts` (uses a temp dir, not a tmpfs).
 *
 * @module
 */
import { join } from "@std/path";
import { digestOf } from "../image/blob.ts";
import { openImage } from "../image/open.ts";
import type { Image } from "../image/types.ts";
import { MediaType } from "../image/types.ts";
import { Registry } from "../tests/_registry.ts";
import { bigLayer, debianRootfsLayer, type LayerFixture } from "./fixtures.ts";
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

/** Reads every layer in order through `uncompressed()`; returns bytes read. */
async function drain(image: Image, pipelined: boolean): Promise<number> {
  let n = 0;
  // Pipelined: every download starts now; the consumer still reads in order.
  const opened = pipelined ? image.layers.map((l) => l.uncompressed()) : [];
  for (const [i, l] of image.layers.entries()) {
    const s = pipelined ? await opened[i] : await l.uncompressed();
    for await (const c of s) n += c.length;
  }
  return n;
}

/** Runs the benchmark in `ctx.tmpfs`. */
export async function bench(
  ctx: { tmpfs: string; log: (line: string) => void },
): Promise<Record<string, number | string>> {
  const runs = Number(Deno.env.get("STRATA_BENCH_RUNS") ?? 5);
  const layers = [
    await debianRootfsLayer(),
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
    } MB of tar; ${runs} interleaved runs`,
  );
  const times: Record<string, number[]> = {
    layout: [],
    registry: [],
    layoutPipelined: [],
    registryPipelined: [],
  };
  const once = async (key: string, ref: string, pipelined: boolean) => {
    const t0 = performance.now();
    const image = await openImage(ref, { tlsVerify: false });
    const n = await drain(image, pipelined);
    const ms = performance.now() - t0;
    if (n !== tarBytes) throw new Error(`${key}: read ${n} bytes, expected ${tarBytes}`);
    times[key].push(ms);
  };
  await once("layout", `oci:${layout}:bench`, false); // warm the page cache and the JIT
  times.layout = [];
  for (let i = 0; i < runs; i++) {
    await once("layout", `oci:${layout}:bench`, false);
    await once("registry", `docker://${reg.host}/bench/image:latest`, false);
    await once("layoutPipelined", `oci:${layout}:bench`, true);
    await once("registryPipelined", `docker://${reg.host}/bench/image:latest`, true);
  }
  const layoutMs = median(times.layout);
  const registryMs = median(times.registry);
  const pipeMs = median(times.registryPipelined);
  const layoutPipeMs = median(times.layoutPipelined);
  ctx.log(
    `in order: layout ${layoutMs.toFixed(0)} ms, registry ${registryMs.toFixed(0)} ms (${
      (registryMs / layoutMs).toFixed(2)
    }x); pipelined: layout ${layoutPipeMs.toFixed(0)} ms, registry ${pipeMs.toFixed(0)} ms (${
      (pipeMs / layoutPipeMs).toFixed(2)
    }x)`,
  );
  return {
    layers: layers.length,
    compressedMB: Math.round(compressed / 1e6),
    tarMB: Math.round(tarBytes / 1e6),
    layoutMs: Math.round(layoutMs),
    registryMs: Math.round(registryMs),
    layoutPipelinedMs: Math.round(layoutPipeMs),
    registryPipelinedMs: Math.round(pipeMs),
    ratio: Number((registryMs / layoutMs).toFixed(3)),
    ratioPipelined: Number((pipeMs / layoutPipeMs).toFixed(3)),
    tarMBps: Math.round(tarBytes / 1e6 / (layoutMs / 1000)),
  };
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "strata-bench-pull-" });
  try {
    const r = await bench({ tmpfs: dir, log: (l) => console.error(`   ${l}`) });
    for (const [k, v] of Object.entries(r)) console.log(`pull.${k}\t${v}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
