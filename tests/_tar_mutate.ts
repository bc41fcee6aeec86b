/**
 * Hand-made tar pieces and a seeded mutator for the tar differential fuzz
 * loop: headers with any field spelled any way (octal with odd padding,
 * base-256, garbage), pax record blocks (well-formed or not), and
 * {@linkcode mutate}, which turns a real tarball into a damaged or unusual
 * one by a few seeded edits (byte flips in headers, odd numeric encodings,
 * repeated and conflicting extended headers, NULs in names, truncations,
 * oversized records, changed type flags, magic and sparse maps).
 *
 * @module
 */

const te = new TextEncoder();

/** A small, fast, seedable PRNG (mulberry32). */
export class Rng {
  #s: number;
  /** Seeds the generator. */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** One of `xs`. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }
}

// ---- building blocks ----------------------------------------------------------

/** Field offsets and lengths of a ustar header. */
export const F = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
  // GNU: atime, ctime, then the old sparse map
  atime: [345, 12],
  ctime: [357, 12],
  sparse: [386, 96],
  isextended: [482, 1],
  realsize: [483, 12],
} as const;

/** Octal, zero-padded to fill `len - 1` digits, NUL-terminated (what most writers do). */
export function octal(v: number, len: number): Uint8Array {
  return te.encode(v.toString(8).padStart(len - 1, "0") + "\0");
}

/** GNU base-256: the top bit of the first byte set, big-endian two's complement. */
export function base256(v: number | bigint, len: number): Uint8Array {
  let x = BigInt(v);
  const out = new Uint8Array(len);
  if (x < 0n) x += 1n << BigInt(len * 8);
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  out[0] |= 0x80;
  return out;
}

/** Sets the header checksum (unsigned sum, six octal digits, NUL, space). */
export function fixChecksum(h: Uint8Array, at = 0): void {
  h.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += h[at + i];
  h.set(te.encode(sum.toString(8).padStart(6, "0") + "\0 "), at + 148);
}

/** Whether the block at `at` is a header with a valid (unsigned or signed) checksum. */
export function isHeader(b: Uint8Array, at: number): boolean {
  if (at + 512 > b.length) return false;
  // the stored checksum: octal digits between spaces and NULs
  let i = at + 148;
  const end = at + 156;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0, digits = 0;
  while (i < end && b[i] >= 0x30 && b[i] <= 0x37) v = v * 8 + b[i++] - 0x30, digits++;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  if (digits === 0 || i !== end) return false;
  let u = 8 * 0x20, s = 8 * 0x20;
  for (let k = at; k < at + 148; k++) u += b[k], s += b[k] < 128 ? b[k] : b[k] - 256;
  for (let k = at + 156; k < at + 512; k++) u += b[k], s += b[k] < 128 ? b[k] : b[k] - 256;
  return v === u || v === s;
}

/** Fields of {@linkcode header}; numbers are written in octal unless given as bytes. */
export interface HeaderFields {
  name?: string | Uint8Array;
  mode?: number | Uint8Array;
  uid?: number | Uint8Array;
  gid?: number | Uint8Array;
  size?: number | Uint8Array;
  mtime?: number | Uint8Array;
  typeflag?: string;
  linkname?: string | Uint8Array;
  /** `ustar` (POSIX, default), `gnu` (`ustar  \0`), `v7` (none), or raw magic+version bytes. */
  magic?: "ustar" | "gnu" | "v7" | Uint8Array;
  uname?: string | Uint8Array;
  gname?: string | Uint8Array;
  devmajor?: number | Uint8Array;
  devminor?: number | Uint8Array;
  prefix?: string | Uint8Array;
  /** Raw bytes put at offsets after everything else (before the checksum). */
  raw?: [number, Uint8Array][];
  /** Leave the checksum as the raw bytes say. */
  keepChecksum?: boolean;
}

/** One 512-byte header block. */
export function header(f: HeaderFields): Uint8Array {
  const h = new Uint8Array(512);
  const put = (field: keyof typeof F, v: string | number | Uint8Array | undefined) => {
    if (v === undefined) return;
    const [off, len] = F[field];
    const b = typeof v === "number" ? octal(v, len) : typeof v === "string" ? te.encode(v) : v;
    h.set(b.subarray(0, len), off);
  };
  put("name", f.name ?? "file");
  put("mode", f.mode ?? 0o644);
  put("uid", f.uid ?? 0);
  put("gid", f.gid ?? 0);
  put("size", f.size ?? 0);
  put("mtime", f.mtime ?? 1700000000);
  h[156] = (f.typeflag ?? "0").charCodeAt(0);
  put("linkname", f.linkname);
  const magic = f.magic ?? "ustar";
  if (magic === "ustar") h.set(te.encode("ustar\x0000"), 257);
  else if (magic === "gnu") h.set(te.encode("ustar  \0"), 257);
  else if (magic instanceof Uint8Array) h.set(magic.subarray(0, 8), 257);
  if (magic !== "v7") {
    put("uname", f.uname);
    put("gname", f.gname);
    put("devmajor", f.devmajor ?? (magic === "gnu" ? undefined : 0));
    put("devminor", f.devminor ?? (magic === "gnu" ? undefined : 0));
    put("prefix", f.prefix);
  }
  for (const [off, b] of f.raw ?? []) h.set(b, off);
  if (!f.keepChecksum) fixChecksum(h);
  return h;
}

/** Pads `b` with NULs to a whole number of blocks. */
export function pad(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(b.length / 512) * 512);
  out.set(b);
  return out;
}

/** Concatenates byte arrays. */
export function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** One pax record `"%d %s=%s\n"` with its length right. */
export function paxRecord(key: string | Uint8Array, value: string | Uint8Array): Uint8Array {
  const k = typeof key === "string" ? te.encode(key) : key;
  const v = typeof value === "string" ? te.encode(value) : value;
  const body = k.length + v.length + 3; // ' ', '=', '\n'
  let n = body + 1;
  while (String(n).length + body !== n) n = String(n).length + body;
  return cat(te.encode(`${n} `), k, te.encode("="), v, te.encode("\n"));
}

/** An extended header (`x`, `g`, `L`, `K`, …) with `body`, padded: header + data blocks. */
export function extHeader(typeflag: string, body: Uint8Array, f: HeaderFields = {}): Uint8Array {
  const name = typeflag === "L" || typeflag === "K" ? "././@LongLink" : "PaxHeaders/x";
  return cat(
    header({
      name,
      typeflag,
      size: body.length,
      magic: typeflag === "L" || typeflag === "K" ? "gnu" : "ustar",
      ...f,
    }),
    pad(body),
  );
}

/** A pax `x` (or `g`) header holding `records`. */
export function pax(records: [string, string | Uint8Array][], typeflag = "x"): Uint8Array {
  return extHeader(typeflag, cat(...records.map(([k, v]) => paxRecord(k, v))));
}

/** A regular file entry: header and padded content. */
export function fileEntry(
  name: string,
  content: string | Uint8Array,
  f: HeaderFields = {},
): Uint8Array {
  const c = typeof content === "string" ? te.encode(content) : content;
  return cat(header({ name, size: c.length, ...f }), pad(c));
}

/** The end-of-archive marker. */
export const EOF: Uint8Array = new Uint8Array(1024);

// ---- mutation ----------------------------------------------------------------

/** Offsets of every header block in `b` (blocks with a valid checksum). */
export function headerOffsets(b: Uint8Array): number[] {
  const out: number[] = [];
  for (let at = 0; at + 512 <= b.length; at += 512) if (isHeader(b, at)) out.push(at);
  return out;
}

const NUMERIC = ["mode", "uid", "gid", "size", "mtime", "devmajor", "devminor"] as const;
const TYPEFLAGS = "0\x00123456789xgLKSDMNVXAZ ".split("");

/** Odd spellings of the number `v` in a field of `len` bytes. */
function numberVariants(v: number, len: number, rng: Rng): Uint8Array {
  const s = v.toString(8);
  const fill = (str: string) => {
    const b = new Uint8Array(len);
    b.set(te.encode(str).subarray(0, len));
    return b;
  };
  switch (rng.int(16)) {
    case 0:
      return base256(v, len);
    case 1:
      return base256(-1 - rng.int(1000), len);
    case 2:
      return fill(s.padStart(len, " ")); // leading spaces, no terminator
    case 3:
      return fill(s.padStart(len - 1, " ") + " ");
    case 4:
      return fill(s.padStart(len, "0")); // no terminator
    case 5:
      return fill(s + "\0" + "7".repeat(Math.max(0, len - s.length - 1))); // garbage after a NUL
    case 6:
      return fill(s + " " + "1"); // garbage after a space
    case 7:
      return fill(" " + s.slice(0, 1) + " " + s.slice(1)); // a space inside
    case 8:
      return fill("\0" + s); // a leading NUL
    case 9:
      return fill("+" + s);
    case 10:
      return fill("-" + s);
    case 11:
      return fill(s + "8");
    case 12:
      return new Uint8Array(len); // all NULs
    case 13:
      return fill(" ".repeat(len)); // all spaces
    case 14:
      return fill((v + 1 + rng.int(3)).toString(8).padStart(len - 1, "0"));
    default:
      return fill("7".repeat(len)); // the largest octal, no terminator
  }
}

/** Odd spellings of a pax numeric value. */
function paxNumberVariants(v: string, rng: Rng): string {
  switch (rng.int(12)) {
    case 0:
      return "0".repeat(1 + rng.int(30)) + v;
    case 1:
      return "+" + v;
    case 2:
      return "-" + v;
    case 3:
      return " " + v;
    case 4:
      return v + " ";
    case 5:
      return v + "x";
    case 6:
      return "";
    case 7:
      return "99999999999999999999999";
    case 8:
      return v + ".5";
    case 9:
      return "0x" + v;
    case 10:
      return v + "\0" + "1";
    default:
      return String(Number(v) + 1 + rng.int(5000));
  }
}

const PAX_KEYS = [
  "path",
  "linkpath",
  "size",
  "uid",
  "gid",
  "uname",
  "gname",
  "mtime",
  "atime",
  "ctime",
  "SCHILY.xattr.user.a",
  "SCHILY.xattr.user.b",
  "LIBARCHIVE.xattr.user.a",
  "SCHILY.devmajor",
  "SCHILY.devminor",
  "GNU.sparse.size",
  "GNU.sparse.realsize",
  "GNU.sparse.numblocks",
  "GNU.sparse.map",
  "GNU.sparse.name",
  "GNU.sparse.major",
  "GNU.sparse.minor",
  "GNU.sparse.offset",
  "GNU.sparse.numbytes",
  "hdrcharset",
  "charset",
  "comment",
  "SCHILY.filetype",
  "SCHILY.realsize",
];

function paxValueFor(key: string, rng: Rng): string | Uint8Array {
  switch (key) {
    case "path":
    case "linkpath":
    case "GNU.sparse.name":
      return rng.pick([
        "a",
        "evil/../../x",
        "/abs",
        "dir/",
        "n\0ul",
        "é",
        "./sub/file.txt",
        "x".repeat(300),
        "",
      ]);
    case "uname":
    case "gname":
      return rng.pick(["root", "", "bob\0x", "名"]);
    case "mtime":
    case "atime":
    case "ctime":
      return rng.pick([
        "1700000000",
        "1700000000.5",
        "-1.25",
        "0001700000000.123456789123",
        "1e9",
        "1.",
        ".5",
        "1700000000.9999999999",
        "99999999999999999999",
        "",
      ]);
    case "hdrcharset":
      return rng.pick(["BINARY", "ISO-IR 10646 2000 UTF-8", "junk"]);
    case "GNU.sparse.map":
      return rng.pick(["0,1", "0,1,5,2", "", "1", "0,1,0,1", "a,b"]);
    case "GNU.sparse.major":
    case "GNU.sparse.minor":
      return rng.pick(["0", "1", "2", ""]);
    case "SCHILY.filetype":
      return rng.pick(["file", "directory", "symlink", "socket", "junk"]);
    default:
      if (key.includes("xattr")) return rng.pick(["v", "", "dmFs", "\0\x01bin", "="]);
      return paxNumberVariants(String(rng.int(3) === 0 ? 0 : 1 + rng.int(2000)), rng);
  }
}

function randomPaxBody(rng: Rng): Uint8Array {
  const parts: Uint8Array[] = [];
  const n = 1 + rng.int(4);
  for (let i = 0; i < n; i++) {
    const key = rng.pick(PAX_KEYS);
    parts.push(paxRecord(key, paxValueFor(key, rng)));
  }
  let body = cat(...parts);
  if (rng.chance(0.25)) body = malformPax(body, rng);
  return body;
}

/** Breaks a pax record block in one of the ways readers differ on. */
function malformPax(body: Uint8Array, rng: Rng): Uint8Array {
  const b = body.slice();
  switch (rng.int(8)) {
    case 0: // length off by one
      return cat(
        te.encode(String(Number(new TextDecoder().decode(b.subarray(0, b.indexOf(0x20)))) + 1)),
        b.subarray(b.indexOf(0x20)),
      );
    case 1: // no trailing newline
      return b.subarray(0, b.length - 1);
    case 2: // NUL padding after the records
      return cat(b, new Uint8Array(1 + rng.int(20)));
    case 3: // leading zeros in the length
      return cat(te.encode("0"), b.subarray(0, b.indexOf(0x20)), b.subarray(b.indexOf(0x20)));
    case 4: // a record without '='
      return cat(te.encode("8 abcde\n"), b);
    case 5: // a huge length
      return cat(te.encode("99999999 k=v\n"), b);
    case 6: // garbage after the records
      return cat(b, te.encode("junk"));
    default: // a NUL in the keyword
      return cat(paxRecord("SCH\0ILY.xattr.user.q", "v"), b);
  }
}

/** Entry headers (not extended headers) among `offs`. */
function entryHeaders(b: Uint8Array, offs: number[]): number[] {
  return offs.filter((o) => !"xgLKX".includes(String.fromCharCode(b[o + 156])));
}

/**
 * One seeded edit of `b`, returning the new bytes; `what` gets a short
 * description of the edit (for the failure report).
 */
export function mutateOnce(b: Uint8Array, rng: Rng, what: string[]): Uint8Array {
  const offs = headerOffsets(b);
  if (offs.length === 0 || rng.chance(0.04)) {
    const at = rng.int(b.length + 1);
    what.push(`truncate at ${at}`);
    return b.subarray(0, at);
  }
  const at = rng.pick(offs);
  const out = b.slice();
  const refix = () => {
    if (!rng.chance(0.05)) fixChecksum(out, at);
  };
  // (an oversized record, 10, is slow to read: one case in a hundred)
  let op = rng.int(15);
  if (op === 10 && !rng.chance(0.15)) op = 0;
  switch (op) {
    case 0: { // flip bytes in the header
      const n = 1 + rng.int(4);
      for (let i = 0; i < n; i++) {
        const p = rng.int(512);
        out[at + p] = rng.chance(0.5) ? rng.int(256) : out[at + p] ^ (1 << rng.int(8));
        what.push(`flip byte ${p} of the header at ${at}`);
      }
      if (rng.chance(0.8)) fixChecksum(out, at);
      return out;
    }
    case 1: { // an odd spelling of a numeric field
      const field = rng.pick(NUMERIC);
      const [off, len] = F[field];
      const txt = new TextDecoder().decode(out.subarray(at + off, at + off + len)).replace(
        /[\0 ]/g,
        "",
      );
      const v = /^[0-7]+$/.test(txt) ? parseInt(txt, 8) : 0;
      out.set(numberVariants(v, len, rng), at + off);
      what.push(
        `${field} of the header at ${at} spelled ${
          JSON.stringify(new TextDecoder("latin1").decode(out.subarray(at + off, at + off + len)))
        }`,
      );
      refix();
      return out;
    }
    case 2: { // a NUL or odd byte in the name, link name or prefix
      const field = rng.pick(["name", "linkname", "prefix", "uname", "gname"] as const);
      const [off, len] = F[field];
      const p = rng.int(Math.min(len, 40));
      out[at + off + p] = rng.pick([0, 0x2f, 0xe9, 0x0a, 0x80, 0xff]);
      what.push(`byte ${p} of ${field} at ${at} set to 0x${out[at + off + p].toString(16)}`);
      refix();
      return out;
    }
    case 3: { // change the type flag
      const t = rng.pick(TYPEFLAGS);
      out[at + 156] = t.charCodeAt(0);
      what.push(`typeflag of the header at ${at} set to ${JSON.stringify(t)}`);
      refix();
      return out;
    }
    case 4: { // change the magic/version
      const m = rng.pick([
        "ustar\x0000",
        "ustar  \0",
        "ustar\0  ",
        "ustar\0xx",
        "\0\0\0\0\0\0\0\0",
        "ustar \0\0",
        "ustar\0\0\0",
      ]);
      out.set(te.encode(m), at + 257);
      what.push(`magic of the header at ${at} set to ${JSON.stringify(m)}`);
      refix();
      return out;
    }
    case 5: { // garbage in the GNU atime/ctime area (what Go before 1.8 wrote) or the prefix
      const g = rng.pick([
        "some/prefix/dir",
        "\xe9\xe9garbage",
        "12345670123 ",
        "0000000\0",
        " ",
        "a".repeat(40),
      ]);
      out.set(new Uint8Array([...g].map((c) => c.charCodeAt(0))), at + 345);
      what.push(`bytes at 345 of the header at ${at} set to ${JSON.stringify(g)}`);
      refix();
      return out;
    }
    case 6: { // insert extended headers before an entry
      const ents = entryHeaders(b, offs);
      const e = ents.length ? rng.pick(ents) : at;
      const parts: Uint8Array[] = [];
      const n = 1 + rng.int(3);
      const kinds: string[] = [];
      for (let i = 0; i < n; i++) {
        const k = rng.pick(["x", "x", "x", "g", "L", "K", "X"]);
        kinds.push(k);
        if (k === "L" || k === "K") {
          const name = rng.pick(["long/" + "n".repeat(120), "short", "with\0nul", "", "dir/"]);
          parts.push(extHeader(k, te.encode(name + (rng.chance(0.7) ? "\0" : ""))));
        } else parts.push(extHeader(k, randomPaxBody(rng)));
      }
      what.push(`insert ${kinds.join("+")} headers before the entry at ${e}`);
      return cat(b.subarray(0, e), ...parts, b.subarray(e));
    }
    case 7: { // replace an existing pax body's records
      const xs = offs.filter((o) => "xg".includes(String.fromCharCode(b[o + 156])));
      if (xs.length === 0) return mutateOnce(b, rng, what);
      const x = rng.pick(xs);
      const txt = new TextDecoder().decode(b.subarray(x + 124, x + 136)).replace(/[\0 ]/g, "");
      const size = parseInt(txt, 8) || 0;
      const body = randomPaxBody(rng);
      const old = b.subarray(x + 512, x + 512 + size);
      const merged = rng.chance(0.5) ? cat(old, body) : cat(body, old);
      const h = b.slice(x, x + 512);
      h.set(octal(merged.length, 12), 124);
      fixChecksum(h);
      what.push(
        `pax body at ${x} extended with ${
          JSON.stringify(new TextDecoder("latin1").decode(body).slice(0, 80))
        }`,
      );
      return cat(
        b.subarray(0, x),
        h,
        pad(merged),
        b.subarray(x + 512 + Math.ceil(size / 512) * 512),
      );
    }
    case 8: { // a size that lies
      const v = rng.pick([0, 1, 511, 512, 513, 1024, 2 ** 33, 0o77777777777]);
      out.set(rng.chance(0.3) ? base256(v, 12) : octal(v, 12), at + 124);
      what.push(`size of the header at ${at} set to ${v}`);
      refix();
      return out;
    }
    case 9: { // truncate inside or just after this header
      const cut = at + rng.int(1024);
      what.push(`truncate at ${cut}`);
      return b.subarray(0, Math.min(cut, b.length));
    }
    case 10: { // an oversized extended header
      const big = new Uint8Array((1 << 20) + 1 - rng.int(64)).fill(0x61);
      const k = rng.pick(["x", "L", "K"]);
      const body = k === "x" ? paxRecord("comment", big) : big;
      what.push(`insert an oversized ${k} header (${body.length} bytes)`);
      return cat(b.subarray(0, at), extHeader(k, body), b.subarray(at));
    }
    case 11: { // sparse map edits (old GNU fields)
      const p = 386 + rng.int(24 * 4 + 13);
      out[at + p] = rng.pick([0, 0x30, 0x31, 0x37, 0x20, 0x80, 0xff]);
      what.push(
        `sparse area byte ${p} of the header at ${at} set to 0x${out[at + p].toString(16)}`,
      );
      refix();
      return out;
    }
    case 12: { // the checksum field spelled oddly
      fixChecksum(out, at);
      const c = new TextDecoder().decode(out.subarray(at + 148, at + 154));
      const v = rng.pick([
        ` ${c.slice(1)}\0`,
        `${c}  `,
        `00${c}`,
        `${c.slice(1)}\0\0\0`,
        `${c}\0\0`,
      ]);
      out.set(te.encode(v.padEnd(8, "\0").slice(0, 8)), at + 148);
      what.push(`checksum of the header at ${at} spelled ${JSON.stringify(v)}`);
      return out;
    }
    case 13: { // a second end-of-archive-like block or zero block
      if (rng.chance(0.5)) {
        // or make it a star header: "tar\0" at the end, times after a 131-byte prefix
        out.set(te.encode("ustar\x0000"), at + 257);
        out.set(te.encode("tar\0"), at + 508);
        const fill = rng.pick(["", "p".repeat(131), "pre", "q".repeat(140)]);
        out.fill(0, at + 345, at + 476);
        out.set(te.encode(fill), at + 345);
        out.set(rng.chance(0.5) ? octal(1600000000, 12) : te.encode("garbage!"), at + 476);
        out.set(rng.chance(0.7) ? octal(1600000001, 12) : new Uint8Array(12), at + 488);
        what.push(`the header at ${at} made a star header (prefix ${JSON.stringify(fill)})`);
        refix();
        return out;
      }
      what.push(`insert a zero block at ${at}`);
      return cat(b.subarray(0, at), new Uint8Array(512), b.subarray(at));
    }
    default: { // duplicate an entry (same name again, maybe as another type)
      const ents = entryHeaders(b, offs);
      const e = ents.length ? rng.pick(ents) : at;
      const h = b.slice(e, e + 512);
      h[156] = rng.pick(["0", "2", "1", "5"]).charCodeAt(0);
      h.set(octal(0, 12), 124);
      fixChecksum(h);
      what.push(`insert a copy of the header at ${e} as type ${String.fromCharCode(h[156])}`);
      return cat(b.subarray(0, e), h, b.subarray(e));
    }
  }
}

/** One to three seeded edits of `b`. */
export function mutate(b: Uint8Array, rng: Rng, what: string[]): Uint8Array {
  let out = b;
  const n = 1 + rng.int(3);
  for (let i = 0; i < n; i++) out = mutateOnce(out, rng, what);
  return out;
}
