// Tests of the tar parser (layer/tar.ts) and writer (layer/tar_writer.ts):
// writer -> parser round trips for every feature, GNU tar cross-checks in both
// directions, and damaged or hostile archives.

import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { join } from "@std/path";
import {
  readTar,
  type TarEntry,
  TarFormatError,
  type TarHeader,
  TarParser,
  type TarSink,
  untar,
} from "../layer/tar.ts";
import { gzip, TarWriter, zstd } from "../layer/tar_writer.ts";
import { gunzipSync, zstdDecompressSync } from "node:zlib";
import { isRoot, run, sh, tempDir } from "./_helpers.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const text = (b: Uint8Array) => td.decode(b);

/** Records every sink call, so that chunkings can be compared. */
function recorder(): TarSink & { events: string[] } {
  const events: string[] = [];
  let body: number[] = [];
  let at = -1;
  return {
    events,
    entry(h) {
      events.push(`entry ${JSON.stringify(h)}`);
      body = [];
      at = -1;
    },
    data(c, offset) {
      // Merge contiguous pieces so that chunk boundaries do not show.
      if (offset !== at) {
        events.push(`seg@${offset}`);
      }
      for (const b of c) body.push(b);
      at = offset + c.length;
    },
    entryEnd() {
      events.push(`end ${body.length} ${simpleHash(body)}`);
    },
  };
}

function simpleHash(a: ArrayLike<number>): number {
  let h = 0;
  for (let i = 0; i < a.length; i++) h = (h * 31 + a[i]) | 0;
  return h;
}

function parseChunked(bytes: Uint8Array, chunk: number): string[] {
  const r = recorder();
  const p = new TarParser(r);
  for (let o = 0; o < bytes.length; o += chunk) p.push(bytes.subarray(o, o + chunk));
  p.end();
  return r.events;
}

function byName(entries: TarEntry[]): Map<string, TarEntry> {
  return new Map(entries.map((e) => [e.header.name, e]));
}

/** Rebuilds a sparse file's content from data() offsets. */
function sparseContent(bytes: Uint8Array, name: string): Uint8Array {
  let out: Uint8Array | null = null;
  let found = false;
  const p = new TarParser({
    entry(h) {
      found = h.name === name;
      if (found) out = new Uint8Array(h.realSize ?? h.size);
    },
    data(c, off) {
      if (found) out!.set(c, off);
    },
    entryEnd() {
      found = false;
    },
  });
  p.push(bytes);
  p.end();
  assert(out, `no entry ${name}`);
  return out;
}

const LONG = "d/" + "x".repeat(150) + "/" + "y".repeat(120);
const LONG_LINK = "t/" + "z".repeat(250);

function everything(format: "pax" | "gnu"): TarWriter {
  return new TarWriter({ format })
    .directory("d/", { mode: 0o755, mtime: 1700000000, uid: 1, gid: 2 })
    .file("d/f", "hello\n", {
      mode: 0o4755,
      uid: 1000,
      gid: 1001,
      uname: "bob",
      gname: "staff",
      mtime: 1700000001,
    })
    .file("d/sgid", "", { mode: 0o2755 })
    .directory("d/tmp/", { mode: 0o1777 })
    .file(LONG, "long\n")
    .symlink("d/s", LONG_LINK)
    .symlink("d/abs", "/etc/passwd")
    .hardlink("d/h", "d/f")
    .hardlink("d/hl", LONG)
    .charDevice("d/c", 1, 3, { mode: 0o666 })
    .charDevice("d/.wh.gone", 0, 0)
    .blockDevice("d/b", 8, 1, { mode: 0o660 })
    .fifo("d/p", { mode: 0o600 })
    .file("d/big-ids", "x", { uid: 3000000, gid: 2500000 })
    .file("d/unicode-é-名前", "ü");
}

function checkEverything(entries: TarEntry[], format: "pax" | "gnu") {
  const m = byName(entries);
  assertEquals(entries.length, 15);
  const d = m.get("d/")!.header;
  assertEquals([d.type, d.mode, d.uid, d.gid, d.mtime, d.size], [
    "directory",
    0o755,
    1,
    2,
    1700000000,
    0,
  ]);
  const f = m.get("d/f")!;
  assertEquals(f.header.type, "file");
  assertEquals(f.header.mode, 0o4755);
  assertEquals([f.header.uid, f.header.gid, f.header.uname, f.header.gname], [
    1000,
    1001,
    "bob",
    "staff",
  ]);
  assertEquals([f.header.size, f.header.mtime], [6, 1700000001]);
  assertEquals(text(f.data), "hello\n");
  assertEquals(m.get("d/sgid")!.header.mode, 0o2755);
  assertEquals(m.get("d/tmp/")!.header.mode, 0o1777);
  assertEquals(text(m.get(LONG)!.data), "long\n");
  assertEquals(m.get("d/s")!.header.type, "symlink");
  assertEquals(m.get("d/s")!.header.linkname, LONG_LINK);
  assertEquals(m.get("d/abs")!.header.linkname, "/etc/passwd");
  assertEquals([m.get("d/h")!.header.type, m.get("d/h")!.header.linkname], ["hardlink", "d/f"]);
  assertEquals(m.get("d/hl")!.header.linkname, LONG);
  const c = m.get("d/c")!.header;
  assertEquals([c.type, c.devmajor, c.devminor, c.mode], ["char", 1, 3, 0o666]);
  const wh = m.get("d/.wh.gone")!.header;
  assertEquals([wh.type, wh.devmajor, wh.devminor], ["char", 0, 0]);
  const b = m.get("d/b")!.header;
  assertEquals([b.type, b.devmajor, b.devminor], ["block", 8, 1]);
  assertEquals([m.get("d/p")!.header.type, m.get("d/p")!.header.mode], ["fifo", 0o600]);
  const big = m.get("d/big-ids")!.header;
  assertEquals([big.uid, big.gid], [3000000, 2500000]);
  assertEquals(text(m.get("d/unicode-é-名前")!.data), "ü");
  void format;
}

// ---- round trips --------------------------------------------------------------

for (const format of ["pax", "gnu"] as const) {
  Deno.test(`tar: writer -> parser round trip of every entry type (${format})`, () => {
    checkEverything(readTar(everything(format).bytes()), format);
  });

  Deno.test(`tar: GNU tar lists and extracts what the writer wrote (${format})`, async () => {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const tarPath = join(dir, "a.tar");
    await Deno.writeFile(tarPath, everything(format).bytes());
    const list = await sh("tar", ["--numeric-owner", "-tvf", tarPath]);
    assertStringIncludes(list, LONG);
    assertStringIncludes(list, `d/s -> ${LONG_LINK}`);
    assertStringIncludes(list, "3000000/2500000");
    if (!isRoot) return;
    const out = join(dir, "x");
    await Deno.mkdir(out);
    await sh("tar", ["--numeric-owner", "-C", out, "-xpf", tarPath]);
    const st = await Deno.lstat(join(out, "d/f"));
    assertEquals([st.mode! & 0o7777, st.uid, st.gid, st.mtime!.getTime()], [
      0o4755,
      1000,
      1001,
      1700000001000,
    ]);
    assertEquals(await Deno.readTextFile(join(out, LONG)), "long\n");
    assertEquals(await Deno.readLink(join(out, "d/s")), LONG_LINK);
    assertEquals((await Deno.lstat(join(out, "d/h"))).ino, st.ino);
    const c = await Deno.lstat(join(out, "d/c"));
    assert(c.isCharDevice, "d/c is a char device");
    assertEquals(c.rdev, (1 << 8) | 3);
    assert((await Deno.lstat(join(out, "d/p"))).isFifo);
    const big = await Deno.lstat(join(out, "d/big-ids"));
    assertEquals([big.uid, big.gid], [3000000, 2500000]);
  });
}

Deno.test("tar: the same events whatever the chunk sizes", () => {
  const bytes = new TarWriter()
    .file("a", new Uint8Array(1500).map((_, i) => i))
    .file(LONG, "z".repeat(513), { xattrs: { "user.k": "v" } })
    .sparseFile("sp", 1 << 16, [{ offset: 512, data: "abc" }, { offset: 8192, data: "def" }])
    .sparseFile(
      "spg",
      1 << 16,
      Array.from({ length: 30 }, (_, i) => ({ offset: i * 1024, data: "q" + i })),
      {
        sparseFormat: "gnu",
      },
    )
    .file("b", "")
    .bytes();
  const whole = parseChunked(bytes, bytes.length);
  for (const n of [1, 7, 100, 511, 512, 513, 4096]) {
    assertEquals(parseChunked(bytes, n), whole, `chunk ${n}`);
  }
  assertEquals(whole.filter((e) => e.startsWith("entry")).length, 5);
});

Deno.test("tar: data chunks are zero-copy views of the pushed bytes", () => {
  const bytes = new TarWriter().file("a", "x".repeat(2000)).bytes();
  const seen: Uint8Array[] = [];
  const p = new TarParser({ entry() {}, data: (c) => seen.push(c), entryEnd() {} });
  p.push(bytes);
  p.end();
  assertEquals(seen.length, 1);
  assert(seen[0].buffer === bytes.buffer, "data is a subarray of the input");
  assertEquals(seen[0].byteOffset, 512);
});

Deno.test("tar: fractional mtime and atime via pax, integer in gnu", () => {
  const w = (format: "pax" | "gnu") =>
    readTar(
      new TarWriter({ format }).file("f", "", { mtime: 1700000000.123456, atime: 1600000000.5 })
        .bytes(),
    )[0]
      .header;
  const pax = w("pax");
  assertEquals(pax.mtime, 1700000000.123456);
  assertEquals(pax.atime, 1600000000.5);
  assertEquals(w("gnu").mtime, 1700000000);
  assertEquals(
    readTar(new TarWriter().file("f", "", { mtime: new Date(5000) }).bytes())[0].header.mtime,
    5,
  );
});

Deno.test("tar: xattrs from SCHILY records, binary and empty values; LIBARCHIVE records ignored", () => {
  const bin = new Uint8Array([0, 1, 2, 255, 10, 61]);
  const xattrs = {
    "user.a": "1",
    "security.capability": bin,
    "user.empty": "",
    "user.sp ace": "y",
  };
  const h = readTar(new TarWriter().file("f", "", { xattrs }).bytes())[0].header;
  // An empty value is an empty xattr: Go keeps the record in PAXRecords, which
  // docker and containerd set, and GNU tar and libarchive list it.
  assertEquals(Object.keys(h.xattrs).sort(), Object.keys(xattrs).sort());
  assertEquals(h.xattrs["security.capability"], bin);
  assertEquals(text(h.xattrs["user.a"]), "1");
  assertEquals(h.xattrs["user.empty"], new Uint8Array(0));
  // libarchive's own records: Go and GNU tar ignore them; libarchive writes a
  // SCHILY record beside each. One alone (libarchive would set an xattr the
  // others do not) is refused.
  assertThrows(
    () => readTar(new TarWriter({ xattrRecords: "libarchive" }).file("f", "", { xattrs }).bytes()),
    TarFormatError,
    "does not repeat a SCHILY.xattr record",
  );
  const both = readTar(
    new TarWriter().file("f", "", {
      xattrs: { "user.a": "1" },
      pax: { "LIBARCHIVE.xattr.user.a": "MQ" },
    }).bytes(),
  );
  assertEquals(Object.keys(both[0].header.xattrs), ["user.a"]);
  // GNU tar decodes %3D and %25 in xattr names, Go does not: refused.
  assertThrows(
    () => readTar(new TarWriter().file("f", "", { xattrs: { "user.a=b": "v" } }).bytes()),
    TarFormatError,
    "%3D and %25",
  );
});

Deno.test("tar: global pax headers are checked, then ignored (as Go, docker, containerd, libarchive)", () => {
  const warnings: string[] = [];
  const bytes = new TarWriter()
    .file("before", "")
    .globalPax({ uid: "7", gname: "g", mtime: "123.5", "SCHILY.xattr.user.g": "G", comment: "c" })
    .file("a", "", { uid: 1 })
    .file("b", "", { pax: { uid: "9" }, xattrs: { "user.l": "L" } })
    .bytes();
  const m = byName(readTar(bytes, { onWarning: (w) => warnings.push(w) }));
  const a = m.get("a")!.header;
  assertEquals([a.uid, a.gname, a.mtime, a.xattrs], [1, "", 0, {}]);
  const b = m.get("b")!.header;
  assertEquals([b.uid, Object.keys(b.xattrs)], [9, ["user.l"]]);
  // GNU tar would apply them: said once, naming the records.
  assertEquals(warnings.length, 1);
  assertStringIncludes(warnings[0], "uid, gname, mtime, SCHILY.xattr.user.g");
  // Malformed global records are refused, as Go refuses them.
  assertThrows(
    () => readTar(new TarWriter().globalPax({ uid: "x" }).file("a", "").bytes()),
    TarFormatError,
    "pax record uid",
  );
  // Go drops the extended records read before a global header; GNU tar keeps them.
  const between = new TarWriter().raw(paxHeader("14 path=named\n"))
    .globalPax({ comment: "c" }).file("a", "").bytes();
  assertThrows(() => readTar(between), TarFormatError, "global pax header ('g') comes between");
});

Deno.test("tar: ustar prefix, GNU long names, pax over GNU, base-256 and signed checksums", () => {
  const name = "p".repeat(120) + "/" + "n".repeat(90);
  let h = readTar(new TarWriter().file(name, "").bytes())[0].header;
  assertEquals(h.name, name);
  h = readTar(new TarWriter().file("abc/def", "", { splitPrefixAt: 3 }).bytes())[0].header;
  assertEquals(h.name, "abc/def");
  // A GNU L record and a pax path for the same entry: Go takes the L record,
  // GNU tar the pax one, libarchive the first. Refused unless they agree.
  const both = new TarWriter({ format: "gnu" }).file(LONG, "", { pax: { path: "from-pax" } })
    .bytes();
  assertThrows(() => readTar(both), TarFormatError, "a GNU long name and a pax path");
  const same = new TarWriter({ format: "gnu" }).file(LONG, "", { pax: { path: LONG } }).bytes();
  assertEquals(readTar(same)[0].header.name, LONG);
  h = readTar(
    new TarWriter({ format: "gnu" }).file("b", "abc", {
      uid: 5,
      gid: 6,
      mtime: 99,
      base256: ["uid", "gid", "size", "mtime"],
    }).bytes(),
  )[0].header;
  assertEquals([h.uid, h.gid, h.size, h.mtime], [5, 6, 3, 99]);
  // A negative mtime in base-256 (before 1970).
  h =
    readTar(new TarWriter({ format: "gnu" }).file("old", "", { mtime: -86400 }).bytes())[0].header;
  assertEquals(h.mtime, -86400);
  // Signed checksums only differ when a header byte is >= 0x80.
  h = readTar(new TarWriter().file("é", "", { signedChecksum: true }).bytes())[0].header;
  assertEquals(h.name, "é");
});

Deno.test("tar: old archives: NUL type flag, trailing-slash directories, no magic", () => {
  const bytes = new TarWriter()
    .file("olddir/", "", { typeflag: "\0" })
    .file("oldfile", "abc", { typeflag: "\0" })
    .bytes();
  // Strip the magic of the second entry (a V7 header) and fix its checksum.
  const b = bytes.slice();
  const h = b.subarray(512, 1024);
  h.fill(0, 257, 265);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of h) sum += x;
  h.set(te.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  const m = byName(readTar(b));
  assertEquals(m.get("olddir/")!.header.type, "directory");
  assertEquals([m.get("oldfile")!.header.type, text(m.get("oldfile")!.data)], ["file", "abc"]);
  // A trailing-slash '\0' directory with a body: GNU tar skips it, Go and libarchive do not.
  assertThrows(
    () => readTar(new TarWriter().file("d/", "x", { typeflag: "\0" }).bytes()),
    TarFormatError,
    "with a size of 1",
  );
  // On a '0' entry Go reads a file named "d/", GNU tar and libarchive a directory.
  assertThrows(
    () => readTar(new TarWriter().file("d/", "", { typeflag: "0" }).bytes()),
    TarFormatError,
    "type '0') whose name ends in '/'",
  );
});

Deno.test("tar: entry types docker and containerd cannot apply are refused", () => {
  // Go's archive/tar hands them over as they are and docker and containerd
  // refuse them; GNU tar and libarchive would extract them as regular files.
  for (
    const [flag, what] of [
      ["V", "GNU volume label"],
      ["Z", ""],
      ["D", "GNU dump directory"],
      ["7", "contiguous file"],
      ["X", "Solaris extended header"],
      ["M", "GNU multi-volume continuation"],
    ]
  ) {
    const bytes = new TarWriter({ format: "gnu" }).file("x", "data", { typeflag: flag })
      .file("after", "ok").bytes();
    assertThrows(
      () => readTar(bytes),
      TarFormatError,
      `entry type "${flag}"${what ? ` (${what}` : ""}`,
    );
  }
});

Deno.test("tar: directories never carry data; links, devices and fifos with a size are refused", () => {
  // A directory header claiming 600 bytes: the next header follows immediately
  // (Go's archive/tar, GNU tar and libarchive agree).
  const bytes = new TarWriter().directory("d/", { declaredSize: 600 }).file("f", "body").bytes();
  const entries = readTar(bytes);
  assertEquals(entries.map((e) => [e.header.name, e.header.size]), [["d/", 0], ["f", 4]]);
  // Go and libarchive read no body after a symlink claiming one, GNU tar skips one.
  assertThrows(
    () => readTar(new TarWriter().symlink("l", "t", { declaredSize: 1000 }).file("f", "x").bytes()),
    TarFormatError,
    "a symlink with a size of 1000",
  );
});

Deno.test("tar: sparse files in all four GNU formats hand out file offsets", () => {
  const segs = [{ offset: 1024, data: "a".repeat(700) }, { offset: 100000, data: "bcd" }];
  const expected = new Uint8Array(200000);
  expected.set(te.encode("a".repeat(700)), 1024);
  expected.set(te.encode("bcd"), 100000);
  for (const sparseFormat of ["pax1.0", "pax0.1", "pax0.0", "gnu"] as const) {
    const bytes = new TarWriter().sparseFile("dir/sp", 200000, segs, { sparseFormat, mode: 0o600 })
      .file("next", "n").bytes();
    const entries = readTar(bytes);
    assertEquals(entries.map((e) => e.header.name), ["dir/sp", "next"], sparseFormat);
    const h = entries[0].header;
    assertEquals([h.type, h.realSize, h.mode], ["file", 200000, 0o600], sparseFormat);
    assertEquals(h.sparse![0], { offset: 1024, size: 1024 }, sparseFormat); // padded to whole blocks
    assertEquals(h.size, 1027, sparseFormat);
    assertEquals(sparseContent(bytes, "dir/sp"), expected, sparseFormat);
  }
});

// ---- GNU tar -> parser ----------------------------------------------------------

async function gnuTree(dir: string): Promise<void> {
  const src = join(dir, "src");
  await Deno.mkdir(join(src, "sub/deeper"), { recursive: true });
  await Deno.writeTextFile(join(src, "sub/file.txt"), "hello gnu\n");
  await Deno.writeFile(
    join(src, "sub/deeper/" + "long-".repeat(40)),
    new Uint8Array(3000).fill(65),
  );
  await Deno.symlink("../" + "target-".repeat(30), join(src, "sub/longlink"));
  await Deno.link(join(src, "sub/file.txt"), join(src, "sub/hard"));
  await sh("mkfifo", [join(src, "fifo")]);
  // Sparse: two data islands in 3 MiB, ending in a hole.
  const sp = await Deno.open(join(src, "sparse"), { write: true, create: true });
  await sp.truncate(3 << 20);
  await sp.seek(8192, Deno.SeekMode.Start);
  await sp.write(new Uint8Array(4096).fill(1));
  await sp.seek(2 << 20, Deno.SeekMode.Start);
  await sp.write(new Uint8Array(100).fill(2));
  sp.close();
  await sh("setfattr", ["-n", "user.x", "-v", "xval", join(src, "sub/file.txt")]);
  await sh("touch", ["-h", "-d", "@1700000000.25", join(src, "sub/file.txt")]);
  if (isRoot) {
    await sh("mknod", [join(src, "chr"), "c", "1", "7"]);
    await Deno.chown(join(src, "sub/file.txt"), 2345678, 4242);
  }
  await Deno.chmod(join(src, "sub/file.txt"), 0o4711); // after chown, which clears setuid
}

const gnuFormats: [string, string[]][] = [
  ["pax", ["--format=pax"]],
  ["gnu", ["--format=gnu"]],
  ["pax sparse 1.0", ["--format=pax", "--sparse"]],
  ["pax sparse 0.1", ["--format=pax", "--sparse", "--sparse-version=0.1"]],
  ["pax sparse 0.0", ["--format=pax", "--sparse", "--sparse-version=0.0"]],
  ["gnu sparse", ["--format=gnu", "--sparse"]],
];

Deno.test("tar: parses what GNU tar writes (pax, gnu, sparse formats, xattrs)", async (t) => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  await gnuTree(dir);
  const src = join(dir, "src");
  const sparseReal = await Deno.readFile(join(src, "sparse"));
  const fileStat = await Deno.lstat(join(src, "sub/file.txt"));
  for (const [label, flags] of gnuFormats) {
    await t.step(label, async () => {
      const tarPath = join(dir, "gnu.tar");
      await sh("tar", [
        ...flags,
        "--xattrs",
        "--xattrs-include=user.*",
        "-C",
        src,
        "-cf",
        tarPath,
        ".",
      ]);
      const bytes = await Deno.readFile(tarPath);
      const m = byName(readTar(bytes));
      const f = m.get("./sub/file.txt")!;
      assertEquals(text(f.data), "hello gnu\n");
      assertEquals(f.header.mode, 0o4711);
      assertEquals([f.header.uid, f.header.gid], [fileStat.uid, fileStat.gid]);
      // GNU tar adds pax records (with the exact mtime) to gnu archives too when --xattrs is on.
      if (label.startsWith("pax")) assertEquals(f.header.mtime, 1700000000.25);
      else assertEquals(Math.floor(f.header.mtime), 1700000000);
      assertEquals(text(f.header.xattrs["user.x"] ?? new Uint8Array()), "xval");
      const long = m.get("./sub/deeper/" + "long-".repeat(40))!;
      assertEquals(long.data, new Uint8Array(3000).fill(65));
      assertEquals(m.get("./sub/longlink")!.header.linkname, "../" + "target-".repeat(30));
      const hard = m.get("./sub/hard") ?? m.get("./sub/file.txt")!;
      assert(["hardlink", "file"].includes(hard.header.type));
      assertEquals(m.get("./fifo")!.header.type, "fifo");
      assertEquals(m.get("./sub/")?.header.type ?? m.get("./sub")?.header.type, "directory");
      if (isRoot) {
        const c = m.get("./chr")!.header;
        assertEquals([c.type, c.devmajor, c.devminor], ["char", 1, 7]);
      }
      const sp = m.get("./sparse")!.header;
      if (flags.includes("--sparse")) {
        assert(
          sp.sparse && sp.sparse.length >= 2,
          `${label}: sparse map ${JSON.stringify(sp.sparse)}`,
        );
        assertEquals(sp.realSize, 3 << 20);
        assert(sp.size < 20000, `${label}: only data stored (${sp.size})`);
      }
      assertEquals(sparseContent(bytes, "./sparse"), sparseReal, label);
    });
  }
});

Deno.test("tar: parses GNU tar's ustar (prefix field), v7 and oldgnu archives", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  const src = join(dir, "src");
  const deep = "a".repeat(90) + "/" + "b".repeat(60);
  await Deno.mkdir(join(src, deep), { recursive: true });
  await Deno.writeTextFile(join(src, deep, "c".repeat(95)), "prefixed");
  await Deno.symlink("f", join(src, "ln"));
  for (const format of ["ustar", "v7", "oldgnu"]) {
    const tarPath = join(dir, `${format}.tar`);
    // v7 cannot hold names over 100 bytes: give it the short entries only.
    const what = format === "v7" ? ["ln"] : ["."];
    await sh("tar", [`--format=${format}`, "-C", src, "-cf", tarPath, ...what]);
    const m = byName(readTar(await Deno.readFile(tarPath)));
    if (format !== "v7") {
      const f = m.get(`./${deep}/${"c".repeat(95)}`);
      assert(f, `${format}: ${[...m.keys()].join(", ")}`);
      assertEquals(text(f.data), "prefixed");
    }
    const ln = m.get(format === "v7" ? "ln" : "./ln")!.header;
    assertEquals([ln.type, ln.linkname], ["symlink", "f"]);
  }
});

Deno.test("tar: writer take() pieces and stream() chunks make the same archive as bytes()", async () => {
  const w = new TarWriter().file("a", "1".repeat(700));
  const first = w.take();
  w.file("b", "2");
  const rest = w.bytes();
  const whole = new TarWriter().file("a", "1".repeat(700)).file("b", "2").bytes();
  assertEquals(new Uint8Array([...first, ...rest]), whole);
  const chunks: Uint8Array[] = [];
  for await (
    const c of new TarWriter().file("a", "1".repeat(700)).file("b", "2").stream({ chunkSize: 100 })
  ) {
    assert(c.length <= 100);
    chunks.push(c);
  }
  assertEquals(new Uint8Array(chunks.flatMap((c) => [...c])), whole);
});

Deno.test("tar: parses a gzip and a zstd blob streamed through node:zlib and DecompressionStream", async () => {
  const tar = everything("pax").bytes();
  assertEquals(gunzipSync(gzip(tar)).length, tar.length);
  assertEquals(zstdDecompressSync(zstd(tar)).length, tar.length);
  const entries: TarHeader[] = [];
  const stream = new Blob([gzip(tar)]).stream().pipeThrough(new DecompressionStream("gzip"));
  await untar(stream, { entry: (h) => entries.push(h), data() {}, entryEnd() {} });
  assertEquals(entries.length, 15);
});

// ---- damaged and hostile archives ------------------------------------------------

Deno.test("tar: a bad header checksum is an error naming the entry", () => {
  const bytes = new TarWriter().file("good", "1").file("evil", "2", { checksum: "bad" }).bytes();
  const e = assertThrows(() => readTar(bytes), TarFormatError, "invalid header checksum");
  assertStringIncludes(e.message, '"evil"');
  assertEquals(e.offset, 1024);
  // Random garbage is not a tar archive.
  assertThrows(
    () => readTar(new Uint8Array(1024).fill(0x41)),
    TarFormatError,
    "checksum",
  );
});

Deno.test("tar: truncation at any offset is detected, except between whole entries", () => {
  const w = new TarWriter()
    .file("a", "x".repeat(700))
    .file(LONG, "y".repeat(10), { xattrs: { "user.q": "1" } })
    .sparseFile("s", 9000, [{ offset: 10, data: "abc" }, { offset: 5000, data: "de" }])
    .sparseFile(
      "g",
      99999,
      Array.from({ length: 6 }, (_, i) => ({ offset: i * 4096, data: "g" })),
      {
        sparseFormat: "gnu",
      },
    )
    .directory("d/");
  const full = w.bytes({ endOfArchive: false });
  // Entry boundaries: where a parse without end marker is complete.
  const boundaries = new Set<number>();
  {
    let count = 0;
    const p = new TarParser({ entry() {}, data() {}, entryEnd: () => count++ });
    for (let o = 0; o < full.length; o += 512) {
      p.push(full.subarray(o, o + 512));
      if (count > boundaries.size) boundaries.add(o + 512);
    }
  }
  assertEquals(boundaries.size, 5);
  let errors = 0;
  for (let cut = 1; cut < full.length; cut += cut < 4096 ? 61 : 509) {
    const bytes = full.subarray(0, cut);
    if (boundaries.has(cut)) {
      readTar(bytes);
      continue;
    }
    let e: TarFormatError;
    try {
      readTar(bytes);
      throw new Error(`no error for a cut at ${cut}`);
    } catch (err) {
      assertInstanceOf(err, TarFormatError, `cut at ${cut}: ${err}`);
      e = err;
    }
    assertStringIncludes(e.message, "ends inside");
    errors++;
    // The pax header of LONG spans 1536..2560, its ustar header 2560..3072, its data 3072..3584.
    if (cut > 2560 && cut < 3584) assertStringIncludes(e.message, LONG.slice(0, 40));
  }
  assert(errors > 50, `${errors} truncations checked`);
  // Whole entries and no end-of-archive marker: accepted, as GNU tar does.
  assertEquals(readTar(full).length, 5);
  // One of the two end blocks: accepted too.
  assertEquals(readTar(w.bytes({ truncateAt: full.length + 512 })).length, 5);
  // Cut inside the second block of the end marker is still fine (both are zero).
  assertEquals(readTar(w.bytes({ truncateAt: full.length + 700 })).length, 5);
});

Deno.test("tar: oversized pax and GNU long-name records are refused before allocation", () => {
  const limit = 1 << 20;
  const big = "k".repeat(limit + 10);
  for (const format of ["pax", "gnu"] as const) {
    const bytes = new TarWriter({ format }).file(big, "x").bytes({ truncateAt: 2048 });
    const e = assertThrows(() => readTar(bytes), TarFormatError, "exceeds the limit");
    assertStringIncludes(e.message, String(limit));
  }
  // A lying size field in a pax header: refused from the header alone.
  const lie = new TarWriter().file("f", "", { pax: { "x": "y" } }).bytes();
  lie.set(te.encode("77777777777\0"), 124); // 8 GiB pax body
  fixChecksum(lie.subarray(0, 512));
  assertThrows(() => readTar(lie), TarFormatError, "exceeds the limit");
  // Many extended headers before one entry: bounded together.
  const many = new TarWriter();
  for (let i = 0; i < 30; i++) many.raw(paxHeader(`100 comment=${"c".repeat(87)}\n`));
  many.file("f", "");
  assertThrows(
    () => readTar(many.bytes(), { maxMetaSize: 1000 }),
    TarFormatError,
    "extended headers for one entry total",
  );
  // The limit is an option.
  assertThrows(
    () => readTar(new TarWriter().file("a".repeat(300), "").bytes(), { maxMetaSize: 100 }),
    TarFormatError,
    "exceeds the limit of 100",
  );
});

function fixChecksum(h: Uint8Array): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of h) sum += x;
  h.set(te.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
}

Deno.test("tar: malformed fields and records are errors", () => {
  // Non-octal size field.
  const b1 = new TarWriter().file("f", "abc").bytes();
  b1.set(te.encode("12x45678901\0"), 124);
  fixChecksum(b1.subarray(0, 512));
  assertThrows(() => readTar(b1), TarFormatError, "invalid size field");
  // Malformed pax record (length does not match).
  const b2 = new TarWriter().raw(paxHeader("99 path=x\n")).file("f", "").bytes();
  assertThrows(() => readTar(b2), TarFormatError, "malformed pax record");
  // pax uid that is not a number.
  const b3 = new TarWriter().file("f", "", { pax: { uid: "12a" } }).bytes();
  assertThrows(() => readTar(b3), TarFormatError, "pax record uid");
  // Pax header with nothing after it.
  const b4 = new TarWriter().raw(paxHeader("10 path=x\n")).bytes();
  assertThrows(() => readTar(b4), TarFormatError, "extended header records");
  // A NUL inside a pax path: C tools would read a shorter, different name.
  const b7 = new TarWriter().file("x", "", { pax: { path: "l/secret\0ignored" } }).bytes();
  assertThrows(() => readTar(b7), TarFormatError, "pax record path contains a NUL byte");
  // Sparse maps that do not add up.
  const b5 = new TarWriter().file("s", "abc", {
    pax: { "GNU.sparse.map": "0,5", "GNU.sparse.size": "10", "GNU.sparse.numblocks": "1" },
  }).bytes();
  assertThrows(() => readTar(b5), TarFormatError, "sparse map holds 5 bytes");
  const b6 = new TarWriter().file("s", "abc", {
    pax: { "GNU.sparse.map": "8,3", "GNU.sparse.size": "10", "GNU.sparse.numblocks": "1" },
  }).bytes();
  assertThrows(() => readTar(b6), TarFormatError, "past the file size");
});

function paxHeader(body: string): Uint8Array {
  const w = new TarWriter().file("PaxHeaders/x", body, { typeflag: "x" }).bytes({
    endOfArchive: false,
  });
  return w;
}

Deno.test("tar: a lone zero block followed by an entry is refused (hidden entries)", () => {
  const a = new TarWriter().file("a", "1").bytes({ endOfArchive: false });
  const hidden = new TarWriter().file("hidden", "2").bytes();
  const bytes = new Uint8Array(a.length + 512 + hidden.length);
  bytes.set(a);
  bytes.set(hidden, a.length + 512);
  assertThrows(() => readTar(bytes), TarFormatError, "single zero block");
  // After two zero blocks, anything (record padding) is ignored.
  const padded = new Uint8Array(a.length + 1024 + hidden.length);
  padded.set(a);
  padded.set(hidden, a.length + 1024);
  assertEquals(readTar(padded).map((e) => e.header.name), ["a"]);
});

Deno.test("tar: a wrong declared size desynchronises into a named error", () => {
  const longer = new TarWriter().file("liar", "abc", { declaredSize: 5000 }).file("next", "z")
    .bytes();
  assertThrows(() => readTar(longer), TarFormatError, '"liar"');
  const shorter = new TarWriter().file("liar", "a".repeat(1200), { declaredSize: 10 }).file(
    "next",
    "z",
  )
    .bytes();
  assertThrows(() => readTar(shorter), TarFormatError, "checksum");
});

Deno.test("tar: hostile names pass through verbatim (the applicator confines them)", () => {
  const names = ["../../etc/passwd", "/abs/path", "a/../../x", "./.", "a//b", ".wh..wh..opq"];
  const w = new TarWriter();
  for (const n of names) w.file(n, "");
  w.symlink("ln", "../../../../");
  w.hardlink("hl", "/etc/shadow");
  const entries = readTar(w.bytes());
  assertEquals(entries.map((e) => e.header.name), [...names, "ln", "hl"]);
  assertEquals(entries.at(-1)!.header.linkname, "/etc/shadow");
});

Deno.test("tar: a throwing sink stops the parser; pushes after failure or end() throw", () => {
  const bytes = new TarWriter().file("a", "1").file("b", "2").bytes();
  const p = new TarParser({
    entry(h) {
      if (h.name === "b") throw new Error("sink says no");
    },
    data() {},
    entryEnd() {},
  });
  assertThrows(() => p.push(bytes), Error, "sink says no");
  assertThrows(() => p.push(new Uint8Array(512)), Error, "sink says no");
  const q = new TarParser({ entry() {}, data() {}, entryEnd() {} });
  q.push(bytes);
  q.end();
  assertThrows(() => q.push(bytes), Error, "after end()");
});

Deno.test("tar: untar rejects truncated streams and stops on abort", async () => {
  const w = new TarWriter().file("a", "x".repeat(100000)).file("b", "y");
  await assertRejects(
    () =>
      untar(w.stream({ truncateAt: 50000, chunkSize: 4096 }), {
        entry() {},
        data() {},
        entryEnd() {},
      }),
    TarFormatError,
    "ends inside the entry's data",
  );
  const ac = new AbortController();
  let chunks = 0;
  const err = await assertRejects(() =>
    untar(w.stream({ chunkSize: 1024 }), {
      entry() {},
      data() {
        if (++chunks === 3) ac.abort(new Error("stop now"));
      },
      entryEnd() {},
    }, ac.signal)
  );
  assertEquals(err.message, "stop now");
  assert(chunks < 10, `stopped early (${chunks} chunks)`);
});

Deno.test("tar: TarFormatError carries entry and offset", () => {
  const e = new TarFormatError("why", 1536, "etc/x");
  assertInstanceOf(e, Error);
  assertEquals([e.entry, e.offset, e.name], ["etc/x", 1536, "TarFormatError"]);
  assertEquals(e.message, 'Cannot read the tar archive: entry "etc/x" (header at byte 1536): why');
});

Deno.test("tar: GNU tar reports the writer's hostile archives as damaged too", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  const p = join(dir, "bad.tar");
  await Deno.writeFile(p, new TarWriter().file("a", "1", { checksum: "bad" }).bytes());
  const r = await run("tar", ["-tf", p]);
  assert(r.code !== 0, "GNU tar rejects a bad checksum");
  await Deno.writeFile(p, new TarWriter().file("a", "x".repeat(5000)).bytes({ truncateAt: 2000 }));
  assert((await run("tar", ["-tf", p])).code !== 0, "GNU tar rejects truncation");
});
