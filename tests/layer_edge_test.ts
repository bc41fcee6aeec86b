/**
 * Layer and image edge cases found in an audit, each pinned by the outcome
 * on disk (or the error) that the OCI image spec's layer rules, GNU tar and
 * containerd give. Every tarball is built in code with TarWriter.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { type ApplyOptions, TarApplicator } from "../layer/applicator.ts";
import { treeRecord } from "../layer/record.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { writeOciLayout } from "../image/build.ts";
import { openOciLayout } from "../image/layout.ts";
import type { ContainerConfig } from "../image/types.ts";
import { concat, denoPath, isRoot, repoRoot, run, tempDir } from "./_helpers.ts";
import { getfattr, layerLines, overlay } from "./_overlay.ts";

function apply(w: TarWriter, root: string, o: ApplyOptions = {}) {
  return new TarApplicator(o).apply(new Blob([w.bytes()]).stream(), root);
}

/** Applies `layer` in merged mode to an overlay of `lower` mounted at `merged` (upper dir `upper`), then unmounts. */
async function applyMerged(
  layer: TarWriter,
  lower: string,
  merged: string,
  upper: string,
  work: string,
) {
  const umount = await overlay([lower], merged, upper, work);
  try {
    return await apply(layer, merged, { whiteouts: "merged" });
  } finally {
    await umount();
  }
}

/** {@linkcode layerLines} without the root's line (its time is the applier's in either mode). */
const linesBelowRoot = async (dir: string) =>
  (await layerLines(dir)).filter((l) => !l.startsWith('"." '));

// A layer that removes a lower directory (or file) and writes below the same
// name without listing the directory itself: hand-written tars and some
// image builders omit parents. The implied directory replaces the lower one.
const lowerOfImplied = () =>
  new TarWriter({ defaultMtime: 100 })
    .directory("d/", { mode: 0o755 })
    .file("d/old", "old")
    .file("x", "lower file x");
const impliedOverWhiteout = () =>
  new TarWriter({ defaultMtime: 200 })
    .file(".wh.d", "")
    .file("d/new", "new")
    .file(".wh.x", "")
    .file("x/sub/y", "y");

Deno.test("layer edge: a whiteout, then a file below the same name without its directory entry (direct)", async () => {
  await using d_ = await tempDir();
  const d = String(d_);
  const lower = join(d, "lower"), direct = join(d, "direct");
  for (const p of [lower, direct]) await Deno.mkdir(p);
  await apply(lowerOfImplied(), lower);
  const r = await apply(impliedOverWhiteout(), direct, { lowerDirs: [lower] });
  assertEquals(r.warnings, []);
  assertEquals(Deno.readTextFileSync(join(direct, "d/new")), "new");
  assertEquals(Deno.readTextFileSync(join(direct, "x/sub/y")), "y");
  // The implied directories replace the lower ones: opaque, so d/old is gone.
  assertEquals(getfattr(join(direct, "d"))["user.overlay.opaque"], "y");
  assertEquals(getfattr(join(direct, "x"))["user.overlay.opaque"], "y");
  assertEquals(getfattr(join(direct, "x/sub"))["user.overlay.opaque"], undefined);
});

Deno.test({
  name: "layer edge: a whiteout, then an implied directory: merged mode gives direct mode's layer",
  ignore: !isRoot,
  fn: async () => {
    await using d_ = await tempDir();
    const d = String(d_);
    const [lower, upper, work, merged, direct, view] = [
      "lower",
      "upper",
      "work",
      "merged",
      "direct",
      "view",
    ].map((n) => join(d, n));
    for (const p of [lower, upper, work, direct]) await Deno.mkdir(p);
    await apply(lowerOfImplied(), lower);
    await apply(impliedOverWhiteout(), direct, { lowerDirs: [lower] });
    const umount = await overlay([lower], merged, upper, work);
    try {
      const r = await apply(impliedOverWhiteout(), merged, { whiteouts: "merged" });
      assertEquals(r.warnings, []);
      assert(!Deno.readDirSync(join(merged, "d")).some((e) => e.name === "old"));
    } finally {
      await umount();
    }
    // Not a user.overlay.overlay.opaque (an overlay xattr set through the
    // view). The root's time is the applier's in both; other times are
    // pinned below.
    const noTimes = async (dir: string) =>
      (await linesBelowRoot(dir)).map((l) => l.replace(/ m:\S+/, ""));
    assertEquals(await noTimes(upper), await noTimes(direct));
    const umount2 = await overlay([lower, direct], view);
    try {
      assertEquals([...Deno.readDirSync(join(view, "d"))].map((e) => e.name), ["new"]);
      assert(Deno.statSync(join(view, "x")).isDirectory);
    } finally {
      await umount2();
    }
  },
});

// What this layer whites out or makes opaque is gone from the lower layers
// for the rest of the layer: merged mode, applying to the overlay view, no
// longer sees it, and direct mode must not read it from the lower dirs.
const hiddenLower = () =>
  new TarWriter({ defaultMtime: 100 })
    .directory("d/", { mode: 0o700, uid: 1000, gid: 1000 })
    .file("d/f", "lower f")
    .directory("o/", { mode: 0o755 })
    .directory("o/sub/", { mode: 0o700, uid: 1000, gid: 1000 })
    .file("o/f", "lower o/f")
    .file("x", "lower x");

Deno.test({
  name:
    "layer edge: an implied directory over a whited-out or opaque lower one takes no lower metadata",
  ignore: !isRoot,
  fn: async () => {
    await using d_ = await tempDir();
    const d = String(d_);
    const [lower, upper, work, merged, direct] = ["lower", "upper", "work", "merged", "direct"]
      .map((n) => join(d, n));
    for (const p of [lower, upper, work, direct]) await Deno.mkdir(p);
    await apply(hiddenLower(), lower);
    const layer = () =>
      new TarWriter({ defaultMtime: 200 })
        .file(".wh.d", "")
        .file("d/new", "new") // d implied: not the whited-out lower d's 0700 1000:1000
        .file("o/.wh..wh..opq", "")
        .file("o/sub/g", "g"); // o/sub implied below an opaque o: not the lower o/sub's
    await apply(layer(), direct, { lowerDirs: [lower] });
    for (const p of ["d", "o/sub"]) {
      const st = Deno.statSync(join(direct, p));
      assertEquals([st.mode! & 0o7777, st.uid, st.gid], [0o755, 0, 0], p);
      assertEquals(st.mtime?.getTime(), 200_000, p);
    }
    await applyMerged(layer(), lower, merged, upper, work);
    assertEquals(await linesBelowRoot(upper), await linesBelowRoot(direct));
  },
});

Deno.test("layer edge: a hardlink to what this layer whited out or hid is refused, never resurrected", async (t) => {
  await using d_ = await tempDir();
  const d = String(d_);
  const lower = join(d, "lower");
  await Deno.mkdir(lower);
  await apply(hiddenLower(), lower);
  const cases: [string, TarWriter][] = [
    ["a whited-out file", new TarWriter().file(".wh.x", "").hardlink("y", "x")],
    ["a file in a whited-out dir", new TarWriter().file(".wh.d", "").hardlink("y", "d/f")],
    [
      "a file in a whited-out dir written again",
      new TarWriter().file(".wh.d", "").directory("d/").hardlink("y", "d/f"),
    ],
    ["a file in an opaque dir", new TarWriter().file("o/.wh..wh..opq", "").hardlink("y", "o/f")],
    ["below an opaque root", new TarWriter().file(".wh..wh..opq", "").hardlink("y", "x")],
  ];
  for (const [i, [name, tar]] of cases.entries()) {
    await t.step(name, async () => {
      const root = join(d, `root${i}`);
      await Deno.mkdir(root);
      let error: Error | undefined;
      await apply(tar, root, { lowerDirs: [lower] }).catch((e) => error = e);
      assertEquals(error?.name, "HardlinkTargetError", `applied: ${error}`);
      // Not a second whiteout (char 0/0) named y, nor a copy of the lower file.
      assertEquals(existsL(join(root, "y")), false);
      for (const p of ["x", "d/f", "o/f"]) {
        const st = lstatOrUndefined(join(root, p));
        assert(st === undefined || !st.isFile, `${p} was copied up`);
      }
    });
  }
});

function lstatOrUndefined(p: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(p);
  } catch {
    return undefined;
  }
}

function existsL(p: string): boolean {
  return lstatOrUndefined(p) !== undefined;
}

Deno.test("layer edge: an owner beyond 32 bits is a damaged tar naming the entry, not an FFI error", async (t) => {
  await using d_ = await tempDir();
  const d = String(d_);
  const cases: [string, TarWriter][] = [
    ["pax uid", new TarWriter().file("a", "1", { pax: { uid: "4294967296" } })],
    ["pax gid on a directory", new TarWriter().directory("dir/", { pax: { gid: "99999999999" } })],
    ["pax uid on a symlink", new TarWriter().symlink("s", "a", { pax: { uid: "4294967296" } })],
    [
      "base-256 uid",
      new TarWriter({ format: "gnu" }).file("a", "1", { uid: 2 ** 40, base256: ["uid"] }),
    ],
  ];
  for (const [i, [name, tar]] of cases.entries()) {
    await t.step(name, async () => {
      const root = join(d, `r${i}`);
      await Deno.mkdir(root);
      let error: Error | undefined;
      await apply(tar, root).catch((e) => error = e);
      assertEquals(error?.name, "DamagedLayerError", String(error));
      assert(error!.message.includes("out of range"), error!.message);
      assert(!error!.message.includes("FFI"), error!.message);
    });
  }
  await t.step("the largest id still applies", async () => {
    const root = join(d, "max");
    await Deno.mkdir(root);
    await apply(new TarWriter().file("a", "1", { uid: 4294967294, gid: 4294967294 }), root);
    if (isRoot) assertEquals(Deno.lstatSync(join(root, "a")).uid, 4294967294);
  });
});

Deno.test("layer edge: container defaults of the wrong JSON type are an invalid config, not characters", async (t) => {
  await using d_ = await tempDir();
  const d = String(d_);
  const tar = new TarWriter().file("a", "1").bytes();
  const layout = async (name: string, config: unknown) => {
    const dir = join(d, name);
    await writeOciLayout(dir, [{
      tag: "t",
      images: [{ layers: [{ tar }], config: config as ContainerConfig }],
    }]);
    return dir;
  };
  const bad: [string, unknown, string][] = [
    ["Cmd a string (was run as the command `/`)", { Cmd: "/bin/true" }, "config.Cmd"],
    ["Entrypoint a string", { Entrypoint: "/bin/sh -c" }, "config.Entrypoint"],
    ["Env a string (was split into one variable per character)", { Env: "A=1" }, "config.Env"],
    ["Env holding numbers", { Env: [1, 2] }, "config.Env"],
    ["User a number", { User: 1000 }, "config.User"],
    ["WorkingDir an array", { WorkingDir: ["/"] }, "config.WorkingDir"],
  ];
  for (const [name, config, field] of bad) {
    await t.step(name, async () => {
      const dir = await layout(name.replace(/\W+/g, "-"), config);
      let error: Error | undefined;
      await openOciLayout(dir, "t").catch((e) => error = e);
      assertEquals(error?.name, "ManifestError", String(error));
      assert(error!.message.includes(`${field} must be`), error!.message);
    });
  }
  await t.step("null and absent fields still open", async () => {
    const dir = await layout("nulls", { Entrypoint: null, Cmd: ["/x"], Env: null });
    const image = await openOciLayout(dir, "t");
    assertEquals(image.config.config?.Cmd, ["/x"]);
  });
  await t.step("the CLI says so in one line and exits 1", async () => {
    const dir = await layout("cli", { Env: "A=1" });
    const r = await run(denoPath, [
      "run",
      "-A",
      "--no-check=remote",
      `${repoRoot}/cli.ts`,
      "pull",
      "--cache",
      join(d, "cache"),
      `oci:${dir}:t`,
    ]);
    assertEquals(r.code, 1, r.stderr);
    const lines = r.stderr.split("\n").filter((l) => l && !l.includes("Check"));
    assertEquals(lines.length, 1, r.stderr);
    assert(lines[0].startsWith("strata: ") && lines[0].includes("config.Env must be"), lines[0]);
  });
});

Deno.test("layer edge: a sparse file past the file system's size limit fails with a named errno", async () => {
  await using d_ = await tempDir();
  const root = String(d_);
  // A hole of 4 PB: ext4 refuses it (EFBIG), tmpfs takes it without using space.
  const tar = new TarWriter().sparseFile("big", 4e15 + 3, [{ offset: 0, data: "abc" }, {
    offset: 4e15,
    data: "def",
  }]);
  let error: Error | undefined;
  await apply(tar, root).catch((e) => error = e);
  if (error) {
    assertEquals(error.name, "EntryWriteError", String(error));
    assert(/write: EFBIG/.test(error.message), error.message);
    assert(!error.message.includes("E#"), error.message);
  } else {
    assertEquals(Deno.statSync(join(root, "big")).size, 4e15 + 3);
  }
});

// A hardlink to a lower file copies it up (direct mode); a whiteout or an
// opaque marker later in the same layer hides the lower path, copy included,
// while the link keeps the content (same inode). Merged mode, applying to the
// overlay view, removes the path there and keeps the link.
const copiedUpLower = () =>
  new TarWriter({ defaultMtime: 100 })
    .directory("d/", { mode: 0o700, uid: 1000, gid: 1000 })
    .file("d/f", "lower f")
    .directory("d/e/", { mode: 0o750 })
    .file("d/e/f", "lower e/f")
    .file("x", "lower x");

Deno.test({
  name:
    "layer edge: a hardlink's copied-up target goes when a later whiteout or opaque marker hides it",
  ignore: !isRoot,
  fn: async (t) => {
    await using d_ = await tempDir();
    const d = String(d_);
    const lower = join(d, "lower");
    await Deno.mkdir(lower);
    await apply(copiedUpLower(), lower);
    const tar = () => new TarWriter({ defaultMtime: 200 });
    // [name, layer, y's content, a path the view no longer shows, the same
    // layer dir in both modes (else merged mode whites out each lower child
    // where direct mode makes the directory opaque: the same view)]
    const cases: [string, () => TarWriter, string, string, boolean][] = [
      [
        "whiteout of the target's dir",
        () => tar().hardlink("y", "d/f").file(".wh.d", ""),
        "lower f",
        "d",
        true,
      ],
      [
        "opaque target's dir",
        () => tar().hardlink("y", "d/f").file("d/.wh..wh..opq", ""),
        "lower f",
        "d/f",
        true,
      ],
      [
        "whiteout of the target",
        () => tar().hardlink("y", "x").file(".wh.x", ""),
        "lower x",
        "x",
        true,
      ],
      [
        "opaque above an implied dir",
        () => tar().hardlink("y", "d/e/f").file("d/.wh..wh..opq", ""),
        "lower e/f",
        "d/e",
        true,
      ],
      [
        "whiteout of a dir the layer wrote into",
        () => tar().file("d/g", "g").hardlink("y", "d/f").file(".wh.d", ""),
        "lower f",
        "d/f",
        false,
      ],
      [
        "the layer writes into the copy's implied dir, then whites it out",
        () => tar().hardlink("y", "d/f").file("d/g", "g").file(".wh.d", ""),
        "lower f",
        "d/f",
        false,
      ],
    ];
    const viewLines = async (layer: string, at: string) => {
      const umount = await overlay([lower, layer], at);
      try {
        return (await treeRecord(at, { lines: true })).lines!.filter((l) => !l.startsWith('"." '));
      } finally {
        await umount();
      }
    };
    for (const [i, [name, layer, content, gone, sameLayer]] of cases.entries()) {
      await t.step(name, async () => {
        const [upper, work, merged, direct, view] = ["upper", "work", "merged", "direct", "view"]
          .map((n) => join(d, `${n}${i}`));
        for (const p of [upper, work, direct]) await Deno.mkdir(p);
        const r = await apply(layer(), direct, { lowerDirs: [lower] });
        assertEquals(r.warnings, []);
        await applyMerged(layer(), lower, merged, upper, work);
        if (sameLayer) assertEquals(await linesBelowRoot(direct), await linesBelowRoot(upper));
        const shown = await viewLines(direct, view);
        assertEquals(shown, await viewLines(upper, view));
        assert(!shown.some((l) => l.startsWith(`"${gone}" `)), `${gone} is still there`);
        const umount2 = await overlay([lower, direct], view);
        try {
          assertEquals(Deno.readTextFileSync(join(view, "y")), content);
        } finally {
          await umount2();
        }
      });
    }
  },
});

// zstd streams as RFC 8878 has them and the zstd CLI reads them: several
// frames (zstd:chunked layers hold one per file chunk), skippable frames
// before, between and after them (zstd:chunked keeps its table of contents
// in one). Deno's node:zlib decoder drops the rest of a write once a frame
// ends in it, so each case is also given to it in one piece.
Deno.test("layer edge: zstd layers with several frames and skippable frames read as `zstd -d` reads them", async (t) => {
  const { zstdCompressSync } = await import("node:zlib");
  await using d_ = await tempDir();
  const dir = String(d_);
  const { decompress, digestOf } = await import("../image/blob.ts");
  const { MediaType } = await import("../image/types.ts");
  const z = (b: Uint8Array) => new Uint8Array(zstdCompressSync(b));
  const skippable = (n: number, low = 0) => {
    const b = new Uint8Array(8 + n).fill(0xaa);
    b.set([0x50 | low, 0x2a, 0x4d, 0x18, n & 255, n >> 8, 0, 0]);
    return b;
  };
  const tar = new TarWriter().file("a", "a".repeat(100_000)).file(
    "b",
    crypto.getRandomValues(
      new Uint8Array(60_000),
    ),
  ).bytes();
  const parts = [0, 700, 5000, 70_000, tar.length].map((_, i, a) => tar.subarray(a[i], a[i + 1]))
    .slice(0, 4);
  // The zstd CLI's frames carry a checksum.
  const zc = (b: Uint8Array) => {
    Deno.writeFileSync(join(dir, "part"), b);
    new Deno.Command("zstd", { args: ["-qf", "--check", join(dir, "part")] }).outputSync();
    return Deno.readFileSync(join(dir, "part.zst"));
  };
  const cases: [string, Uint8Array][] = [
    ["four frames", concat(...parts.map(z))],
    ["four frames with checksums", concat(...parts.map(zc))],
    ["a skippable frame first", concat(skippable(16), z(tar))],
    [
      "skippable frames between and after",
      concat(z(parts[0]), skippable(3, 7), ...parts.slice(1).map(z), skippable(300, 15)),
    ],
  ];
  for (const [name, blob] of cases) {
    await t.step(name, async () => {
      const zstd = new Deno.Command("zstd", { args: ["-dc"], stdin: "piped", stdout: "piped" })
        .spawn();
      const output = zstd.output(); // read while writing: the pipe holds 64 KiB
      const w = zstd.stdin.getWriter();
      await w.write(blob);
      await w.close();
      const cli = await output;
      assertEquals(cli.code, 0);
      // Digests: a diff of two large arrays takes forever.
      assertEquals(digestOf(cli.stdout), digestOf(tar), "zstd -d");
      for (const chunk of [blob.length, 1000, 7]) {
        const pieces: Uint8Array[] = [];
        for (let i = 0; i < blob.length; i += chunk) pieces.push(blob.subarray(i, i + chunk));
        const out = ReadableStream.from(pieces).pipeThrough(
          decompress(MediaType.OciLayerZstd, "layer"),
        );
        const got = new Uint8Array(await new Response(out).arrayBuffer());
        assertEquals(
          [got.length, digestOf(got)],
          [tar.length, digestOf(tar)],
          `chunks of ${chunk}`,
        );
      }
    });
  }
});
