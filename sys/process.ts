/**
 * Who and where this process is: its user and group ids, its executable,
 * its working directory, the kernel release. Through Deno's API when the
 * permission it needs is granted (`--allow-sys` for ids and the release,
 * `--allow-read` for paths), else through the kernel (`getuid`, `getgid`,
 * `getcwd`, `uname`, `readlink("/proc/self/exe")` by libc's `syscall(2)`),
 * which needs only `--allow-ffi`; both give the same answer. Code outside `sys/` calls these,
 * never `Deno.uid()` and the like (tests/permission_guard_test.ts).
 *
 * @module
 */
import { addr, cstr, ErrnoError, NR, sys } from "./libc.ts";
import { granted } from "./permissions.ts";
import { decodeName } from "./name.ts";

/**
 * The real user id of this process (`getuid(2)`), as `Deno.uid()`.
 *
 * @example Usage
 * ```ts
 * import { getUid } from "./process.ts";
 * console.log(getUid() === 0 ? "root" : "a user");
 * ```
 */
export function getUid(): number {
  return granted("sys") ? Deno.uid() ?? sys(NR.getuid) : sys(NR.getuid);
}

/**
 * The real group id of this process (`getgid(2)`), as `Deno.gid()`.
 *
 * @example Usage
 * ```ts
 * import { getGid } from "./process.ts";
 * console.log(getGid());
 * ```
 */
export function getGid(): number {
  return granted("sys") ? Deno.gid() ?? sys(NR.getgid) : sys(NR.getgid);
}

const pathBuf = new Uint8Array(4097);

/**
 * The absolute path of the running executable (the deno binary, or a
 * compiled program), as `Deno.execPath()`: `/proc/self/exe`'s target.
 *
 * @example Usage
 * ```ts
 * import { execPath } from "./process.ts";
 * console.log(execPath());
 * ```
 */
export function execPath(): string {
  if (granted("read")) return Deno.execPath();
  const exe = cstr("/proc/self/exe");
  const n = sys(NR.readlinkat, -100, addr(exe), addr(pathBuf), 4096);
  if (n < 0) throw new ErrnoError("readlink", -n, "/proc/self/exe");
  return decodeName(pathBuf.subarray(0, n));
}

/**
 * The working directory of this process, as `Deno.cwd()`.
 *
 * @example Usage
 * ```ts
 * import { cwd } from "./process.ts";
 * console.log(cwd());
 * ```
 */
export function cwd(): string {
  if (granted("read")) return Deno.cwd();
  const r = sys(NR.getcwd, addr(pathBuf), pathBuf.length);
  if (r < 0) throw new ErrnoError("getcwd", -r);
  return decodeName(pathBuf.subarray(0, pathBuf.indexOf(0)));
}

let release: string | undefined;

/**
 * The kernel release (`uname -r`, such as `6.8.0-31-generic`), as
 * `Deno.osRelease()`.
 *
 * @example Usage
 * ```ts
 * import { osRelease } from "./process.ts";
 * console.log(osRelease());
 * ```
 */
export function osRelease(): string {
  if (release !== undefined) return release;
  if (granted("sys")) return release = Deno.osRelease();
  // struct utsname: six fields of 65 bytes; the release is the third.
  const buf = new Uint8Array(6 * 65);
  const r = sys(NR.uname, addr(buf));
  if (r < 0) throw new ErrnoError("uname", -r);
  const field = buf.subarray(2 * 65, 3 * 65);
  return release = new TextDecoder().decode(field.subarray(0, field.indexOf(0)));
}
