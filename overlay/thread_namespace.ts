/**
 * A private mount namespace for the calling thread, as root, without
 * re-executing anything ({@linkcode enterThreadMountNamespace}); apart from
 * `userns.ts` (which re-executes into a user namespace) so that a warm
 * `strata run` enters it without loading the rest.
 *
 * @module
 */
import { currentIdMap, isIdentityMap } from "./idmap.ts";
import { addr, cstr, ffiAvailable, NR, sys } from "../sys/libc.ts";

/**
 * Set in the environment of the re-executed child, so it does not re-execute
 * again: `root` when root re-executed itself into a private mount namespace
 * (the child then has nothing to check), `1` for a user namespace.
 */
export const USERNS_ENV = "STRATA_NAMESPACE";

/** The user namespace cannot be created; the message says what to change. */
export class UserNamespaceError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UserNamespaceError";
  }
}

const CLONE_NEWNS = 0x00020000;
const MS_REC = 0x4000;
const MS_PRIVATE = 1 << 18;

/** Set once this thread was moved into a private mount namespace of its own. */
let threadNamespace = false;

/**
 * As root in the initial user namespace, moves the calling thread (call it
 * from the main JavaScript thread) into a new mount namespace whose mounts
 * are all private, without re-executing anything: `unshare(CLONE_NEWNS)`
 * then a recursive `MS_PRIVATE` remount of `/`. Returns true when this
 * thread is in such a namespace now (made by this call or an earlier one),
 * false when it cannot be done here: not root, in a user namespace, no FFI
 * permission, or the kernel refused (callers then use
 * {@linkcode ensureUserNamespace}, which re-executes the program).
 *
 * What it buys: a `strata run` that mounts, runs and unmounts in one process,
 * with the guarantee of a re-executed one: the namespace, and every mount in
 * it, is gone when the thread and the processes it started are gone, so no
 * crash can leak a mount into the host.
 *
 * What it costs: a mount namespace belongs to a thread until it execs, so
 * only this thread sees the mounts it makes. Mounts must be made with the
 * FFI backends (synchronous, on this thread) or by child processes (they are
 * spawned from this thread and inherit its namespace), and files below a
 * mount must be read and written with synchronous calls (`Deno.*Sync` run on
 * the calling thread; the asynchronous ones run on a thread pool that still
 * sees the host's mounts). `bootstrapBundle`, the spec writer, user
 * resolution and `runContainer` keep to that; layer extraction (a worker
 * thread writing into an overlay) does not, so extract first (or re-execute).
 *
 * @example Usage
 * ```ts ignore
 * import { enterThreadMountNamespace } from "./thread_namespace.ts";
 * if (!enterThreadMountNamespace()) await ensureUserNamespace();
 * ```
 */
export function enterThreadMountNamespace(): boolean {
  if (threadNamespace) return true;
  if (!ffiAvailable() || Deno.env.get(USERNS_ENV) !== undefined) return false;
  try {
    if (Deno.uid() !== 0 || !isIdentityMap(currentIdMap())) return false;
  } catch {
    return false; // no /proc, no --allow-sys: cannot tell
  }
  if (sys(NR.unshare, CLONE_NEWNS) !== 0) return false;
  // From here on this thread is in the new namespace: if its mounts cannot be
  // made private, mounts made now would propagate to the host's.
  const [none, root] = [cstr("none"), cstr("/")];
  if (sys(NR.mount, addr(none), addr(root), 0, MS_REC | MS_PRIVATE, 0) !== 0) {
    throw new UserNamespaceError(
      "Cannot make the mounts of this thread's new mount namespace private (mount / MS_REC|MS_PRIVATE failed)",
    );
  }
  threadNamespace = true;
  return true;
}
