/**
 * Becoming another program in place (execvp(3)), for the re-executions of
 * strata's command line (into a user namespace, with another Deno flag, as
 * another entry module).
 *
 * @module
 */
import { cstr, ffiAvailable, libc } from "./libc.ts";
import { deleteEnv, setEnv } from "./env.ts";

const SIGPIPE = 13;

/**
 * Replaces this process with `file argv...` found on PATH (execvp(3)), with
 * this environment plus `env`; returns only if that is not possible.
 * Everything a child would get it keeps: the pid, stdio, the working
 * directory; signals then reach the program itself. SIGPIPE goes back to its
 * default first, as for a child Deno spawns (Deno ignores it, and exec would
 * pass that on).
 *
 * @example Usage
 * ```ts ignore
 * import { execInPlace } from "./exec.ts";
 * execInPlace("unshare", ["--user", "--", "true"], {}); // returns only on failure
 * ```
 */
export function execInPlace(file: string, argv: string[], env: Record<string, string>): void {
  if (!ffiAvailable()) return;
  try {
    for (const [k, v] of Object.entries(env)) setEnv(k, v);
  } catch {
    return; // a name or value the environment refuses: let Deno.Command pass it on
  }
  const keep: Uint8Array[] = [];
  const ptrs = new BigUint64Array(argv.length + 2); // file, argv..., NULL
  [file, ...argv].forEach((s, i) => {
    const b = cstr(s);
    keep.push(b);
    ptrs[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
  });
  const c = libc();
  const previous = c.signal(SIGPIPE, null);
  c.execvp(cstr(file), ptrs);
  // Still here: exec failed (no such program); undo and let the caller spawn.
  c.signal(SIGPIPE, previous);
  for (const k of Object.keys(env)) deleteEnv(k);
  keep.length = 0;
}
