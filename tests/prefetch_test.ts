/**
 * resolveAll / overlay/prefetch.ts, for real: downloads overlap application,
 * application stays in order, a layer whose download is still running is
 * applied from it (the spool is a tee), cached layers are never fetched, an
 * abort stops every download and removes every spool, a digest mismatch in a
 * prefetched layer fails with nothing published, memory stays bounded, two
 * resolvers on one cache extract each layer once, and a multi-layer pull
 * from Debian's docker-registry (through a proxy that cuts a spooled
 * download) gives the same trees as the OCI layout.
 */
import { join } from "@std/path";
import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { CachingLayerResolver, type ResolverEvent } from "../overlay/resolver.ts";
import { type LayerEvent, LayerFetchError, LayerSpool } from "../overlay/prefetch.ts";
import { digestOf, openLayerTar } from "../image/blob.ts";
import { type Layer, MediaType } from "../image/types.ts";
import { openImage } from "../image/open.ts";
import { writeOciLayout } from "../image/build.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { type MemoryLayer, memoryLayer, snapshotTree } from "./_layers.ts";
import { isRoot, repoRoot, tempDir } from "./_helpers.ts";
import { formatBytes } from "../cli/output.ts";
import { CuttingProxy, Registry } from "./_registry.ts";

/** Deterministic pseudo-random bytes (xorshift32), incompressible for gzip. */
function noise(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >> 2);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return out;
}

/** A tar of `files` files of `size` random bytes each under `l<seed>/`, plus `etc/top` naming the layer. */
function noiseTar(seed: number, files = 4, size = 16 * 1024): Uint8Array {
  const t = new TarWriter({ defaultMtime: 1_700_000_000 });
  t.directory("./", { mode: 0o755 });
  t.directory("etc/", { mode: 0o755 });
  t.file("etc/top", `layer ${seed}\n`, { mode: 0o644 });
  t.directory(`l${seed}/`, { mode: 0o755 });
  for (let i = 0; i < files; i++) t.file(`l${seed}/f${i}`, noise(seed * 100 + i, size));
  return t.bytes();
}

/** A layer whose blob trickles out, recording bytes sent, opens and cancels. */
interface Trickle extends Layer {
  sent: number;
  opens: number;
  cancelled: number;
}

function trickle(base: MemoryLayer, delayMs: number, chunk = 8192, digest?: string): Trickle {
  const t: Trickle = {
    digest: digest ?? base.digest,
    diffID: base.diffID,
    mediaType: base.mediaType,
    size: base.size,
    sent: 0,
    opens: 0,
    cancelled: 0,
    compressed(signal?: AbortSignal) {
      t.opens++;
      let pos = 0;
      return Promise.resolve(
        new ReadableStream<Uint8Array>({
          async pull(c) {
            if (pos >= base.blob.length) return c.close();
            await new Promise((r) => setTimeout(r, delayMs));
            if (signal?.aborted) return c.error(signal.reason);
            const n = Math.min(chunk, base.blob.length - pos);
            c.enqueue(base.blob.slice(pos, pos + n));
            pos += n;
            t.sent += n;
          },
          cancel() {
            t.cancelled++;
          },
        }),
      );
    },
    uncompressed(signal?: AbortSignal) {
      return openLayerTar(t, signal);
    },
  };
  return t;
}

function firstAt(events: LayerEvent[], type: LayerEvent["type"], index: number): number {
  const e = events.find((e) => e.type === type && e.index === index);
  assert(e, `no ${type} event for layer ${index}`);
  return e.at;
}

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

/** Nothing left in `tmp/` and no temp locks. */
async function assertNoSpools(cache: string): Promise<void> {
  assertEquals(await names(join(cache, "tmp")), []);
  assertEquals((await names(join(cache, "locks"))).filter((n) => n.startsWith("tmp-")), []);
}

Deno.test({
  name: "prefetch: later layers download while the first applies; application stays in order",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(`${tmp}`, "cache");
    const layers = [1, 2, 3, 4].map((s) => trickle(memoryLayer(noiseTar(s), "gzip"), 15));
    const events: LayerEvent[] = [];
    const r = await CachingLayerResolver.create(cache);
    const started = performance.now();
    const paths = await r.resolveAll(layers, {
      prefetch: "always",
      onLayer: (e) => events.push(e),
    });
    const ms = performance.now() - started;
    assertEquals(paths, layers.map((l, i) => r.layerPath(l.diffID, layers.slice(0, i))));
    // Layers 2..4 started downloading before layer 1 was applied...
    for (const i of [1, 2, 3]) {
      assert(firstAt(events, "fetch-start", i) < firstAt(events, "done", 0));
    }
    assert(events.some((e) => e.type === "fetch-start" && e.index === 1 && e.spooled));
    assert(events.some((e) => e.type === "fetch-start" && e.index === 0 && !e.spooled));
    // ... yet each layer's application started after the previous one was
    // written, and each was published after the previous one.
    const applies = events.filter((e) => e.type === "apply-start").map((e) => e.index);
    assertEquals(applies, [0, 1, 2, 3]);
    for (const i of [1, 2, 3]) {
      assert(firstAt(events, "apply-start", i) >= firstAt(events, "applied", i - 1));
      assert(firstAt(events, "done", i) >= firstAt(events, "done", i - 1));
    }
    assertEquals(events.filter((e) => e.type === "done").map((e) => e.index), [0, 1, 2, 3]);
    assertEquals(events.filter((e) => e.type === "done").map((e) => e.extracted), [
      true,
      true,
      true,
      true,
    ]);
    // Every blob read once; sequential downloads alone would take 4x one.
    assertEquals(layers.map((l) => l.opens), [1, 1, 1, 1]);
    const oneDownload = firstAt(events, "fetch-end", 0) - firstAt(events, "fetch-start", 0);
    assert(ms < oneDownload * 3.5, `took ${ms} ms; one download takes ${oneDownload} ms`);
    for (const [i, l] of layers.entries()) {
      assertEquals(await Deno.readTextFile(join(paths[i], "etc/top")), `layer ${i + 1}\n`);
      assertEquals((await Deno.stat(join(paths[i], `l${i + 1}/f3`))).size, 16 * 1024);
      assertEquals((await r.record(l.diffID, layers.slice(0, i))).digest, l.digest);
    }
    await assertNoSpools(cache);
  },
});

Deno.test({
  name:
    "prefetch: by default later layers download ahead only once extraction waits on the network",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    // Fast sources: extraction is the bottleneck, nothing is spooled ahead.
    const fastEvents: LayerEvent[] = [];
    const fast = [1, 2, 3].map((s) => memoryLayer(noiseTar(s, 8, 64 * 1024), "gzip"));
    const rf = await CachingLayerResolver.create(join(`${tmp}`, "fast"));
    await rf.resolveAll(fast, { onLayer: (e) => fastEvents.push(e) });
    assertEquals(fastEvents.filter((e) => e.type === "fetch-start" && e.spooled), []);
    assertEquals(fastEvents.filter((e) => e.type === "done").length, 3);
    // A slow first layer (~0.6 s of trickle, the process nearly idle): the
    // next ones start downloading into spools before it is applied.
    const slowEvents: LayerEvent[] = [];
    const slow = [
      trickle(memoryLayer(noiseTar(4, 4, 32 * 1024), "gzip"), 20, 4096),
      ...[5, 6].map((s) => memoryLayer(noiseTar(s, 2, 4096), "gzip")),
    ];
    const rs = await CachingLayerResolver.create(join(`${tmp}`, "slow"));
    await rs.resolveAll(slow, { onLayer: (e) => slowEvents.push(e) });
    for (const i of [1, 2]) {
      const start = slowEvents.find((e) => e.type === "fetch-start" && e.index === i);
      assert(start?.spooled, `layer ${i + 1} downloaded ahead`);
      assert(start.at < firstAt(slowEvents, "done", 0));
    }
    await assertNoSpools(join(`${tmp}`, "slow"));
  },
});

Deno.test({
  name: "prefetch: a layer whose turn comes mid-download is applied from the download (tee)",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(`${tmp}`, "cache");
    const fast = memoryLayer(noiseTar(1, 2, 4096), "gzip");
    const slow = trickle(memoryLayer(noiseTar(2, 8, 32 * 1024), "zstd"), 10, 4096);
    const events: LayerEvent[] = [];
    const r = await CachingLayerResolver.create(cache);
    const [, p2] = await r.resolveAll([fast, slow], { onLayer: (e) => events.push(e) });
    const applyStart = firstAt(events, "apply-start", 1);
    const fetchEnd = firstAt(events, "fetch-end", 1);
    assert(applyStart < fetchEnd, "layer 2 should start applying before its download ended");
    // Bytes were applied while the download still ran.
    const appliedEarly = events.find((e) => e.type === "apply-bytes" && e.index === 1);
    assert(appliedEarly && appliedEarly.at < fetchEnd, "no byte applied before the download ended");
    assertEquals(slow.opens, 1);
    assertEquals(await Deno.readTextFile(join(p2, "etc/top")), "layer 2\n");
    assertEquals(await Deno.readFile(join(p2, "l2/f7")), noise(207, 32 * 1024));
    await assertNoSpools(cache);
  },
});

Deno.test({
  name: "prefetch: cached layers are never fetched; repeated diff_ids extracted once",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(`${tmp}`, "cache");
    const layers = [1, 2, 3, 4].map((s) => memoryLayer(noiseTar(s, 2, 2048), "gzip"));
    const r = await CachingLayerResolver.create(cache);
    await r.resolve(layers[0]);
    await r.resolve(layers[2], [layers[0], layers[1]]); // extracts 2 (parent) and 3
    const opened = layers.map((l) => l.opened);
    assertEquals(opened, [1, 1, 1, 0]);
    const events: LayerEvent[] = [];
    const image = [...layers, layers[1]]; // the last repeats layer 2
    const paths = await r.resolveAll(image, { onLayer: (e) => events.push(e) });
    assertEquals(paths, image.map((l, i) => r.layerPath(l.diffID, image.slice(0, i))));
    assertEquals(layers.map((l) => l.opened), [1, 1, 1, 1]);
    assertEquals(
      events.filter((e) => e.type === "cached").map((e) => e.index),
      [0, 1, 2, 4],
    );
    assertEquals(events.filter((e) => e.type.startsWith("fetch-start")).map((e) => e.index), [3]);
    // All cached: nothing fetched, no event but `cached`.
    const again: LayerEvent[] = [];
    await r.resolveAll(image, { onLayer: (e) => again.push(e) });
    assertEquals(again.map((e) => e.type), ["cached", "cached", "cached", "cached", "cached"]);
    assertEquals(layers.map((l) => l.opened), [1, 1, 1, 1]);
  },
});

Deno.test({
  name: "prefetch: abort stops every download and removes every spool",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(`${tmp}`, "cache");
    const layers = [1, 2, 3, 4, 5].map((s) =>
      trickle(memoryLayer(noiseTar(s, 4, 32 * 1024), "gzip"), 20, 4096)
    );
    const ctl = new AbortController();
    const events: LayerEvent[] = [];
    const r = await CachingLayerResolver.create(cache);
    let spoolsSeen = 0;
    const p = r.resolveAll(layers, {
      signal: ctl.signal,
      concurrency: 3,
      onLayer: (e) => {
        events.push(e);
        if (e.type === "fetch-bytes" && e.index === 3 && e.bytes) {
          // Layer 4 is spooling: its spool directory exists.
          spoolsSeen = Deno.readDirSync(join(cache, "tmp")).toArray().length;
          ctl.abort(new Error("stop now"));
        }
      },
    });
    await assertRejects(() => p, Error, "stop now");
    assert(spoolsSeen >= 3, `expected >= 3 spools + 1 extraction in tmp/, saw ${spoolsSeen}`);
    await assertNoSpools(cache);
    assertEquals(await names(join(cache, "layers")), []);
    // Layer 5 was beyond the window (concurrency 3); the others stopped.
    assertEquals(layers[4].opens, 0);
    const sent = layers.map((l) => l.sent);
    await new Promise((r) => setTimeout(r, 150));
    assertEquals(layers.map((l) => l.sent), sent, "a download went on after the abort");
    for (const i of [1, 2, 3]) assert(layers[i].sent < layers[i].size);
    assert(events.some((e) => e.type === "failed" && e.index === 0));
  },
});

Deno.test({
  name:
    "prefetch: a digest mismatch in a prefetched layer fails at once, naming it; nothing published",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(`${tmp}`, "cache");
    const first = trickle(memoryLayer(noiseTar(1, 8, 32 * 1024), "gzip"), 25, 4096);
    const bad = memoryLayer(noiseTar(2, 1, 1024), "gzip");
    const wrong = digestOf("not this blob");
    const tampered = trickle(bad, 1, 65536, wrong);
    const third = memoryLayer(noiseTar(3, 1, 1024), "gzip");
    const r = await CachingLayerResolver.create(cache);
    const events: LayerEvent[] = [];
    const started = performance.now();
    const e = await assertRejects(
      () => r.resolveAll([first, tampered, third], { onLayer: (e) => events.push(e) }),
      LayerFetchError,
    );
    assertEquals(e.digest, wrong);
    assertStringIncludes(e.message, wrong);
    assertStringIncludes(e.message, bad.digest); // the digest actually received
    // It did not wait for layer 1 (about 65 chunks of 25 ms) to finish.
    assert(performance.now() - started < 1200, "the failure waited for the layer being applied");
    assert(first.sent < first.size);
    assertEquals(await names(join(cache, "layers")), []);
    await assertNoSpools(cache);
    assert(events.some((e) => e.type === "failed" && e.index === 1));
  },
});

/** The pieces of a tar of `mib` files of 1 MiB noise, made one at a time. */
function* tarPieces(seed: number, mib: number): Generator<Uint8Array> {
  const w = new TarWriter({ defaultMtime: 1_700_000_000 });
  w.directory("./", { mode: 0o755 }).directory("big/", { mode: 0o755 });
  yield w.take();
  for (let i = 0; i < mib; i++) {
    w.file(`big/f${i}`, noise(seed * 10000 + i, 1 << 20));
    yield w.take();
  }
  yield new Uint8Array(1024); // end of archive
}

/** A layer over a tar generated on the fly: nothing held in memory. */
function generatedLayer(seed: number, mib: number): Layer {
  const hash = createHash("sha256");
  let size = 0;
  for (const p of tarPieces(seed, mib)) {
    hash.update(p);
    size += p.length;
  }
  const digest = `sha256:${hash.digest("hex")}`;
  const layer: Layer = {
    digest,
    diffID: digest,
    mediaType: MediaType.OciLayer,
    size,
    compressed: () => {
      const it = tarPieces(seed, mib);
      return Promise.resolve(
        new ReadableStream<Uint8Array>({
          pull(c) {
            const n = it.next();
            if (n.done) c.close();
            else c.enqueue(n.value);
          },
        }, { highWaterMark: 0 }),
      );
    },
    uncompressed: (signal) => openLayerTar(layer, signal),
  };
  return layer;
}

Deno.test({
  name: "prefetch: memory stays bounded while big layers spool and apply",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(`${tmp}`, "cache");
    const mib = 160;
    const layers = [generatedLayer(1, mib), generatedLayer(2, mib)];
    const r = await CachingLayerResolver.create(cache);
    // Warm up first: the applicator's worker (and, under `deno test`, the type
    // check of its module) costs memory once per process.
    await r.resolve(generatedLayer(4, 6));
    const base = Deno.memoryUsage().rss;
    let peak = base;
    const timer = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 10);
    let spooledBytes = 0;
    try {
      await r.resolveAll(layers, {
        concurrency: 1,
        onLayer: (e) => {
          if (e.type === "fetch-bytes" && e.index > 0) spooledBytes += e.bytes!;
        },
      });
    } finally {
      clearInterval(timer);
    }
    peak = Math.max(peak, Deno.memoryUsage().rss);
    const grew = (peak - base) / (1 << 20);
    assertEquals(spooledBytes, layers[1].size);
    // Two 160 MiB blobs, one streamed, one spooled: the growth is the heap's
    // working size (~80 MiB here, the same for 32 or 256 MiB layers), never a blob.
    assert(grew < mib * 0.75, `RSS grew by ${grew.toFixed(0)} MiB`);
    for (const [i, l] of layers.entries()) {
      const st = await Deno.stat(
        join(r.layerPath(l.diffID, layers.slice(0, i)), `big/f${mib - 1}`),
      );
      assertEquals(st.size, 1 << 20, `layer ${i}`);
    }
    await assertNoSpools(cache);
  },
});

Deno.test({
  name: "prefetch: two resolvers on one cache pulling the same image extract each layer once",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(`${tmp}`, "cache");
    const layers = [1, 2, 3, 4].map((s) => trickle(memoryLayer(noiseTar(s, 2, 8192), "gzip"), 3));
    const extracts: ResolverEvent[] = [];
    const onEvent = (e: ResolverEvent) => e.type === "extract" && extracts.push(e);
    const a = await CachingLayerResolver.create(cache, { onEvent });
    const b = await CachingLayerResolver.create(cache, { onEvent });
    const [pa, pb] = await Promise.all([a.resolveAll(layers), b.resolveAll(layers)]);
    assertEquals(pa, pb);
    assertEquals(extracts.map((e) => e.diffID).sort(), layers.map((l) => l.diffID).sort());
    await assertNoSpools(cache);
  },
});

/** A process that pulls three layers, the first trickling, and reports spooled downloads. */
const CRASH_SCRIPT = `
import { CachingLayerResolver } from "REPO/overlay/resolver.ts";
import { memoryLayer, slowLayer } from "REPO/tests/_layers.ts";
import { TarWriter } from "REPO/layer/tar_writer.ts";
const layer = (n, size) => {
  const t = new TarWriter({ defaultMtime: 1700000000 });
  const data = new Uint8Array(size);
  crypto.getRandomValues(data.subarray(0, 65536));
  t.file("f" + n, data);
  return memoryLayer(t, "gzip");
};
const r = await CachingLayerResolver.create(Deno.args[0]);
const layers = [slowLayer(layer(0, 1 << 20), 50, 2048), layer(1, 1 << 20), layer(2, 1 << 20)];
await r.resolveAll(layers, {
  onLayer: (e) => {
    if (e.type === "fetch-end" && e.spooled) console.log(JSON.stringify({ spooled: e.index }));
  },
});
console.log(JSON.stringify({ finished: true }));
`;

Deno.test({
  name: "prefetch: a process killed with spools in flight leaves only reclaimable leftovers",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = `${tmp}`;
    const cache = join(dir, "cache");
    const script = join(dir, "crash.ts");
    await Deno.writeTextFile(script, CRASH_SCRIPT.replaceAll("REPO", repoRoot));
    await Deno.writeTextFile(
      `${script}.json`,
      JSON.stringify({ imports: { "@std/path": `${repoRoot}/sys/path.ts` } }),
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-lock", "--no-config", `--import-map=${script}.json`, script, cache],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const spooled = new Set<number>();
    let buf = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      for (const line of buf.split("\n").slice(0, -1)) {
        const o = JSON.parse(line);
        if (o.spooled !== undefined) spooled.add(o.spooled);
      }
      buf = buf.slice(buf.lastIndexOf("\n") + 1);
      if (spooled.size === 2) {
        child.kill("SIGKILL");
        break;
      }
    }
    const status = await child.status;
    assertEquals(spooled.size, 2, await stderr);
    assertEquals(status.signal, "SIGKILL");
    // Two spools (and, unless it had not begun yet, layer 1's extraction) were
    // in flight; nothing was published.
    const left = await names(join(cache, "tmp"));
    assert(left.length >= 2, `left in tmp/: ${left}`);
    assertEquals(await names(join(cache, "layers")), []);
    const reclaimed: ResolverEvent[] = [];
    await CachingLayerResolver.create(cache, { onEvent: (e) => reclaimed.push(e) });
    assertEquals(
      reclaimed.filter((e) => e.type === "reclaimed").map((e) => e.path).sort(),
      left.map((n) => join(cache, "tmp", n)),
    );
    await assertNoSpools(cache);
  },
});

Deno.test({
  name: "LayerSpool: readers follow the writer; the stream errors when the blob does not verify",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(`${tmp}`, "cache");
    await CachingLayerResolver.create(cache); // the cache layout
    const l = memoryLayer(noiseTar(9, 4, 8192), "gzip");
    const spool = LayerSpool.start(cache, trickle(l, 2, 1000));
    const early = spool.stream(); // opened before a byte arrived
    assertEquals(new Uint8Array(await new Response(early).arrayBuffer()), l.blob);
    await spool.done();
    assertEquals(spool.state, "done");
    assertEquals(new Uint8Array(await new Response(spool.stream()).arrayBuffer()), l.blob);
    await spool.remove();
    await spool.remove(); // idempotent
    const bad = LayerSpool.start(cache, trickle(l, 0, 4096, digestOf("other")));
    await assertRejects(() => new Response(bad.stream()).arrayBuffer(), LayerFetchError);
    await assertRejects(() => bad.done(), LayerFetchError, "Digest mismatch");
    await bad.remove();
    await assertNoSpools(cache);
  },
});

Deno.test({
  name:
    "prefetch: a multi-layer pull from docker-registry (a spooled blob cut and resumed) equals the layout's",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = `${tmp}`;
    const layout = join(dir, "layout");
    const tars = [1, 2, 3, 4].map((s) => noiseTar(s, 8, 256 * 1024)); // 2 MiB each
    await writeOciLayout(layout, [{
      tag: "v1",
      images: [{ layers: tars.map((tar, i) => ({ tar, compression: i === 2 ? "zstd" : "gzip" })) }],
    }]);
    await using reg = await Registry.start(undefined, dir);
    await reg.push(`oci:${layout}:v1`, "multi/app:v1");
    // Cuts the first connection that carries more than 1 MiB (a blob download).
    await using proxy = new CuttingProxy(reg.host, 1 << 20);
    const remote = await openImage(`${proxy.host}/multi/app:v1`, {
      tlsVerify: false,
      retryDelay: 10,
    });
    const local = await openImage(`oci:${layout}:v1`);
    const rc = await CachingLayerResolver.create(join(dir, "cache-registry"));
    const lc = await CachingLayerResolver.create(join(dir, "cache-layout"));
    const events: LayerEvent[] = [];
    const rp = await rc.resolveAll(remote.layers, {
      prefetch: "always",
      onLayer: (e) => events.push(e),
    });
    const lp = await lc.resolveAll(local.layers, { concurrency: 1 });
    assertEquals(proxy.cuts, 1);
    for (const i of [1, 2, 3]) {
      assert(firstAt(events, "fetch-start", i) < firstAt(events, "done", 0));
    }
    for (let i = 0; i < tars.length; i++) {
      assertEquals(
        (await rc.record(remote.layers[i].diffID, remote.layers.slice(0, i))).record,
        (await lc.record(local.layers[i].diffID, local.layers.slice(0, i))).record,
      );
      assertEquals(await snapshotTree(rp[i]), await snapshotTree(lp[i]));
    }
    await assertNoSpools(join(dir, "cache-registry"));

    // `strata pull` from the registry: every layer's progress line counts the
    // whole blob fetched and the whole tar applied, whichever way it came.
    const env = { ...Deno.env.toObject() };
    delete env.NODE_EXTRA_CA_CERTS;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(repoRoot, "cli.ts"),
        "pull",
        "--tls-verify=false",
        "--cache",
        join(dir, "cache-cli"),
        `docker://${reg.host}/multi/app:v1`,
      ],
      env,
      clearEnv: true,
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, stderr);
    assertEquals(new TextDecoder().decode(out.stdout).trim(), remote.digest);
    for (const [i, l] of remote.layers.entries()) {
      assertStringIncludes(
        stderr,
        `layer ${i + 1}/4 ${l.digest.slice(0, 19)}: done: ${formatBytes(l.size)} fetched, ${
          formatBytes(tars[i].length)
        } applied`,
      );
    }
    await assertNoSpools(join(dir, "cache-cli"));
  },
});
