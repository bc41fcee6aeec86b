/**
 * The one place strata talks to libc through Deno FFI. Everything else calls
 * the typed wrappers in `sys/`, so the rest of the code reads as policy and a
 * missing `--allow-ffi` is reported once, with the flag to add.
 *
 * Calls are synchronous: errno is per thread, and it is read on the same
 * thread straight after the failing call.
 *
 * @module
 */
import { encodeNameInto } from "./name.ts";
import { granted, grantedSeen, MissingPermissionError } from "./permissions.ts";

/** Errno numbers (x86_64 and aarch64 Linux agree on all of these). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EOVERFLOW: 75,
  EILSEQ: 84,
  EOPNOTSUPP: 95,
  ENOTSUP: 95,
  ETIMEDOUT: 110,
  ESTALE: 116,
  EDQUOT: 122,
  ECANCELED: 125,
} as const;

const errnoNames = new Map<number, string>();
for (const [name, n] of Object.entries(Errno)) if (!errnoNames.has(n)) errnoNames.set(n, name);

/** Returns the symbolic name of an errno value, for example `ENOENT`. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E#${errno}`;
}

/**
 * A failed libc call: `errno` and its name, the call and the path involved.
 *
 * @example Usage
 * ```ts
 * import { ErrnoError } from "./libc.ts";
 * const e = new ErrnoError("mount", 1, "/mnt/x");
 * console.log(e.message); // "mount /mnt/x: EPERM (Operation not permitted)"
 * ```
 */
export class ErrnoError extends Error {
  /** The errno value. */
  readonly errno: number;
  /** The errno's symbolic name, for example `ENOENT`. */
  readonly code: string;
  /** The libc call that failed. */
  readonly syscall: string;
  /** The path the call was about, when there is one. */
  readonly path?: string;
  /** Creates an error for `syscall` failing with `errno` on `path`. */
  constructor(syscall: string, errno: number, path?: string, options?: ErrorOptions) {
    const code = errnoName(errno);
    super(`${syscall}${path ? ` ${path}` : ""}: ${code} (${strerrorText(errno)})`, options);
    this.name = "ErrnoError";
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
    this.path = path;
  }
}

const texts: Record<number, string> = {
  1: "Operation not permitted",
  2: "No such file or directory",
  5: "Input/output error",
  9: "Bad file descriptor",
  12: "Cannot allocate memory",
  13: "Permission denied",
  16: "Device or resource busy",
  17: "File exists",
  18: "Invalid cross-device link",
  19: "No such device",
  20: "Not a directory",
  21: "Is a directory",
  22: "Invalid argument",
  28: "No space left on device",
  30: "Read-only file system",
  36: "File name too long",
  38: "Function not implemented",
  39: "Directory not empty",
  40: "Too many levels of symbolic links",
  61: "No data available",
  95: "Operation not supported",
};

function strerrorText(errno: number): string {
  return texts[errno] ?? `errno ${errno}`;
}

/**
 * Raised when FFI is needed but `--allow-ffi` was not granted; the message
 * names the flag.
 *
 * @example Usage
 * ```ts
 * import { FfiPermissionError } from "./libc.ts";
 * console.log(new FfiPermissionError().flag); // "--allow-ffi"
 * ```
 */
export class FfiPermissionError extends MissingPermissionError {
  /** Creates the error; `cause` is Deno's own permission error. */
  constructor(options?: ErrorOptions) {
    super("ffi", undefined, options);
    this.name = "FfiPermissionError";
  }
}

const symbols = {
  __errno_location: { parameters: [], result: "pointer" },
  getuid: { parameters: [], result: "u32" },
  geteuid: { parameters: [], result: "u32" },
  getgid: { parameters: [], result: "u32" },
  umask: { parameters: ["u32"], result: "u32" },
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"], result: "i64" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  mknodat: { parameters: ["i32", "buffer", "u32", "u64"], result: "i32" },
  mkfifoat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  symlinkat: { parameters: ["buffer", "i32", "buffer"], result: "i32" },
  linkat: { parameters: ["i32", "buffer", "i32", "buffer", "i32"], result: "i32" },
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
  readlinkat: { parameters: ["i32", "buffer", "buffer", "usize"], result: "isize" },
  fchownat: { parameters: ["i32", "buffer", "u32", "u32", "i32"], result: "i32" },
  fchown: { parameters: ["i32", "u32", "u32"], result: "i32" },
  fchmodat: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  futimens: { parameters: ["i32", "buffer"], result: "i32" },
  fstatat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  fsetxattr: { parameters: ["i32", "buffer", "buffer", "usize", "i32"], result: "i32" },
  lsetxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i32" },
  lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  llistxattr: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  lremovexattr: { parameters: ["buffer", "buffer"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  fsopen: { parameters: ["buffer", "u32"], result: "i32" },
  fsconfig: { parameters: ["i32", "u32", "buffer", "buffer", "i32"], result: "i32" },
  fsmount: { parameters: ["i32", "u32", "u32"], result: "i32" },
  move_mount: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
  unshare: { parameters: ["i32"], result: "i32" },
  // layer/applicator (L2): openat2 has no glibc wrapper; a raw syscall alias
  // taking buffers (the extraction's hot path: no address taken per call).
  sys_openat2: {
    name: "syscall",
    parameters: ["i64", "i64", "buffer", "buffer", "u64"],
    result: "i64",
  },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  setxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i32" },
  fgetxattr: { parameters: ["i32", "buffer", "buffer", "usize"], result: "isize" },
  flistxattr: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  getegid: { parameters: [], result: "u32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  fchdir: { parameters: ["i32"], result: "i32" },
  // bundle/ (B): probe whether the cgroup fs is writable before asking a runtime for limits.
  faccessat: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  // overlay/userns.ts: probe a private mount namespace on this thread, then return to ours.
  setns: { parameters: ["i32", "i32"], result: "i32" },
  chroot: { parameters: ["buffer"], result: "i32" },
  // overlay/userns.ts: become `unshare` (execve) rather than wait for it as a child.
  execvp: { parameters: ["buffer", "buffer"], result: "i32" },
  signal: { parameters: ["i32", "pointer"], result: "pointer" },
  // sys/spawn.ts: start the OCI runtime without loading Deno's process modules.
  // Pointers rather than buffers: Deno binds a "buffer" parameter ~0.1 ms
  // slower, paid by every warm `strata run` that binds these.
  posix_spawn: {
    parameters: ["pointer", "pointer", "pointer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  posix_spawnattr_init: { parameters: ["pointer"], result: "i32" },
  posix_spawnattr_setflags: { parameters: ["pointer", "i16"], result: "i32" },
  posix_spawnattr_setsigdefault: { parameters: ["pointer", "pointer"], result: "i32" },
  posix_spawnattr_setsigmask: { parameters: ["pointer", "pointer"], result: "i32" },
  waitid: { parameters: ["i32", "i32", "buffer", "i32"], result: "i32", nonblocking: true },
  waitpid: { parameters: ["i32", "pointer", "i32"], result: "i32" },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  environ: { type: "pointer" },
  // sys/env.ts, sys/files.ts: what Deno's API gives only with --allow-env or
  // --allow-read/--allow-write, beyond the system calls made through `sys`.
  getenv: { parameters: ["buffer"], result: "pointer" },
  setenv: { parameters: ["buffer", "buffer", "i32"], result: "i32" },
  unsetenv: { parameters: ["buffer"], result: "i32" },
  realpath: { parameters: ["buffer", "buffer"], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  // On Deno's blocking pool, so a large read or a wait for a lock does not
  // stop the event loop; errno is that thread's (see sys/files.ts).
  read_async: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  pread_async: {
    name: "pread",
    parameters: ["i32", "buffer", "usize", "i64"],
    result: "isize",
    nonblocking: true,
  },
  flock_async: { name: "flock", parameters: ["i32", "i32"], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** The libc symbols strata binds. */
export type LibcSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

let lib: LibcSymbols | undefined;
/** Every library handle opened, kept so that none is ever collected. */
const handles: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

function open<S extends Deno.ForeignLibraryInterface>(syms: S): Deno.DynamicLibrary<S> {
  try {
    const l = Deno.dlopen("libc.so.6", syms);
    handles.push(l);
    grantedSeen("ffi"); // it just worked: no need to ask Deno
    return l;
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new FfiPermissionError({ cause: e });
    }
    throw e;
  }
}

/**
 * Opens libc once and returns its bound symbols. Each symbol is bound on
 * first use: Deno builds a call trampoline per symbol at `dlopen`, ~0.15 ms
 * each, so binding all of them up front cost every process ~9 ms, a large
 * share of a warm `strata run` that calls a dozen of them.
 *
 * @throws {FfiPermissionError} when `--allow-ffi` was not granted.
 *
 * @example Usage
 * ```ts ignore
 * import { libc } from "./libc.ts";
 * console.log(libc().getuid());
 * ```
 */
export function libc(): LibcSymbols {
  return lib ?? init([]);
}

/** Opens libc with `__errno_location` and `names` bound now, the rest on first use. */
function init(names: readonly (keyof LibcSymbols)[]): LibcSymbols {
  // At least one symbol now, so a missing --allow-ffi is reported here.
  const now = ["__errno_location", ...names] as (keyof typeof symbols)[];
  const fns = open(Object.fromEntries(now.map((n) => [n, symbols[n]]))).symbols as Record<
    string,
    unknown
  >;
  const bound = {} as Record<string, unknown>;
  for (const name of Object.keys(symbols) as (keyof typeof symbols)[]) {
    if (name in fns) {
      Object.defineProperty(bound, name, { value: fns[name], enumerable: true });
      continue;
    }
    Object.defineProperty(bound, name, {
      configurable: true,
      enumerable: true,
      get() {
        const fn = open({ [name]: symbols[name] }).symbols[name];
        Object.defineProperty(bound, name, { value: fn, enumerable: true });
        return fn;
      },
    });
  }
  return lib = bound as unknown as LibcSymbols;
}

/**
 * Binds `names` now, in one `dlopen`, for a path that will call them all:
 * one call costs less than binding each on first use (~0.25 ms apiece, a
 * few milliseconds on a warm `strata run`, which needs a dozen). Symbols
 * already bound, and ones not listed, are unaffected.
 *
 * @throws {FfiPermissionError} when `--allow-ffi` was not granted.
 *
 * @example Usage
 * ```ts ignore
 * import { bindLibc, libc } from "./libc.ts";
 * bindLibc(["mount", "umount2"]);
 * libc().umount2(cstr("/mnt"), 0);
 * ```
 */
export function bindLibc(names: readonly (keyof LibcSymbols)[]): void {
  if (!lib) {
    init(names); // one dlopen for the first symbol and these
    return;
  }
  const bound = lib as unknown as Record<string, unknown>;
  const wanted = names.filter((n) => Object.getOwnPropertyDescriptor(bound, n)?.get);
  if (wanted.length === 0) return;
  const syms = Object.fromEntries(wanted.map((n) => [n, symbols[n]]));
  const fns = open(syms).symbols as Record<string, unknown>;
  for (const n of wanted) Object.defineProperty(bound, n, { value: fns[n], enumerable: true });
}

/**
 * Tells whether FFI is usable without prompting (granted, or not needed).
 *
 * @example Usage
 * ```ts
 * import { ffiAvailable } from "./libc.ts";
 * console.log(ffiAvailable());
 * ```
 */
export function ffiAvailable(): boolean {
  // Asked once (sys/permissions.ts): every /proc read asks.
  return granted("ffi");
}

/**
 * Reads errno of the calling thread; call it straight after the failing call.
 *
 * @example Usage
 * ```ts ignore
 * import { errno, libc } from "./libc.ts";
 * if (libc().close(-1) < 0) console.log(errno()); // 9 (EBADF)
 * ```
 */
export function errno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/**
 * Encodes a string as a NUL-terminated C string.
 *
 * @example Usage
 * ```ts
 * import { cstr } from "./libc.ts";
 * console.log(cstr("ab")); // Uint8Array(3) [ 97, 98, 0 ]
 * ```
 */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(s.length * 3 + 1);
  const written = encodeNameInto(s, b); // names that are not UTF-8 keep their bytes (sys/name.ts)
  b[written] = 0;
  return b.subarray(0, written + 1);
}

/**
 * Throws an {@linkcode ErrnoError} when `ret` is negative, else returns it.
 *
 * @example Usage
 * ```ts ignore
 * import { check, libc, cstr } from "./libc.ts";
 * check(libc().mkdirat(-100, cstr("/tmp/x"), 0o755), "mkdirat", "/tmp/x");
 * ```
 */
export function check<T extends number | bigint>(ret: T, syscall: string, path?: string): T {
  if (ret < 0) throw new ErrnoError(syscall, errno(), path);
  return ret;
}

const x64 = Deno.build.arch === "x86_64";

/**
 * Linux system call numbers (x86_64, else aarch64's generic table) of the
 * calls {@linkcode sys} makes: the libc routes of sys/files.ts, env.ts
 * and process.ts, and the warm run's mounts, spawns and waits.
 */
export const NR = {
  read: x64 ? 0 : 63,
  write: x64 ? 1 : 64,
  close: x64 ? 3 : 57,
  lseek: x64 ? 8 : 62,
  wait4: x64 ? 61 : 260,
  kill: x64 ? 62 : 129,
  uname: x64 ? 63 : 160,
  flock: x64 ? 73 : 32,
  ftruncate: x64 ? 77 : 46,
  getcwd: x64 ? 79 : 17,
  fchmod: x64 ? 91 : 52,
  getuid: x64 ? 102 : 174,
  getgid: x64 ? 104 : 176,
  mount: x64 ? 165 : 40,
  umount2: x64 ? 166 : 39,
  getdents64: x64 ? 217 : 61,
  openat: x64 ? 257 : 56,
  mkdirat: x64 ? 258 : 34,
  unlinkat: x64 ? 263 : 35,
  symlinkat: x64 ? 266 : 36,
  readlinkat: x64 ? 267 : 78,
  fchmodat: x64 ? 268 : 53,
  faccessat: x64 ? 269 : 48,
  unshare: x64 ? 272 : 97,
  renameat2: x64 ? 316 : 276,
  statx: x64 ? 332 : 291,
} as const;

/** Deno types 64-bit parameters `bigint`, and takes numbers too (no BigInt per call). */
let raw: ((...args: (number | bigint)[]) => number | bigint) | undefined;

/**
 * Makes system call `nr` through libc's `syscall(2)` wrapper; returns its
 * result, or `-errno`. Pointer arguments are addresses ({@linkcode addr}).
 *
 * One call trampoline serves every call: Deno builds one per bound symbol
 * (~0.15 ms each), and the libc routes of sys/ that stand in for Deno's file,
 * environment and process API would otherwise bind a dozen more on every
 * warm `strata run` without `--allow-read`. The first call binds `syscall`,
 * `environ` and `getenv` in one `dlopen`.
 *
 * @example Usage
 * ```ts ignore
 * import { NR, sys } from "./libc.ts";
 * console.log(sys(NR.getuid));
 * ```
 */
export function sys(
  nr: number,
  a: number | bigint = 0,
  b: number | bigint = 0,
  c: number | bigint = 0,
  d: number | bigint = 0,
  e: number | bigint = 0,
  f: number | bigint = 0,
): number {
  if (!raw) {
    bindLibc(["syscall", "environ", "getenv"]);
    raw = libc().syscall as unknown as typeof raw;
  }
  const r = Number(raw!(nr, a, b, c, d, e, f));
  return r < 0 ? -errno() : r;
}

/**
 * The `environ` table of this process (`char **`, NULL-terminated), read
 * afresh: `setenv` may move it.
 *
 * @example Usage
 * ```ts ignore
 * import { environTable } from "./libc.ts";
 * const first = new Deno.UnsafePointerView(environTable()!).getPointer();
 * ```
 */
export function environTable(): Deno.PointerValue {
  if (!raw) sys(NR.getuid); // binds syscall, environ and getenv together, once
  return new Deno.UnsafePointerView(libc().environ!).getPointer();
}

/**
 * The address of `buf`'s first byte, for a pointer argument of
 * {@linkcode sys} (0 for an empty buffer). `buf` must stay referenced until
 * the call returns.
 *
 * @example Usage
 * ```ts ignore
 * import { addr, NR, sys } from "./libc.ts";
 * const buf = new Uint8Array(4096);
 * sys(NR.getcwd, addr(buf), buf.length);
 * ```
 */
export function addr(buf: Uint8Array): number {
  if (buf.length === 0) return 0;
  // A number, not the bigint Deno gives: user-space addresses fit in 53 bits,
  // and a bigint argument takes FFI's slow path (~20x slower per call, cold).
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>)));
}

/** `AT_FDCWD`: resolve relative paths against the working directory. */
export const AT_FDCWD = -100;

let readScratch: Uint8Array<ArrayBuffer> | undefined;

/**
 * Reads `fd` to its end (retrying EINTR; EAGAIN, as from a FIFO with no
 * writer, ends the read) and returns the bytes.
 *
 * @throws {ErrnoError} when a read fails, naming `what`.
 * @throws {RangeError} when there are more than `max` bytes.
 *
 * @example Usage
 * ```ts ignore
 * import { cstr, libc, readFdAll } from "./libc.ts";
 * const fd = libc().open(cstr("/proc/self/uid_map"), 0, 0);
 * console.log(new TextDecoder().decode(readFdAll(fd, "/proc/self/uid_map")));
 * libc().close(fd);
 * ```
 */
export function readFdAll(fd: number, what: string, max = Infinity): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  // One buffer for every call (they are synchronous; chunks are copied out):
  // a warm run reads a dozen small files, and 64 KiB apiece of external
  // memory is what drives V8 to collect garbage early.
  const buf = readScratch ??= new Uint8Array(64 * 1024);
  const at = addr(buf);
  for (;;) {
    const n = sys(NR.read, fd, at, buf.length);
    if (n < 0) {
      const e = -n;
      if (e === Errno.EINTR) continue;
      if (e === Errno.EAGAIN) break;
      throw new ErrnoError("read", e, what);
    }
    if (n === 0) break;
    total += n;
    if (total > max) throw new RangeError(`cannot read ${what}: larger than ${max} bytes`);
    chunks.push(buf.slice(0, n));
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const ch of chunks) {
    out.set(ch, off);
    off += ch.length;
  }
  return out;
}
