/**
 * Any path the kernel can name works, end to end: images of 131 and 500
 * layers whose layers are cached per chain (`layers/sha256-<64>@<64>/fs`,
 * 146 characters below the root) under a 210-character cache root, so that
 * every layer's path is past fsconfig's 256-byte string limit. Each is
 * pulled and run (`strata run`), with every mount backend forced in turn,
 * as root and as an unprivileged user; exported; run six at a time on one
 * cache; and bundled through the library in `LayerWorkdir` mode.
 */
import { join } from "@std/path";
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { writeOciLayout } from "../image/build.ts";
import { hostArchitecture } from "../cli/demo_image.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { CachingBundler } from "../bundle/bundler.ts";
import { runContainer } from "../bundle/run.ts";
import { withArgs } from "../bundle/options.ts";
import { CachingLayerResolver } from "../overlay/resolver.ts";
import { busyboxLayer, testImage } from "./_bundle_helpers.ts";
import { type MemoryLayer, memoryLayer } from "./_layers.ts";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  longPath,
  mountsBelow,
  repoRoot,
  runAsUser,
  runCli,
  type RunResult,
  tempDir,
} from "./_helpers.ts";

const CLI = join(repoRoot, "cli.ts");
const bytes = (s: string) => new TextEncoder().encode(s).length;

/** The backends `STRATA_MOUNT_BACKEND` can force ("" is the default choice). */
const FORCED = ["", "fsopen:fd", "fsopen:path", "mount2", "command"];

/**
 * An image of `n` layers: a busybox base, then `n - 1` layers that name no
 * directory (so their implied parents take the base's metadata, and each is
 * cached per chain): layer i writes `etc/layer` and `srv/f<i>`, and each
 * even layer whites out the file the layer before it wrote.
 */
function chainImage(n: number): MemoryLayer[] {
  const layers = [busyboxLayer()];
  for (let i = 1; i < n; i++) {
    const t = new TarWriter({ defaultMtime: 1_700_000_000 + i });
    t.file("etc/layer", `layer ${i}\n`, { mode: 0o644 });
    t.file(`srv/f${i}`, `${i}\n`, { mode: 0o644 });
    if (i % 2 === 0) t.file(`srv/.wh.f${i - 1}`, "");
    layers.push(memoryLayer(t, "gzip"));
  }
  return layers;
}

/** What the container prints for {@linkcode SCRIPT} on a {@linkcode chainImage} of `n` layers. */
function expected(n: number): string {
  const srv = new Set<string>();
  for (let i = 1; i < n; i++) {
    srv.add(`f${i}`);
    if (i % 2 === 0) srv.delete(`f${i - 1}`);
  }
  return `layer ${n - 1}\n${[...srv].sort().join(" ")}\n`;
}

/** The container's command: the top layer's file and the whiteouts' outcome. */
const SCRIPT = ["sh", "-c", "cat /etc/layer; echo $(ls /srv | sort)"];

const images = new Map<number, MemoryLayer[]>();
const imageOf = (n: number) => images.get(n) ?? images.set(n, chainImage(n)).get(n)!;

/** Writes the `n`-layer image into an OCI layout at `dir`; returns its reference. */
async function layout(dir: string, n: number): Promise<string> {
  const platform = `linux/${hostArchitecture()}`;
  await writeOciLayout(dir, [{
    tag: `n${n}`,
    images: [{ platform, layers: imageOf(n).map((l) => ({ tar: l.tar })) }],
  }]);
  return `oci:${dir}:n${n}`;
}

/** Checks that the cache's layers are chain-keyed and their paths past 256 bytes. */
async function assertChainKeyed(cache: string, n: number): Promise<void> {
  const names = (await Array.fromAsync(Deno.readDir(join(cache, "layers")))).map((e) => e.name);
  const chained = names.filter((name) => name.includes("@"));
  assertEquals(chained.length, n - 1, names.join(" "));
  for (const name of chained) assert(bytes(join(cache, "layers", name, "fs")) > 256, name);
}

const strata = (args: string[], backend = "", timeout = 300) =>
  runCli(args, { env: { STRATA_MOUNT_BACKEND: backend }, timeout });

function assertRan(r: RunResult, n: number, what: string): void {
  assertEquals(r.code, 0, `${what}: ${r.stderr}`);
  assertEquals(r.stdout, expected(n), what);
}

for (const n of [131, 500]) {
  Deno.test({
    name: `root: ${n} chain-keyed layers under a 210-char cache root: pull, run with every ` +
      "backend, export",
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const cache = longPath(join(dir, "cache"), 210);
      const ref = await layout(join(dir, "layout"), n);
      const pull = await strata(["pull", "-q", "--cache", cache, ref]);
      assertEquals(pull.code, 0, pull.stderr);
      await assertChainKeyed(cache, n);
      for (const backend of FORCED) {
        const r = await strata(["run", "-q", "--cache", cache, ref, "--", ...SCRIPT], backend);
        assertRan(r, n, backend || "default");
      }
      const why = await strata(["supported", "--why", "--cache", cache]);
      assertEquals(why.code, 0, why.stderr);
      assertStringIncludes(why.stdout, "O_PATH file descriptor");
      // export mounts a read-only overlay of the layers (no upper directory).
      const out = join(dir, "out");
      const ex = await strata(["export", "-q", "--cache", cache, ref, out]);
      assertEquals(ex.code, 0, ex.stderr);
      assertEquals(await Deno.readTextFile(join(out, "etc/layer")), `layer ${n - 1}\n`);
      const srv = (await Array.fromAsync(Deno.readDir(join(out, "srv")))).map((e) => e.name);
      assertEquals(srv.sort().join(" ") + "\n", expected(n).split("\n")[1] + "\n");
      assertEquals(await Array.fromAsync(Deno.readDir(join(cache, "containers"))), []);
      assertEquals(await mountsBelow(dir), []);
    },
  });
}

Deno.test({
  name: "root: six runs of the 131-layer image at once on one cache, cold then warm",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const cache = longPath(join(dir, "cache"), 210);
    const ref = await layout(join(dir, "layout"), 131);
    for (const label of ["cold", "warm"]) {
      const runs = await Promise.all(
        Array.from(
          { length: 6 },
          () => strata(["run", "-q", "--cache", cache, ref, "--", ...SCRIPT]),
        ),
      );
      runs.forEach((r, i) => assertRan(r, 131, `${label} run ${i}`));
    }
    await assertChainKeyed(cache, 131);
    assertEquals(await Array.fromAsync(Deno.readDir(join(cache, "containers"))), []);
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name: "rootless: 131 and 500 chain-keyed layers under a 210-char cache root, every backend, " +
    "six at once",
  ignore: !isRoot,
  async fn() {
    const { uid, gid } = await ensureTestUser();
    await using tmp = await tempDir();
    const dir = String(tmp);
    const cache = longPath(join(dir, "user"), 210);
    await Deno.mkdir(cache, { recursive: true, mode: 0o755 });
    await Deno.chown(cache, uid, gid);
    const asUser = (args: string[], backend = "") =>
      runAsUser([
        "timeout",
        "-s",
        "KILL",
        "300",
        denoPath,
        "run",
        "-A",
        CLI,
        ...args,
      ], { env: { STRATA_MOUNT_BACKEND: backend } });
    for (const n of [131, 500]) {
      const ref = await layout(join(dir, `layout${n}`), n);
      const c = ["--cache", join(cache, String(n))];
      const pull = await asUser(["pull", "-q", ...c, ref]);
      assertEquals(pull.code, 0, pull.stderr);
      assertEquals(pull.stderr, "", "subordinate ids mapped: no warning");
      await assertChainKeyed(join(cache, String(n)), n);
      for (const backend of n === 131 ? FORCED : ["", "fsopen:path", "mount2"]) {
        const r = await asUser(["run", "-q", ...c, ref, "--", ...SCRIPT], backend);
        assertRan(r, n, `${n} layers, ${backend || "default"}`);
      }
      if (n === 131) {
        const runs = await Promise.all(
          Array.from({ length: 6 }, () => asUser(["run", "-q", ...c, ref, "--", ...SCRIPT])),
        );
        runs.forEach((r, i) => assertRan(r, 131, `rootless run ${i}`));
      }
    }
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name: "library: 131 layers in LayerWorkdir mode under a 210-char root, bundled and run",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const root = longPath(join(dir, "cache"), 210);
    // workdir mode extracts each layer through an overlay of its parents.
    const resolver = await CachingLayerResolver.create(root, { mode: "workdir" });
    const bundler = await CachingBundler.create(root, { resolver });
    const image = testImage(imageOf(131));
    const bundle = await bundler.bundle(image, "long-1", withArgs(...SCRIPT));
    assertEquals(bundle.lower.length, 131);
    assert(bundle.lower.slice(1).every((l) => bytes(l) > 256), bundle.lower[1]);
    const r = await runContainer(bundle, {
      runtime: "runc",
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    });
    const text = new TextDecoder();
    assertEquals(r.status, 0, text.decode(r.stderr));
    assertEquals(text.decode(r.stdout), expected(131));
    assertEquals(await Array.fromAsync(Deno.readDir(join(root, "containers"))), []);
    assertEquals(await mountsBelow(dir), []);
  },
});
