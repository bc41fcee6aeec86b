/**
 * libarchive (`libarchive.so.13`, bsdtar's library) through Deno FFI, for the
 * tar differential tests: {@linkcode libarchiveList} reads an archive from
 * memory exactly as bsdtar does (every format and filter enabled), entry by
 * entry with its content; {@linkcode libarchiveWrite} makes tarballs in the
 * formats libarchive writes (pax, restricted pax, ustar, gnutar, v7), since
 * Debian's `libarchive-tools` cannot be installed beside the library here.
 *
 * The process's locale is set to C.UTF-8 once (libarchive converts pax
 * names between UTF-8 and the locale's charset; in the C locale every
 * non-ASCII name would fail to convert).
 *
 * @module
 */

const LIB = "libarchive.so.13";

const symbols = {
  archive_read_new: { parameters: [], result: "pointer" },
  archive_read_support_format_all: { parameters: ["pointer"], result: "i32" },
  archive_read_support_filter_all: { parameters: ["pointer"], result: "i32" },
  archive_read_open_memory: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  archive_read_next_header: { parameters: ["pointer", "buffer"], result: "i32" },
  archive_read_data: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  archive_read_data_skip: { parameters: ["pointer"], result: "i32" },
  archive_read_free: { parameters: ["pointer"], result: "i32" },
  archive_error_string: { parameters: ["pointer"], result: "pointer" },
  archive_format: { parameters: ["pointer"], result: "i32" },
  archive_entry_pathname: { parameters: ["pointer"], result: "pointer" },
  archive_entry_symlink: { parameters: ["pointer"], result: "pointer" },
  archive_entry_hardlink: { parameters: ["pointer"], result: "pointer" },
  archive_entry_uname: { parameters: ["pointer"], result: "pointer" },
  archive_entry_gname: { parameters: ["pointer"], result: "pointer" },
  archive_entry_filetype: { parameters: ["pointer"], result: "u32" },
  archive_entry_perm: { parameters: ["pointer"], result: "u32" },
  archive_entry_uid: { parameters: ["pointer"], result: "i64" },
  archive_entry_gid: { parameters: ["pointer"], result: "i64" },
  archive_entry_mtime: { parameters: ["pointer"], result: "i64" },
  archive_entry_mtime_nsec: { parameters: ["pointer"], result: "i64" },
  archive_entry_atime: { parameters: ["pointer"], result: "i64" },
  archive_entry_atime_is_set: { parameters: ["pointer"], result: "i32" },
  archive_entry_size: { parameters: ["pointer"], result: "i64" },
  archive_entry_rdevmajor: { parameters: ["pointer"], result: "u64" },
  archive_entry_rdevminor: { parameters: ["pointer"], result: "u64" },
  archive_entry_xattr_reset: { parameters: ["pointer"], result: "i32" },
  archive_entry_xattr_next: {
    parameters: ["pointer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  archive_write_new: { parameters: [], result: "pointer" },
  archive_write_set_format_pax: { parameters: ["pointer"], result: "i32" },
  archive_write_set_format_pax_restricted: { parameters: ["pointer"], result: "i32" },
  archive_write_set_format_ustar: { parameters: ["pointer"], result: "i32" },
  archive_write_set_format_gnutar: { parameters: ["pointer"], result: "i32" },
  archive_write_set_format_v7tar: { parameters: ["pointer"], result: "i32" },
  archive_write_add_filter_none: { parameters: ["pointer"], result: "i32" },
  archive_write_set_bytes_in_last_block: { parameters: ["pointer", "i32"], result: "i32" },
  archive_write_open_memory: {
    parameters: ["pointer", "buffer", "usize", "buffer"],
    result: "i32",
  },
  archive_write_header: { parameters: ["pointer", "pointer"], result: "i32" },
  archive_write_data: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  archive_write_close: { parameters: ["pointer"], result: "i32" },
  archive_write_free: { parameters: ["pointer"], result: "i32" },
  archive_entry_new: { parameters: [], result: "pointer" },
  archive_entry_free: { parameters: ["pointer"], result: "void" },
  archive_entry_set_pathname: { parameters: ["pointer", "buffer"], result: "void" },
  archive_entry_set_symlink: { parameters: ["pointer", "buffer"], result: "void" },
  archive_entry_set_hardlink: { parameters: ["pointer", "buffer"], result: "void" },
  archive_entry_set_uname: { parameters: ["pointer", "buffer"], result: "void" },
  archive_entry_set_gname: { parameters: ["pointer", "buffer"], result: "void" },
  archive_entry_set_filetype: { parameters: ["pointer", "u32"], result: "void" },
  archive_entry_set_perm: { parameters: ["pointer", "u32"], result: "void" },
  archive_entry_set_uid: { parameters: ["pointer", "i64"], result: "void" },
  archive_entry_set_gid: { parameters: ["pointer", "i64"], result: "void" },
  archive_entry_set_size: { parameters: ["pointer", "i64"], result: "void" },
  archive_entry_set_mtime: { parameters: ["pointer", "i64", "i64"], result: "void" },
  archive_entry_set_rdevmajor: { parameters: ["pointer", "u64"], result: "void" },
  archive_entry_set_rdevminor: { parameters: ["pointer", "u64"], result: "void" },
  archive_entry_xattr_add_entry: {
    parameters: ["pointer", "buffer", "buffer", "usize"],
    result: "void",
  },
  archive_entry_sparse_add_entry: { parameters: ["pointer", "i64", "i64"], result: "void" },
} as const;

const libcSymbols = {
  strlen: { parameters: ["pointer"], result: "usize" },
  setlocale: { parameters: ["i32", "buffer"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Lib = Deno.DynamicLibrary<typeof symbols>["symbols"];
let lib: Lib | null | undefined;
let libc: Deno.DynamicLibrary<typeof libcSymbols>["symbols"];
let loadError = "";

const cstr = (s: string | Uint8Array) => {
  const b = typeof s === "string" ? new TextEncoder().encode(s) : s;
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
};

/**
 * Sets errno to 0 before a libarchive call that converts names: where a
 * conversion fails (a Latin-1 name in a UTF-8 locale) libarchive reads errno
 * to tell "out of memory" (fatal, or an abort in its string code) from "cannot
 * translate" (a warning), and errno still holds whatever an earlier call on
 * this thread left there (V8's own mmap calls set ENOMEM now and then).
 */
function clearErrno(): void {
  const p = libc.__errno_location();
  if (p) new Int32Array(Deno.UnsafePointerView.getArrayBuffer(p, 4))[0] = 0;
}

function load(): Lib | null {
  if (lib !== undefined) return lib;
  try {
    lib = Deno.dlopen(LIB, symbols).symbols;
    libc = Deno.dlopen("libc.so.6", libcSymbols).symbols;
    // LC_ALL is 6 in glibc.
    libc.setlocale(6, cstr("C.UTF-8"));
  } catch (e) {
    loadError = (e as Error).message;
    lib = null;
  }
  return lib;
}

/** Why libarchive cannot be used here, or `undefined` when it can. */
export function libarchiveMissing(): string | undefined {
  return load() ? undefined : `${LIB} cannot be loaded (${loadError})`;
}

function bytesAt(p: Deno.PointerValue): Uint8Array | null {
  if (p === null) return null;
  const n = Number(libc.strlen(p));
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, n).slice(0));
}

/** One entry as libarchive reads it; names are raw bytes. */
export interface LaEntry {
  name: Uint8Array;
  /** `S_IFMT` bits of the file type (0o100000 regular, 0o040000 dir, …). */
  filetype: number;
  perm: number;
  uid: number;
  gid: number;
  uname: Uint8Array;
  gname: Uint8Array;
  mtime: number;
  mtimeNsec: number;
  /** The access time in seconds, when the archive holds one. */
  atime?: number;
  size: number;
  symlink: Uint8Array | null;
  hardlink: Uint8Array | null;
  devmajor: number;
  devminor: number;
  xattrs: [string, Uint8Array][];
  /** The content as read (sparse holes filled with zeros), or null past {@linkcode MAX_CONTENT}. */
  data: Uint8Array | null;
  /** A warning libarchive gave for this entry's header. */
  warning?: string;
}

/** What {@linkcode libarchiveList} found. */
export interface LaListing {
  entries: LaEntry[];
  /** The error that stopped the read, when it did not reach the end. */
  error?: string;
  /** libarchive's format code of the archive (0x30000 is the tar family). */
  format: number;
}

const ARCHIVE_EOF = 1;
/** Contents larger than this (a hostile sparse map's real size) are skipped, not read. */
export const MAX_CONTENT = 16 << 20;
const ARCHIVE_WARN = -20;

/**
 * The archives libarchive is reading: it keeps the pointer
 * `archive_read_open_memory` was given, and a buffer only a local variable
 * refers to may be collected while it reads (V8 drops locals it sees no
 * further use of), which libarchive then reports as a "Fatal Internal Error".
 */
const reading = new Set<Uint8Array>();

/**
 * Reads `bytes` as bsdtar does (`archive_read_support_format_all`,
 * `archive_read_support_filter_all`), returning the entries read before the
 * end or the first error.
 */
export function libarchiveList(bytes: Uint8Array): LaListing {
  const l = load();
  if (!l) throw new Error(libarchiveMissing());
  const a = l.archive_read_new();
  const errorOf = () => {
    const p = l.archive_error_string(a);
    return p === null ? "unknown error" : new TextDecoder().decode(bytesAt(p)!);
  };
  const out: LaListing = { entries: [], format: 0 };
  const keep = bytes.slice(); // libarchive reads it after this call returns
  reading.add(keep);
  try {
    l.archive_read_support_format_all(a);
    l.archive_read_support_filter_all(a);
    if (l.archive_read_open_memory(a, keep, BigInt(keep.length)) !== 0) {
      out.error = errorOf();
      return out;
    }
    const ep = new BigUint64Array(1);
    const buf = new Uint8Array(1 << 16);
    while (true) {
      clearErrno();
      const r = l.archive_read_next_header(a, ep);
      out.format = l.archive_format(a);
      if (r === ARCHIVE_EOF) break;
      if (r !== 0 && r !== ARCHIVE_WARN) {
        // ARCHIVE_RETRY (a damaged header bsdtar skips), FAILED, FATAL
        out.error = `${r}: ${errorOf()}`;
        break;
      }
      const e = Deno.UnsafePointer.create(ep[0]);
      const xattrs: [string, Uint8Array][] = [];
      l.archive_entry_xattr_reset(e);
      const np = new BigUint64Array(1), vp = new BigUint64Array(1), sp = new BigUint64Array(1);
      while (l.archive_entry_xattr_next(e, np, vp, sp) === 0) {
        const name = new TextDecoder().decode(bytesAt(Deno.UnsafePointer.create(np[0]))!);
        const n = Number(sp[0]);
        const v = vp[0] === 0n ? new Uint8Array(0) : new Uint8Array(
          Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(vp[0])!, n).slice(0),
        );
        xattrs.push([name, v]);
      }
      const entry: LaEntry = {
        name: bytesAt(l.archive_entry_pathname(e)) ?? new Uint8Array(0),
        filetype: l.archive_entry_filetype(e),
        perm: l.archive_entry_perm(e),
        uid: Number(l.archive_entry_uid(e)),
        gid: Number(l.archive_entry_gid(e)),
        uname: bytesAt(l.archive_entry_uname(e)) ?? new Uint8Array(0),
        gname: bytesAt(l.archive_entry_gname(e)) ?? new Uint8Array(0),
        mtime: Number(l.archive_entry_mtime(e)),
        mtimeNsec: Number(l.archive_entry_mtime_nsec(e)),
        size: Number(l.archive_entry_size(e)),
        symlink: bytesAt(l.archive_entry_symlink(e)),
        hardlink: bytesAt(l.archive_entry_hardlink(e)),
        devmajor: Number(l.archive_entry_rdevmajor(e)),
        devminor: Number(l.archive_entry_rdevminor(e)),
        xattrs,
        data: new Uint8Array(0),
      };
      if (l.archive_entry_atime_is_set(e)) entry.atime = Number(l.archive_entry_atime(e));
      if (r === ARCHIVE_WARN) entry.warning = errorOf();
      out.entries.push(entry);
      const parts: Uint8Array[] = [];
      let total = 0;
      if (entry.size > MAX_CONTENT) {
        entry.data = null;
        if (l.archive_read_data_skip(a) < ARCHIVE_WARN) {
          out.error = `data skip: ${errorOf()}`;
          break;
        }
        continue;
      }
      while (true) {
        clearErrno();
        const n = Number(l.archive_read_data(a, buf, BigInt(buf.length)));
        if (n === 0) break;
        if (n < 0) {
          out.error = `data ${n}: ${errorOf()}`;
          break;
        }
        parts.push(buf.slice(0, n));
        total += n;
      }
      const d = new Uint8Array(total);
      let o = 0;
      for (const p of parts) {
        d.set(p, o);
        o += p.length;
      }
      entry.data = d;
      if (out.error) break;
    }
  } finally {
    l.archive_read_free(a);
    reading.delete(keep);
  }
  return out;
}

/** An entry for {@linkcode libarchiveWrite}. */
export interface LaWriteEntry {
  name: string | Uint8Array;
  type: "file" | "directory" | "symlink" | "hardlink" | "char" | "block" | "fifo";
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  mtime?: number;
  mtimeNsec?: number;
  data?: Uint8Array;
  link?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, Uint8Array>;
  /** Data segments of a sparse file (`data` is the real file, holes included). */
  sparse?: { offset: number; size: number }[];
}

const TYPE_BITS: Record<LaWriteEntry["type"], number> = {
  file: 0o100000,
  directory: 0o040000,
  symlink: 0o120000,
  hardlink: 0o100000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

/** libarchive's tar writers. */
export type LaFormat = "pax" | "pax_restricted" | "ustar" | "gnutar" | "v7tar";

/** Writes `entries` as a tarball in `format` with libarchive (as `bsdtar --format=…`). */
export function libarchiveWrite(format: LaFormat, entries: LaWriteEntry[]): Uint8Array {
  const l = load();
  if (!l) throw new Error(libarchiveMissing());
  const a = l.archive_write_new();
  const buf = new Uint8Array(16 << 20);
  const used = new BigUint64Array(1);
  const check = (r: number | bigint, what: string) => {
    if (Number(r) < ARCHIVE_WARN) {
      const p = l.archive_error_string(a);
      throw new Error(`libarchive ${what}: ${p ? new TextDecoder().decode(bytesAt(p)!) : r}`);
    }
  };
  try {
    check(l[`archive_write_set_format_${format}`](a), "format");
    check(l.archive_write_add_filter_none(a), "filter");
    check(l.archive_write_set_bytes_in_last_block(a, 1), "block");
    check(l.archive_write_open_memory(a, buf, BigInt(buf.length), used), "open");
    for (const en of entries) {
      const e = l.archive_entry_new();
      try {
        clearErrno();
        l.archive_entry_set_pathname(e, cstr(en.name));
        l.archive_entry_set_filetype(e, TYPE_BITS[en.type]);
        l.archive_entry_set_perm(e, en.mode ?? (en.type === "directory" ? 0o755 : 0o644));
        l.archive_entry_set_uid(e, BigInt(en.uid ?? 0));
        l.archive_entry_set_gid(e, BigInt(en.gid ?? 0));
        if (en.uname !== undefined) l.archive_entry_set_uname(e, cstr(en.uname));
        if (en.gname !== undefined) l.archive_entry_set_gname(e, cstr(en.gname));
        l.archive_entry_set_mtime(e, BigInt(en.mtime ?? 1700000000), BigInt(en.mtimeNsec ?? 0));
        if (en.type === "symlink") l.archive_entry_set_symlink(e, cstr(en.link ?? ""));
        if (en.type === "hardlink") l.archive_entry_set_hardlink(e, cstr(en.link ?? ""));
        if (en.type === "char" || en.type === "block") {
          l.archive_entry_set_rdevmajor(e, BigInt(en.devmajor ?? 0));
          l.archive_entry_set_rdevminor(e, BigInt(en.devminor ?? 0));
        }
        for (const [k, v] of Object.entries(en.xattrs ?? {})) {
          l.archive_entry_xattr_add_entry(e, cstr(k), v, BigInt(v.length));
        }
        const data = en.type === "file" ? en.data ?? new Uint8Array(0) : new Uint8Array(0);
        l.archive_entry_set_size(e, BigInt(data.length));
        for (const s of en.sparse ?? []) {
          l.archive_entry_sparse_add_entry(e, BigInt(s.offset), BigInt(s.size));
        }
        clearErrno();
        check(l.archive_write_header(a, e), `header of ${en.name}`);
        if (en.sparse) {
          for (const s of en.sparse) {
            const piece = data.subarray(s.offset, s.offset + s.size);
            if (piece.length) check(l.archive_write_data(a, piece, BigInt(piece.length)), "data");
          }
        } else if (data.length) {
          check(l.archive_write_data(a, data, BigInt(data.length)), "data");
        }
      } finally {
        l.archive_entry_free(e);
      }
    }
    check(l.archive_write_close(a), "close");
  } finally {
    l.archive_write_free(a);
  }
  return buf.slice(0, Number(used[0]));
}
