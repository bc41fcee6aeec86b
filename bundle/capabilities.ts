/**
 * Linux capability names: the full list the kernel knows (capabilities(7)),
 * parsing as docker and podman accept them on the command line (`chown`,
 * `CAP_CHOWN`, `Cap_Chown`, `ALL`), and the set a privileged container gets
 * (every capability in this process's bounding set).
 *
 * @module
 */

import { readProcText } from "../sys/proc.ts";

/**
 * Every capability Linux defines, in kernel order (bit 0 first), as of
 * Linux 5.9 (`CAP_CHECKPOINT_RESTORE`, 40); unchanged through 6.x.
 */
export const ALL_CAPABILITIES: readonly string[] = Object.freeze([
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETPCAP",
  "CAP_LINUX_IMMUTABLE",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_BROADCAST",
  "CAP_NET_ADMIN",
  "CAP_NET_RAW",
  "CAP_IPC_LOCK",
  "CAP_IPC_OWNER",
  "CAP_SYS_MODULE",
  "CAP_SYS_RAWIO",
  "CAP_SYS_CHROOT",
  "CAP_SYS_PTRACE",
  "CAP_SYS_PACCT",
  "CAP_SYS_ADMIN",
  "CAP_SYS_BOOT",
  "CAP_SYS_NICE",
  "CAP_SYS_RESOURCE",
  "CAP_SYS_TIME",
  "CAP_SYS_TTY_CONFIG",
  "CAP_MKNOD",
  "CAP_LEASE",
  "CAP_AUDIT_WRITE",
  "CAP_AUDIT_CONTROL",
  "CAP_SETFCAP",
  "CAP_MAC_OVERRIDE",
  "CAP_MAC_ADMIN",
  "CAP_SYSLOG",
  "CAP_WAKE_ALARM",
  "CAP_BLOCK_SUSPEND",
  "CAP_AUDIT_READ",
  "CAP_PERFMON",
  "CAP_BPF",
  "CAP_CHECKPOINT_RESTORE",
]);

const KNOWN = new Set(ALL_CAPABILITIES);

/**
 * Tells whether `name` is a capability Linux defines (exact `CAP_*` spelling).
 *
 * @example Usage
 * ```ts
 * import { isCapability } from "./capabilities.ts";
 * console.log(isCapability("CAP_SYS_ADMIN"), isCapability("CAP_SYS_ADMN")); // true false
 * ```
 */
export function isCapability(name: string): boolean {
  return KNOWN.has(name);
}

/**
 * Parses a capability as docker and podman take it: with or without the
 * `CAP_` prefix, in any case. Returns `"ALL"` for `all`, the `CAP_*` name
 * otherwise, or undefined when it names no capability.
 *
 * @example Usage
 * ```ts
 * import { parseCapability } from "./capabilities.ts";
 * console.log(parseCapability("sys_admin"), parseCapability("CAP_NET_RAW"), parseCapability("all"));
 * // "CAP_SYS_ADMIN" "CAP_NET_RAW" "ALL"
 * ```
 */
export function parseCapability(value: string): string | undefined {
  const v = value.trim().toUpperCase();
  if (v === "ALL") return "ALL";
  const name = v.startsWith("CAP_") ? v : `CAP_${v}`;
  return KNOWN.has(name) ? name : undefined;
}

let hostAll: readonly string[] | undefined;

/**
 * Every capability this process can hand a container: those of its bounding
 * set (`CapBnd` in `/proc/self/status`), which is what a privileged
 * container or `--cap-add ALL` gets, as podman gives it (a runtime cannot
 * grant a capability outside its own bounding set: runc fails with "unable
 * to apply caps"). Without `/proc`, every capability up to
 * `/proc/sys/kernel/cap_last_cap`, else all of {@linkcode ALL_CAPABILITIES}.
 *
 * @example Usage
 * ```ts ignore
 * import { hostCapabilities } from "./capabilities.ts";
 * console.log(hostCapabilities().length); // 41 for root on a stock kernel
 * ```
 */
export function hostCapabilities(): readonly string[] {
  if (hostAll) return hostAll;
  let mask = (1n << BigInt(ALL_CAPABILITIES.length)) - 1n;
  try {
    const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readProcText("/proc/self/status"));
    if (m) mask &= BigInt(`0x${m[1]}`);
  } catch {
    try {
      const n = Number(readProcText("/proc/sys/kernel/cap_last_cap").trim());
      if (Number.isInteger(n) && n >= 0) mask &= (1n << BigInt(n + 1)) - 1n;
    } catch {
      // neither readable: the whole list; a runtime ignores what the kernel lacks
    }
  }
  return hostAll = Object.freeze(ALL_CAPABILITIES.filter((_, i) => (mask >> BigInt(i)) & 1n));
}
