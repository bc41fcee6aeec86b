/**
 * A streaming tar parser for OCI layers: ustar, POSIX pax (`x`/`g` records incl.
 * xattrs), GNU long names and links (`L`/`K`), base-256 numbers, the old GNU and
 * pax 0.0/0.1/1.0 sparse formats, verified header checksums and truncation
 * detection. Push-based and synchronous: bodies are handed on as zero-copy
 * subarrays of the pushed chunks; only the 512-byte headers are looked at byte
 * by byte. Names are passed on verbatim: path safety is the applicator's job.
 *
 * Which bodies exist follows Go's `archive/tar` (what containerd and most image
 * builders use), so strata and the tools that wrote a layer agree on where each
 * entry starts: links, directories, devices and FIFOs never carry data whatever
 * their size field says.
 *
 * @module
 */
import { decodeName } from "../sys/name.ts";

/** The kind of a tar entry, after GNU/pax details are resolved. */
export type TarEntryType =
  | "file"
  | "directory"
  | "symlink"
  | "hardlink"
  | "char"
  | "block"
  | "fifo";

/** One data segment of a sparse file: `size` bytes of data at `offset`, holes elsewhere. */
export interface TarSparseSegment {
  /** Offset of the data in the real file. */
  offset: number;
  /** Number of data bytes. */
  size: number;
}

/** The resolved metadata of one entry (pax and GNU records already applied). */
export interface TarHeader {
  /** The path as written in the archive (pax `path`, GNU long name or ustar prefix + name), unmodified. */
  name: string;
  /** Entry type. */
  type: TarEntryType;
  /** The raw type flag (`"0"`, `"5"`, `"S"`, ...), to tell unusual entries apart. */
  typeflag: string;
  /** Permission bits incl. setuid (0o4000), setgid (0o2000) and sticky (0o1000). */
  mode: number;
  /** Numeric owner. */
  uid: number;
  /** Numeric group. */
  gid: number;
  /** Owner name (may be empty). */
  uname: string;
  /** Group name (may be empty). */
  gname: string;
  /** Bytes of data that follow (for sparse files: the stored data, see `realSize`). 0 for non-files. */
  size: number;
  /** Modification time in seconds since the epoch, fractional when a pax record says so. */
  mtime: number;
  /** Access time in seconds, when the archive records one. */
  atime?: number;
  /**
   * The exact nanoseconds part of a pax `mtime` with a fraction (a double
   * cannot hold nanoseconds next to 1.7e9 seconds); `Math.floor(mtime)` is
   * the seconds part then.
   */
  mtimeNsec?: number;
  /** Link target of symlinks and hardlinks ("" otherwise), unmodified. */
  linkname: string;
  /** Device major number (char and block devices). */
  devmajor: number;
  /** Device minor number (char and block devices). */
  devminor: number;
  /** Extended attributes from pax `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*` records. */
  xattrs: Record<string, Uint8Array>;
  /** For sparse files: where the data goes; `data()` offsets follow it. */
  sparse?: TarSparseSegment[];
  /** For sparse files: the size of the real file (holes included). */
  realSize?: number;
}

/**
 * Receives the entries of an archive, in order: `entry`, then `data` for each
 * piece of its body (none for empty files), then `entryEnd`.
 */
export interface TarSink {
  /** A new entry starts. */
  entry(header: TarHeader): void;
  /**
   * A piece of the current entry's body. `chunk` is a view into the pushed
   * bytes, valid only during the call (copy it to keep it). `offset` is where
   * it goes in the file: consecutive for regular files, following the sparse
   * map for sparse files (so an applicator can pwrite and leave holes).
   */
  data(chunk: Uint8Array, offset: number): void;
  /** The current entry is complete. */
  entryEnd(): void;
}

/** Options of a {@linkcode TarParser}. */
export interface TarParserOptions {
  /**
   * Largest pax record block, GNU long name/link, global header set or sparse
   * map accepted, in bytes (default 1 MiB); all the extended headers before
   * one entry may total twice this. Hostile archives cannot make the parser
   * allocate more than a few times this.
   */
  maxMetaSize?: number;
  /** Told about entries treated specially: unknown types read as regular files, skipped volume labels. */
  onWarning?: (message: string) => void;
}

/**
 * The archive is not a valid tar stream: bad checksum, truncation, a malformed
 * number or pax record, an oversized record. The message names the entry (or the
 * byte offset of the header) and the reason.
 *
 * @example Usage
 * ```ts
 * import { TarFormatError, TarParser } from "./tar.ts";
 * const p = new TarParser({ entry() {}, data() {}, entryEnd() {} });
 * p.push(new Uint8Array(100).fill(0x41));
 * try {
 *   p.end();
 * } catch (e) {
 *   if (!(e instanceof TarFormatError)) throw e;
 * }
 * ```
 */
export class TarFormatError extends Error {
  /** The entry the problem is in, when known. */
  readonly entry?: string;
  /** Byte offset in the (uncompressed) archive where the bad header or body starts. */
  readonly offset: number;

  /** Creates the error; `entry` and `offset` are named in the message. */
  constructor(reason: string, offset: number, entry?: string, options?: ErrorOptions) {
    const where = entry !== undefined
      ? `entry ${JSON.stringify(entry)} (header at byte ${offset})`
      : `header at byte ${offset}`;
    super(`Cannot read the tar archive: ${where}: ${reason}`, options);
    this.name = "TarFormatError";
    this.entry = entry;
    this.offset = offset;
  }
}

const BLOCK = 512;
const DEFAULT_MAX_META = 1 << 20;
/** The largest uid or gid (uid_t and gid_t are 32 bits). */
const MAX_ID = 0xffff_ffff;
const utf8 = new TextDecoder();

const enum S {
  Header,
  Data,
  Pad,
  Meta,
  SparseExt,
  SparseMap,
  Eof1,
  End,
  Failed,
}

type MetaKind = "x" | "g" | "L" | "K";

/** pax records whose values are names: a NUL inside one is an error. */
const NUL_FREE_KEYS = new Set(["path", "linkpath", "uname", "gname", "GNU.sparse.name"]);

interface PaxState {
  records: Map<string, Uint8Array>;
  sparse00: { offsets: number[]; sizes: number[] };
}

/** Reads `buf[off..off+len)` as text up to the first NUL; plain ASCII avoids a TextDecoder call. */
function cstring(buf: Uint8Array, off: number, len: number): string {
  let end = off;
  const max = off + len;
  let ascii = true;
  while (end < max && buf[end] !== 0) {
    if (buf[end] >= 0x80) ascii = false;
    end++;
  }
  if (end === off) return "";
  if (ascii) return String.fromCharCode.apply(null, buf.subarray(off, end) as unknown as number[]);
  return decodeName(buf.subarray(off, end));
}

function asciiOf(b: Uint8Array, off: number, len: number): string {
  let s = "";
  for (let i = off; i < off + len; i++) {
    s += b[i] >= 0x20 && b[i] < 0x7f
      ? String.fromCharCode(b[i])
      : `\\x${b[i].toString(16).padStart(2, "0")}`;
  }
  return s;
}

/**
 * The nanoseconds of a validated pax time with a fraction ("123.4" -> 400000000),
 * counted up from the floor for negative times; undefined without a fraction.
 */
function paxNsec(v: Uint8Array): number | undefined {
  const s = utf8.decode(v);
  const dot = s.indexOf(".");
  if (dot < 0) return undefined;
  const frac = Number(s.slice(dot + 1, dot + 10).padEnd(9, "0"));
  return s.startsWith("-") && frac !== 0 ? 1e9 - frac : frac;
}

/** The header checksum over signed bytes, as some historic tars computed it. */
function signedChecksum(b: Uint8Array): number {
  let sum = 8 * 0x20;
  for (let i = 0; i < BLOCK; i++) {
    if (i >= 148 && i < 156) continue;
    sum += b[i] < 128 ? b[i] : b[i] - 256;
  }
  return sum;
}

/** The typeflag for text (NUL is written as "\0"). */
function flagOf(c: number): string {
  return String.fromCharCode(c);
}

/**
 * Parses a tar archive pushed to it in chunks of any size, calling `sink` for
 * every entry. Synchronous; `end()` must be called after the last chunk (it
 * throws if the archive stopped inside a header or body). A missing
 * end-of-archive marker after whole entries is accepted, as GNU tar does.
 *
 * @example Usage
 * ```ts
 * import { TarParser } from "./tar.ts";
 * import { TarWriter } from "./tar_writer.ts";
 * const names: string[] = [];
 * let bytes = 0;
 * const parser = new TarParser({
 *   entry: (h) => names.push(`${h.type} ${h.name}`),
 *   data: (chunk) => { bytes += chunk.length; },
 *   entryEnd: () => {},
 * });
 * parser.push(new TarWriter().directory("etc/").file("etc/motd", "hi\n").bytes());
 * parser.end();
 * if (names.join() !== "directory etc/,file etc/motd" || bytes !== 3) throw new Error("unexpected");
 * ```
 */
export class TarParser {
  #sink: TarSink;
  #maxMeta: number;
  #warn?: (m: string) => void;

  #state = S.Header;
  #offset = 0; // bytes consumed so far
  #hdr = new Uint8Array(BLOCK);
  #hdrFill = 0;
  #remaining = 0; // body bytes left (data, meta or sparse map)
  #pad = 0;
  #entryOffset = 0; // where the current header sequence started
  #entryName?: string;

  // metadata collected for the next entry
  #pax: PaxState | null = null;
  #global = new Map<string, Uint8Array>();
  #globalSize = 0;
  #longName: string | null = null;
  #longLink: string | null = null;
  #pendingMeta = false;
  #pendingBytes = 0;

  #meta: Uint8Array = new Uint8Array(0);
  #metaFill = 0;
  #metaKind: MetaKind = "x";

  // current entry
  #cur: TarHeader | null = null;
  #fileOff = 0;
  #segs: TarSparseSegment[] | null = null;
  #segIdx = 0;
  #segLeft = 0;
  #sparseNums: number[] = [];
  #sparseCur = 0;
  #sparseDigits = 0;
  #sparseMapBytes = 0;
  #error: unknown = null;

  /** Creates a parser that reports to `sink`. */
  constructor(sink: TarSink, options: TarParserOptions = {}) {
    this.#sink = sink;
    this.#maxMeta = options.maxMetaSize ?? DEFAULT_MAX_META;
    this.#warn = options.onWarning;
  }

  /** Bytes consumed so far. */
  get offset(): number {
    return this.#offset;
  }

  /** Feeds the next chunk of the archive. Throws {@linkcode TarFormatError} on malformed input. */
  push(chunk: Uint8Array): void {
    if (this.#state === S.Failed) throw this.#error;
    try {
      this.#push(chunk);
    } catch (e) {
      this.#state = S.Failed;
      this.#error = e;
      throw e;
    }
  }

  /** Signals the end of input; throws {@linkcode TarFormatError} if the archive was cut short. */
  end(): void {
    if (this.#state === S.Failed) throw this.#error;
    const st = this.#state;
    this.#state = S.Failed;
    this.#error = new Error("Cannot push to a tar parser after end()");
    const name = this.#cur?.name ?? this.#entryName;
    switch (st) {
      case S.Header:
        if (this.#hdrFill > 0) {
          throw new TarFormatError(
            `the archive ends inside a header (${this.#hdrFill} of 512 bytes)`,
            this.#pendingMeta ? this.#entryOffset : this.#offset - this.#hdrFill,
            this.#pendingMeta ? this.#entryName : undefined,
          );
        }
        if (this.#pendingMeta) {
          throw new TarFormatError(
            "the archive ends after extended header records, before the entry they describe",
            this.#entryOffset,
            this.#entryName,
          );
        }
        return;
      case S.Data:
      case S.SparseMap:
        throw new TarFormatError(
          `the archive ends inside the entry's data (${this.#remaining} bytes missing)`,
          this.#entryOffset,
          name,
        );
      case S.Pad:
        throw new TarFormatError(
          `the archive ends inside the padding after the entry's data (${this.#pad} bytes missing)`,
          this.#entryOffset,
          name,
        );
      case S.Meta:
        throw new TarFormatError(
          `the archive ends inside a '${this.#metaKind}' extended header (${this.#remaining} bytes missing)`,
          this.#entryOffset,
          name,
        );
      case S.SparseExt:
        throw new TarFormatError(
          "the archive ends inside a GNU sparse extension header",
          this.#entryOffset,
          name,
        );
      default:
        return; // after an end-of-archive block
    }
  }

  #push(chunk: Uint8Array): void {
    const n = chunk.length;
    let pos = 0;
    while (pos < n) {
      switch (this.#state) {
        case S.Data: {
          const take = Math.min(this.#remaining, n - pos);
          this.#emit(chunk.subarray(pos, pos + take));
          pos += take;
          this.#offset += take;
          this.#remaining -= take;
          if (this.#remaining === 0) this.#finishEntry();
          break;
        }
        case S.Pad: {
          const take = Math.min(this.#pad, n - pos);
          pos += take;
          this.#offset += take;
          this.#pad -= take;
          if (this.#pad === 0) this.#state = S.Header;
          break;
        }
        case S.Meta: {
          const take = Math.min(this.#remaining, n - pos);
          this.#meta.set(chunk.subarray(pos, pos + take), this.#metaFill);
          this.#metaFill += take;
          pos += take;
          this.#offset += take;
          this.#remaining -= take;
          if (this.#remaining === 0) {
            this.#state = this.#pad > 0 ? S.Pad : S.Header;
            this.#finishMeta();
          }
          break;
        }
        case S.End:
          this.#offset += n - pos;
          pos = n;
          break;
        default: {
          // Header-sized blocks: headers, GNU sparse extensions, pax 1.0 sparse maps, end marker.
          let block: Uint8Array;
          if (this.#hdrFill === 0 && n - pos >= BLOCK) {
            block = chunk.subarray(pos, pos + BLOCK);
            pos += BLOCK;
          } else {
            const take = Math.min(BLOCK - this.#hdrFill, n - pos);
            this.#hdr.set(chunk.subarray(pos, pos + take), this.#hdrFill);
            this.#hdrFill += take;
            pos += take;
            if (this.#hdrFill < BLOCK) {
              this.#offset += take;
              break;
            }
            this.#offset += take - BLOCK; // counted below as a whole block
            block = this.#hdr;
            this.#hdrFill = 0;
          }
          const at = this.#offset;
          this.#offset += BLOCK;
          if (this.#state === S.Header) this.#header(block, at);
          else if (this.#state === S.SparseExt) this.#sparseExt(block);
          else if (this.#state === S.SparseMap) this.#sparseMapBlock(block);
          else this.#eofBlock(block, at);
        }
      }
    }
  }

  #emit(sub: Uint8Array): void {
    if (this.#segs === null) {
      this.#sink.data(sub, this.#fileOff);
      this.#fileOff += sub.length;
      return;
    }
    let p = 0;
    while (p < sub.length) {
      while (this.#segLeft === 0) {
        this.#segIdx++;
        const seg = this.#segs[this.#segIdx];
        this.#fileOff = seg.offset;
        this.#segLeft = seg.size;
      }
      const take = Math.min(this.#segLeft, sub.length - p);
      this.#sink.data(sub.subarray(p, p + take), this.#fileOff);
      this.#fileOff += take;
      this.#segLeft -= take;
      p += take;
    }
  }

  #finishEntry(): void {
    this.#state = this.#pad > 0 ? S.Pad : S.Header;
    this.#cur = null;
    this.#segs = null;
    this.#sink.entryEnd();
  }

  #eofBlock(block: Uint8Array, at: number): void {
    for (let i = 0; i < BLOCK; i++) {
      if (block[i] !== 0) {
        // GNU tar stops at a lone zero block; Go's archive/tar rejects what follows.
        // Entries hidden behind one would be seen by some tools and not by others.
        throw new TarFormatError(
          "a single zero block (end-of-archive marker) is followed by more data",
          at,
        );
      }
    }
    this.#state = S.End;
  }

  // ---- headers ---------------------------------------------------------------

  #header(b: Uint8Array, at: number): void {
    let sum = 0;
    for (let i = 0; i < BLOCK; i += 4) sum += b[i] + b[i + 1] + b[i + 2] + b[i + 3];
    if (sum === 0) {
      if (this.#pendingMeta) {
        throw new TarFormatError(
          "extended header records are followed by the end of the archive, not by an entry",
          this.#entryOffset,
          this.#entryName,
        );
      }
      this.#state = S.Eof1;
      return;
    }
    if (!this.#pendingMeta) {
      this.#entryOffset = at;
      this.#entryName = undefined;
    }
    const headerName = cstring(b, 0, 100);
    for (let i = 148; i < 156; i++) sum -= b[i];
    sum += 8 * 0x20; // the checksum field counts as spaces
    const stored = this.#num(b, 148, 8, "checksum", at, headerName);
    if (stored !== sum && stored !== signedChecksum(b)) {
      throw new TarFormatError(
        `invalid header checksum (stored ${stored}, computed ${sum})`,
        at,
        this.#entryName ?? headerName,
      );
    }
    const flag = b[156];
    const size = this.#num(b, 124, 12, "size", at, headerName);
    // Meta headers: their body describes the next entry.
    if (
      flag === 0x78 /* x */ || flag === 0x58 /* X (Solaris) */ || flag === 0x67 /* g */ ||
      flag === 0x4c /* L */ || flag === 0x4b /* K */
    ) {
      const kind: MetaKind = flag === 0x67 ? "g" : flag === 0x4c ? "L" : flag === 0x4b ? "K" : "x";
      if (size > this.#maxMeta) {
        throw new TarFormatError(
          `a '${
            flagOf(flag)
          }' extended header of ${size} bytes exceeds the limit of ${this.#maxMeta} bytes`,
          this.#entryOffset,
          this.#entryName ?? headerName,
        );
      }
      if (kind !== "g") {
        // Several x/L/K headers may precede one entry; together they stay bounded too.
        if (!this.#pendingMeta) this.#pendingBytes = 0;
        this.#pendingBytes += size;
        if (this.#pendingBytes > 2 * this.#maxMeta) {
          throw new TarFormatError(
            `extended headers for one entry total ${this.#pendingBytes} bytes, over the limit of ${
              2 * this.#maxMeta
            } bytes`,
            this.#entryOffset,
            this.#entryName ?? headerName,
          );
        }
        this.#pendingMeta = true;
      }
      this.#metaKind = kind;
      this.#meta = new Uint8Array(size);
      this.#metaFill = 0;
      this.#remaining = size;
      this.#pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if (size === 0) {
        this.#state = S.Header;
        this.#finishMeta();
      } else this.#state = S.Meta;
      return;
    }
    this.#entryHeader(b, at, flag, size, headerName);
  }

  #finishMeta(): void {
    const m = this.#meta;
    this.#meta = new Uint8Array(0);
    switch (this.#metaKind) {
      case "L":
        this.#longName = cstring(m, 0, m.length);
        this.#entryName = this.#longName;
        break;
      case "K":
        this.#longLink = cstring(m, 0, m.length);
        break;
      case "x": {
        const st = this.#pax ?? { records: new Map(), sparse00: { offsets: [], sizes: [] } };
        this.#parsePax(m, st, "x");
        this.#pax = st;
        const p = st.records.get("path");
        if (p) this.#entryName = decodeName(p);
        break;
      }
      case "g": {
        const st: PaxState = { records: new Map(), sparse00: { offsets: [], sizes: [] } };
        this.#parsePax(m, st, "g");
        for (const [k, v] of st.records) {
          const old = this.#global.get(k);
          if (old) this.#globalSize -= k.length + old.length;
          if (v.length === 0) this.#global.delete(k);
          else {
            this.#global.set(k, v);
            this.#globalSize += k.length + v.length;
          }
        }
        if (this.#globalSize > this.#maxMeta) {
          throw new TarFormatError(
            `global pax records total ${this.#globalSize} bytes, over the limit of ${this.#maxMeta}`,
            this.#entryOffset,
          );
        }
        break;
      }
    }
  }

  /** Parses `"%d %s=%s\n"` records. Repeated GNU.sparse.offset/numbytes (format 0.0) are kept in order. */
  #parsePax(m: Uint8Array, st: PaxState, kind: string): void {
    let p = 0;
    while (p < m.length) {
      if (m[p] === 0) break; // NUL padding (some writers pad the record block)
      let len = 0;
      let q = p;
      while (q < m.length && m[q] >= 0x30 && m[q] <= 0x39 && q - p < 12) {
        len = len * 10 + m[q++] - 0x30;
      }
      if (
        q === p || m[q] !== 0x20 || len < q - p + 3 || p + len > m.length || m[p + len - 1] !== 0x0a
      ) {
        throw new TarFormatError(
          `malformed pax record at byte ${p} of a '${kind}' header: ${
            JSON.stringify(asciiOf(m, p, Math.min(32, m.length - p)))
          }`,
          this.#entryOffset,
          this.#entryName,
        );
      }
      const recEnd = p + len - 1;
      let eq = q + 1;
      while (eq < recEnd && m[eq] !== 0x3d) eq++;
      if (eq === recEnd || eq === q + 1) {
        throw new TarFormatError(
          `malformed pax record (no keyword=value) at byte ${p} of a '${kind}' header`,
          this.#entryOffset,
          this.#entryName,
        );
      }
      const key = cstring(m, q + 1, eq - q - 1);
      if (key.length !== eq - q - 1 && m.subarray(q + 1, eq).includes(0)) {
        throw new TarFormatError(
          `malformed pax record (NUL in the keyword) at byte ${p} of a '${kind}' header`,
          this.#entryOffset,
          this.#entryName,
        );
      }
      const value = m.subarray(eq + 1, recEnd); // m is ours alone: no copy needed
      if (NUL_FREE_KEYS.has(key) && value.includes(0)) {
        // C tools would stop at the NUL and see another name than we do (Go's archive/tar refuses too).
        throw new TarFormatError(
          `pax record ${key} contains a NUL byte`,
          this.#entryOffset,
          this.#entryName,
        );
      }
      if (key === "GNU.sparse.offset") st.sparse00.offsets.push(this.#paxInt(key, value));
      else if (key === "GNU.sparse.numbytes") st.sparse00.sizes.push(this.#paxInt(key, value));
      else st.records.set(key, value);
      p += len;
    }
  }

  #paxInt(key: string, v: Uint8Array): number {
    const s = utf8.decode(v);
    if (!/^[0-9]{1,16}$/.test(s) || !Number.isSafeInteger(Number(s))) {
      throw new TarFormatError(
        `pax record ${key} has an invalid value ${JSON.stringify(s)}`,
        this.#entryOffset,
        this.#entryName,
      );
    }
    return Number(s);
  }

  #paxTime(key: string, v: Uint8Array): number {
    const s = utf8.decode(v);
    if (!/^-?[0-9]{1,19}(\.[0-9]*)?$/.test(s)) {
      throw new TarFormatError(
        `pax record ${key} has an invalid time ${JSON.stringify(s)}`,
        this.#entryOffset,
        this.#entryName,
      );
    }
    return Number(s);
  }

  /** Reads an octal (space/NUL padded) or GNU base-256 numeric field. */
  #num(b: Uint8Array, off: number, len: number, field: string, at: number, name: string): number {
    const first = b[off];
    if (first & 0x80) {
      // base-256: big-endian two's complement, the top bit of the first byte is the marker
      let v = BigInt(first & 0x7f);
      for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(b[off + i]);
      if (first & 0x40) v -= 1n << BigInt(len * 8 - 1); // negative (0xff marker)
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new TarFormatError(
          `base-256 ${field} field is out of range`,
          at,
          this.#entryName ?? name,
        );
      }
      return Number(v);
    }
    let i = off;
    const end = off + len;
    while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
    let v = 0;
    while (i < end && b[i] >= 0x30 && b[i] <= 0x37) v = v * 8 + (b[i++] - 0x30);
    while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
    if (i !== end) {
      throw new TarFormatError(
        `invalid ${field} field ${JSON.stringify(asciiOf(b, off, len))}`,
        at,
        this.#entryName ?? name,
      );
    }
    return v;
  }

  #entryHeader(
    b: Uint8Array,
    at: number,
    flag: number,
    headerSize: number,
    headerName: string,
  ): void {
    const magic6 = b[257] === 0x75 && b[258] === 0x73 && b[259] === 0x74 && b[260] === 0x61 &&
      b[261] === 0x72; // "ustar"
    const gnu = magic6 && b[262] === 0x20 && b[263] === 0x20 && b[264] === 0;
    const posix = magic6 && b[262] === 0;
    let name = headerName;
    if (posix && b[345] !== 0) {
      // ustar prefix (155 bytes; star's variant keeps 131 and stores times after it)
      const star = b[508] === 0x74 && b[509] === 0x61 && b[510] === 0x72 && b[511] === 0;
      name = cstring(b, 345, star ? 131 : 155) + "/" + headerName;
    }
    const entryName = () => this.#entryName ?? name;
    const pax = this.#pax;
    const rec = (k: string): Uint8Array | undefined => {
      const v = pax?.records.get(k) ?? this.#global.get(k);
      return v && v.length > 0 ? v : undefined;
    };
    const local = (k: string): Uint8Array | undefined => {
      const v = pax?.records.get(k);
      return v && v.length > 0 ? v : undefined;
    };
    if (this.#longName !== null) name = this.#longName;
    let linkname = this.#longLink ?? cstring(b, 157, 100);
    const paxPath = local("path");
    if (paxPath) name = decodeName(paxPath);
    const paxLink = local("linkpath");
    if (paxLink) linkname = decodeName(paxLink);
    this.#entryName = name;

    const num = (off: number, len: number, field: string) =>
      this.#num(b, off, len, field, at, name);
    const mode = num(100, 8, "mode") & 0o7777;
    let uid = num(108, 8, "uid");
    let gid = num(116, 8, "gid");
    let size = headerSize;
    let mtime = num(136, 12, "mtime");
    let uname = magic6 ? cstring(b, 265, 32) : "";
    let gname = magic6 ? cstring(b, 297, 32) : "";
    let devmajor = 0;
    let devminor = 0;
    let atime: number | undefined;
    if (gnu && b[345] !== 0) atime = num(345, 12, "atime");

    let v: Uint8Array | undefined;
    if ((v = rec("uid"))) uid = this.#paxInt("uid", v);
    if ((v = rec("gid"))) gid = this.#paxInt("gid", v);
    if ((v = rec("uname"))) uname = utf8.decode(v);
    if ((v = rec("gname"))) gname = utf8.decode(v);
    let mtimeNsec: number | undefined;
    if ((v = rec("mtime"))) {
      mtime = this.#paxTime("mtime", v);
      mtimeNsec = paxNsec(v);
    }
    if ((v = rec("atime"))) atime = this.#paxTime("atime", v);
    if ((v = local("size"))) size = this.#paxInt("size", v);
    if (uid < 0 || gid < 0) {
      throw new TarFormatError(`negative owner ${uid}:${gid}`, at, entryName());
    }
    if (uid > MAX_ID || gid > MAX_ID) {
      // uid_t and gid_t are 32 bits: such an owner cannot be set (GNU tar
      // refuses it too), and must not reach chown as some other id.
      throw new TarFormatError(
        `owner ${uid}:${gid} is out of range (ids are 0..${MAX_ID})`,
        at,
        entryName(),
      );
    }

    const xattrs: Record<string, Uint8Array> = {};
    // A pax record with an empty value deletes, as for every other keyword
    // (POSIX pax; Go's archive/tar drops it, so umoci, containerd, docker
    // and podman never set an empty xattr either): it is no xattr, and a
    // local empty record removes a global one.
    const addXattrs = (records: Map<string, Uint8Array>) => {
      for (const [k, val] of records) {
        if (val.length === 0) {
          if (k.startsWith("SCHILY.xattr.")) {
            delete xattrs[k.slice(13).replace(/%3D|%25/g, (m) => (m === "%3D" ? "=" : "%"))];
          } else if (k.startsWith("LIBARCHIVE.xattr.")) {
            try {
              delete xattrs[decodeURIComponent(k.slice(17))];
            } catch { /* a malformed name that was never set */ }
          }
          continue;
        }
        if (k.startsWith("SCHILY.xattr.")) {
          // GNU tar writes '=' and '%' in xattr names as %3D and %25 (a pax keyword ends at '=').
          xattrs[k.slice(13).replace(/%3D|%25/g, (m) => (m === "%3D" ? "=" : "%"))] = val;
        } else if (k.startsWith("LIBARCHIVE.xattr.")) {
          let key: string;
          let bytes: Uint8Array;
          try {
            key = decodeURIComponent(k.slice(17));
            const bin = atob(
              utf8.decode(val).replace(/\s+/g, "").padEnd(Math.ceil(val.length / 4) * 4, "="),
            );
            bytes = new Uint8Array(bin.length);
            for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
          } catch (e) {
            throw new TarFormatError(`invalid pax record ${k}`, at, entryName(), { cause: e });
          }
          xattrs[key] = bytes;
        }
      }
    };
    addXattrs(this.#global);
    if (pax) addXattrs(pax.records);

    // Entry type. Which types carry a body follows Go's archive/tar (see module doc).
    let type: TarEntryType;
    let hasBody = false;
    let skipBody = false; // body present but not handed to the sink
    switch (flag) {
      case 0x30: // '0'
      case 0x00: // '\0' (pre-POSIX)
      case 0x37: // '7' contiguous
        // Old archives marked directories with a trailing slash on a regular entry; GNU tar agrees.
        if (name.endsWith("/") && flag !== 0x37) {
          type = "directory";
          skipBody = true;
        } else {
          type = "file";
          hasBody = true;
        }
        break;
      case 0x31:
        type = "hardlink";
        break;
      case 0x32:
        type = "symlink";
        break;
      case 0x33:
        type = "char";
        break;
      case 0x34:
        type = "block";
        break;
      case 0x35:
        type = "directory";
        break;
      case 0x36:
        type = "fifo";
        break;
      case 0x53: // 'S' old GNU sparse
        type = "file";
        hasBody = true;
        break;
      case 0x44: // 'D' GNU dumpdir: a directory whose body lists its contents
        type = "directory";
        skipBody = true;
        break;
      case 0x56: // 'V' volume label
      case 0x4e: // 'N' old GNU long-name rename script
        this.#warn?.(
          `skipping ${flag === 0x56 ? "volume label" : "GNU 'N' entry"} ${JSON.stringify(name)}`,
        );
        this.#skipEntry(size);
        return;
      case 0x4d: // 'M'
        throw new TarFormatError(
          "a GNU multi-volume continuation entry cannot be applied on its own",
          at,
          entryName(),
        );
      default:
        // POSIX: an unrecognised type flag is read as a regular file.
        this.#warn?.(
          `entry ${JSON.stringify(name)} has unknown type flag ${
            JSON.stringify(flagOf(flag))
          }; reading it as a regular file`,
        );
        type = "file";
        hasBody = true;
    }
    if (type === "char" || type === "block") {
      if (magic6) {
        devmajor = num(329, 8, "devmajor");
        devminor = num(337, 8, "devminor");
      }
      if ((v = rec("SCHILY.devmajor"))) devmajor = this.#paxInt("SCHILY.devmajor", v);
      if ((v = rec("SCHILY.devminor"))) devminor = this.#paxInt("SCHILY.devminor", v);
    }

    const header: TarHeader = {
      name,
      type,
      typeflag: flagOf(flag),
      mode,
      uid,
      gid,
      uname,
      gname,
      size: hasBody ? size : 0,
      mtime,
      linkname: type === "symlink" || type === "hardlink" ? linkname : "",
      devmajor,
      devminor,
      xattrs,
    };
    if (atime !== undefined) header.atime = atime;
    if (mtimeNsec !== undefined) header.mtimeNsec = mtimeNsec;

    // Reset per-entry metadata now that it has been applied.
    this.#pax = null;
    this.#longName = null;
    this.#longLink = null;
    this.#pendingMeta = false;

    const bodySize = hasBody || skipBody ? size : 0;
    this.#remaining = bodySize;
    this.#pad = (BLOCK - (bodySize % BLOCK)) % BLOCK;
    this.#fileOff = 0;
    this.#segs = null;

    if (skipBody) {
      this.#sink.entry(header);
      this.#sink.entryEnd();
      this.#skipBody(bodySize);
      return;
    }

    // Sparse files.
    if (flag === 0x53) {
      const segs: TarSparseSegment[] = [];
      for (let i = 0; i < 4; i++) this.#gnuSparseEntry(b, 386 + i * 24, segs, at);
      header.realSize = num(483, 12, "realsize");
      if ((v = rec("GNU.sparse.size"))) header.realSize = this.#paxInt("GNU.sparse.size", v);
      header.sparse = segs;
      this.#cur = header;
      if (b[482] !== 0) {
        this.#state = S.SparseExt;
        return;
      }
      this.#startSparse(at);
      return;
    }
    if (pax && type === "file") {
      const major = local("GNU.sparse.major");
      const map01 = local("GNU.sparse.map");
      const s00 = pax.sparse00;
      const sparseName = local("GNU.sparse.name");
      if (major || map01 || s00.offsets.length > 0) {
        if (sparseName) header.name = this.#entryName = decodeName(sparseName);
        const realV = local("GNU.sparse.realsize") ?? local("GNU.sparse.size");
        if (!realV) {
          throw new TarFormatError("sparse file without GNU.sparse.realsize/size", at, entryName());
        }
        header.realSize = this.#paxInt("GNU.sparse.realsize", realV);
        this.#cur = header;
        if (major) {
          const minor = local("GNU.sparse.minor");
          const ver = `${utf8.decode(major)}.${minor ? utf8.decode(minor) : "?"}`;
          if (ver !== "1.0") {
            throw new TarFormatError(`unsupported GNU sparse format ${ver}`, at, entryName());
          }
          header.sparse = [];
          this.#sparseNums = [];
          this.#sparseCur = 0;
          this.#sparseDigits = 0;
          this.#sparseMapBytes = 0;
          if (this.#remaining === 0) {
            throw new TarFormatError(
              "sparse file (format 1.0) without a sparse map",
              at,
              entryName(),
            );
          }
          this.#state = S.SparseMap;
          return;
        }
        const segs: TarSparseSegment[] = [];
        if (map01) {
          const parts = utf8.decode(map01).split(",");
          if (parts.length % 2 !== 0 || (parts.length === 1 && parts[0] === "")) {
            throw new TarFormatError("GNU.sparse.map has an odd number of values", at, entryName());
          }
          for (let i = 0; i < parts.length; i += 2) {
            segs.push({
              offset: this.#paxInt("GNU.sparse.map", new TextEncoder().encode(parts[i])),
              size: this.#paxInt("GNU.sparse.map", new TextEncoder().encode(parts[i + 1])),
            });
          }
        } else {
          if (s00.offsets.length !== s00.sizes.length) {
            throw new TarFormatError(
              "GNU.sparse.offset and GNU.sparse.numbytes records do not pair up",
              at,
              entryName(),
            );
          }
          for (let i = 0; i < s00.offsets.length; i++) {
            segs.push({ offset: s00.offsets[i], size: s00.sizes[i] });
          }
        }
        header.sparse = segs;
        this.#startSparse(at);
        return;
      }
    }

    this.#cur = header;
    this.#sink.entry(header);
    if (this.#remaining === 0) this.#finishEntry();
    else this.#state = S.Data;
  }

  #skipEntry(size: number): void {
    this.#pax = null;
    this.#longName = null;
    this.#longLink = null;
    this.#pendingMeta = false;
    this.#skipBody(size);
  }

  #skipBody(size: number): void {
    // Skipped bodies are consumed as padding (their content is not needed).
    this.#remaining = 0;
    this.#pad = size + (BLOCK - (size % BLOCK)) % BLOCK;
    this.#state = this.#pad > 0 ? S.Pad : S.Header;
    this.#cur = null;
  }

  #gnuSparseEntry(b: Uint8Array, off: number, segs: TarSparseSegment[], at: number): void {
    if (b[off] === 0 && b[off + 12] === 0) return;
    const name = this.#cur?.name ?? this.#entryName ?? "";
    segs.push({
      offset: this.#num(b, off, 12, "sparse offset", at, name),
      size: this.#num(b, off + 12, 12, "sparse numbytes", at, name),
    });
  }

  #sparseExt(b: Uint8Array): void {
    const cur = this.#cur!;
    const segs = cur.sparse!;
    for (let i = 0; i < 21; i++) this.#gnuSparseEntry(b, i * 24, segs, this.#entryOffset);
    if (segs.length * 16 > this.#maxMeta) {
      throw new TarFormatError(
        `sparse map of ${segs.length} segments exceeds the limit`,
        this.#entryOffset,
        cur.name,
      );
    }
    if (b[504] === 0) this.#startSparse(this.#entryOffset);
  }

  #sparseMapBlock(b: Uint8Array): void {
    const cur = this.#cur!;
    this.#remaining -= BLOCK;
    this.#sparseMapBytes += BLOCK;
    if (this.#remaining < 0 || this.#sparseMapBytes > this.#maxMeta) {
      throw new TarFormatError(
        this.#remaining < 0
          ? "the sparse map (format 1.0) runs past the entry's data"
          : `the sparse map (format 1.0) exceeds the limit of ${this.#maxMeta} bytes`,
        this.#entryOffset,
        cur.name,
      );
    }
    const bad = (why: string) =>
      new TarFormatError(`invalid sparse map (format 1.0): ${why}`, this.#entryOffset, cur.name);
    // Decimal numbers, one per line: the count, then offset/size pairs; the map is
    // padded with NULs to a block. Parsed incrementally, so each byte is read once.
    const nums = this.#sparseNums;
    for (let i = 0; i < BLOCK; i++) {
      const c = b[i];
      if (c >= 0x30 && c <= 0x39) {
        if (++this.#sparseDigits > 16) throw bad("a number is too long");
        this.#sparseCur = this.#sparseCur * 10 + (c - 0x30);
      } else if (c === 0x0a && this.#sparseDigits > 0) {
        nums.push(this.#sparseCur);
        this.#sparseCur = 0;
        this.#sparseDigits = 0;
        if (nums.length === 1 && nums[0] * 16 > this.#maxMeta) throw bad(`${nums[0]} segments`);
        if (nums.length === 1 + 2 * nums[0]) break;
      } else throw bad(`unexpected byte 0x${c.toString(16)} at byte ${i} of a map block`);
    }
    if (nums.length === 0 || nums.length < 1 + 2 * nums[0]) return;
    const segs: TarSparseSegment[] = [];
    for (let i = 0; i < nums[0]; i++) segs.push({ offset: nums[1 + 2 * i], size: nums[2 + 2 * i] });
    cur.sparse = segs;
    cur.size = this.#remaining;
    this.#sparseNums = [];
    this.#startSparse(this.#entryOffset);
  }

  /** Validates the map against the sizes, then starts delivering data. */
  #startSparse(at: number): void {
    const cur = this.#cur!;
    const segs = cur.sparse!;
    const realSize = cur.realSize!;
    let prevEnd = 0;
    let total = 0;
    for (const s of segs) {
      if (s.offset < prevEnd || s.offset + s.size > realSize) {
        throw new TarFormatError(
          `sparse segment ${s.offset}+${s.size} overlaps another or lies past the file size ${realSize}`,
          at,
          cur.name,
        );
      }
      prevEnd = s.offset + s.size;
      total += s.size;
    }
    if (total !== this.#remaining) {
      throw new TarFormatError(
        `sparse map holds ${total} bytes of data but the entry stores ${this.#remaining}`,
        at,
        cur.name,
      );
    }
    cur.size = total;
    this.#segs = segs;
    this.#segIdx = -1;
    this.#segLeft = 0;
    this.#sink.entry(cur);
    if (this.#remaining === 0) this.#finishEntry();
    else this.#state = S.Data;
  }
}

/**
 * Drives a {@linkcode TarParser} from a stream. Rejects with
 * {@linkcode TarFormatError} on a malformed or truncated archive, or with the
 * abort reason when `signal` fires (the stream is cancelled).
 *
 * @example Usage
 * ```ts
 * import { untar } from "./tar.ts";
 * import { TarWriter } from "./tar_writer.ts";
 * const names: string[] = [];
 * await untar(new TarWriter().file("a", "1").file("b", "2").stream(), {
 *   entry: (h) => names.push(h.name),
 *   data: () => {},
 *   entryEnd: () => {},
 * });
 * if (names.join() !== "a,b") throw new Error("unexpected");
 * ```
 */
export async function untar(
  stream: ReadableStream<Uint8Array>,
  sink: TarSink,
  signal?: AbortSignal,
  options?: TarParserOptions,
): Promise<void> {
  signal?.throwIfAborted();
  const parser = new TarParser(sink, options);
  const reader = stream.getReader();
  const onAbort = () => reader.cancel(signal!.reason).catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    while (true) {
      const { done, value } = await reader.read();
      signal?.throwIfAborted();
      if (done) break;
      parser.push(value);
    }
    parser.end();
  } catch (e) {
    await reader.cancel(e).catch(() => {});
    throw e;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    reader.releaseLock();
  }
}

/** One entry of {@linkcode readTar}: its header and its whole body. */
export interface TarEntry {
  /** The entry's metadata. */
  header: TarHeader;
  /** The body (for sparse files, the stored data segments concatenated). */
  data: Uint8Array;
}

/**
 * Parses a whole in-memory archive into entries with copied bodies: handy for
 * tests and small archives (use {@linkcode TarParser} for layers).
 *
 * @example Usage
 * ```ts
 * import { readTar } from "./tar.ts";
 * import { TarWriter } from "./tar_writer.ts";
 * const [e] = readTar(new TarWriter().file("a", "hello").bytes());
 * if (new TextDecoder().decode(e.data) !== "hello") throw new Error("unexpected");
 * ```
 */
export function readTar(bytes: Uint8Array, options?: TarParserOptions): TarEntry[] {
  const out: TarEntry[] = [];
  let parts: Uint8Array[] = [];
  const p = new TarParser({
    entry(header) {
      parts = [];
      out.push({ header, data: new Uint8Array(0) });
    },
    data(chunk) {
      parts.push(chunk.slice());
    },
    entryEnd() {
      const e = out[out.length - 1];
      let n = 0;
      for (const c of parts) n += c.length;
      const d = new Uint8Array(n);
      let o = 0;
      for (const c of parts) {
        d.set(c, o);
        o += c.length;
      }
      e.data = d;
    },
  }, options);
  p.push(bytes);
  p.end();
  return out;
}
