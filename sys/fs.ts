/**
 * Typed, synchronous wrappers for the `*at()` file system calls the layer
 * applicator makes on its hot path, plus `openat2(RESOLVE_IN_ROOT)`, which
 * confines path resolution to a directory the way a chroot would.
 *
 * Calls return the raw result: a non-negative value on success and `-errno`
 * on failure, so that expected failures (EEXIST on a replace, ENOENT on a
 * missing parent) cost no exception. {@linkcode must} turns a result into an
 * {@linkcode ErrnoError} where a failure is not expected.
 *
 * Path arguments are encoded into reused scratch buffers (no allocation per
 * call); a path containing NUL is refused with EINVAL, because C would read it
 * as a shorter, different path.
 *
 * @module
 */
import { addr, cstr, errno, ErrnoError, ffiAvailable, libc, NR, readFdAll, sys } from "./libc.ts";
import { decodeName, encodeNameInto } from "./name.ts";

const arm = Deno.build.arch === "aarch64";

/** `open(2)` flags for the running architecture (aarch64 differs in a few). */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  NONBLOCK: 0o4000,
  DIRECTORY: arm ? 0o40000 : 0o200000,
  NOFOLLOW: arm ? 0o100000 : 0o400000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
} as const;

/** `AT_*` flags. */
export const AT = {
  FDCWD: -100,
  SYMLINK_NOFOLLOW: 0x100,
  REMOVEDIR: 0x200,
  SYMLINK_FOLLOW: 0x400,
  EMPTY_PATH: 0x1000,
} as const;

/** `openat2(2)` `resolve` flags. */
export const RESOLVE = {
  NO_XDEV: 0x01,
  NO_MAGICLINKS: 0x02,
  NO_SYMLINKS: 0x04,
  BENEATH: 0x08,
  IN_ROOT: 0x10,
  CACHED: 0x20,
} as const;

/** File type bits of `st_mode`. */
export const S = {
  IFMT: 0o170000,
  IFSOCK: 0o140000,
  IFLNK: 0o120000,
  IFREG: 0o100000,
  IFBLK: 0o060000,
  IFDIR: 0o040000,
  IFCHR: 0o020000,
  IFIFO: 0o010000,
} as const;

/** `d_type` values returned by {@linkcode readDir}. */
export const DT = {
  UNKNOWN: 0,
  FIFO: 1,
  CHR: 2,
  DIR: 4,
  BLK: 6,
  REG: 8,
  LNK: 10,
  SOCK: 12,
} as const;

const SYS_openat2 = 437; // same number on every architecture (added after the unification at 424)

const decoder = new TextDecoder();
const scratch = [new Uint8Array(16384), new Uint8Array(16384)];

/**
 * Encodes `s` NUL-terminated into scratch slot `slot` (0 or 1) and returns the
 * buffer, or `null` when `s` holds a NUL byte. The buffer is reused by the
 * next call with the same slot.
 */
function enc(s: string, slot = 0): Uint8Array<ArrayBuffer> | null {
  let b = scratch[slot];
  if (s.length * 3 + 1 > b.length) {
    b = new Uint8Array(s.length * 3 + 1);
  }
  const written = encodeNameInto(s, b); // byte-exact names (sys/name.ts)
  if (b.subarray(0, written).includes(0)) return null;
  b[written] = 0;
  return b as Uint8Array<ArrayBuffer>;
}

const EINVAL = 22;

/**
 * 64-bit FFI parameters are typed `bigint`, but Deno accepts a number at
 * run time, which avoids a BigInt allocation per call on the hot path.
 */
const u64 = (n: number) => n as unknown as bigint;

function ret(r: number | bigint): number {
  const n = Number(r);
  return n < 0 ? -errno() : n;
}

/**
 * Throws an {@linkcode ErrnoError} when `r` is a `-errno` result, else returns it.
 *
 * @example Usage
 * ```ts ignore
 * import { must, mkdirat, AT } from "./fs.ts";
 * must(mkdirat(AT.FDCWD, "/tmp/x", 0o755), "mkdirat", "/tmp/x");
 * ```
 */
export function must(r: number, syscall: string, path?: string): number {
  if (r < 0) throw new ErrnoError(syscall, -r, path);
  return r;
}

const how = new BigUint64Array(3);
const howBytes = new Uint8Array(how.buffer);

/**
 * `openat2(2)`: opens `path` relative to `dirfd` with `resolve` restrictions.
 * With `RESOLVE.IN_ROOT`, `..`, absolute paths and symlink targets are all
 * resolved as if `dirfd` were `/`: nothing outside it can be reached.
 * Returns the fd or `-errno` (`-ENOSYS` before Linux 5.6).
 *
 * @example Usage
 * ```ts ignore
 * import { openat2, O, RESOLVE, AT } from "./fs.ts";
 * const root = openat2(AT.FDCWD, "/tmp", O.PATH | O.DIRECTORY, 0, 0);
 * const fd = openat2(root, "../../etc", O.PATH | O.DIRECTORY, 0, RESOLVE.IN_ROOT); // = /tmp/etc
 * ```
 */
export function openat2(
  dirfd: number,
  path: string,
  flags: number,
  mode: number,
  resolve: number,
): number {
  const p = enc(path);
  if (!p) return -EINVAL;
  how[0] = BigInt(flags | O.CLOEXEC);
  how[1] = BigInt(mode);
  how[2] = BigInt(resolve);
  return ret(libc().sys_openat2(u64(SYS_openat2), u64(dirfd), p, howBytes, u64(24)));
}

/**
 * `openat(2)`; `O_CLOEXEC` is always added. Returns the fd or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { openat, O, AT } from "./fs.ts";
 * const fd = openat(AT.FDCWD, "/etc/hostname", O.RDONLY, 0);
 * ```
 */
export function openat(dirfd: number, name: string, flags: number, mode: number): number {
  const p = enc(name);
  if (!p) return -EINVAL;
  return ret(libc().openat(dirfd, p, flags | O.CLOEXEC, mode));
}

/**
 * `close(2)`; returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { close } from "./fs.ts";
 * close(3);
 * ```
 */
export function close(fd: number): number {
  return ret(libc().close(fd));
}

/**
 * `mkdirat(2)`; returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { mkdirat, AT } from "./fs.ts";
 * mkdirat(AT.FDCWD, "/tmp/newdir", 0o700);
 * ```
 */
export function mkdirat(dirfd: number, name: string, mode: number): number {
  const p = enc(name);
  if (!p) return -EINVAL;
  return ret(libc().mkdirat(dirfd, p, mode));
}

/**
 * glibc's `makedev(major, minor)` as a `dev_t`.
 *
 * @example Usage
 * ```ts
 * import { makedev } from "./fs.ts";
 * console.log(makedev(1, 3)); // 259n
 * ```
 */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0), mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) |
    (mi & 0xffn);
}

/**
 * `mknodat(2)`; `mode` includes the file type bits. Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { mknodat, makedev, S, AT } from "./fs.ts";
 * mknodat(AT.FDCWD, "/tmp/wh", S.IFCHR, makedev(0, 0)); // an overlay whiteout
 * ```
 */
export function mknodat(dirfd: number, name: string, mode: number, dev: bigint): number {
  const p = enc(name);
  if (!p) return -EINVAL;
  return ret(libc().mknodat(dirfd, p, mode, dev));
}

/**
 * `symlinkat(2)`: creates `name` in `dirfd` pointing at `target` (stored as
 * text, never resolved here). Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { symlinkat, AT } from "./fs.ts";
 * symlinkat("/etc/passwd", AT.FDCWD, "/tmp/link");
 * ```
 */
export function symlinkat(target: string, dirfd: number, name: string): number {
  const t = enc(target, 1);
  const p = enc(name);
  if (!t || !p) return -EINVAL;
  return ret(libc().symlinkat(t, dirfd, p));
}

/**
 * `linkat(2)`; with `flags` 0 a symlink at the old path is linked itself, not
 * followed. Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { linkat, AT } from "./fs.ts";
 * linkat(AT.FDCWD, "/tmp/a", AT.FDCWD, "/tmp/b", 0);
 * ```
 */
export function linkat(
  olddirfd: number,
  oldname: string,
  newdirfd: number,
  newname: string,
  flags: number,
): number {
  const o = enc(oldname, 1);
  const n = enc(newname);
  if (!o || !n) return -EINVAL;
  return ret(libc().linkat(olddirfd, o, newdirfd, n, flags));
}

/**
 * `unlinkat(2)`; `AT.REMOVEDIR` removes an empty directory. Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { unlinkat, AT } from "./fs.ts";
 * unlinkat(AT.FDCWD, "/tmp/a", 0);
 * ```
 */
export function unlinkat(dirfd: number, name: string, flags: number): number {
  const p = enc(name);
  if (!p) return -EINVAL;
  return ret(libc().unlinkat(dirfd, p, flags));
}

/**
 * `fchownat(2)`; pass `AT.SYMLINK_NOFOLLOW` to change a symlink itself.
 * Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { fchownat, AT } from "./fs.ts";
 * fchownat(AT.FDCWD, "/tmp/link", 0, 0, AT.SYMLINK_NOFOLLOW);
 * ```
 */
export function fchownat(
  dirfd: number,
  name: string,
  uid: number,
  gid: number,
  flags: number,
): number {
  const p = enc(name);
  if (!p) return -EINVAL;
  return ret(libc().fchownat(dirfd, p, uid, gid, flags));
}

/**
 * `fchown(2)`; returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { fchown } from "./fs.ts";
 * fchown(3, 0, 0);
 * ```
 */
export function fchown(fd: number, uid: number, gid: number): number {
  return ret(libc().fchown(fd, uid, gid));
}

/**
 * `fchmod(2)`; the mode is applied as given (no umask). Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { fchmod } from "./fs.ts";
 * fchmod(3, 0o4755);
 * ```
 */
export function fchmod(fd: number, mode: number): number {
  return ret(libc().fchmod(fd, mode));
}

/**
 * `fchmodat(2)` (follows a symlink at `name`: call it on non-links only).
 * Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { fchmodat, AT } from "./fs.ts";
 * fchmodat(AT.FDCWD, "/tmp/fifo", 0o600, 0);
 * ```
 */
export function fchmodat(dirfd: number, name: string, mode: number, flags: number): number {
  const p = enc(name);
  if (!p) return -EINVAL;
  return ret(libc().fchmodat(dirfd, p, mode, flags));
}

const times = new BigInt64Array(4);
const timesBytes = new Uint8Array(times.buffer);

function setTimes(atime: number, mtime: number, atimeNsec?: number, mtimeNsec?: number): void {
  const as = Math.floor(atime), ms = Math.floor(mtime);
  times[0] = BigInt(as);
  times[1] = BigInt(atimeNsec ?? Math.min(999999999, Math.round((atime - as) * 1e9)));
  times[2] = BigInt(ms);
  times[3] = BigInt(mtimeNsec ?? Math.min(999999999, Math.round((mtime - ms) * 1e9)));
}

/**
 * `futimens(2)` with times in (fractional) seconds since the epoch; when a
 * `*Nsec` is given it is the exact nanoseconds part and the time's floor the
 * seconds. Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { futimens } from "./fs.ts";
 * futimens(3, 1700000000, 1700000000.5);
 * ```
 */
export function futimens(
  fd: number,
  atime: number,
  mtime: number,
  atimeNsec?: number,
  mtimeNsec?: number,
): number {
  setTimes(atime, mtime, atimeNsec, mtimeNsec);
  return ret(libc().futimens(fd, timesBytes));
}

/**
 * `utimensat(2)` with times in (fractional) seconds; `AT.SYMLINK_NOFOLLOW`
 * sets a symlink's own times. Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { utimensat, AT } from "./fs.ts";
 * utimensat(AT.FDCWD, "/tmp/link", 0, 0, AT.SYMLINK_NOFOLLOW);
 * ```
 */
export function utimensat(
  dirfd: number,
  name: string,
  atime: number,
  mtime: number,
  flags: number,
  atimeNsec?: number,
  mtimeNsec?: number,
): number {
  const p = enc(name);
  if (!p) return -EINVAL;
  setTimes(atime, mtime, atimeNsec, mtimeNsec);
  return ret(libc().utimensat(dirfd, p, timesBytes, flags));
}

/**
 * Writes all of `data` to `fd` (looping over short writes). Returns the byte
 * count or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { writeAll } from "./fs.ts";
 * writeAll(1, new TextEncoder().encode("hi\n"));
 * ```
 */
export function writeAll(fd: number, data: Uint8Array): number {
  const c = libc();
  let off = 0;
  while (off < data.length) {
    const chunk = off === 0 ? data : data.subarray(off);
    const n = Number(c.write(fd, chunk as Uint8Array<ArrayBuffer>, u64(chunk.length)));
    if (n < 0) {
      const e = errno();
      if (e === 4) continue; // EINTR
      return -e;
    }
    off += n;
  }
  return off;
}

/**
 * Writes all of `data` at `offset` (looping over short writes). Returns the
 * byte count or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { pwriteAll } from "./fs.ts";
 * pwriteAll(3, new Uint8Array(4), 1 << 20);
 * ```
 */
export function pwriteAll(fd: number, data: Uint8Array, offset: number): number {
  const c = libc();
  let off = 0;
  while (off < data.length) {
    const chunk = off === 0 ? data : data.subarray(off);
    const n = Number(
      c.pwrite(fd, chunk as Uint8Array<ArrayBuffer>, u64(chunk.length), u64(offset + off)),
    );
    if (n < 0) {
      const e = errno();
      if (e === 4) continue;
      return -e;
    }
    off += n;
  }
  return off;
}

/**
 * `read(2)` into `buf`; returns the byte count (0 at end) or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { read } from "./fs.ts";
 * const n = read(0, new Uint8Array(4096));
 * ```
 */
export function read(fd: number, buf: Uint8Array): number {
  for (;;) {
    const n = Number(libc().read(fd, buf as Uint8Array<ArrayBuffer>, u64(buf.length)));
    if (n >= 0) return n;
    const e = errno();
    if (e !== 4) return -e;
  }
}

/**
 * `ftruncate(2)`; returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { ftruncate } from "./fs.ts";
 * ftruncate(3, 1 << 30); // a sparse tail
 * ```
 */
export function ftruncate(fd: number, size: number): number {
  return ret(libc().ftruncate(fd, u64(size)));
}

const SEEK_SET = 0;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const ENXIO = 6;

/**
 * `lseek(2)` to `offset` from the start; returns the new offset or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { seekTo } from "./fs.ts";
 * seekTo(3, 1 << 20);
 * ```
 */
export function seekTo(fd: number, offset: number): number {
  return ret(libc().lseek(fd, u64(offset), SEEK_SET));
}

/**
 * The data segments (`[start, end)` byte ranges) of the regular file `fd` of
 * `size` bytes, found with `SEEK_DATA`/`SEEK_HOLE` (which move the file
 * offset): everything else reads as zeros and takes no space. A filesystem without hole support reports one
 * segment, the whole file. Returns `-errno` on failure.
 *
 * @example Usage
 * ```ts ignore
 * import { dataSegments } from "./fs.ts";
 * dataSegments(3, 1 << 40); // [[0, 4096], [1099511623680, 1099511627776]]
 * ```
 */
export function dataSegments(fd: number, size: number): [number, number][] | number {
  const c = libc();
  const out: [number, number][] = [];
  let pos = 0;
  while (pos < size) {
    const start = Number(c.lseek(fd, u64(pos), SEEK_DATA));
    if (start < 0) {
      const e = errno();
      if (e === ENXIO) break; // only a hole up to the end
      return -e;
    }
    if (start >= size) break;
    const end = Number(c.lseek(fd, u64(start), SEEK_HOLE));
    if (end < 0) return -errno();
    out.push([start, Math.min(end, size)]);
    pos = end;
  }
  return out;
}

/**
 * `fsetxattr(2)`; returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { fsetxattr } from "./fs.ts";
 * fsetxattr(3, "user.x", new TextEncoder().encode("1"));
 * ```
 */
export function fsetxattr(fd: number, name: string, value: Uint8Array): number {
  const n = enc(name, 1);
  if (!n) return -EINVAL;
  return ret(libc().fsetxattr(fd, n, value as Uint8Array<ArrayBuffer>, u64(value.length), 0));
}

/**
 * `setxattr(2)` on `name` in the directory `dirfd` (any fd, `O_PATH` too),
 * through `/proc/self/fd`. The final component is followed, so call it on
 * non-links, or on `name` "" for `dirfd` itself. Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { setxattrAt } from "./fs.ts";
 * setxattrAt(3, "", "user.overlay.opaque", new TextEncoder().encode("y"));
 * ```
 */
export function setxattrAt(dirfd: number, name: string, attr: string, value: Uint8Array): number {
  const p = enc(name ? `/proc/self/fd/${dirfd}/${name}` : `/proc/self/fd/${dirfd}`);
  const n = enc(attr, 1);
  if (!p || !n) return -EINVAL;
  return ret(libc().setxattr(p, n, value as Uint8Array<ArrayBuffer>, u64(value.length), 0));
}

/**
 * `lsetxattr(2)` on `name` in `dirfd` (a symlink's own attributes), through
 * `/proc/self/fd`. Returns 0 or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { lsetxattrAt } from "./fs.ts";
 * lsetxattrAt(3, "link", "security.capability", new Uint8Array(20));
 * ```
 */
export function lsetxattrAt(dirfd: number, name: string, attr: string, value: Uint8Array): number {
  const p = enc(`/proc/self/fd/${dirfd}/${name}`);
  const n = enc(attr, 1);
  if (!p || !n) return -EINVAL;
  return ret(libc().lsetxattr(p, n, value as Uint8Array<ArrayBuffer>, u64(value.length), 0));
}

const xbuf = new Uint8Array(65536);

/**
 * Lists the extended attributes of the open `fd` (`O_PATH` fds are not
 * accepted by the kernel). Returns names, or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { flistxattr } from "./fs.ts";
 * console.log(flistxattr(3));
 * ```
 */
export function flistxattr(fd: number): string[] | number {
  const n = Number(libc().flistxattr(fd, xbuf, u64(xbuf.length)));
  if (n < 0) return -errno();
  const names = decoder.decode(xbuf.subarray(0, n)).split("\0");
  names.pop();
  return names;
}

/**
 * Reads the extended attribute `attr` of the open `fd`. Returns a copy of
 * the value, or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { fgetxattr } from "./fs.ts";
 * console.log(fgetxattr(3, "user.overlay.opaque"));
 * ```
 */
export function fgetxattr(fd: number, attr: string): Uint8Array | number {
  const a = enc(attr, 1);
  if (!a) return -EINVAL;
  const n = Number(libc().fgetxattr(fd, a, xbuf, u64(xbuf.length)));
  if (n < 0) return -errno();
  return xbuf.slice(0, n);
}

/**
 * Lists the extended attributes of `name` in `dirfd` without following a
 * symlink there (through `/proc/self/fd`). Returns names, or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { llistxattrAt } from "./fs.ts";
 * console.log(llistxattrAt(3, "link"));
 * ```
 */
export function llistxattrAt(dirfd: number, name: string): string[] | number {
  const p = enc(`/proc/self/fd/${dirfd}/${name}`);
  if (!p) return -EINVAL;
  const n = Number(libc().llistxattr(p, xbuf, u64(xbuf.length)));
  if (n < 0) return -errno();
  const names = decoder.decode(xbuf.subarray(0, n)).split("\0");
  names.pop();
  return names;
}

/**
 * Reads the extended attribute `attr` of `name` in `dirfd` without following
 * a symlink there. Returns a copy of the value, or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { lgetxattrAt } from "./fs.ts";
 * console.log(lgetxattrAt(3, "link", "security.selinux"));
 * ```
 */
export function lgetxattrAt(dirfd: number, name: string, attr: string): Uint8Array | number {
  const p = enc(`/proc/self/fd/${dirfd}/${name}`);
  const a = enc(attr, 1);
  if (!p || !a) return -EINVAL;
  const n = Number(libc().lgetxattr(p, a, xbuf, u64(xbuf.length)));
  if (n < 0) return -errno();
  return xbuf.slice(0, n);
}

/** The fields of `statx(2)` strata uses. */
export interface Stat {
  /** Type and permission bits. */
  mode: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** Link count. */
  nlink: number;
  /** Size in bytes. */
  size: number;
  /** Space allocated, in 512-byte blocks (fewer than `size` needs: a file with holes). */
  blocks: number;
  /** Inode number. */
  ino: bigint;
  /** Device of the file system, `major:minor`. */
  dev: string;
  /** Device number major (devices only). */
  rdevMajor: number;
  /** Device number minor (devices only). */
  rdevMinor: number;
  /** Modification time, whole seconds. */
  mtimeSec: number;
  /** Modification time, nanoseconds part. */
  mtimeNsec: number;
  /** Access time, seconds (fractional). */
  atime: number;
}

const stxBuf = new Uint8Array(256);
const stxView = new DataView(stxBuf.buffer);
const STATX_BASIC_STATS = 0x7ff;

/**
 * `statx(2)` of `name` in `dirfd`; with `AT.SYMLINK_NOFOLLOW` a symlink is
 * described itself, with `AT.EMPTY_PATH` and `name` "" `dirfd` is. Returns a
 * {@linkcode Stat} or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { statx, AT } from "./fs.ts";
 * const st = statx(AT.FDCWD, "/etc", AT.SYMLINK_NOFOLLOW);
 * ```
 */
export function statx(dirfd: number, name: string, flags: number): Stat | number {
  const p = enc(name);
  if (!p) return -EINVAL;
  const r = libc().statx(dirfd, p, flags, STATX_BASIC_STATS, stxBuf);
  if (r < 0) return -errno();
  const v = stxView;
  return {
    nlink: v.getUint32(16, true),
    uid: v.getUint32(20, true),
    gid: v.getUint32(24, true),
    mode: v.getUint16(28, true),
    ino: v.getBigUint64(32, true),
    size: Number(v.getBigUint64(40, true)),
    blocks: Number(v.getBigUint64(48, true)),
    atime: Number(v.getBigInt64(64, true)) + v.getUint32(72, true) / 1e9,
    mtimeSec: Number(v.getBigInt64(112, true)),
    mtimeNsec: v.getUint32(120, true),
    rdevMajor: v.getUint32(128, true),
    rdevMinor: v.getUint32(132, true),
    dev: `${v.getUint32(136, true)}:${v.getUint32(140, true)}`,
  };
}

/** One directory entry from {@linkcode readDir}. */
export interface DirEntry {
  /** The entry's name. */
  name: string;
  /** Its `d_type` ({@linkcode DT}); `DT.UNKNOWN` when the file system does not say. */
  type: number;
}

const dentBuf = new Uint8Array(65536);
const dentView = new DataView(dentBuf.buffer);
let dentAddrValue: number | bigint | undefined;

/**
 * Lists the directory open as `fd` (an `O_RDONLY|O_DIRECTORY` fd), without
 * `.` and `..`. Returns the entries or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { openat, readDir, O, AT } from "./fs.ts";
 * const fd = openat(AT.FDCWD, "/etc", O.RDONLY | O.DIRECTORY, 0);
 * console.log(readDir(fd));
 * ```
 */
export function readDir(fd: number): DirEntry[] | number {
  const out: DirEntry[] = [];
  for (;;) {
    // Through syscall(2), whose one trampoline the libc routes of files.ts share.
    const n = sys(NR.getdents64, fd, dentAddrValue ??= addr(dentBuf), dentBuf.length);
    if (n < 0) return n;
    if (n === 0) return out;
    let off = 0;
    while (off < n) {
      const reclen = dentView.getUint16(off + 16, true);
      const type = dentBuf[off + 18];
      const start = off + 19;
      let end = start;
      while (dentBuf[end] !== 0) end++;
      const name = decodeName(dentBuf.subarray(start, end));
      if (name !== "." && name !== "..") out.push({ name, type });
      off += reclen;
    }
  }
}

/**
 * `readlinkat(2)`: the target of the symlink `name` in `dirfd`, or `-errno`.
 *
 * @example Usage
 * ```ts ignore
 * import { readlinkat, AT } from "./fs.ts";
 * console.log(readlinkat(AT.FDCWD, "/proc/self/exe"));
 * ```
 */
export function readlinkat(dirfd: number, name: string): string | number {
  const p = enc(name);
  if (!p) return -EINVAL;
  const n = Number(libc().readlinkat(dirfd, p, xbuf, u64(xbuf.length)));
  if (n < 0) return -errno();
  return decodeName(xbuf.subarray(0, n));
}

/**
 * Removes `name` in `dirfd` whatever it is: a directory is emptied
 * recursively first. Never follows symlinks (they are removed, not their
 * targets), so it cannot reach outside `dirfd`. Returns 0, or `-errno` (a
 * missing `name` is `-ENOENT`).
 *
 * @example Usage
 * ```ts ignore
 * import { removeAt, AT } from "./fs.ts";
 * removeAt(AT.FDCWD, "/tmp/some-tree");
 * ```
 */
export function removeAt(dirfd: number, name: string): number {
  const r = unlinkat(dirfd, name, 0);
  if (r !== -21 /* EISDIR */ && r !== -1 /* EPERM: unlink(dir) on some fs */) return r;
  const fd = openat(dirfd, name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW, 0);
  if (fd < 0) return fd;
  try {
    const entries = readDir(fd);
    if (typeof entries === "number") return entries;
    for (const e of entries) {
      const rr = removeAt(fd, e.name);
      if (rr < 0 && rr !== -2) return rr;
    }
  } finally {
    close(fd);
  }
  return unlinkat(dirfd, name, AT.REMOVEDIR);
}

/**
 * Tells whether `path` (symlinks followed) exists, or with `executable`
 * whether this process may execute it: `faccessat(2)` when FFI is
 * permitted, so that a miss is an errno rather than a thrown `NotFound`
 * (building Deno's error object costs more than the lookup itself, on paths
 * that miss often: chain-keyed layers, PATH directories without a runtime);
 * else `Deno.statSync`. Errors other than "not found" are thrown.
 *
 * @example Usage
 * ```ts
 * import { accessible } from "./fs.ts";
 * console.log(accessible("/bin/sh", "executable")); // true
 * ```
 */
export function accessible(path: string, mode: "exists" | "executable" = "exists"): boolean {
  if (ffiAvailable()) {
    const flags = mode === "executable" ? [1, 0x200] : [0, 0]; // X_OK with AT_EACCESS, or F_OK
    if (libc().faccessat(AT.FDCWD, cstr(path), flags[0], flags[1]) === 0) return true;
    const e = errno();
    if (e === 2 || e === 20 || (mode === "executable" && e === 13)) return false; // ENOENT, ENOTDIR, EACCES
    throw new ErrnoError("access", e, path);
  }
  try {
    const st = Deno.statSync(path); // no FFI: Deno's own (needs --allow-read)
    return mode === "exists" || ((st.mode ?? 0o111) & 0o111) !== 0;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

const textDecoder = new TextDecoder();

/**
 * Reads a small file (at most `max` bytes, default 1 MiB) as UTF-8 text:
 * through libc's `open`/`read`/`close` when FFI is permitted (calls a warm
 * run has bound already, where the first `Deno.readTextFileSync` of a
 * process costs ~0.3 ms), else through Deno.
 *
 * @example Usage
 * ```ts
 * import { readSmallText } from "./fs.ts";
 * console.log(readSmallText("/etc/hostname").length > 0);
 * ```
 */
export function readSmallText(path: string, max = 1 << 20): string {
  if (!ffiAvailable()) return Deno.readTextFileSync(path);
  const c = libc();
  const fd = c.open(cstr(path), O.RDONLY | O.CLOEXEC, 0);
  if (fd < 0) throw new ErrnoError("open", errno(), path);
  try {
    return textDecoder.decode(readFdAll(fd, path, max));
  } finally {
    c.close(fd);
  }
}
