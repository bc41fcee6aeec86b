/**
 * TypeScript types for the OCI runtime spec (`config.json`, runtime-spec
 * v1.0/1.1, Linux parts) and the defaults strata starts every container from.
 * Options that change a spec are in `options.ts`; they are plain functions
 * `(spec) => void`, as the seed's `spec.Option`.
 *
 * The defaults follow the seed (crossplane's `internal/oci/spec`, itself
 * `crun spec --rootless`) so one spec runs as root and inside a user
 * namespace alike: new pid, ipc, uts, mount, cgroup and network namespaces,
 * masked and read-only `/proc` paths, a small capability set, no new
 * privileges, and no rlimit above the host's. `newSpec` adds the default
 * seccomp filter once the options have settled the capabilities.
 *
 * @module
 */

import { throwDeferred } from "./deferred.ts";
import { canRaiseRlimits, hostRlimits } from "./host.ts";
import { finishSeccomp, type LinuxSeccomp } from "./seccomp.ts";

/** The runtime-spec version strata writes. runc 1.1 and crun 1.8 accept it. */
export const OCI_VERSION = "1.0.2";

/** The PATH a container gets when its image sets none (Docker's). */
export const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The user a container process runs as. */
export interface SpecUser {
  /** User id, in the container's user namespace. */
  uid: number;
  /** Primary group id. */
  gid: number;
  /** File mode creation mask. */
  umask?: number;
  /** Supplementary group ids. */
  additionalGids?: number[];
  /** User name, informational. */
  username?: string;
}

/** Capability sets of the container process, `CAP_*` names. */
export interface LinuxCapabilities {
  /** Bounding set. */
  bounding?: string[];
  /** Effective set. */
  effective?: string[];
  /** Inheritable set. */
  inheritable?: string[];
  /** Permitted set. */
  permitted?: string[];
  /** Ambient set. */
  ambient?: string[];
}

/** A POSIX resource limit (`setrlimit`). */
export interface POSIXRlimit {
  /** `RLIMIT_*` name. */
  type: string;
  /** Hard limit. */
  hard: number;
  /** Soft limit. */
  soft: number;
}

/** The container process. */
export interface SpecProcess {
  /** Whether a pseudo-terminal is attached. */
  terminal?: boolean;
  /** Console size, with `terminal`. */
  consoleSize?: { height: number; width: number };
  /** The user to run as. */
  user: SpecUser;
  /** argv; `args[0]` is looked up in the container's PATH. */
  args?: string[];
  /** Environment, `KEY=value`. */
  env?: string[];
  /** Working directory, absolute in the container. */
  cwd: string;
  /** Capabilities. */
  capabilities?: LinuxCapabilities;
  /** Resource limits. */
  rlimits?: POSIXRlimit[];
  /** Sets `PR_SET_NO_NEW_PRIVS`. */
  noNewPrivileges?: boolean;
  /** AppArmor profile. */
  apparmorProfile?: string;
  /** OOM score adjustment. */
  oomScoreAdj?: number;
  /** SELinux label. */
  selinuxLabel?: string;
}

/** The container's root filesystem. */
export interface SpecRoot {
  /** Path to the rootfs, absolute or relative to the bundle. */
  path: string;
  /** Mount the rootfs read-only. */
  readonly?: boolean;
}

/** A mount in the container. */
export interface SpecMount {
  /** Absolute path in the container. */
  destination: string;
  /** Filesystem type (`proc`, `tmpfs`, `bind`, ...). */
  type?: string;
  /** Device, filesystem name or host path for binds. */
  source?: string;
  /** Mount options (`ro`, `rbind`, `nosuid`, `size=...`). */
  options?: string[];
  /** Id-mapped mount uid mappings. */
  uidMappings?: LinuxIDMapping[];
  /** Id-mapped mount gid mappings. */
  gidMappings?: LinuxIDMapping[];
}

/** Namespace kinds. */
export type LinuxNamespaceType =
  | "pid"
  | "network"
  | "mount"
  | "ipc"
  | "uts"
  | "user"
  | "cgroup"
  | "time";

/** A namespace the container gets (new, or joined when `path` is set). */
export interface LinuxNamespace {
  /** Kind. */
  type: LinuxNamespaceType;
  /** Existing namespace to join. */
  path?: string;
}

/** A user namespace id mapping. */
export interface LinuxIDMapping {
  /** First id in the container. */
  containerID: number;
  /** First id on the host (in the runtime's namespace). */
  hostID: number;
  /** Number of ids. */
  size: number;
}

/** A device cgroup rule. */
export interface LinuxDeviceCgroup {
  /** Allow or deny. */
  allow: boolean;
  /** `a`, `b` or `c`. */
  type?: string;
  /** Major number. */
  major?: number;
  /** Minor number. */
  minor?: number;
  /** `r`, `w`, `m` combination. */
  access?: string;
}

/** Memory cgroup settings, bytes. */
export interface LinuxMemory {
  /** Memory limit. */
  limit?: number;
  /** Soft limit. */
  reservation?: number;
  /** Memory plus swap limit. */
  swap?: number;
  /** Swappiness 0-100. */
  swappiness?: number;
  /** Disable the OOM killer. */
  disableOOMKiller?: boolean;
}

/** CPU cgroup settings. */
export interface LinuxCPU {
  /** Relative weight (cgroup v1 shares). */
  shares?: number;
  /** CFS quota, microseconds per period. */
  quota?: number;
  /** CFS period, microseconds. */
  period?: number;
  /** CPUs to run on, for example `0-1`. */
  cpus?: string;
  /** Memory nodes. */
  mems?: string;
}

/** Pids cgroup settings. */
export interface LinuxPids {
  /** Maximum number of tasks. */
  limit: number;
}

/** Cgroup resource settings. */
export interface LinuxResources {
  /** Device rules. */
  devices?: LinuxDeviceCgroup[];
  /** Memory. */
  memory?: LinuxMemory;
  /** CPU. */
  cpu?: LinuxCPU;
  /** Pids. */
  pids?: LinuxPids;
  /** Other controllers, passed through. */
  [other: string]: unknown;
}

/** A device node created in the container. */
export interface LinuxDevice {
  /** Path in the container. */
  path: string;
  /** `c`, `b`, `u` or `p`. */
  type: string;
  /** Major number. */
  major?: number;
  /** Minor number. */
  minor?: number;
  /** Mode. */
  fileMode?: number;
  /** Owner uid. */
  uid?: number;
  /** Owner gid. */
  gid?: number;
}

/** Linux-specific configuration. */
export interface SpecLinux {
  /** User namespace uid mappings. */
  uidMappings?: LinuxIDMapping[];
  /** User namespace gid mappings. */
  gidMappings?: LinuxIDMapping[];
  /** Kernel parameters. */
  sysctl?: Record<string, string>;
  /** Cgroup settings. */
  resources?: LinuxResources;
  /** Cgroup path. */
  cgroupsPath?: string;
  /** Namespaces. */
  namespaces?: LinuxNamespace[];
  /** Device nodes. */
  devices?: LinuxDevice[];
  /**
   * Seccomp filter. `newSpec` sets it from the built-in default profile
   * unless an option chose another profile or none (`security.ts`).
   */
  seccomp?: LinuxSeccomp;
  /** Rootfs mount propagation. */
  rootfsPropagation?: string;
  /** Paths masked (made unreadable) in the container. */
  maskedPaths?: string[];
  /** Paths made read-only in the container. */
  readonlyPaths?: string[];
  /** SELinux mount label. */
  mountLabel?: string;
}

/** An OCI runtime spec: the `config.json` of a bundle. */
export interface Spec {
  /** Runtime-spec version. */
  ociVersion: string;
  /** The container process. */
  process?: SpecProcess;
  /** The root filesystem. */
  root?: SpecRoot;
  /** Hostname in the container's UTS namespace. */
  hostname?: string;
  /** Domain name. */
  domainname?: string;
  /** Mounts, in order. */
  mounts?: SpecMount[];
  /** Hooks, passed through. */
  hooks?: Record<string, unknown>;
  /** Arbitrary metadata. */
  annotations?: Record<string, string>;
  /** Linux configuration. */
  linux?: SpecLinux;
}

/**
 * Changes a spec. Options are applied in order; a later one wins. As the
 * seed's `spec.Option`, but a plain function that may be async (reading the
 * image's `/etc/passwd`).
 */
export type SpecOption = (spec: Spec) => void | Promise<void>;

/**
 * The capabilities a container process gets by default: podman's default set
 * (Docker's without NET_RAW, MKNOD and AUDIT_WRITE). Enough for package
 * managers (chown, setuid to a service user) and nothing that reaches past the
 * container.
 */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_NET_BIND_SERVICE",
  "CAP_SETFCAP",
  "CAP_SETGID",
  "CAP_SETPCAP",
  "CAP_SETUID",
  "CAP_SYS_CHROOT",
];

/** The open files limit a container gets, lowered to the host's hard limit when that is lower. */
export const DEFAULT_NOFILE = 1024;

/** The hostname a container gets unless its image or the caller sets one. */
export const DEFAULT_HOSTNAME = "strata";

/**
 * The default `/sys` mount: a fresh read-only sysfs. It works as root and in a
 * user namespace alike because the container gets its own network namespace
 * (sysfs may only be mounted by the owner of the network namespace); with the
 * host's network it is replaced by a read-only bind of the host's `/sys`.
 */
export const SYSFS_MOUNT: SpecMount = {
  destination: "/sys",
  type: "sysfs",
  source: "sysfs",
  options: ["nosuid", "noexec", "nodev", "ro"],
};

/**
 * Builds the default spec: no process args yet (an image or the caller sets
 * them), root user, `/` as working directory, the rootfs at `rootfs`. It has
 * no seccomp filter yet: {@linkcode newSpec} adds the default one once the
 * options have settled the capabilities.
 *
 * `/dev/pts` has no `gid=5`: group 5 is not mapped in a user namespace that
 * maps only root, and the mount would fail with EINVAL there.
 *
 * @example Usage
 * ```ts
 * import { defaultSpec } from "./spec.ts";
 * const spec = defaultSpec();
 * console.log(spec.linux?.namespaces?.map((n) => n.type));
 * ```
 */
export function defaultSpec(): Spec {
  return {
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [],
      env: [DEFAULT_PATH],
      cwd: "/",
      capabilities: {
        bounding: [...DEFAULT_CAPABILITIES],
        effective: [...DEFAULT_CAPABILITIES],
        permitted: [...DEFAULT_CAPABILITIES],
      },
      rlimits: [defaultNofile()],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: false },
    hostname: DEFAULT_HOSTNAME,
    mounts: [
      {
        destination: "/proc",
        type: "proc",
        source: "proc",
        options: ["nosuid", "noexec", "nodev"],
      },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      {
        destination: "/dev/mqueue",
        type: "mqueue",
        source: "mqueue",
        options: ["nosuid", "noexec", "nodev"],
      },
      { ...SYSFS_MOUNT, options: [...SYSFS_MOUNT.options!] },
      {
        destination: "/sys/fs/cgroup",
        type: "cgroup",
        source: "cgroup",
        options: ["nosuid", "noexec", "nodev", "relatime", "ro"],
      },
    ],
    linux: {
      namespaces: [
        { type: "pid" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
        { type: "cgroup" },
        { type: "network" },
      ],
      resources: { devices: [{ allow: false, access: "rwm" }] },
      maskedPaths: [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/fs/selinux",
        "/sys/dev/block",
      ],
      readonlyPaths: [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
      ],
    },
  };
}

/** RLIMIT_NOFILE at {@linkcode DEFAULT_NOFILE}, never above what this process has. */
function defaultNofile(): POSIXRlimit {
  let hard = DEFAULT_NOFILE;
  try {
    const host = hostRlimits().RLIMIT_NOFILE;
    if (host && !canRaiseRlimits()) hard = Math.min(hard, host.hard);
  } catch {
    // No /proc/self/limits: keep the default, the runtime reports a failure.
  }
  return { type: "RLIMIT_NOFILE", hard, soft: hard };
}

/**
 * A spec option failed; `cause` holds the underlying error.
 *
 * @example Usage
 * ```ts
 * import { SpecError } from "./spec.ts";
 * console.log(new SpecError("cannot apply spec option: bad memory limit \"12q\"").message);
 * ```
 */
export class SpecError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SpecError";
  }
}

/**
 * The image has neither Entrypoint nor Cmd, and no command was given.
 *
 * @example Usage
 * ```ts
 * import { NoCommandError } from "./spec.ts";
 * console.log(new NoCommandError("docker.io/library/scratch").message);
 * ```
 */
export class NoCommandError extends SpecError {
  /** The image (or `"the spec"`) that had no command. */
  readonly image: string;
  /** Creates the error for `image`. */
  constructor(image = "the image", options?: ErrorOptions) {
    super(
      `cannot create the container process: ${image} specifies neither Entrypoint nor Cmd, ` +
        `and no command was given`,
      options,
    );
    this.name = "NoCommandError";
    this.image = image;
  }
}

/**
 * An rlimit above what this host lets a runtime set (raising a hard limit needs
 * CAP_SYS_RESOURCE in the initial user namespace).
 *
 * @example Usage
 * ```ts
 * import { RlimitError } from "./spec.ts";
 * console.log(new RlimitError("RLIMIT_NOFILE", 1048576, 20000).message);
 * ```
 */
export class RlimitError extends SpecError {
  /** Creates the error. */
  constructor(
    readonly type: string,
    readonly requested: number,
    readonly hostHard: number,
    options?: ErrorOptions,
  ) {
    super(
      `cannot set ${type} to ${requested}: this process's hard limit is ${hostHard} and ` +
        `raising it needs CAP_SYS_RESOURCE, which it lacks`,
      options,
    );
    this.name = "RlimitError";
  }
}

/**
 * Builds a spec from the defaults and `options`, applied in order, then sets
 * its seccomp filter: the built-in default profile translated for the final
 * capability set, unless an option chose another profile or none
 * (`withSeccompProfile`, `withoutSeccomp`, `withPrivileged`).
 *
 * @throws the error of an option that left it for a later one to make moot
 *   (the image's `User` that cannot be resolved, when no `withUser` follows).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * const spec = await newSpec((s) => { s.hostname = "box"; });
 * console.log(spec.hostname); // "box"
 * ```
 */
export async function newSpec(...options: SpecOption[]): Promise<Spec> {
  const spec = defaultSpec();
  for (const o of options) await o(spec);
  throwDeferred(spec);
  finishSeccomp(spec);
  return spec;
}

/**
 * Returns `spec.process`, creating a default one when missing (for options).
 *
 * @example Usage
 * ```ts
 * import { processOf } from "./spec.ts";
 * const spec = { ociVersion: "1.0.2" };
 * processOf(spec).cwd = "/srv";
 * ```
 */
export function processOf(spec: Spec): SpecProcess {
  return spec.process ??= { user: { uid: 0, gid: 0 }, cwd: "/" };
}

/**
 * Returns `spec.linux`, creating it when missing (for options).
 *
 * @example Usage
 * ```ts
 * import { linuxOf } from "./spec.ts";
 * const spec = { ociVersion: "1.0.2" };
 * linuxOf(spec).namespaces = [{ type: "pid" }];
 * ```
 */
export function linuxOf(spec: Spec): SpecLinux {
  return spec.linux ??= {};
}

/**
 * Returns `spec.linux.resources`, creating it when missing (for options).
 *
 * @example Usage
 * ```ts
 * import { resourcesOf } from "./spec.ts";
 * const spec = { ociVersion: "1.0.2" };
 * resourcesOf(spec).pids = { limit: 64 };
 * ```
 */
export function resourcesOf(spec: Spec): LinuxResources {
  return linuxOf(spec).resources ??= {};
}
