/**
 * A streaming tar parser for OCI layers: ustar, POSIX pax (`x`/`g` records incl.
 * xattrs), GNU long names and links (`L`/`K`), base-256 numbers, the old GNU and
 * pax 0.0/0.1/1.0 sparse formats, verified header checksums and truncation
 * detection. Push-based and synchronous: bodies are handed on as zero-copy
 * subarrays of the pushed chunks; only the 512-byte headers are looked at byte
 * by byte. Names are passed on verbatim: path safety is the applicator's job.
 *
 * ## Every layer read as docker reads it
 * Almost every image was written with Go's `archive/tar` and is read with it
 * by docker, containerd and the scanners (trivy, grype, syft). Where strata
 * read a layer otherwise, an image scanned clean could put other files on
 * disk, or an image docker runs could fail. So the rule is: read an archive
 * as Go's `archive/tar` (and docker's and containerd's use of it) does, when
 * GNU tar and libarchive (bsdtar) read it the same way; where they disagree,
 * follow Go when that is safe, and refuse when no reading agrees with all (a
 * refusal is always safe, a different reading never is).
 * `tests/tar_diff_test.ts` holds strata to this: real tarballs from GNU tar,
 * libarchive, pax, Python's tarfile and strata's writer, and seeded mutations
 * of them, read by strata, GNU tar and libarchive (`tests/tar_corpus/` keeps
 * every case that ever failed). The choices, each where it is made below:
 *
 * - **Only the last `x` header** before an entry counts (Go, GNU tar and
 *   libarchive alike); an earlier one with xattr, other `SCHILY.*` or sparse
 *   records is refused (GNU tar and libarchive keep those from every header).
 *   A repeated xattr or sparse record in one header is refused for the same
 *   reason; other repeated records: the last counts, for all three.
 * - **pax numbers** are digits only, leading zeros allowed (`size=000…999` is
 *   999 to all three); no sign, no spaces, never empty. Negative times with a
 *   fraction are refused (Go reads `-1.5` as -1.5 s, the others as -0.5 s).
 * - **Global `g` headers** are checked as Go checks them and then ignored, as
 *   Go, docker, containerd and libarchive do (GNU tar alone applies them; a
 *   warning names what it would have applied). One between an `x`/`L`/`K`
 *   header and its entry is refused (Go drops the earlier records there).
 * - **GNU long names and pax paths** for the same entry must agree (Go takes
 *   the `L`, GNU tar the pax path, libarchive the first), and so must a long
 *   name and a `GNU.sparse.name` (libarchive takes the long name); an empty
 *   `L`/`K` is refused.
 * - **Header formats** are told apart as Go does: ustar needs magic `ustar\0`
 *   and version `00`, GNU `ustar \0` and ` \0`; anything else is V7 (no
 *   prefix, owner names or device numbers). A `ustar\0` header with another
 *   version and a prefix, owner name or device number is refused (GNU tar and
 *   libarchive read those fields). Device numbers are parsed in every ustar and
 *   GNU header, as Go does.
 * - **GNU atime/ctime holding text** (Go before 1.8 wrote a ustar prefix there,
 *   golang.org/issue/12594): both times are ignored, and an ASCII text is the
 *   name's prefix, as Go reads it (GNU tar and libarchive keep the bare name).
 * - **Numeric fields**: octal after leading spaces (not NULs: libarchive reads
 *   a leading NUL as 0, Go and GNU tar skip it), or base-256; checksums are
 *   octal. Negative sizes, ids and device numbers are refused.
 * - **Entry types**: only those Go defines and docker and containerd apply:
 *   `0`, `\0`, `1`–`6` and GNU sparse `S` (in GNU headers). Others (`7`, `D`,
 *   `V`, `X`, unknown letters) are refused: Go hands them to its caller as
 *   they are and docker and containerd fail on them, while GNU tar and
 *   libarchive would write regular files no Go-based scanner looked at.
 * - **Bodies**: links, devices and FIFOs with a non-zero size are refused (Go
 *   and libarchive read no body there, GNU tar skips one); directories never
 *   carry one (all three agree). A `\0` entry named `…/` is a directory and
 *   must have size 0; a `0` entry named `…/` is refused (Go reads a file).
 *   Links need a target.
 * - **Xattrs** are `SCHILY.xattr.*` records with the name verbatim (names
 *   with `%3D`/`%25`, which GNU tar decodes, are refused); an empty value is an
 *   empty xattr (Go keeps it in `PAXRecords`, which docker and containerd set).
 *   `LIBARCHIVE.xattr.*` records must repeat a SCHILY one (Go and GNU tar
 *   ignore them).
 * - **Sparse files** are detected as Go detects them; GNU sparse records on
 *   an entry that is not a sparse file, a 1.0 map beside 0.x records, sizes
 *   that disagree, a 0.x map without a matching `GNU.sparse.numblocks`, and old
 *   GNU map entries with an offset but no size (or the reverse) are refused.
 * - **Devices** whose `SCHILY.devmajor`/`devminor` records differ from the
 *   header are refused (GNU tar and libarchive take the records, Go the header).
 * - **What libarchive alone reads**: a sparse map or real size in a GNU header
 *   that is not an `S` entry, a `SCHILY.realsize` record (its size), NUL
 *   padding after pax records (it stops there): refused.
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
  /** Extended attributes from pax `SCHILY.xattr.*` records (an empty value is an empty xattr). */
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
  /** Told about what was read specially: global pax records ignored that GNU tar would apply. */
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
const latin1 = new TextDecoder("latin1");

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

/** GNU sparse records whose values are numbers. */
const SPARSE_NUMBERS = [
  "GNU.sparse.size",
  "GNU.sparse.realsize",
  "GNU.sparse.numblocks",
  "GNU.sparse.major",
  "GNU.sparse.minor",
];

/** Records GNU tar or libarchive keep from every 'x' header before an entry, not only from the last. */
const ACCUMULATED = /^(SCHILY\.|LIBARCHIVE\.|GNU\.sparse\.)/;

/** Global pax records GNU tar applies to later entries (strata, Go and libarchive do not). */
const GLOBAL_APPLIED =
  /^(path|linkpath|size|uid|gid|uname|gname|mtime|atime|SCHILY\.|GNU\.sparse\.)/;

/** pax records whose values are names: a NUL inside one is an error. */
const NUL_FREE_KEYS = new Set(["path", "linkpath", "uname", "gname", "GNU.sparse.name"]);

/** The records of one pax header: the common ones as fields, the rest in a map. */
interface PaxState {
  path?: Uint8Array;
  linkpath?: Uint8Array;
  uname?: Uint8Array;
  gname?: Uint8Array;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: [number, number, boolean];
  atime?: [number, number, boolean];
  /** Every other record: xattrs, GNU sparse, vendor records. */
  records: Map<string, Uint8Array>;
  /** GNU sparse 0.0: the GNU.sparse.offset and .numbytes values, in order. */
  sparse00: number[];
  /** A record GNU tar or libarchive keep from every 'x' header (xattrs, sparse). */
  accumulated: boolean;
  /** A GNU.sparse.* record. */
  sparse: boolean;
}

const newPax = (): PaxState => ({
  records: new Map(),
  sparse00: [],
  accumulated: false,
  sparse: false,
});

/** What the entry types that are refused are, for the error message. */
const TYPE_NAMES: Record<string, string> = {
  "7": " (contiguous file)",
  D: " (GNU dump directory)",
  M: " (GNU multi-volume continuation)",
  N: " (old GNU long-name script)",
  V: " (GNU volume label)",
  X: " (Solaris extended header)",
  A: " (Solaris access control list)",
  E: " (Solaris extended attributes)",
  I: " (star inode metadata)",
};

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
  if (ascii) {
    // (apply() takes its arguments on the stack: a long GNU name goes through a decoder)
    if (end - off > 4096) return latin1.decode(buf.subarray(off, end));
    return String.fromCharCode.apply(null, buf.subarray(off, end) as unknown as number[]);
  }
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

/** Whether the `LIBARCHIVE.xattr.NAME=BASE64` record `k` says what `xattrs` (from SCHILY records) hold. */
function sameLibarchiveXattr(
  k: string,
  v: Uint8Array,
  xattrs: Record<string, Uint8Array>,
): boolean {
  let name: string;
  let bin: string;
  try {
    name = decodeURIComponent(k.slice(17));
    const t = utf8.decode(v).replace(/\s+/g, "");
    bin = atob(t.padEnd(Math.ceil(t.length / 4) * 4, "="));
  } catch {
    return false;
  }
  const have = xattrs[name];
  if (!have || have.length !== bin.length) return false;
  for (let i = 0; i < bin.length; i++) if (have[i] !== bin.charCodeAt(i)) return false;
  return true;
}

/**
 * Seconds as a double from whole seconds and nanoseconds, never rounded up
 * to the next second (1700000000.999999999 is not a double): `Math.floor` of
 * the result is `sec`, the exact nanoseconds travel beside it.
 */
function secondsOf(sec: number, nsec: number): number {
  if (nsec === 0) return sec;
  const v = sec + nsec / 1e9;
  return Math.floor(v) === sec ? v : sec;
}

/**
 * A numeric header field as Go's archive/tar parses it (strconv.go
 * parseNumeric): base-256, or octal with leading and trailing spaces and NULs
 * trimmed, up to a NUL. `null` where Go fails.
 */
function goNumeric(b: Uint8Array, off: number, len: number): number | null {
  if (b[off] & 0x80) {
    const inv = b[off] & 0x40 ? 0xff : 0;
    let x = 0n;
    for (let i = 0; i < len; i++) {
      let c = b[off + i] ^ inv;
      if (i === 0) c &= 0x7f;
      if (x >> 56n) return null; // more than 64 bits
      x = (x << 8n) | BigInt(c);
    }
    if (x >> 63n) return null;
    return Number(inv ? -x - 1n : x);
  }
  let s = off, e = off + len;
  while (s < e && (b[s] === 0x20 || b[s] === 0)) s++;
  while (e > s && (b[e - 1] === 0x20 || b[e - 1] === 0)) e--;
  let v = 0;
  for (let i = s; i < e && b[i] !== 0; i++) {
    if (b[i] < 0x30 || b[i] > 0x37) return null;
    v = v * 8 + (b[i] - 0x30);
  }
  return v < 2 ** 64 ? v : null;
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
    // Octal only, as Go's archive/tar reads it (a base-256 checksum is no checksum).
    const stored = b[148] & 0x80 ? -1 : this.#num(b, 148, 8, "checksum", at, headerName);
    if (stored !== sum && stored !== signedChecksum(b)) {
      throw new TarFormatError(
        `invalid header checksum (stored ${stored}, computed ${sum})`,
        at,
        this.#entryName ?? headerName,
      );
    }
    const flag = b[156];
    const size = this.#num(b, 124, 12, "size", at, headerName);
    if (size < 0) {
      throw new TarFormatError(`negative size ${size}`, at, this.#entryName ?? headerName);
    }
    // Meta headers: their body describes the next entry.
    if (
      flag === 0x78 /* x */ || flag === 0x67 /* g */ || flag === 0x4c /* L */ ||
      flag === 0x4b /* K */
    ) {
      const kind: MetaKind = flag === 0x67 ? "g" : flag === 0x4c ? "L" : flag === 0x4b ? "K" : "x";
      if (kind === "g" && this.#pendingMeta) {
        // Go's archive/tar hands a global header to its caller as an entry of its own,
        // dropping the extended records read before it; GNU tar and libarchive keep them.
        throw new TarFormatError(
          "a global pax header ('g') comes between extended headers and the entry they describe",
          this.#entryOffset,
          this.#entryName ?? headerName,
        );
      }
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
      case "K": {
        // Go's archive/tar ignores an empty long name, GNU tar takes it: refuse it.
        const s = cstring(m, 0, m.length);
        if (s === "") {
          throw new TarFormatError(
            `an empty GNU long ${
              this.#metaKind === "L" ? "name" : "link name"
            } ('${this.#metaKind}' header)`,
            this.#entryOffset,
            this.#entryName,
          );
        }
        if (this.#metaKind === "L") this.#longName = this.#entryName = s;
        else this.#longLink = s;
        break;
      }
      case "x": {
        // Only the LAST 'x' header before an entry counts: Go's archive/tar
        // (reader.go: each parsePAX result replaces the last), GNU tar (it
        // decodes the last extended header it read) and libarchive all read it so.
        const st = newPax();
        this.#parsePax(m, st, "x");
        const old = this.#pax;
        if (old?.accumulated) {
          // GNU tar and libarchive keep the xattrs (and libarchive the sparse
          // records) of every 'x' header before an entry, Go only the last's.
          throw new TarFormatError(
            "an 'x' header with xattr or sparse records is followed by another 'x' header for the same entry",
            this.#entryOffset,
            this.#entryName,
          );
        }
        this.#pax = st;
        const p = st.path;
        this.#entryName = p && p.length > 0 ? decodeName(p) : this.#longName ?? undefined;
        break;
      }
      case "g": {
        // Global records are checked as Go checks them, then ignored, as Go's
        // archive/tar, docker, containerd and libarchive do (GNU tar alone
        // applies them to the entries after it).
        const st = newPax();
        this.#parsePax(m, st, "g");
        const used =
          (["path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime"] as const)
            .filter((k) =>
              st[k] !== undefined && (typeof st[k] !== "object" || st[k].length > 0)
            ) as string[];
        for (const [k, v] of st.records) if (v.length > 0 && GLOBAL_APPLIED.test(k)) used.push(k);
        if (used.length > 0) {
          this.#warn?.(
            `ignoring the global pax records ${
              used.join(", ")
            } (as docker and containerd do; GNU tar would apply them)`,
          );
        }
        break;
      }
    }
  }

  /** Parses `"%d %s=%s\n"` records. GNU.sparse.offset/numbytes (format 0.0) are kept in order. */
  #parsePax(m: Uint8Array, st: PaxState, kind: string): void {
    let p = 0;
    while (p < m.length) {
      // (NUL padding after the records is refused: Go's archive/tar refuses
      // it, libarchive stops reading records there.)
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
      // A repeated record: the last one counts, as for Go, GNU tar and libarchive.
      switch (key) {
        case "path":
          st.path = value;
          break;
        case "linkpath":
          st.linkpath = value;
          break;
        case "uname":
          st.uname = value;
          break;
        case "gname":
          st.gname = value;
          break;
        // Numbers and times are checked as they come, every one of them (GNU
        // tar refuses a malformed or empty one even when a later record
        // replaces it; Go, which checks the last, refuses it there).
        case "uid":
          st.uid = this.#paxInt(key, value);
          break;
        case "gid":
          st.gid = this.#paxInt(key, value);
          break;
        case "size":
          st.size = this.#paxInt(key, value);
          break;
        case "mtime":
          st.mtime = this.#paxTime(key, value);
          break;
        case "atime":
          st.atime = this.#paxTime(key, value);
          break;
        case "ctime":
          this.#paxTime(key, value);
          break;
        case "GNU.sparse.offset":
        case "GNU.sparse.numbytes":
          // Format 0.0 repeats these in pairs; Go's archive/tar refuses any other order.
          if ((st.sparse00.length % 2 === 0) !== (key === "GNU.sparse.offset")) {
            throw new TarFormatError(
              "GNU.sparse.offset and GNU.sparse.numbytes records do not alternate",
              this.#entryOffset,
              this.#entryName,
            );
          }
          st.sparse00.push(this.#paxInt(key, value));
          st.accumulated = st.sparse = true;
          break;
        default:
          if (ACCUMULATED.test(key)) {
            st.accumulated = true;
            if (key.startsWith("GNU.sparse.")) st.sparse = true;
            if (st.records.has(key)) {
              // Go keeps the last of repeated records; GNU tar and libarchive keep
              // every xattr, libarchive the first sparse map.
              throw new TarFormatError(
                `pax record ${key} is repeated`,
                this.#entryOffset,
                this.#entryName,
              );
            }
          }
          st.records.set(key, value);
      }
      p += len;
    }
  }

  /**
   * A pax decimal: digits only. Leading zeros are fine (`size=000…999` is 999
   * to Go's `strconv.ParseInt`, to GNU tar's `strtoumax` and to libarchive);
   * a sign, a space or anything else is refused (GNU tar refuses them; Go
   * takes a `+`, so no reading agrees with all).
   */
  #paxInt(key: string, v: Uint8Array): number {
    let i = 0;
    while (i < v.length - 1 && v[i] === 0x30) i++;
    let n = 0;
    let ok = v.length > 0 && v.length - i <= 16;
    for (let j = i; ok && j < v.length; j++) {
      const c = v[j];
      if (c < 0x30 || c > 0x39) ok = false;
      else n = n * 10 + (c - 0x30);
    }
    if (!ok || !Number.isSafeInteger(n)) {
      throw new TarFormatError(
        `pax record ${key} has an invalid value ${JSON.stringify(utf8.decode(v))}`,
        this.#entryOffset,
        this.#entryName,
      );
    }
    return n;
  }

  /**
   * A pax time `[-]SECONDS[.FRACTION]` as whole seconds (the floor) and
   * nanoseconds; leading zeros are fine (see {@linkcode TarParser.#paxInt}),
   * digits past the ninth are cut, as Go and GNU tar do. A negative time with
   * a fraction is refused: Go reads `-1.5` as -1.5 s, GNU tar and libarchive
   * as -0.5 s.
   */
  #paxTime(key: string, v: Uint8Array): [number, number, boolean] {
    // By hand, not with a RegExp: nearly every entry GNU tar writes has one or three.
    const n = v.length;
    let i = v[0] === 0x2d ? 1 : 0;
    const neg = i === 1;
    while (i < n - 1 && v[i] === 0x30 && v[i + 1] >= 0x30 && v[i + 1] <= 0x39) i++;
    let sec = 0, digits = 0;
    for (; i < n && v[i] >= 0x30 && v[i] <= 0x39; i++, digits++) sec = sec * 10 + (v[i] - 0x30);
    let nsec = 0, frac = false;
    if (i < n && v[i] === 0x2e) {
      frac = true;
      let k = 0;
      for (i++; i < n && v[i] >= 0x30 && v[i] <= 0x39; i++, k++) {
        if (k < 9) nsec = nsec * 10 + (v[i] - 0x30);
      }
      for (; k < 9; k++) nsec *= 10;
    }
    if (i !== n || digits === 0 || digits > 16 || !Number.isSafeInteger(sec) || (neg && nsec)) {
      throw new TarFormatError(
        `pax record ${key} has an invalid time ${JSON.stringify(utf8.decode(v))}${
          neg && nsec ? " (readers disagree on negative times with a fraction)" : ""
        }`,
        this.#entryOffset,
        this.#entryName,
      );
    }
    return [neg ? -sec : sec, nsec, frac];
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
    // Leading spaces only: after a leading NUL, libarchive reads 0 where Go and
    // GNU tar read the digits that follow (an all-NUL field is 0 to all).
    while (i < end && b[i] === 0x20) i++;
    if (i < end && b[i] === 0) {
      while (i < end && (b[i] === 0 || b[i] === 0x20)) i++;
      if (i === end) return 0;
      throw new TarFormatError(
        `invalid ${field} field ${JSON.stringify(asciiOf(b, off, len))} (digits after a NUL)`,
        at,
        this.#entryName ?? name,
      );
    }
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
    // The header's format, as Go's archive/tar tells it (format.go getFormat):
    // ustar (and pax) is magic "ustar\0" with version "00", GNU is "ustar " with
    // " \0", anything else V7 (no owner names, device numbers or prefix).
    const ustarish = b[257] === 0x75 && b[258] === 0x73 && b[259] === 0x74 && b[260] === 0x61 &&
      b[261] === 0x72; // "ustar"
    const posix = ustarish && b[262] === 0 && b[263] === 0x30 && b[264] === 0x30;
    const gnu = ustarish && b[262] === 0x20 && b[263] === 0x20 && b[264] === 0;
    const v7 = !posix && !gnu;
    const entryName = () => this.#entryName ?? headerName;
    if (v7 && ustarish && b[262] === 0 && (b[345] | b[265] | b[297] | b[329] | b[337]) !== 0) {
      // GNU tar and libarchive read "ustar\0" with any version as ustar; Go as V7.
      throw new TarFormatError(
        `the header has magic "ustar\\0" but version ${
          JSON.stringify(asciiOf(b, 263, 2))
        }, not "00": Go's archive/tar reads it without its prefix, owner names and device numbers, GNU tar and libarchive with them`,
        at,
        entryName(),
      );
    }
    let name = headerName;
    let atime: number | undefined;
    let goPrefix = false; // the text of Go < 1.8 in the GNU times (below)
    if (posix && b[345] !== 0) {
      // ustar prefix (155 bytes); star's variant, with "tar\0" at the end, keeps
      // 131 and stores times after it: Go cuts the prefix there, GNU tar does not.
      const star = b[508] === 0x74 && b[509] === 0x61 && b[510] === 0x72 && b[511] === 0;
      let prefix = cstring(b, 345, star ? 131 : 155);
      if (star && prefix.length >= 131 && b[476] !== 0 && cstring(b, 345, 155) !== prefix) {
        throw new TarFormatError(
          "a star header's prefix fills its 131 bytes: Go's archive/tar cuts it there, GNU tar reads on into the times",
          at,
          entryName(),
        );
      }
      if (star) {
        // Go reads star's atime and ctime, and refuses the header if they are malformed.
        if (b[476] !== 0) atime = this.#num(b, 476, 12, "atime", at, headerName);
        if (b[488] !== 0) this.#num(b, 488, 12, "ctime", at, headerName);
      }
      if (prefix !== "") name = prefix + "/" + headerName;
      prefix = "";
    } else if (gnu && (b[345] !== 0 || b[357] !== 0)) {
      // GNU atime and ctime. Go before 1.8 wrote a ustar prefix here in GNU
      // headers (golang.org/issue/12594), so these fields may hold text: Go's
      // archive/tar then ignores both times, and when that text is ASCII, it
      // reads it as the prefix of the name, as the writer meant it. GNU tar and
      // libarchive ignore the times and keep the bare name. Docker and
      // containerd read such (old) images with Go: we read them as Go does.
      const a = b[345] !== 0 ? goNumeric(b, 345, 12) : undefined;
      const c = b[357] !== 0 ? goNumeric(b, 357, 12) : undefined;
      if (a === null || c === null) {
        goPrefix = true;
        const prefix = cstring(b, 345, 155);
        let ascii = true;
        for (let i = 0; i < prefix.length; i++) if (prefix.charCodeAt(i) >= 0x80) ascii = false;
        if (ascii && prefix !== "") name = prefix + "/" + headerName;
      } else atime = a;
    }
    if (gnu && flag !== 0x53 && !goPrefix && (b[386] !== 0 || b[483] !== 0)) {
      // libarchive reads the old sparse map (or the real size) of any GNU
      // header; Go and GNU tar only of an 'S' one.
      throw new TarFormatError(
        "a GNU header that is not a sparse entry has a sparse map or real size",
        at,
        entryName(),
      );
    }
    const pax = this.#pax;
    /** A rarer record (xattrs, sparse, vendor), when not empty. */
    const local = (k: string): Uint8Array | undefined => {
      const v = pax?.records.get(k);
      return v && v.length > 0 ? v : undefined;
    };
    // A pax path or linkpath and a GNU long name or link for the same entry:
    // Go takes the GNU one, GNU tar the pax one, libarchive the first in the
    // archive. No reading agrees with all unless they are the same.
    const paxPath = pax?.path?.length ? pax.path : undefined;
    if (this.#longName !== null) {
      if (paxPath && decodeName(paxPath) !== this.#longName) {
        throw new TarFormatError(
          "a GNU long name and a pax path name the entry differently",
          at,
          entryName(),
        );
      }
      name = this.#longName;
    } else if (paxPath) name = decodeName(paxPath);
    let linkname = cstring(b, 157, 100);
    const paxLink = pax?.linkpath?.length ? pax.linkpath : undefined;
    if (this.#longLink !== null) {
      if (paxLink && decodeName(paxLink) !== this.#longLink) {
        throw new TarFormatError(
          "a GNU long link name and a pax linkpath differ",
          at,
          entryName(),
        );
      }
      linkname = this.#longLink;
    } else if (paxLink) linkname = decodeName(paxLink);
    this.#entryName = name;

    const num = (off: number, len: number, field: string) =>
      this.#num(b, off, len, field, at, name);
    const mode = num(100, 8, "mode") & 0o7777;
    let uid = num(108, 8, "uid");
    let gid = num(116, 8, "gid");
    let size = headerSize;
    let mtime = num(136, 12, "mtime");
    let uname = "";
    let gname = "";
    let devmajor = 0;
    let devminor = 0;
    if (!v7) {
      uname = cstring(b, 265, 32);
      gname = cstring(b, 297, 32);
      // Go parses the device numbers of every ustar and GNU header (and
      // refuses the header when they are malformed); they mean something for
      // devices only.
      devmajor = b[329] === 0 ? 0 : num(329, 8, "devmajor");
      devminor = b[337] === 0 ? 0 : num(337, 8, "devminor");
    }

    let v: Uint8Array | undefined;
    let mtimeNsec: number | undefined;
    if (pax) {
      if (pax.uid !== undefined) uid = pax.uid;
      if (pax.gid !== undefined) gid = pax.gid;
      if (pax.uname?.length) uname = decodeName(pax.uname);
      if (pax.gname?.length) gname = decodeName(pax.gname);
      if (pax.mtime) {
        mtime = secondsOf(pax.mtime[0], pax.mtime[1]);
        if (pax.mtime[2]) mtimeNsec = pax.mtime[1];
      }
      if (pax.atime) atime = secondsOf(pax.atime[0], pax.atime[1]);
      if (pax.size !== undefined) size = pax.size;
    }
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

    // Xattrs: `SCHILY.xattr.NAME` records, read as Go's archive/tar reads
    // them (and docker and containerd set them): the name verbatim, an empty
    // value an empty xattr (Go keeps it in PAXRecords, which they apply; GNU
    // tar and libarchive list it too). libarchive's own `LIBARCHIVE.xattr.*`
    // records, which Go and GNU tar ignore, must repeat a SCHILY record (as
    // libarchive writes them): else libarchive would set an xattr they do not.
    const xattrs: Record<string, Uint8Array> = {};
    if (pax?.accumulated) {
      for (const [k, val] of pax.records) {
        if (!k.startsWith("SCHILY.xattr.")) continue;
        const xname = k.slice(13);
        if (xname === "" || /%(3d|25)/i.test(xname)) {
          // GNU tar decodes %3D and %25 in these names ('=' and '%'); Go does not.
          throw new TarFormatError(
            `xattr record ${JSON.stringify(k)}: ${
              xname ? "readers decode %3D and %25 in xattr names differently" : "no name"
            }`,
            at,
            entryName(),
          );
        }
        xattrs[xname] = val;
      }
      if (pax.records.has("SCHILY.realsize")) {
        throw new TarFormatError(
          "pax record SCHILY.realsize: libarchive takes the entry's size from it, Go and GNU tar do not",
          at,
          entryName(),
        );
      }
      for (const [k, val] of pax.records) {
        if (k.startsWith("LIBARCHIVE.xattr.") && !sameLibarchiveXattr(k, val, xattrs)) {
          throw new TarFormatError(
            `pax record ${
              JSON.stringify(k)
            } does not repeat a SCHILY.xattr record: libarchive would set an xattr Go and GNU tar do not`,
            at,
            entryName(),
          );
        }
      }
    }

    // Entry type. Only the types Go's archive/tar defines, and docker and
    // containerd apply, are read; which of them carry a body follows Go too
    // (see the module doc).
    let type: TarEntryType;
    let hasBody = false;
    switch (flag) {
      case 0x30: // '0'
      case 0x00: // '\0' (pre-POSIX)
        if (name.endsWith("/")) {
          // Old archives marked directories with a trailing slash on a '\0' entry:
          // Go, GNU tar and libarchive read a directory. On a '0' entry Go reads
          // a file (docker then writes one), GNU tar and libarchive a directory.
          if (flag === 0x30) {
            throw new TarFormatError(
              "a regular file (type '0') whose name ends in '/': Go's archive/tar reads a file, GNU tar and libarchive a directory",
              at,
              entryName(),
            );
          }
          if (size !== 0) {
            // GNU tar skips a body there, Go and libarchive read none.
            throw new TarFormatError(
              `a directory (a '\\0' entry named with a trailing '/') with a size of ${size}`,
              at,
              entryName(),
            );
          }
          type = "directory";
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
        if (!gnu) {
          // Go's archive/tar reads the old sparse map in GNU headers only.
          throw new TarFormatError(
            "a GNU sparse entry ('S') without a GNU header",
            at,
            entryName(),
          );
        }
        if (name.endsWith("/")) {
          // GNU tar and libarchive read a directory, Go a sparse file.
          throw new TarFormatError(
            "a GNU sparse entry ('S') whose name ends in '/'",
            at,
            entryName(),
          );
        }
        type = "file";
        hasBody = true;
        break;
      default:
        // Go's archive/tar hands other types to its caller as they are, and
        // docker and containerd refuse them ("unhandled tar header type");
        // GNU tar and libarchive extract them as regular files. Scanners that
        // read with Go look only at regular files: an entry of another type
        // would put content on disk no scanner looked at.
        throw new TarFormatError(
          `entry type ${JSON.stringify(flagOf(flag))}${
            TYPE_NAMES[flagOf(flag)] ?? ""
          } is not one docker or containerd apply`,
          at,
          entryName(),
        );
    }
    if (!hasBody && type !== "directory" && size !== 0) {
      // Go's archive/tar and libarchive read no body for links, devices and
      // FIFOs whatever their size says, GNU tar skips one: no reading agrees.
      // (Directories: none of them reads a body.)
      throw new TarFormatError(`a ${type} with a size of ${size}`, at, entryName());
    }
    if ((type === "symlink" || type === "hardlink") && linkname === "") {
      // GNU tar reads an empty hard link target as ".", libarchive as no link at all.
      throw new TarFormatError(`a ${type} without a target`, at, entryName());
    }
    if (type === "char" || type === "block") {
      if (devmajor < 0 || devminor < 0) {
        throw new TarFormatError(`negative device number ${devmajor},${devminor}`, at, entryName());
      }
      if (v7 && (b[329] | b[337]) !== 0) {
        // Go reads no device numbers from a V7 header (0,0: a whiteout), libarchive does.
        throw new TarFormatError(
          "a device in a V7 header (no exact ustar or GNU magic) with device numbers",
          at,
          entryName(),
        );
      }
      // GNU tar and libarchive take SCHILY.devmajor/devminor records over the
      // header; Go does not know them.
      for (
        const [k, cur] of [["SCHILY.devmajor", devmajor], ["SCHILY.devminor", devminor]] as const
      ) {
        if ((v = local(k)) && this.#paxInt(k, v) !== cur) {
          throw new TarFormatError(
            `pax record ${k} differs from the header's device number`,
            at,
            entryName(),
          );
        }
      }
    } else {
      devmajor = devminor = 0;
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
    const longName = this.#longName;
    this.#pax = null;
    this.#longName = null;
    this.#longLink = null;
    this.#pendingMeta = false;

    const bodySize = hasBody ? size : 0;
    this.#remaining = bodySize;
    this.#pad = (BLOCK - (bodySize % BLOCK)) % BLOCK;
    this.#fileOff = 0;
    this.#segs = null;

    // Sparse files.
    if (flag === 0x53) {
      const segs: TarSparseSegment[] = [];
      this.#gnuSparseEntries(b, 386, 4, segs, at);
      header.realSize = num(483, 12, "realsize");
      // Go takes the real size from the header alone.
      for (const k of ["GNU.sparse.size", "GNU.sparse.realsize"]) {
        if ((v = local(k)) && this.#paxInt(k, v) !== header.realSize) {
          throw new TarFormatError(
            `pax record ${k} differs from the GNU sparse header's real size`,
            at,
            entryName(),
          );
        }
      }
      header.sparse = segs;
      this.#cur = header;
      if (b[482] !== 0) {
        this.#state = S.SparseExt;
        return;
      }
      this.#startSparse(at);
      return;
    }
    if (pax?.sparse) {
      // PAX sparse formats, detected as Go detects them (reader.go readGNUSparsePAXHeaders).
      const major = local("GNU.sparse.major");
      const minor = local("GNU.sparse.minor");
      const map01 = local("GNU.sparse.map");
      const s00 = pax.sparse00;
      let is10 = false;
      let sparse = false;
      if (major || minor) {
        const ver = `${major ? utf8.decode(major) : ""}.${minor ? utf8.decode(minor) : ""}`;
        if (ver === "1.0") is10 = true;
        else if (ver !== "0.0" && ver !== "0.1") {
          // Go reads an unknown version as a plain file; GNU tar refuses it.
          throw new TarFormatError(`unsupported GNU sparse format ${ver}`, at, entryName());
        }
        sparse = true;
      } else sparse = map01 !== undefined || s00.length > 0;
      for (const k of SPARSE_NUMBERS) {
        const n = pax.records.get(k);
        // GNU tar refuses malformed (and empty) ones even where it does not use them
        if (n !== undefined) this.#paxInt(k, n);
      }
      if (!sparse) {
        for (const k of pax.records.keys()) {
          if (k.startsWith("GNU.sparse.")) {
            // Go ignores them here; GNU tar and libarchive do not (a name, a size, or a refusal).
            throw new TarFormatError(
              `pax record ${k} on an entry that is not a sparse file`,
              at,
              entryName(),
            );
          }
        }
      }
      if (
        sparse && is10 && (map01 !== undefined || s00.length > 0 || local("GNU.sparse.numblocks"))
      ) {
        // Go reads a 1.0 map from the data, libarchive takes the 0.x records, GNU tar refuses.
        throw new TarFormatError(
          "a GNU sparse 1.0 entry with format 0.x records (map, offsets or numblocks)",
          at,
          entryName(),
        );
      }
      if (sparse) {
        if (type !== "file") {
          throw new TarFormatError(
            `GNU sparse records on a ${type} entry`,
            at,
            entryName(),
          );
        }
        const sparseName = local("GNU.sparse.name");
        if (sparseName) {
          const n = decodeName(sparseName);
          if (longName !== null && n !== longName) {
            // Go and GNU tar take the sparse name, libarchive the GNU long name.
            throw new TarFormatError(
              "GNU.sparse.name and a GNU long name name the entry differently",
              at,
              entryName(),
            );
          }
          header.name = this.#entryName = n;
        }
        // Go prefers GNU.sparse.size (formats 0.x) to GNU.sparse.realsize (1.0).
        const sizeV = local("GNU.sparse.size");
        const realV = local("GNU.sparse.realsize");
        if (!sizeV && !realV) {
          throw new TarFormatError("sparse file without GNU.sparse.realsize/size", at, entryName());
        }
        header.realSize = this.#paxInt("GNU.sparse.size", (sizeV ?? realV)!);
        if (sizeV && realV && this.#paxInt("GNU.sparse.realsize", realV) !== header.realSize) {
          throw new TarFormatError(
            "GNU.sparse.size and GNU.sparse.realsize differ",
            at,
            entryName(),
          );
        }
        this.#cur = header;
        if (is10) {
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
        if (map01 && s00.length > 0) {
          throw new TarFormatError(
            "both GNU.sparse.map and GNU.sparse.offset records",
            at,
            entryName(),
          );
        }
        const values: number[] = [];
        if (map01) {
          const parts = utf8.decode(map01).split(",");
          for (const p of parts) {
            values.push(this.#paxInt("GNU.sparse.map", new TextEncoder().encode(p)));
          }
        } else values.push(...s00);
        // Go needs GNU.sparse.numblocks, and the map to hold that many pairs.
        const nb = local("GNU.sparse.numblocks");
        if (!nb || values.length !== 2 * this.#paxInt("GNU.sparse.numblocks", nb)) {
          throw new TarFormatError(
            `the sparse map holds ${values.length} numbers, not twice GNU.sparse.numblocks (${
              nb ? utf8.decode(nb) : "missing"
            })`,
            at,
            entryName(),
          );
        }
        const segs: TarSparseSegment[] = [];
        for (let i = 0; i < values.length; i += 2) {
          segs.push({ offset: values[i], size: values[i + 1] });
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

  /**
   * Reads up to `count` old GNU sparse entries from `off`. The list ends at
   * the first entry whose offset starts with NUL for Go and libarchive, whose
   * size does for GNU tar: an entry where only one of them does is refused.
   */
  #gnuSparseEntries(
    b: Uint8Array,
    off: number,
    count: number,
    segs: TarSparseSegment[],
    at: number,
  ): void {
    const name = this.#cur?.name ?? this.#entryName ?? "";
    for (let i = 0; i < count; i++, off += 24) {
      if (b[off] === 0 || b[off + 12] === 0) {
        if (b[off] !== b[off + 12]) {
          throw new TarFormatError(
            "a GNU sparse entry has an offset or a size but not both",
            at,
            name,
          );
        }
        return;
      }
      segs.push({
        offset: this.#num(b, off, 12, "sparse offset", at, name),
        size: this.#num(b, off + 12, 12, "sparse numbytes", at, name),
      });
    }
  }

  #sparseExt(b: Uint8Array): void {
    const cur = this.#cur!;
    const segs = cur.sparse!;
    this.#gnuSparseEntries(b, 0, 21, segs, this.#entryOffset);
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
    // Leading zeros are fine (see #paxInt).
    const nums = this.#sparseNums;
    for (let i = 0; i < BLOCK; i++) {
      const c = b[i];
      if (c >= 0x30 && c <= 0x39) {
        this.#sparseDigits++;
        this.#sparseCur = this.#sparseCur * 10 + (c - 0x30);
        if (this.#sparseCur > Number.MAX_SAFE_INTEGER) throw bad("a number is too large");
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
