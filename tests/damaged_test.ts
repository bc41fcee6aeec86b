/**
 * Damaged and hostile images through the command line (`deno run -A cli.ts
 * pull|run|export` as subprocesses, a real cache each): OCI layouts with
 * broken documents, digests, sizes and blobs; layers that do not decompress,
 * do not hash to their diff_id or are not tars; docker and OCI archives whose
 * paths point outside; registries that lie, fail or loop.
 *
 * The standard every case is held to: exit status non-zero, stdout empty,
 * stderr exactly one `strata: ` line naming what broke (a digest or a path)
 * and why, no stack trace; afterwards the cache holds only complete layers
 * (each with its `layer.json`), `tmp/` is empty, `strata verify` finds it
 * intact, and a good image pulls into the same cache.
 *
 * @module
 */
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { join } from "@std/path";
import { digestOf } from "../image/blob.ts";
import { type Descriptor, MediaType } from "../image/types.ts";
import { gzip, TarWriter, zstd } from "../layer/tar_writer.ts";
import { denoPath, repoRoot, runCli, type RunResult, sh, tempDir } from "./_helpers.ts";
import { RegistryClient, RegistryError } from "../image/registry.ts";
import { Registry } from "./_registry.ts";
import {
  type LocalServer,
  readRequestHead,
  serveLocal,
  writeAll,
  writeResponseHead,
} from "./_fake_registry.ts";

const CLI = join(repoRoot, "cli.ts");
const enc = new TextEncoder();

/** The CLI, killed after 60 s (see _helpers.ts runCli). */
const strata = (args: string[]): Promise<RunResult> => runCli(args);

/** A small good tar: the root, a directory and a file whose content says which layer it is. */
function goodTar(n: number): Uint8Array {
  return new TarWriter({ defaultMtime: 1_700_000_000 })
    .directory("./")
    .directory(`d${n}/`)
    .file(`d${n}/f`, `layer ${n}\n`.repeat(n * 10))
    .bytes();
}

/** One layer as the manifest will describe it. */
interface RawLayer {
  /** The blob as stored. */
  blob: Uint8Array;
  /** The uncompressed tar's digest written to the config (default: the real one for `tar`). */
  diffID: string;
  mediaType: string;
  /** Descriptor overrides (a lying digest or size). */
  digest?: string;
  size?: number;
}

function layerOf(tar: Uint8Array, c: "gzip" | "zstd" | "none" = "gzip"): RawLayer {
  return {
    blob: c === "gzip" ? gzip(tar) : c === "zstd" ? zstd(tar) : tar,
    diffID: digestOf(tar),
    mediaType: c === "gzip"
      ? MediaType.OciLayerGzip
      : c === "zstd"
      ? MediaType.OciLayerZstd
      : MediaType.OciLayer,
  };
}

async function writeBlob(dir: string, bytes: Uint8Array): Promise<string> {
  const digest = digestOf(bytes);
  await Deno.mkdir(join(dir, "blobs/sha256"), { recursive: true });
  await Deno.writeFile(join(dir, "blobs/sha256", digest.slice(7)), bytes);
  return digest;
}

/** What {@linkcode makeLayout} wrote. */
interface Written {
  dir: string;
  ref: string;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  diffIDs: string[];
}

/**
 * Writes an OCI layout (tag `v1`) from raw layers; the patch hooks edit the
 * config, manifest and index documents before they are stored (their
 * digests are computed after the patch, so they are self-consistent unless
 * the patch makes them lie).
 */
async function makeLayout(
  dir: string,
  layers: RawLayer[],
  patch: {
    config?: (c: Record<string, unknown>) => void;
    manifest?: (m: Record<string, unknown>) => void;
    index?: (i: Record<string, unknown>) => void;
  } = {},
): Promise<Written> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "oci-layout"), `{"imageLayoutVersion":"1.0.0"}`);
  const descs: Descriptor[] = [];
  for (const l of layers) {
    const digest = await writeBlob(dir, l.blob);
    descs.push({
      mediaType: l.mediaType,
      digest: l.digest ?? digest,
      size: l.size ?? l.blob.length,
    });
  }
  const diffIDs = layers.map((l) => l.diffID);
  const config: Record<string, unknown> = {
    architecture: "amd64",
    os: "linux",
    config: { Cmd: ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: diffIDs },
  };
  patch.config?.(config);
  const configBytes = enc.encode(JSON.stringify(config));
  const configDesc = {
    mediaType: MediaType.OciConfig,
    digest: await writeBlob(dir, configBytes),
    size: configBytes.length,
  };
  const manifest: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: configDesc,
    layers: descs,
  };
  patch.manifest?.(manifest);
  const manifestBytes = enc.encode(JSON.stringify(manifest));
  const manifestDesc: Descriptor = {
    mediaType: MediaType.OciManifest,
    digest: await writeBlob(dir, manifestBytes),
    size: manifestBytes.length,
  };
  const index: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [{ ...manifestDesc, annotations: { "org.opencontainers.image.ref.name": "v1" } }],
  };
  patch.index?.(index);
  await Deno.writeTextFile(join(dir, "index.json"), JSON.stringify(index));
  return {
    dir,
    ref: `oci:${dir}:v1`,
    manifest: manifestDesc,
    config: configDesc,
    layers: descs,
    diffIDs,
  };
}

const blobPath = (w: Written, digest: string) => join(w.dir, "blobs/sha256", digest.slice(7));

const goodLayers = () => [1, 2, 3].map((n) => layerOf(goodTar(n)));

/** Asserts the failure standard: non-zero, stdout empty, one `strata: ` line, no stack. */
function assertOneErrorLine(r: RunResult, includes: string[]): string {
  assert(r.code !== 0, `exit status non-zero, got 0; stderr: ${r.stderr}`);
  assertEquals(r.stdout, "", "nothing on stdout");
  const lines = r.stderr.split("\n").filter((l) => l.trim() && !/^layer \d+\/\d+ /.test(l));
  assertEquals(lines.length, 1, `one error line on stderr, got:\n${r.stderr}`);
  assertMatch(lines[0], /^strata: /);
  assert(!/^\s+at /m.test(r.stderr), `no stack trace:\n${r.stderr}`);
  // deno-lint-ignore no-control-regex
  assert(!/[\x00-\x08\x0b-\x1f\x7f]/.test(r.stderr), `no control characters:\n${r.stderr}`);
  for (const s of includes) assertStringIncludes(lines[0], s);
  return lines[0];
}

/** Lists a directory; a missing one is empty. */
async function list(dir: string): Promise<Deno.DirEntry[]> {
  const out: Deno.DirEntry[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

/**
 * Asserts the cache holds only complete layers (among the `expect` diff_ids,
 * when given), no leftovers in `tmp/`, and `strata verify` passes.
 */
async function assertCacheClean(cache: string, expect?: string[]): Promise<void> {
  const layers: string[] = [];
  for (const e of await list(join(cache, "layers"))) {
    const dir = join(cache, "layers", e.name);
    assert(e.isDirectory, `${dir} is a directory`);
    await Deno.stat(join(dir, "layer.json"));
    await Deno.stat(join(dir, "fs"));
    layers.push(e.name.replace("-", ":"));
  }
  // Layers are fetched concurrently: a failure may stop the good ones before they land.
  if (expect) {
    for (const l of layers) assert(expect.includes(l), `layer ${l} should not be cached`);
  }
  const tmp: string[] = [];
  for (const e of await list(join(cache, "tmp"))) tmp.push(e.name);
  assertEquals(tmp, [], "nothing left in tmp/");
  const v = await strata(["verify", "--cache", cache]);
  assertEquals(v.code, 0, `strata verify: ${v.stdout}${v.stderr}`);
}

/** The image store's names and digests, from `strata ls --json`. */
async function storedImages(cache: string): Promise<Record<string, string>> {
  const r = await strata(["ls", "--json", "--cache", cache]);
  assertEquals(r.code, 0, r.stderr);
  const out: Record<string, string> = {};
  for (const i of JSON.parse(r.stdout).images) out[i.name] = i.digest;
  return out;
}

/** Pulls a good image into `cache` and checks it lands. */
async function assertGoodPull(parent: string, cache: string): Promise<void> {
  const good = await makeLayout(join(parent, "good"), goodLayers());
  const r = await strata(["pull", "-q", good.ref, "--cache", cache]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stdout, good.manifest.digest + "\n");
  await assertCacheClean(cache);
}

/** A damaged-input case: build it in `dir`, return the reference and what the line must say. */
interface Case {
  name: string;
  /** `cached`: the diff_ids that may be in the cache afterwards (default none). */
  make: (dir: string) => Promise<{ ref: string; includes: string[]; cached?: string[] }>;
  /** The command (default pull). */
  command?: "pull" | "export" | "run";
}

async function runCase(c: Case, flags: string[] = []): Promise<void> {
  await using tmp = await tempDir("strata-damaged-");
  const dir = String(tmp);
  const cache = join(dir, "cache");
  const { ref, includes, cached } = await c.make(join(dir, "image"));
  const args = c.command === "export"
    ? ["export", ref, join(dir, "out"), "--cache", cache, ...flags]
    : c.command === "run"
    ? ["run", "--cache", cache, ...flags, ref, "true"]
    : ["pull", ref, "--cache", cache, ...flags];
  const r = await strata(args);
  assertEquals(r.code, c.command === "run" ? 125 : 1, `exit status; stderr: ${r.stderr}`);
  const line = assertOneErrorLine(r, includes);
  if (Deno.env.get("SHOW")) console.log(`\n  ${line}`);
  if (c.command === "export") {
    await Deno.lstat(join(dir, "out")).then(
      () => assert(false, "export left its target behind"),
      () => {},
    );
  }
  await assertCacheClean(cache, cached ?? []);
  assertEquals(await list(join(cache, "containers")), [], "no container or claim left");
  assertEquals(await storedImages(cache), {}, "a failed pull names no image");
  await assertGoodPull(dir, cache);
}

function cases(group: string, list: Case[]) {
  for (const c of list) {
    Deno.test(`damaged ${group}: ${c.name}`, () => runCase(c));
  }
}

// ---------------------------------------------------------------------------
// OCI layouts: documents

cases("oci layout", [
  {
    name: "index.json is not JSON",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      await Deno.writeTextFile(join(dir, "index.json"), "{ not json");
      return { ref: w.ref, includes: ["index.json", "not valid JSON"] };
    },
  },
  {
    name: "index.json missing",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      await Deno.remove(join(dir, "index.json"));
      return { ref: w.ref, includes: ["index.json", "no file"] };
    },
  },
  {
    name: "oci-layout missing (not a layout)",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      await Deno.remove(join(dir, "oci-layout"));
      return { ref: w.ref, includes: ["not an OCI layout"] };
    },
  },
  {
    name: "index.json larger than 4 MiB is refused before it is read whole",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const index = JSON.parse(await Deno.readTextFile(join(dir, "index.json")));
      index.annotations = { pad: "x".repeat(5 << 20) };
      await Deno.writeTextFile(join(dir, "index.json"), JSON.stringify(index));
      return { ref: w.ref, includes: ["index.json", "larger than"] };
    },
  },
  {
    name: "manifest is not JSON",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers(), {
        index: (i) => {
          (i.manifests as Descriptor[])[0].digest = digestOf("{ not json");
          (i.manifests as Descriptor[])[0].size = 10;
        },
      });
      await writeBlob(dir, enc.encode("{ not json"));
      return { ref: w.ref, includes: [digestOf("{ not json"), "not valid JSON"] };
    },
  },
  {
    name: "manifest of the wrong media type (a config)",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers(), {
        manifest: (m) => {
          m.mediaType = MediaType.OciConfig;
          delete m.layers;
        },
      });
      return {
        ref: w.ref,
        includes: [w.manifest.digest, "neither an image manifest nor an index"],
      };
    },
  },
  {
    name: "indexes nested without end",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      let desc: Descriptor = { ...w.manifest, platform: { os: "linux", architecture: "amd64" } };
      for (let i = 0; i < 8; i++) {
        const bytes = enc.encode(JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.OciIndex,
          manifests: [desc],
        }));
        desc = {
          mediaType: MediaType.OciIndex,
          digest: await writeBlob(dir, bytes),
          size: bytes.length,
          platform: { os: "linux", architecture: "amd64" },
        };
      }
      const { platform: _, ...root } = desc;
      await Deno.writeTextFile(
        join(dir, "index.json"),
        JSON.stringify({
          schemaVersion: 2,
          manifests: [{ ...root, annotations: { "org.opencontainers.image.ref.name": "v1" } }],
        }),
      );
      return { ref: w.ref, includes: ["nested too deeply"] };
    },
  },
  {
    name: "an index without the host's platform",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const bytes = enc.encode(JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [{ ...w.manifest, platform: { os: "windows", architecture: "s390x" } }],
      }));
      const digest = await writeBlob(dir, bytes);
      await Deno.writeTextFile(
        join(dir, "index.json"),
        JSON.stringify({
          schemaVersion: 2,
          manifests: [{
            mediaType: MediaType.OciIndex,
            digest,
            size: bytes.length,
            annotations: { "org.opencontainers.image.ref.name": "v1" },
          }],
        }),
      );
      return { ref: w.ref, includes: ["windows/s390x"] };
    },
  },
  {
    name: "manifest digest mismatch",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const p = blobPath(w, w.manifest.digest);
      const bytes = await Deno.readFile(p);
      bytes[bytes.length - 2] ^= 1; // same size, different bytes
      await Deno.writeFile(p, bytes);
      return { ref: w.ref, includes: [w.manifest.digest, "Digest mismatch"] };
    },
  },
  {
    name: "config is not JSON",
    make: async (dir) => {
      const bad = enc.encode("[1,2");
      const w = await makeLayout(dir, goodLayers(), {
        manifest: (m) =>
          m.config = { mediaType: MediaType.OciConfig, digest: digestOf(bad), size: 4 },
      });
      await writeBlob(dir, bad);
      return { ref: w.ref, includes: [digestOf(bad), "not valid JSON"] };
    },
  },
  {
    name: "config digest mismatch",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const p = blobPath(w, w.config.digest);
      const bytes = await Deno.readFile(p);
      bytes[5] ^= 1;
      await Deno.writeFile(p, bytes);
      return { ref: w.ref, includes: [w.config.digest, "Digest mismatch"] };
    },
  },
  {
    name: "config blob missing",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      await Deno.remove(blobPath(w, w.config.digest));
      return { ref: w.ref, includes: [w.config.digest, "not found"] };
    },
  },
  {
    name: "manifest blob missing",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      await Deno.remove(blobPath(w, w.manifest.digest));
      return { ref: w.ref, includes: [w.manifest.digest, "not found"] };
    },
  },
  {
    name: "a layer blob missing (layer 2 of 3: layer 1 stays cached)",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      await Deno.remove(blobPath(w, w.layers[1].digest));
      return { ref: w.ref, includes: [w.layers[1].digest, "not found"], cached: [w.diffIDs[0]] };
    },
  },
  {
    name: "diff_ids count does not match the layers",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers(), {
        config: (c) => (c.rootfs as { diff_ids: string[] }).diff_ids.pop(),
      });
      return { ref: w.ref, includes: [w.manifest.digest, "3 layers but the config lists 2"] };
    },
  },
  {
    name: "path traversal through the index's digest",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers(), {
        index: (i) => (i.manifests as Descriptor[])[0].digest = "sha256:../../../../etc/hostname",
      });
      return { ref: w.ref, includes: ["sha256:../../../../etc/hostname", "hex"] };
    },
  },
  {
    name: "path traversal through a layer digest",
    make: async (dir) => {
      const layers = goodLayers();
      layers[0].digest = "sha256:../../../../../../etc/hostname";
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: ["sha256:../../../../../../etc/hostname", "hex"] };
    },
  },
  {
    name: "path traversal through the config digest (algorithm part)",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers(), {
        manifest: (m) => (m.config as Descriptor).digest = "../../../etc:hostname",
      });
      return { ref: w.ref, includes: ["../../../etc:hostname", "unsupported algorithm"] };
    },
  },
  {
    name: "unknown digest algorithm",
    make: async (dir) => {
      const layers = goodLayers();
      layers[2].digest = "md5:d41d8cd98f00b204e9800998ecf8427e";
      const w = await makeLayout(dir, layers);
      return {
        ref: w.ref,
        includes: ["md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported algorithm"],
      };
    },
  },
  {
    name: "uppercase hex in a diff_id",
    make: async (dir) => {
      const layers = goodLayers();
      layers[0].diffID = layers[0].diffID.toUpperCase().replace("SHA256", "sha256");
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: ["diff_ids[0]", "hex"] };
    },
  },
  {
    name: "layer descriptor size smaller than the blob",
    make: async (dir) => {
      const layers = goodLayers();
      layers[0].size = layers[0].blob.length - 10;
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[0].digest, "size"] };
    },
  },
  {
    name: "layer descriptor size larger than the blob",
    make: async (dir) => {
      const layers = goodLayers();
      layers[0].size = layers[0].blob.length + 10;
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[0].digest, "size"] };
    },
  },
  {
    name: "huge layer size",
    make: async (dir) => {
      const layers = goodLayers();
      layers[1].size = Number.MAX_SAFE_INTEGER;
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[1].digest, "size"], cached: [w.diffIDs[0]] };
    },
  },
  {
    name: "huge config size",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers(), {
        manifest: (m) => (m.config as Descriptor).size = 1e15,
      });
      return { ref: w.ref, includes: ["config", "larger than"] };
    },
  },
  {
    name: "manifest larger than 4 MiB",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers(), {
        manifest: (m) => m.annotations = { pad: "x".repeat(5 << 20) },
      });
      return { ref: w.ref, includes: [w.manifest.digest, "too large"] };
    },
  },
  {
    name: "a layer blob is a symlink to a host file",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const p = blobPath(w, w.layers[0].digest);
      await Deno.remove(p);
      await Deno.symlink("/etc/hostname", p);
      return { ref: w.ref, includes: [w.layers[0].digest, "outside"] };
    },
  },
  {
    name: "the config blob is a symlink to /dev/zero",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const p = blobPath(w, w.config.digest);
      await Deno.remove(p);
      await Deno.symlink("/dev/zero", p);
      return { ref: w.ref, includes: [w.config.digest, "outside"] };
    },
  },
  {
    name: "a layer blob is a FIFO",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const p = blobPath(w, w.layers[0].digest);
      await Deno.remove(p);
      await sh("mkfifo", [p]);
      return { ref: w.ref, includes: [w.layers[0].digest, "not a regular file"] };
    },
  },
  {
    name: "blobs/sha256 is a symlink out of the layout",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const outside = join(dir, "..", "elsewhere");
      await Deno.rename(join(dir, "blobs/sha256"), outside);
      await Deno.symlink(outside, join(dir, "blobs/sha256"));
      return { ref: w.ref, includes: [w.manifest.digest, "outside"] };
    },
  },
]);

// ---------------------------------------------------------------------------
// Layers

Deno.test("damaged: a failed pull leaves the name pointing at the image pulled before", async () => {
  await using tmp = await tempDir("strata-damaged-");
  const dir = String(tmp);
  const cache = join(dir, "cache");
  const good = await makeLayout(join(dir, "image"), goodLayers());
  const r1 = await strata(["pull", "-q", good.ref, "--cache", cache]);
  assertEquals(r1.code, 0, r1.stderr);
  assertEquals(await storedImages(cache), { [good.ref]: good.manifest.digest });
  // The same tag now names an image whose new layer does not match its diff_id.
  const layers = goodLayers();
  layers.push(layerOf(goodTar(4)));
  layers[3].diffID = digestOf("not layer 4");
  const bad = await makeLayout(join(dir, "image"), layers);
  const r2 = await strata(["pull", good.ref, "--cache", cache]);
  assertOneErrorLine(r2, [bad.layers[3].digest, "diff_id"]);
  assertEquals(await storedImages(cache), { [good.ref]: good.manifest.digest });
  await assertCacheClean(cache, good.diffIDs);
  // And the run of the stored name still has every layer it needs.
  const ls = JSON.parse((await strata(["ls", "--json", "--cache", cache])).stdout);
  assert(ls.images[0].complete, "the stored image is complete");
});

Deno.test("damaged: the good ones still pull (zstd, several frames, a checksum, uncompressed)", async () => {
  await using tmp = await tempDir("strata-damaged-");
  const dir = String(tmp);
  const cache = join(dir, "cache");
  const big = new TarWriter({ defaultMtime: 1 }).directory("./").file(
    "big",
    new Uint8Array(600_000).map((_, i) => (i * 7919) % 251),
  ).bytes();
  // The zstd CLI writes a frame checksum; two frames back to back are one valid stream.
  await Deno.writeFile(join(dir, "big.tar"), big);
  await sh("zstd", ["-q", "--check", join(dir, "big.tar"), "-o", join(dir, "big.zst")]);
  const one = await Deno.readFile(join(dir, "big.zst"));
  const half = big.length / 2;
  const frames = [zstd(big.subarray(0, half)), zstd(big.subarray(half))];
  const two = new Uint8Array(frames[0].length + frames[1].length);
  two.set(frames[0]);
  two.set(frames[1], frames[0].length);
  const w = await makeLayout(join(dir, "image"), [
    { blob: one, diffID: digestOf(big), mediaType: MediaType.OciLayerZstd },
    { ...layerOf(goodTar(2), "zstd") },
    { blob: two, diffID: digestOf(big), mediaType: MediaType.OciLayerZstd },
    layerOf(goodTar(3), "none"),
  ]);
  const r = await strata(["pull", "-q", w.ref, "--cache", cache]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stdout, w.manifest.digest + "\n");
  await assertCacheClean(cache, w.diffIDs);
});

/** A tar whose first header's checksum is wrong. */
function badChecksumTar(): Uint8Array {
  const t = goodTar(2);
  t[148] = "7".charCodeAt(0); // checksum field, first digit
  t[149] = "7".charCodeAt(0);
  return t;
}

cases("layer", [
  {
    name: "truncated gzip",
    make: async (dir) => {
      const layers = goodLayers();
      const l = layerOf(goodTar(2));
      layers[1] = { ...l, blob: l.blob.subarray(0, l.blob.length - 12) };
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[1].digest, "gzip"], cached: [w.diffIDs[0]] };
    },
  },
  {
    name: "garbage after the gzip stream",
    make: async (dir) => {
      const layers = goodLayers();
      const l = layerOf(goodTar(2));
      const blob = new Uint8Array(l.blob.length + 100);
      blob.set(l.blob);
      blob.fill(0x41, l.blob.length);
      layers[1] = { ...l, blob };
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[1].digest, "gzip"], cached: [w.diffIDs[0]] };
    },
  },
  {
    name: "a plain tar under a gzip media type",
    make: async (dir) => {
      const layers = goodLayers();
      layers[1] = { ...layerOf(goodTar(2), "none"), mediaType: MediaType.OciLayerGzip };
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[1].digest, "gzip magic"], cached: [w.diffIDs[0]] };
    },
  },
  {
    name: "zstd bytes under a gzip media type",
    make: async (dir) => {
      const layers = goodLayers();
      layers[1] = { ...layerOf(goodTar(2), "zstd"), mediaType: MediaType.OciLayerGzip };
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[1].digest, "zstd"], cached: [w.diffIDs[0]] };
    },
  },
  {
    name: "truncated zstd",
    make: async (dir) => {
      const layers = goodLayers();
      const l = layerOf(goodTar(2), "zstd");
      layers[1] = { ...l, blob: l.blob.subarray(0, l.blob.length - 5) };
      const w = await makeLayout(dir, layers);
      return {
        ref: w.ref,
        includes: [w.layers[1].digest, "zstd stream truncated"],
        cached: [w.diffIDs[0]],
      };
    },
  },
  {
    name: "garbage after the zstd stream",
    make: async (dir) => {
      const layers = goodLayers();
      const l = layerOf(goodTar(2), "zstd");
      const blob = new Uint8Array(l.blob.length + 100);
      blob.set(l.blob);
      blob.fill(0x41, l.blob.length);
      layers[1] = { ...l, blob };
      const w = await makeLayout(dir, layers);
      return {
        ref: w.ref,
        includes: [w.layers[1].digest, "not a zstd frame after the end"],
        cached: [w.diffIDs[0]],
      };
    },
  },
  {
    name: "unknown layer media type",
    make: async (dir) => {
      const layers = goodLayers();
      layers[0].mediaType = "application/x-frobnicated";
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[0].digest, "application/x-frobnicated"] };
    },
  },
  {
    name: "wrong diff_id is never published",
    make: async (dir) => {
      const layers = goodLayers();
      layers[1].diffID = digestOf("something else");
      const w = await makeLayout(dir, layers);
      return {
        ref: w.ref,
        includes: [w.layers[1].digest, "diff_id", digestOf("something else")],
        cached: [w.diffIDs[0]],
      };
    },
  },
  {
    name: "a tar with a bad header checksum",
    make: async (dir) => {
      const layers = goodLayers();
      layers[1] = layerOf(badChecksumTar());
      const w = await makeLayout(dir, layers);
      return { ref: w.ref, includes: [w.layers[1].digest, "checksum"], cached: [w.diffIDs[0]] };
    },
  },
  {
    name: "a good tar whose blob digest is wrong",
    make: async (dir) => {
      const layers = goodLayers();
      layers[1] = layerOf(goodTar(2), "none");
      const w = await makeLayout(dir, layers);
      // The same size, still a valid tar, one byte of file content changed.
      const p = blobPath(w, w.layers[1].digest);
      const bytes = await Deno.readFile(p);
      const at = bytes.indexOf("l".charCodeAt(0), 1536);
      bytes[at] = "L".charCodeAt(0);
      await Deno.writeFile(p, bytes);
      return {
        ref: w.ref,
        includes: [w.layers[1].digest, "Digest mismatch"],
        cached: [w.diffIDs[0], w.diffIDs[2]],
      };
    },
  },
  {
    name: "a truncated tar (diff_id of the truncated bytes)",
    make: async (dir) => {
      const layers = goodLayers();
      const t = goodTar(3).subarray(0, 700);
      layers[2] = layerOf(t);
      const w = await makeLayout(dir, layers);
      return {
        ref: w.ref,
        includes: [w.layers[2].digest],
        cached: [w.diffIDs[0], w.diffIDs[1]],
      };
    },
  },
  {
    name: "run of an image with a bad layer exits 125, no container left",
    command: "run",
    make: async (dir) => {
      const layers = goodLayers();
      layers[1] = layerOf(badChecksumTar());
      const w = await makeLayout(dir, layers);
      return {
        ref: w.ref,
        includes: [w.layers[1].digest, "checksum"],
        cached: [w.diffIDs[0], w.diffIDs[2]],
      };
    },
  },
  {
    name: "export of an image with a bad layer leaves no target behind",
    command: "export",
    make: async (dir) => {
      const layers = goodLayers();
      layers[2].diffID = digestOf("x");
      const w = await makeLayout(dir, layers);
      return {
        ref: w.ref,
        includes: [w.layers[2].digest, "diff_id"],
        cached: [w.diffIDs[0], w.diffIDs[1]],
      };
    },
  },
]);

// ---------------------------------------------------------------------------
// Archives

/** Writes a docker-archive (`docker save` layout) from a manifest.json value and members. */
async function dockerArchive(
  path: string,
  manifest: unknown,
  members: Record<string, Uint8Array | string>,
): Promise<string> {
  const tar = new TarWriter({ defaultMtime: 1_700_000_000 });
  tar.file("manifest.json", typeof manifest === "string" ? manifest : JSON.stringify(manifest));
  for (const [name, content] of Object.entries(members)) tar.file(name, content);
  await Deno.mkdir(join(path, ".."), { recursive: true });
  await Deno.writeFile(path, tar.bytes());
  return path;
}

/** A well-formed docker-archive's parts: config (named by its digest) and two layer tars. */
function dockerParts(diffIDs?: string[]) {
  const tars = [goodTar(1), goodTar(2)];
  const config = enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: diffIDs ?? tars.map((t) => digestOf(t)) },
  }));
  const configName = `${digestOf(config).slice(7)}.json`;
  return {
    config,
    configName,
    tars,
    members: { [configName]: config, "l1/layer.tar": tars[0], "l2/layer.tar": tars[1] } as Record<
      string,
      Uint8Array | string
    >,
    entry: { Config: configName, RepoTags: ["app:v1"], Layers: ["l1/layer.tar", "l2/layer.tar"] },
  };
}

cases("docker-archive", [
  {
    name: "a layer path with ../ pointing at the host",
    make: async (dir) => {
      const p = dockerParts();
      const path = await dockerArchive(join(dir, "a.tar"), [
        { ...p.entry, Layers: ["l1/layer.tar", "../../../../../../etc/passwd"] },
      ], p.members);
      return {
        ref: `docker-archive:${path}`,
        includes: ["../../../../../../etc/passwd", "missing"],
      };
    },
  },
  {
    name: "an absolute layer path",
    make: async (dir) => {
      const p = dockerParts();
      const path = await dockerArchive(join(dir, "a.tar"), [
        { ...p.entry, Layers: ["/etc/passwd", "l2/layer.tar"] },
      ], p.members);
      return { ref: `docker-archive:${path}`, includes: ["/etc/passwd", "missing"] };
    },
  },
  {
    name: "a Config path that traverses out",
    make: async (dir) => {
      const p = dockerParts();
      const path = await dockerArchive(join(dir, "a.tar"), [
        { ...p.entry, Config: "../../../../etc/hostname" },
      ], p.members);
      return { ref: `docker-archive:${path}`, includes: ["../../../../etc/hostname", "not found"] };
    },
  },
  {
    name: "a layer member that is a symlink to a host file",
    make: async (dir) => {
      const p = dockerParts();
      const tar = new TarWriter({ defaultMtime: 1 })
        .file("manifest.json", JSON.stringify([p.entry]))
        .file(p.configName, p.config)
        .file("l1/layer.tar", p.tars[0])
        .symlink("l2/layer.tar", "/etc/passwd");
      const path = join(dir, "a.tar");
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeFile(path, tar.bytes());
      return { ref: `docker-archive:${path}`, includes: ["l2/layer.tar", "missing"] };
    },
  },
  {
    name: "manifest.json missing",
    make: async (dir) => {
      const p = dockerParts();
      await Deno.mkdir(dir, { recursive: true });
      const tar = new TarWriter().file(p.configName, p.config);
      await Deno.writeFile(join(dir, "a.tar"), tar.bytes());
      return { ref: `docker-archive:${join(dir, "a.tar")}`, includes: ["no manifest.json"] };
    },
  },
  {
    name: "manifest.json is not JSON",
    make: async (dir) => {
      const p = dockerParts();
      const path = await dockerArchive(join(dir, "a.tar"), "[{", p.members);
      return { ref: `docker-archive:${path}`, includes: ["manifest.json", "not valid JSON"] };
    },
  },
  {
    name: "the config does not hash to the name it is stored under",
    make: async (dir) => {
      const p = dockerParts();
      p.members[p.configName] = enc.encode(new TextDecoder().decode(p.config) + " ");
      const path = await dockerArchive(join(dir, "a.tar"), [p.entry], p.members);
      return { ref: `docker-archive:${path}`, includes: [p.configName, "Digest mismatch"] };
    },
  },
  {
    name: "a layer that does not match its diff_id",
    make: async (dir) => {
      const p = dockerParts([digestOf(goodTar(1)), digestOf("not layer 2")]);
      const path = await dockerArchive(join(dir, "a.tar"), [p.entry], p.members);
      return {
        ref: `docker-archive:${path}`,
        // An uncompressed layer's blob digest is its diff_id: the blob check catches it.
        includes: [digestOf("not layer 2"), "Digest mismatch"],
        cached: [digestOf(goodTar(1))],
      };
    },
  },
  {
    name: "a pax size that is not a number (the index walk looped forever)",
    make: async (dir) => {
      const p = dockerParts();
      const tar = new TarWriter({ defaultMtime: 1 })
        .file("manifest.json", JSON.stringify([p.entry]))
        .file(p.configName, p.config, { pax: { size: "abc" } })
        .file("l1/layer.tar", p.tars[0])
        .file("l2/layer.tar", p.tars[1]);
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeFile(join(dir, "a.tar"), tar.bytes());
      return {
        ref: `docker-archive:${join(dir, "a.tar")}`,
        includes: [join(dir, "a.tar"), 'bad pax size "abc"'],
      };
    },
  },
  {
    name: "a truncated archive",
    make: async (dir) => {
      const p = dockerParts();
      const path = await dockerArchive(join(dir, "a.tar"), [p.entry], p.members);
      const bytes = await Deno.readFile(path);
      await Deno.writeFile(path, bytes.subarray(0, bytes.length - 2500));
      return { ref: `docker-archive:${path}`, includes: [path, "truncated"] };
    },
  },
]);

/** Tars an OCI layout directory into an oci-archive, members renamed by `rename`. */
async function ociArchive(
  w: Written,
  path: string,
  rename: (name: string) => string = (n) => n,
): Promise<string> {
  const tar = new TarWriter({ defaultMtime: 1 });
  for (const name of ["oci-layout", "index.json"]) {
    tar.file(rename(name), await Deno.readFile(join(w.dir, name)));
  }
  for await (const e of Deno.readDir(join(w.dir, "blobs/sha256"))) {
    tar.file(
      rename(`blobs/sha256/${e.name}`),
      await Deno.readFile(join(w.dir, "blobs/sha256", e.name)),
    );
  }
  await Deno.writeFile(path, tar.bytes());
  return path;
}

cases("oci-archive", [
  {
    name: "blobs stored under ../ names",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      const path = await ociArchive(
        w,
        join(dir, "a.tar"),
        (n) => n.startsWith("blobs/") ? `../${n}` : n,
      );
      return { ref: `oci-archive:${path}:v1`, includes: [w.manifest.digest, "not found"] };
    },
  },
  {
    name: "a blob member that is a symlink out of the archive",
    make: async (dir) => {
      const w = await makeLayout(dir, goodLayers());
      await Deno.remove(blobPath(w, w.config.digest));
      const tar = new TarWriter({ defaultMtime: 1 });
      for (const name of ["oci-layout", "index.json"]) {
        tar.file(name, await Deno.readFile(join(w.dir, name)));
      }
      for await (const e of Deno.readDir(join(w.dir, "blobs/sha256"))) {
        tar.file(
          `blobs/sha256/${e.name}`,
          await Deno.readFile(join(w.dir, "blobs/sha256", e.name)),
        );
      }
      tar.symlink(`blobs/sha256/${w.config.digest.slice(7)}`, "../../../../../../etc/hostname");
      await Deno.writeFile(join(dir, "a.tar"), tar.bytes());
      return {
        ref: `oci-archive:${join(dir, "a.tar")}:v1`,
        includes: [w.config.digest, "not found"],
      };
    },
  },
  {
    name: "a layer member smaller than its descriptor says",
    make: async (dir) => {
      const layers = goodLayers();
      layers[0].size = layers[0].blob.length + 1;
      const w = await makeLayout(dir, layers);
      const path = await ociArchive(w, join(dir, "a.tar"));
      return { ref: `oci-archive:${path}:v1`, includes: [w.layers[0].digest, "size"] };
    },
  },
]);

// ---------------------------------------------------------------------------
// Registries: a real docker-registry behind a front that lies on cue

/** A raw response the front sends instead of forwarding. */
interface RawResponse {
  status: number;
  headers?: Record<string, string>;
  /** The body; `endless` streams zeros until the client hangs up. */
  body?: Uint8Array | "endless";
  /** Send no Content-Length (the body ends when the connection closes). */
  noLength?: boolean;
  /** Send this many bytes of the body, then nothing more until the client hangs up. */
  stallAfter?: number;
  /** Send nothing at all (not even the headers) until the client hangs up. */
  stallHeaders?: boolean;
}

/**
 * An HTTP/1.1 front written on raw TCP (so it can send what no HTTP server
 * library would: a Content-Length that lies, a body without end), forwarding
 * to `upstream` unless `override` answers the request path.
 */
class LyingFront implements AsyncDisposable {
  readonly host: string;
  /** Paths requested, in order. */
  readonly seen: string[] = [];
  override: (path: string) => RawResponse | undefined = () => undefined;
  #server: LocalServer;

  constructor(upstream: string) {
    this.#server = serveLocal((conn) => this.#serve(conn, upstream));
    this.host = this.#server.host;
  }

  async #serve(conn: Deno.Conn, upstream: string): Promise<void> {
    const buf = new Uint8Array(16384);
    const head = await readRequestHead(conn, buf);
    if (head === null) return;
    const [requestLine, ...lines] = head.split("\r\n");
    const path = requestLine.split(" ")[1];
    this.seen.push(path);
    const headers = new Headers();
    for (const l of lines) {
      const i = l.indexOf(":");
      if (i > 0 && /^(accept|range)$/i.test(l.slice(0, i))) {
        headers.set(l.slice(0, i), l.slice(i + 1).trim());
      }
    }
    let r = this.override(path);
    if (!r) {
      const res = await fetch(`http://${upstream}${path}`, { headers, redirect: "manual" });
      const keep: Record<string, string> = {};
      for (const h of ["content-type", "docker-content-digest", "location", "content-range"]) {
        const v = res.headers.get(h);
        if (v) keep[h] = v;
      }
      r = { status: res.status, headers: keep, body: new Uint8Array(await res.arrayBuffer()) };
    }
    if (r.stallHeaders) {
      while (await conn.read(buf) !== null) { /* until the client hangs up */ }
      return;
    }
    const body = r.body ?? new Uint8Array();
    const h: Record<string, string> = { connection: "close", ...r.headers };
    if (!r.noLength && body !== "endless" && !("content-length" in h)) {
      h["content-length"] = String(body.length);
    }
    await writeResponseHead(conn, r.status, h);
    if (r.stallAfter !== undefined && body !== "endless") {
      await writeAll(conn, body.subarray(0, r.stallAfter));
      while (await conn.read(buf) !== null) { /* until the client hangs up */ }
      return;
    }
    if (body === "endless") {
      const zeros = new Uint8Array(1 << 16);
      for (;;) await writeAll(conn, zeros); // until the client hangs up
    }
    await writeAll(conn, body);
  }

  async [Symbol.asyncDispose]() {
    await this.#server[Symbol.asyncDispose]();
  }
}

Deno.test("damaged registry: lies, failures and loops", async (t) => {
  await using tmp = await tempDir("strata-damaged-registry-");
  const dir = String(tmp);
  await using registry = await Registry.start(undefined, dir);
  const src = await makeLayout(join(dir, "src"), goodLayers());
  await registry.push(src.ref, "app:v1");
  await using front = new LyingFront(registry.host);
  // What the registry serves (skopeo may have rewritten the manifest).
  const res = await fetch(`http://${registry.host}/v2/app/manifests/v1`, {
    headers: { accept: MediaType.OciManifest },
  });
  const manifestBytes = new Uint8Array(await res.arrayBuffer());
  const digest = digestOf(manifestBytes);
  const manifest = JSON.parse(new TextDecoder().decode(manifestBytes));
  const layer2: string = manifest.layers[1].digest;
  const config: string = manifest.config.digest;
  const tagRef = `docker://${front.host}/app:v1`;
  const digestRef = `docker://${front.host}/app@${digest}`;
  const flags = ["--tls-verify=false"];

  const registryCases: (Case & { override: (path: string) => RawResponse | undefined })[] = [
    {
      name: "a by-digest pull answered with other bytes",
      override: (p) =>
        p.endsWith(`/manifests/${digest}`)
          ? {
            status: 200,
            headers: { "content-type": MediaType.OciManifest },
            body: enc.encode(JSON.stringify(manifest, null, 1)),
          }
          : undefined,
      make: () => Promise.resolve({ ref: digestRef, includes: [digest, "Digest mismatch"] }),
    },
    {
      name: "a tag whose Docker-Content-Digest header lies",
      override: (p) =>
        p.endsWith("/manifests/v1")
          ? {
            status: 200,
            headers: {
              "content-type": MediaType.OciManifest,
              "docker-content-digest": digestOf("other"),
            },
            body: manifestBytes,
          }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: [digestOf("other"), "app:v1"] }),
    },
    {
      name: "a layer blob answered with different bytes",
      override: (p) => {
        if (!p.endsWith(`/blobs/${layer2}`)) return undefined;
        const bytes = new Uint8Array(manifest.layers[1].size);
        bytes.set(gzip(goodTar(9)).subarray(0, bytes.length));
        return { status: 200, body: bytes };
      },
      make: () =>
        Promise.resolve({
          ref: tagRef,
          includes: [layer2],
          cached: [src.diffIDs[0], src.diffIDs[2]],
        }),
    },
    {
      name: "a layer blob 404",
      override: (p) =>
        p.endsWith(`/blobs/${layer2}`)
          ? { status: 404, body: enc.encode('{"errors":[{"code":"BLOB_UNKNOWN"}]}') }
          : undefined,
      make: () =>
        Promise.resolve({
          ref: tagRef,
          includes: [layer2, "404"],
          cached: [src.diffIDs[0], src.diffIDs[2]],
        }),
    },
    {
      name: "500 forever: bounded retries, then one line",
      override: (p) =>
        p.includes("/blobs/") ? { status: 500, body: enc.encode("broken") } : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: [config, "500"] }),
    },
    {
      name: "500 with an error body without end",
      override: (p) =>
        p.endsWith(`/blobs/${config}`)
          ? { status: 500, body: "endless", noLength: true }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: [config, "500"] }),
    },
    {
      name: "a token endpoint that answers without end",
      override: (p) =>
        p.startsWith("/token")
          ? { status: 200, body: "endless", noLength: true }
          : p.startsWith("/v2/app/")
          ? {
            status: 401,
            headers: {
              "www-authenticate": `Bearer realm="http://${front.host}/token",service="x"`,
            },
          }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: ["token", "larger than"] }),
    },
    {
      name: "a redirect loop",
      override: (p) =>
        p.endsWith(`/blobs/${config}`)
          ? { status: 307, headers: { location: `http://${front.host}${p}` } }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: ["redirects"] }),
    },
    {
      name: "a blob redirected to a local file",
      override: (p) =>
        p.endsWith(`/blobs/${config}`)
          ? { status: 307, headers: { location: "file:///etc/hostname" } }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: [config, "refusing file: URL"] }),
    },
    {
      name: "a token realm that is a local file",
      override: (p) =>
        p.startsWith("/v2/app/")
          ? {
            status: 401,
            headers: { "www-authenticate": `Bearer realm="file:///dev/zero",service="x"` },
          }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: ["token realm", "refusing file: URL"] }),
    },
    {
      name: "an absurd Content-Length on a manifest",
      override: (p) =>
        p.includes("/manifests/")
          ? {
            status: 200,
            headers: { "content-type": MediaType.OciManifest, "content-length": "99999999999999" },
            body: manifestBytes,
          }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: ["app:v1", "larger than"] }),
    },
    {
      name: "a manifest body without end (no Content-Length)",
      override: (p) =>
        p.includes("/manifests/")
          ? {
            status: 200,
            headers: { "content-type": MediaType.OciManifest },
            body: "endless",
            noLength: true,
          }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: ["app:v1", "larger than"] }),
    },
    {
      name: "a layer body without end",
      override: (p) =>
        p.endsWith(`/blobs/${layer2}`)
          ? { status: 200, body: "endless", noLength: true }
          : undefined,
      make: () =>
        Promise.resolve({
          ref: tagRef,
          includes: [layer2, "more than"],
          cached: [src.diffIDs[0], src.diffIDs[2]],
        }),
    },
    {
      name: "a config body without end",
      override: (p) =>
        p.endsWith(`/blobs/${config}`)
          ? { status: 200, body: "endless", noLength: true }
          : undefined,
      make: () => Promise.resolve({ ref: tagRef, includes: [config, "more than"] }),
    },
  ];
  for (const c of registryCases) {
    await t.step(c.name, async () => {
      front.override = c.override;
      try {
        await runCase(c, flags);
      } finally {
        front.override = () => undefined;
      }
    });
  }
  await t.step(
    "killed (SIGKILL) while a layer streams: nothing partial, the next pull reclaims",
    async () => {
      await using tmp = await tempDir("strata-damaged-");
      const cache = join(String(tmp), "cache");
      const layer1: string = manifest.layers[0].digest;
      front.override = (p) => {
        if (!p.endsWith(`/blobs/${layer1}`)) return undefined;
        const blob = Deno.readFileSync(registry.blobData(layer1));
        return { status: 200, body: blob, stallAfter: blob.length >> 1 };
      };
      try {
        // setsid: the CLI leads its own process group, so the kill reaches any child it runs.
        const env = { ...Deno.env.toObject() };
        delete env.STRATA_CACHE;
        const child = new Deno.Command("setsid", {
          args: [denoPath, "run", "-A", CLI, "pull", tagRef, ...flags, "--cache", cache],
          stdin: "null",
          stdout: "null",
          stderr: "null",
          env,
        }).spawn();
        const seen = front.seen.length;
        for (let i = 0; i < 300 && !front.seen.slice(seen).some((p) => p.endsWith(layer1)); i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise((r) => setTimeout(r, 300)); // the half blob is in flight
        Deno.kill(-child.pid, "SIGKILL");
        await child.status;
      } finally {
        front.override = () => undefined;
      }
      // The dead process's work dir is still there, but nothing partial is a layer.
      assert((await list(join(cache, "tmp"))).length > 0, "killed mid-layer: its tmp dir remains");
      for (const e of await list(join(cache, "layers"))) {
        await Deno.stat(join(cache, "layers", e.name, "layer.json")); // complete, or absent
      }
      assert(
        !(await list(join(cache, "layers"))).some((e) =>
          e.name === src.diffIDs[0].replace(":", "-")
        ),
      );
      const r = await strata(["pull", "-q", tagRef, ...flags, "--cache", cache]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(r.stdout, digest + "\n");
      await assertCacheClean(cache, src.diffIDs);
    },
  );
  await t.step(
    "a registry that stalls: the idle timeout retries, resumes, then gives up",
    async () => {
      const layer1 = manifest.layers[0];
      front.override = (p) => {
        if (p.includes("/manifests/")) return { status: 200, stallHeaders: true };
        if (!p.endsWith(`/blobs/${layer1.digest}`)) return undefined;
        const blob = Deno.readFileSync(registry.blobData(layer1.digest));
        return { status: 200, body: blob, stallAfter: blob.length >> 1 };
      };
      try {
        const client = new RegistryClient(front.host, front.host, {
          tlsVerify: false,
          idleTimeout: 300,
          retryDelay: 10,
          retries: 2,
          resumes: 2,
        });
        const started = performance.now();
        await assertRejects(
          () => client.getManifest("app", "v1"),
          RegistryError,
          "no data from the registry for 0.3 s (after 2 attempts)",
        );
        const blob = await client.openBlob("app", layer1);
        await assertRejects(
          () => new Response(blob).arrayBuffer(),
          RegistryError,
          "gave up after 2 resumptions",
        );
        assert(performance.now() - started < 10_000, "bounded in time");
      } finally {
        front.override = () => undefined;
      }
    },
  );
  await t.step("a good pull through the front still works", async () => {
    await using cache = await tempDir("strata-damaged-cache-");
    const r = await strata(["pull", "-q", tagRef, ...flags, "--cache", String(cache)]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stdout, digest + "\n");
    await assertCacheClean(String(cache));
  });
});

// ---------------------------------------------------------------------------
// Hostile layers through the CLI, sandboxed

/**
 * Runs `deno run -A cli.ts ARGS` in a private mount namespace where every
 * mount is read-only and only `base` is writable (tests/hostile_test.ts's
 * pattern): should confinement ever break, a layer aimed at the host cannot
 * damage it.
 */
function sandboxedStrata(base: string, args: string[]): Promise<RunResult> {
  return runCli(args, { sandbox: base, denoFlags: ["--frozen"] });
}

Deno.test("damaged: hostile layer names pulled through the CLI stay inside the layer", async () => {
  await using tmp = await tempDir("strata-damaged-hostile-");
  const base = String(tmp);
  const canary = join(base, "canary");
  await Deno.mkdir(canary);
  await Deno.writeTextFile(join(canary, "secret"), "untouched");
  const up = "../".repeat(24);
  const hostile = new TarWriter({ defaultMtime: 1 })
    .directory("./")
    .file(`${up}${canary.slice(1)}/secret`, "pwned")
    .file(`${canary}/secret`, "pwned")
    .file(`${canary}/new`, "pwned")
    .symlink("evil", canary)
    .file("evil/secret", "pwned")
    .symlink("rel", `${up}${canary.slice(1)}`)
    .file("rel/new", "pwned")
    .hardlink("hl", `${canary}/secret`)
    .bytes();
  const w = await makeLayout(join(base, "image"), [layerOf(goodTar(1)), layerOf(hostile)]);
  const cache = join(base, "cache");
  const r = await sandboxedStrata(base, ["pull", "-q", w.ref, "--cache", cache]);
  // Confined: the pull may succeed (names land inside the layer) or refuse; never escape.
  if (r.code !== 0) assertOneErrorLine(r, []);
  else {
    assertEquals(r.stdout, w.manifest.digest + "\n");
    // `<key>`, or `<key>@<chain>` when its tree depends on the layer below.
    const key = w.diffIDs[1].replace(":", "-");
    const name = (await list(join(cache, "layers"))).map((e) => e.name)
      .find((n) => n === key || n.startsWith(`${key}@`))!;
    const fs = join(cache, "layers", name, "fs");
    assertEquals(await Deno.readTextFile(join(fs, canary, "secret")), "pwned", "landed inside");
  }
  assertEquals(await Deno.readTextFile(join(canary, "secret")), "untouched");
  assertEquals((await list(canary)).map((e) => e.name), ["secret"]);
  assertEquals((await list(base)).map((e) => e.name).sort(), ["cache", "canary", "image"]);
  await assertCacheClean(cache);
});
