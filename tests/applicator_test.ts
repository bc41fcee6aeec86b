/**
 * The layer applicator against the OCI image-spec layer.md: entry types,
 * metadata, replacement, whiteouts (direct and through a real overlay mount),
 * hardlinks into lower layers, unprivileged behaviour in a user namespace,
 * errors, and treeRecord. Every tarball is built in code with TarWriter.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { digestOf, openLayerTar } from "../image/blob.ts";
import { type Layer, MediaType } from "../image/types.ts";
import {
  applyLayer,
  type ApplyOptions,
  ApplyWorkers,
  DamagedLayerError,
  DeviceNotPermittedError,
  HardlinkTargetError,
  TarApplicator,
  WhiteoutError,
} from "../layer/applicator.ts";
import { treeRecord } from "../layer/record.ts";
import { gzip, TarWriter } from "../layer/tar_writer.ts";
import { confine } from "../layer/path.ts";
import { denoPath, isRoot, repoRoot, run, sh, tempDir } from "./_helpers.ts";
import { getfattr, layerLines, overlay, overlayInternals } from "./_overlay.ts";

function apply(w: TarWriter | Uint8Array, root: string, o: ApplyOptions = {}) {
  const bytes = w instanceof TarWriter ? w.bytes() : w;
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream();
  return new TarApplicator(o).apply(stream, root);
}

function lst(p: string): Deno.FileInfo {
  return Deno.lstatSync(p);
}

function isWhiteout(p: string): boolean {
  const st = lst(p);
  return st.isCharDevice === true && st.rdev === 0;
}

/** A Layer over tar bytes in memory, gzip-compressed, verified through image/blob.ts. */
function memLayer(tar: Uint8Array, opts: { badDiffID?: boolean } = {}): Layer {
  const blob = gzip(tar);
  const layer: Layer = {
    digest: digestOf(blob),
    diffID: opts.badDiffID ? digestOf("something else") : digestOf(tar),
    mediaType: MediaType.OciLayerGzip,
    size: blob.length,
    compressed: () => Promise.resolve(new Blob([blob as Uint8Array<ArrayBuffer>]).stream()),
    uncompressed: (signal) => openLayerTar(layer, signal),
  };
  return layer;
}

// ------------------------------------------------------------------ paths

Deno.test("confine: names are cleaned and clamped at the root", () => {
  assertEquals(confine("./usr//bin/"), "usr/bin");
  assertEquals(confine("usr/bin/ls"), "usr/bin/ls");
  assertEquals(confine("../../etc/passwd"), "etc/passwd");
  assertEquals(confine("/etc/passwd"), "etc/passwd");
  assertEquals(confine("a/../../b"), "b");
  assertEquals(confine("a/./b/."), "a/b");
  assertEquals(confine(".."), "");
  assertEquals(confine("./"), "");
  assertEquals(confine("..."), "...");
  assertEquals(confine("a/..b"), "a/..b");
});

// ------------------------------------------------------- types and metadata

Deno.test("applies every entry type with owners, modes, times and xattrs", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const root = join(d, "root");
  await Deno.mkdir(root);
  const old = Deno.umask(0o077); // must not matter: modes are set explicitly
  let r;
  try {
    r = await apply(
      new TarWriter()
        .directory("./", { mode: 0o755, mtime: 1000 })
        .directory("etc/", { mode: 0o751, mtime: 2000, uid: 3, gid: 4 })
        .file("etc/passwd", "root:x:0:0\n", {
          mode: 0o640,
          pax: { mtime: "1700000000.123456789" },
          uid: 1000,
          gid: 1001,
          xattrs: { "user.note": "hi" },
        })
        .file("usr/bin/su", "ELF", { mode: 0o4755, mtime: 3000 })
        .file("usr/bin/wall", "ELF", { mode: 0o2755, gid: 5, mtime: 3000 })
        .directory("tmp/", { mode: 0o1777, mtime: 4000 })
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC", { mtime: 5000, uid: 7, gid: 8 })
        .hardlink("etc/passwd-", "etc/passwd")
        .fifo("run/initctl", { mode: 0o600, mtime: 6000, uid: 9 })
        .charDevice("dev/null", 1, 3, { mode: 0o666, mtime: 7000 })
        .blockDevice("dev/loop0", 7, 0, { mode: 0o660, gid: 6 })
        .file("bin/ping", "ELF", {
          mode: 0o755,
          xattrs: { "security.capability": capNetRaw() },
        })
        .directory("ro/", { mode: 0o555, mtime: 8000 })
        .file("ro/inside", "x", { mode: 0o444, mtime: 9000 })
        .sparseFile("var/sparse", 1 << 20, [{ offset: 8192, data: "hole before" }], { mtime: 10 }),
      root,
    );
  } finally {
    Deno.umask(old);
  }
  assertEquals(r.warnings, isRoot ? [] : r.warnings);
  assertEquals(r.entries, 15);
  assertEquals(Deno.readTextFileSync(join(root, "etc/passwd")), "root:x:0:0\n");
  const pw = lst(join(root, "etc/passwd"));
  assertEquals([pw.mode! & 0o7777, pw.uid, pw.gid, pw.nlink], [0o640, 1000, 1001, 2]);
  assertEquals(getfattr(join(root, "etc/passwd"))["user.note"], "hi");
  // Exact nanoseconds from the pax record.
  const ns = (await run("stat", ["-c", "%y", join(root, "etc/passwd")])).stdout;
  assert(ns.includes(".123456789"), ns);
  assertEquals(lst(join(root, "etc/passwd-")).ino, pw.ino);
  assertEquals(lst(join(root, "usr/bin/su")).mode! & 0o7777, 0o4755);
  assertEquals(lst(join(root, "usr/bin/wall")).mode! & 0o7777, 0o2755);
  assertEquals(lst(join(root, "usr/bin/wall")).gid, 5);
  assertEquals(lst(join(root, "tmp")).mode! & 0o7777, 0o1777);
  const lt = lst(join(root, "etc/localtime"));
  assert(lt.isSymlink);
  assertEquals(Deno.readLinkSync(join(root, "etc/localtime")), "/usr/share/zoneinfo/UTC");
  assertEquals([lt.uid, lt.gid, lt.mtime!.getTime()], [7, 8, 5000_000]);
  const fifo = lst(join(root, "run/initctl"));
  assert(fifo.isFifo);
  assertEquals([fifo.mode! & 0o7777, fifo.uid, fifo.mtime!.getTime()], [0o600, 9, 6000_000]);
  const etc = lst(join(root, "etc"));
  // Directory times are set after their children were written.
  assertEquals([etc.mode! & 0o7777, etc.uid, etc.gid, etc.mtime!.getTime()], [
    0o751,
    3,
    4,
    2000_000,
  ]);
  assertEquals(lst(root).mtime!.getTime(), 1000_000);
  assertEquals(lst(join(root, "ro")).mode! & 0o7777, 0o555);
  assertEquals(lst(join(root, "ro")).mtime!.getTime(), 8000_000);
  assertEquals(Deno.readTextFileSync(join(root, "ro/inside")), "x");
  const sp = lst(join(root, "var/sparse"));
  assertEquals(sp.size, 1 << 20);
  assert(sp.blocks! * 512 < 1 << 20, "holes stay holes");
  const sparse = Deno.readFileSync(join(root, "var/sparse"));
  assertEquals(new TextDecoder().decode(sparse.subarray(8192, 8203)), "hole before");
  assertEquals(sparse[0], 0);
  if (isRoot) {
    const dn = lst(join(root, "dev/null"));
    assert(dn.isCharDevice);
    assertEquals([dn.mode! & 0o7777, dn.rdev], [0o666, 259]);
    const loop = lst(join(root, "dev/loop0"));
    assert(loop.isBlockDevice);
    assertEquals([loop.rdev, loop.gid], [0x700, 6]);
    assert(getfattr(join(root, "bin/ping"))["security.capability"] !== undefined);
  }
});

function capNetRaw(): Uint8Array {
  // VFS_CAP_REVISION_2, effective, permitted CAP_NET_RAW (13).
  const b = new Uint8Array(20);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x02000001, true);
  v.setUint32(4, 1 << 13, true);
  return b;
}

Deno.test("xattr policy: overlay xattrs are never applied, trusted.* only as root", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const warnings: string[] = [];
  const r = await apply(
    new TarWriter()
      .directory("d/", {
        xattrs: { "trusted.overlay.opaque": "y", "user.overlay.opaque": "y", "user.ok": "1" },
      })
      .file("f", "x", {
        xattrs: {
          "user.overlay.redirect": "/etc",
          "trusted.overlay.metacopy": "",
          "trusted.other": "t",
          "security.selinux": "system_u:object_r:etc_t:s0",
        },
      }),
    d,
    { onWarning: (m) => warnings.push(m) },
  );
  const dx = getfattr(join(d, "d"));
  assertEquals(dx["user.ok"], "1");
  assertEquals(dx["user.overlay.opaque"], undefined);
  assertEquals(dx["trusted.overlay.opaque"], undefined);
  const fx = getfattr(join(d, "f"));
  assertEquals(fx["user.overlay.redirect"], undefined);
  assertEquals(fx["trusted.overlay.metacopy"], undefined);
  assertEquals(fx["security.selinux"], undefined);
  if (isRoot) assertEquals(fx["trusted.other"], "t");
  // One warning for the overlay xattrs, however many there were.
  assertEquals(r.warnings.filter((w) => w.includes("overlay xattrs")).length, 1);
  assertEquals(warnings, r.warnings);
});

Deno.test("GNU sparse files in every format keep their holes", async () => {
  for (const sparseFormat of ["gnu", "pax0.0", "pax0.1", "pax1.0"] as const) {
    await using d_ = await tempDir();
    const d = String(d_);
    await apply(
      new TarWriter().sparseFile("s", 4 << 20, [
        { offset: 0, data: "head" },
        { offset: 2 << 20, data: "middle" },
      ], { sparseFormat, mode: 0o640 }),
      d,
    );
    const st = lst(join(d, "s"));
    assertEquals(st.size, 4 << 20, sparseFormat);
    assert(st.blocks! * 512 < 1 << 20, `${sparseFormat}: holes stay holes`);
    const b = Deno.readFileSync(join(d, "s"));
    const text = new TextDecoder();
    assertEquals(text.decode(b.subarray(0, 4)), "head");
    assertEquals(text.decode(b.subarray(2 << 20, (2 << 20) + 6)), "middle");
    assertEquals(b[(2 << 20) - 1], 0);
    assertEquals(b[(4 << 20) - 1], 0);
  }
});

// ---------------------------------------------------------------- replacing

Deno.test("an entry replaces whatever is at its path", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const root = join(d, "root");
  await Deno.mkdir(root);
  const outside = join(d, "outside");
  await Deno.writeTextFile(outside, "keep");
  await apply(
    new TarWriter()
      .directory("a/", { mode: 0o755 })
      .file("a/deep/x", "1")
      .file("b", "file")
      .symlink("c", outside)
      .symlink("e", "b")
      .file("h1", "shared")
      .hardlink("h2", "h1")
      .directory("k/", { mode: 0o700, mtime: 5 })
      .file("k/child", "c"),
    root,
  );
  await apply(
    new TarWriter()
      .file("a", "file over dir tree") // removes the whole tree
      .directory("b/", { mode: 0o711 }) // dir over file
      .file("c", "over the link") // replaces the link, never writes through it
      .directory("e/", { mode: 0o755 }) // dir over a symlink to a file
      .file("h2", "new") // must not change h1 (a hardlink sibling)
      .directory("k/", { mode: 0o750, mtime: 6 }), // existing dir: metadata only
    root,
  );
  assertEquals(Deno.readTextFileSync(join(root, "a")), "file over dir tree");
  assert(lst(join(root, "b")).isDirectory);
  assertEquals(lst(join(root, "b")).mode! & 0o777, 0o711);
  assert(lst(join(root, "c")).isFile);
  assertEquals(Deno.readTextFileSync(join(root, "c")), "over the link");
  assertEquals(Deno.readTextFileSync(outside), "keep");
  assert(lst(join(root, "e")).isDirectory);
  assertEquals(Deno.readTextFileSync(join(root, "h1")), "shared");
  assertEquals(Deno.readTextFileSync(join(root, "h2")), "new");
  assertEquals(Deno.readTextFileSync(join(root, "k/child")), "c");
  assertEquals(lst(join(root, "k")).mode! & 0o777, 0o750);
  assertEquals(lst(join(root, "k")).mtime!.getTime(), 6000);
  // Later entries in the same tar win too, and a dir replaced by a file later
  // does not get the directory's metadata at the end.
  await apply(
    new TarWriter()
      .directory("z/", { mode: 0o700 })
      .file("z", "now a file", { mode: 0o604 })
      .file("y", "first")
      .file("y", "second"),
    root,
  );
  assertEquals(lst(join(root, "z")).mode! & 0o777, 0o604);
  assertEquals(Deno.readTextFileSync(join(root, "y")), "second");
});

Deno.test("a path through symlinks follows a link replaced behind it", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  // "a/b" is reached through "a" -> "x" -> "x2"; then "x" is pointed at
  // "y", so "a/b/f2" goes to "y/b", not to the "x2/b" opened before.
  const w = new TarWriter()
    .directory("x2/b/")
    .directory("y/b/")
    .symlink("x", "x2")
    .symlink("a", "x")
    .file("a/b/f1", "1")
    .symlink("x", "y")
    .file("a/b/f2", "2");
  await apply(w, d);
  assertEquals(Deno.readTextFileSync(join(d, "x2/b/f1")), "1");
  assertEquals(Deno.readTextFileSync(join(d, "y/b/f2")), "2");
  assertEquals([...Deno.readDirSync(join(d, "x2/b"))].length, 1);
});

// --------------------------------------------------------------- whiteouts

Deno.test("direct whiteouts: char 0/0 devices and the opaque xattr", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const r = await apply(
    new TarWriter()
      .directory("etc/")
      .file("etc/.wh.motd", "")
      .directory("var/")
      .directory("var/cache/")
      .file("var/cache/.wh..wh..opq", "")
      .file("var/cache/new", "n")
      // same layer adds the path: the whiteout hides only the lower one
      .file("etc/hosts", "h")
      .file("etc/.wh.hosts", "")
      .file("etc/.wh.shells", "")
      .file("etc/shells", "s")
      // a whiteout and a directory of the same name (either order): opaque dir
      .file(".wh.opt", "")
      .directory("opt/")
      .directory("srv/")
      .file("srv/keep", "k")
      .file(".wh.srv", "")
      .file(".wh..wh.plnk", ""), // aufs metadata: not content
    d,
  );
  assertEquals(r.warnings, []);
  assert(isWhiteout(join(d, "etc/motd")));
  assertEquals(getfattr(join(d, "var/cache"))["user.overlay.opaque"], "y");
  assertEquals(Deno.readTextFileSync(join(d, "var/cache/new")), "n");
  assertEquals(Deno.readTextFileSync(join(d, "etc/hosts")), "h");
  assertEquals(Deno.readTextFileSync(join(d, "etc/shells")), "s");
  assertEquals(getfattr(join(d, "opt"))["user.overlay.opaque"], "y");
  assertEquals(getfattr(join(d, "srv"))["user.overlay.opaque"], "y");
  assertEquals(Deno.readTextFileSync(join(d, "srv/keep")), "k");
  assertEquals(getfattr(join(d, "etc"))["user.overlay.opaque"], undefined);
  assertEquals([...Deno.readDirSync(d)].map((e) => e.name).sort(), [
    "etc",
    "opt",
    "srv",
    "var",
  ]);
  if (isRoot) {
    await using t_ = await tempDir();
    const t = String(t_);
    await apply(new TarWriter().directory("x/").file("x/.wh..wh..opq", ""), t, {
      overlayXattr: "trusted",
    });
    assertEquals(getfattr(join(t, "x"))["trusted.overlay.opaque"], "y");
    assertEquals(getfattr(join(t, "x"))["user.overlay.opaque"], undefined);
  }
});

Deno.test("whiteout names that resolve to nothing are refused", async () => {
  for (const name of [".wh..", "a/.wh..", "a/.wh."]) {
    await using d_ = await tempDir();
    const d = String(d_);
    await assertRejects(() => apply(new TarWriter().file(name, ""), d), WhiteoutError);
  }
});

function lowerTar(): TarWriter {
  return new TarWriter({ defaultMtime: 100 })
    .directory("./", { mode: 0o755 })
    .directory("etc/", { mode: 0o755 })
    .file("etc/motd", "lower motd")
    .file("etc/hosts", "lower hosts")
    .file("etc/shells", "lower shells")
    .directory("var/", { mode: 0o755 })
    .directory("var/cache/", { mode: 0o755 })
    .file("var/cache/old1", "o1")
    .directory("var/cache/sub/", { mode: 0o755 })
    .file("var/cache/sub/old2", "o2")
    .directory("srv/", { mode: 0o755 })
    .file("srv/old", "old")
    .directory("srv/keep/", { mode: 0o755 })
    .file("srv/keep/lowerchild", "lc")
    .directory("opt/", { mode: 0o755 })
    .file("opt/lowerfile", "lf")
    .file("bin/sh", "shell", { mode: 0o755 })
    .directory("lib/", { mode: 0o755 })
    .file("lib/libc.so", "libc");
}

function upperTar(): TarWriter {
  return new TarWriter({ defaultMtime: 200 })
    .directory("./", { mode: 0o755 })
    .directory("etc/", { mode: 0o755 })
    .file("etc/.wh.motd", "")
    .file("etc/hosts", "upper hosts") // replaces a lower file
    .file("etc/.wh.hosts", "") // hides only the lower hosts
    .file("etc/.wh.shells", "") // order reversed: whiteout first, then the file
    .file("etc/shells", "upper shells")
    .directory("var/", { mode: 0o755 })
    .directory("var/cache/", { mode: 0o700 })
    .file("var/cache/.wh..wh..opq", "") // marker before the layer's own children
    .file("var/cache/new", "new")
    .directory("srv/", { mode: 0o755 })
    .directory("srv/keep/", { mode: 0o755 })
    .file("srv/keep/mine", "mine")
    .file("srv/.wh..wh..opq", "") // marker after the layer's own children
    .file(".wh.opt", "") // whiteout then a new dir of the same name
    .directory("opt/", { mode: 0o750 })
    .file("opt/fresh", "fresh")
    .hardlink("bin/sh2", "bin/sh") // target only in the lower layer
    .directory("bin/", { mode: 0o755 });
}

Deno.test({
  name: "merged whiteouts through a real overlay give what direct mode gives",
  ignore: !isRoot,
  fn: async () => {
    await using d_ = await tempDir();
    const d = String(d_);
    const lower = join(d, "lower"), upper = join(d, "upper"), work = join(d, "work");
    const merged = join(d, "merged"), direct = join(d, "direct");
    for (const p of [lower, upper, work, direct]) await Deno.mkdir(p);
    await apply(lowerTar(), lower);
    // direct: the layer dir itself, reading the lower for the hardlink
    const dr = await apply(upperTar(), direct, { lowerDirs: [lower] });
    assertEquals(dr.warnings, []);
    const umount = await overlay([lower], merged, upper, work);
    try {
      const mr = await apply(upperTar(), merged, { whiteouts: "merged" });
      assertEquals(mr.warnings, []);
      // What a container would see.
      const view = await treeRecord(merged, { lines: true, xattrs: overlayInternals });
      const v = view.lines!.join("\n");
      assert(!v.includes('"etc/motd"'));
      assert(v.includes('"var/cache/new"') && !v.includes("old1") && !v.includes("old2"));
      assert(v.includes('"srv/keep/mine"') && !v.includes('"srv/old"'));
      assert(!v.includes("lowerchild"), "opaque after children still hides lower children");
      assert(v.includes('"opt/fresh"') && !v.includes("lowerfile"));
      assertEquals(Deno.readTextFileSync(join(merged, "etc/hosts")), "upper hosts");
      assertEquals(Deno.readTextFileSync(join(merged, "etc/shells")), "upper shells");
      assertEquals(lst(join(merged, "bin/sh2")).ino, lst(join(merged, "bin/sh")).ino);
    } finally {
      await umount();
    }
    // The same view from the direct-mode layer dir stacked on the lower.
    const merged2 = join(d, "merged2"), mergedAgain = join(d, "merged-again");
    const umount2 = await overlay([lower, direct], merged2);
    const umount3 = await overlay([lower, upper], mergedAgain);
    try {
      const a = await treeRecord(merged2, { lines: true, xattrs: overlayInternals });
      const b = await treeRecord(mergedAgain, { lines: true, xattrs: overlayInternals });
      assertEquals(a.lines, b.lines);
    } finally {
      await umount3();
      await umount2();
    }
    // And the upper dir of the merged apply is the direct layer dir, but for
    // the opaque-after-children dir (srv: per-child whiteouts instead of an
    // opaque xattr, the same view) and copied-up hardlinks.
    const norm = (ls: string[]) => ls.filter((l) => !l.startsWith('"srv'));
    assertEquals(norm(await layerLines(upper)), norm(await layerLines(direct)));
  },
});

Deno.test({
  name: "merged mode sets directory metadata when the upper is on another file system",
  ignore: !isRoot,
  fn: async () => {
    await using d_ = await tempDir();
    const d = String(d_);
    const lower = join(d, "lower"), up = join(d, "up"), merged = join(d, "m");
    await Deno.mkdir(lower);
    await Deno.mkdir(up);
    await apply(
      new TarWriter({ defaultMtime: 100 }).directory("etc/").file("etc/a", "a")
        .directory("var/cache/").file("var/cache/x", "x"),
      lower,
    );
    // Copy-up across file systems gives directories new inode numbers.
    await sh("mount", ["-t", "tmpfs", "tmpfs", up]);
    await Deno.mkdir(join(up, "upper"));
    await Deno.mkdir(join(up, "work"));
    const umount = await overlay([lower], merged, join(up, "upper"), join(up, "work"));
    try {
      await apply(
        new TarWriter({ defaultMtime: 200 }).directory("etc/", { mode: 0o700, uid: 7 })
          .file("etc/b", "b").directory("var/cache/", { mode: 0o711 }).file("var/cache/.wh.x", ""),
        merged,
        { whiteouts: "merged" },
      );
      for (const [p, mode, uid] of [["etc", 0o700, 7], ["var/cache", 0o711, 0]] as const) {
        const st = lst(join(merged, p));
        assertEquals([st.mode! & 0o7777, st.uid, st.mtime!.getTime()], [mode, uid, 200000], p);
      }
      assert(isWhiteout(join(up, "upper/var/cache/x")));
    } finally {
      await umount();
    }
  },
});

Deno.test("a hardlink to a file only a lower layer holds is copied up, then linked", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const l1 = join(d, "l1"), l2 = join(d, "l2"), top = join(d, "top");
  for (const p of [l1, l2, top]) await Deno.mkdir(p);
  await apply(
    new TarWriter().directory("usr/", { mode: 0o755, mtime: 9 }).file("usr/x", "v1", {
      mode: 0o751,
      mtime: 77,
      uid: 12,
    }),
    l1,
  );
  await apply(
    new TarWriter().directory("usr/", { mtime: 10 }).file("usr/x", "v2", {
      mode: 0o700,
      mtime: 88,
    }),
    l2,
  );
  const r = await apply(new TarWriter().hardlink("usr/y", "usr/x"), top, { lowerDirs: [l1, l2] });
  assertEquals(r.warnings, []);
  assertEquals(Deno.readTextFileSync(join(top, "usr/x")), "v2", "topmost lower wins");
  assertEquals(lst(join(top, "usr/x")).ino, lst(join(top, "usr/y")).ino);
  assertEquals(lst(join(top, "usr/x")).mode! & 0o777, 0o700);
  assertEquals(lst(join(top, "usr/x")).mtime!.getTime(), 88000);
  // the implied parent keeps the (topmost) lower directory's metadata
  assertEquals(lst(join(top, "usr")).mtime!.getTime(), 10000);
  // a whiteout in a higher lower layer hides the file
  const l3 = join(d, "l3"), top2 = join(d, "top2");
  await Deno.mkdir(l3);
  await Deno.mkdir(top2);
  await apply(new TarWriter().file("usr/.wh.x", ""), l3);
  await assertRejects(
    () => apply(new TarWriter().hardlink("usr/y", "usr/x"), top2, { lowerDirs: [l1, l2, l3] }),
    HardlinkTargetError,
  );
});

// ------------------------------------------------ unprivileged (user namespace)

const childScript = `
import { TarApplicator } from "${repoRoot}/layer/applicator.ts";
const [tar, root, devices] = Deno.args;
const bytes = Deno.readFileSync(tar);
try {
  const r = await new TarApplicator({ devices }).apply(new Blob([bytes]).stream(), root);
  console.log(JSON.stringify({ ok: true, warnings: r.warnings }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, name: e.name, message: e.message }));
}
`;

Deno.test({
  name: "in a user namespace mapping one id: owners and devices warn once, whiteouts work",
  ignore: !isRoot || !(await hasUnshare()),
  fn: async () => {
    await using d_ = await tempDir();
    const d = String(d_);
    const script = join(d, "child.ts");
    await Deno.writeTextFile(script, childScript);
    const tar = join(d, "layer.tar");
    await Deno.writeFile(
      tar,
      new TarWriter()
        .file("a", "a", { uid: 1000, gid: 1000 })
        .file("b", "b", { uid: 1001, gid: 1001 })
        .charDevice("dev/null", 1, 3)
        .charDevice("dev/zero", 1, 5)
        .file("etc/.wh.gone", "")
        .file("etc/.wh..wh..opq", "")
        .bytes(),
    );
    const go = async (devices: string) => {
      const root = join(d, `root-${devices}`);
      await Deno.mkdir(root);
      const out = await run("unshare", [
        "--user",
        "--map-root-user",
        denoPath,
        "run",
        "-A",
        "--frozen",
        script,
        tar,
        root,
        devices,
      ]);
      assertEquals(out.code, 0, out.stderr);
      return { root, res: JSON.parse(out.stdout.trim().split("\n").pop()!) };
    };
    const skip = await go("skip");
    assert(skip.res.ok, skip.res.message);
    const w: string[] = skip.res.warnings;
    assertEquals(w.filter((m) => m.includes("cannot set owners")).length, 1, w.join("\n"));
    assertEquals(w.filter((m) => m.includes("device")).length, 1, w.join("\n"));
    assertEquals(w.length, 2, w.join("\n"));
    assertEquals(Deno.readTextFileSync(join(skip.root, "a")), "a");
    assert(isWhiteout(join(skip.root, "etc/gone")));
    assertEquals(getfattr(join(skip.root, "etc"))["user.overlay.opaque"], "y");
    assertEquals([...Deno.readDirSync(join(skip.root, "dev"))].length, 0);
    const err = await go("error");
    assertEquals(err.res.ok, false);
    assertEquals(err.res.name, "DeviceNotPermittedError");
    assert(err.res.message.includes("dev/null"), err.res.message);
  },
});

async function hasUnshare(): Promise<boolean> {
  return (await run("unshare", ["--user", "--map-root-user", "true"])).code === 0;
}

// ------------------------------------------------------------------- errors

Deno.test("damaged input: clear errors naming the entry and the layer", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const w = new TarWriter().file("a", "aaaa").file("b/c", "x".repeat(5000));
  const bytes = w.bytes({ truncateAt: 1024 + 512 + 100 });
  const e = await assertRejects(
    () => apply(bytes, d, { layer: "sha256:feed" }),
    DamagedLayerError,
  );
  assert(e.message.includes("sha256:feed"), e.message);
  assert(e.message.includes("b/c"), e.message);
  const bad = new TarWriter().file("x", "1", { checksum: "bad" }).bytes();
  await assertRejects(() => apply(bad, d), DamagedLayerError);
  // A hardlink to nothing names the entry and the missing target.
  const hl = await assertRejects(
    () => apply(new TarWriter().hardlink("l", "missing"), d, { layer: "sha256:beef" }),
    HardlinkTargetError,
  );
  assert(hl.message.includes('"l"') && hl.message.includes("missing"), hl.message);
  if (isRoot) {
    // devices: "error" has nothing to refuse as root, and root can mknod.
    await apply(new TarWriter().charDevice("null", 1, 3), d, { devices: "error" });
  } else {
    await assertRejects(
      () => apply(new TarWriter().charDevice("null", 1, 3), d, { devices: "error" }),
      DeviceNotPermittedError,
    );
  }
});

Deno.test("applyLayer verifies digests while streaming; a mismatch rejects", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const tar = new TarWriter().file("hello", "world", { mtime: 5 }).bytes();
  const ok = await applyLayer(memLayer(tar), d);
  assertEquals(ok.entries, 1);
  assertEquals(Deno.readTextFileSync(join(d, "hello")), "world");
  await using d2_ = await tempDir();
  const d2 = String(d2_);
  const layer = memLayer(tar, { badDiffID: true });
  const e = await assertRejects(() => applyLayer(layer, d2), DamagedLayerError);
  assert(e.message.includes(layer.digest), e.message);
  assertEquals((e.cause as Error).name, "DigestMismatchError");
});

Deno.test("apply honours an abort signal", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const ac = new AbortController();
  let n = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (n++ === 2) ac.abort(new Error("stop"));
      c.enqueue(new TarWriter().file(`f${n}`, "x").bytes({ endOfArchive: false }));
    },
  });
  const e = await assertRejects(() => new TarApplicator().apply(stream, d, ac.signal));
  assertEquals((e as Error).message, "stop");
});

// --------------------------------------------------------------- treeRecord

Deno.test("treeRecord changes with content, mode, owner, time, xattrs and links", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const w = () =>
    new TarWriter({ defaultMtime: 10 })
      .directory("./")
      .file("a", "1", { xattrs: { "user.x": "1" } })
      .hardlink("b", "a")
      .symlink("c", "a")
      .file("d", "2");
  const dirs = [join(d, "1"), join(d, "2")];
  for (const p of dirs) {
    await Deno.mkdir(p);
    await apply(w(), p);
  }
  const base = await treeRecord(dirs[0]);
  assertEquals((await treeRecord(dirs[1])).digest, base.digest);
  assertEquals([base.files, base.bytes], [5, 2]);
  const changes: [string, () => unknown][] = [
    ["content", () => Deno.writeTextFileSync(join(dirs[1], "d"), "3")],
    ["mode", () => Deno.chmodSync(join(dirs[1], "d"), 0o600)],
    ["mtime", () => Deno.utimeSync(join(dirs[1], "d"), 10, 11)],
    ["xattr", () => sh("setfattr", ["-n", "user.x", "-v", "2", join(dirs[1], "a")])],
    ...(isRoot
      ? [
        ["symlink xattr", () =>
          sh("setfattr", ["-h", "-n", "trusted.x", "-v", "1", join(dirs[1], "c")])] as [
            string,
            () => unknown,
          ],
      ]
      : []),
    ["link", () => {
      Deno.removeSync(join(dirs[1], "b"));
      Deno.copyFileSync(join(dirs[1], "a"), join(dirs[1], "b"));
    }],
  ];
  for (const [what, change] of changes) {
    await Deno.remove(dirs[1], { recursive: true });
    await Deno.mkdir(dirs[1]);
    await apply(w(), dirs[1]);
    await change();
    assert((await treeRecord(dirs[1])).digest !== base.digest, what);
  }
});

Deno.test("record: digests taken while writing give the record that reading every file gives", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  // Files replaced within the layer (their inodes freed and maybe reused),
  // hardlinks, a sparse file, an empty one, xattrs; then a layer over it
  // that copies a lower file up for a hardlink and replaces another.
  const lower = () =>
    new TarWriter({ defaultMtime: 20 })
      .directory("./")
      .file("a", "first", { xattrs: { "user.k": "v" } })
      .file("b", "bee")
      .file("a", "second, longer")
      .hardlink("c", "b")
      .file("b", "replaced")
      .file("e", "")
      .file("dir", "a file first")
      .directory("dir/")
      .file("dir/x", new Uint8Array(300_000).fill(3))
      .sparseFile("holes", 1 << 20, [{ offset: 4096, data: "data" }, {
        offset: 900_000,
        data: "end",
      }])
      .file("gone", "soon")
      .file(".wh.gone", "");
  const upper = () =>
    new TarWriter({ defaultMtime: 30 })
      .hardlink("up", "dir/x")
      .file("a", "upper's a")
      .file("new", new Uint8Array(5 << 20).fill(9));
  const check = async (root: string, r: Awaited<ReturnType<typeof apply>>, what: string) => {
    assert(r.record, what);
    const written = await r.record;
    const read = await treeRecord(root, { lines: true });
    assertEquals(written.digest, read.digest, `${what}: ${read.lines!.join("\n")}`);
    assertEquals([written.files, written.bytes, written.ids], [read.files, read.bytes, read.ids]);
  };
  const workers = new ApplyWorkers({ hashes: true });
  try {
    workers.warm(1);
    for (const threads of ["main", "worker", "pooled"] as const) {
      const l = join(d, `${threads}-lower`), u = join(d, `${threads}-upper`);
      await Deno.mkdir(l);
      await Deno.mkdir(u);
      const o: ApplyOptions = threads === "pooled"
        ? { record: true, workers, threads: "worker" }
        : { record: true, threads };
      await check(l, await apply(lower(), l, o), `${threads} lower`);
      await check(u, await apply(upper(), u, { ...o, lowerDirs: [l] }), `${threads} upper`);
      assertEquals(Deno.readTextFileSync(join(u, "up")).length, 300_000);
    }
    // The pool's worker took both layers and went back idle: a third
    // layer runs in it as well.
    const third = join(d, "third");
    await Deno.mkdir(third);
    await check(
      third,
      await apply(lower(), third, { record: true, workers, threads: "worker" }),
      "third",
    );
  } finally {
    workers.close();
  }
});

// ------------------------------------------------------------ worker thread

Deno.test("threads: worker writes the same tree and reports the same errors", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const w = () =>
    new TarWriter({ defaultMtime: 50 })
      .directory("./", { mode: 0o755 })
      .directory("etc/", { mode: 0o750, uid: 3 })
      .file("etc/big", new Uint8Array(3 << 20).fill(7), { mode: 0o600 })
      .file("etc/.wh.old", "")
      .symlink("etc/l", "big")
      .hardlink("etc/h", "etc/big")
      .fifo("run/p");
  const a = join(d, "a"), b = join(d, "b");
  await Deno.mkdir(a);
  await Deno.mkdir(b);
  const ra = await apply(w(), a, { threads: "main" });
  const warnings: string[] = [];
  const rb = await apply(w(), b, { threads: "worker", onWarning: (m) => warnings.push(m) });
  assertEquals(rb, ra);
  assertEquals(warnings, rb.warnings);
  assertEquals((await treeRecord(b)).digest, (await treeRecord(a)).digest);
  // auto (the default): past 4 MiB the looked-ahead chunks are replayed to the worker.
  const big = () =>
    new TarWriter({ defaultMtime: 9 }).directory("./").file("a", new Uint8Array(3 << 20).fill(1))
      .file("b", new Uint8Array(3 << 20).fill(2)).file("c", "tail");
  const c = join(d, "c"), e1 = join(d, "e1");
  await Deno.mkdir(c);
  await Deno.mkdir(e1);
  const chunked = (bytes: Uint8Array) =>
    new ReadableStream<Uint8Array>({
      start(ctl) {
        for (let o = 0; o < bytes.length; o += 65536) ctl.enqueue(bytes.slice(o, o + 65536));
        ctl.close();
      },
    });
  await new TarApplicator().apply(chunked(big().bytes()), c);
  await new TarApplicator({ threads: "main" }).apply(chunked(big().bytes()), e1);
  assertEquals((await treeRecord(c)).digest, (await treeRecord(e1)).digest);
  assertEquals(Deno.readTextFileSync(join(c, "c")), "tail");
  // Errors keep their class, entry and layer across the thread boundary.
  const e = await assertRejects(
    () =>
      apply(new TarWriter().hardlink("x", "nope"), join(d, "a"), {
        threads: "worker",
        layer: "sha256:cafe",
      }),
    HardlinkTargetError,
  );
  assertEquals([e.entry, e.layer], ["x", "sha256:cafe"]);
  const bad = new TarWriter().file("ok", "1").file("y", "2", { checksum: "bad" }).bytes();
  const de = await assertRejects(() => apply(bad, a, { threads: "worker" }), DamagedLayerError);
  assertEquals((de.cause as Error).name, "TarFormatError");
  // Aborting stops the worker.
  const ac = new AbortController();
  let n = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (n++ === 3) ac.abort(new Error("stop"));
      c.enqueue(new TarWriter().file(`f${n}`, "x").bytes({ endOfArchive: false }));
    },
  });
  const ae = await assertRejects(() =>
    new TarApplicator({ threads: "worker" }).apply(stream, b, ac.signal)
  );
  assertEquals((ae as Error).message, "stop");
});
