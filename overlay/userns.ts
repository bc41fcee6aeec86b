/**
 * Privileges: {@linkcode ensureUserNamespace} re-executes the current Deno
 * program inside a new mount namespace (and, when not root, a new user
 * namespace) so that mounting works without root and no mount can outlive a
 * crash. {@linkcode namespaceInfo} says which mode is in use.
 *
 * @module
 */
import { currentIdMap, formatRanges, type IdMap, type IdRange, isIdentityMap } from "./cache.ts";
import { readProcLink, readProcText } from "../sys/proc.ts";
import { cstr, ffiAvailable, libc } from "../sys/libc.ts";
import { execInPlace } from "../sys/exec.ts";
import { getEnv } from "../sys/env.ts";
import { readTextFile, realPath, stat } from "../sys/files.ts";
import { execPath, getUid } from "../sys/process.ts";
import { granted, MissingPermissionError } from "../sys/permissions.ts";
import { commandOutput, spawnCommand } from "../sys/spawn.ts";

/**
 * Set in the environment of the re-executed child, so it does not re-execute
 * again: `root` when root re-executed itself into a private mount namespace
 * (the child then has nothing to check), `1` for a user namespace.
 */
export const USERNS_ENV = "STRATA_NAMESPACE";

/** How strata runs: real root, inside a user namespace, or unprivileged (cannot mount). */
export type PrivilegeMode = "root" | "userns" | "unprivileged";

/** What {@linkcode namespaceInfo} reports. */
export interface NamespaceInfo {
  /** `root`: uid 0 of the initial user namespace; `userns`: inside a user namespace; `unprivileged`: neither. */
  mode: PrivilegeMode;
  /** The effective uid, as seen here. */
  uid: number;
  /** `/proc/self/uid_map`. */
  uidMap: IdRange[];
  /** `/proc/self/gid_map`. */
  gidMap: IdRange[];
  /** True when this process was re-executed by {@linkcode ensureUserNamespace}. */
  reexecuted: boolean;
  /** True when the mount namespace is not the one of PID 1 (unknown: `undefined`). */
  privateMountNamespace?: boolean;
  /** True in a user namespace that maps a single id: every file owner collapses to root. */
  collapsed: boolean;
  /** One line for humans, for `strata supported --why`. */
  summary: string;
}

function privateMountNs(): boolean | undefined {
  try {
    return readProcLink("/proc/self/ns/mnt") !== readProcLink("/proc/1/ns/mnt");
  } catch {
    return getEnv(USERNS_ENV) ? true : undefined;
  }
}

/**
 * Reports the privilege mode and the uid/gid mapping in use.
 *
 * @example Usage
 * ```ts
 * import { namespaceInfo } from "./userns.ts";
 * const info = await namespaceInfo();
 * console.log(info.mode, info.summary);
 * ```
 */
export function namespaceInfo(): Promise<NamespaceInfo> {
  try {
    return Promise.resolve(namespaceInfoSync());
  } catch (e) {
    return Promise.reject(e);
  }
}

function namespaceInfoSync(): NamespaceInfo {
  const map = currentIdMap();
  const uid = getUid();
  const identity = isIdentityMap(map);
  const mode: PrivilegeMode = !identity ? "userns" : uid === 0 ? "root" : "unprivileged";
  const collapsed = !identity && map.uid.reduce((n, r) => n + r[2], 0) <= 1;
  const privateMountNamespace = privateMountNs();
  const summary = mode === "root"
    ? `root in the initial user namespace${
      privateMountNamespace ? ", in a private mount namespace" : ""
    }`
    : mode === "userns"
    ? `uid ${uid} in a user namespace mapping uids [${formatRanges(map.uid)}] gids [${
      formatRanges(map.gid)
    }]${collapsed ? " (only root is mapped: file owners collapse to root)" : ""}`
    : `unprivileged uid ${uid} outside any user namespace: mounting needs ensureUserNamespace()`;
  return {
    mode,
    uid,
    uidMap: map.uid,
    gidMap: map.gid,
    reexecuted: getEnv(USERNS_ENV) !== undefined,
    privateMountNamespace,
    collapsed,
    summary,
  };
}

/** The user namespace cannot be created; the message says what to change. */
export class UserNamespaceError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UserNamespaceError";
  }
}

/** Options of {@linkcode ensureUserNamespace}. */
export interface EnsureUserNamespaceOptions {
  /** The command line to re-execute (default: this process' own, from `/proc/self/cmdline`). */
  argv?: string[];
  /** Do not print the "owners collapse to root" warning. */
  quiet?: boolean;
  /** Where warnings go (default: stderr). */
  warn?: (message: string) => void;
}

let warned = false;
/** Set when, as root, no private mount namespace could be made: later calls carry on at once. */
let inPlace = false;

/** Reads this process' command line, with the deno binary as `argv[0]`. */
function ownArgv(): string[] {
  try {
    const raw = readProcText("/proc/self/cmdline");
    const argv = raw.split("\0");
    if (argv.at(-1) === "") argv.pop();
    if (argv.length > 0) return [execPath(), ...argv.slice(1)];
  } catch {
    // fall through: rebuild it from what Deno tells
  }
  const names = ["read", "write", "net", "env", "run", "ffi", "sys"] as const;
  const flags = names.filter((name) => granted(name)).map((name) => `--allow-${name}`);
  return [execPath(), "run", ...flags, Deno.mainModule, ...Deno.args];
}

interface SubIds {
  user: string;
  uids: number;
  gids: number;
}

/** Counts the subordinate ids /etc/subuid and /etc/subgid give this user (by name or uid). */
async function subIds(uid: number): Promise<SubIds> {
  let user = getEnv("USER") ?? getEnv("LOGNAME") ?? "";
  try {
    const passwd = await readTextFile("/etc/passwd");
    for (const line of passwd.split("\n")) {
      const f = line.split(":");
      if (f.length > 2 && Number(f[2]) === uid) user = f[0];
    }
  } catch {
    // no passwd: keep $USER
  }
  const count = async (file: string) => {
    try {
      let n = 0;
      for (const line of (await readTextFile(file)).split("\n")) {
        const [who, , c] = line.trim().split(":");
        if (who === user || who === String(uid)) n += Number(c) || 0;
      }
      return n;
    } catch {
      return 0;
    }
  };
  return { user, uids: await count("/etc/subuid"), gids: await count("/etc/subgid") };
}

/**
 * Set by {@linkcode ensureUserNamespace} in the environment of a child it
 * had to start with only root mapped although the user's ranges and helpers
 * looked fine: what `unshare --map-auto` said when it failed, so the child's
 * warning (and `strata supported --why`) can show it.
 */
export const SUBIDS_FAILED_ENV = "STRATA_SUBIDS_FAILED";

/**
 * Where this user stands with subordinate ids: `root` (real root needs
 * none), `mapped` (this user namespace maps them), `ready` (not in a user
 * namespace yet; they can be mapped), or why only root can be mapped:
 * `no-ranges` (nothing in /etc/subuid or /etc/subgid for the user),
 * `no-helpers` (ranges, but no `newuidmap`/`newgidmap` on PATH: Debian's
 * `uidmap` package is missing), `helpers-unusable` (found, but neither setuid
 * root nor given file capabilities), `helpers-failed` (they ran and failed).
 */
export type SubIdState =
  | "root"
  | "mapped"
  | "ready"
  | "no-ranges"
  | "no-helpers"
  | "helpers-unusable"
  | "helpers-failed";

/** What {@linkcode subordinateIds} found. */
export interface SubIdStatus {
  /** Where the user stands; see {@linkcode SubIdState}. */
  state: SubIdState;
  /** The user (by name, else uid) outside any user namespace. */
  user: string;
  /** Subordinate uids /etc/subuid gives the user. */
  uids: number;
  /** Subordinate gids /etc/subgid gives the user. */
  gids: number;
  /** `newuidmap` found on PATH, if it was. */
  newuidmap?: string;
  /** `newgidmap` found on PATH, if it was. */
  newgidmap?: string;
  /** The cause, and the fix where there is one, in a sentence. */
  reason: string;
}

/** The first `dir/cmd` on `PATH` that exists (symlinks followed), as `execvp` finds it. */
async function findOnPath(cmd: string): Promise<string | undefined> {
  for (const dir of (getEnv("PATH") ?? "/usr/bin:/bin").split(":")) {
    const path = `${dir || "."}/${cmd}`;
    try {
      if ((await stat(path)).isFile) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Tells whether `helper` can raise its privileges to write another user's id
 * map, as far as can be told: setuid root (Debian), or with file
 * capabilities (`security.capability`, as Fedora ships them). In a user
 * namespace that does not map host root, a root-owned file shows the
 * overflow uid: a setuid file whose owner is not mapped here counts as root's.
 */
async function helperUsable(helper: string, map: IdMap): Promise<boolean> {
  try {
    const st = await stat(helper);
    const mapped = (id: number) => map.uid.some(([inside, , n]) => inside <= id && id < inside + n);
    const rootOwned = st.uid === 0 || (!isIdentityMap(map) && !mapped(st.uid ?? 0));
    if (((st.mode ?? 0) & 0o4000) !== 0 && rootOwned) return true;
    if (!ffiAvailable()) return true; // cannot look for capabilities: let it try
    const real = await realPath(helper);
    return Number(libc().lgetxattr(cstr(real), cstr("security.capability"), null, 0n)) > 0;
  } catch {
    return true; // cannot tell: let it try
  }
}

/**
 * Tells where this user stands with subordinate ids, and why: the ranges
 * /etc/subuid and /etc/subgid give the user, whether `newuidmap` and
 * `newgidmap` (which write them into a user namespace's maps; Debian's
 * `uidmap` package) are on PATH and can raise their privileges, and, inside
 * a namespace {@linkcode ensureUserNamespace} made, what mapping them said
 * when it failed. Inside a user namespace the user is the one its root is
 * outside. Reads a few files; runs nothing.
 *
 * @example Usage
 * ```ts
 * import { subordinateIds } from "./userns.ts";
 * const s = await subordinateIds();
 * console.log(s.state, s.reason); // for example "no-helpers" and "… apt-get install uidmap"
 * ```
 */
export async function subordinateIds(): Promise<SubIdStatus> {
  const map = currentIdMap();
  const identity = isIdentityMap(map);
  const own = getUid() ?? -1;
  const uid = identity ? own : (map.uid.find((r) => r[0] === 0)?.[1] ?? own);
  const ids = await subIds(uid);
  const [newuidmap, newgidmap] = await Promise.all([
    findOnPath("newuidmap"),
    findOnPath("newgidmap"),
  ]);
  const status = (state: SubIdState, reason: string): SubIdStatus => ({
    state,
    ...ids,
    newuidmap,
    newgidmap,
    reason,
  });
  const who = ids.user || `uid ${uid}`;
  if (identity && uid === 0) return status("root", "root needs no subordinate ids");
  const mapped = map.uid.reduce((n, r) => n + r[2], 0);
  if (!identity && mapped > 1) {
    return status(
      "mapped",
      `${mapped} uids mapped (${who}'s /etc/subuid and /etc/subgid ranges, through newuidmap)`,
    );
  }
  if (ids.uids === 0 || ids.gids === 0) {
    const missing = ids.uids === 0 && ids.gids === 0
      ? "no /etc/subuid and /etc/subgid ranges"
      : ids.uids === 0
      ? "no /etc/subuid range (only /etc/subgid)"
      : "no /etc/subgid range (only /etc/subuid)";
    return status(
      "no-ranges",
      `${missing} for ${who}; to keep image files' owners, add them: ` +
        `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${who}`,
    );
  }
  if (!newuidmap || !newgidmap) {
    const names = !newuidmap && !newgidmap
      ? "newuidmap and newgidmap, which map them, are"
      : !newuidmap
      ? "newuidmap, which maps them, is"
      : "newgidmap, which maps them, is";
    return status(
      "no-helpers",
      `${who} has /etc/subuid and /etc/subgid ranges, but ${names} not installed ` +
        "(not on PATH); install them: apt-get install uidmap",
    );
  }
  const failed = identity ? undefined : getEnv(SUBIDS_FAILED_ENV);
  if (failed !== undefined) {
    return status(
      "helpers-failed",
      `${who} has /etc/subuid and /etc/subgid ranges and newuidmap and newgidmap, but mapping ` +
        `them failed: ${failed}`,
    );
  }
  const unusable = [newuidmap, newgidmap];
  const usable = await Promise.all(unusable.map((h) => helperUsable(h, map)));
  const bad = unusable.filter((_, i) => !usable[i]);
  if (bad.length > 0) {
    return status(
      "helpers-unusable",
      `${who} has /etc/subuid and /etc/subgid ranges, but ${bad.join(" and ")} ` +
        `${bad.length > 1 ? "are" : "is"} neither setuid root nor given file capabilities, ` +
        "so cannot map them; reinstall: apt-get install --reinstall uidmap",
    );
  }
  if (!identity) {
    return status(
      "ready",
      `${who}'s /etc/subuid and /etc/subgid ranges could be mapped, but this user namespace ` +
        "was made mapping only root (unshare --map-root-user --map-auto maps them)",
    );
  }
  return status("ready", `${who}'s /etc/subuid and /etc/subgid ranges can be mapped`);
}

const CLONE_NEWNS = 0x00020000;
const MS_REC = 0x4000;
const MS_PRIVATE = 1 << 18;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
const O_PATH = 0o10000000;

/**
 * Tells whether `unshare --mount --propagation private` would work, without
 * running it: makes the two calls it makes, unshare(CLONE_NEWNS) and a
 * recursive MS_PRIVATE remount of `/`, on this thread (a mount namespace
 * belongs to a thread until it execs: the other threads stay where they
 * are), then returns the thread to the namespace it left with setns(2) and
 * restores its root and working directory, which setns resets. Spawning
 * `unshare -- true` to find out cost a warm `strata run` ~5 ms.
 * Undefined when it cannot tell (no FFI, no `/proc`).
 */
function canUnshareMountNamespace(): boolean | undefined {
  if (!ffiAvailable()) return undefined;
  const c = libc();
  const fds: number[] = [];
  const openPath = (p: string, flags: number) => {
    const fd = c.open(cstr(p), flags | O_CLOEXEC, 0);
    if (fd >= 0) fds.push(fd);
    return fd;
  };
  try {
    const ns = openPath("/proc/thread-self/ns/mnt", 0);
    const root = openPath("/", O_PATH | O_DIRECTORY);
    const cwd = openPath(".", O_PATH | O_DIRECTORY);
    if (ns < 0 || root < 0 || cwd < 0) return undefined;
    if (c.unshare(CLONE_NEWNS) !== 0) return false;
    const ok = c.mount(cstr("none"), cstr("/"), null, BigInt(MS_REC | MS_PRIVATE), null) === 0;
    if (
      c.setns(ns, CLONE_NEWNS) !== 0 || c.fchdir(root) !== 0 || c.chroot(cstr(".")) !== 0 ||
      c.fchdir(cwd) !== 0
    ) {
      throw new UserNamespaceError(
        "Cannot return to this process' mount namespace, root or working directory after " +
          "probing for a private mount namespace",
      );
    }
    return ok;
  } finally {
    for (const fd of fds) c.close(fd);
  }
}

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
 * import { enterThreadMountNamespace } from "./userns.ts";
 * if (!enterThreadMountNamespace()) await ensureUserNamespace();
 * ```
 */
export function enterThreadMountNamespace(): boolean {
  if (threadNamespace) return true;
  if (!ffiAvailable() || getEnv(USERNS_ENV) !== undefined) return false;
  try {
    if (getUid() !== 0 || !isIdentityMap(currentIdMap())) return false;
  } catch {
    return false; // no /proc, no --allow-sys: cannot tell
  }
  const c = libc();
  if (c.unshare(CLONE_NEWNS) !== 0) return false;
  // From here on this thread is in the new namespace: if its mounts cannot be
  // made private, mounts made now would propagate to the host's.
  if (c.mount(cstr("none"), cstr("/"), null, BigInt(MS_REC | MS_PRIVATE), null) !== 0) {
    throw new UserNamespaceError(
      "Cannot make the mounts of this thread's new mount namespace private (mount / MS_REC|MS_PRIVATE failed)",
    );
  }
  threadNamespace = true;
  return true;
}

async function tryUnshare(
  args: string[],
): Promise<{ ok: boolean; code: number; stderr: string }> {
  try {
    const out = await commandOutput("unshare", {
      args: [...args, "--", "true"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    });
    const stderr = new TextDecoder().decode(out.stderr).trim().replace(/\s*\n\s*/g, "; ");
    return { ok: out.success, code: out.code, stderr };
  } catch (e) {
    if (e instanceof MissingPermissionError) throw e; // --allow-run: not a kernel refusal
    return { ok: false, code: -1, stderr: (e as Error).message };
  }
}

const FORWARDED: Deno.Signal[] = ["SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];
const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGTERM: 15,
};

/**
 * Runs `argv` under `unshare unshareArgs` and exits with its status; never
 * returns. The process becomes `unshare` (exec) when it can: waiting for a
 * child instead kept a second Deno process alive for the whole command and
 * cost its start and its exit a few milliseconds each.
 */
function reexec(
  unshareArgs: string[],
  argv: string[],
  mark = "1",
  env: Record<string, string> = {},
): Promise<never> {
  // A user namespace's child is told how it was made: its run records
  // (cli/cmd_run_warm.ts) make the next one the same way.
  const made: Record<string, string> = mark === "1"
    ? { [USERNS_ARGS_ENV]: JSON.stringify(unshareArgs) }
    : {};
  return replaceProcess("unshare", [...unshareArgs, "--", ...argv], {
    ...env,
    ...made,
    [USERNS_ENV]: mark,
  });
}

/**
 * Set in the environment of a child re-executed into a user namespace: the
 * `unshare` arguments (JSON) that made it.
 */
export const USERNS_ARGS_ENV = "STRATA_USERNS_ARGS";

/**
 * The warning a process in a user namespace that maps only root gives
 * (every owner in images collapses to root), with why subordinate ids are
 * not mapped; undefined when more than root is mapped, or not in a user
 * namespace.
 *
 * @example Usage
 * ```ts ignore
 * import { collapsedWarning } from "./userns.ts";
 * const w = await collapsedWarning();
 * if (w) console.error(w);
 * ```
 */
export async function collapsedWarning(): Promise<string | undefined> {
  const info = await namespaceInfo();
  if (!info.collapsed) return undefined;
  const { reason } = await subordinateIds();
  return `strata: warning: only root is mapped in this user namespace, so files owned by ` +
    `other users in images will be owned by root: ${reason}`;
}

/**
 * Runs this Deno program again, same command line and environment plus
 * `env`, with `flags` added to Deno's own (after `deno run`), and exits with
 * its status: for what only a Deno flag can grant the whole process, such as
 * `--unsafely-ignore-certificate-errors=HOST` for a registry whose
 * certificate cannot be verified when the user turned verification off.
 * Returns false, doing nothing, when this process was not started as
 * `deno run ...` (a compiled binary: its flags are fixed); otherwise never
 * returns.
 *
 * @example Usage
 * ```ts ignore
 * import { rerunWithDenoFlags } from "./userns.ts";
 * await rerunWithDenoFlags(["--unsafely-ignore-certificate-errors=registry.local"], {
 *   STRATA_TLS_RERUN: "registry.local",
 * });
 * ```
 */
export async function rerunWithDenoFlags(
  flags: readonly string[],
  env: Record<string, string> = {},
): Promise<boolean> {
  const argv = ownArgv();
  if (argv[1] !== "run") return false;
  return await replaceProcess(argv[0], ["run", ...flags, ...argv.slice(2)], env);
}

/**
 * Becomes `file args...` (execvp) with this environment plus `env`, or, when
 * that cannot be done in place (no FFI), runs it as a child with stdio
 * passed through and signals forwarded, and exits with its status.
 */
async function replaceProcess(
  file: string,
  args: string[],
  env: Record<string, string>,
): Promise<never> {
  execInPlace(file, args, env);
  const child = spawnCommand(file, {
    args,
    env,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  });
  // `unshare` execs the program, so the child's pid is the program itself.
  // SIGINT from a terminal reaches the whole foreground process group, child
  // included: the parent only outlives it. Other signals are passed on.
  const forward = FORWARDED.map((sig) => {
    const fn = () => {
      try {
        child.kill(sig);
      } catch {
        // already gone
      }
    };
    Deno.addSignalListener(sig, fn);
    return [sig, fn] as const;
  });
  const ignoreInt = () => {};
  Deno.addSignalListener("SIGINT", ignoreInt);
  const status = await child.status;
  for (const [sig, fn] of forward) Deno.removeSignalListener(sig, fn);
  Deno.removeSignalListener("SIGINT", ignoreInt);
  Deno.exit(status.signal ? 128 + (SIGNALS[status.signal] ?? 0) : status.code);
}

/**
 * The one call a program (or the CLI) makes before using the store, so that
 * mounting works and a crash cannot leak a mount:
 *
 * - Not root: re-executes this Deno program under
 *   `unshare --user --map-root-user [--map-auto] --mount --propagation private`.
 *   `--map-auto` (util-linux 2.38, through `newuidmap`/`newgidmap`) maps the
 *   user's `/etc/subuid` and `/etc/subgid` ranges when there are any, so image
 *   files keep their owners; without them only root is mapped and every owner
 *   collapses to root (a warning says so once, it is not an error).
 * - Root: re-executes under `unshare --mount --propagation private` when not
 *   in a private mount namespace yet (when `unshare` is missing or refused,
 *   carries on in place).
 * - Inside the child (marked by `STRATA_NAMESPACE` in the environment), or
 *   already in a user namespace: returns at once.
 *
 * It never returns: with `--allow-ffi` (and `--allow-env`) the process
 * becomes `unshare` through execve(2), keeping its pid, stdio and signals;
 * otherwise it runs `unshare` as a child, passes stdio through, forwards
 * SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/2 and exits with the child's status. The
 * program runs again with the same command line (`/proc/self/cmdline`: same
 * flags, permissions, script and arguments). Needs `--allow-run` (for
 * `unshare`) and `--allow-read`.
 *
 * @throws {UserNamespaceError} when not root and no user namespace can be made.
 *
 * @example Usage
 * ```ts ignore
 * import { ensureUserNamespace } from "./userns.ts";
 * await ensureUserNamespace(); // from here on, mounting works
 * ```
 */
export async function ensureUserNamespace(options: EnsureUserNamespaceOptions = {}): Promise<void> {
  const warn = options.warn ?? ((m: string) => console.error(m));
  // Root re-executed into a private mount namespace: nothing to check or
  // warn about (and no /proc read through FFI at the start of every command).
  if (inPlace || getEnv(USERNS_ENV) === "root") return;
  const info = await namespaceInfo();
  if (info.reexecuted || info.mode === "userns") {
    if (info.collapsed && !options.quiet && !warned) {
      warned = true;
      const w = await collapsedWarning();
      if (w) warn(w);
    }
    return;
  }
  const argv = options.argv ?? ownArgv();
  if (info.mode === "root") {
    if (info.privateMountNamespace) return;
    const args = ["--mount", "--propagation", "private"];
    if (!(canUnshareMountNamespace() ?? (await tryUnshare(args)).ok)) {
      inPlace = true;
      return;
    }
    try {
      return await reexec(args, argv, "root");
    } catch {
      // `unshare` could not be started (not installed): carry on in place.
      inPlace = true;
      return;
    }
  }
  const base = ["--user", "--map-root-user", "--mount", "--propagation", "private"];
  const probe = await tryUnshare(base);
  if (!probe.ok) {
    throw new UserNamespaceError(
      `Cannot create a user namespace to mount without root (unshare ${base.join(" ")}: ${
        probe.stderr || "failed"
      }). Check that unshare (util-linux) is installed and that unprivileged user namespaces are ` +
        "allowed (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, " +
        "kernel.apparmor_restrict_unprivileged_userns=0), or run as root",
    );
  }
  // Only root is mapped unless the ranges and helpers are there and work;
  // the child says why (once), from what is found here and what failed.
  const env: Record<string, string> = {};
  if ((await subordinateIds()).state === "ready") {
    const auto = ["--user", "--map-root-user", "--map-auto", "--mount", "--propagation", "private"];
    const r = await tryUnshare(auto);
    if (r.ok) return await reexec(auto, argv);
    const said = r.stderr || `exited ${r.code}, saying nothing`;
    env[SUBIDS_FAILED_ENV] = `unshare ${auto.join(" ")}: ${said}`;
  }
  return await reexec(base, argv, "1", env);
}
