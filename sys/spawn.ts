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
import { addr, cstr, ErrnoError, libc, NR, sys } from "./libc.ts";
import { asMissingPermission } from "./permissions.ts";

/** The libc symbols {@linkcode spawnInherited} calls, for `bindLibc`. */
export const SPAWN_SYMBOLS = ["posix_spawn", "waitid", "syscall", "environ"] as const;

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
const ESRCH = 3;
/** `sizeof(siginfo_t)`. */
const SIGINFO_BYTES = 128;
/**
 * glibc's `posix_spawnattr_t` (336 bytes; with room): `short __flags` at 0,
 * `pid_t __pgrp` at 4, `sigset_t __sd` (the signals reset to their default
 * action) at 8, `sigset_t __ss` (the signal mask) at 136, then scheduling
 * fields and padding. Filled in here as `posix_spawnattr_init` (all zero)
 * and its setters would fill it: the layout is part of glibc's ABI (every
 * program calling posix_spawn has its size and offsets compiled in), and
 * binding the four setters cost a warm `strata run` ~1 ms of `dlopen`.
 */
const ATTR_BYTES = 512;
const ATTR_FLAGS = 0;
const ATTR_SIGDEFAULT = 8;

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

  // What posix_spawnattr_init, _setsigdefault (SIGPIPE), _setsigmask (no
  // signal blocked: all zero) and _setflags would make of it.
  const attr = new Uint8Array(ATTR_BYTES);
  new DataView(attr.buffer).setInt16(
    ATTR_FLAGS,
    POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK,
    true,
  );
  // Bit n-1 of a set is signal n: the kernel's layout, and glibc's.
  attr[ATTR_SIGDEFAULT + ((SIGPIPE - 1) >> 3)] |= 1 << ((SIGPIPE - 1) & 7);

  const environ = new Deno.UnsafePointerView(c.environ!).getPointer();
  const pid = new Int32Array(1);
  // Raw pointers do not keep their buffers alive (Deno's "buffer" parameters
  // would, but bind slower): held from a module variable until the call is over.
  inFlight.push(strings, argv, attr, pid);
  let r: number;
  try {
    // posix_spawn returns the error number rather than setting errno.
    r = c.posix_spawn(ptr(pid), ptr(strings[0]), null, ptr(attr), ptr(argv), environ);
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
      if (tries > 100 || sys(NR.kill, child, 0) !== 0) {
        throw new ErrnoError("waitid", ECHILD, `${path} (pid ${child})`);
      }
    }
    const raw = new Int32Array(1);
    const got = sys(NR.wait4, child, addr(new Uint8Array(raw.buffer)), WNOHANG, 0);
    reaped = true;
    if (got !== child) throw new ErrnoError("waitpid", -got, `${path} (pid ${child})`);
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
      const r = sys(NR.kill, child, signal);
      if (r === 0) return true;
      if (-r === ESRCH) return false;
      throw new ErrnoError("kill", -r, `${path} (pid ${child})`);
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
