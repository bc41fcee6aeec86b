/**
 * Reading `/proc`. Deno 2 refuses `Deno.readTextFile("/proc/self/...")`
 * unless the program runs with `--allow-all`, even with an explicit
 * `--allow-read=/proc`. strata needs a few of these files (id maps,
 * mountinfo, limits, its own command line), and every entry point that
 * mounts already holds `--allow-ffi`, so they are read through libc here;
 * without FFI the Deno API is tried and a refusal names the flags to add.
 *
 * @module
 */
import {
  addr,
  AT_FDCWD,
  cstr,
  errno,
  ErrnoError,
  ffiAvailable,
  libc,
  NR,
  readFdAll,
  sys,
} from "./libc.ts";
import { MissingPermissionError } from "./permissions.ts";

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;

/**
 * Raised when a `/proc` file cannot be read for lack of permission; the
 * message says which flag to add.
 */
export class ProcPermissionError extends MissingPermissionError {
  /** Creates the error for `path`; `cause` is Deno's own error. */
  constructor(path: string, options?: ErrorOptions) {
    super("ffi", path, { ...options, use: "to read /proc: id maps, mounts, limits" });
    this.name = "ProcPermissionError";
  }
}

function readViaLibc(path: string): Uint8Array {
  const p = cstr(path);
  const fd = sys(NR.openat, AT_FDCWD, addr(p), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) throw new ErrnoError("open", -fd, path);
  try {
    return readFdAll(fd, path);
  } finally {
    sys(NR.close, fd);
  }
}

/**
 * Reads a `/proc` (or `/sys`) file as bytes, through libc when FFI is
 * granted, else through Deno (which needs `--allow-all` for `/proc`).
 *
 * @throws {ProcPermissionError} when neither way is permitted.
 *
 * @example Usage
 * ```ts ignore
 * import { readProcFile } from "./proc.ts";
 * const argv = new TextDecoder().decode(readProcFile("/proc/self/cmdline")).split("\0");
 * ```
 */
export function readProcFile(path: string): Uint8Array {
  if (ffiAvailable()) return readViaLibc(path);
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new ProcPermissionError(path, { cause: e });
    }
    throw e;
  }
}

const decoder = new TextDecoder();

/**
 * Reads a `/proc` file as text; see {@linkcode readProcFile}.
 *
 * @example Usage
 * ```ts ignore
 * import { readProcText } from "./proc.ts";
 * console.log(readProcText("/proc/self/uid_map"));
 * ```
 */
export function readProcText(path: string): string {
  return decoder.decode(readProcFile(path));
}

/**
 * Reads the target of a `/proc` symlink (for example `/proc/self/ns/mnt`),
 * through libc when FFI is granted.
 *
 * @example Usage
 * ```ts ignore
 * import { readProcLink } from "./proc.ts";
 * console.log(readProcLink("/proc/self/ns/mnt")); // "mnt:[4026531841]"
 * ```
 */
export function readProcLink(path: string): string {
  if (ffiAvailable()) {
    const buf = new Uint8Array(4096);
    const n = Number(libc().readlinkat(-100, cstr(path), buf, BigInt(buf.length)));
    if (n < 0) throw new ErrnoError("readlink", errno(), path);
    return decoder.decode(buf.subarray(0, n));
  }
  try {
    return Deno.readLinkSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new ProcPermissionError(path, { cause: e });
    }
    throw e;
  }
}
