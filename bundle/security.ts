/**
 * Spec options that confine a container, or loosen its confinement, as
 * docker's and podman's `--security-opt`, `--cap-add`, `--cap-drop` and
 * `--privileged` do: the seccomp profile (strata's built-in default unless one
 * of these chooses another or none), capabilities, no-new-privileges, and the
 * privileged mode.
 *
 * The seccomp profile is translated when `newSpec` finishes, after every
 * option, so a capability added by a later option still opens the calls the
 * profile gates on it (as in docker, `--cap-add SYS_ADMIN` lets `mount` and
 * `unshare` through).
 *
 * @module
 */

import { hostCapabilities, parseCapability } from "./capabilities.ts";
import { inUserNamespace } from "./host.ts";
import { chooseSeccomp, SeccompProfile } from "./seccomp.ts";
import { loadSeccompProfile, parseSeccompProfile } from "./seccomp_profile.ts";
import {
  type LinuxCapabilities,
  type LinuxDevice,
  linuxOf,
  processOf,
  type Spec,
  SpecError,
  type SpecOption,
} from "./spec.ts";
import { lstatSync, readDirSync } from "../sys/files.ts";

/**
 * Gives the container this seccomp profile instead of the built-in default:
 * a {@linkcode SeccompProfile}, a profile in docker's and podman's JSON
 * format (as parsed JSON), or the path of such a file. A path is read and
 * validated when this function is called, so a bad file fails before any
 * container is made.
 *
 * @throws {SeccompProfileError} for a file that cannot be read or a profile
 *   that is not valid (naming the file and the field).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withSeccompProfile } from "./security.ts";
 * const spec = await newSpec(withSeccompProfile({
 *   defaultAction: "SCMP_ACT_ALLOW",
 *   syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 122 }],
 * }));
 * console.log(spec.linux?.seccomp?.defaultAction); // "SCMP_ACT_ALLOW"
 * ```
 */
export function withSeccompProfile(profile: SeccompProfile | string | object): SpecOption {
  const p = profile instanceof SeccompProfile
    ? profile
    : typeof profile === "string"
    ? loadSeccompProfile(profile)
    : parseSeccompProfile(profile);
  return (spec) => chooseSeccomp(spec, p);
}

/**
 * Runs the container without a seccomp filter (`--security-opt
 * seccomp=unconfined`).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withoutSeccomp } from "./security.ts";
 * console.log((await newSpec(withoutSeccomp())).linux?.seccomp); // undefined
 * ```
 */
export function withoutSeccomp(): SpecOption {
  return (spec) => chooseSeccomp(spec, "unconfined");
}

/**
 * Gives the container the built-in default profile (what it gets anyway):
 * undoes an earlier {@linkcode withSeccompProfile}, {@linkcode withoutSeccomp}
 * or {@linkcode withPrivileged}'s unconfined filter.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withDefaultSeccomp, withoutSeccomp } from "./security.ts";
 * const spec = await newSpec(withoutSeccomp(), withDefaultSeccomp());
 * console.log(spec.linux?.seccomp?.defaultAction); // "SCMP_ACT_ERRNO"
 * ```
 */
export function withDefaultSeccomp(): SpecOption {
  return (spec) => chooseSeccomp(spec, "default");
}

/** Parses capability names for an option; `what` names the option in errors. */
function capabilityList(values: readonly string[], what: string): string[] {
  return values.map((v) => {
    const c = parseCapability(v);
    if (!c) {
      throw new SpecError(
        `${what}: unknown capability "${v}" (a name from capabilities(7), such as NET_RAW ` +
          `or CAP_SYS_ADMIN, or ALL)`,
      );
    }
    return c;
  });
}

const SETS = ["bounding", "effective", "permitted", "inheritable", "ambient"] as const;

function capsOf(spec: Spec): LinuxCapabilities {
  return processOf(spec).capabilities ??= { bounding: [], effective: [], permitted: [] };
}

/**
 * Adds capabilities to the container process (bounding, effective and
 * permitted sets), as `--cap-add`: names with or without `CAP_`, in any
 * case; `ALL` adds every capability of this process's bounding set. A capability the
 * default seccomp profile gates on opens its calls (`SYS_ADMIN`: mount,
 * unshare, setns; `SYS_PTRACE`: kcmp, process_vm_readv, ...).
 *
 * @throws {SpecError} for a name that is no capability.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withCapAdd } from "./security.ts";
 * const spec = await newSpec(withCapAdd("sys_admin"));
 * console.log(spec.process?.capabilities?.bounding?.includes("CAP_SYS_ADMIN")); // true
 * ```
 */
export function withCapAdd(...caps: string[]): SpecOption {
  const list = capabilityList(caps, "cannot add capabilities");
  const add = list.includes("ALL") ? [...hostCapabilities()] : list;
  return (spec) => {
    const c = capsOf(spec);
    for (const set of ["bounding", "effective", "permitted"] as const) {
      const have = c[set] ??= [];
      for (const cap of add) if (!have.includes(cap)) have.push(cap);
    }
  };
}

/**
 * Removes capabilities from every set of the container process, as
 * `--cap-drop`; `ALL` removes them all.
 *
 * @throws {SpecError} for a name that is no capability.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withCapDrop } from "./security.ts";
 * const spec = await newSpec(withCapDrop("CAP_CHOWN"));
 * console.log(spec.process?.capabilities?.effective?.includes("CAP_CHOWN")); // false
 * ```
 */
export function withCapDrop(...caps: string[]): SpecOption {
  const list = capabilityList(caps, "cannot drop capabilities");
  const all = list.includes("ALL");
  return (spec) => {
    const c = processOf(spec).capabilities;
    if (!c) return;
    for (const set of SETS) {
      const have = c[set];
      if (have) c[set] = all ? [] : have.filter((x) => !list.includes(x));
    }
  };
}

/**
 * Sets `no_new_privs` for the container process (the default: setuid
 * programs and file capabilities cannot raise its privileges), or clears it
 * (`--security-opt no-new-privileges=false`).
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withNoNewPrivileges } from "./security.ts";
 * console.log((await newSpec(withNoNewPrivileges(false))).process?.noNewPrivileges); // false
 * ```
 */
export function withNoNewPrivileges(noNewPrivileges = true): SpecOption {
  return (spec) => {
    processOf(spec).noNewPrivileges = noNewPrivileges;
  };
}

/** Directories of `/dev` whose entries are not the host's devices (runc's and podman's list). */
const NOT_DEVICES = new Set(["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts"]);

/**
 * The host's device nodes below `/dev` (character and block devices and
 * FIFOs; not symlinks, not `/dev/console`, not what `pts`, `shm`, `fd` and
 * `mqueue` hold), as runc and podman list them for a privileged container.
 *
 * @example Usage
 * ```ts ignore
 * import { hostDevices } from "./security.ts";
 * console.log(hostDevices().map((d) => d.path));
 * ```
 */
export function hostDevices(dir = "/dev"): LinuxDevice[] {
  const out: LinuxDevice[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...readDirSync(dir)];
  } catch {
    return out; // unreadable here (a user namespace): no devices from it
  }
  for (const e of entries.sort((a, b) => a.name < b.name ? -1 : 1)) {
    const path = `${dir}/${e.name}`;
    if (e.isSymlink || (dir === "/dev" && e.name === "console")) continue;
    if (e.isDirectory) {
      if (!NOT_DEVICES.has(e.name)) out.push(...hostDevices(path));
      continue;
    }
    let st: Deno.FileInfo;
    try {
      st = lstatSync(path);
    } catch {
      continue; // gone since
    }
    const type = st.isCharDevice ? "c" : st.isBlockDevice ? "b" : st.isFifo ? "p" : undefined;
    if (!type) continue;
    // glibc's major() and minor() of a dev_t.
    const dev = BigInt(st.rdev ?? 0);
    const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
    const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
    out.push({
      path,
      type,
      ...(type === "p" ? {} : { major, minor }),
      fileMode: (st.mode ?? 0o600) & 0o7777,
      uid: st.uid ?? 0,
      gid: st.gid ?? 0,
    });
  }
  return out;
}

/** True for `/dev/tty` and the virtual consoles `/dev/tty<N>`. */
function isConsole(path: string): boolean {
  return path === "/dev/tty" || /^\/dev\/tty[0-9]+$/.test(path);
}

/**
 * Makes the container privileged, as `--privileged` does in podman: every
 * capability of this process's bounding set, no seccomp filter (a later
 * {@linkcode withSeccompProfile} still applies one, as podman honours an
 * explicit profile), no masked or read-only paths, `/sys` and the cgroup
 * filesystem writable, and the host's devices: as root created in the
 * container with the device cgroup opened to all; in a user namespace, where
 * device nodes cannot be made, bind-mounted (but not `/dev/ptmx`, `/dev/tty`
 * and the virtual consoles, as podman). No-new-privileges stays as it was.
 *
 * @example Usage
 * ```ts ignore
 * import { newSpec } from "./spec.ts";
 * import { withPrivileged } from "./security.ts";
 * const spec = await newSpec(withPrivileged());
 * console.log(spec.linux?.seccomp, spec.process?.capabilities?.bounding?.length); // undefined 41
 * ```
 */
export function withPrivileged(): SpecOption {
  return (spec) => {
    const all = hostCapabilities();
    const c = capsOf(spec);
    c.bounding = [...all];
    c.effective = [...all];
    c.permitted = [...all];
    chooseSeccomp(spec, "unconfined");
    const l = linuxOf(spec);
    delete l.maskedPaths;
    delete l.readonlyPaths;
    spec.mounts = (spec.mounts ?? []).map((m) =>
      (m.destination === "/sys" || m.destination === "/sys/fs/cgroup") && m.options
        ? { ...m, options: m.options.map((o) => o === "ro" ? "rw" : o) }
        : m
    );
    const devices = hostDevices();
    if (inUserNamespace()) {
      const taken = new Set(spec.mounts.map((m) => m.destination));
      for (const d of devices) {
        if (d.path === "/dev/ptmx" || isConsole(d.path) || taken.has(d.path)) continue;
        spec.mounts.push({
          destination: d.path,
          type: "bind",
          source: d.path,
          options: ["rbind", "nosuid", "noexec", "rw"],
        });
      }
      if (l.resources) delete l.resources.devices;
    } else {
      const have = new Set((l.devices ?? []).map((d) => d.path));
      l.devices = [...(l.devices ?? []), ...devices.filter((d) => !have.has(d.path))];
      (l.resources ??= {}).devices = [{ allow: true, access: "rwm" }];
    }
  };
}
