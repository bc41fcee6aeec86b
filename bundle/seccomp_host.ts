/**
 * Whether seccomp filters are enforced here: by the kernel (filter mode,
 * the actions it has, its build configuration) and by the OCI runtime
 * (runc links libseccomp, which compiles the profile into the filter).
 * `strata supported --why` reports it (the spec writer asks the kernel
 * alone, with `sys/abi.ts` `kernelHasSeccompFilter`).
 *
 * @module
 */

import { readProcText } from "../sys/proc.ts";
import { osRelease } from "../sys/process.ts";
import { openFile, readTextFile } from "../sys/files.ts";
import { commandOutput } from "../sys/spawn.ts";

/** What {@linkcode seccompSupport} found. */
export interface SeccompSupport {
  /** The kernel runs seccomp filters. */
  kernel: boolean;
  /** The actions the kernel has (`actions_avail`), when it says. */
  kernelActions: string[];
  /** `Seccomp:` of this process (0 none, 1 strict, 2 filter), when present. */
  ownMode?: number;
  /** `CONFIG_SECCOMP` and `CONFIG_SECCOMP_FILTER` from the kernel's configuration, when found. */
  config: Record<string, string>;
  /** Where the configuration was read, when it was. */
  configSource?: string;
  /** The runtime asked (its path), when one was. */
  runtime?: string;
  /** Its version line (`runc version 1.1.5+ds1`). */
  runtimeVersion?: string;
  /** The libseccomp version the runtime reports (runc does); undefined when it reports none. */
  libseccomp?: string;
  /** From `runc features`, when the runtime has that command: seccomp enabled, actions, architectures. */
  features?: { enabled: boolean; actions: string[]; archs: string[] };
  /** True when both the kernel and the runtime enforce a profile here. */
  enforced: boolean;
  /** One line saying why not, when not. */
  reason: string;
}

async function kernelConfig(): Promise<{ config: Record<string, string>; source?: string }> {
  const wanted = /^(CONFIG_SECCOMP|CONFIG_SECCOMP_FILTER)=(.*)$/gm;
  const pick = (text: string) => {
    const config: Record<string, string> = {};
    for (const m of text.matchAll(wanted)) config[m[1]] = m[2];
    return config;
  };
  let release = "";
  try {
    release = osRelease();
  } catch {
    try {
      release = readProcText("/proc/sys/kernel/osrelease").trim();
    } catch {
      // unknown release: only /proc/config.gz can say
    }
  }
  if (release) {
    try {
      const path = `/boot/config-${release}`;
      return { config: pick(await readTextFile(path)), source: path };
    } catch {
      // not installed there
    }
  }
  try {
    const file = await openFile("/proc/config.gz");
    const text = await new Response(file.readable.pipeThrough(new DecompressionStream("gzip")))
      .text();
    return { config: pick(text), source: "/proc/config.gz" };
  } catch {
    return { config: {} };
  }
}

/**
 * Finds out whether seccomp filters are enforced here, for the kernel and
 * for `runtime` (a runc-compatible runtime's path; none: the kernel alone):
 * `actions_avail`, this process's `Seccomp:` field, `CONFIG_SECCOMP*` (from
 * `/boot/config-<release>` or `/proc/config.gz`), `runtime --version` (runc
 * names the libseccomp it was built with) and `runtime features`.
 *
 * @example Usage
 * ```ts ignore
 * import { seccompSupport } from "./seccomp_host.ts";
 * const s = await seccompSupport("/usr/sbin/runc");
 * console.log(s.enforced, s.libseccomp); // true "2.5.4"
 * ```
 */
export async function seccompSupport(runtime?: string): Promise<SeccompSupport> {
  let kernelActions: string[] = [];
  try {
    kernelActions = readProcText("/proc/sys/kernel/seccomp/actions_avail").trim().split(/\s+/);
  } catch {
    // before Linux 4.14, or no CONFIG_SECCOMP_FILTER
  }
  let ownMode: number | undefined;
  try {
    const m = /^Seccomp:\s*(\d+)/m.exec(readProcText("/proc/self/status"));
    if (m) ownMode = Number(m[1]);
  } catch {
    // unreadable
  }
  const { config, source } = await kernelConfig();
  const kernel = kernelActions.length > 0 ||
    (ownMode !== undefined && config.CONFIG_SECCOMP_FILTER !== "n");
  const out: SeccompSupport = {
    kernel,
    kernelActions,
    ownMode,
    config,
    configSource: source,
    enforced: false,
    reason: "",
  };
  if (!kernel) {
    out.reason = "the kernel has no seccomp filter mode (CONFIG_SECCOMP_FILTER)";
    return out;
  }
  if (!runtime) {
    out.reason = "no OCI runtime to ask";
    return out;
  }
  out.runtime = runtime;
  const run = async (args: string[]) => {
    try {
      const r = await commandOutput(runtime, {
        args,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      });
      return r.success ? new TextDecoder().decode(r.stdout) : undefined;
    } catch {
      return undefined;
    }
  };
  const version = await run(["--version"]);
  if (version === undefined) {
    out.reason = `${runtime} --version failed`;
    return out;
  }
  out.runtimeVersion = version.split("\n")[0].trim();
  out.libseccomp = /^libseccomp:\s*(\S+)/m.exec(version)?.[1];
  const features = await run(["features"]);
  if (features !== undefined) {
    try {
      const f = JSON.parse(features) as {
        linux?: { seccomp?: { enabled?: boolean; actions?: string[]; archs?: string[] } };
      };
      const s = f.linux?.seccomp;
      if (s) {
        out.features = { enabled: !!s.enabled, actions: s.actions ?? [], archs: s.archs ?? [] };
      }
    } catch {
      // not runc's JSON: say nothing of it
    }
  }
  // runc prints "libseccomp: 2.5.4"; crun lists "+SECCOMP" among its build features.
  const runtimeHas = out.features
    ? out.features.enabled
    : out.libseccomp !== undefined || /(^|\s)\+SECCOMP(\s|$)/m.test(version);
  out.enforced = runtimeHas;
  out.reason = runtimeHas
    ? "the kernel runs seccomp filters and the runtime compiles profiles with libseccomp"
    : `${out.runtimeVersion} was built without seccomp support (no libseccomp)`;
  return out;
}
