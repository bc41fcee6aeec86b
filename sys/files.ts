/**
 * Files by path: read, write, list, stat, create, rename, remove, temporary
 * directories, links, and open files with streams. Each function is Deno's
 * own when `--allow-read` (for reads) or `--allow-write` (for changes) is
 * granted, else the same operation through libc's `*at()` calls, which need
 * only `--allow-ffi`. Which route is taken is asked once per permission kind
 * (sys/permissions.ts); the answer, the errors (Deno's classes, `code` and
 * message: `No such file or directory (os error 2): readfile '/x'`) and the
 * file modes are the same on both, so granting more changes nothing but the
 * route. Code outside `sys/` calls these, never `Deno.readFile` and the like
 * (tests/permission_guard_test.ts keeps it so). One difference is kept on
 * purpose: a file name that is not UTF-8 keeps its bytes on the libc route
 * (sys/name.ts), where Deno's API cannot name such a file at all.
 *
 * The libc route makes its system calls through libc's `syscall(2)` (one
 * FFI trampoline for all of them, see `sys` in libc.ts), synchronously on
 * the calling thread, the asynchronous functions included (they return
 * settled promises), except reads of an open file and waits for a lock,
 * which go to Deno's blocking pool so that a large read does not stop the
 * event loop. A thread that
 * entered a mount namespace of its own (overlay/userns.ts
 * `enterThreadMountNamespace`) sees its own mounts through the synchronous
 * functions on both routes; Deno's asynchronous ones run on its thread pool,
 * which sees the host's, so paths below such a mount are reached with the
 * `*Sync` functions only.
 *
 * @module
 */
import { addr, cstr, errno, errnoName, libc, NR, sys } from "./libc.ts";
import { granted } from "./permissions.ts";
import { getEnv } from "./env.ts";
import { AT, DT, O, readDir as getdents, S } from "./fs.ts";
import { decodeName, encodeNameInto } from "./name.ts";

const EINTR = 4;
const EEXIST = 17;
const ENOENT = 2;
const EISDIR = 21;
const ENOTDIR = 20;
const EINVAL = 22;
const O_APPEND = 0o2000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const reads = () => granted("read");
const writes = () => granted("write");

/** Turns a synchronous call into a settled promise, as an `async` function would. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** libc's text for `errno`, the one Rust (and so Deno) prints. */
function strerror(n: number): string {
  const p = libc().strerror(n);
  return p === null ? `Unknown error ${n}` : Deno.UnsafePointerView.getCString(p);
}

/**
 * The error Deno raises for `errno` from `op` on `path`: the same class
 * (`Deno.errors.NotFound` for ENOENT, ...), `code` and message.
 *
 * @example Usage
 * ```ts
 * import { fsError } from "./files.ts";
 * const e = fsError(2, "readfile", "/x");
 * console.log(e instanceof Deno.errors.NotFound, e.message);
 * // true "No such file or directory (os error 2): readfile '/x'"
 * ```
 */
export function fsError(n: number, op?: string, path?: string, to?: string): Error {
  if (
    n === EINVAL && op !== undefined && path !== undefined && `${path}${to ?? ""}`.includes("\0")
  ) {
    return nulError(op, path, to);
  }
  const where = op === undefined
    ? ""
    : path === undefined
    ? `: ${op}`
    : to === undefined
    ? `: ${op} '${path}'`
    : `: ${op} '${path}' -> '${to}'`;
  const message = `${strerror(n)} (os error ${n})${where}`;
  const E = Deno.errors;
  let e: Error;
  switch (n) {
    case 2:
      e = new E.NotFound(message);
      break;
    case 1:
    case 13:
      e = new E.PermissionDenied(message);
      break;
    case 17:
      e = new E.AlreadyExists(message);
      break;
    case 20:
      e = new E.NotADirectory(message);
      break;
    case 21:
      e = new E.IsADirectory(message);
      break;
    case 40:
      e = new E.FilesystemLoop(message);
      break;
    case 16:
      e = new E.Busy(message);
      break;
    case 22:
      e = new TypeError(message);
      break;
    case 11:
      e = new E.WouldBlock(message);
      break;
    case 4:
      e = new E.Interrupted(message);
      break;
    case 32:
      e = new E.BrokenPipe(message);
      break;
    case 38:
      e = new E.NotSupported(message);
      break;
    case 110:
      e = new E.TimedOut(message);
      break;
    default:
      e = new Error(message);
  }
  (e as Error & { code?: string }).code = errnoName(n);
  return e;
}

const AT_FDCWD = AT.FDCWD;
const paths = [new Uint8Array(4097), new Uint8Array(4097)];

/**
 * `s` as a NUL-terminated C string in scratch slot `slot` (reused by the next
 * call with the same slot; a longer path gets its own buffer), or null when
 * it holds a NUL byte.
 */
function cpath(s: string, slot = 0): Uint8Array | null {
  let b = paths[slot];
  if (s.length * 3 + 1 > b.length) b = new Uint8Array(s.length * 3 + 1);
  const n = encodeNameInto(s, b); // names that are not UTF-8 keep their bytes (sys/name.ts)
  if (b.subarray(0, n).includes(0)) return null;
  b[n] = 0;
  return b;
}

/** `openat(2)` (O_CLOEXEC added): the fd or `-errno`. */
function openRaw(dirfd: number, name: string, flags: number, mode: number): number {
  const p = cpath(name);
  if (!p) return -EINVAL;
  return sys(NR.openat, dirfd, addr(p), flags | O.CLOEXEC, mode);
}

function closeFd(fd: number): void {
  sys(NR.close, fd);
}

/** Deno's error for a path holding a NUL byte, which C would read as a shorter path. */
function nulError(op: string, path: string, to?: string): Error {
  const e = new TypeError(
    `file name contained an unexpected NUL byte: ${op} '${path}'${
      to === undefined ? "" : ` -> '${to}'`
    }`,
  );
  (e as Error & { code?: string }).code = "EINVAL";
  return e;
}

/** Throws Deno's error for a `-errno` result `r`, else returns it. */
function ok(r: number, op?: string, path?: string, to?: string): number {
  if (r < 0) throw fsError(-r, op, path, to);
  return r;
}

/** Opens `path` with `flags` (O_CLOEXEC added); returns the fd or throws as Deno would for `op`. */
function openFd(path: string, flags: number, mode: number, op: string): number {
  if (path.includes("\0")) throw nulError(op, path);
  return ok(openRaw(AT_FDCWD, path, flags, mode), op, path);
}

let readBuf: Uint8Array<ArrayBuffer> | undefined;

/** Reads `fd` to its end; errors name `op` and `path`. */
function readAllFd(fd: number, op: string, path: string): Uint8Array<ArrayBuffer> {
  const buf = readBuf ??= new Uint8Array(256 * 1024);
  const at = addr(buf);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const n = sys(NR.read, fd, at, buf.length);
    if (n < 0) {
      if (n === -EINTR) continue;
      throw fsError(-n, op, path);
    }
    if (n === 0) break;
    chunks.push(buf.slice(0, n));
    total += n;
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array<ArrayBuffer>;
  const out = new Uint8Array(total);
  let off = 0;
  for (const ch of chunks) {
    out.set(ch, off);
    off += ch.length;
  }
  return out;
}

/** Writes all of `data` to `fd`; errors name `op` and `path`. */
function writeAllFd(fd: number, data: Uint8Array, op: string, path: string): void {
  let off = 0;
  while (off < data.length) {
    const chunk = off === 0 ? data : data.subarray(off);
    const n = sys(NR.write, fd, addr(chunk), chunk.length);
    if (n < 0) {
      if (n === -EINTR) continue;
      throw fsError(-n, op, path);
    }
    off += n;
  }
}

// ---------------------------------------------------------------- reading

/**
 * The bytes of the file at `path`, as `Deno.readFileSync`.
 *
 * @example Usage
 * ```ts
 * import { readFileSync } from "./files.ts";
 * console.log(readFileSync("/etc/hostname").length > 0);
 * ```
 */
export function readFileSync(path: string): Uint8Array<ArrayBuffer> {
  if (reads()) return Deno.readFileSync(path);
  const fd = openFd(path, O.RDONLY, 0, "readfile");
  try {
    return readAllFd(fd, "readfile", path);
  } finally {
    closeFd(fd);
  }
}

/**
 * The bytes of the file at `path`, as `Deno.readFile`.
 *
 * @example Usage
 * ```ts
 * import { readFile } from "./files.ts";
 * console.log((await readFile("/etc/hostname")).length > 0);
 * ```
 */
export function readFile(path: string): Promise<Uint8Array<ArrayBuffer>> {
  return reads() ? Deno.readFile(path) : settle(() => readFileSync(path));
}

/**
 * The text (UTF-8) of the file at `path`, as `Deno.readTextFileSync`.
 *
 * @example Usage
 * ```ts
 * import { readTextFileSync } from "./files.ts";
 * console.log(readTextFileSync("/etc/hostname"));
 * ```
 */
export function readTextFileSync(path: string): string {
  if (reads()) return Deno.readTextFileSync(path);
  return decoder.decode(readFileSync(path));
}

/**
 * The text (UTF-8) of the file at `path`, as `Deno.readTextFile`.
 *
 * @example Usage
 * ```ts
 * import { readTextFile } from "./files.ts";
 * console.log(await readTextFile("/etc/hostname"));
 * ```
 */
export function readTextFile(path: string): Promise<string> {
  return reads() ? Deno.readTextFile(path) : settle(() => readTextFileSync(path));
}

// ---------------------------------------------------------------- writing

/** Options of {@linkcode writeFile}: Deno's `WriteFileOptions` that strata uses. */
export interface WriteOptions {
  /** Add to the end rather than replace. */
  append?: boolean;
  /** Create the file when missing (default true). */
  create?: boolean;
  /** Fail with `AlreadyExists` when it exists. */
  createNew?: boolean;
  /** Permission bits, set as given (no umask), new file or not; default 0666 less the umask for a new file. */
  mode?: number;
}

/**
 * Writes `data` to the file at `path`, as `Deno.writeFileSync`.
 *
 * @example Usage
 * ```ts
 * import { writeFileSync } from "./files.ts";
 * writeFileSync("/tmp/strata-example", new Uint8Array([104, 105]), { mode: 0o600 });
 * ```
 */
export function writeFileSync(path: string, data: Uint8Array, options: WriteOptions = {}): void {
  if (writes()) return Deno.writeFileSync(path, data, options);
  let flags = O.WRONLY | (options.append ? O_APPEND : O.TRUNC);
  if (options.createNew) flags |= O.CREAT | O.EXCL;
  else if (options.create ?? true) flags |= O.CREAT;
  const fd = openFd(path, flags, options.mode ?? 0o666, "writefile");
  try {
    // Deno sets the mode it is given on an existing file too, umask aside.
    if (options.mode !== undefined) ok(sys(NR.fchmod, fd, options.mode), "writefile", path);
    writeAllFd(fd, data, "writefile", path);
  } finally {
    closeFd(fd);
  }
}

/**
 * Writes `data` to the file at `path`, as `Deno.writeFile`.
 *
 * @example Usage
 * ```ts
 * import { writeFile } from "./files.ts";
 * await writeFile("/tmp/strata-example", new Uint8Array([104, 105]));
 * ```
 */
export function writeFile(
  path: string,
  data: Uint8Array,
  options: WriteOptions = {},
): Promise<void> {
  return writes()
    ? Deno.writeFile(path, data, options)
    : settle(() => writeFileSync(path, data, options));
}

/**
 * Writes `text` (UTF-8) to the file at `path`, as `Deno.writeTextFileSync`.
 *
 * @example Usage
 * ```ts
 * import { writeTextFileSync } from "./files.ts";
 * writeTextFileSync("/tmp/strata-example", "hi\n");
 * ```
 */
export function writeTextFileSync(path: string, text: string, options: WriteOptions = {}): void {
  if (writes()) return Deno.writeTextFileSync(path, text, options);
  writeFileSync(path, encoder.encode(text), options);
}

/**
 * Writes `text` (UTF-8) to the file at `path`, as `Deno.writeTextFile`.
 *
 * @example Usage
 * ```ts
 * import { writeTextFile } from "./files.ts";
 * await writeTextFile("/tmp/strata-example", "hi\n");
 * ```
 */
export function writeTextFile(
  path: string,
  text: string,
  options: WriteOptions = {},
): Promise<void> {
  return writes()
    ? Deno.writeTextFile(path, text, options)
    : settle(() => writeFileSync(path, encoder.encode(text), options));
}

// ---------------------------------------------------------------- metadata

const stxBuf = new Uint8Array(256);
const stxView = new DataView(stxBuf.buffer);
const STATX_BASIC_AND_BTIME = 0x7ff | 0x800;

/** `makedev` as a number (Deno's `dev` and `rdev`). */
function devNumber(major: number, minor: number): number {
  return (minor & 0xff) + (major & 0xfff) * 256 + (minor & ~0xff) * 4096 +
    Math.floor(major / 4096) * 2 ** 32 * 4096;
}

function msAt(off: number): number {
  return Number(stxView.getBigInt64(off, true)) * 1000 +
    Math.floor(stxView.getUint32(off + 8, true) / 1e6);
}

/** statx of `name` in `dirfd` as Deno's `FileInfo`, or `-errno`. */
let stxAddr: number | bigint | undefined;

function fileInfoAt(dirfd: number, name: string, flags: number): Deno.FileInfo | number {
  const p = cpath(name);
  if (!p) return -EINVAL;
  const r = sys(NR.statx, dirfd, addr(p), flags, STATX_BASIC_AND_BTIME, stxAddr ??= addr(stxBuf));
  if (r < 0) return r;
  const v = stxView;
  const mode = v.getUint16(28, true);
  const type = mode & S.IFMT;
  return {
    isFile: type === S.IFREG,
    isDirectory: type === S.IFDIR,
    isSymlink: type === S.IFLNK,
    size: Number(v.getBigUint64(40, true)),
    mtime: new Date(msAt(112)),
    atime: new Date(msAt(64)),
    birthtime: new Date(msAt(80)),
    // Deno gives ctime in whole seconds.
    ctime: new Date(Number(v.getBigInt64(96, true)) * 1000),
    dev: devNumber(v.getUint32(136, true), v.getUint32(140, true)),
    ino: Number(v.getBigUint64(32, true)),
    mode,
    nlink: v.getUint32(16, true),
    uid: v.getUint32(20, true),
    gid: v.getUint32(24, true),
    rdev: devNumber(v.getUint32(128, true), v.getUint32(132, true)),
    blksize: v.getUint32(4, true),
    blocks: Number(v.getBigUint64(48, true)),
    isBlockDevice: type === S.IFBLK,
    isCharDevice: type === S.IFCHR,
    isFifo: type === S.IFIFO,
    isSocket: type === S.IFSOCK,
  };
}

function infoOrThrow(r: Deno.FileInfo | number, op: string, path: string): Deno.FileInfo {
  if (typeof r === "number") throw fsError(-r, op, path);
  return r;
}

/**
 * What `path` is (symlinks followed), as `Deno.statSync`.
 *
 * @example Usage
 * ```ts
 * import { statSync } from "./files.ts";
 * console.log(statSync("/").isDirectory); // true
 * ```
 */
export function statSync(path: string): Deno.FileInfo {
  if (reads()) return Deno.statSync(path);
  return infoOrThrow(fileInfoAt(AT.FDCWD, path, 0), "stat", path);
}

/**
 * What `path` is (symlinks followed), as `Deno.stat`.
 *
 * @example Usage
 * ```ts
 * import { stat } from "./files.ts";
 * console.log((await stat("/")).isDirectory); // true
 * ```
 */
export function stat(path: string): Promise<Deno.FileInfo> {
  return reads() ? Deno.stat(path) : settle(() => statSync(path));
}

/**
 * What `path` is, a symlink described itself, as `Deno.lstatSync`.
 *
 * @example Usage
 * ```ts
 * import { lstatSync } from "./files.ts";
 * console.log(lstatSync("/").isDirectory); // true
 * ```
 */
export function lstatSync(path: string): Deno.FileInfo {
  if (reads()) return Deno.lstatSync(path);
  return infoOrThrow(fileInfoAt(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW), "lstat", path);
}

/**
 * What `path` is, a symlink described itself, as `Deno.lstat`.
 *
 * @example Usage
 * ```ts
 * import { lstat } from "./files.ts";
 * console.log((await lstat("/")).isDirectory); // true
 * ```
 */
export function lstat(path: string): Promise<Deno.FileInfo> {
  return reads() ? Deno.lstat(path) : settle(() => lstatSync(path));
}

/**
 * Sets the permission bits of `path` (symlinks followed), as `Deno.chmodSync`.
 *
 * @example Usage
 * ```ts ignore
 * import { chmodSync } from "./files.ts";
 * chmodSync("/tmp/strata-example", 0o600);
 * ```
 */
export function chmodSync(path: string, mode: number): void {
  if (writes()) return Deno.chmodSync(path, mode);
  const p = cpath(path);
  if (!p) throw nulError("chmod", path);
  ok(sys(NR.fchmodat, AT_FDCWD, addr(p), mode), "chmod", path);
}

/**
 * Sets the permission bits of `path` (symlinks followed), as `Deno.chmod`.
 *
 * @example Usage
 * ```ts ignore
 * import { chmod } from "./files.ts";
 * await chmod("/tmp/strata-example", 0o600);
 * ```
 */
export function chmod(path: string, mode: number): Promise<void> {
  return writes() ? Deno.chmod(path, mode) : settle(() => chmodSync(path, mode));
}

// ---------------------------------------------------------------- directories

/**
 * The entries of the directory `path` (not `.` and `..`), in the order the
 * file system gives them, as `Deno.readDirSync`.
 *
 * @example Usage
 * ```ts
 * import { readDirSync } from "./files.ts";
 * for (const e of readDirSync("/")) console.log(e.name, e.isDirectory);
 * ```
 */
export function readDirSync(path: string): Iterable<Deno.DirEntry> {
  if (reads()) return Deno.readDirSync(path);
  return listDir(path);
}

function listDir(path: string): Deno.DirEntry[] {
  const fd = openFd(path, O.RDONLY | O.DIRECTORY, 0, "readdir");
  try {
    const list = getdents(fd);
    if (typeof list === "number") throw fsError(-list, "readdir", path);
    return list.map((e) => {
      let type = e.type;
      if (type === DT.UNKNOWN) {
        // The file system does not say: ask, as Rust's DirEntry::file_type does.
        const st = fileInfoAt(fd, e.name, AT.SYMLINK_NOFOLLOW);
        if (typeof st !== "number") {
          type = st.isDirectory ? DT.DIR : st.isFile ? DT.REG : st.isSymlink ? DT.LNK : DT.UNKNOWN;
        }
      }
      return {
        name: e.name,
        isFile: type === DT.REG,
        isDirectory: type === DT.DIR,
        isSymlink: type === DT.LNK,
      };
    });
  } finally {
    closeFd(fd);
  }
}

/**
 * The entries of the directory `path`, as `Deno.readDir` (a missing
 * directory is an error at the first iteration).
 *
 * @example Usage
 * ```ts
 * import { readDir } from "./files.ts";
 * for await (const e of readDir("/")) console.log(e.name);
 * ```
 */
export function readDir(path: string): AsyncIterable<Deno.DirEntry> {
  if (reads()) return Deno.readDir(path);
  return (async function* () {
    yield* listDir(path);
  })();
}

/** Options of {@linkcode mkdir}. */
export interface MkdirOptions {
  /** Create missing parents too, and succeed when the directory exists. */
  recursive?: boolean;
  /** Permission bits, less the umask (default 0777). */
  mode?: number;
}

function isDirAt(path: string): boolean {
  const st = fileInfoAt(AT.FDCWD, path, 0);
  return typeof st !== "number" && st.isDirectory;
}

function mkdirs(path: string, mode: number, top: string): void {
  // As Rust's create_dir_all, and so Deno: a directory already there costs one stat.
  if (path === "" || isDirAt(path)) return;
  const r = mkdirRaw(path, mode);
  if (r === 0 || (r === -EEXIST && isDirAt(path))) return;
  if (r !== -ENOENT) throw fsError(-r, "mkdir", top);
  const slash = path.replace(/\/+$/, "").lastIndexOf("/");
  if (slash <= 0) throw fsError(-r, "mkdir", top);
  mkdirs(path.slice(0, slash), mode, top);
  const again = mkdirRaw(path, mode);
  if (again === 0 || (again === -EEXIST && isDirAt(path))) return;
  throw fsError(-again, "mkdir", top);
}

function mkdirRaw(path: string, mode: number): number {
  const p = cpath(path);
  if (!p) return -EINVAL;
  return sys(NR.mkdirat, AT_FDCWD, addr(p), mode);
}

/**
 * Creates the directory `path`, as `Deno.mkdirSync`.
 *
 * @example Usage
 * ```ts
 * import { mkdirSync } from "./files.ts";
 * mkdirSync("/tmp/strata-example/a/b", { recursive: true, mode: 0o700 });
 * ```
 */
export function mkdirSync(path: string, options: MkdirOptions = {}): void {
  if (writes()) return Deno.mkdirSync(path, options);
  const mode = options.mode ?? 0o777;
  if (options.recursive) return mkdirs(path, mode, path);
  ok(mkdirRaw(path, mode), "mkdir", path);
}

/**
 * Creates the directory `path`, as `Deno.mkdir`.
 *
 * @example Usage
 * ```ts
 * import { mkdir } from "./files.ts";
 * await mkdir("/tmp/strata-example/c", { recursive: true });
 * ```
 */
export function mkdir(path: string, options: MkdirOptions = {}): Promise<void> {
  return writes() ? Deno.mkdir(path, options) : settle(() => mkdirSync(path, options));
}

/** Options of {@linkcode remove}. */
export interface RemoveOptions {
  /** Remove a directory with everything in it. */
  recursive?: boolean;
}

function unlinkRaw(dirfd: number, name: string, flags: number): number {
  const p = cpath(name);
  if (!p) return -EINVAL;
  return sys(NR.unlinkat, dirfd, addr(p), flags);
}

function removeRaw(path: string, recursive: boolean): number {
  if (path.includes("\0")) return -EINVAL;
  if (recursive) return removeTreeAt(AT_FDCWD, path);
  const r = unlinkRaw(AT_FDCWD, path, 0);
  if (r !== -EISDIR && r !== -1) return r;
  return unlinkRaw(AT_FDCWD, path, AT.REMOVEDIR);
}

/** Removes `name` in `dirfd` and, when it is a directory, all below it; never follows a symlink. */
function removeTreeAt(dirfd: number, name: string): number {
  const first = unlinkRaw(dirfd, name, 0);
  if (first !== -EISDIR && first !== -1) return first;
  const fd = openRaw(dirfd, name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW, 0);
  if (fd < 0) return fd === -ENOTDIR ? first : fd;
  try {
    // Listed again until empty: an entry made meanwhile is removed too.
    for (;;) {
      const entries = getdents(fd);
      if (typeof entries === "number") return entries;
      if (entries.length === 0) break;
      for (const e of entries) {
        const r = removeTreeAt(fd, e.name);
        if (r < 0 && r !== -ENOENT) return r;
      }
      // getdents continues from the directory's offset: rewind for the next pass.
      const r = sys(NR.lseek, fd, 0, 0);
      if (r < 0) return r;
    }
  } finally {
    closeFd(fd);
  }
  return unlinkRaw(dirfd, name, AT.REMOVEDIR);
}

/**
 * Removes `path` (a file, a symlink itself, an empty directory, or with
 * `recursive` a whole tree), as `Deno.removeSync`.
 *
 * @example Usage
 * ```ts
 * import { mkdirSync, removeSync } from "./files.ts";
 * mkdirSync("/tmp/strata-example-rm/x", { recursive: true });
 * removeSync("/tmp/strata-example-rm", { recursive: true });
 * ```
 */
export function removeSync(path: string, options: RemoveOptions = {}): void {
  if (writes()) return Deno.removeSync(path, options);
  ok(removeRaw(path, options.recursive ?? false), "remove", path);
}

/**
 * Removes `path`, as `Deno.remove`.
 *
 * @example Usage
 * ```ts
 * import { mkdir, remove } from "./files.ts";
 * await mkdir("/tmp/strata-example-rm2");
 * await remove("/tmp/strata-example-rm2");
 * ```
 */
export function remove(path: string, options: RemoveOptions = {}): Promise<void> {
  return writes() ? Deno.remove(path, options) : settle(() => removeSync(path, options));
}

/**
 * Renames `from` to `to` (replacing a file or an empty directory there), as
 * `Deno.renameSync`.
 *
 * @example Usage
 * ```ts
 * import { renameSync, writeTextFileSync } from "./files.ts";
 * writeTextFileSync("/tmp/strata-example-a", "x");
 * renameSync("/tmp/strata-example-a", "/tmp/strata-example-b");
 * ```
 */
export function renameSync(from: string, to: string): void {
  if (writes()) return Deno.renameSync(from, to);
  const a = cpath(from), b = cpath(to, 1);
  if (!a || !b) throw nulError("rename", from, to);
  ok(sys(NR.renameat2, AT_FDCWD, addr(a), AT_FDCWD, addr(b), 0), "rename", from, to);
}

/**
 * Renames `from` to `to`, as `Deno.rename`.
 *
 * @example Usage
 * ```ts
 * import { rename, writeTextFile } from "./files.ts";
 * await writeTextFile("/tmp/strata-example-c", "x");
 * await rename("/tmp/strata-example-c", "/tmp/strata-example-d");
 * ```
 */
export function rename(from: string, to: string): Promise<void> {
  return writes() ? Deno.rename(from, to) : settle(() => renameSync(from, to));
}

/** Options of {@linkcode makeTempDir}. */
export interface TempOptions {
  /** Where (default `$TMPDIR`, else `/tmp`). */
  dir?: string;
  /** The name's start. */
  prefix?: string;
  /** The name's end. */
  suffix?: string;
}

function tempName(options: TempOptions): string {
  const dir = options.dir ?? getEnv("TMPDIR") ?? "/tmp";
  // A random 64-bit number in hex, unpadded, as Deno names them.
  const hex = crypto.getRandomValues(new BigUint64Array(1))[0].toString(16);
  const name = `${options.prefix ?? ""}${hex}${options.suffix ?? ""}`;
  return dir === "" ? name : dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/**
 * Creates a new directory (0700) with a random name and returns its path, as
 * `Deno.makeTempDirSync`.
 *
 * @example Usage
 * ```ts
 * import { makeTempDirSync, removeSync } from "./files.ts";
 * const dir = makeTempDirSync({ prefix: "strata-example-" });
 * removeSync(dir);
 * ```
 */
export function makeTempDirSync(options: TempOptions = {}): string {
  if (writes()) return Deno.makeTempDirSync(options);
  for (;;) {
    const path = tempName(options);
    const r = mkdirRaw(path, 0o700);
    if (r === 0) return path;
    if (r !== -EEXIST) throw fsError(-r, "tmpdir");
  }
}

/**
 * Creates a new directory (0700) with a random name, as `Deno.makeTempDir`.
 *
 * @example Usage
 * ```ts
 * import { makeTempDir, remove } from "./files.ts";
 * const dir = await makeTempDir({ prefix: "strata-example-" });
 * await remove(dir);
 * ```
 */
export function makeTempDir(options: TempOptions = {}): Promise<string> {
  return writes() ? Deno.makeTempDir(options) : settle(() => makeTempDirSync(options));
}

/**
 * Creates a new empty file (0600) with a random name and returns its path,
 * as `Deno.makeTempFileSync`.
 *
 * @example Usage
 * ```ts
 * import { makeTempFileSync, removeSync } from "./files.ts";
 * const file = makeTempFileSync({ prefix: "strata-example-" });
 * removeSync(file);
 * ```
 */
export function makeTempFileSync(options: TempOptions = {}): string {
  if (writes()) return Deno.makeTempFileSync(options);
  for (;;) {
    const path = tempName(options);
    const fd = openRaw(AT_FDCWD, path, O.RDWR | O.CREAT | O.EXCL, 0o600);
    if (fd >= 0) {
      closeFd(fd);
      return path;
    }
    if (fd !== -EEXIST) throw fsError(-fd, "tmpfile");
  }
}

/**
 * Creates a new empty file (0600) with a random name, as `Deno.makeTempFile`.
 *
 * @example Usage
 * ```ts
 * import { makeTempFile, remove } from "./files.ts";
 * await remove(await makeTempFile());
 * ```
 */
export function makeTempFile(options: TempOptions = {}): Promise<string> {
  return writes() ? Deno.makeTempFile(options) : settle(() => makeTempFileSync(options));
}

// ---------------------------------------------------------------- links and paths

/**
 * Creates the symlink `path` pointing at `target`, as `Deno.symlinkSync`.
 *
 * @example Usage
 * ```ts
 * import { removeSync, symlinkSync } from "./files.ts";
 * symlinkSync("/etc/hostname", "/tmp/strata-example-link");
 * removeSync("/tmp/strata-example-link");
 * ```
 */
export function symlinkSync(target: string, path: string): void {
  if (writes()) return Deno.symlinkSync(target, path);
  const t = cpath(target, 1), p = cpath(path);
  if (!t || !p) throw nulError("symlink", target, path);
  ok(sys(NR.symlinkat, addr(t), AT_FDCWD, addr(p)), "symlink", target, path);
}

/**
 * Creates the symlink `path` pointing at `target`, as `Deno.symlink`.
 *
 * @example Usage
 * ```ts
 * import { remove, symlink } from "./files.ts";
 * await symlink("/etc/hostname", "/tmp/strata-example-link2");
 * await remove("/tmp/strata-example-link2");
 * ```
 */
export function symlink(target: string, path: string): Promise<void> {
  return writes() ? Deno.symlink(target, path) : settle(() => symlinkSync(target, path));
}

const linkBuf = new Uint8Array(4097);

/**
 * The target of the symlink `path`, as `Deno.readLinkSync`.
 *
 * @example Usage
 * ```ts
 * import { readLinkSync } from "./files.ts";
 * console.log(readLinkSync("/proc/self/exe"));
 * ```
 */
export function readLinkSync(path: string): string {
  if (reads()) return Deno.readLinkSync(path);
  const p = cpath(path);
  if (!p) throw nulError("readlink", path);
  const n = ok(
    sys(NR.readlinkat, AT_FDCWD, addr(p), addr(linkBuf), linkBuf.length),
    "readlink",
    path,
  );
  return decodeName(linkBuf.subarray(0, n));
}

/**
 * The target of the symlink `path`, as `Deno.readLink`.
 *
 * @example Usage
 * ```ts
 * import { readLink } from "./files.ts";
 * console.log(await readLink("/proc/self/exe"));
 * ```
 */
export function readLink(path: string): Promise<string> {
  return reads() ? Deno.readLink(path) : settle(() => readLinkSync(path));
}

/**
 * The absolute path of `path` with every symlink, `.` and `..` resolved, as
 * `Deno.realPathSync`.
 *
 * @example Usage
 * ```ts
 * import { realPathSync } from "./files.ts";
 * console.log(realPathSync("/tmp/../etc"));
 * ```
 */
export function realPathSync(path: string): string {
  if (reads()) return Deno.realPathSync(path);
  if (path.includes("\0")) throw nulError("realpath", path);
  // The kernel's own answer: open the path (following every link) and ask
  // /proc/self/fd which file that is; realpath(3) without /proc mounted.
  const fd = ok(openRaw(AT_FDCWD, path, O.PATH, 0), "realpath", path);
  try {
    const p = cpath(`/proc/self/fd/${fd}`);
    const n = sys(NR.readlinkat, AT_FDCWD, addr(p!), addr(linkBuf), linkBuf.length);
    if (n > 0 && linkBuf[0] === 0x2f) return decodeName(linkBuf.subarray(0, n));
  } finally {
    closeFd(fd);
  }
  linkBuf.fill(0);
  if (libc().realpath(cstr(path), linkBuf) === null) throw fsError(errno(), "realpath", path);
  return decodeName(linkBuf.subarray(0, linkBuf.indexOf(0)));
}

/**
 * The absolute path of `path`, every symlink resolved, as `Deno.realPath`.
 *
 * @example Usage
 * ```ts
 * import { realPath } from "./files.ts";
 * console.log(await realPath("."));
 * ```
 */
export function realPath(path: string): Promise<string> {
  return reads() ? Deno.realPath(path) : settle(() => realPathSync(path));
}

let copyBuf: Uint8Array<ArrayBuffer> | undefined;

/**
 * Copies the content and permission bits of the file `from` to `to`
 * (replaced when it exists), as `Deno.copyFile`.
 *
 * @example Usage
 * ```ts
 * import { copyFile } from "./files.ts";
 * await copyFile("/etc/hostname", "/tmp/strata-example-copy");
 * ```
 */
export function copyFile(from: string, to: string): Promise<void> {
  if (reads() && writes()) return Deno.copyFile(from, to);
  return settle(() => copyFileFfi(from, to));
}

function copyFileFfi(from: string, to: string): void {
  const fail = (e: number): never => {
    throw fsError(e, "copy", from, to);
  };
  if (from.includes("\0") || to.includes("\0")) throw nulError("copy", from, to);
  const src = openRaw(AT_FDCWD, from, O.RDONLY, 0);
  if (src < 0) fail(-src);
  try {
    const st = fileInfoAt(src, "", AT.EMPTY_PATH);
    if (typeof st === "number") return fail(-st);
    if (!st.isFile) fail(EINVAL); // as std::fs::copy: "the source path is not an existing regular file"
    const perm = (st.mode ?? 0o644) & 0o7777;
    const dst = openRaw(AT_FDCWD, to, O.WRONLY | O.CREAT | O.TRUNC, perm);
    if (dst < 0) fail(-dst);
    try {
      const r = sys(NR.fchmod, dst, perm);
      if (r < 0) fail(-r);
      copyData(src, dst, fail);
    } finally {
      closeFd(dst);
    }
  } finally {
    closeFd(src);
  }
}

/** Copies `src` to `dst` from their offsets: read and write, 1 MiB at a time. */
function copyData(src: number, dst: number, fail: (e: number) => never): void {
  const buf = copyBuf ??= new Uint8Array(1 << 20);
  const at = addr(buf);
  for (;;) {
    const n = sys(NR.read, src, at, buf.length);
    if (n < 0) {
      if (n === -EINTR) continue;
      fail(-n);
    }
    if (n === 0) return;
    let off = 0;
    while (off < n) {
      const w = sys(NR.write, dst, addr(buf.subarray(off, n)), n - off);
      if (w < 0) {
        if (w === -EINTR) continue;
        fail(-w);
      }
      off += w;
    }
  }
}

/**
 * Tells whether `path` exists, without following a final symlink (a dangling
 * link exists). Errors other than "not found" are thrown.
 *
 * @example Usage
 * ```ts
 * import { exists } from "./files.ts";
 * console.log(await exists("/")); // true
 * ```
 */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

// ---------------------------------------------------------------- open files

/** Options of {@linkcode openFile}: Deno's `OpenOptions`. */
export interface OpenOptions {
  /** Open for reading (the default when nothing else is asked). */
  read?: boolean;
  /** Open for writing. */
  write?: boolean;
  /** Writes go to the end. */
  append?: boolean;
  /** Empty the file. */
  truncate?: boolean;
  /** Create it when missing (needs `write` or `append`). */
  create?: boolean;
  /** Create it, failing when it exists (needs `write` or `append`). */
  createNew?: boolean;
  /** Permission bits of a new file, less the umask (default 0666). */
  mode?: number;
}

/**
 * An open file: the part of `Deno.FsFile` strata uses, which `Deno.FsFile`
 * itself satisfies (the route with `--allow-read`/`--allow-write`) and a
 * file descriptor through libc does too (the route without).
 */
export interface OpenFile extends Disposable {
  /** Reads into `p`; the byte count, or null at the end (0 for an empty `p`). */
  read(p: Uint8Array): Promise<number | null>;
  /** {@linkcode OpenFile.read}, on this thread. */
  readSync(p: Uint8Array): number | null;
  /** Writes (some of) `p`; the byte count. */
  write(p: Uint8Array): Promise<number>;
  /** {@linkcode OpenFile.write}, on this thread. */
  writeSync(p: Uint8Array): number;
  /** Moves the file offset; the new offset. */
  seek(offset: number | bigint, whence: Deno.SeekMode): Promise<number>;
  /** {@linkcode OpenFile.seek}, on this thread. */
  seekSync(offset: number | bigint, whence: Deno.SeekMode): number;
  /** What the open file is. */
  stat(): Promise<Deno.FileInfo>;
  /** {@linkcode OpenFile.stat}, on this thread. */
  statSync(): Deno.FileInfo;
  /** Waits for a flock(2) lock, exclusive or shared. */
  lock(exclusive?: boolean): Promise<void>;
  /** {@linkcode OpenFile.lock}, waiting on this thread. */
  lockSync(exclusive?: boolean): void;
  /** Takes the lock if it is free; false when another open file holds it. */
  tryLock(exclusive?: boolean): Promise<boolean>;
  /** {@linkcode OpenFile.tryLock}, on this thread. */
  tryLockSync(exclusive?: boolean): boolean;
  /** Drops the lock. */
  unlock(): Promise<void>;
  /** {@linkcode OpenFile.unlock}, on this thread. */
  unlockSync(): void;
  /** Sets the size. */
  truncate(len?: number): Promise<void>;
  /** Closes it. */
  close(): void;
  /** Its bytes from the offset to the end (closes the file at the end or on cancel). */
  readonly readable: ReadableStream<Uint8Array<ArrayBuffer>>;
  /** A sink writing to it (closes the file when closed or aborted). */
  readonly writable: WritableStream<Uint8Array>;
}

function openFlags(o: OpenOptions): number {
  // Deno's own checks, with its words (ext/fs checkOpenOptions).
  if (!(o.read || o.write || o.append || o.truncate || o.create || o.createNew)) {
    throw new Error("'options' requires at least one option to be true");
  }
  if (o.truncate && !o.write) throw new Error("'truncate' option requires 'write' to be true");
  if ((o.create || o.createNew) && !(o.write || o.append)) {
    throw new Error("'create' or 'createNew' options require 'write' or 'append' to be true");
  }
  const write = o.write || o.append;
  let flags = o.read && write ? O.RDWR : write ? O.WRONLY : O.RDONLY;
  if (o.append) flags |= O_APPEND;
  if (o.truncate) flags |= O.TRUNC;
  if (o.createNew) flags |= O.CREAT | O.EXCL;
  else if (o.create) flags |= O.CREAT;
  return flags;
}

/**
 * Opens the file at `path`, as `Deno.openSync`.
 *
 * @example Usage
 * ```ts
 * import { openFileSync } from "./files.ts";
 * using f = openFileSync("/etc/hostname");
 * console.log(f.statSync().size);
 * ```
 */
export function openFileSync(path: string, options: OpenOptions = { read: true }): OpenFile {
  if (needsDeno(options)) return Deno.openSync(path, options);
  const fd = openFd(path, openFlags(options), options.mode ?? 0o666, "open");
  return new FdFile(fd);
}

/**
 * Opens the file at `path`, as `Deno.open`.
 *
 * @example Usage
 * ```ts
 * import { openFile } from "./files.ts";
 * const f = await openFile("/etc/hostname");
 * console.log(await new Response(f.readable).text());
 * ```
 */
export function openFile(path: string, options: OpenOptions = { read: true }): Promise<OpenFile> {
  if (needsDeno(options)) return Deno.open(path, options);
  return settle(() => openFileSync(path, options));
}

/** Deno's route needs every permission the open asks for. */
function needsDeno(o: OpenOptions): boolean {
  const write = o.write || o.append || o.create || o.createNew || o.truncate;
  return (!o.read || reads()) && (!write || writes());
}

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EWOULDBLOCK = 11;
const STREAM_CHUNK = 64 * 1024;

/** An open file descriptor, with `Deno.FsFile`'s methods and errors. */
class FdFile implements OpenFile {
  #fd: number;
  #readable?: ReadableStream<Uint8Array<ArrayBuffer>>;
  #writable?: WritableStream<Uint8Array>;

  constructor(fd: number) {
    this.#fd = fd;
  }

  #live(): number {
    if (this.#fd < 0) throw new Deno.errors.BadResource("Bad resource ID");
    return this.#fd;
  }

  readSync(p: Uint8Array): number | null {
    const fd = this.#live();
    if (p.length === 0) return 0;
    for (;;) {
      const n = sys(NR.read, fd, addr(p), p.length);
      if (n > 0) return n;
      if (n === 0) return null;
      if (n !== -EINTR) throw fsError(-n);
    }
  }

  async read(p: Uint8Array): Promise<number | null> {
    const fd = this.#live();
    if (p.length === 0) return 0;
    // On the blocking pool; its errno is out of reach, so a failure is
    // read again here, where errno can be read (a lasting error fails the
    // same way; a passing one, such as EINTR, then simply reads).
    const n = Number(await libc().read_async(fd, p as Uint8Array<ArrayBuffer>, BigInt(p.length)));
    if (n > 0) return n;
    if (n === 0) return null;
    return this.readSync(p);
  }

  writeSync(p: Uint8Array): number {
    const fd = this.#live();
    for (;;) {
      const n = sys(NR.write, fd, addr(p), p.length);
      if (n >= 0) return n;
      if (n !== -EINTR) throw fsError(-n);
    }
  }

  write(p: Uint8Array): Promise<number> {
    return settle(() => this.writeSync(p));
  }

  seekSync(offset: number | bigint, whence: Deno.SeekMode): number {
    const r = sys(NR.lseek, this.#live(), offset, whence);
    if (r < 0) throw fsError(-r);
    return r;
  }

  seek(offset: number | bigint, whence: Deno.SeekMode): Promise<number> {
    return settle(() => this.seekSync(offset, whence));
  }

  statSync(): Deno.FileInfo {
    const r = fileInfoAt(this.#live(), "", AT.EMPTY_PATH);
    if (typeof r === "number") throw fsError(-r);
    return r;
  }

  stat(): Promise<Deno.FileInfo> {
    return settle(() => this.statSync());
  }

  async lock(exclusive = false): Promise<void> {
    const fd = this.#live();
    const op = exclusive ? LOCK_EX : LOCK_SH;
    for (;;) {
      // Waits on the blocking pool. A failure there is asked again here
      // without waiting, for its errno: EWOULDBLOCK means the wait was cut
      // short (EINTR), so wait again.
      if (await libc().flock_async(fd, op) === 0) return;
      const r = sys(NR.flock, fd, op | LOCK_NB);
      if (r === 0) return;
      const e = -r;
      if (e !== EWOULDBLOCK && e !== EINTR) throw fsError(e);
    }
  }

  lockSync(exclusive = false): void {
    const fd = this.#live();
    for (;;) {
      const r = sys(NR.flock, fd, exclusive ? LOCK_EX : LOCK_SH);
      if (r === 0) return;
      if (r !== -EINTR) throw fsError(-r);
    }
  }

  tryLockSync(exclusive = false): boolean {
    const fd = this.#live();
    for (;;) {
      const r = sys(NR.flock, fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
      if (r === 0) return true;
      if (r === -EWOULDBLOCK) return false;
      if (r !== -EINTR) throw fsError(-r);
    }
  }

  tryLock(exclusive = false): Promise<boolean> {
    return settle(() => this.tryLockSync(exclusive));
  }

  unlockSync(): void {
    ok(sys(NR.flock, this.#live(), LOCK_UN));
  }

  unlock(): Promise<void> {
    return settle(() => this.unlockSync());
  }

  truncate(len = 0): Promise<void> {
    return settle(() => {
      ok(sys(NR.ftruncate, this.#live(), len));
    });
  }

  close(): void {
    const fd = this.#live();
    this.#fd = -1;
    closeFd(fd);
  }

  [Symbol.dispose](): void {
    if (this.#fd >= 0) this.close();
  }

  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.#readable ??= new ReadableStream<Uint8Array<ArrayBuffer>>({
      pull: async (c) => {
        try {
          const buf = new Uint8Array(STREAM_CHUNK);
          const n = await this.read(buf);
          if (n === null) {
            this[Symbol.dispose]();
            c.close();
          } else c.enqueue(n === buf.length ? buf : buf.slice(0, n));
        } catch (e) {
          this[Symbol.dispose]();
          throw e;
        }
      },
      cancel: () => this[Symbol.dispose](),
    });
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new WritableStream<Uint8Array>({
      write: (chunk) => {
        let off = 0;
        while (off < chunk.length) off += this.writeSync(chunk.subarray(off));
      },
      close: () => this[Symbol.dispose](),
      abort: () => this[Symbol.dispose](),
    });
  }
}
