/**
 * Fifth audit round: image kinds and the OCI image spec's less common parts
 * (zero layers, artifacts, multi-platform indexes) and the commands other
 * than `run`. Each case drives the real CLI on layouts written in code.
 *
 * @module
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { writeOciLayout } from "../image/build.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { isRoot, mountsBelow, runCli, tempDir } from "./_helpers.ts";

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
