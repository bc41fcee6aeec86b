/**
 * Starting a program through libc's `posix_spawn`, with stdin, stdout and
 * stderr inherited, and waiting for it without blocking the event loop; and
 * `Deno.Command` with a missing `--allow-run` said as a typed error.
 *
 * `Deno.Command` does the same, but its first use in a process loads Deno's
 * process, body and streams modules (~3 ms here): a large share of a warm
 * `strata run` as root, which starts one program (the OCI runtime) and
 * already holds libc through FFI. The child is started from the calling
 * thread, so it inherits that thread's mount namespace, as with
 * `Deno.Command` (overlay/userns.ts `enterThreadMountNamespace`).
 *
 * The child starts as `Deno.Command` starts it: the environment of this
 * process, an empty signal mask, SIGPIPE back to its default action (Deno
 * ignores it), every other disposition as inherited.
 *
 * @module
 */
import { cstr, errno, ErrnoError, libc } from "./libc.ts";
import { asMissingPermission } from "./permissions.ts";

/** The libc symbols {@linkcode spawnInherited} calls, for `bindLibc`. */
export const SPAWN_SYMBOLS = [
  "posix_spawn",
  "posix_spawnattr_init",
  "posix_spawnattr_setflags",
  "posix_spawnattr_setsigdefault",
  "posix_spawnattr_setsigmask",
  "waitid",
  "waitpid",
  "kill",
  "environ",
] as const;

/** A child started by {@linkcode spawnInherited}. */
export interface SpawnedChild {
  /** Its process id. */
  readonly pid: number;
  /**
   * Settles when it exits: `code` is its exit status, or 128 + the signal
   * that ended it (as `Deno.ChildStatus.code`), and `signal` that signal.
   */
  readonly status: Promise<{ code: number; signal?: number }>;
  /** Sends it signal number `signal`; false when it is gone already. */
  kill(signal: number): boolean;
}

const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const SIGPIPE = 13;
const P_PID = 1;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
const WNOHANG = 1;
const ECHILD = 10;
/** `sizeof(siginfo_t)`. */
const SIGINFO_BYTES = 128;
/** glibc's `sizeof(sigset_t)` (1024 bits) and `posix_spawnattr_t` (336 bytes), with room. */
const SIGSET_BYTES = 128;
const ATTR_BYTES = 512;

const ptr = (b: BufferSource) => Deno.UnsafePointer.of(b);
/** Buffers passed as raw pointers to the call in progress (see below). */
const inFlight: unknown[] = [];

function address(b: Uint8Array<ArrayBuffer>): bigint {
  return BigInt(Deno.UnsafePointer.value(ptr(b)));
}

/**
 * Starts `path` (an absolute path: no PATH search) with `args`, its stdio
 * inherited from this process.
 *
 * @throws {ErrnoError} when it cannot be started (`posix_spawn` failed: no
 * such file, not executable, ...).
 * @throws {FfiPermissionError} without `--allow-ffi`.
 *
 * @example Usage
 * ```ts ignore
 * import { spawnInherited } from "./spawn.ts";
 * const child = spawnInherited("/bin/sh", ["-c", "exit 3"]);
 * console.log((await child.status).code); // 3
 * ```
 */
export function spawnInherited(path: string, args: readonly string[]): SpawnedChild {
  const c = libc();
  const strings = [path, ...args].map(cstr);
  const argv = new BigUint64Array(strings.length + 1); // NULL-terminated
  strings.forEach((s, i) => argv[i] = address(s));

  const attr = new Uint8Array(ATTR_BYTES);
  const sigdefault = new Uint8Array(SIGSET_BYTES);
  sigdefault[(SIGPIPE - 1) >> 3] |= 1 << ((SIGPIPE - 1) & 7); // the kernel's bit layout, glibc's too
  const emptyMask = new Uint8Array(SIGSET_BYTES);
  const a = ptr(attr);
  let r = c.posix_spawnattr_init(a);
  if (r === 0) r = c.posix_spawnattr_setsigdefault(a, ptr(sigdefault));
  if (r === 0) r = c.posix_spawnattr_setsigmask(a, ptr(emptyMask));
  if (r === 0) r = c.posix_spawnattr_setflags(a, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  if (r !== 0) throw new ErrnoError("posix_spawnattr", r, path);

  const environ = new Deno.UnsafePointerView(c.environ!).getPointer();
  const pid = new Int32Array(1);
  // Raw pointers do not keep their buffers alive (Deno's "buffer" parameters
  // would, but bind slower): held from a module variable until the call is over.
  inFlight.push(strings, argv, attr, sigdefault, emptyMask, pid);
  try {
    // posix_spawn returns the error number rather than setting errno.
    r = c.posix_spawn(ptr(pid), ptr(strings[0]), null, a, ptr(argv), environ);
  } finally {
    inFlight.length = 0;
  }
  if (r !== 0) throw new ErrnoError("posix_spawn", r, path);
  const child = pid[0];
  let reaped = false;

  const status = (async () => {
    const info = new Uint8Array(SIGINFO_BYTES);
    for (let tries = 0;; tries++) {
      // Wait until it has exited but leave it a zombie (WNOWAIT), on a
      // thread of Deno's blocking pool so that the event loop (signal
      // forwarding, timers) runs meanwhile. Its pid cannot be reused before
      // it is reaped below, on this thread, so kill() never hits another
      // process. errno is the pool thread's, out of reach: a failure (EINTR)
      // is retried while the child is there.
      if (await c.waitid(P_PID, child, info, WEXITED | WNOWAIT) === 0) break;
      if (tries > 100 || c.kill(child, 0) !== 0) {
        throw new ErrnoError("waitid", ECHILD, `${path} (pid ${child})`);
      }
    }
    const raw = new Int32Array(1);
    inFlight.push(raw);
    const got = c.waitpid(child, ptr(raw), WNOHANG);
    inFlight.length = 0;
    reaped = true;
    if (got !== child) throw new ErrnoError("waitpid", errno(), `${path} (pid ${child})`);
    const w = raw[0];
    const signal = w & 0x7f;
    if (signal === 0) return { code: (w >> 8) & 0xff };
    return { code: 128 + signal, signal };
  })();

  return {
    pid: child,
    status,
    kill(signal: number): boolean {
      // Once reaped, the pid may belong to another process: never signal it.
      if (reaped) return false;
      if (c.kill(child, signal) === 0) return true;
      const e = errno();
      if (e === 3 /* ESRCH */) return false;
      throw new ErrnoError("kill", e, `${path} (pid ${child})`);
    },
  };
}

/**
 * `new Deno.Command(cmd, options).output()`, with a missing `--allow-run`
 * raised as a `MissingPermissionError` (sys/permissions.ts) naming the flag and the
 * program.
 *
 * @example Usage
 * ```ts ignore
 * import { commandOutput } from "./spawn.ts";
 * const out = await commandOutput("runc", { args: ["--version"], stdout: "piped" });
 * console.log(new TextDecoder().decode(out.stdout));
 * ```
 */
export async function commandOutput(
  cmd: string,
  options: Deno.CommandOptions = {},
): Promise<Deno.CommandOutput> {
  try {
    return await new Deno.Command(cmd, options).output();
  } catch (e) {
    throw asMissingPermission(e);
  }
}

/**
 * `new Deno.Command(cmd, options).spawn()`, with a missing `--allow-run`
 * raised as a `MissingPermissionError` (sys/permissions.ts) naming the flag and the
 * program.
 *
 * @example Usage
 * ```ts ignore
 * import { spawnCommand } from "./spawn.ts";
 * const child = spawnCommand("sleep", { args: ["1"] });
 * console.log((await child.status).code);
 * ```
 */
export function spawnCommand(cmd: string, options: Deno.CommandOptions = {}): Deno.ChildProcess {
  try {
    return new Deno.Command(cmd, options).spawn();
  } catch (e) {
    throw asMissingPermission(e);
  }
}
