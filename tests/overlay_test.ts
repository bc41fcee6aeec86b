/**
 * The overlay store's parts that do not need a layer tarball: LayerWorkdir
 * (really mounted), supported() true and false, the cache layout, the
 * whole-mapping rule older layers are read by, and flock'd temporary
 * directories.
 */
import { join } from "@std/path";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { OverlayMount } from "../overlay/mount.ts";
import {
  defaultNewOverlayMount,
  LayerWorkdir,
  type NewOverlayMountFn,
  withNewOverlayMountFn,
} from "../overlay/workdir.ts";
import { supported, supportedReason } from "../overlay/supported.ts";
import {
  currentIdMap,
  defaultCacheRoot,
  type IdMap,
  idMapCompatible,
  openCache,
} from "../overlay/cache.ts";
import { FileLock, reclaimTemp, TempWork } from "../overlay/lock.ts";
import { namespaceInfo } from "../overlay/userns.ts";
import { isMountpoint, mountsBelow } from "../sys/mount.ts";
import { isRoot, run, tempDir } from "./_helpers.ts";

async function xattr(path: string, name: string): Promise<string | null> {
  const r = await run("getfattr", ["--only-values", "-h", "-n", name, path]);
  return r.code === 0 ? r.stdout : null;
}

Deno.test({
  name: "LayerWorkdir: the kernel writes whiteouts and opaque dirs into the upper",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const [a, b] = [join(dir, "a"), join(dir, "b")];
    await Deno.mkdir(join(a, "etc"), { recursive: true });
    await Deno.mkdir(join(a, "opq"), { recursive: true });
    await Deno.writeTextFile(join(a, "etc", "conf"), "from a");
    await Deno.writeTextFile(join(a, "etc", "gone"), "from a");
    await Deno.writeTextFile(join(a, "opq", "old"), "from a");
    await Deno.mkdir(join(b, "etc"), { recursive: true });
    await Deno.writeTextFile(join(b, "etc", "conf"), "from b");
    const calls: (readonly string[])[] = [];
    const spy: NewOverlayMountFn = (mp, lower, upper, work) => {
      calls.push(lower);
      return defaultNewOverlayMount(mp, lower, upper, work);
    };
    const wd = await LayerWorkdir.create(dir, "sha256:abc", [a, b], withNewOverlayMountFn(spy));
    try {
      assertEquals(calls, [[a, b]]);
      const view = wd.applyPath();
      assert(isMountpoint(view));
      assertEquals(await Deno.readTextFile(join(view, "etc", "conf")), "from b", "b is on top");
      await Deno.remove(join(view, "etc", "gone"));
      await Deno.remove(join(view, "opq"), { recursive: true });
      await Deno.mkdir(join(view, "opq"));
      await Deno.writeTextFile(join(view, "opq", "new"), "new");
      await wd.seal();
      assert(!(isMountpoint(view)));
      const out = wd.resultPath();
      const wh = await Deno.lstat(join(out, "etc", "gone"));
      assert(wh.isCharDevice && wh.rdev === 0, "a char 0/0 whiteout");
      assertEquals(await xattr(join(out, "opq"), "user.overlay.opaque"), "y");
      assertEquals(await xattr(join(out, "opq"), "trusted.overlay.opaque"), null, "userxattr");
      assertEquals(await Deno.readTextFile(join(out, "opq", "new")), "new");
    } finally {
      await wd.cleanup();
      await wd.cleanup(); // idempotent
    }
    assertEquals(await mountsBelow(dir), []);
    assertEquals((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort(), ["a", "b"]);
  },
});

Deno.test("LayerWorkdir without parents applies straight to the upper, nothing mounted", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  let called = false;
  const wd = await LayerWorkdir.create(dir, "sha256:abc", [], {
    newOverlayMount: (mp, lower, upper, work) => {
      called = true;
      return new OverlayMount({ mountpoint: mp, lower, upper, work });
    },
  });
  assertEquals(wd.applyPath(), wd.resultPath());
  assert(!called);
  await Deno.writeTextFile(join(wd.applyPath(), "x"), "1");
  await wd.cleanup();
  assertEquals(await Array.fromAsync(Deno.readDir(dir)), []);
});

Deno.test({
  name: "LayerWorkdir: a failed mount leaves no directory behind",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    await assertRejects(() => LayerWorkdir.create(dir, "sha256:abc", [join(dir, "missing")]));
    assertEquals(await Array.fromAsync(Deno.readDir(dir)), []);
  },
});

Deno.test({
  name: "supported: true in a plain directory, with the mode and backend",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const root = join(String(tmp), "cache");
    assert(await supported(root));
    const r = await supportedReason(root);
    assertEquals([r.supported, r.ok, r.mode, r.backend.name], [true, true, "root", "fsopen"]);
    assertStringIncludes(r.reason, "userxattr");
    assertEquals(await Array.fromAsync(Deno.readDir(root)), [], "the probe cleaned up");
    assertEquals(await mountsBelow(String(tmp)), []);
  },
});

Deno.test({
  name: "supported: false on an overlayfs upper, and why",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    for (const d of ["l", "u", "w", "m"]) await Deno.mkdir(join(dir, d));
    const m = new OverlayMount({
      mountpoint: join(dir, "m"),
      lower: [join(dir, "l")],
      upper: join(dir, "u"),
      work: join(dir, "w"),
    });
    await m.mount();
    try {
      const root = join(dir, "m", "cache");
      assertEquals(await supported(root), false);
      const r = await supportedReason(root);
      assertEquals([r.supported, r.fstype], [false, "overlay"]);
      assertStringIncludes(r.reason, "is on an overlayfs");
      assertStringIncludes(r.reason, "not supported as upperdir"); // the kernel's own words
    } finally {
      await m.unmount();
    }
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test("supported: never throws, even where nothing can be created", async () => {
  assertEquals(await supported("/proc/self/strata-cache"), false);
  const r = await supportedReason("/proc/self/strata-cache");
  assertStringIncludes(r.reason, "cannot create a directory");
});

Deno.test("cache: layout 0700, open to any mapping; an older strata's idmap.json left unread", async () => {
  await using tmp = await tempDir();
  const root = join(String(tmp), "cache");
  const { idmap } = await openCache(root);
  assertEquals(idmap, currentIdMap());
  for (const d of ["", "layers", "tmp", "locks", "images", "containers"]) {
    assertEquals((await Deno.stat(join(root, d))).mode! & 0o777, 0o700, d);
  }
  // Which layers a mapping may read is decided per layer (overlay/idmap.ts):
  // the cache keeps no mapping of its own.
  assertEquals(Array.from(Deno.readDirSync(root)).map((e) => e.name).sort(), [
    "containers",
    "images",
    "layers",
    "locks",
    "tmp",
  ]);
  // An older strata's whole-cache mapping, even one this process does not
  // cover, and even damaged, is no longer a reason to refuse the cache.
  const other: IdMap = {
    uid: [[0, 1001, 1], [1, 100000, 65536]],
    gid: [[0, 1001, 1], [1, 100000, 65536]],
  };
  for (const text of [JSON.stringify(other), "[1,2]"]) {
    await Deno.writeTextFile(join(root, "idmap.json"), text);
    assertEquals((await openCache(root)).idmap, idmap);
    assertEquals(await Deno.readTextFile(join(root, "idmap.json")), text, "left as it was");
  }
});

Deno.test("cache: idMapCompatible accepts wider mappings, refuses narrower or shifted ones", () => {
  const identity: IdMap = { uid: [[0, 0, 4294967295]], gid: [[0, 0, 4294967295]] };
  const rootOnly: IdMap = { uid: [[0, 1001, 1]], gid: [[0, 1001, 1]] };
  const sub: IdMap = {
    uid: [[0, 1001, 1], [1, 100000, 65536]],
    gid: [[0, 1001, 1], [1, 100000, 65536]],
  };
  const split: IdMap = {
    uid: [[0, 1001, 1], [1, 100000, 1000], [1001, 101000, 64536]],
    gid: [[0, 1001, 1], [1, 100000, 65536]],
  };
  const shifted: IdMap = { uid: [[0, 1001, 1], [1, 200000, 65536]], gid: sub.gid };
  assert(idMapCompatible(identity, identity));
  assert(idMapCompatible(rootOnly, sub));
  assert(!idMapCompatible(sub, rootOnly));
  assert(idMapCompatible(sub, split), "the same function over two ranges");
  assert(!idMapCompatible(sub, shifted));
  assert(!idMapCompatible(identity, sub));
});

Deno.test("cache: defaultCacheRoot follows STRATA_CACHE, then root, then XDG_CACHE_HOME", () => {
  const saved = ["STRATA_CACHE", "XDG_CACHE_HOME"].map((k) => [k, Deno.env.get(k)] as const);
  try {
    Deno.env.set("STRATA_CACHE", "/x/y");
    assertEquals(defaultCacheRoot(), "/x/y");
    Deno.env.delete("STRATA_CACHE");
    Deno.env.set("XDG_CACHE_HOME", "/xdg");
    assertEquals(defaultCacheRoot(), isRoot ? "/var/lib/strata" : "/xdg/strata");
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
});

Deno.test("locks: reclaimTemp removes only the temp dirs of dead processes", async () => {
  await using tmp = await tempDir();
  const root = join(String(tmp), "cache");
  await openCache(root);
  // Ours, alive: left alone.
  const mine = await TempWork.create(root);
  await Deno.writeTextFile(join(mine.path, "partial"), "x");
  // Another live process holds one.
  await Deno.mkdir(join(root, "tmp", "live"));
  // One process holds it (flock(1) with a command would leave the lock to its child).
  const holder = new Deno.Command("sh", {
    args: ["-c", 'exec 9>>"$0" && flock 9 && exec sleep 30', join(root, "locks", "tmp-live.lock")],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0; i < 100; i++) {
      const probe = FileLock.tryAcquire(join(root, "locks", "tmp-live.lock"));
      if (!probe) break;
      probe.release();
      await new Promise((r) => setTimeout(r, 20));
    }
    // A dead one: a directory whose lock nobody holds.
    await Deno.mkdir(join(root, "tmp", "dead", "deep"), { recursive: true });
    await Deno.writeTextFile(join(root, "locks", "tmp-dead.lock"), "");
    const removed = await reclaimTemp(root);
    assertEquals(removed, [join(root, "tmp", "dead")]);
    const left = (await Array.fromAsync(Deno.readDir(join(root, "tmp")))).map((e) => e.name);
    assertEquals(left.sort(), [mine.path.split("/").pop()!, "live"].sort());
  } finally {
    holder.kill("SIGKILL");
    await holder.status;
  }
  // The holder died: now its directory goes too.
  assertEquals(await reclaimTemp(root), [join(root, "tmp", "live")]);
  await mine.remove();
  assertEquals(await Array.fromAsync(Deno.readDir(join(root, "tmp"))), []);
  assertEquals(await Array.fromAsync(Deno.readDir(join(root, "locks"))), []);
});

Deno.test("locks: FileLock excludes within a process and across processes", async () => {
  await using tmp = await tempDir();
  const path = join(String(tmp), "x.lock");
  const a = await FileLock.acquire(path);
  assertEquals(FileLock.tryAcquire(path), null);
  const r = await run("flock", ["-n", path, "true"]);
  assertEquals(r.code, 1, "another process cannot take it");
  let got = false;
  const waiting = FileLock.acquire(path).then((l) => {
    got = true;
    return l;
  });
  await new Promise((r) => setTimeout(r, 50));
  assert(!got);
  a.release();
  (await waiting).release();
  assert(got);
  assertEquals((await run("flock", ["-n", path, "true"])).code, 0);
});

Deno.test("namespaceInfo reports the mode this process runs in", async () => {
  const info = await namespaceInfo();
  assertEquals(info.mode, isRoot ? "root" : "unprivileged");
  assertEquals(info.collapsed, false);
  assert(info.summary.length > 0);
});
