/**
 * Builds tar archives in code: every entry type, POSIX pax records (long names,
 * xattrs, big ids, fractional mtimes), GNU long names (`L`/`K`), GNU sparse
 * files, and raw escape hatches to craft hostile or damaged archives (`..`,
 * absolute names, bad checksums, wrong sizes, truncation) for tests and demos.
 *
 * What it writes in the default `pax` format and in the `gnu` format is
 * extracted by GNU tar; the escape hatches are off unless asked for.
 *
 * @module
 */

import { gzipSync, zstdCompressSync } from "node:zlib";

const BLOCK = 512;
const enc = new TextEncoder();

/** Bytes or text (text is written as UTF-8). */
export type TarBytes = string | Uint8Array;

/** How names and link targets longer than the ustar fields are written. */
export type LongNameFormat = "pax" | "gnu";

/** Options of a {@linkcode TarWriter}. */
export interface TarWriterOptions {
  /**
   * `pax` (default): POSIX.1-2001 headers with `x` records for whatever does not
   * fit ustar (long names, big ids and sizes, fractional times, xattrs).
   * `gnu`: GNU headers (magic `ustar  \0`), long names as `././@LongLink`
   * `L`/`K` records, big numbers in base-256; xattrs still need pax records,
   * which GNU tar reads in either format.
   */
  format?: LongNameFormat;
  /** How xattrs are recorded: `SCHILY.xattr.NAME` (default, GNU tar/star) or libarchive's base64 form. */
  xattrRecords?: "schily" | "libarchive";
  /** mtime used when an entry gives none (seconds). Default 0 (reproducible). */
  defaultMtime?: number;
}

/** Per-entry metadata and escape hatches. All fields are optional. */
export interface TarEntryOptions {
  /** Permission bits incl. setuid (0o4000), setgid (0o2000), sticky (0o1000). */
  mode?: number;
  /** Numeric owner (default 0); ids above 2097151 go into a pax record (or base-256 with `gnu`). */
  uid?: number;
  /** Numeric group (default 0). */
  gid?: number;
  /** Owner name (default empty). */
  uname?: string;
  /** Group name (default empty). */
  gname?: string;
  /** Seconds since the epoch; fractions are written as a pax `mtime` record. Dates are accepted. */
  mtime?: number | Date;
  /** Written as a pax `atime` record. */
  atime?: number | Date;
  /** Extended attributes, for example `{ "user.x": "1", "security.capability": bytes }`. */
  xattrs?: Record<string, TarBytes>;
  /** Extra raw pax records for this entry (written in an `x` header before it). */
  pax?: Record<string, TarBytes>;
  // ---- escape hatches for hostile archives ----
  /** Write this exact checksum (a number, written as octal), or `"bad"` for the right one plus one. */
  checksum?: number | "bad";
  /** Compute the checksum over signed bytes, as some historic tars did. */
  signedChecksum?: boolean;
  /** Declare this size in the header while writing the real content (padded to its own length). */
  declaredSize?: number;
  /** Override the type flag byte (for example `"Z"` for an unknown type, `"7"`, `"\0"`). */
  typeflag?: string;
  /** Write the name only into the ustar `prefix` + `name` fields split at this many bytes (ustar prefix test). */
  splitPrefixAt?: number;
  /** Never emit pax/GNU long-name records; names longer than 100 bytes are cut (hostile). */
  noLongNames?: boolean;
  /** Write numbers in these fields in base-256 even if they fit in octal. */
  base256?: ("uid" | "gid" | "size" | "mtime")[];
}

/** One data segment of a sparse file: `data` lives at `offset` of the real file, the rest is holes. */
export interface SparseSegment {
  /** Where the data starts in the real file. */
  offset: number;
  /** The bytes stored there. */
  data: TarBytes;
}

/** GNU sparse formats: old GNU (`S` type flag) and the pax 0.0, 0.1 and 1.0 formats. */
export type SparseFormat = "gnu" | "pax0.0" | "pax0.1" | "pax1.0";

/** Options of {@linkcode TarWriter.bytes} and {@linkcode TarWriter.stream}. */
export interface TarOutputOptions {
  /** Append the two zero blocks ending the archive (default true). */
  endOfArchive?: boolean;
  /** Cut the output at this byte offset (a truncated download). */
  truncateAt?: number;
  /** `stream()` only: size of each chunk (default 64 KiB); small sizes exercise chunk boundaries. */
  chunkSize?: number;
}

interface RawHeader {
  name: Uint8Array;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: Uint8Array;
  uname: Uint8Array;
  gname: Uint8Array;
  devmajor: number;
  devminor: number;
}

function bytesOf(b: TarBytes): Uint8Array {
  return typeof b === "string" ? enc.encode(b) : b;
}

function seconds(t: number | Date | undefined, dflt: number): number {
  if (t === undefined) return dflt;
  return t instanceof Date ? t.getTime() / 1000 : t;
}

/** Formats a time for a pax record: integral, or with up to 9 decimals, never in exponent form. */
function paxTime(t: number): string {
  if (Number.isInteger(t)) return String(t);
  return t.toFixed(9).replace(/0+$/, "").replace(/\.$/, "");
}

/** Writes one pax record `"%d %s=%s\n"` where the length counts itself. */
function paxRecord(key: string, value: Uint8Array): Uint8Array {
  const body = 3 + enc.encode(key).length + value.length; // " " "=" "\n"
  let len = body + String(body).length;
  if (String(len).length !== String(len - body).length) len = body + String(len).length;
  const out = new Uint8Array(len);
  const head = enc.encode(`${len} ${key}=`);
  out.set(head, 0);
  out.set(value, head.length);
  out[len - 1] = 0x0a;
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function padded(data: Uint8Array): Uint8Array {
  const rem = data.length % BLOCK;
  if (rem === 0) return data;
  const out = new Uint8Array(data.length + BLOCK - rem);
  out.set(data);
  return out;
}

/** Largest value an octal field of `width` bytes holds (width-1 digits and a NUL). */
function octalMax(width: number): number {
  return 8 ** (width - 1) - 1;
}

function writeOctal(buf: Uint8Array, off: number, width: number, value: number): void {
  const s = Math.max(0, Math.floor(value)).toString(8).padStart(width - 1, "0");
  for (let i = 0; i < width - 1; i++) buf[off + i] = s.charCodeAt(i);
  buf[off + width - 1] = 0;
}

/** GNU base-256: first byte 0x80, then the big-endian two's complement value. */
function writeBase256(buf: Uint8Array, off: number, width: number, value: number): void {
  let v = BigInt(Math.floor(value));
  if (v < 0n) v += 1n << BigInt(8 * width);
  for (let i = width - 1; i >= 0; i--) {
    buf[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  buf[off] = value < 0 ? 0xff : 0x80;
}

function writeField(buf: Uint8Array, off: number, width: number, value: Uint8Array): void {
  buf.set(value.subarray(0, width), off);
}

/**
 * Builds tar archives in memory. Methods append entries and return `this`, so
 * calls chain; {@linkcode TarWriter.bytes} / {@linkcode TarWriter.stream} give the archive.
 *
 * @example Usage
 * ```ts
 * import { TarWriter } from "./tar_writer.ts";
 * const tar = new TarWriter()
 *   .directory("etc/", { mode: 0o755 })
 *   .file("etc/hostname", "box\n", { mode: 0o644, uid: 0, gid: 0, xattrs: { "user.k": "v" } })
 *   .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
 *   .hardlink("etc/hostname2", "etc/hostname")
 *   .fifo("run/fifo")
 *   .charDevice(".wh.gone", 0, 0)
 *   .file("../escape", "hostile", { checksum: "bad" });
 * const bytes: Uint8Array = tar.bytes();
 * if (bytes.length % 512 !== 0) throw new Error("tar is made of 512-byte blocks");
 * ```
 */
export class TarWriter {
  #parts: Uint8Array[] = [];
  #format: LongNameFormat;
  #xattrRecords: "schily" | "libarchive";
  #defaultMtime: number;
  #paxSeq = 0;

  /** Creates an empty archive. */
  constructor(options: TarWriterOptions = {}) {
    this.#format = options.format ?? "pax";
    this.#xattrRecords = options.xattrRecords ?? "schily";
    this.#defaultMtime = options.defaultMtime ?? 0;
  }

  /** Appends a regular file. */
  file(name: TarBytes, content: TarBytes = "", options: TarEntryOptions = {}): this {
    return this.#entry(name, "0", bytesOf(content), new Uint8Array(0), 0, 0, 0o644, options);
  }

  /** Appends a directory (GNU tar writes its name with a trailing `/`; pass what you need). */
  directory(name: TarBytes, options: TarEntryOptions = {}): this {
    return this.#entry(name, "5", new Uint8Array(0), new Uint8Array(0), 0, 0, 0o755, options);
  }

  /** Appends a symbolic link to `target` (written verbatim). */
  symlink(name: TarBytes, target: TarBytes, options: TarEntryOptions = {}): this {
    return this.#entry(name, "2", new Uint8Array(0), bytesOf(target), 0, 0, 0o777, options);
  }

  /** Appends a hard link to the earlier entry `target` (an archive path, written verbatim). */
  hardlink(name: TarBytes, target: TarBytes, options: TarEntryOptions = {}): this {
    return this.#entry(name, "1", new Uint8Array(0), bytesOf(target), 0, 0, 0o644, options);
  }

  /** Appends a character device (0/0 is an overlay whiteout). */
  charDevice(name: TarBytes, major: number, minor: number, options: TarEntryOptions = {}): this {
    return this.#entry(
      name,
      "3",
      new Uint8Array(0),
      new Uint8Array(0),
      major,
      minor,
      0o644,
      options,
    );
  }

  /** Appends a block device. */
  blockDevice(name: TarBytes, major: number, minor: number, options: TarEntryOptions = {}): this {
    return this.#entry(
      name,
      "4",
      new Uint8Array(0),
      new Uint8Array(0),
      major,
      minor,
      0o644,
      options,
    );
  }

  /** Appends a FIFO (named pipe). */
  fifo(name: TarBytes, options: TarEntryOptions = {}): this {
    return this.#entry(name, "6", new Uint8Array(0), new Uint8Array(0), 0, 0, 0o644, options);
  }

  /** Appends a pax global header (`g`): its records apply to every later entry. */
  globalPax(records: Record<string, TarBytes>): this {
    const body = concat(Object.entries(records).map(([k, v]) => paxRecord(k, bytesOf(v))));
    const name = enc.encode(`/tmp/GlobalHead.0.${++this.#paxSeq}`);
    this.#pushHeader(this.#raw(name, "g", body.length, 0o644, this.#defaultMtime), {});
    this.#parts.push(padded(body));
    return this;
  }

  /**
   * Appends a sparse file of `realSize` bytes whose data are `segments` (holes
   * elsewhere), in one of GNU tar's sparse formats (default pax 1.0, what
   * `tar --sparse --format=pax` writes). `gnu` needs `format: "gnu"`-style
   * headers and is written with them regardless of the writer's format.
   */
  sparseFile(
    name: TarBytes,
    realSize: number,
    segments: SparseSegment[],
    options: TarEntryOptions & { sparseFormat?: SparseFormat } = {},
  ): this {
    const fmt = options.sparseFormat ?? "pax1.0";
    const segs = segments.map((s) => ({ offset: s.offset, data: bytesOf(s.data) }));
    // GNU tar reads each segment starting at a fresh 512-byte block, so every
    // segment but the last is a whole number of blocks (GNU tar itself finds
    // holes block by block). Pad with zeros, which is the same file content.
    for (let i = 0; i + 1 < segs.length; i++) {
      const s = segs[i];
      const len = Math.ceil(s.data.length / BLOCK) * BLOCK;
      if (s.offset + len > segs[i + 1].offset) {
        throw new RangeError(
          `Cannot write sparse file ${new TextDecoder().decode(bytesOf(name))}: segment ${i} ` +
            `(offset ${s.offset}) must be padded to ${len} bytes but overlaps the next segment`,
        );
      }
      if (len !== s.data.length) s.data = padded(s.data);
    }
    // GNU tar ends every map with an empty segment at the real size (that is how
    // it learns the size when the file ends in a hole); write it the same way.
    const last = segs[segs.length - 1];
    if (!last || last.offset + last.data.length < realSize) {
      segs.push({ offset: realSize, data: new Uint8Array(0) });
    }
    const data = concat(segs.map((s) => s.data));
    const nameB = bytesOf(name);
    const mode = options.mode ?? 0o644;
    const mtime = seconds(options.mtime, this.#defaultMtime);
    const pax: Record<string, TarBytes> = { ...options.pax };
    if (fmt === "gnu") {
      const h = this.#raw(nameB, "S", data.length, mode, mtime, options);
      const blocks = this.#gnuSparseHeader(h, segs.map((s) => [s.offset, s.data.length]), realSize);
      this.#writeXattrsAndPax(nameB, new Uint8Array(0), options, mtime, {});
      this.#pushHeader(h, options, blocks[0]);
      for (const b of blocks) this.#parts.push(b);
      this.#parts.push(padded(data));
      return this;
    }
    let headerName: Uint8Array;
    let body = data;
    if (fmt === "pax1.0") {
      pax["GNU.sparse.major"] = "1";
      pax["GNU.sparse.minor"] = "0";
      pax["GNU.sparse.name"] = nameB;
      pax["GNU.sparse.realsize"] = String(realSize);
      headerName = enc.encode(`GNUSparseFile.0/${basename(nameB)}`);
      const map = [
        String(segs.length),
        ...segs.flatMap((s) => [String(s.offset), String(s.data.length)]),
      ];
      body = concat([padded(enc.encode(map.join("\n") + "\n")), data]);
    } else if (fmt === "pax0.1") {
      pax["GNU.sparse.size"] = String(realSize);
      pax["GNU.sparse.numblocks"] = String(segs.length);
      pax["GNU.sparse.map"] = segs.map((s) => `${s.offset},${s.data.length}`).join(",");
      pax["GNU.sparse.name"] = nameB;
      headerName = enc.encode(`GNUSparseFile.0/${basename(nameB)}`);
    } else {
      // 0.0: repeated offset/numbytes keys, in order, in one header.
      headerName = enc.encode(`GNUSparseFile.0/${basename(nameB)}`);
      const recs: Uint8Array[] = [
        paxRecord("GNU.sparse.size", enc.encode(String(realSize))),
        paxRecord("GNU.sparse.numblocks", enc.encode(String(segs.length))),
      ];
      for (const s of segs) {
        recs.push(paxRecord("GNU.sparse.offset", enc.encode(String(s.offset))));
        recs.push(paxRecord("GNU.sparse.numbytes", enc.encode(String(s.data.length))));
      }
      recs.push(paxRecord("path", nameB));
      const extra = concat(recs);
      return this.#entryWith(headerName, "0", body, new Uint8Array(0), 0, 0, mode, options, extra);
    }
    return this.#entry(headerName, "0", body, new Uint8Array(0), 0, 0, mode, {
      ...options,
      pax,
      noLongNames: true,
    });
  }

  /** Appends raw bytes (for example a hand-made header); no padding is added. */
  raw(bytes: Uint8Array): this {
    this.#parts.push(bytes);
    return this;
  }

  /**
   * Returns the bytes appended since the last `take()` (no end-of-archive
   * blocks) and forgets them, so big archives can be written out piece by piece.
   */
  take(): Uint8Array<ArrayBuffer> {
    const out = concat(this.#parts);
    this.#parts = [];
    return out;
  }

  /** The archive: entries, then (by default) two zero blocks. */
  bytes(options: TarOutputOptions = {}): Uint8Array<ArrayBuffer> {
    const parts = [...this.#parts];
    if (options.endOfArchive ?? true) parts.push(new Uint8Array(2 * BLOCK));
    const all = concat(parts);
    return options.truncateAt === undefined ? all : all.slice(0, options.truncateAt);
  }

  /** The archive as a stream of `chunkSize` chunks (same options as {@linkcode TarWriter.bytes}). */
  stream(options: TarOutputOptions = {}): ReadableStream<Uint8Array> {
    const all = this.bytes(options);
    const size = Math.max(1, options.chunkSize ?? 65536);
    let off = 0;
    return new ReadableStream<Uint8Array>({
      pull(c) {
        if (off >= all.length) return c.close();
        c.enqueue(all.slice(off, off + size));
        off += size;
      },
    }, { highWaterMark: 0 });
  }

  // ---------------------------------------------------------------------------

  #raw(
    name: Uint8Array,
    typeflag: string,
    size: number,
    mode: number,
    mtime: number,
    o: TarEntryOptions = {},
  ): RawHeader {
    return {
      name,
      mode,
      uid: o.uid ?? 0,
      gid: o.gid ?? 0,
      size,
      mtime,
      typeflag,
      linkname: new Uint8Array(0),
      uname: enc.encode(o.uname ?? ""),
      gname: enc.encode(o.gname ?? ""),
      devmajor: 0,
      devminor: 0,
    };
  }

  #entry(
    name: TarBytes,
    typeflag: string,
    content: Uint8Array,
    linkname: Uint8Array,
    devmajor: number,
    devminor: number,
    defaultMode: number,
    o: TarEntryOptions,
  ): this {
    return this.#entryWith(
      bytesOf(name),
      typeflag,
      content,
      linkname,
      devmajor,
      devminor,
      o.mode ?? defaultMode,
      o,
      undefined,
    );
  }

  #entryWith(
    nameB: Uint8Array,
    typeflag: string,
    content: Uint8Array,
    linkname: Uint8Array,
    devmajor: number,
    devminor: number,
    mode: number,
    o: TarEntryOptions,
    extraPax: Uint8Array | undefined,
  ): this {
    const mtime = seconds(o.mtime, this.#defaultMtime);
    const h: RawHeader = {
      ...this.#raw(nameB, o.typeflag ?? typeflag, o.declaredSize ?? content.length, mode, mtime, o),
      linkname,
      devmajor,
      devminor,
    };
    const pax: Record<string, Uint8Array> = {};
    const gnu = this.#format === "gnu";
    const long = (key: "path" | "linkpath", value: Uint8Array, gnuType: string) => {
      if (o.noLongNames) return;
      if (gnu) {
        const body = concat([value, new Uint8Array(1)]);
        const lh = this.#raw(enc.encode("././@LongLink"), gnuType, body.length, 0o644, 0);
        this.#pushHeader(lh, {});
        this.#parts.push(padded(body));
      } else pax[key] = value;
    };
    if (nameB.length > 100 && o.splitPrefixAt === undefined) {
      const split = gnu ? -1 : ustarSplit(nameB);
      if (split < 0) long("path", nameB, "L");
      else o = { ...o, splitPrefixAt: split };
    }
    if (linkname.length > 100) long("linkpath", linkname, "K");
    if (!gnu) {
      if (!Number.isInteger(mtime) || mtime < 0 || mtime > octalMax(12)) {
        pax.mtime = enc.encode(paxTime(mtime));
      }
      for (const k of ["uid", "gid"] as const) {
        if (h[k] > octalMax(8)) pax[k] = enc.encode(String(h[k]));
      }
      if (h.size > octalMax(12)) pax.size = enc.encode(String(h.size));
      if (h.uname.length > 32) pax.uname = h.uname;
      if (h.gname.length > 32) pax.gname = h.gname;
    }
    if (o.atime !== undefined) pax.atime = enc.encode(paxTime(seconds(o.atime, 0)));
    this.#writeXattrsAndPax(nameB, extraPax ?? new Uint8Array(0), o, mtime, pax);
    this.#pushHeader(h, o);
    this.#parts.push(padded(content));
    return this;
  }

  #writeXattrsAndPax(
    nameB: Uint8Array,
    extra: Uint8Array,
    o: TarEntryOptions,
    mtime: number,
    pax: Record<string, Uint8Array>,
  ): void {
    for (const [k, v] of Object.entries(o.xattrs ?? {})) {
      if (this.#xattrRecords === "schily") {
        // As GNU tar: a pax keyword ends at the first '=', so '=' and '%' are escaped.
        pax[`SCHILY.xattr.${k.replace(/[%=]/g, (c) => (c === "=" ? "%3D" : "%25"))}`] = bytesOf(v);
      } else {
        const value = bytesOf(v);
        let bin = "";
        for (const b of value) bin += String.fromCharCode(b);
        pax[`LIBARCHIVE.xattr.${encodeURIComponent(k)}`] = enc.encode(btoa(bin).replace(/=+$/, ""));
      }
    }
    for (const [k, v] of Object.entries(o.pax ?? {})) pax[k] = bytesOf(v);
    const recs = [extra, ...Object.entries(pax).map(([k, v]) => paxRecord(k, v))];
    const body = concat(recs);
    if (body.length === 0) return;
    const xname = enc.encode(`PaxHeaders.0/${basename(nameB)}`.slice(0, 100));
    this.#pushHeader(this.#raw(xname, "x", body.length, 0o644, Math.max(0, Math.floor(mtime))), {});
    this.#parts.push(padded(body));
  }

  /** Serialises a header block (or fills `block` when given), computing the checksum. */
  #pushHeader(h: RawHeader, o: TarEntryOptions, block?: Uint8Array): void {
    const b = block ?? new Uint8Array(BLOCK);
    const gnu = this.#format === "gnu" || h.typeflag === "S";
    if (o.splitPrefixAt !== undefined) {
      writeField(b, 345, 155, h.name.subarray(0, o.splitPrefixAt));
      const rest = h.name.subarray(o.splitPrefixAt);
      writeField(b, 0, 100, rest[0] === 0x2f ? rest.subarray(1) : rest);
    } else writeField(b, 0, 100, h.name);
    const num = (
      off: number,
      width: number,
      v: number,
      field?: "uid" | "gid" | "size" | "mtime",
    ) => {
      const forced = field !== undefined && o.base256?.includes(field);
      if (forced || v > octalMax(width) || v < 0) {
        if (gnu || forced) writeBase256(b, off, width, v);
        else writeOctal(b, off, width, Math.min(Math.max(v, 0), octalMax(width))); // pax record holds it
      } else writeOctal(b, off, width, v);
    };
    num(100, 8, h.mode & 0o7777);
    num(108, 8, h.uid, "uid");
    num(116, 8, h.gid, "gid");
    num(124, 12, h.size, "size");
    num(136, 12, Math.floor(h.mtime), "mtime");
    b[156] = h.typeflag.length ? h.typeflag.charCodeAt(0) : 0;
    writeField(b, 157, 100, h.linkname);
    if (gnu) b.set(enc.encode("ustar  \0"), 257);
    else b.set(enc.encode("ustar\x0000"), 257);
    writeField(b, 265, 32, h.uname);
    writeField(b, 297, 32, h.gname);
    if (h.typeflag === "3" || h.typeflag === "4") {
      num(329, 8, h.devmajor);
      num(337, 8, h.devminor);
    }
    for (let i = 148; i < 156; i++) b[i] = 0x20;
    let sum = 0;
    if (o.signedChecksum) { for (let i = 0; i < BLOCK; i++) sum += (b[i] << 24) >> 24; }
    else for (let i = 0; i < BLOCK; i++) sum += b[i];
    if (o.checksum === "bad") sum += 1;
    else if (o.checksum !== undefined) sum = o.checksum;
    const s = (sum & 0o777777).toString(8).padStart(6, "0");
    for (let i = 0; i < 6; i++) b[148 + i] = s.charCodeAt(i);
    b[154] = 0;
    b[155] = 0x20;
    if (!block) this.#parts.push(b);
  }

  /** Fills old-GNU sparse map fields; returns the header block and any extension blocks. */
  #gnuSparseHeader(h: RawHeader, map: [number, number][], realSize: number): Uint8Array[] {
    const first = new Uint8Array(BLOCK);
    const blocks = [first];
    for (let i = 0; i < Math.min(4, map.length); i++) {
      writeOctal(first, 386 + i * 24, 12, map[i][0]);
      writeOctal(first, 386 + i * 24 + 12, 12, map[i][1]);
    }
    writeOctal(first, 483, 12, realSize);
    let rest = map.slice(4);
    first[482] = rest.length > 0 ? 1 : 0;
    while (rest.length > 0) {
      const ext = new Uint8Array(BLOCK);
      const chunk = rest.slice(0, 21);
      rest = rest.slice(21);
      chunk.forEach(([off, n], i) => {
        writeOctal(ext, i * 24, 12, off);
        writeOctal(ext, i * 24 + 12, 12, n);
      });
      ext[504] = rest.length > 0 ? 1 : 0;
      blocks.push(ext);
    }
    void h;
    return blocks;
  }
}

function basename(name: Uint8Array): string {
  const s = new TextDecoder().decode(name).replace(/\/+$/, "");
  return s.slice(s.lastIndexOf("/") + 1) || "x";
}

/** Where to split a name into ustar prefix (<=155) and name (<=100) at a `/`, or -1. */
function ustarSplit(name: Uint8Array): number {
  if (name.length > 256) return -1;
  for (let i = Math.max(0, name.length - 101); i < Math.min(name.length, 156); i++) {
    if (name[i] === 0x2f && i > 0 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) {
      return i;
    }
  }
  return -1;
}

/**
 * Gzips bytes (node:zlib), for building `tar+gzip` layer blobs in tests.
 *
 * @example Usage
 * ```ts
 * import { gzip, TarWriter } from "./tar_writer.ts";
 * const blob = gzip(new TarWriter().file("a", "1").bytes());
 * if (blob[0] !== 0x1f || blob[1] !== 0x8b) throw new Error("not gzip");
 * ```
 */
export function gzip(bytes: Uint8Array, level = 6): Uint8Array<ArrayBuffer> {
  const out = gzipSync(bytes, { level });
  return new Uint8Array(out.buffer as ArrayBuffer, out.byteOffset, out.byteLength);
}

/**
 * Compresses bytes with zstd (node:zlib), for building `tar+zstd` layer blobs in tests.
 *
 * @example Usage
 * ```ts
 * import { TarWriter, zstd } from "./tar_writer.ts";
 * const blob = zstd(new TarWriter().file("a", "1").bytes());
 * if (blob[0] !== 0x28 || blob[1] !== 0xb5) throw new Error("not zstd");
 * ```
 */
export function zstd(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = zstdCompressSync(bytes);
  return new Uint8Array(out.buffer as ArrayBuffer, out.byteOffset, out.byteLength);
}
