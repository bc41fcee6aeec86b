/**
 * bootstrapBundle and CachingBundler with real mounts (tmpfs + overlay) and
 * real containers (runc): layering, cleanup, tmpfs size, locks and records
 * for prune, crash leftovers, failures, and the rootless path.
 */
import { join } from "@std/path";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { bootstrapBundle, BundleError } from "../bundle/bootstrap.ts";
import {
  BundleExistsError,
  CachingBundler,
  liveBundles,
  reclaimStaleBundles,
  staleBundles,
} from "../bundle/bundler.ts";
import { withArgs, withEnv, withReadonlyRootFS, withUser } from "../bundle/options.ts";
import { runContainer } from "../bundle/run.ts";
import type { Spec } from "../bundle/spec.ts";
import { UnknownUserError } from "../bundle/user.ts";
import { ensureTestUser, isRoot, mountsBelow, repoRoot, tempDir } from "./_helpers.ts";
import {
  addLayer,
  busyboxLayer,
  runSnippetAsUser,
  snippetConfig,
  testImage,
} from "./_bundle_helpers.ts";

const dec = new TextDecoder();
const piped = { stdout: "piped", stderr: "piped", stdin: "null" } as const;

async function exists(p: string) {
  try {
    await Deno.lstat(p);
    return true;
  } catch {
    return false;
  }
}

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e.name);
  } catch {
    // missing: empty
  }
  return out.sort();
}

// One busybox image per test file: its layers are cached once per cache dir.
const base = busyboxLayer();
const app = addLayer({ "srv/app.txt": "from the app layer\n", "etc/motd": "top wins\n" });
const mid = addLayer({ "etc/motd": "middle\n", "srv/mid.txt": "mid\n" });
const image = testImage([base, mid, app], {
  Cmd: ["sh", "-c", "cat /etc/motd /srv/app.txt; id -u; pwd; echo $GREETING"],
  User: "app",
  WorkingDir: "/srv",
  Env: ["GREETING=hello"],
  StopSignal: "SIGQUIT",
});

Deno.test({
  name: "bootstrapBundle: overlay of lowers (last on top) on a sized tmpfs; cleanup leaves nothing",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const l1 = join(dir, "l1");
    const l2 = join(dir, "l2");
    for (const [l, v] of [[l1, "bottom"], [l2, "top"]]) {
      await Deno.mkdir(join(l, "etc"), { recursive: true });
      await Deno.writeTextFile(join(l, "etc/which"), v);
      await Deno.writeTextFile(join(l, `only-${v}`), v);
    }
    const path = join(dir, "bundle");
    const b = await bootstrapBundle(path, [l1, l2], { tmpfsSize: "1m" });
    assertEquals(b.rootfs, join(path, "rootfs"));
    assertEquals(await Deno.readTextFile(join(b.rootfs, "etc/which")), "top");
    assert(await exists(join(b.rootfs, "only-bottom")));
    assertEquals((await mountsBelow(path)).length, 2);
    // Writes land in the tmpfs upper, never in the cached layers.
    await Deno.writeTextFile(join(b.rootfs, "etc/which"), "changed");
    assertEquals(await Deno.readTextFile(join(l2, "etc/which")), "top");
    assertEquals(await Deno.readTextFile(join(path, "upper/etc/which")), "changed");
    // The tmpfs size holds.
    const big = new Uint8Array(2 << 20);
    await assertRejects(() => Deno.writeFile(join(b.rootfs, "big"), big));
    await b.cleanup();
    await b.cleanup(); // safe twice
    assertEquals(await mountsBelow(path), []);
    assert(!(await exists(path)));
    assertEquals(await names(l2), ["etc", "only-top"]);
  },
});

Deno.test({
  name: "bootstrapBundle: no layers gives an empty rootfs; a failure undoes everything",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    await using empty = await bootstrapBundle(join(dir, "empty"), []);
    assertEquals(await names(empty.rootfs), []);
    const path = join(dir, "bad");
    const e = await assertRejects(
      () => bootstrapBundle(path, [join(dir, "no-such-layer")]),
      BundleError,
      "overlay",
    );
    assertStringIncludes(e.message, path);
    assertEquals(await mountsBelow(path), []);
    assert(!(await exists(path)));
    // An existing path is refused without touching it.
    await Deno.mkdir(join(dir, "taken"));
    await assertRejects(() => bootstrapBundle(join(dir, "taken"), []), BundleError);
    assert(await exists(join(dir, "taken")));
  },
});

Deno.test({
  name:
    "CachingBundler: image config first, caller's options after; the container runs; cleanup leaves nothing",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const root = join(String(tmp), "cache");
    const bundler = await CachingBundler.create(root);
    const b = await bundler.bundle(image, "c1");
    assertEquals(b.path, join(root, "containers/c1/bundle"));
    assertEquals(b.lower.length, 3);
    assertEquals(b.stopSignal, "SIGQUIT", "the image's StopSignal, for runContainer's abort");
    const spec = JSON.parse(await Deno.readTextFile(join(b.path, "config.json"))) as Spec;
    assertEquals(spec.root, { path: b.rootfs, readonly: false });
    assertEquals(spec.process!.cwd, "/srv");
    assertEquals([spec.process!.user.uid, spec.process!.user.gid], [1000, 1000]);
    const r = await runContainer(b, piped);
    assertEquals(r.status, 0, dec.decode(r.stderr));
    assertEquals(dec.decode(r.stdout), "top wins\nfrom the app layer\n1000\n/srv\nhello\n");
    assertEquals(await names(join(root, "containers")), []);
    assertEquals(await mountsBelow(root), []);

    // Overrides win; the second bundle reuses the cached layers.
    const b2 = await bundler.bundle(
      image,
      "c2",
      withArgs("sh", "-c", "id -u; id -g; echo $GREETING"),
      withUser("svc:staff"),
      withEnv({ GREETING: "override" }),
    );
    assertEquals(b2.lower, b.lower);
    const r2 = await runContainer(b2, piped);
    assertEquals(dec.decode(r2.stdout), "1001\n50\noverride\n");
    assertEquals(await mountsBelow(root), []);
  },
});

Deno.test({
  name: "CachingBundler: read-only rootfs on the overlay; container writes never reach the cache",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const root = join(String(tmp), "cache");
    const bundler = await CachingBundler.create(root);
    const ro = await bundler.bundle(
      image,
      "ro",
      withArgs("touch", "/srv/new"),
      withReadonlyRootFS(),
    );
    const r = await runContainer(ro, piped);
    assert(r.status !== 0);
    assertStringIncludes(dec.decode(r.stderr), "Read-only file system");
    const rw = await bundler.bundle(
      image,
      "rw",
      withUser("root"),
      withArgs("sh", "-c", "echo mine > /etc/motd; rm /srv/app.txt; cat /etc/motd"),
    );
    const r2 = await runContainer(rw, piped);
    assertEquals([r2.status, dec.decode(r2.stdout)], [0, "mine\n"], dec.decode(r2.stderr));
    const again = await bundler.bundle(
      image,
      "again",
      withArgs("cat", "/etc/motd", "/srv/app.txt"),
    );
    const r3 = await runContainer(again, piped);
    assertEquals(dec.decode(r3.stdout), "top wins\nfrom the app layer\n");
  },
});

Deno.test({
  name: "CachingBundler: a live bundle is locked and recorded for prune; ids do not collide",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const root = join(String(tmp), "cache");
    const bundler = await CachingBundler.create(root);
    const b = await bundler.bundle(image, "live");
    const live = await liveBundles(root);
    assertEquals(live.map((x) => x.id), ["live"]);
    assertEquals(live[0].record!.diffIDs, image.layers.map((l) => l.diffID));
    assertEquals(live[0].record!.pid, Deno.pid);
    assertEquals(await staleBundles(root), []);
    assertEquals(await reclaimStaleBundles(root), []);
    await assertRejects(() => bundler.bundle(image, "live"), BundleExistsError);
    assert(await exists(b.rootfs + "/bin/busybox"), "the live bundle is untouched");
    await assertRejects(() => bundler.bundle(image, "../evil"), BundleError, "invalid bundle id");
    await b.cleanup();
    assertEquals(await liveBundles(root), []);
    assertEquals(await names(join(root, "containers")), []);
  },
});

Deno.test({
  name:
    "CachingBundler: a crashed process's bundle is stale, reclaimed (unmounted), and its id reusable",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const root = join(dir, "cache");
    // Populate the cache here; the child only bundles and exits without cleanup.
    await (await (await CachingBundler.create(root)).bundle(image, "warm")).cleanup();
    const script = join(dir, "crash.ts");
    await Deno.writeTextFile(
      script,
      `
      import { CachingBundler } from "file://${repoRoot}/bundle/bundler.ts";
      import { busyboxLayer, addLayer, testImage } from "file://${repoRoot}/tests/_bundle_helpers.ts";
      const base = busyboxLayer();
      const image = testImage([base, addLayer({ "etc/motd": "middle\\n", "srv/mid.txt": "mid\\n" }), addLayer({ "srv/app.txt": "from the app layer\\n", "etc/motd": "top wins\\n" })], { Cmd: ["true"] });
      const b = await (await CachingBundler.create(${
        JSON.stringify(root)
      })).bundle(image, "crashed");
      console.log(b.rootfs);
      Deno.exit(9); // no cleanup: the mounts stay in this (host) mount namespace
      `,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", `--config=${await snippetConfig(dir)}`, script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 9, dec.decode(out.stderr));
    const crashed = join(root, "containers/crashed");
    assertEquals((await mountsBelow(crashed)).length, 2);
    assertEquals(await liveBundles(root), []);
    const stale = await staleBundles(root);
    assertEquals(stale.map((s) => s.id), ["crashed"]);
    assertEquals(stale[0].record!.diffIDs.length, 3);
    // Reusing the id reclaims it.
    const b = await (await CachingBundler.create(root)).bundle(image, "crashed", withArgs("true"));
    assertEquals((await mountsBelow(crashed)).length, 2);
    await b.cleanup();
    assertEquals(await mountsBelow(root), []);
    // And prune's path: a second crash, then reclaimStaleBundles.
    const out2 = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", `--config=${await snippetConfig(dir)}`, script],
      stdout: "null",
      stderr: "null",
    }).output();
    assertEquals(out2.code, 9);
    assertEquals(await reclaimStaleBundles(root), ["crashed"]);
    assertEquals(await mountsBelow(root), []);
    assertEquals(await names(join(root, "containers")), []);
  },
});

Deno.test({
  name: "CachingBundler: a failure (unknown user) removes everything it made",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const root = join(String(tmp), "cache");
    const bundler = await CachingBundler.create(root);
    await assertRejects(
      () => bundler.bundle(image, "bad", withUser("nobody")),
      UnknownUserError,
      "nobody",
    );
    const noCmd = testImage([base], {});
    await assertRejects(() => bundler.bundle(noCmd, "nocmd"), Error, "neither Entrypoint nor Cmd");
    assertEquals(await names(join(root, "containers")), []);
    assertEquals(await mountsBelow(root), []);
    // The layers stay cached for the next attempt.
    assert((await names(join(root, "layers"))).length >= 1);
  },
});

Deno.test({
  name: "CachingBundler: abort mid-run unmounts and removes the bundle",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const root = join(String(tmp), "cache");
    const bundler = await CachingBundler.create(root);
    const b = await bundler.bundle(image, "abort", withArgs("sleep", "30"));
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    await assertRejects(() => runContainer(b, { ...piped, signal: ac.signal, killTimeout: 200 }));
    assertEquals(await mountsBelow(root), []);
    assertEquals(await names(join(root, "containers")), []);
  },
});

Deno.test({
  name: "CachingBundler rootless: an unprivileged user with subordinate ids runs the image's user",
  ignore: !isRoot,
  async fn() {
    await ensureTestUser();
    await using tmp = await tempDir();
    const dir = String(tmp);
    const code = `
      import { CachingBundler, liveBundles } from "STRATA/bundle/bundler.ts";
      import { runContainer } from "STRATA/bundle/run.ts";
      import { withMemoryLimit } from "STRATA/bundle/options.ts";
      import { busyboxLayer, addLayer, testImage } from "STRATA/tests/_bundle_helpers.ts";
      const image = testImage([busyboxLayer(), addLayer({ "srv/app.txt": "app\\n" })], {
        Cmd: ["sh", "-c", "id -u; id -g; cat /srv/app.txt; touch /tmp/x && echo wrote; touch /srv/x 2>/dev/null || echo denied"], User: "app:staff", WorkingDir: "/srv",
      });
      const root = (await Deno.makeTempDir()) + "/cache";
      const warnings = [];
      const bundler = await CachingBundler.create(root, { onWarning: (m) => warnings.push(m) });
      const b = await bundler.bundle(image, "rootless", withMemoryLimit("64Mi"));
      const live = (await liveBundles(root)).map((x) => x.id);
      const r = await runContainer(b, { stdout: "piped", stderr: "piped", stdin: "null" });
      const left = [];
      for await (const e of Deno.readDir(root + "/containers")) left.push(e.name);
      console.log(JSON.stringify({ status: r.status, out: new TextDecoder().decode(r.stdout), err: new TextDecoder().decode(r.stderr), live, left, warnings }));
      await Deno.remove(root, { recursive: true });
    `;
    const r = await runSnippetAsUser(code, { dir, mapAuto: true });
    assertEquals(r.code, 0, r.stderr);
    const o = JSON.parse(r.stdout);
    assertEquals(o.status, 0, o.err);
    assertEquals(o.out, "1000\n50\napp\nwrote\ndenied\n");
    assertEquals(o.live, ["rootless"]);
    assertEquals(o.left, []);
    assertStringIncludes(o.warnings.join(), "memory");
  },
});

Deno.test("CachingBundler: an image of more than 500 layers is refused before any fetch", async () => {
  await using tmp = await tempDir();
  const root = join(String(tmp), "cache");
  const bundler = await CachingBundler.create(root);
  let fetched = 0;
  const layer = {
    ...image.layers[0],
    compressed: () => {
      fetched++;
      return image.layers[0].compressed();
    },
    uncompressed: () => {
      fetched++;
      return image.layers[0].uncompressed();
    },
  };
  const tall = { ...image, name: "tall", layers: Array.from({ length: 501 }, () => layer) };
  await assertRejects(() => bundler.bundle(tall, "tall"), BundleError, "at most 500");
  assertEquals(fetched, 0);
  assertEquals(await names(join(root, "containers")), []);
});
