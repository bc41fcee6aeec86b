import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import {
  BlobFormatError,
  decompress,
  DigestMismatchError,
  digestOf,
  InvalidDigestError,
  openLayerTar,
  UnsupportedMediaTypeError,
  verifyDigest,
} from "../image/blob.ts";
import { type Layer, MediaType } from "../image/types.ts";

const enc = new TextEncoder();

/** A stream of `bytes` cut into chunks of `size` bytes. */
function chunked(bytes: Uint8Array, size: number): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close();
      c.enqueue(bytes.slice(off, off + size));
      off += size;
    },
  });
}

async function collect(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

async function zstd(bytes: Uint8Array): Promise<Uint8Array> {
  const p = new Deno.Command("zstd", { args: ["-q", "-c", "-3"], stdin: "piped", stdout: "piped" })
    .spawn();
  const w = p.stdin.getWriter();
  await w.write(bytes);
  await w.close();
  const out = await p.output();
  assert(out.success);
  return out.stdout;
}

function memLayer(blob: Uint8Array, mediaType: string, diffID: string, digest?: string): Layer {
  const layer: Layer = {
    digest: digest ?? digestOf(blob),
    diffID,
    mediaType,
    size: blob.length,
    compressed: () => Promise.resolve(chunked(blob, 65536)),
    uncompressed: (signal) => openLayerTar(layer, signal),
  };
  return layer;
}

Deno.test("verifyDigest passes matching bytes through unchanged", async () => {
  const data = enc.encode("hello world");
  const out = await collect(
    chunked(data, 3).pipeThrough(verifyDigest(digestOf(data), "greeting")),
  );
  assertEquals(out, data);
  const sha512 = `sha512:${createHash("sha512").update(data).digest("hex")}`;
  assertEquals(await collect(chunked(data, 5).pipeThrough(verifyDigest(sha512, "g"))), data);
});

Deno.test("verifyDigest errors with both digests and the name on a mismatch", async () => {
  const data = enc.encode("hello world");
  const wrong = digestOf(enc.encode("hello there"));
  const e = await assertRejects(
    () => collect(chunked(data, 4).pipeThrough(verifyDigest(wrong, "blob X of test"))),
    DigestMismatchError,
  );
  assertEquals(e.expected, wrong);
  assertEquals(e.actual, digestOf(data));
  assert(e.message.includes("blob X of test") && e.message.includes(wrong));
});

Deno.test("verifyDigest refuses unknown algorithms and malformed digests", () => {
  assertThrows(() => verifyDigest("md5:d41d8cd98f00b204e9800998ecf8427e", "x"), InvalidDigestError);
  assertThrows(() => verifyDigest("sha256:abc", "x"), InvalidDigestError, "64");
  assertThrows(() => verifyDigest("nodigest", "x"), InvalidDigestError);
});

Deno.test("decompress handles gzip, zstd and plain tar in OCI and Docker names", async () => {
  const data = new Uint8Array(300_000).map((_, i) => (i * 7) % 251);
  const gz = gzipSync(data);
  const zs = await zstd(data);
  for (
    const [mt, blob] of [
      [MediaType.OciLayerGzip, gz],
      [MediaType.DockerLayerGzip, gz],
      [MediaType.DockerForeignLayerGzip, gz],
      [MediaType.OciLayerNondistributableGzip, gz],
      [MediaType.OciLayerZstd, zs],
      [MediaType.DockerLayerZstd, zs],
      [MediaType.OciLayer, data],
      [MediaType.DockerLayer, data],
    ] as const
  ) {
    for (const size of [1, 3, 65536]) {
      if (size === 1 && blob.length > 5000) {
        // one byte at a time only over a prefix-sized blob, to keep the test quick
        const small = mt === MediaType.OciLayer || mt === MediaType.DockerLayer
          ? data.slice(0, 2000)
          : mt.includes("zstd")
          ? await zstd(data.slice(0, 2000))
          : gzipSync(data.slice(0, 2000));
        assertEquals(
          await collect(chunked(small, 1).pipeThrough(decompress(mt, "t"))),
          data.slice(0, 2000),
          mt,
        );
        continue;
      }
      assertEquals(await collect(chunked(blob, size).pipeThrough(decompress(mt, "t"))), data, mt);
    }
  }
});

Deno.test("decompress checks magic bytes against the media type", async () => {
  const data = enc.encode("this is not compressed at all");
  const gz = gzipSync(data);
  let e = await assertRejects(
    () => collect(chunked(data, 100).pipeThrough(decompress(MediaType.OciLayerGzip, "layer L"))),
    BlobFormatError,
  );
  assert(e.message.includes("layer L") && e.message.includes(MediaType.OciLayerGzip), e.message);
  e = await assertRejects(
    () => collect(chunked(gz, 100).pipeThrough(decompress(MediaType.OciLayer, "layer L"))),
    BlobFormatError,
    "gzip",
  );
  assert(e.message.includes(MediaType.OciLayer));
  await assertRejects(
    () => collect(chunked(gz, 100).pipeThrough(decompress(MediaType.OciLayerZstd, "layer L"))),
    BlobFormatError,
    "is gzip-compressed",
  );
  // Truncated gzip: the decompressor's error is reported with the layer's name.
  await assertRejects(
    () =>
      collect(
        chunked(gz.slice(0, gz.length - 10), 7).pipeThrough(
          decompress(MediaType.OciLayerGzip, "layer T"),
        ),
      ),
    BlobFormatError,
    "layer T",
  );
  // An empty gzip layer is not a gzip stream.
  await assertRejects(
    () =>
      collect(chunked(new Uint8Array(), 1).pipeThrough(decompress(MediaType.OciLayerGzip, "e"))),
    BlobFormatError,
  );
  assertThrows(
    () => decompress("application/vnd.oci.image.layer.v1.tar+lz4", "L"),
    UnsupportedMediaTypeError,
  );
});

Deno.test("openLayerTar verifies the blob digest and the diff_id", async () => {
  const tar = new Uint8Array(1_000_000).map((_, i) => (i * 13) % 256);
  const gz = gzipSync(tar);
  const diffID = digestOf(tar);
  assertEquals(
    await collect(await memLayer(gz, MediaType.OciLayerGzip, diffID).uncompressed()),
    tar,
  );
  assertEquals(await collect(await memLayer(tar, MediaType.OciLayer, diffID).uncompressed()), tar);

  // Wrong diff_id: the stream errors instead of closing.
  const wrongDiff = digestOf(enc.encode("other"));
  const e = await assertRejects(
    async () => collect(await memLayer(gz, MediaType.OciLayerGzip, wrongDiff).uncompressed()),
    DigestMismatchError,
  );
  assertEquals(e.actual, diffID);
  assert(e.message.includes("diff_id"));

  // Tampered blob (same length, one byte flipped in the stored content).
  const bad = tar.slice();
  bad[500_000] ^= 1;
  const layer = memLayer(bad, MediaType.OciLayer, diffID, diffID);
  const e2 = await assertRejects(
    async () => collect(await layer.uncompressed()),
    DigestMismatchError,
  );
  assertEquals(e2.expected, diffID);
});

Deno.test("openLayerTar streams a large gzip layer quickly", async () => {
  // 64 MiB of moderately compressible bytes.
  const tar = new Uint8Array(64 << 20);
  for (let i = 0; i < tar.length; i += 4096) tar[i] = i & 0xff;
  const gz = gzipSync(tar, { level: 1 });
  const layer = memLayer(gz, MediaType.OciLayerGzip, digestOf(tar));
  const t0 = performance.now();
  let n = 0;
  let chunks = 0;
  for await (const c of await layer.uncompressed()) {
    n += c.length;
    chunks++;
  }
  const ms = performance.now() - t0;
  assertEquals(n, tar.length);
  assert(n / chunks >= 64 * 1024, `average chunk ${n / chunks} bytes`);
  console.log(`  64 MiB gzip layer: ${ms.toFixed(0)} ms, ${chunks} chunks`);
});

Deno.test("decompress holds back output while the reader is not reading (gzip bomb)", async () => {
  // 512 MiB of zeros compress to about 0.5 MiB.
  const bomb = gzipSync(new Uint8Array(512 << 20), { level: 1 });
  const before = Deno.memoryUsage().rss;
  const reader = chunked(bomb, 65536)
    .pipeThrough(decompress(MediaType.OciLayerGzip, "bomb"))
    .getReader();
  const first = await reader.read();
  assert(!first.done && first.value.length > 0);
  await new Promise((r) => setTimeout(r, 300)); // time to inflate everything, if it were allowed
  const grown = Deno.memoryUsage().rss - before;
  await reader.cancel();
  assert(grown < 128 << 20, `RSS grew by ${(grown / 1048576).toFixed(0)} MiB while nobody read`);
});
