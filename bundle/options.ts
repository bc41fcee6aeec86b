/**
 * Spec options: small functions that change a {@linkcode Spec}, applied in
 * order (the seed's `spec.Option`). `withImageConfig` derives the process from
 * an image config; the others are what a caller overrides.
 *
 * @module
 */

import { isAbsolute, resolve } from "@std/path";
import type { ContainerConfig, ImageConfig } from "../image/types.ts";
import {
  DEFAULT_HOSTNAME,
  type LinuxIDMapping,
  linuxOf,
  processOf,
  resourcesOf,
  type Spec,
  SpecError,
  type SpecMount,
  type SpecOption,
  SYSFS_MOUNT,
} from "./spec.ts";
import { clearDeferred, deferError } from "./deferred.ts";
import { readUserDatabase, type ResolvedUser, resolveUser, type UserDatabase } from "./user.ts";

/** The image config each spec was derived from, for {@linkcode withCmd}. */
const imageConfigs = new WeakMap<Spec, ContainerConfig>();

/**
 * Sets or replaces `KEY=value` entries, keeping the order of first appearance.
 * A bare `KEY` (no `=`) removes the name, as docker's and containerd's merge
 * do: the runtime refuses an entry without `=`.
 */
function mergeEnv(base: string[], add: string[]): string[] {
  const out = [...base];
  for (const kv of add) {
    const eq = kv.indexOf("=");
    const key = eq < 0 ? kv : kv.slice(0, eq);
    const i = out.findIndex((e) => e === key || e.startsWith(key + "="));
    if (eq < 0) {
      if (i >= 0) out.splice(i, 1);
    } else if (i >= 0) out[i] = kv;
    else out.push(kv);
  }
  return out;
}

/** Where user names are looked up: an explicit rootfs, else the spec's absolute root path. */
function rootfsFor(spec: Spec, rootfs?: string): string | undefined {
  if (rootfs) return rootfs;
  const p = spec.root?.path;
  return p && isAbsolute(p) ? p : undefined;
}

/** Resolves `user` with the image's files, reading them only when needed. */
function resolveIn(user: string, rootfs: string | undefined): ResolvedUser {
  const [u, g] = user.split(":");
  const numeric = (s?: string) => s !== undefined && /^[0-9]+$/.test(s);
  // uid:gid needs no lookup at all (a group given replaces supplementary groups).
  if (numeric(u) && numeric(g) && user.split(":").length === 2) {
    return resolveUser(user, { passwd: [], group: [] });
  }
  let db: UserDatabase = { passwd: [], group: [] };
  let detail = "";
  if (rootfs) db = readUserDatabase(rootfs);
  else detail = " (no rootfs to read it from)";
  return resolveUser(user, db, detail);
}

/**
 * Derives the container process from an image config: Entrypoint + Cmd as
 * argv, Env (replacing same-named defaults such as PATH), WorkingDir, the
 * Docker Hostname when present, and User resolved against the image's
 * `/etc/passwd` and `/etc/group` inside `rootfs` (default: the spec's root
 * path, when absolute).
 *
 * A `User` that cannot be resolved fails `newSpec` unless a later
 * {@linkcode withUser} names the user (as docker's `--user`).
 *
 * An image with neither Entrypoint nor Cmd leaves argv empty: a later
 * {@linkcode withArgs} may supply one; otherwise writing the spec fails with
 * `NoCommandError`.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withImageConfig } from "./options.ts";
 * const spec = await newSpec(withImageConfig({
 *   architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] },
 *   config: { Entrypoint: ["/bin/echo"], Cmd: ["hi"], Env: ["A=1"], WorkingDir: "/srv" },
 * }));
 * console.log(spec.process?.args, spec.process?.cwd); // ["/bin/echo", "hi"] "/srv"
 * ```
 */
export function withImageConfig(
  config: ImageConfig | ContainerConfig,
  rootfs?: string,
): SpecOption {
  const c: ContainerConfig = "rootfs" in config || "architecture" in config
    ? (config as ImageConfig).config ?? {}
    : config as ContainerConfig;
  return (spec) => {
    imageConfigs.set(spec, c);
    const p = processOf(spec);
    // Docker's own field (not in the OCI image spec; docker run ignores it):
    // kept when the kernel would take it, else left to the default.
    if (c.Hostname && validHostname(c.Hostname)) spec.hostname = c.Hostname;
    p.args = [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
    p.env = mergeEnv(p.env ?? [], c.Env ?? []);
    if (c.WorkingDir) p.cwd = c.WorkingDir;
    const root = rootfsFor(spec, rootfs);
    if (c.User) {
      // A user that cannot be resolved fails the spec only if no later
      // withUser replaces it (docker never reads the image's USER under --user).
      let r: ResolvedUser;
      try {
        r = resolveIn(c.User, root);
      } catch (e) {
        deferError(spec, "user", e);
        return;
      }
      p.user = { ...p.user, ...toSpecUser(r) };
      setHome(spec, r.home);
    } else if (!p.env.some((e) => e.startsWith("HOME="))) {
      setHome(spec, rootHome(root));
    }
  };
}

function toSpecUser(r: ResolvedUser) {
  const u: { uid: number; gid: number; additionalGids?: number[]; username?: string } = {
    uid: r.uid,
    gid: r.gid,
  };
  if (r.additionalGids.length) u.additionalGids = r.additionalGids;
  else u.additionalGids = undefined;
  return u;
}

/** Specs whose HOME was derived from passwd (not set by the image or caller). */
const derivedHome = new WeakSet<Spec>();

/**
 * Docker sets HOME from the user's passwd entry when the image does not (and
 * to `/` for a user passwd does not list); so do we. A HOME set explicitly
 * stays; one derived for an earlier user is replaced.
 */
function setHome(spec: Spec, home: string | undefined) {
  const p = processOf(spec);
  const env = p.env ?? [];
  const has = env.some((e) => e.startsWith("HOME="));
  if (has && !derivedHome.has(spec)) return;
  p.env = [...env.filter((e) => !e.startsWith("HOME=")), `HOME=${home || "/"}`];
  derivedHome.add(spec);
}

/** HOME for the image's default user (root): its passwd entry, best effort. */
function rootHome(rootfs: string | undefined): string {
  if (!rootfs) return "/root";
  try {
    return readUserDatabase(rootfs).passwd.find((e) => e.uid === 0)?.home || "/";
  } catch {
    return "/root";
  }
}

/**
 * Runs the process as `user`: a `User` string (any of the six image-spec
 * forms, resolved against the rootfs's `/etc/passwd` and `/etc/group`), or
 * explicit ids.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withUser } from "./options.ts";
 * const spec = await newSpec(withUser("1000:1000"));
 * console.log(spec.process?.user); // { uid: 1000, gid: 1000, ... }
 * ```
 */
export function withUser(
  user: string | { uid: number; gid: number; additionalGids?: number[] },
  rootfs?: string,
): SpecOption {
  return (spec) => {
    const p = processOf(spec);
    clearDeferred(spec, "user");
    if (typeof user === "string") {
      const r = resolveIn(user, rootfsFor(spec, rootfs));
      p.user = { ...p.user, ...toSpecUser(r) };
      setHome(spec, r.home);
    } else {
      p.user = { ...p.user, uid: user.uid, gid: user.gid, additionalGids: user.additionalGids };
    }
  };
}

/**
 * Replaces the whole argv (entrypoint included).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withArgs } from "./options.ts";
 * console.log((await newSpec(withArgs("/bin/true"))).process?.args); // ["/bin/true"]
 * ```
 */
export function withArgs(...args: string[]): SpecOption {
  return (spec) => {
    processOf(spec).args = [...args];
  };
}

/**
 * Replaces the image's Cmd, keeping its Entrypoint (Docker's `run IMAGE CMD`).
 * Without an image config it is {@linkcode withArgs}.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withCmd, withImageConfig } from "./options.ts";
 * const spec = await newSpec(
 *   withImageConfig({ Entrypoint: ["/bin/echo"], Cmd: ["default"] }),
 *   withCmd("hello"),
 * );
 * console.log(spec.process?.args); // ["/bin/echo", "hello"]
 * ```
 */
export function withCmd(...cmd: string[]): SpecOption {
  return (spec) => {
    const entrypoint = imageConfigs.get(spec)?.Entrypoint ?? [];
    processOf(spec).args = [...entrypoint, ...cmd];
  };
}

/**
 * Replaces the image's Entrypoint and drops its Cmd (Docker's
 * `--entrypoint`: the image's default arguments were meant for its own
 * entrypoint). A later {@linkcode withCmd} supplies arguments; an empty
 * entrypoint leaves the command to it alone.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withCmd, withEntrypoint, withImageConfig } from "./options.ts";
 * const spec = await newSpec(
 *   withImageConfig({ Entrypoint: ["/app"], Cmd: ["--serve"] }),
 *   withEntrypoint("/bin/sh"),
 *   withCmd("-c", "echo hi"),
 * );
 * console.log(spec.process?.args); // ["/bin/sh", "-c", "echo hi"]
 * ```
 */
export function withEntrypoint(...entrypoint: string[]): SpecOption {
  return (spec) => {
    imageConfigs.set(spec, { ...imageConfigs.get(spec), Entrypoint: [...entrypoint], Cmd: [] });
    processOf(spec).args = [...entrypoint];
  };
}

/**
 * Sets environment variables, replacing same-named ones; a bare `NAME` in a
 * list removes it (as docker and containerd merge an environment).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withEnv } from "./options.ts";
 * const spec = await newSpec(withEnv({ A: "1" }), withEnv(["A=2", "B=3"]));
 * console.log(spec.process?.env); // [PATH=..., "A=2", "B=3"]
 * ```
 */
export function withEnv(env: Record<string, string> | string[]): SpecOption {
  const list = Array.isArray(env) ? env : Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return (spec) => {
    const p = processOf(spec);
    p.env = mergeEnv(p.env ?? [], list);
    if (list.some((e) => e.startsWith("HOME="))) derivedHome.delete(spec);
  };
}

/**
 * Sets the working directory (absolute in the container).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withCwd } from "./options.ts";
 * console.log((await newSpec(withCwd("/srv"))).process?.cwd); // "/srv"
 * ```
 */
export function withCwd(cwd: string): SpecOption {
  return (spec) => {
    if (!cwd.startsWith("/")) {
      throw new SpecError(`cannot set the working directory to "${cwd}": it must be absolute`);
    }
    processOf(spec).cwd = cwd;
  };
}

/**
 * Sets the root filesystem path and whether it is mounted read-only.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withRootFS } from "./options.ts";
 * console.log((await newSpec(withRootFS("/b/rootfs", true))).root); // { path: "/b/rootfs", readonly: true }
 * ```
 */
export function withRootFS(path: string, readonly = false): SpecOption {
  return (spec) => {
    spec.root = { path, readonly };
  };
}

/**
 * Makes the root filesystem read-only, keeping its path.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withReadonlyRootFS } from "./options.ts";
 * console.log((await newSpec(withReadonlyRootFS())).root?.readonly); // true
 * ```
 */
export function withReadonlyRootFS(readonly = true): SpecOption {
  return (spec) => {
    spec.root = { path: spec.root?.path ?? "rootfs", readonly };
  };
}

/**
 * Gives the process a pseudo-terminal (`process.terminal`), as `docker run
 * -t`: the runtime makes one and relays it to its own standard input and
 * output, which must then be a terminal (runc refuses otherwise). `TERM`
 * becomes `xterm` unless the image or an earlier option set it, as docker
 * and podman do.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withTerminal } from "./options.ts";
 * const spec = await newSpec(withTerminal());
 * console.log(spec.process?.terminal, spec.process?.env?.includes("TERM=xterm")); // true true
 * ```
 */
export function withTerminal(terminal = true): SpecOption {
  return (spec) => {
    const p = processOf(spec);
    p.terminal = terminal;
    if (terminal && !(p.env ?? []).some((e) => e.startsWith("TERM="))) {
      p.env = mergeEnv(p.env ?? [], ["TERM=xterm"]);
    }
  };
}

/**
 * Shares the host's network namespace (and its `/etc/resolv.conf`, bound
 * read-only, as the seed). `/sys` becomes a read-only bind of the host's:
 * sysfs can only be mounted by the owner of the network namespace, which in a
 * user namespace the container is not.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withHostNetwork } from "./options.ts";
 * const spec = await newSpec(withHostNetwork());
 * console.log(spec.linux?.namespaces?.some((n) => n.type === "network")); // false
 * ```
 */
export function withHostNetwork(): SpecOption {
  return (spec) => {
    const l = linuxOf(spec);
    l.namespaces = (l.namespaces ?? []).filter((n) => n.type !== "network");
    spec.mounts = (spec.mounts ?? []).map((m) =>
      m.destination === "/sys"
        ? {
          destination: "/sys",
          type: "bind",
          source: "/sys",
          options: ["rbind", "nosuid", "noexec", "nodev", "ro"],
        }
        : m
    );
    if (!spec.mounts.some((m) => m.destination === "/etc/resolv.conf")) {
      spec.mounts.push({
        destination: "/etc/resolv.conf",
        type: "bind",
        source: "/etc/resolv.conf",
        options: ["rbind", "ro"],
      });
    }
  };
}

/**
 * Gives the container its own network namespace with only loopback (the
 * default; undoes {@linkcode withHostNetwork}).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withHostNetwork, withNetworkNone } from "./options.ts";
 * const spec = await newSpec(withHostNetwork(), withNetworkNone());
 * console.log(spec.linux?.namespaces?.some((n) => n.type === "network")); // true
 * ```
 */
export function withNetworkNone(): SpecOption {
  return (spec) => {
    const l = linuxOf(spec);
    l.namespaces = (l.namespaces ?? []).filter((n) => n.type !== "network");
    l.namespaces.push({ type: "network" });
    spec.mounts = (spec.mounts ?? [])
      .filter((m) => !(m.destination === "/etc/resolv.conf" && m.source === "/etc/resolv.conf"))
      .map((m) =>
        m.destination === "/sys" ? { ...SYSFS_MOUNT, options: [...SYSFS_MOUNT.options!] } : m
      );
  };
}

/** A bind mount from the host into the container. */
export interface BindMount {
  /** Host path. */
  source: string;
  /** Absolute path in the container. */
  destination: string;
  /** Mount read-only (default false). */
  readonly?: boolean;
}

/**
 * Adds bind mounts (recursive, private, nosuid, nodev). Relative sources are
 * resolved against the working directory of this process.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withMounts } from "./options.ts";
 * const spec = await newSpec(withMounts({ source: "/srv/data", destination: "/data", readonly: true }));
 * console.log(spec.mounts?.at(-1));
 * ```
 */
export function withMounts(...mounts: (BindMount | SpecMount)[]): SpecOption {
  return (spec) => {
    spec.mounts ??= [];
    for (const m of mounts) {
      if (!m.destination.startsWith("/")) {
        throw new SpecError(`cannot mount at "${m.destination}": the destination must be absolute`);
      }
      if ("type" in m || "options" in m) {
        spec.mounts.push(m as SpecMount);
        continue;
      }
      const b = m as BindMount;
      spec.mounts.push({
        destination: b.destination,
        type: "bind",
        source: resolve(b.source!),
        options: ["rbind", "rprivate", "nosuid", "nodev", ...(b.readonly ? ["ro"] : [])],
      });
    }
  };
}

const units: Record<string, number> = {
  "": 1,
  B: 1,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  kB: 1e3,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  // Docker's --memory units: lower-case and binary.
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
};

/**
 * Parses a memory size: bytes as a number, or a string with a unit. Binary:
 * `Ki Mi Gi Ti` (and `KiB`...); decimal: `K M G T` (and `kB MB`...); Docker's
 * lower-case `k m g t` are binary, as `docker run --memory 64m` means 64 MiB.
 *
 * @example Usage
 * ```ts
 * import { parseBytes } from "./options.ts";
 * console.log(parseBytes("512Mi"), parseBytes("64m"), parseBytes("1G")); // 536870912 67108864 1000000000
 * ```
 */
export function parseBytes(v: number | string): number {
  if (typeof v === "number") {
    if (!Number.isFinite(v) || v <= 0) throw new SpecError(`invalid size ${v}: expected bytes > 0`);
    return Math.floor(v);
  }
  const m = v.trim().match(/^([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)$/);
  const mult = m ? units[m[2]] : undefined;
  if (!m || mult === undefined) {
    throw new SpecError(
      `invalid size "${v}": expected a number with an optional unit (512Mi, 1G, 64m)`,
    );
  }
  const n = Math.floor(Number(m[1]) * mult);
  if (n <= 0) throw new SpecError(`invalid size "${v}": expected more than 0 bytes`);
  return n;
}

/**
 * Limits memory (cgroup memory.limit_in_bytes / memory.max).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withMemoryLimit } from "./options.ts";
 * console.log((await newSpec(withMemoryLimit("64Mi"))).linux?.resources?.memory); // { limit: 67108864 }
 * ```
 */
export function withMemoryLimit(limit: number | string): SpecOption {
  return (spec) => {
    resourcesOf(spec).memory = { limit: parseBytes(limit) };
  };
}

/** CFS period (100 ms), as the seed and Kubernetes. */
export const CPU_PERIOD = 100000;

/**
 * Parses a CPU amount to millicpu: a number of CPUs (`0.5`, `2`) or a string
 * (`"500m"`, `"1.5"`).
 *
 * @example Usage
 * ```ts
 * import { parseMilliCPU } from "./options.ts";
 * console.log(parseMilliCPU("500m"), parseMilliCPU(1.5)); // 500 1500
 * ```
 */
export function parseMilliCPU(v: number | string): number {
  const s = String(v).trim();
  const m = s.match(/^([0-9]+(?:\.[0-9]+)?)(m?)$/);
  if (!m) {
    throw new SpecError(`invalid CPU limit "${v}": expected CPUs (0.5, 2) or millicpu (500m)`);
  }
  const n = m[2] ? Number(m[1]) : Number(m[1]) * 1000;
  return Math.round(n);
}

/**
 * Limits CPU as the seed (Kubernetes): millicpu to CFS quota over a 100 ms
 * period (at least 1 ms), and to shares (1024 per CPU, 2..262144).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withCPULimit } from "./options.ts";
 * console.log((await newSpec(withCPULimit("500m"))).linux?.resources?.cpu);
 * // { shares: 512, quota: 50000, period: 100000 }
 * ```
 */
export function withCPULimit(limit: number | string): SpecOption {
  return (spec) => {
    const milli = parseMilliCPU(limit);
    const shares = milli === 0 ? 2 : Math.min(262144, Math.max(2, Math.floor(milli * 1024 / 1000)));
    const cpu: { shares: number; quota?: number; period?: number } = { shares };
    if (milli > 0) {
      cpu.quota = Math.max(1000, Math.floor(milli * CPU_PERIOD / 1000));
      cpu.period = CPU_PERIOD;
    }
    resourcesOf(spec).cpu = cpu;
  };
}

/**
 * Limits the number of tasks (pids cgroup).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withPidsLimit } from "./options.ts";
 * console.log((await newSpec(withPidsLimit(64))).linux?.resources?.pids); // { limit: 64 }
 * ```
 */
export function withPidsLimit(limit: number): SpecOption {
  return (spec) => {
    if (!Number.isInteger(limit) || limit <= 0) {
      throw new SpecError(`invalid pids limit ${limit}: expected a positive integer`);
    }
    resourcesOf(spec).pids = { limit };
  };
}

/**
 * Gives the container its own user namespace with these mappings (the runtime
 * writes them; mapping more than its own id needs newuidmap or root). The
 * cgroup mount goes: it cannot be mounted from an unprivileged user namespace.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withUserNamespaceMappings } from "./options.ts";
 * const m = [{ containerID: 0, hostID: 1000, size: 1 }];
 * console.log((await newSpec(withUserNamespaceMappings(m, m))).linux?.uidMappings);
 * ```
 */
export function withUserNamespaceMappings(
  uidMappings: LinuxIDMapping[],
  gidMappings: LinuxIDMapping[] = uidMappings,
): SpecOption {
  return (spec) => {
    const l = linuxOf(spec);
    l.namespaces = (l.namespaces ?? []).filter((n) => n.type !== "user");
    l.namespaces.push({ type: "user" });
    l.uidMappings = uidMappings.map((m) => ({ ...m }));
    l.gidMappings = gidMappings.map((m) => ({ ...m }));
  };
}

/**
 * Sets the hostname (needs the uts namespace, which the defaults have).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withHostname } from "./options.ts";
 * console.log((await newSpec(withHostname("box"))).hostname); // "box"
 * ```
 */
export function withHostname(hostname: string = DEFAULT_HOSTNAME): SpecOption {
  return (spec) => {
    if (!validHostname(hostname)) {
      throw new SpecError(
        `cannot set the hostname to ${JSON.stringify(hostname)}: it must be 1 to 64 bytes ` +
          "without NUL or '/' (sethostname(2))",
      );
    }
    spec.hostname = hostname;
  };
}

/** What sethostname(2) takes (1 to 64 bytes), without NUL or '/' (as runc and podman). */
function validHostname(h: string): boolean {
  const n = new TextEncoder().encode(h).length;
  return n > 0 && n <= 64 && !/[\0/]/.test(h);
}

/**
 * Sets the capability sets (bounding, effective, permitted) to `caps`.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withCapabilities } from "./options.ts";
 * console.log((await newSpec(withCapabilities([]))).process?.capabilities?.effective); // []
 * ```
 */
export function withCapabilities(caps: string[]): SpecOption {
  return (spec) => {
    const bad = caps.find((c) => !/^CAP_[A-Z_]+$/.test(c));
    if (bad) throw new SpecError(`invalid capability "${bad}": expected a CAP_* name`);
    processOf(spec).capabilities = {
      bounding: [...caps],
      effective: [...caps],
      permitted: [...caps],
    };
  };
}

/**
 * Sets a resource limit (`RLIMIT_*`). Writing the spec refuses one above the
 * host's hard limit unless this process could raise it.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withRlimit } from "./options.ts";
 * console.log((await newSpec(withRlimit("RLIMIT_NOFILE", 256))).process?.rlimits);
 * ```
 */
export function withRlimit(type: string, soft: number, hard: number = soft): SpecOption {
  return (spec) => {
    if (!/^RLIMIT_[A-Z]+$/.test(type)) throw new SpecError(`invalid rlimit type "${type}"`);
    if (soft > hard) throw new SpecError(`invalid ${type}: soft ${soft} above hard ${hard}`);
    const p = processOf(spec);
    p.rlimits = [...(p.rlimits ?? []).filter((r) => r.type !== type), { type, soft, hard }];
  };
}
