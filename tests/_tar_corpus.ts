/**
 * Real tarballs for the tar differential test, made by the tar
 * implementations found here, in every format each writes: GNU tar (gnu,
 * oldgnu, ustar, posix, v7; sparse in the old GNU format and pax 0.0, 0.1,
 * 1.0), libarchive (pax, restricted pax, ustar, gnutar, v7; bsdtar's writer
 * through FFI), MirBSD pax (ustar, tar), Python's tarfile (ustar, gnu, pax)
 * and strata's own {@linkcode TarWriter}. The same tree each time: names
 * long and short, non-ASCII and not UTF-8, links, devices (as root), a FIFO,
 * setuid and sticky modes, big ids, fractional and old times, xattrs, a
 * sparse file.
 *
 * @module
 */
import { join } from "@std/path";
import { TarWriter } from "../layer/tar_writer.ts";
import {
  type LaFormat,
  type LaWriteEntry,
  libarchiveMissing,
  libarchiveWrite,
} from "./_libarchive.ts";
import { have, isRoot, run, sh } from "./_helpers.ts";

/** One archive of the corpus. */
export interface CorpusArchive {
  /** Which tool and format made it, e.g. `gnu-tar --format=oldgnu`. */
  label: string;
  bytes: Uint8Array;
  /** The bytes differ from run to run (times GNU tar stores, directory order pax follows). */
  varies?: boolean;
}

const te = new TextEncoder();
const LONG_DIR = "dir-" + "d".repeat(95);
const LONG_FILE = "f".repeat(110);
const LONG_LINK = "../" + "target-".repeat(20);

/** Makes the tree every tool archives, below `src`, with a sparse file of `sparseSize` bytes. */
async function makeTree(src: string, sparseSize: number): Promise<void> {
  const script = [
    "set -e",
    `mkdir -p "${src}/sub/${LONG_DIR}" "${src}/sticky" "${src}/empty-dir"`,
    `printf 'hello\\n' > "${src}/sub/file.txt"`,
    `: > "${src}/empty"`,
    `head -c 3000 /dev/zero | tr '\\0' A > "${src}/sub/${LONG_DIR}/${LONG_FILE}"`,
    `ln -s "${LONG_LINK}" "${src}/sub/longlink"`,
    `ln -s file.txt "${src}/sub/link"`,
    `ln "${src}/sub/file.txt" "${src}/sub/hard"`,
    `mkfifo "${src}/fifo"`,
    `printf 'caf\\351' > "${src}/$(printf 'caf\\351')"`,
    `printf 'unicode' > "${src}/名前-é"`,
    `printf 'x' > "${src}/with space and \\"quote\\""`,
    `chmod 4711 "${src}/sub/file.txt"`,
    `chmod 1777 "${src}/sticky"`,
    `chmod 2755 "${src}/sub"`,
    `truncate -s ${sparseSize} "${src}/sparse"`,
    `printf 'data-at-1M' | dd of="${src}/sparse" bs=1 seek=${
      sparseSize / 3
    } conv=notrunc status=none`,
    `printf 'end' | dd of="${src}/sparse" bs=1 seek=${sparseSize - 3} conv=notrunc status=none`,
    `setfattr -n user.x -v xval "${src}/sub/file.txt"`,
    `setfattr -n user.bin -v 0x00ff01 "${src}/empty"`,
    `touch -h -d @1700000000.25 "${src}/sub/file.txt" "${src}/sub/link"`,
    `touch -d @-86400 "${src}/empty"`,
    `chown -h 3000000:2500000 "${src}/empty" 2>/dev/null || true`,
    // fixed times everywhere else, so the archives are the same from run to run
    `find "${src}" -depth ! -name file.txt ! -name link ! -name empty -exec touch -h -d @1700000100 {} +`,
  ];
  if (isRoot) {
    script.push(`mknod "${src}/chr" c 1 7`, `mknod "${src}/blk" b 8 1`);
  }
  await sh("sh", ["-c", script.join("\n")]);
}

/** The same tree as entries, for libarchive's and strata's writers. */
function treeEntries(sparseSize: number): LaWriteEntry[] {
  const sparse = new Uint8Array(sparseSize);
  sparse.set(te.encode("data-at-1M"), sparseSize / 3);
  sparse.set(te.encode("end"), sparseSize - 3);
  return [
    { name: "./", type: "directory", mode: 0o755 },
    { name: "./sub/", type: "directory", mode: 0o2755 },
    {
      name: "./sub/file.txt",
      type: "file",
      mode: 0o4711,
      data: te.encode("hello\n"),
      uid: 1000,
      gid: 1000,
      uname: "bob",
      gname: "staff",
      mtime: 1700000000,
      mtimeNsec: 250000000,
      xattrs: { "user.x": te.encode("xval") },
    },
    { name: `./sub/${LONG_DIR}/`, type: "directory" },
    {
      name: `./sub/${LONG_DIR}/${LONG_FILE}`,
      type: "file",
      data: new Uint8Array(3000).fill(65),
    },
    { name: "./sub/longlink", type: "symlink", link: LONG_LINK, mode: 0o777 },
    { name: "./sub/link", type: "symlink", link: "file.txt", mode: 0o777 },
    { name: "./sub/hard", type: "hardlink", link: "./sub/file.txt", mode: 0o4711 },
    { name: "./sticky/", type: "directory", mode: 0o1777 },
    {
      name: "./empty",
      type: "file",
      uid: 3000000,
      gid: 2500000,
      mtime: -86400,
      xattrs: { "user.bin": new Uint8Array([0, 255, 1]) },
    },
    { name: "./fifo", type: "fifo" },
    {
      name: new Uint8Array([0x2e, 0x2f, 0x63, 0x61, 0x66, 0xe9]),
      type: "file",
      data: te.encode("caf"),
    },
    { name: "./名前-é", type: "file", data: te.encode("unicode") },
    { name: "./chr", type: "char", devmajor: 1, devminor: 7, mode: 0o666 },
    { name: "./blk", type: "block", devmajor: 8, devminor: 1, mode: 0o660 },
    { name: "./sparse", type: "file", data: sparse },
  ];
}

/** Entries a format cannot hold are left out (v7: no long names, devices or big ids). */
function fits(format: LaFormat, e: LaWriteEntry): boolean {
  const n = typeof e.name === "string" ? te.encode(e.name).length : e.name.length;
  if (format === "v7tar") {
    return n < 100 && (e.link?.length ?? 0) < 100 && !["char", "block", "fifo"].includes(e.type) &&
      (e.uid ?? 0) < 0o7777777 && (e.mtime ?? 0) >= 0;
  }
  if (format === "ustar") {
    const base = typeof e.name === "string" ? e.name.replace(/\/$/, "").split("/").pop()! : "";
    return n <= 255 && te.encode(base).length <= 100 && (e.link?.length ?? 0) <= 100 &&
      (e.uid ?? 0) < 0o7777777 &&
      (e.mtime ?? 0) >= 0;
  }
  return true;
}

function strataArchives(sparseSize: number): CorpusArchive[] {
  const out: CorpusArchive[] = [];
  for (const format of ["pax", "gnu"] as const) {
    const w = new TarWriter({ format });
    for (const e of treeEntries(sparseSize)) {
      const o = {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        uname: e.uname,
        gname: e.gname,
        mtime: (e.mtime ?? 1700000000) + (e.mtimeNsec ?? 0) / 1e9,
        xattrs: e.xattrs,
      };
      if (e.type === "file" && e.name === "./sparse") {
        const d = e.data!;
        const segs = [
          { offset: sparseSize / 3, data: d.subarray(sparseSize / 3, sparseSize / 3 + 10) },
          { offset: d.length - 3, data: d.subarray(d.length - 3) },
        ];
        for (const sf of ["pax1.0", "pax0.1", "pax0.0", "gnu"] as const) {
          w.sparseFile(`./sparse-${sf}`, d.length, segs, { sparseFormat: sf, ...o });
        }
      } else if (e.type === "file") w.file(e.name, e.data ?? "", o);
      else if (e.type === "directory") w.directory(e.name, o);
      else if (e.type === "symlink") w.symlink(e.name, e.link!, o);
      else if (e.type === "hardlink") w.hardlink(e.name, e.link!, o);
      else if (e.type === "char") w.charDevice(e.name, e.devmajor!, e.devminor!, o);
      else if (e.type === "block") w.blockDevice(e.name, e.devmajor!, e.devminor!, o);
      else if (e.type === "fifo") w.fifo(e.name, o);
    }
    out.push({ label: `strata TarWriter ${format}`, bytes: w.bytes() });
  }
  return out;
}

function libarchiveArchives(sparseSize: number): CorpusArchive[] {
  if (libarchiveMissing()) return [];
  const out: CorpusArchive[] = [];
  for (const f of ["pax", "pax_restricted", "ustar", "gnutar", "v7tar"] as const) {
    const entries = treeEntries(sparseSize).filter((e) => fits(f, e)).map((e) => {
      // libarchive writes sparse files (GNU.sparse 1.0) in its pax formats only.
      if (e.name === "./sparse" && f.startsWith("pax")) {
        return {
          ...e,
          sparse: [{ offset: sparseSize / 3, size: 10 }, { offset: sparseSize - 3, size: 3 }],
        };
      }
      return e;
    });
    out.push({ label: `libarchive ${f}`, bytes: libarchiveWrite(f, entries) });
  }
  return out;
}

const PYTHON = `
import sys, tarfile, io
fmt = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}[sys.argv[1]]
src, out = sys.argv[2], sys.argv[3]
kw = {}
if sys.argv[1] == "pax":
    kw["pax_headers"] = {"comment": "made by python"}
with tarfile.open(out, "w", format=fmt, **kw) as t:
    def filt(ti):
        if sys.argv[1] == "ustar" and (len(ti.name.encode("utf-8", "surrogateescape")) > 255 or len(ti.name.rsplit("/", 1)[-1]) > 100 or len(ti.linkname) > 100 or ti.uid > 0o7777777 or ti.mtime < 0):
            return None
        if sys.argv[1] == "pax" and ti.name.endswith("file.txt"):
            ti.pax_headers["SCHILY.xattr.user.x"] = "xval"
        return ti
    t.add(src, arcname=".", filter=filt)
`;

/**
 * Builds the whole corpus in `dir` (a temp dir the caller removes), with a
 * sparse file of `sparseSize` bytes (a multiple of 3 × 512; small for fuzz
 * seeds, so that each case stays quick). Tools that are missing are skipped
 * and named in `skipped`.
 */
export async function buildCorpus(
  dir: string,
  sparseSize = 3 << 20,
): Promise<{ archives: CorpusArchive[]; skipped: string[] }> {
  const src = join(dir, "src");
  await makeTree(src, sparseSize);
  const archives: CorpusArchive[] = [];
  const skipped: string[] = [];
  const out = join(dir, "out.tar");
  const tool = async (label: string, cmd: string, args: string[], cwd?: string) => {
    await Deno.remove(out).catch(() => {});
    const r = await run(cmd, args, cwd ? { cwd } : {});
    if (r.code !== 0) throw new Error(`${label}: ${r.stderr}`);
    archives.push({ label, bytes: await Deno.readFile(out) });
  };
  const gnu = [
    ["--format=gnu"],
    ["--format=oldgnu"],
    ["--format=ustar"],
    ["--format=posix"],
    ["--format=v7"],
    ["--format=gnu", "--sparse"],
    ["--format=oldgnu", "--sparse"],
    ["--format=posix", "--sparse", "--sparse-version=0.0"],
    ["--format=posix", "--sparse", "--sparse-version=0.1"],
    ["--format=posix", "--sparse", "--sparse-version=1.0"],
    ["--format=posix", "--xattrs", "--xattrs-include=user.*", "--numeric-owner"],
    // GNU tar's default pax headers, with atime and ctime (these vary from run to run)
    ["--format=posix", "--atime-preserve"],
    ["--format=gnu", "--xattrs", "--xattrs-include=user.*", "--sparse"],
  ];
  for (const flags of gnu) {
    // ustar and v7 cannot hold everything: GNU tar says so and goes on (exit 2); keep what fits
    const fixed = flags[0] === "--format=posix" && flags[1] !== "--atime-preserve"
      ? ["--pax-option=delete=atime,delete=ctime", "--sort=name"]
      : ["--sort=name"];
    const r = await run("tar", [...flags, ...fixed, "-C", src, "-cf", out, "."]);
    if (r.code !== 0 && !(flags[0] === "--format=ustar" || flags[0] === "--format=v7")) {
      throw new Error(`tar ${flags.join(" ")}: ${r.stderr}`);
    }
    archives.push({
      label: `gnu-tar ${flags.join(" ")}`,
      bytes: await Deno.readFile(out),
      varies: flags.includes("--atime-preserve"),
    });
  }
  if (await have("pax")) {
    for (const x of ["ustar", "tar"]) {
      // pax also refuses what its format cannot hold and goes on; keep what it wrote
      await Deno.remove(out).catch(() => {});
      await run("pax", ["-w", "-x", x, "-f", out, "."], { cwd: src });
      archives.push({ label: `pax -x ${x}`, bytes: await Deno.readFile(out), varies: true });
    }
  } else skipped.push("pax (Debian's pax is not installed)");
  const python = (await have("python3")) ? "python3" : null;
  if (python) {
    for (const f of ["ustar", "gnu", "pax"]) {
      await tool(`python3 tarfile ${f}`, python, ["-c", PYTHON, f, src, out]);
    }
  } else skipped.push("python3 (its tarfile)");
  if (await have("bsdtar")) {
    for (const f of ["ustar", "pax", "gnutar", "v7tar", "paxr"]) {
      // bsdtar warns about what a format cannot hold and goes on; keep what it wrote
      await Deno.remove(out).catch(() => {});
      await run("bsdtar", ["--format", f, "-cf", out, "-C", src, "."]);
      archives.push({
        label: `bsdtar --format ${f}`,
        bytes: await Deno.readFile(out),
        varies: true,
      });
    }
  } else {
    skipped.push("bsdtar (libarchive-tools is not installed; libarchive's writer stands in)");
  }
  const la = libarchiveArchives(sparseSize);
  if (la.length === 0) skipped.push(`libarchive's writer (${libarchiveMissing()})`);
  archives.push(...la, ...strataArchives(sparseSize));
  return { archives, skipped };
}
