/**
 * Facts about the host that decide how a container can be run here: whether
 * this process is in a user namespace and which ids it maps, the resource
 * limits it may not exceed, and whether it can write the cgroup filesystem.
 * Read from `/proc`, once per process.
 *
 * @module
 */

import { cstr, libc } from "../sys/libc.ts";
import { readProcText } from "../sys/proc.ts";
import { currentIdMap, type IdRange } from "../overlay/cache.ts";
import { getUid } from "../sys/process.ts";

/** One line of `/proc/self/uid_map` or `gid_map`. */
export interface IDMapRange {
  /** First id inside this namespace. */
  inside: number;
  /** First id in the parent namespace. */
  outside: number;
  /** Number of ids. */
  count: number;
}

/** A soft/hard resource limit; `Infinity` for unlimited. */
export interface HostRlimit {
  /** Soft limit. */
  soft: number;
  /** Hard limit. */
  hard: number;
}

const FULL_RANGE = 4294967295;

/**
 * Parses the text of a `/proc/<pid>/uid_map` or `gid_map` file.
 *
 * @example Usage
 * ```ts
 * import { parseIDMap } from "./host.ts";
 * console.log(parseIDMap("0 1001 1\n1 100000 65535\n"));
 * ```
 */
export function parseIDMap(text: string): IDMapRange[] {
  const out: IDMapRange[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length !== 3) continue;
    out.push({ inside: Number(f[0]), outside: Number(f[1]), count: Number(f[2]) });
  }
  return out;
}

let uidMap: IDMapRange[] | undefined;
let gidMap: IDMapRange[] | undefined;

/**
 * The uid mapping of this process's user namespace.
 *
 * @example Usage
 * ```ts
 * import { uidMappings } from "./host.ts";
 * console.log(uidMappings()); // [{ inside: 0, outside: 0, count: 4294967295 }] on the host
 * ```
 */
export function uidMappings(): IDMapRange[] {
  return uidMap ??= ranges(currentIdMap().uid);
}

/**
 * The gid mapping of this process's user namespace.
 *
 * @example Usage
 * ```ts
 * import { gidMappings } from "./host.ts";
 * console.log(gidMappings().length);
 * ```
 */
export function gidMappings(): IDMapRange[] {
  return gidMap ??= ranges(currentIdMap().gid);
}

/** The cache's reading of the maps (read once per process, for both). */
function ranges(map: IdRange[]): IDMapRange[] {
  return map.map(([inside, outside, count]) => ({ inside, outside, count }));
}

/**
 * True when this process runs in a user namespace other than the initial one
 * (its uid map is not the identity over the full range). Containers started
 * from here are "rootless" as far as the runtime is concerned.
 *
 * @example Usage
 * ```ts
 * import { inUserNamespace } from "./host.ts";
 * console.log(inUserNamespace());
 * ```
 */
export function inUserNamespace(): boolean {
  const m = uidMappings();
  return !(m.length === 1 && m[0].inside === 0 && m[0].outside === 0 && m[0].count === FULL_RANGE);
}

/**
 * Tells whether `id` is mapped by `map` (so a process here may switch to it).
 *
 * @example Usage
 * ```ts
 * import { isMapped } from "./host.ts";
 * console.log(isMapped(1000, [{ inside: 0, outside: 1001, count: 1 }])); // false
 * ```
 */
export function isMapped(id: number, map: IDMapRange[]): boolean {
  return map.some((r) => id >= r.inside && id < r.inside + r.count);
}

/** `/proc/self/limits` row names, by the runtime-spec's `RLIMIT_*` names. */
const limitNames: Record<string, string> = {
  "Max cpu time": "RLIMIT_CPU",
  "Max file size": "RLIMIT_FSIZE",
  "Max data size": "RLIMIT_DATA",
  "Max stack size": "RLIMIT_STACK",
  "Max core file size": "RLIMIT_CORE",
  "Max resident set": "RLIMIT_RSS",
  "Max processes": "RLIMIT_NPROC",
  "Max open files": "RLIMIT_NOFILE",
  "Max locked memory": "RLIMIT_MEMLOCK",
  "Max address space": "RLIMIT_AS",
  "Max file locks": "RLIMIT_LOCKS",
  "Max pending signals": "RLIMIT_SIGPENDING",
  "Max msgqueue size": "RLIMIT_MSGQUEUE",
  "Max nice priority": "RLIMIT_NICE",
  "Max realtime priority": "RLIMIT_RTPRIO",
  "Max realtime timeout": "RLIMIT_RTTIME",
};

/**
 * Parses the text of `/proc/<pid>/limits` into limits keyed by `RLIMIT_*` name.
 *
 * @example Usage
 * ```ts
 * import { parseLimits } from "./host.ts";
 * const text = "Limit  Soft Limit  Hard Limit  Units\nMax open files  1024  4096  files\n";
 * console.log(parseLimits(text).RLIMIT_NOFILE); // { soft: 1024, hard: 4096 }
 * ```
 */
export function parseLimits(text: string): Record<string, HostRlimit> {
  const out: Record<string, HostRlimit> = {};
  for (const line of text.split("\n")) {
    for (const [label, name] of Object.entries(limitNames)) {
      if (!line.startsWith(label + " ")) continue;
      const f = line.slice(label.length).trim().split(/\s+/);
      const num = (s: string) => s === "unlimited" ? Infinity : Number(s);
      out[name] = { soft: num(f[0]), hard: num(f[1]) };
    }
  }
  return out;
}

let limits: Record<string, HostRlimit> | undefined;

/**
 * This process's resource limits. A container may lower them but, without
 * CAP_SYS_RESOURCE, never raise a hard limit (this host lacks it: FINDINGS).
 *
 * @example Usage
 * ```ts
 * import { hostRlimits } from "./host.ts";
 * console.log(hostRlimits().RLIMIT_NOFILE);
 * ```
 */
export function hostRlimits(): Record<string, HostRlimit> {
  return limits ??= parseLimits(readProcText("/proc/self/limits"));
}

/** Capability numbers strata checks for. */
export const CAP_SYS_ADMIN = 21;
/** CAP_SYS_RESOURCE: needed to raise a hard rlimit. */
export const CAP_SYS_RESOURCE = 24;

/**
 * Tells whether this process has capability `cap` in its effective set
 * (counted against its own user namespace).
 *
 * @example Usage
 * ```ts
 * import { CAP_SYS_RESOURCE, hasCapability } from "./host.ts";
 * console.log(hasCapability(CAP_SYS_RESOURCE));
 * ```
 */
export function hasCapability(cap: number): boolean {
  effective ??= (() => {
    const m = readProcText("/proc/self/status").match(/^CapEff:\s*([0-9a-f]+)$/m);
    return m ? BigInt("0x" + m[1]) : 0n;
  })();
  return ((effective >> BigInt(cap)) & 1n) === 1n;
}

/** The effective capability set, read once (strata never changes its own). */
let effective: bigint | undefined;

/**
 * True when a runtime may raise hard rlimits: the process has
 * CAP_SYS_RESOURCE in the initial user namespace.
 *
 * @example Usage
 * ```ts
 * import { canRaiseRlimits } from "./host.ts";
 * console.log(canRaiseRlimits());
 * ```
 */
export function canRaiseRlimits(): boolean {
  return !inUserNamespace() && hasCapability(CAP_SYS_RESOURCE);
}

const W_OK = 2;
const AT_EACCESS = 0x200;

let cgroupsWritable: boolean | undefined;

/**
 * Tells whether this process can create cgroups for a container: the cgroup
 * directories of this process, for the controllers runc configures, are
 * writable. False in a user namespace over an unprivileged user (runc then
 * fails with "container could not join or create cgroup" as soon as a limit
 * is set).
 *
 * @example Usage
 * ```ts
 * import { canWriteCgroups } from "./host.ts";
 * console.log(canWriteCgroups());
 * ```
 */
export function canWriteCgroups(): boolean {
  if (cgroupsWritable !== undefined) return cgroupsWritable;
  const dirs: string[] = [];
  let text = "";
  try {
    text = readProcText("/proc/self/cgroup");
  } catch {
    return cgroupsWritable = false;
  }
  let v1 = false;
  for (const line of text.split("\n")) {
    const [, controllers, path] = line.split(":");
    if (path === undefined) continue;
    for (const c of controllers.split(",")) {
      if (["memory", "cpu", "pids"].includes(c)) {
        v1 = true;
        dirs.push(`/sys/fs/cgroup/${c}${path}`);
      }
    }
  }
  if (!v1) {
    const unified = text.split("\n").find((l) => l.startsWith("0::"));
    if (unified) dirs.push(`/sys/fs/cgroup${unified.slice(3)}`);
  }
  if (dirs.length === 0) return cgroupsWritable = false;
  const c = libc();
  cgroupsWritable = dirs.every((d) => c.faccessat(-100, cstr(d), W_OK, AT_EACCESS) === 0);
  return cgroupsWritable;
}

/**
 * The id this namespace's uid 0 (or first mapped id) has on the parent side;
 * `Deno.uid()` outside a user namespace. Used to name per-user state paths.
 *
 * @example Usage
 * ```ts
 * import { outsideUid } from "./host.ts";
 * console.log(outsideUid());
 * ```
 */
export function outsideUid(): number {
  const uid = getUid();
  for (const r of uidMappings()) {
    if (uid >= r.inside && uid < r.inside + r.count) return r.outside + (uid - r.inside);
  }
  return uid;
}
