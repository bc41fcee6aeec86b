/**
 * Copies a directory tree exactly, for `strata export`: owners, modes
 * (setuid/setgid/sticky too), nanosecond times of files, directories and
 * symlinks, xattrs, hard links (tracked by inode, so a link pair in the image
 * is a link pair in the copy), symlinks as links, fifos and devices.
 *
 * Our own code rather than `cp -a`: GNU cp copies overlayfs' private xattrs
 * when reading a layer directory, gives no per-file account of what it could
 * not keep in a user namespace (where chown to an unmapped id fails), and is a
 * process per export. The source here is always an overlay's merged view, so
 * whiteouts never appear in it; overlay's own xattrs are skipped anyway.
 *
 * @module
 */
import { join } from "@std/path";
import {
  AT,
  close,
  dataSegments,
  fchmodat,
  fchownat,
  ftruncate,
  linkat,
  makedev,
  mkdirat,
  mknodat,
  must,
  O,
  openat,
  pwriteAll,
  read,
  readDir,
  readlinkat,
  S,
  seekTo,
  type Stat,
  statx,
  symlinkat,
} from "../sys/fs.ts";
import { hasEscapes } from "../sys/name.ts";
import { cstr, errno, ErrnoError, libc } from "../sys/libc.ts";
import { copyFile, lstat, mkdir, readDir as listDir } from "../sys/files.ts";

/** What {@linkcode copyTree} did. */
export interface CopyResult {
  /** Entries written (the root excluded). */
  entries: number;
  /** Bytes of regular-file content copied. */
  bytes: number;
  /** Entries made as hard links to an earlier copy. */
  hardlinks: number;
  /** What could not be kept (one line each kind, with a count). */
  warnings: string[];
}

/** Options of {@linkcode copyTree}. */
export interface CopyOptions {
  /** Stops the copy between entries. */
  signal?: AbortSignal;
}

const EPERM = 1;
const EINVAL = 22;
const ENOTSUP = 95;
const decoder = new TextDecoder();
const xbuf = new Uint8Array(65536);

/** Overlayfs keeps its own state in these; they are never part of an image's content. */
function isOverlayXattr(name: string): boolean {
  return name.startsWith("trusted.overlay.") || name.startsWith("user.overlay.");
}

function listXattrs(path: string): string[] {
  const p = cstr(path);
  const n = Number(libc().llistxattr(p, xbuf, BigInt(xbuf.length)));
  if (n < 0) {
    const e = errno();
    if (e === ENOTSUP) return [];
    throw new CopyError(`list xattrs of ${path}: errno ${e}`);
  }
  const names = decoder.decode(xbuf.subarray(0, n)).split("\0");
  names.pop();
  return names;
}

function getXattr(path: string, name: string): Uint8Array | undefined {
  const n = Number(libc().lgetxattr(cstr(path), cstr(name), xbuf, BigInt(xbuf.length)));
  return n < 0 ? undefined : xbuf.slice(0, n);
}

function setXattr(path: string, name: string, value: Uint8Array): number {
  const r = libc().lsetxattr(
    cstr(path),
    cstr(name),
    value as Uint8Array<ArrayBuffer>,
    BigInt(value.length),
    0,
  );
  return r < 0 ? -errno() : 0;
}

/**
 * The names in `dir`, read through sys/fs rather than Deno.readDir, which
 * would turn a name that is not UTF-8 into another one (see sys/name.ts).
 */
function listNames(dir: string): string[] {
  const fd = must(
    openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC, 0),
    "open",
    dir,
  );
  try {
    const list = readDir(fd);
    if (typeof list === "number") must(list, "getdents64", dir);
    return (list as { name: string }[]).map((e) => e.name);
  } finally {
    close(fd);
  }
}

const copyBuf = new Uint8Array(1 << 20);

/**
 * Copies a file's content of `size` bytes. A file with holes is copied by its
 * data segments (`SEEK_DATA`/`SEEK_HOLE`) and truncated to its size, so the
 * holes stay holes (as `cp --sparse=auto`); any other file with
 * Deno.copyFile (copy_file_range) unless a name is not UTF-8.
 */
async function copyContent(from: string, to: string, st: Stat): Promise<void> {
  const size = st.size;
  const src = must(openat(AT.FDCWD, from, O.RDONLY | O.NOFOLLOW | O.CLOEXEC, 0), "open", from);
  try {
    // Only a file whose blocks do not cover its size can have holes: the
    // others are not asked for their segments (two lseek calls apiece).
    const segs = size > 0 && st.blocks * 512 < size ? dataSegments(src, size) : -1;
    const sparse = typeof segs !== "number" &&
      !(segs.length === 1 && segs[0][0] === 0 && segs[0][1] === size);
    if (!sparse && !hasEscapes(from) && !hasEscapes(to)) return await copyFile(from, to);
    const flags = O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW | O.CLOEXEC;
    const dst = must(openat(AT.FDCWD, to, flags, 0o600), "open", to);
    try {
      for (const [start, end] of sparse ? segs : [[0, Infinity]]) {
        // SEEK_DATA and SEEK_HOLE moved the offset.
        must(seekTo(src, start), "lseek", from);
        for (let at = start; at < end;) {
          const n = must(
            read(src, copyBuf.subarray(0, Math.min(copyBuf.length, end - at))),
            "read",
            from,
          );
          if (n === 0) break;
          must(pwriteAll(dst, copyBuf.subarray(0, n), at), "write", to);
          at += n;
        }
      }
      if (sparse) must(ftruncate(dst, size), "ftruncate", to);
    } finally {
      close(dst);
    }
  } finally {
    close(src);
  }
}

const times = new BigInt64Array(4);

/**
 * Sets atime and mtime without following a symlink. mtime goes in as whole
 * seconds plus nanoseconds: as one float (what `sys/fs.ts` takes) a 2020s
 * time loses its last digits.
 */
function setTimes(path: string, st: Stat): void {
  const as = Math.floor(st.atime);
  times[0] = BigInt(as);
  times[1] = BigInt(Math.min(999_999_999, Math.round((st.atime - as) * 1e9)));
  times[2] = BigInt(st.mtimeSec);
  times[3] = BigInt(st.mtimeNsec);
  const r = libc().utimensat(
    AT.FDCWD,
    cstr(path),
    new Uint8Array(times.buffer),
    AT.SYMLINK_NOFOLLOW,
  );
  if (r < 0) throw new ErrnoError("utimensat", errno(), path);
}

/** A copy that could not be made; names the path. */
export class CopyError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CopyError";
  }
}

/**
 * Copies the tree at `src` into `dst` (created if missing; it must be empty),
 * keeping all metadata the kernel lets this process set. What it cannot keep
 * (an owner that is not mapped in a user namespace, a device node without
 * CAP_MKNOD, `security.*` xattrs without privilege) is counted and reported in
 * `warnings`, never silently dropped.
 *
 * @example Usage
 * ```ts ignore
 * import { copyTree } from "./copy_tree.ts";
 * const r = await copyTree("/mnt/merged", "/tmp/rootfs");
 * console.log(r.entries, r.warnings);
 * ```
 */
export async function copyTree(
  src: string,
  dst: string,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const result: CopyResult = { entries: 0, bytes: 0, hardlinks: 0, warnings: [] };
  const problems = new Map<string, { count: number; example: string }>();
  const note = (kind: string, path: string) => {
    const p = problems.get(kind);
    if (p) p.count++;
    else problems.set(kind, { count: 1, example: path });
  };
  const links = new Map<string, string>();

  try {
    const st = await lstat(dst);
    if (!st.isDirectory) throw new CopyError(`${dst} exists and is not a directory`);
    for await (const _ of listDir(dst)) {
      throw new CopyError(`${dst} is not empty; export writes into a new or empty directory`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    await mkdir(dst, { recursive: true, mode: 0o700 });
  }

  const stat = (path: string): Stat => {
    const r = statx(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW);
    if (typeof r === "number") must(r, "statx", path);
    return r as Stat;
  };

  const meta = (from: string, to: string, st: Stat) => {
    const type = st.mode & S.IFMT;
    const r = fchownat(AT.FDCWD, to, st.uid, st.gid, AT.SYMLINK_NOFOLLOW);
    if (r === -EINVAL || r === -EPERM) note(`owner ${st.uid}:${st.gid} not settable here`, to);
    else must(r, "fchownat", to);
    if (type !== S.IFLNK) {
      // After chown, which clears setuid and setgid.
      must(fchmodat(AT.FDCWD, to, st.mode & 0o7777, 0), "fchmodat", to);
    }
    for (const name of listXattrs(from)) {
      if (isOverlayXattr(name)) continue;
      const v = getXattr(from, name);
      if (v === undefined) continue;
      const rr = setXattr(to, name, v);
      if (rr < 0) note(`xattr ${name} not settable here`, to);
    }
    setTimes(to, st);
  };

  const walk = async (from: string, to: string) => {
    const names = listNames(from);
    names.sort();
    for (const name of names) {
      options.signal?.throwIfAborted();
      const f = join(from, name);
      const t = join(to, name);
      const st = stat(f);
      const type = st.mode & S.IFMT;
      result.entries++;
      if (type !== S.IFDIR && st.nlink > 1) {
        const key = `${st.dev}:${st.ino}`;
        const first = links.get(key);
        if (first) {
          must(linkat(AT.FDCWD, first, AT.FDCWD, t, 0), "linkat", t);
          result.hardlinks++;
          continue;
        }
        links.set(key, t);
      }
      switch (type) {
        case S.IFDIR:
          must(mkdirat(AT.FDCWD, t, 0o700), "mkdirat", t);
          await walk(f, t);
          break;
        case S.IFREG:
          await copyContent(f, t, st);
          result.bytes += st.size;
          break;
        case S.IFLNK: {
          const target = readlinkat(AT.FDCWD, f);
          if (typeof target === "number") must(target, "readlinkat", f);
          must(symlinkat(target as string, AT.FDCWD, t), "symlinkat", t);
          break;
        }
        case S.IFIFO:
          must(mknodat(AT.FDCWD, t, S.IFIFO | 0o600, 0n), "mknodat", t);
          break;
        case S.IFCHR:
        case S.IFBLK: {
          const r = mknodat(AT.FDCWD, t, type | 0o600, makedev(st.rdevMajor, st.rdevMinor));
          if (r === -EPERM) {
            note("device nodes not creatable here (no CAP_MKNOD)", t);
            result.entries--;
            continue;
          }
          must(r, "mknodat", t);
          break;
        }
        default:
          note("sockets skipped", f);
          result.entries--;
          continue;
      }
      meta(f, t, st);
    }
  };

  await walk(src, dst);
  meta(src, dst, stat(src));
  for (const [kind, p] of problems) {
    result.warnings.push(
      `${kind}: ${p.count} entr${p.count === 1 ? "y" : "ies"} (e.g. ${p.example})`,
    );
  }
  return result;
}
