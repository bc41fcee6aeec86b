/**
 * Which Deno permissions this process holds, asked once per kind, and the
 * error for one that is missing.
 *
 * strata needs only `--allow-run` and `--allow-ffi` (plus `--allow-net` for
 * registries): where Deno's own API for a file, the environment or the
 * process ids is not permitted, the functions of `sys/` (`files.ts`,
 * `env.ts`, `process.ts`) reach the same thing through libc, so granting more
 * changes the route and nothing else. Each of them asks {@linkcode granted}
 * which route to take: one `Deno.permissions.querySync` per permission kind
 * and process (the answer is kept: strata never revokes its permissions), so
 * no call pays for a thrown `NotCapable` to find out.
 *
 * @module
 */

/** The Deno permissions strata asks about. */
export type PermissionName = "read" | "write" | "env" | "sys" | "net" | "run" | "ffi";

const known = new Map<PermissionName, boolean>();

/**
 * Tells whether `name` is granted to this process without restriction
 * (`--allow-read`, not `--allow-read=/some/dir`: a partial grant takes the
 * libc route, which works everywhere). Asked once per kind; never prompts.
 *
 * @example Usage
 * ```ts
 * import { granted } from "./permissions.ts";
 * console.log(granted("read") ? "Deno's file API" : "libc");
 * ```
 */
export function granted(name: PermissionName): boolean {
  let g = known.get(name);
  if (g === undefined) {
    try {
      g = Deno.permissions.querySync({ name }).state === "granted";
    } catch {
      g = false;
    }
    known.set(name, g);
  }
  return g;
}

/**
 * Records that `name` is granted, learnt without asking (a call that needs
 * it just worked), so that {@linkcode granted} need not ask.
 *
 * @example Usage
 * ```ts
 * import { grantedSeen } from "./permissions.ts";
 * grantedSeen("ffi"); // Deno.dlopen just succeeded
 * ```
 */
export function grantedSeen(name: PermissionName): void {
  known.set(name, true);
}

/** What each permission is used for, for the error message. */
const USES: Record<string, string> = {
  run: "to start unshare, the OCI runtime and mount(8)",
  ffi: "to call libc: mounts, files, namespaces, the environment",
  net: "to reach registries",
  read: "to read files",
  write: "to write files",
  env: "to read the environment",
  sys: "to read system information",
  import: "to load modules",
};

/**
 * A Deno permission strata needs and was not given: `flag` names the flag to
 * add (`--allow-net`), `target` what was asked for (a host, a program) when
 * Deno said, `cause` Deno's own `NotCapable` error.
 *
 * @example Usage
 * ```ts
 * import { MissingPermissionError } from "./permissions.ts";
 * const e = new MissingPermissionError("net", "registry.example:443");
 * console.log(e.message);
 * // strata needs --allow-net for registry.example:443 (to reach registries): run deno with --allow-net
 * ```
 */
export class MissingPermissionError extends Error {
  /** The permission, as Deno names it (`net`, `run`, `ffi`, ...). */
  readonly permission: string;
  /** The flag that grants it, `--allow-<permission>`. */
  readonly flag: string;
  /** What was asked for, when known: a host and port, a program, a path. */
  readonly target?: string;
  /** Creates the error; `use` overrides what the permission is said to be for. */
  constructor(
    permission: string,
    target?: string,
    options?: ErrorOptions & { use?: string },
  ) {
    const flag = `--allow-${permission}`;
    const use = options?.use ?? USES[permission] ?? "";
    const what = target ? ` for ${target}` : "";
    super(`strata needs ${flag}${what}${use ? ` (${use})` : ""}: run deno with ${flag}`, options);
    this.name = "MissingPermissionError";
    this.permission = permission;
    this.flag = flag;
    this.target = target;
  }
}

/**
 * Turns Deno's `NotCapable` (or Deno 1's `PermissionDenied` with its
 * "Requires ... access" wording) into a {@linkcode MissingPermissionError}
 * naming the flag; anything else is returned as it is.
 *
 * @example Usage
 * ```ts
 * import { asMissingPermission } from "./permissions.ts";
 * const e = new Deno.errors.NotCapable(
 *   'Requires net access to "registry.example:443", run again with the --allow-net flag',
 * );
 * console.log((asMissingPermission(e) as Error).message);
 * ```
 */
export function asMissingPermission(e: unknown, use?: string): unknown {
  if (!(e instanceof Error) || e instanceof MissingPermissionError) return e;
  const notCapable = e instanceof Deno.errors.NotCapable || e.name === "NotCapable" ||
    (e instanceof Deno.errors.PermissionDenied && /Requires \w+ access/.test(e.message));
  if (!notCapable) return e;
  const m = /Requires (\w+) access(?: to "([^"]*)")?/.exec(e.message) ??
    /--allow-(\w+)/.exec(e.message);
  if (!m) return e;
  return new MissingPermissionError(m[1], m[2], { cause: e, use });
}
