/**
 * Image kinds and the OCI image spec's less common parts
 * (zero layers, artifacts, multi-platform indexes) and the commands other
 * than `run`. Each case drives the real CLI on layouts written in code.
 *
 * @module
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { digestOf } from "../image/blob.ts";
import { writeOciLayout } from "../image/build.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { isRoot, mountsBelow, runCli, tempDir } from "./_helpers.ts";

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

async function putBlob(dir: string, bytes: Uint8Array): Promise<{ digest: string; size: number }> {
  const digest = digestOf(bytes);
  await Deno.writeFile(join(dir, "blobs", "sha256", digest.slice(7)), bytes);
  return { digest, size: bytes.length };
}

/** Points the layout's index.json at one manifest, tagged `v1`. */
async function tagManifest(dir: string, manifest: Record<string, unknown>): Promise<string> {
  const d = await putBlob(dir, enc(manifest));
  await Deno.writeTextFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        ...d,
        annotations: { "org.opencontainers.image.ref.name": "v1" },
      }],
    }),
  );
  return `oci:${dir}:v1`;
}

const tinyTar = () => new TarWriter().file("hello.txt", "hi\n").bytes();

Deno.test({
  name: "run: a stored image is not used for a --platform its source does not offer",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = join(String(tmp), "layout");
    await writeOciLayout(dir, [{
      tag: "v1",
      images: [
        { layers: [{ tar: tinyTar() }], platform: "linux/amd64" },
        { layers: [{ tar: tinyTar() }], platform: "linux/arm/v6", config: { Env: ["P=v6"] } },
      ],
    }]);
    const cache = join(String(tmp), "cache");
    const ref = `oci:${dir}:v1`;
    const pulled = await runCli([
      "pull",
      "-q",
      "--cache",
      cache,
      "--platform",
      "linux/arm/v6",
      ref,
    ]);
    assertEquals(pulled.code, 0, pulled.stderr);
    // The layout is there and answers: it has no s390x image. The arm/v6
    // image stored under the same name must not stand in for it.
    for (const platform of ["linux/s390x", "linux/arm/v5"]) {
      const r = await runCli(["pull", "--cache", cache, "--platform", platform, ref]);
      assertEquals(r.code, 1, r.stderr);
      assertStringIncludes(r.stderr, `No manifest for platform ${platform}`);
      const e = await runCli([
        "export",
        "--cache",
        cache,
        "--platform",
        platform,
        ref,
        join(String(tmp), "x"),
      ]);
      assertEquals(e.code, 1, e.stderr);
      assertStringIncludes(e.stderr, `No manifest for platform ${platform}`);
      assertEquals(e.stderr.trim().split("\n").length, 1, e.stderr);
    }
  },
});
Deno.test({
  name: "export: an image with no layers exports an empty root directory",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = join(String(tmp), "layout");
    const [w] = await writeOciLayout(dir, [{ tag: "v1", images: [{ layers: [] }] }]);
    assertEquals(w.images[0].layers.length, 0);
    const cache = join(String(tmp), "cache");
    const out = join(String(tmp), "out");
    const r = await runCli(["export", "-q", "--cache", cache, `oci:${dir}:v1`, out]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stderr, "");
    const st = await Deno.lstat(out);
    assert(st.isDirectory);
    assertEquals(st.mode! & 0o7777, 0o755);
    assertEquals([...Deno.readDirSync(out)], []);
    assertEquals(await mountsBelow(String(tmp)), []);
    assertEquals([...Deno.readDirSync(join(cache, "tmp"))], []);
  },
});
Deno.test({
  name: "pull: an OCI artifact (config not an image config) is refused as not an image",
  async fn() {
    await using tmp = await tempDir();
    const cache = join(String(tmp), "cache");
    const cases: [string, string, Record<string, unknown>][] = [
      // A Helm chart as `helm push` writes it.
      ["helm", "application/vnd.cncf.helm.config.v1+json", { name: "x", version: "1.0.0" }],
      // A signature or SBOM: the empty config, artifactType naming the kind.
      ["sig", "application/vnd.oci.empty.v1+json", {}],
    ];
    for (const [name, configType, configDoc] of cases) {
      const dir = join(String(tmp), name);
      await writeOciLayout(dir, [{ tag: "v1", images: [{ layers: [{ tar: tinyTar() }] }] }]);
      const config = await putBlob(dir, enc(configDoc));
      const payload = await putBlob(dir, enc({ payload: name }));
      const manifest: Record<string, unknown> = {
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: configType, ...config },
        layers: [{ mediaType: `application/vnd.example.${name}.layer`, ...payload }],
      };
      if (name === "sig") manifest.artifactType = "application/vnd.dev.sigstore.bundle.v0.3+json";
      const ref = await tagManifest(dir, manifest);
      for (const cmd of ["pull", "run"]) {
        const r = await runCli([cmd, "--cache", cache, ref]);
        assertEquals(r.code, cmd === "run" ? 125 : 1, r.stderr);
        const lines = r.stderr.trim().split("\n");
        assertEquals(lines.length, 1, r.stderr);
        assertStringIncludes(lines[0], "not a container image");
        assertStringIncludes(
          lines[0],
          name === "sig" ? "application/vnd.dev.sigstore.bundle.v0.3+json" : configType,
        );
      }
    }
  },
});
Deno.test({
  name: "errors: control characters from an image's index are escaped, the error stays one line",
  async fn() {
    await using tmp = await tempDir();
    const dir = join(String(tmp), "layout");
    await writeOciLayout(dir, [
      { tag: "a\x1b]0;owned\x07\r\nstrata: fake", images: [{ layers: [{ tar: tinyTar() }] }] },
      { tag: "b\x9b31m", images: [{ layers: [{ tar: tinyTar() }], config: { Env: ["X=1"] } }] },
    ]);
    const r = await runCli(["pull", "--cache", join(String(tmp), "cache"), `oci:${dir}`]);
    assertEquals(r.code, 1, r.stderr);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    // deno-lint-ignore no-control-regex
    assert(!/[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/.test(r.stderr), JSON.stringify(r.stderr));
    assertStringIncludes(r.stderr, "a\\x1b]0;owned\\x07");
    assertStringIncludes(r.stderr, "b\\x9b31m");
  },
});

Deno.test("platform: amd64 is amd64/v1, and a variant runs the older ones, never a newer one", async () => {
  const { choosePlatform, parsePlatform, PlatformNotFoundError } = await import(
    "../image/platform.ts"
  );
  const index = (...platforms: string[]) =>
    platforms.map((p, i) => ({
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: `sha256:${String(i).repeat(64)}`,
      size: 1,
      platform: parsePlatform(p),
    }));
  const pick = (want: string, ...have: string[]) => {
    const d = choosePlatform(index(...have), parsePlatform(want), "an image");
    return have[Number(d.digest.slice(7, 8))];
  };
  assertEquals(pick("linux/amd64/v1", "linux/arm64", "linux/amd64"), "linux/amd64");
  assertEquals(pick("linux/amd64", "linux/amd64/v1"), "linux/amd64/v1");
  // A v2 machine cannot run v3 code; plain amd64 (v1) it can.
  assertEquals(pick("linux/amd64/v2", "linux/amd64/v3", "linux/amd64"), "linux/amd64");
  assertEquals(pick("linux/amd64/v3", "linux/arm64", "linux/amd64/v2"), "linux/amd64/v2");
  assertEquals(
    pick("linux/amd64/v4", "linux/amd64", "linux/amd64/v2", "linux/amd64/v3"),
    "linux/amd64/v3",
  );
  assertEquals(pick("linux/arm/v7", "linux/arm/v5", "linux/arm/v6"), "linux/arm/v6");
  assertEquals(pick("linux/arm64", "linux/arm64/v8", "linux/amd64"), "linux/arm64/v8");
  for (
    const [want, ...have] of [["linux/arm/v5", "linux/arm/v6", "linux/arm/v7"], [
      "linux/amd64/v2",
      "linux/amd64/v3",
    ]]
  ) {
    let err: unknown;
    try {
      pick(want, ...have);
    } catch (e) {
      err = e;
    }
    assert(err instanceof PlatformNotFoundError, `${want} from ${have}: ${err}`);
  }
});
