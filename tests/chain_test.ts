/**
 * Layers whose extracted tree depends on their parents (an implied parent
 * directory takes the lower's metadata; overlayfs copy-up in workdir mode)
 * are cached per chain (`layers/<key>@<chain hex>`); layers that name their
 * directories stay shared by diff_id. Checked through real overlay mounts.
 */
import { join } from "@std/path";
import { createHash } from "node:crypto";
import { assert, assertEquals, assertNotEquals, assertStringIncludes } from "@std/assert";
import { CachingLayerResolver, chainID, type ResolverEvent } from "../overlay/resolver.ts";
import { OverlayMount } from "../overlay/mount.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { cachedLayers, removeLayer } from "../cli/cache_scan.ts";
import { writeOciLayout } from "../image/build.ts";
import { hostArchitecture } from "../cli/demo_image.ts";
import { filesLayer, memoryLayer } from "./_layers.ts";
import { isRoot, mountsBelow, runCli, tempDir } from "./_helpers.ts";

/** A base image layer whose `usr/local/bin` has the given owner and mode. */
function baseLayer(mode: number, uid: number, gid: number) {
  const tar = new TarWriter({ defaultMtime: 1_600_000_000 });
  tar.directory("./", { mode: 0o755 });
  tar.directory("usr/", { mode: 0o755 });
  tar.directory("usr/local/", { mode: 0o755 });
  tar.directory("usr/local/bin/", { mode, uid, gid, mtime: 1_600_000_000 + uid });
  tar.file("usr/local/bin/base", `base ${uid}`, { mode: 0o755 });
  return memoryLayer(tar);
}

async function withView<T>(dir: string, lowers: string[], fn: (view: string) => Promise<T>) {
  const view = await Deno.makeTempDir({ dir, prefix: "view-" });
  const m = new OverlayMount({ mountpoint: view, lower: lowers, readonly: true });
  await m.mount();
  try {
    return await fn(view);
  } finally {
    await m.unmount();
  }
}

Deno.test("chainID: the OCI image spec's definition", () => {
  const a = "sha256:" + "a".repeat(64), b = "sha256:" + "b".repeat(64);
  const c = "sha256:" + "c".repeat(64);
  assertEquals(chainID([a]), a);
  const ab = "sha256:" + createHash("sha256").update(`${a} ${b}`).digest("hex");
  assertEquals(chainID([a, b]), ab);
  assertEquals(
    chainID([a, b, c]),
    "sha256:" + createHash("sha256").update(`${ab} ${c}`).digest("hex"),
  );
});

for (const mode of ["direct", "workdir"] as const) {
  Deno.test({
    name: `resolve (${mode}): a layer with an implied parent gets each base's metadata`,
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const cache = join(dir, "cache");
      const events: ResolverEvent[] = [];
      const r = await CachingLayerResolver.create(cache, { mode, onEvent: (e) => events.push(e) });
      const baseA = baseLayer(0o755, 0, 0);
      const baseB = baseLayer(0o750, 1234, 4321);
      // Only `usr/local/bin/x`: its parents are implied.
      const app = memoryLayer(
        new TarWriter({ defaultMtime: 1_700_000_000 }).file("usr/local/bin/x", "x", {
          mode: 0o755,
        }),
      );
      const a0 = await r.resolve(baseA);
      const a1 = await r.resolve(app, [baseA]);
      const b0 = await r.resolve(baseB);
      const b1 = await r.resolve(app, [baseB]);
      assertNotEquals(a1, b1, "one tree per base");
      assertEquals(events.filter((e) => e.type === "extract").length, 4);
      const hex = (id: string) => id.slice("sha256:".length);
      const key = app.diffID.replace(":", "-");
      assertEquals(
        a1,
        join(cache, "layers", `${key}@${hex(chainID([baseA.diffID, app.diffID]))}`, "fs"),
      );
      assertEquals(
        b1,
        join(cache, "layers", `${key}@${hex(chainID([baseB.diffID, app.diffID]))}`, "fs"),
      );
      const rec = await r.record(app.diffID, [baseB]);
      assertEquals(rec.dependsOnLowers, true);
      assertEquals(rec.chainID, chainID([baseB.diffID, app.diffID]));
      assertEquals(rec.diffID, app.diffID);
      const cases: [string[], number[]][] = [
        [[a0, a1], [0o755, 0, 0]],
        [[b0, b1], [0o750, 1234, 4321]],
      ];
      for (const [lowers, want] of cases) {
        await withView(dir, lowers, async (view) => {
          const st = await Deno.stat(join(view, "usr/local/bin"));
          assertEquals([st.mode! & 0o7777, st.uid!, st.gid!], want);
          assertEquals(await Deno.readTextFile(join(view, "usr/local/bin/x")), "x");
          assert((await Deno.stat(join(view, "usr/local/bin/base"))).isFile);
        });
      }
      // Cached: a fresh resolver (another process) finds both, nothing extracted.
      const again = await CachingLayerResolver.create(cache, {
        mode,
        onEvent: (e) => events.push(e),
      });
      assertEquals(await again.resolve(app, [baseA]), a1);
      assertEquals(await again.resolve(app, [baseB]), b1);
      assertEquals(await again.resolveAll([baseB, app]), [b0, b1]);
      assertEquals(events.filter((e) => e.type === "extract").length, 4);
      assertEquals(app.opened, 2);

      // The cache scan sees both directories as the one diff_id; removing one keeps the other.
      const listed = (await cachedLayers(cache)).filter((l) => l.diffID === app.diffID);
      assertEquals(listed.length, 2);
      assert(listed.every((l) => l.chain && l.record?.dependsOnLowers));
      const victim = listed.find((l) => l.path === join(a1, ".."))!;
      assertEquals(await removeLayer(cache, victim), "removed");
      assertEquals((await cachedLayers(cache)).filter((l) => l.diffID === app.diffID).length, 1);
      assertEquals(again.cachedPath(app.diffID, [baseA]), undefined);
      assertEquals(again.cachedPath(app.diffID, [baseB]), b1);
      assertEquals(await mountsBelow(dir), []);
    },
  });

  Deno.test({
    name: `resolve (${mode}): a layer naming its directories is shared across bases`,
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const cache = join(dir, "cache");
      const events: ResolverEvent[] = [];
      const r = await CachingLayerResolver.create(cache, { mode, onEvent: (e) => events.push(e) });
      const baseA = baseLayer(0o755, 0, 0);
      const baseB = baseLayer(0o750, 1234, 4321);
      const app = filesLayer({ "opt/app/y": "y" });
      const a0 = await r.resolve(baseA);
      const a1 = await r.resolve(app, [baseA]);
      const b0 = await r.resolve(baseB);
      const b1 = await r.resolve(app, [baseB]);
      assertEquals(a1, b1);
      assertEquals(a1, join(cache, "layers", app.diffID.replace(":", "-"), "fs"));
      assertEquals(app.opened, 1);
      assertEquals(events.filter((e) => e.type === "extract").length, 3);
      const rec = await r.record(app.diffID);
      assertEquals(rec.dependsOnLowers, false);
      assertEquals(rec.chainID, chainID([baseA.diffID, app.diffID]));
      for (const lowers of [[a0, a1], [b0, b1]]) {
        await withView(dir, lowers, async (view) => {
          assertEquals(await Deno.readTextFile(join(view, "opt/app/y")), "y");
        });
      }
      assertEquals(await mountsBelow(dir), []);
    },
  });
}

Deno.test({
  name: "cli: ls, verify and prune with a layer cached over two bases",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const cache = join(dir, "cache");
    const layout = join(dir, "layout");
    const baseA = baseLayer(0o755, 0, 0);
    const baseB = baseLayer(0o750, 1234, 4321);
    const app = memoryLayer(
      new TarWriter({ defaultMtime: 1_700_000_000 }).file("usr/local/bin/x", "x"),
    );
    const platform = `linux/${hostArchitecture()}`;
    await writeOciLayout(layout, [
      { tag: "a", images: [{ platform, layers: [{ tar: baseA.tar }, { tar: app.tar }] }] },
      { tag: "b", images: [{ platform, layers: [{ tar: baseB.tar }, { tar: app.tar }] }] },
    ]);
    const c = ["--cache", cache];
    for (const tag of ["a", "b"]) {
      const pull = await strata(["pull", "-q", `oci:${layout}:${tag}`, ...c]);
      assertEquals(pull.code, 0, pull.stderr);
    }
    const key = app.diffID.replace(":", "-");
    const names = [...Deno.readDirSync(join(cache, "layers"))].map((e) => e.name);
    assertEquals(names.filter((n) => n.startsWith(`${key}@`)).length, 2, names.join(" "));
    const ls = JSON.parse((await strata(["ls", "--json", ...c])).stdout);
    assertEquals(ls.images.map((i: { complete: boolean }) => i.complete), [true, true]);
    assertEquals(ls.layers, { count: 4, unreferenced: 0 });
    const ok = await strata(["verify", ...c]);
    assertEquals(ok.code, 0, ok.stderr);
    assertStringIncludes(ok.stderr, "verified 4 layers");
    // Image b still uses the app layer's diff_id: both of its directories stay.
    assertEquals((await strata(["rm", `oci:${layout}:a`, ...c])).code, 0);
    const p1 = await strata(["prune", ...c]);
    assertEquals(p1.code, 0, p1.stderr);
    assertEquals(p1.stdout, `${baseA.diffID}\n`);
    assertEquals((await strata(["rm", `oci:${layout}:b`, ...c])).code, 0);
    const p2 = await strata(["prune", ...c]);
    assertEquals(p2.code, 0, p2.stderr);
    assertEquals(p2.stdout.trim().split("\n").sort(), [app.diffID, baseB.diffID].sort());
    assertStringIncludes(p2.stderr, "pruned 3 layers");
    assertEquals([...Deno.readDirSync(join(cache, "layers"))], []);
  },
});

const strata = (args: string[]) => runCli(args);

Deno.test("sha256Hex (chain IDs without node:crypto) agrees with node:crypto at every padding edge", async () => {
  const { sha256Hex } = await import("../sys/sha256.ts");
  assertEquals(
    sha256Hex("abc"),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  for (const n of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 70_000]) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 31 + n) & 255);
    assertEquals(sha256Hex(bytes), createHash("sha256").update(bytes).digest("hex"), `${n} bytes`);
  }
  assertEquals(sha256Hex("é ☃"), createHash("sha256").update("é ☃").digest("hex"), "UTF-8");
});
