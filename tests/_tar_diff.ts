/**
 * The tar reader differential: the same bytes read by strata's parser, by GNU
 * tar (`tar -tvv --numeric-owner --full-time --xattrs`, and `tar -xO` for
 * the contents) and by libarchive (bsdtar's reader, through FFI), each
 * reduced to one comparable listing, and {@linkcode compareReadings}, which
 * says where strata reads an archive differently from the others.
 *
 * The rule (issue #14): for every input, strata either refuses it with a
 * {@linkcode TarFormatError}, or it lists exactly the entries the other
 * readers list, field by field. Where GNU tar and libarchive disagree among
 * themselves, strata must side with one of them (the documented choice in
 * layer/tar.ts follows Go's archive/tar, which docker and containerd use);
 * where both refuse, strata must refuse too. The known places where strata
 * follows Go against one of them are the `allowances` below, each with its
 * reason.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { TarFormatError, type TarHeader, TarParser } from "../layer/tar.ts";
import { encodeName } from "../sys/name.ts";
import { type LaEntry, libarchiveList, MAX_CONTENT } from "./_libarchive.ts";
import { isHeader } from "./_tar_mutate.ts";

/** One entry, as every reader can report it. Strings are byte-exact (see {@linkcode esc}). */
export interface NormEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  /** Not reported by the GNU tar listing (names are not quoted there). */
  uname?: string;
  gname?: string;
  mtime: number;
  /** Nanoseconds of the mtime (0 when the archive has whole seconds). */
  nsec: number;
  /** The access time's whole seconds, where the reader reports one (not GNU tar). */
  atime?: number;
  /** Regular files: the real size (holes included). */
  size?: number;
  /** Regular files: sha256 of the content. */
  sha?: string;
  /** Symlink and hardlink targets. */
  link?: string;
  /** Devices: `major,minor`. */
  dev?: string;
  /** `name=size` of each xattr, sorted (GNU tar lists no values). */
  xattrs: string[];
  /** `name=sha256` of each xattr value (strata and libarchive). */
  xattrValues?: string[];
  /** strata only, not compared: the offset of the entry's own header block. */
  at?: number;
}

/** A reader's view of an archive: its entries, or the error that stopped it (entries up to there kept). */
export interface Reading {
  entries: NormEntry[];
  error?: string;
  /** Messages that did not stop the reader (GNU tar's stderr, libarchive's warnings). */
  warnings?: string[];
}

/** Bytes as a string: printable ASCII as is (backslash doubled), every other byte as `\xHH`. */
export function esc(b: Uint8Array): string {
  let s = "";
  for (const c of b) {
    if (c === 0x5c) s += "\\\\";
    else if (c >= 0x20 && c < 0x7f) s += String.fromCharCode(c);
    else s += `\\x${c.toString(16).padStart(2, "0")}`;
  }
  return s;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex").slice(0, 16);

// ---- strata ------------------------------------------------------------------

/** Reads `bytes` with strata's {@linkcode TarParser}, pushed in `chunk`-sized pieces. */
export function strataReading(bytes: Uint8Array, chunk = bytes.length || 1): Reading {
  const out: Reading = { entries: [], warnings: [] };
  let cur: { h: TarHeader; buf: Uint8Array | null; end: number } | null = null;
  const p: TarParser = new TarParser({
    entry(h) {
      const n = h.type === "file" ? (h.realSize ?? h.size) : 0;
      // a hostile sparse map's real size is not allocated: its content is not compared
      cur = { h, buf: n > MAX_CONTENT ? null : new Uint8Array(n), end: p.offset };
    },
    data(c, off) {
      cur!.buf?.set(c, off);
    },
    entryEnd() {
      const e = normStrata(cur!.h, cur!.buf);
      e.at = headerAt(bytes, cur!.end);
      out.entries.push(e);
      cur = null;
    },
  }, { onWarning: (m) => out.warnings!.push(m) });
  try {
    for (let o = 0; o < bytes.length; o += chunk) p.push(bytes.subarray(o, o + chunk));
    p.end();
  } catch (e) {
    if (!(e instanceof TarFormatError)) throw e;
    out.error = e.message;
  }
  return out;
}

/**
 * The entry header before `end` (where the parser was when it announced
 * the entry: after the header, or after a sparse map or extension blocks).
 */
function headerAt(bytes: Uint8Array, end: number): number | undefined {
  for (let at = Math.floor(end / 512) * 512 - 512, k = 0; at >= 0 && k < 64; at -= 512, k++) {
    if (isHeader(bytes, at) && !"xgLK".includes(String.fromCharCode(bytes[at + 156]))) return at;
  }
  return undefined;
}

function normStrata(h: TarHeader, data: Uint8Array | null): NormEntry {
  const sec = Math.floor(h.mtime);
  const nsec = h.mtimeNsec ?? Math.round((h.mtime - sec) * 1e9);
  const xs = Object.entries(h.xattrs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const e: NormEntry = {
    name: esc(encodeName(h.name)),
    type: h.type,
    mode: h.mode,
    uid: h.uid,
    gid: h.gid,
    uname: esc(encodeName(h.uname)),
    gname: esc(encodeName(h.gname)),
    mtime: sec,
    nsec,
    xattrs: xs.map(([k, v]) => `${k}=${v.length}`),
    xattrValues: xs.map(([k, v]) => `${k}=${sha(v)}`),
  };
  if (h.atime !== undefined) e.atime = Math.floor(h.atime);
  if (h.type === "file") {
    e.size = h.realSize ?? h.size;
    e.sha = data ? sha(data) : "?";
  }
  if (h.type === "symlink" || h.type === "hardlink") e.link = esc(encodeName(h.linkname));
  if (h.type === "char" || h.type === "block") e.dev = `${h.devmajor},${h.devminor}`;
  return e;
}

// ---- libarchive ----------------------------------------------------------------

const LA_TYPES: Record<number, string> = {
  0o100000: "file",
  0o040000: "directory",
  0o120000: "symlink",
  0o020000: "char",
  0o060000: "block",
  0o010000: "fifo",
};

/** Reads `bytes` with libarchive (as bsdtar: every format and filter). */
export function libarchiveReading(bytes: Uint8Array): Reading {
  const l = libarchiveList(bytes);
  const out: Reading = { entries: [], warnings: [] };
  // 0x30000 is ARCHIVE_FORMAT_TAR; anything else means libarchive took the bytes for another format.
  if (l.entries.length > 0 && (l.format & 0xff0000) !== 0x30000) {
    out.error = `read as another format (0x${l.format.toString(16)})`;
    return out;
  }
  for (const e of l.entries) {
    out.entries.push(normLa(e));
    if (e.warning) out.warnings!.push(`${esc(e.name)}: ${e.warning}`);
  }
  if (l.error) out.error = l.error;
  return out;
}

function normLa(e: LaEntry): NormEntry {
  let type = e.hardlink !== null ? "hardlink" : LA_TYPES[e.filetype] ?? `?${e.filetype}`;
  if (type === "symlink" && e.symlink === null) type = "symlink?";
  // libarchive lists an xattr given by both SCHILY and LIBARCHIVE records twice; the
  // last one is what an extractor would set.
  const xm = new Map<string, Uint8Array>();
  for (const [k, v] of e.xattrs) xm.set(k, v);
  const xs = [...xm].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const n: NormEntry = {
    name: esc(e.name),
    type,
    mode: e.perm & 0o7777,
    uid: e.uid,
    gid: e.gid,
    uname: esc(e.uname),
    gname: esc(e.gname),
    mtime: e.mtime,
    nsec: e.mtimeNsec,
    xattrs: xs.map(([k, v]) => `${k}=${v.length}`),
    xattrValues: xs.map(([k, v]) => `${k}=${sha(v)}`),
  };
  if (e.atime !== undefined) n.atime = e.atime;
  if (type === "file") {
    n.size = e.data ? e.data.length : e.size;
    n.sha = e.data ? sha(e.data) : "?";
  }
  if (type === "symlink") n.link = esc(e.symlink!);
  if (type === "hardlink") n.link = esc(e.hardlink!);
  if (type === "char" || type === "block") n.dev = `${e.devmajor},${e.devminor}`;
  return n;
}

// ---- GNU tar -------------------------------------------------------------------

/** GNU tar's contents are read up to this many bytes (past it, a SIGPIPE stops it). */
const GNU_CONTENT_CAP = 4 * MAX_CONTENT;

/** GNU tar's raw output for one archive (see {@linkcode gnuTarScript}). */
export interface GnuRaw {
  listing: Uint8Array;
  listErr: string;
  listCode: number;
  content: Uint8Array;
  contentErr: string;
  contentCode: number;
}

/**
 * Shell commands that run GNU tar on `file` and leave the listing, the
 * contents, their stderr and exit codes in `file.l`, `.le`, `.lc`, `.c`,
 * `.ce`, `.cc`: many archives go through one shell (a process per archive
 * would cost more than the rest of the test).
 */
export function gnuTarScript(file: string): string {
  const q = `'${file.replace(/'/g, "'\\''")}'`;
  return [
    `tar -tvv --numeric-owner --full-time --xattrs --quoting-style=c -P -f ${q} >${q}.l 2>${q}.le; echo $? >${q}.lc`,
    // through a pipe: on a seekable stdout, GNU tar seeks over a sparse file's holes from the
    // start of the output, not of the file
    // (and capped: a hostile sparse map may make a file of terabytes of holes)
    `{ tar -xO -P -f ${q} 2>${q}.ce; echo $? >${q}.cc; } | head -c ${GNU_CONTENT_CAP} >${q}.c`,
  ].join("\n");
}

/** Runs GNU tar on every file (in one shell) and returns the raw results in order. */
export async function runGnuTar(files: string[]): Promise<GnuRaw[]> {
  // two shells, one a core
  const half = Math.ceil(files.length / 2);
  await Promise.all([files.slice(0, half), files.slice(half)].map(async (part) => {
    if (part.length === 0) return;
    const r = await new Deno.Command("sh", {
      args: ["-c", part.map(gnuTarScript).join("\n")],
      env: { LC_ALL: "C", TZ: "UTC", PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!r.success) {
      throw new Error(`the GNU tar script failed: ${new TextDecoder().decode(r.stderr)}`);
    }
  }));
  const td = new TextDecoder();
  const out: GnuRaw[] = [];
  for (const f of files) {
    out.push({
      listing: Deno.readFileSync(`${f}.l`),
      listErr: td.decode(Deno.readFileSync(`${f}.le`)),
      listCode: Number(td.decode(Deno.readFileSync(`${f}.lc`)).trim()),
      content: Deno.readFileSync(`${f}.c`),
      contentErr: td.decode(Deno.readFileSync(`${f}.ce`)),
      contentCode: Number(td.decode(Deno.readFileSync(`${f}.cc`)).trim()),
    });
    for (const s of [".l", ".le", ".lc", ".c", ".ce", ".cc"]) Deno.removeSync(f + s);
  }
  return out;
}

/** Decodes one of GNU tar's C-quoted strings starting at `s[i]` (a `"`); returns bytes and the index after it. */
function unquote(s: Uint8Array, i: number): [Uint8Array, number] {
  if (s[i] !== 0x22) throw new Error(`expected a quoted name at ${i}`);
  const out: number[] = [];
  i++;
  while (i < s.length && s[i] !== 0x22) {
    let c = s[i++];
    if (c === 0x5c) {
      c = s[i++];
      const simple: Record<number, number> = {
        0x61: 7,
        0x62: 8,
        0x66: 12,
        0x6e: 10,
        0x72: 13,
        0x74: 9,
        0x76: 11,
        0x5c: 0x5c,
        0x22: 0x22,
        0x3f: 0x3f,
        0x27: 0x27,
      };
      if (c >= 0x30 && c <= 0x37) {
        let v = c - 0x30;
        for (let k = 0; k < 2 && s[i] >= 0x30 && s[i] <= 0x37; k++) v = v * 8 + s[i++] - 0x30;
        out.push(v);
      } else if (simple[c] !== undefined) out.push(simple[c]);
      else throw new Error(`unknown escape \\${String.fromCharCode(c)}`);
    } else out.push(c);
  }
  if (s[i] !== 0x22) throw new Error("unterminated quoted name");
  return [new Uint8Array(out), i + 1];
}

const GNU_TYPES: Record<string, string> = {
  "-": "file",
  d: "directory",
  l: "symlink",
  h: "hardlink",
  c: "char",
  b: "block",
  p: "fifo",
  C: "file",
  "?": "file",
};

function permOf(m: string): number {
  let v = 0;
  const bit = (i: number, set: string, b: number) => {
    if (set.includes(m[i])) v |= b;
  };
  bit(1, "r", 0o400), bit(2, "w", 0o200), bit(3, "xs", 0o100), bit(3, "sS", 0o4000);
  bit(4, "r", 0o40), bit(5, "w", 0o20), bit(6, "xs", 0o10), bit(6, "sS", 0o2000);
  bit(7, "r", 0o4), bit(8, "w", 0o2), bit(9, "xt", 0o1), bit(9, "tT", 0o1000);
  return v;
}

/** Seconds and nanoseconds of GNU tar's `--full-time` date and time (UTC), or of a bare number. */
function gnuTime(date: string, time: string | null): [number, number] {
  if (time === null) {
    const [s, f = ""] = date.split(".");
    return [Number(s), Number(f.padEnd(9, "0").slice(0, 9))];
  }
  const m = /^(-?\d+)-(\d\d)-(\d\d)$/.exec(date);
  const t = /^(\d\d):(\d\d):(\d\d)(?:\.(\d+))?$/.exec(time);
  if (!m || !t) throw new Error(`unreadable date ${date} ${time}`);
  const d = new Date(0);
  d.setUTCFullYear(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  d.setUTCHours(Number(t[1]), Number(t[2]), Number(t[3]), 0);
  return [d.getTime() / 1000, Number((t[4] ?? "").padEnd(9, "0").slice(0, 9))];
}

/** Turns GNU tar's listing and contents into a {@linkcode Reading}. */
export function gnuReading(raw: GnuRaw): Reading {
  const out: Reading = { entries: [], warnings: [] };
  const s = raw.listing;
  let i = 0;
  let off = 0; // into the concatenated contents
  const td = new TextDecoder("latin1");
  const capped = raw.content.length >= GNU_CONTENT_CAP;
  while (i < s.length) {
    let j = s.indexOf(0x0a, i);
    // a name may hold newlines only escaped, so a line ends at the first newline after the quotes
    if (j < 0) j = s.length;
    const lineStart = i;
    // "  x: SIZE NAME" lines belong to the previous entry
    if (s[i] === 0x20 && s[i + 1] === 0x20 && s[i + 2] === 0x78 && s[i + 3] === 0x3a) {
      const line = td.decode(s.subarray(i, j));
      const m = /^ {2}x: (\d+) (.*)$/.exec(line);
      const last = out.entries[out.entries.length - 1];
      if (!m || !last) throw new Error(`unreadable xattr line ${JSON.stringify(line)}`);
      last.xattrs.push(`${m[2]}=${m[1]}`);
      last.xattrs.sort();
      i = j + 1;
      continue;
    }
    const q = s.indexOf(0x22, i);
    if (q < 0 || q > j) {
      throw new Error(`unreadable listing line ${JSON.stringify(td.decode(s.subarray(i, j)))}`);
    }
    const head = td.decode(s.subarray(lineStart, q)).trimEnd();
    const [nameBytes, afterName] = unquote(s, q);
    let k = afterName;
    let link: Uint8Array | undefined;
    let linkKind = "";
    const rest = td.decode(s.subarray(k, Math.min(k + 10, s.length)));
    if (rest.startsWith(" -> ")) {
      linkKind = "symlink";
      [link, k] = unquote(s, k + 4);
    } else if (rest.startsWith(" link to ")) {
      linkKind = "hardlink";
      [link, k] = unquote(s, k + 9);
    }
    // what may follow a name: "--Volume Header--" and such for special entries
    const tail = td.decode(s.subarray(k, s.indexOf(0x0a, k) < 0 ? s.length : s.indexOf(0x0a, k)));
    i = (s.indexOf(0x0a, k) < 0 ? s.length : s.indexOf(0x0a, k)) + 1;
    const f = head.split(/ +/);
    // mode[*] owner size date time | mode owner size seconds
    const modeStr = f[0].slice(0, 10);
    const owner = /^(-?\d+)\/(-?\d+)$/.exec(f[1]);
    if (!owner) throw new Error(`unreadable owner in ${JSON.stringify(head)}`);
    let sizeTok = f[2];
    let fi = 3;
    if (/^\d+,$/.test(sizeTok)) sizeTok += f[fi++]; // "1, 3"
    const [mtime, nsec] = f.length > fi + 1 ? gnuTime(f[fi], f[fi + 1]) : gnuTime(f[fi], null);
    const t = GNU_TYPES[modeStr[0]] ?? `?${modeStr[0]}`;
    const type = linkKind || t;
    const e: NormEntry = {
      name: esc(nameBytes),
      type,
      mode: permOf(modeStr),
      uid: Number(owner[1]),
      gid: Number(owner[2]),
      mtime,
      nsec,
      xattrs: [],
    };
    if (tail) e.type += `?${tail}`;
    if (type === "file") {
      const size = Number(sizeTok);
      e.size = size;
      const data = raw.content.subarray(off, off + size);
      off += size;
      if (size > MAX_CONTENT || (capped && off > raw.content.length)) e.sha = "?";
      else e.sha = data.length === size ? sha(data) : `short(${data.length})`;
    }
    if (link) e.link = esc(link);
    if (type === "char" || type === "block") e.dev = sizeTok.replace(/ /g, "");
    out.entries.push(e);
  }
  const err = raw.listErr + raw.contentErr;
  // 141: SIGPIPE, when the contents were capped
  if (raw.listCode !== 0 || (raw.contentCode !== 0 && !(capped && raw.contentCode === 141))) {
    out.error = `exit ${raw.listCode}/${raw.contentCode}: ${err.trim()}`;
  } else if (err.trim()) out.warnings!.push(...err.trim().split("\n"));
  return out;
}

// ---- comparison ------------------------------------------------------------------

/** The fields compared, and which readers report each. */
const FIELDS: (keyof NormEntry)[] = [
  "name",
  "type",
  "mode",
  "uid",
  "gid",
  "uname",
  "gname",
  "mtime",
  "nsec",
  "atime",
  "size",
  "sha",
  "link",
  "dev",
  "xattrs",
  "xattrValues",
];

/** Tells whether strata's entry `e` may differ from another reader in `field` (strata's `x`, the other's `y`). */
export type Allowance = (e: NormEntry, field: keyof NormEntry, x: unknown, y: unknown) => boolean;

/**
 * The places where strata follows Go's archive/tar (docker, containerd)
 * against GNU tar and libarchive, each recognised from the entry's header
 * bytes (see layer/tar.ts for the reasons):
 * - a GNU header whose atime/ctime hold text Go cannot parse (Go before 1.8
 *   wrote a ustar prefix there): Go reads an ASCII prefix as part of the name;
 * - a header whose magic is neither exactly ustar's nor GNU's: Go reads it as
 *   V7, without owner names (libarchive reads them).
 */
export function goAllowances(bytes: Uint8Array): Allowance {
  return (e, field, x, y) => {
    if (e.at === undefined) return false;
    const h = bytes.subarray(e.at, e.at + 512);
    const magic = new TextDecoder("latin1").decode(h.subarray(257, 265));
    if (
      field === "name" && magic === "ustar  \0" && typeof x === "string" && typeof y === "string"
    ) {
      let n = 345;
      while (n < 500 && h[n] !== 0) n++;
      return esc(h.subarray(345, n)) + "/" + y === x;
    }
    if ((field === "uname" || field === "gname") && x === "") {
      return magic !== "ustar\x0000" && magic !== "ustar  \0";
    }
    return false;
  };
}

/** Where two listings differ, as readable lines (empty when they agree on every shared field). */
export function diffEntries(
  a: NormEntry[],
  b: NormEntry[],
  la: string,
  lb: string,
  allow?: Allowance,
): string[] {
  const out: string[] = [];
  if (a.length !== b.length) {
    out.push(`${la} lists ${a.length} entries, ${lb} ${b.length}`);
  }
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    for (const f of FIELDS) {
      const x = a[i][f], y = b[i][f];
      if (x === undefined || y === undefined) {
        if (f === "size" || f === "sha" || f === "link" || f === "dev") {
          if (x !== y) out.push(`entry ${i} (${a[i].name}): ${f}: ${la} ${x}, ${lb} ${y}`);
        }
        continue;
      }
      if (f === "sha" && (x === "?" || y === "?")) continue;
      const xs = JSON.stringify(x), ys = JSON.stringify(y);
      if (xs !== ys && !allow?.(a[i], f, x, y)) {
        out.push(`entry ${i} (${a[i].name}): ${f}: ${la} ${xs}, ${lb} ${ys}`);
      }
    }
  }
  return out;
}

/** The outcome of one differential case. */
export interface Verdict {
  /** Empty when strata's reading is acceptable under the rule (see the module doc). */
  problems: string[];
  strata: Reading;
  gnu?: Reading;
  lib?: Reading;
}

/**
 * Judges strata's reading of one archive against GNU tar's and libarchive's
 * (either may be missing). The rule: strata refuses, or it agrees with every
 * reader that read the archive without error, or, when those disagree among
 * themselves, with one of them; and it never accepts what every other reader
 * refuses.
 */
export function compareReadings(
  strata: Reading,
  gnu?: Reading,
  lib?: Reading,
  bytes?: Uint8Array,
): Verdict {
  const allow = bytes ? goAllowances(bytes) : undefined;
  const v: Verdict = { problems: [], strata, gnu, lib };
  if (strata.error !== undefined) return v; // a refusal is always safe
  const others = [["GNU tar", gnu], ["libarchive", lib]].filter(([, r]) => r) as [
    string,
    Reading,
  ][];
  const accepting = others.filter(([, r]) => r.error === undefined);
  if (others.length > 0 && accepting.length === 0) {
    v.problems.push(
      `strata accepts what ${others.map(([n, r]) => `${n} (${r.error})`).join(" and ")} refuse`,
    );
    return v;
  }
  const diffs: [string, string[]][] = accepting.map((
    [n, r],
  ) => [n, diffEntries(strata.entries, r.entries, "strata", n, allow)]);
  if (diffs.some(([, d]) => d.length === 0)) {
    // Agrees with at least one; with all, unless those disagree among themselves.
    if (accepting.length === 2) {
      const among = diffEntries(
        accepting[0][1].entries,
        accepting[1][1].entries,
        "GNU tar",
        "libarchive",
      );
      if (among.length === 0) {
        for (const [n, d] of diffs) if (d.length) v.problems.push(...d.map((x) => `${n}: ${x}`));
      }
    }
    return v;
  }
  for (const [n, d] of diffs) v.problems.push(...d.map((x) => `vs ${n}: ${x}`));
  return v;
}
