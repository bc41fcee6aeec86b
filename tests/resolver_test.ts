/**
 * CachingLayerResolver, for real: extraction once, cached resolves, the two
 * modes giving one tree, concurrency within and across processes, kill -9 in
 * the middle of an extraction, 130 layers under a 210-character cache path.
 */
import { join } from "@std/path";
import {
  assert,
  assertEquals,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import {
  CachingLayerResolver,
  LayerResolveError,
  type ResolverEvent,
} from "../overlay/resolver.ts";
import { treeRecord } from "../layer/record.ts";
import { mountsBelow } from "../sys/mount.ts";
import { filesLayer, type MemoryLayer, memoryLayer, sampleImage, snapshotTree } from "./_layers.ts";
import { isRoot, longPath, repoRoot, tempDir, withOverlayView } from "./_helpers.ts";

/** Resolves every layer of an image in order; returns the lower dirs, bottom first. */
async function resolveAll(r: CachingLayerResolver, layers: MemoryLayer[]): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < layers.length; i++) out.push(await r.resolve(layers[i], layers.slice(0, i)));
  return out;
}

Deno.test({
  name: "resolve: extracts once, then one stat; a later layer's override wins",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const events: ResolverEvent[] = [];
    const r = await CachingLayerResolver.create(join(dir, "cache"), {
      onEvent: (e) => events.push(e),
    });
    const base = filesLayer({ "etc/os": "base", "etc/only-base": "b" });
    const app = filesLayer({ "etc/os": "app" });
    const l1 = await r.resolve(base);
    const l2 = await r.resolve(app, [base]);
    assertEquals(l1, r.layerPath(base.diffID));
    assertEquals(l1, join(dir, "cache", "layers", base.diffID.replace(":", "-"), "fs"));
    assertEquals(events.filter((e) => e.type === "extract").length, 2);
    // Cached: same path, the blob is not opened again.
    assertEquals(await r.resolve(app, base), l2);
    assertEquals(await r.resolve(app, [base]), l2);
    assertEquals([base.opened, app.opened], [1, 1]);
    assertEquals(events.filter((e) => e.type === "extract").length, 2);
    // A fresh resolver (another process) also finds it.
    const again = await CachingLayerResolver.create(join(dir, "cache"));
    assertEquals(await again.resolve(app, [base]), l2);
    assertEquals(app.opened, 1);
    const rec = await r.record(app.diffID);
    assertEquals([rec.diffID, rec.digest, rec.mode], [app.diffID, app.digest, "direct"]);
    assertEquals(rec.record.digest, (await treeRecord(l2)).digest);
    await withOverlayView(dir, [l1, l2], async (view) => {
      assertEquals(await Deno.readTextFile(join(view, "etc", "os")), "app");
      assertEquals(await Deno.readTextFile(join(view, "etc", "only-base")), "b");
    });
    assertEquals(await Array.fromAsync(Deno.readDir(join(dir, "cache", "tmp"))), []);
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name: "resolve: direct and workdir modes give the same image tree (whiteouts, opaque dirs)",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const layers = sampleImage(7);
    const views: Record<string, unknown>[] = [];
    const records: string[] = [];
    for (const mode of ["direct", "workdir"] as const) {
      const r = await CachingLayerResolver.create(join(dir, mode), { mode });
      const lowers = await resolveAll(r, layers);
      assertEquals((await r.record(layers[6].diffID, layers.slice(0, 6))).mode, mode);
      await withOverlayView(dir, lowers, async (view) => {
        views.push(await snapshotTree(view));
        records.push((await treeRecord(view, { ignoreDirMtimes: true })).digest);
        const names = (await Array.fromAsync(Deno.readDir(join(view, "data")))).map((e) => e.name);
        assertEquals(names, ["f6"], "each layer whites out the previous data file");
        const keep = (await Array.fromAsync(Deno.readDir(join(view, "keep")))).map((e) => e.name);
        assertEquals(keep.sort(), ["k6"], "layer 6 made keep/ opaque");
        assertEquals(await Deno.readTextFile(join(view, "etc", "layer")), "layer 6\n");
        assertEquals((await Deno.lstat(join(view, "data", "f6"))).uid, 0);
        assertEquals((await Deno.lstat(join(view, "data"))).mode! & 0o777, 0o755);
      });
      // No overlay bookkeeping xattrs left in workdir results, opaque markers kept.
      const lines = (await treeRecord(lowers[3], { lines: true })).lines!.join("\n");
      assertStringIncludes(lines, "user.overlay.opaque");
      assert(!/overlay\.(origin|impure|uuid)/.test(lines), lines);
    }
    assertEquals(views[0], views[1]);
    assertEquals(records[0], records[1]);
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name: "resolve: concurrent calls in one process extract each layer once",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const events: ResolverEvent[] = [];
    const r = await CachingLayerResolver.create(join(String(tmp), "cache"), {
      onEvent: (e) => events.push(e),
    });
    const layers = sampleImage(4);
    const all = await Promise.all(
      Array.from(
        { length: 6 },
        () => Promise.all(layers.map((l, i) => r.resolve(l, layers.slice(0, i)))),
      ),
    );
    for (const paths of all) assertEquals(paths, all[0]);
    assertEquals(events.filter((e) => e.type === "extract").length, 4);
    assertEquals(layers.map((l) => l.opened), [1, 1, 1, 1]);
  },
});

Deno.test({
  name: "resolve: a layer whose digest does not verify is never published",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const root = join(String(tmp), "cache");
    const r = await CachingLayerResolver.create(root);
    const bad = memoryLayer(filesLayer({ a: "1" }).tar, "gzip", { corruptDiffID: true });
    const e = await assertRejects(() => r.resolve(bad), LayerResolveError);
    assertStringIncludes(e.message, bad.diffID);
    assertEquals(await Array.fromAsync(Deno.readDir(join(root, "layers"))), []);
    assertEquals(await Array.fromAsync(Deno.readDir(join(root, "tmp"))), []);
    await assertRejects(() => Deno.stat(r.layerPath(bad.diffID)), Deno.errors.NotFound);
  },
});

Deno.test({
  name: "resolve: 130 layers under a 210-character cache path (each layer path > 256 bytes), " +
    "mounted in order",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const root = longPath(dir, 210);
    const r = await CachingLayerResolver.create(root);
    const layers = Array.from(
      { length: 130 },
      (_, i) => filesLayer({ f: String(i), [`g${i}`]: "" }, "none"),
    );
    const lowers = await resolveAll(r, layers);
    // Past fsconfig's 256-byte string limit: mounted by file descriptor.
    assert(lowers.every((l) => new TextEncoder().encode(l).length > 256), lowers[0]);
    await withOverlayView(dir, lowers, async (view) => {
      assertEquals(await Deno.readTextFile(join(view, "f")), "129");
      assertEquals((await Array.fromAsync(Deno.readDir(view))).length, 131);
    });
    assertEquals(await mountsBelow(dir), []);
  },
});

// ---- several processes -------------------------------------------------------

const SCRIPT = `
import { CachingLayerResolver } from "${repoRoot}/overlay/resolver.ts";
import { sampleImage, slowLayer } from "${repoRoot}/tests/_layers.ts";
import { ensureUserNamespace } from "${repoRoot}/overlay/userns.ts";
const [root, mode, count, slow, privateNs] = Deno.args;
if (privateNs === "1") await ensureUserNamespace();
let layers = slow === "1"
  ? sampleImage(Number(count), { pad: 1 << 20, compression: "none" })
  : sampleImage(Number(count));
if (slow === "1") layers = layers.map((l) => slowLayer(l, 25, 16384));
const r = await CachingLayerResolver.create(root, {
  mode: mode as "direct" | "workdir",
  onEvent: (e) => console.log(JSON.stringify({ ...e, pid: Deno.pid })),
});
const paths = [];
for (let i = 0; i < layers.length; i++) paths.push(await r.resolve(layers[i], layers.slice(0, i)));
console.log(JSON.stringify({ type: "done", paths }));
`;

async function writeScript(dir: string): Promise<string> {
  const path = join(dir, "resolve_script.ts");
  await Deno.writeTextFile(path, SCRIPT);
  // Not the repository's deno.json: its npm imports are not needed here.
  await Deno.writeTextFile(
    `${path}.imports.json`,
    JSON.stringify({ imports: { "@std/path": "node:path" } }),
  );
  return path;
}

function spawnScript(script: string, args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--frozen",
      "--no-config",
      `--import-map=${script}.imports.json`,
      script,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
}

/** Reads JSON lines from a child's stdout, calling `onLine` for each as it comes. */
async function readLines(
  child: Deno.ChildProcess,
  onLine: (o: Record<string, unknown>) => void = () => {},
): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  let buf = "";
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.startsWith("{")) continue;
      const o = JSON.parse(line);
      out.push(o);
      onLine(o);
    }
  }
  return out;
}

for (const mode of ["direct", "workdir"] as const) {
  Deno.test({
    name: `processes (${mode}): four resolving the same image at once extract each layer once`,
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const script = await writeScript(dir);
      const root = join(dir, "cache");
      const children = Array.from(
        { length: 4 },
        () => spawnScript(script, [root, mode, "6", "0", "0"]),
      );
      const results = await Promise.all(children.map(async (c) => {
        const [lines, status, err] = await Promise.all([
          readLines(c),
          c.status,
          new Response(c.stderr).text(),
        ]);
        assertEquals(status.code, 0, err);
        return lines;
      }));
      const extracts = results.flat().filter((o) => o.type === "extract");
      assertEquals(extracts.length, 6, JSON.stringify(extracts));
      assertEquals(new Set(extracts.map((o) => o.diffID)).size, 6);
      const done = results.map((ls) => ls.find((o) => o.type === "done")!.paths);
      for (const d of done) assertEquals(d, done[0]);
      assertEquals(await Array.fromAsync(Deno.readDir(join(root, "tmp"))), []);
      assertEquals(await mountsBelow(dir), []);
    },
  });
}

/** Starts the script, waits until it extracts layer `nth`, kills it with SIGKILL mid-way. */
async function killDuringExtraction(
  script: string,
  root: string,
  mode: string,
  privateNs: boolean,
): Promise<{ pid: number }> {
  const child = spawnScript(script, [root, mode, "3", "1", privateNs ? "1" : "0"]);
  const stderr = new Response(child.stderr).text();
  let killed: number | undefined;
  let extracts = 0;
  const lines = readLines(child, (o) => {
    if (o.type !== "extract" || ++extracts !== 2) return;
    // Layer 2 of 3 (1 MiB, ~1.6 s at this pace) is being extracted: kill the
    // process that does it (in a private namespace, the re-executed child).
    killed = o.pid as number;
    setTimeout(() => {
      try {
        Deno.kill(killed!, "SIGKILL");
      } catch {
        // already exited: the assertion on its status says so
      }
    }, 400);
  });
  await lines;
  const status = await child.status;
  assert(killed !== undefined, `never reached the second layer: ${await stderr}`);
  assertNotEquals(status.code, 0);
  return { pid: killed };
}

Deno.test({
  name: "kill -9 during a direct extraction: no partial layer, tmp reclaimed, resolve works",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const root = join(dir, "cache");
    await killDuringExtraction(await writeScript(dir), root, "direct", false);
    const layers = sampleImage(3, { pad: 1 << 20, compression: "none" });
    const published = (await Array.fromAsync(Deno.readDir(join(root, "layers")))).map((e) =>
      e.name
    );
    assertEquals(published, [layers[0].diffID.replace(":", "-")], "only the finished layer");
    assertEquals((await Array.fromAsync(Deno.readDir(join(root, "tmp")))).length, 1, "a leftover");
    const events: ResolverEvent[] = [];
    const r = await CachingLayerResolver.create(root, { onEvent: (e) => events.push(e) });
    assertEquals(events.filter((e) => e.type === "reclaimed").length, 1);
    assertEquals(await Array.fromAsync(Deno.readDir(join(root, "tmp"))), []);
    const lowers = await resolveAll(r, layers);
    assertEquals(events.filter((e) => e.type === "extract").length, 2);
    await withOverlayView(dir, lowers, async (view) => {
      assertEquals(await Deno.readTextFile(join(view, "etc", "layer")), "layer 2\n");
      assertEquals((await Deno.stat(join(view, "data", "pad1"))).size, 1 << 20);
    });
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name: "kill -9 during a workdir extraction in a private mount namespace leaks no mount",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const root = join(dir, "cache");
    await killDuringExtraction(await writeScript(dir), root, "workdir", true);
    assertEquals(await mountsBelow(dir), [], "the mount died with its namespace");
    const events: ResolverEvent[] = [];
    const r = await CachingLayerResolver.create(root, {
      mode: "workdir",
      onEvent: (e) => events.push(e),
    });
    assertEquals(events.filter((e) => e.type === "reclaimed").length, 1);
    const layers = sampleImage(3, { pad: 1 << 20, compression: "none" });
    await resolveAll(r, layers);
    assertEquals(await Array.fromAsync(Deno.readDir(join(root, "tmp"))), []);
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name: "kill -9 during a workdir extraction on the host: the next process unmounts and reclaims",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const root = join(dir, "cache");
    await killDuringExtraction(await writeScript(dir), root, "workdir", false);
    assertEquals((await mountsBelow(join(root, "tmp"))).length, 1, "a leaked overlay");
    const events: ResolverEvent[] = [];
    await CachingLayerResolver.create(root, { onEvent: (e) => events.push(e) });
    assertEquals(events.filter((e) => e.type === "reclaimed").length, 1);
    assertEquals(await mountsBelow(dir), []);
    assertEquals(await Array.fromAsync(Deno.readDir(join(root, "tmp"))), []);
  },
});
