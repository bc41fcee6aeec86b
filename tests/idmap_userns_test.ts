/**
 * One cache, read from real user namespaces: `strata run` in namespaces
 * made with explicit maps (root writes them, or newuidmap for the
 * unprivileged test user), over caches written under other maps. Where the
 * ids a layer's files use read back the same, the same tree (owners, modes,
 * setuid and setgid bits, whiteouts) with nothing extracted; where they do
 * not, the layer is refused by name and nothing in the cache changes, or,
 * with --reextract-unmapped, it is extracted again into a copy of the
 * namespace's own, the shared copy untouched. No mount is left behind.
 */
import { join } from "@std/path";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { buildOciLayout, type BuiltLayout } from "../cli/demo_image.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { idMapKey } from "../overlay/idmap.ts";
import type { IdMap } from "../overlay/cache.ts";
import { mountsBelow } from "../sys/mount.ts";
import { APPLETS, busyboxBytes, GROUP, PASSWD } from "./_bundle_helpers.ts";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  repoRoot,
  run,
  runAsUser,
  runInUserns,
  type RunResult,
  tempDir,
  testUserSubids,
  type UsernsMaps,
} from "./_helpers.ts";

const CLI = join(repoRoot, "cli.ts");
const T = 1_700_000_000;

// ---------------------------------------------------------------------------
// The image: a busybox base (root's), an app layer with owners 1000 and
// setuid/setgid files, a whiteout, an opaque directory and implied parent
// directories, and a layer holding an owner above 65535.

function baseLayer(): Uint8Array {
  const t = new TarWriter({ defaultMtime: T });
  t.directory("./", { mode: 0o755 });
  for (const d of ["bin/", "etc/", "home/", "proc/", "sys/", "dev/", "usr/", "usr/bin/", "keep/"]) {
    t.directory(d, { mode: 0o755 });
  }
  t.directory("tmp/", { mode: 0o1777 });
  t.directory("var/", { mode: 0o755 });
  t.directory("var/mail/", { mode: 0o2775 });
  t.file("bin/busybox", busyboxBytes(), { mode: 0o755 });
  for (const a of APPLETS) t.symlink(`bin/${a}`, "busybox");
  t.file("etc/passwd", PASSWD, { mode: 0o644 });
  t.file("etc/group", GROUP, { mode: 0o644 });
  t.file("etc/motd", "base\n", { mode: 0o644 });
  t.file("usr/bin/su", "su\n", { mode: 0o4755 });
  t.file("keep/k0", "k0\n", { mode: 0o644 });
  return t.bytes();
}

function appLayer(): Uint8Array {
  const t = new TarWriter({ defaultMtime: T + 1 });
  t.directory("home/app/", { mode: 0o750, uid: 1000, gid: 1000 });
  t.file("home/app/suid", "suid\n", { mode: 0o4755, uid: 1000, gid: 1000 });
  t.file("home/app/sgid", "sgid\n", { mode: 0o2755, uid: 0, gid: 1000 });
  t.file("etc/.wh.motd", "");
  t.directory("keep/", { mode: 0o755 });
  t.file("keep/.wh..wh..opq", "");
  t.file("keep/k1", "k1\n", { mode: 0o600, uid: 1000, gid: 1000 });
  // usr/local/ and usr/local/bin/ are implied: the layer's tree depends on its parents.
  t.file("usr/local/bin/tool", "tool\n", { mode: 0o4711, uid: 1000, gid: 0 });
  return t.bytes();
}

function highLayer(): Uint8Array {
  const t = new TarWriter({ defaultMtime: T + 2 });
  t.directory("opt/", { mode: 0o755 });
  t.file("opt/high", "high\n", { mode: 0o640, uid: 70000, gid: 70001 });
  return t.bytes();
}

/** Every path the image has or had, as the container lists them. */
const PATHS = [
  "/",
  "/bin/busybox",
  "/etc/passwd",
  "/etc/motd",
  "/tmp",
  "/var/mail",
  "/usr/bin/su",
  "/home/app",
  "/home/app/suid",
  "/home/app/sgid",
  "/keep",
  "/keep/k0",
  "/keep/k1",
  "/usr/local",
  "/usr/local/bin",
  "/usr/local/bin/tool",
  "/opt/high",
];

/** What the container prints of PATHS: one `path type uid gid mode` line each, or `path absent`. */
const LIST = [
  "sh",
  "-c",
  `for p in ${
    PATHS.join(" ")
  }; do stat -c '%n %F %u %g %a' "$p" 2>/dev/null || echo "$p absent"; done`,
];

interface Images {
  /** Base and app layers. */
  a: BuiltLayout;
  /** Base, app and the layer with owner 70000. */
  b: BuiltLayout;
}

async function buildImages(dir: string): Promise<Images> {
  const [base, app, high] = [baseLayer(), appLayer(), highLayer()];
  return {
    a: await buildOciLayout(join(dir, "image-a"), { layers: [{ tar: base }, { tar: app }] }),
    b: await buildOciLayout(join(dir, "image-b"), {
      layers: [{ tar: base }, { tar: app }, { tar: high }],
    }),
  };
}

// ---------------------------------------------------------------------------
// Running strata as root, in root-made namespaces, and as the test user.

type Runner = (args: string[]) => Promise<RunResult>;

const strataArgv = (args: string[]) => [denoPath, "run", "-A", CLI, ...args];

/** strata as real root. */
const asRoot: Runner = (args) => run("timeout", ["-s", "KILL", "120", ...strataArgv(args)]);

/** strata as uid 0 of a user namespace with `maps` (written by root). */
const inUserns = (maps: UsernsMaps): Runner => (args) => runInUserns(maps, strataArgv(args));

const maps = (m: IdMap): UsernsMaps => ({
  uid: m.uid.map((r) => r.join(" ")).join("\n") + "\n",
  gid: m.gid.map((r) => r.join(" ")).join("\n") + "\n",
});

const FULL: IdMap = { uid: [[0, 0, 4294967295]], gid: [[0, 0, 4294967295]] };
const BELOW_64K: IdMap = { uid: [[0, 0, 65536]], gid: [[0, 0, 65536]] };
const ROOT_ONLY: IdMap = { uid: [[0, 0, 1]], gid: [[0, 0, 1]] };
const SHIFTED: IdMap = { uid: [[0, 100000, 65536]], gid: [[0, 100000, 65536]] };

/** Runs LIST in `image` from `cache`; returns the listing and stderr. */
async function tree(
  runner: Runner,
  cache: string,
  image: BuiltLayout,
  extra: string[] = [],
): Promise<{ listing: string; stderr: string; extracted: number }> {
  const r = await runner(["run", "--cache", cache, ...extra, image.ref, ...LIST]);
  assertEquals(r.code, 0, `strata run exited ${r.code}:\n${r.stderr}`);
  const m = /(\d+) of \d+ layers extracted/.exec(r.stderr);
  return { listing: r.stdout, stderr: r.stderr, extracted: m ? Number(m[1]) : 0 };
}

/** Asserts one `strata: ` error line (progress and warnings aside) and returns it. */
function refusal(r: RunResult, includes: string[]): string {
  assertEquals(r.code, 125, r.stderr);
  const lines = r.stderr.split("\n").filter((l) =>
    l.startsWith("strata: ") && !l.startsWith("strata: warning")
  );
  assertEquals(lines.length, 1, r.stderr);
  assert(!/^\s+at /m.test(r.stderr), r.stderr);
  for (const s of [...includes, "--reextract-unmapped"]) {
    assertStringIncludes(lines[0], s);
  }
  return lines[0];
}

/** Every layer directory of `cache` with its layer.json, and what tmp/ holds. */
function cacheState(cache: string): { layers: Record<string, string>; tmp: string[] } {
  const layers: Record<string, string> = {};
  for (const e of Deno.readDirSync(join(cache, "layers"))) {
    layers[e.name] = Deno.readTextFileSync(join(cache, "layers", e.name, "layer.json"));
  }
  return { layers, tmp: [...Deno.readDirSync(join(cache, "tmp"))].map((e) => e.name) };
}

/** The layer dirs `after` has that `before` had not. */
function added(
  before: { layers: Record<string, string> },
  after: { layers: Record<string, string> },
) {
  for (const [k, v] of Object.entries(before.layers)) {
    assertEquals(after.layers[k], v, `${k} unchanged`);
  }
  return Object.keys(after.layers).filter((k) => !(k in before.layers)).sort();
}

const key = (diffID: string) => diffID.replace(":", "-");

/** The listing line of `path`. */
const line = (listing: string, path: string) =>
  listing.split("\n").find((l) => l.startsWith(`${path} `));

// ---------------------------------------------------------------------------

Deno.test({
  name:
    "idmap: root's cache from a namespace mapping 0-65535 to itself: the same tree, nothing extracted",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const cache = join(dir, "cache");
    const rootA = await tree(asRoot, cache, images.a);
    assertEquals(rootA.extracted, 2);
    // The tree as the image says: owners, modes with setuid/setgid, whiteout, opaque dir.
    assertEquals(
      line(rootA.listing, "/home/app/suid"),
      "/home/app/suid regular file 1000 1000 4755",
    );
    assertEquals(line(rootA.listing, "/home/app/sgid"), "/home/app/sgid regular file 0 1000 2755");
    assertEquals(line(rootA.listing, "/usr/bin/su"), "/usr/bin/su regular file 0 0 4755");
    assertEquals(line(rootA.listing, "/var/mail"), "/var/mail directory 0 0 2775");
    assertEquals(
      line(rootA.listing, "/usr/local/bin/tool"),
      "/usr/local/bin/tool regular file 1000 0 4711",
    );
    assertEquals(line(rootA.listing, "/etc/motd"), "/etc/motd absent");
    assertEquals(line(rootA.listing, "/keep/k0"), "/keep/k0 absent");
    assertEquals(line(rootA.listing, "/keep/k1"), "/keep/k1 regular file 1000 1000 600");
    const before = cacheState(cache);
    // The full-range map reads it as before.
    assertEquals((await tree(asRoot, cache, images.a)).listing, rootA.listing);
    // The case: a user namespace mapping 0-65535 to themselves.
    const inside = await tree(inUserns(maps(BELOW_64K)), cache, images.a);
    assertEquals(inside.extracted, 0, inside.stderr);
    assertEquals(inside.listing, rootA.listing);
    assertEquals(cacheState(cache), before, "no layer added or changed, nothing left in tmp/");
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name:
    "idmap: an owner above 65535 is refused by name under 0-65535, nothing changes; --reextract-unmapped gives a copy of its own",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const cache = join(dir, "cache");
    const ns = inUserns(maps(BELOW_64K));
    const rootB = await tree(asRoot, cache, images.b);
    assertEquals(line(rootB.listing, "/opt/high"), "/opt/high regular file 70000 70001 640");
    const high = images.b.layers[2].diffID;
    const before = cacheState(cache);
    // Refused: the layer, the id, the host id and this mapping named; nothing extracted.
    const r = await ns(["run", "--cache", cache, images.b.ref, ...LIST]);
    const msg = refusal(r, [high, "uid 70000", "host uid 70000", "uid map [0 0 65536]"]);
    assertStringIncludes(msg, join(cache, "layers", key(high)));
    assertEquals(cacheState(cache), before, "nothing changed");
    // Asked for: that layer alone is extracted again, into its own key.
    const own = await tree(ns, cache, images.b, ["--reextract-unmapped"]);
    assertEquals(own.extracted, 1, own.stderr);
    const after = cacheState(cache);
    assertEquals(added(before, after), [`${key(high)}~${idMapKey(BELOW_64K)}`]);
    // This mapping cannot set owner 70000 (EINVAL): the copy has the
    // extracting user's ids, as a cache this namespace filled itself would.
    assertStringIncludes(own.stderr, "cannot set owners");
    const fresh = await tree(ns, join(dir, "fresh"), images.b);
    assertEquals(own.listing, fresh.listing);
    assertEquals(line(own.listing, "/opt/high"), "/opt/high regular file 0 0 640");
    const rec = JSON.parse(after.layers[`${key(high)}~${idMapKey(BELOW_64K)}`]);
    assertEquals([rec.ownersLost, rec.idmapKey, rec.idmap], [true, idMapKey(BELOW_64K), BELOW_64K]);
    // Both are used from now on, each by its own mapping, nothing extracted.
    const again = await tree(ns, cache, images.b);
    assertEquals([again.extracted, again.listing], [0, own.listing]);
    const rootAgain = await tree(asRoot, cache, images.b);
    assertEquals([rootAgain.extracted, rootAgain.listing], [0, rootB.listing]);
    // ls --json shows each layer's ids, and which copy this mapping uses.
    const ls = (r: RunResult) =>
      JSON.parse(r.stdout).images.find((i: { name: string }) => i.name === images.b.ref).layers;
    const rootLs = ls(await asRoot(["ls", "--json", "--cache", cache]));
    assertEquals(rootLs[2].dir, key(high));
    assertEquals(rootLs[2].ids, { uid: [[0, 1], [70000, 1]], gid: [[0, 1], [70001, 1]] });
    assertEquals(rootLs[2].idmap, FULL);
    assertEquals(rootLs[1].ids.uid, [[0, 1], [1000, 1]]);
    const nsLs = ls(await ns(["ls", "--json", "--cache", cache]));
    assertEquals(nsLs[2].dir, `${key(high)}~${idMapKey(BELOW_64K)}`);
    assertEquals(nsLs[2].ownersLost, true);
    assertEquals(nsLs[0].dir, key(images.b.layers[0].diffID), "the shared base");
    // verify: each mapping checks what it reads as extracted, skips the other's copy.
    for (const [runner, skipped] of [[asRoot, 1], [ns, 1]] as const) {
      const v = await runner(["verify", "--cache", cache]);
      assertEquals(v.code, 0, v.stderr);
      assertEquals(v.stdout, "");
      assertStringIncludes(v.stderr, `${skipped} written for other uid/gid mappings not checked`);
    }
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name:
    "idmap: only root mapped: the app layer refused by name, the base shared; its own collapsed copy on request",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const cache = join(dir, "cache");
    const ns = inUserns(maps(ROOT_ONLY));
    const rootA = await tree(asRoot, cache, images.a);
    const before = cacheState(cache);
    const app = images.a.layers[1].diffID;
    refusal(await ns(["run", "--cache", cache, images.a.ref, ...LIST]), [
      app,
      "uid 1000",
      "uid map [0 0 1]",
    ]);
    assertEquals(cacheState(cache), before);
    const own = await tree(ns, cache, images.a, ["--reextract-unmapped"]);
    assertEquals(own.extracted, 1, "the base layer (root's files only) is shared");
    const newDirs = added(before, cacheState(cache));
    assertEquals(newDirs.length, 1);
    assertMatch(newDirs[0], new RegExp(`^${key(app)}@[0-9a-f]{64}~${idMapKey(ROOT_ONLY)}$`));
    // Owners collapse to root and setuid bits naming others are dropped, as
    // a cache this namespace filled itself has them.
    assertEquals(own.listing, (await tree(ns, join(dir, "fresh"), images.a)).listing);
    assertEquals(line(own.listing, "/home/app/suid"), "/home/app/suid regular file 0 0 755");
    assertEquals(line(own.listing, "/usr/bin/su"), "/usr/bin/su regular file 0 0 4755");
    assertEquals((await tree(asRoot, cache, images.a)).listing, rootA.listing, "root's unchanged");
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name:
    "idmap: a shifted namespace's (0 -> 100000) cache: root refuses its layers by name, reads its own copies on request",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const ns = inUserns(maps(SHIFTED));
    const home = join(dir, "shifted");
    await Deno.mkdir(home);
    await Deno.chown(home, 100000, 100000); // the namespace's root
    const cache = join(home, "cache");
    const nsA = await tree(ns, cache, images.a);
    assertEquals(nsA.extracted, 2);
    // Inside, the ids are the image's: the same tree as root's own cache gives.
    const rootA = await tree(asRoot, join(dir, "rootcache"), images.a);
    assertEquals(nsA.listing, rootA.listing);
    // On the host its files are 100000 up.
    const base = images.a.layers[0].diffID;
    assertEquals(
      (await Deno.stat(join(cache, "layers", key(base), "fs", "usr/bin/su"))).uid,
      100000,
    );
    const before = cacheState(cache);
    refusal(await asRoot(["run", "--cache", cache, images.a.ref, ...LIST]), [
      base,
      "uid 0 (host uid 100000)",
      "shows as uid 100000",
      "uid map [0 100000 65536]",
    ]);
    assertEquals(cacheState(cache), before);
    const own = await tree(asRoot, cache, images.a, ["--reextract-unmapped"]);
    assertEquals(own.extracted, 2);
    assertEquals(own.listing, rootA.listing);
    assertEquals(added(before, cacheState(cache)).map((n) => n.split("~")[1]), [
      idMapKey(FULL),
      idMapKey(FULL),
    ]);
    const nsAgain = await tree(ns, cache, images.a);
    assertEquals([nsAgain.extracted, nsAgain.listing], [0, nsA.listing]);
    assertEquals(await mountsBelow(dir), []);
  },
});

// ---------------------------------------------------------------------------
// The unprivileged test user, with its subordinate ids (newuidmap).

/** strata as the test user; it re-executes itself under unshare --map-auto (subordinate ids). */
const asUser: Runner = (args) => runAsUser(strataArgv(args));

/** strata as the test user in a namespace mapping only its own uid, to root. */
const asUserRootOnly: Runner = (args) =>
  runAsUser([
    "unshare",
    "--user",
    "--map-root-user",
    "--mount",
    "--propagation",
    "private",
    "--",
    ...strataArgv(args),
  ]);

/** strata as the test user in a namespace mapping 0-65535 to its subordinate ids, as uid 0. */
const asUserShifted = (start: number, count: number): Runner => (args) =>
  runAsUser([
    "unshare",
    `--map-users=${start},0,${count}`,
    `--map-groups=${start},0,${count}`,
    "--setuid",
    "0",
    "--setgid",
    "0",
    "--mount",
    "--propagation",
    "private",
    "--",
    ...strataArgv(args),
  ]);

/** A directory the host id `uid` owns, inside `parent`. */
async function ownedDir(parent: string, name: string, uid: number, gid: number): Promise<string> {
  const d = join(parent, name);
  await Deno.mkdir(d);
  await Deno.chown(d, uid, gid);
  return d;
}

Deno.test({
  name:
    "idmap: a rootless user's cache and the same user with only root mapped never mix, in either order",
  ignore: !isRoot,
  async fn() {
    const { uid, gid } = await ensureTestUser();
    const { start } = await testUserSubids();
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const rootA = await tree(asRoot, join(dir, "rootcache"), images.a);
    const app = images.a.layers[1].diffID;
    const rootOnlyMap: IdMap = { uid: [[0, uid, 1]], gid: [[0, gid, 1]] };
    // Subordinate ids first: the image's owners, as root's cache has them.
    const cache = join(await ownedDir(dir, "home", uid, gid), "cache");
    const sub = await tree(asUser, cache, images.a);
    assertEquals(sub.listing, rootA.listing);
    assertEquals((await Deno.stat(join(cache, "layers", key(images.a.layers[0].diffID)))).uid, uid);
    const before = cacheState(cache);
    // Only root mapped: uid 1000 is host start+999, which it does not map.
    refusal(await asUserRootOnly(["run", "--cache", cache, images.a.ref, ...LIST]), [
      app,
      "uid 1000",
      `host uid ${start + 999}`,
      `uid map [0 ${uid} 1]`,
    ]);
    assertEquals(cacheState(cache), before);
    const collapsed = await tree(asUserRootOnly, cache, images.a, ["--reextract-unmapped"]);
    assertEquals(collapsed.extracted, 1, "the base (root's files) is shared");
    assertEquals(line(collapsed.listing, "/home/app/suid"), "/home/app/suid regular file 0 0 755");
    assertEquals(added(before, cacheState(cache)).map((n) => n.split("~")[1]), [
      idMapKey(rootOnlyMap),
    ]);
    assertEquals((await tree(asUser, cache, images.a)).listing, sub.listing, "unchanged for it");

    // The other order: only root mapped first. Its app layer (owners lost)
    // takes a key of its own; the rootless user then extracts the shared one.
    const cache2 = join(dir, "home", "cache2");
    const first = await tree(asUserRootOnly, cache2, images.a);
    assertEquals(first.listing, collapsed.listing);
    const names = Object.keys(cacheState(cache2).layers).sort();
    assertEquals(names.length, 2);
    assertEquals(names[0], key(images.a.layers[0].diffID), "the base is shared");
    assertMatch(names[1], new RegExp(`^${key(app)}@[0-9a-f]{64}~${idMapKey(rootOnlyMap)}$`));
    const second = await tree(asUser, cache2, images.a);
    assertEquals([second.extracted, second.listing], [1, rootA.listing]);
    const third = await tree(asUserRootOnly, cache2, images.a);
    assertEquals([third.extracted, third.listing], [0, collapsed.listing]);
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name:
    "idmap: the test user's shifted namespace (0 -> its subordinate ids) and its rootless namespace: refused by name, own copy on request",
  ignore: !isRoot,
  async fn() {
    const { uid } = await ensureTestUser();
    const { start, count } = await testUserSubids();
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const rootA = await tree(asRoot, join(dir, "rootcache"), images.a);
    const shifted = asUserShifted(start, Math.min(count, 65536));
    const cache = join(await ownedDir(dir, "sub", start, start), "cache");
    const nsA = await tree(shifted, cache, images.a);
    assertEquals(nsA.listing, rootA.listing);
    const before = cacheState(cache);
    // The rootless namespace maps host `start` (the shifted one's root) as uid 1.
    refusal(await asUser(["run", "--cache", cache, images.a.ref, ...LIST]), [
      images.a.layers[0].diffID,
      `uid 0 (host uid ${start})`,
      "shows as uid 1",
      `uid map [0 ${uid} 1, 1 ${start} ${count - 1}]`,
    ]);
    assertEquals(cacheState(cache), before);
    const own = await tree(asUser, cache, images.a, ["--reextract-unmapped"]);
    assertEquals([own.extracted, own.listing], [2, rootA.listing]);
    const nsAgain = await tree(shifted, cache, images.a);
    assertEquals([nsAgain.extracted, nsAgain.listing], [0, nsA.listing]);
    assertEquals(await mountsBelow(dir), []);
  },
});

/** Makes the layers of `cache` look as an older strata wrote them: no ids, no marker. */
async function makeLegacy(cache: string): Promise<void> {
  for (const e of Deno.readDirSync(join(cache, "layers"))) {
    const dir = join(cache, "layers", e.name);
    const file = join(dir, "layer.json");
    const { ids: _, ownersLost: __, ...rec } = JSON.parse(await Deno.readTextFile(file));
    await Deno.writeTextFile(file, JSON.stringify(rec, null, 2) + "\n");
    for (const m of Deno.readDirSync(dir)) {
      if (m.name.startsWith("idmap-")) await Deno.remove(join(dir, m.name));
    }
  }
}

Deno.test({
  name:
    "idmap: an older strata's layers (no ids) keep the whole-mapping rule until verify records their ids",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const cache = join(dir, "cache");
    const ns = inUserns(maps(BELOW_64K));
    const rootA = await tree(asRoot, cache, images.a);
    await makeLegacy(cache);
    // Root (the mapping they were written under) reads them as before.
    assertEquals((await tree(asRoot, cache, images.a)).listing, rootA.listing);
    // 0-65535 does not cover root's whole mapping: refused, verify named as the way out.
    const before = cacheState(cache);
    const msg = refusal(await ns(["run", "--cache", cache, images.a.ref, ...LIST]), [
      images.a.layers[0].diffID,
      "older strata",
      "strata verify",
    ]);
    assertStringIncludes(msg, "uid map [0 0 65536]");
    assertEquals(cacheState(cache), before);
    // verify under root's mapping finds the trees intact and records their ids ...
    const v = await asRoot(["verify", "--cache", cache]);
    assertEquals(v.code, 0, v.stderr);
    assertEquals(v.stderr.match(/recorded the ids its files use/g)?.length, 2, v.stderr);
    const recs = Object.values(cacheState(cache).layers).map((t) => JSON.parse(t));
    assertEquals(
      recs.map((r) => JSON.stringify(r.ids.uid)).sort(),
      ["[[0,1]]", "[[0,1],[1000,1]]"].sort(),
    );
    // ... and from then on 0-65535 reads them: the same tree, nothing extracted.
    const inside = await tree(ns, cache, images.a);
    assertEquals([inside.extracted, inside.listing], [0, rootA.listing]);
    // verify again: plain ok now.
    const v2 = await asRoot(["verify", "--cache", cache]);
    assertEquals(v2.code, 0, v2.stderr);
    assert(!v2.stderr.includes("recorded the ids"), v2.stderr);
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name: "idmap: verify removes a layer whose mapping marker or recorded ids were tampered with",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const cache = join(dir, "cache");
    await tree(asRoot, cache, images.b);
    const high = join(cache, "layers", key(images.b.layers[2].diffID));
    // A marker naming 0-65535 would let that mapping read owner 70000 as nobody.
    await Deno.writeFile(join(high, `idmap-${idMapKey(BELOW_64K)}`), new Uint8Array());
    // Ids forged below 65536 would let it too.
    const app = Object.keys(cacheState(cache).layers).find((n) =>
      n.startsWith(key(images.b.layers[1].diffID))
    )!;
    const appFile = join(cache, "layers", app, "layer.json");
    const rec = JSON.parse(await Deno.readTextFile(appFile));
    await Deno.writeTextFile(
      appFile,
      JSON.stringify({ ...rec, ids: { uid: [[0, 1]], gid: [[0, 1]] } }),
    );
    const v = await asRoot(["verify", "--cache", cache]);
    assertEquals(v.code, 1, v.stderr);
    assertStringIncludes(v.stderr, "marked as extracted under another uid/gid mapping");
    assertStringIncludes(v.stderr, "are not those its files use");
    assertEquals(
      v.stdout.trim().split("\n").sort(),
      [`damaged ${images.b.layers[1].diffID}`, `damaged ${images.b.layers[2].diffID}`].sort(),
    );
    // Extracted again on the next run, as they should be.
    const again = await tree(asRoot, cache, images.b);
    assertEquals(again.extracted, 2);
    assertEquals(line(again.listing, "/opt/high"), "/opt/high regular file 70000 70001 640");
  },
});

/** The library, in a namespace: resolve() of an image's top layer over its parents, one call. */
const RESOLVE_SCRIPT = `
import { openImage } from "${repoRoot}/image/open.ts";
import { CachingLayerResolver } from "${repoRoot}/overlay/resolver.ts";
const [cache, ref, reextract] = Deno.args;
const image = await openImage(ref);
const events = [];
const r = await CachingLayerResolver.create(cache, {
  reextractUnmapped: reextract === "1",
  onEvent: (e) => { if (e.type === "published") events.push(e.path.split("/").pop()); },
  onWarning: () => {},
});
const top = image.layers.length - 1;
try {
  const path = await r.resolve(image.layers[top], image.layers.slice(0, top));
  console.log(JSON.stringify({ path, events }));
} catch (e) {
  console.log(JSON.stringify({ error: e.name + ": " + e.message, events }));
}
`;

Deno.test({
  name:
    "idmap: library resolve() refuses a parent before extracting any other; reextractUnmapped extracts only what does not fit",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const images = await buildImages(dir);
    const cache = join(dir, "cache");
    await tree(asRoot, cache, images.a); // base and app, as root
    const [base, app, high] = images.b.layers.map((l) => l.diffID);
    // The base is gone (pruned, say): resolving the top layer would extract it first.
    await Deno.remove(join(cache, "layers", key(base)), { recursive: true });
    const script = join(dir, "resolve.ts");
    await Deno.writeTextFile(script, RESOLVE_SCRIPT);
    const ns = (reextract: string) =>
      runInUserns(maps(ROOT_ONLY), [
        denoPath,
        "run",
        "-A",
        `--config=${repoRoot}/deno.json`,
        script,
        cache,
        images.b.ref,
        reextract,
      ]);
    const before = cacheState(cache);
    const refused = await ns("0");
    assertEquals(refused.code, 0, refused.stderr);
    const out = JSON.parse(refused.stdout);
    assertStringIncludes(out.error, "LayerIdMapError");
    assertStringIncludes(out.error, app);
    assertStringIncludes(out.error, "uid 1000");
    assertEquals(out.events, [], "nothing extracted, the base included");
    assertEquals(cacheState(cache), before);
    // Asked for: the base (root's files only) goes to the shared key, the
    // app and high layers (owners this mapping cannot set) to its own.
    const done = JSON.parse((await ns("1")).stdout);
    assertEquals(done.error, undefined);
    const own = idMapKey(ROOT_ONLY);
    assertEquals(done.events.length, 3);
    assertEquals(done.events[0], key(base));
    assertMatch(done.events[1], new RegExp(`^${key(app)}@[0-9a-f]{64}~${own}$`));
    assertEquals(done.events[2], `${key(high)}~${own}`);
    assertEquals(done.path, join(cache, "layers", `${key(high)}~${own}`, "fs"));
    assertEquals(added(before, cacheState(cache)).length, 3);
    assertEquals(await mountsBelow(dir), []);
  },
});
