/**
 * Seccomp profiles in the format docker and podman read (`defaultAction`,
 * `archMap`, `syscalls[].names` with `includes`/`excludes` by capability,
 * architecture and kernel version, `errnoRet`, ...), validated strictly and
 * translated into the OCI runtime spec's `linux.seccomp` for one container:
 * its bounding capabilities, this machine's architecture and its kernel. The
 * runtime (runc, through libseccomp) compiles that into the BPF filter.
 *
 * The built-in default profile is data, `seccomp_default.json` beside this
 * file (an allowlist: anything not named fails with EPERM); a profile from
 * JSON is validated by `seccomp_profile.ts`, which a run with the built-in
 * profile does not load. `newSpec` applies
 * it to every spec unless an option chose another profile or none; see
 * `security.ts` for the options and the README (Confinement) for how it
 * differs from docker's.
 *
 * Translation follows docker and podman: a rule is dropped when an `excludes`
 * condition holds (the native architecture is listed, any listed capability is
 * in the bounding set, the kernel is at least `minKernel`) or an `includes`
 * condition fails (the native architecture is not listed, a listed capability
 * is missing, the kernel is older than `minKernel`); `archMap` contributes the
 * entry of the native architecture and its companions (x86-64 brings x86 and
 * x32, aarch64 brings arm), but not x32 on a kernel that does not run x32
 * calls (see {@linkcode SeccompContext.x32}).
 *
 * @module
 */

import type { Spec } from "./spec.ts";
import { readProcText } from "../sys/proc.ts";
import { kernelRunsX32 } from "../sys/abi.ts";
import defaultProfileData from "./seccomp_default.json" with { type: "json" };
import { osRelease } from "../sys/process.ts";

/** A seccomp action, as libseccomp names it. */
export type SeccompAction =
  | "SCMP_ACT_KILL"
  | "SCMP_ACT_KILL_PROCESS"
  | "SCMP_ACT_KILL_THREAD"
  | "SCMP_ACT_TRAP"
  | "SCMP_ACT_ERRNO"
  | "SCMP_ACT_TRACE"
  | "SCMP_ACT_ALLOW"
  | "SCMP_ACT_LOG"
  | "SCMP_ACT_NOTIFY";

/** A comparison of a system call argument, as libseccomp names it. */
export type SeccompOperator =
  | "SCMP_CMP_NE"
  | "SCMP_CMP_LT"
  | "SCMP_CMP_LE"
  | "SCMP_CMP_EQ"
  | "SCMP_CMP_GE"
  | "SCMP_CMP_GT"
  | "SCMP_CMP_MASKED_EQ";

/**
 * One argument comparison of the runtime spec. `value` and `valueTwo` are
 * unsigned 64-bit: a `bigint` carries what a `number` cannot hold exactly
 * (above 2^53), and is written to `config.json` as the exact integer.
 */
export interface LinuxSeccompArg {
  /** Argument index, 0 to 5. */
  index: number;
  /** The value compared (the mask for `SCMP_CMP_MASKED_EQ`). */
  value: number | bigint;
  /** The second value (what the masked argument must equal for `SCMP_CMP_MASKED_EQ`). */
  valueTwo?: number | bigint;
  /** The comparison. */
  op: SeccompOperator;
}

/** A rule of the runtime spec: these calls get this action (when the arguments match). */
export interface LinuxSyscall {
  /** System call names. */
  names: string[];
  /** The action. */
  action: SeccompAction;
  /** The errno returned by `SCMP_ACT_ERRNO` (or passed by `SCMP_ACT_TRACE`); default EPERM. */
  errnoRet?: number;
  /** Argument comparisons, all of which must hold. */
  args?: LinuxSeccompArg[];
}

/** The runtime spec's `linux.seccomp` (runtime-spec config-linux.md, Seccomp). */
export interface LinuxSeccomp {
  /** The action for calls no rule matches. */
  defaultAction: SeccompAction;
  /** The errno of a default `SCMP_ACT_ERRNO`; default EPERM. */
  defaultErrnoRet?: number;
  /** `SCMP_ARCH_*` names the filter covers; empty: the native one only. */
  architectures?: string[];
  /** `SECCOMP_FILTER_FLAG_*` flags for seccomp(2). */
  flags?: string[];
  /** The UNIX socket a `SCMP_ACT_NOTIFY` filter's fd is sent to. */
  listenerPath?: string;
  /** Opaque data sent with it. */
  listenerMetadata?: string;
  /** The rules. */
  syscalls?: LinuxSyscall[];
}

/**
 * Architecture names in `includes.arches`/`excludes.arches`: libseccomp's
 * (what docker and podman compare with), with the `SCMP_ARCH_*` each stands
 * for. `mips3l64n32` and `mipsle` are spellings docker's own tables use.
 */
export const SECCOMP_ARCH_NAMES: Readonly<Record<string, string>> = {
  x86: "SCMP_ARCH_X86",
  amd64: "SCMP_ARCH_X86_64",
  x32: "SCMP_ARCH_X32",
  arm: "SCMP_ARCH_ARM",
  arm64: "SCMP_ARCH_AARCH64",
  mips: "SCMP_ARCH_MIPS",
  mipsel: "SCMP_ARCH_MIPSEL",
  mipsle: "SCMP_ARCH_MIPSEL",
  mips64: "SCMP_ARCH_MIPS64",
  mipsel64: "SCMP_ARCH_MIPSEL64",
  mips64n32: "SCMP_ARCH_MIPS64N32",
  mipsel64n32: "SCMP_ARCH_MIPSEL64N32",
  mips3l64n32: "SCMP_ARCH_MIPSEL64N32",
  ppc: "SCMP_ARCH_PPC",
  ppc64: "SCMP_ARCH_PPC64",
  ppc64le: "SCMP_ARCH_PPC64LE",
  s390: "SCMP_ARCH_S390",
  s390x: "SCMP_ARCH_S390X",
  parisc: "SCMP_ARCH_PARISC",
  parisc64: "SCMP_ARCH_PARISC64",
  riscv64: "SCMP_ARCH_RISCV64",
  loong64: "SCMP_ARCH_LOONGARCH64",
  loongarch64: "SCMP_ARCH_LOONGARCH64",
  m68k: "SCMP_ARCH_M68K",
  sh: "SCMP_ARCH_SH",
  sheb: "SCMP_ARCH_SHEB",
};

/**
 * A seccomp profile that cannot be used: not JSON, a field of the wrong type,
 * an unknown action, architecture, operator, flag or capability, ... The
 * message names the file (or `the built-in profile`) and the field.
 *
 * @example Usage
 * ```ts
 * import { SeccompProfileError } from "./seccomp.ts";
 * const e = new SeccompProfileError("/etc/p.json", 'syscalls[2].action: unknown action "SCMP_ACT_NOPE"');
 * console.log(e.message); // seccomp profile /etc/p.json: syscalls[2].action: unknown action ...
 * ```
 */
export class SeccompProfileError extends Error {
  /** Where the profile came from: a path, or a description. */
  readonly source: string;
  /** The problem, without the source. */
  readonly problem: string;
  /** Creates the error. */
  constructor(source: string, problem: string, options?: ErrorOptions) {
    super(`seccomp profile ${source}: ${problem}`, options);
    this.name = "SeccompProfileError";
    this.source = source;
    this.problem = problem;
  }
}

/** A kernel version as `minKernel` gives it: `[major, minor]`. */
export type KernelVersion = readonly [number, number];

/**
 * The conditions of a rule (`includes` or `excludes`), validated; the
 * shape of the JSON, so the built-in profile needs no conversion.
 */
export interface SeccompRuleFilter {
  /** Capabilities (`CAP_*`). */
  readonly caps?: readonly string[];
  /** Architectures, in libseccomp's names (`amd64`, `arm64`, `s390x`, ...). */
  readonly arches?: readonly string[];
  /** Kernel version `"<major>.<minor>"`. */
  readonly minKernel?: string;
}

/**
 * A rule of a profile, validated: `name` folded into `names`, `errno`
 * resolved into `errnoRet`, nulls dropped. Otherwise the shape of the JSON.
 */
export interface SeccompRule {
  /** The system calls. */
  readonly names: readonly string[];
  /** The action. */
  readonly action: SeccompAction;
  /** The errno, when given. */
  readonly errnoRet?: number;
  /** Argument comparisons. */
  readonly args?: readonly LinuxSeccompArg[];
  /** Conditions that must hold. */
  readonly includes?: SeccompRuleFilter;
  /** Conditions under which the rule is dropped. */
  readonly excludes?: SeccompRuleFilter;
}

/** An architecture and the companions `archMap` brings with it. */
export interface SeccompArchMapEntry {
  /** `SCMP_ARCH_*`. */
  readonly architecture: string;
  /** `SCMP_ARCH_*` companions. */
  readonly subArchitectures: readonly string[];
}

/** What a profile is translated for: the container and this machine. */
export interface SeccompContext {
  /** The container's bounding capabilities (`CAP_*`), which `caps` conditions test. */
  capabilities: readonly string[];
  /**
   * The native architecture in libseccomp's names (`amd64`, `arm64`, ...).
   * Default: this machine's ({@linkcode nativeSeccompArch}).
   */
  arch?: string;
  /** The kernel version `minKernel` is compared with. Default: the running kernel's. */
  kernel?: KernelVersion;
  /**
   * Whether the kernel runs x32 system calls. False drops `SCMP_ARCH_X32`
   * from what `archMap` brings with x86-64: covering x32 makes runc's
   * libseccomp take ~7 ms longer to build the filter (measured here: a
   * warm `runc run` 62 ms against 55 ms), for an ABI the kernel refuses
   * anyway (an x32 binary cannot even be executed; a stray x32 call then
   * ends the process with SIGSYS instead of failing with ENOSYS). An x32
   * named in `architectures` is kept. Default: asked of the kernel
   * (`sys/abi.ts`), and kept when that cannot be told.
   */
  x32?: boolean;
}

/** The fields of a {@linkcode SeccompProfile}. */
export interface SeccompProfileFields {
  /** No filter at all (a profile without `defaultAction` and without rules). */
  disabled: boolean;
  /** The default action. */
  defaultAction: SeccompAction;
  /** Its errno. */
  defaultErrnoRet?: number;
  /** `SCMP_ARCH_*` names always covered. */
  architectures: readonly string[];
  /** The native architecture's companions. */
  archMap: readonly SeccompArchMapEntry[];
  /** `SECCOMP_FILTER_FLAG_*` flags. */
  flags: readonly string[];
  /** Where `SCMP_ACT_NOTIFY` notifications go. */
  listenerPath?: string;
  /** Data sent with them. */
  listenerMetadata?: string;
  /** The rules, in order. */
  rules: readonly SeccompRule[];
}

/**
 * A validated seccomp profile in docker's and podman's format. Make one with
 * {@linkcode parseSeccompProfile}, {@linkcode loadSeccompProfile} or
 * {@linkcode defaultSeccompProfile}; {@linkcode SeccompProfile.translate}
 * gives the runtime spec's `linux.seccomp` for a container.
 *
 * @example Usage
 * ```ts
 * import { parseSeccompProfile } from "./seccomp_profile.ts";
 * const p = parseSeccompProfile({
 *   defaultAction: "SCMP_ACT_ALLOW",
 *   syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 122 }],
 * }, "no-mkdir.json");
 * console.log(p.translate({ capabilities: [] })?.syscalls);
 * // [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 122 }]
 * ```
 */
export class SeccompProfile {
  /** Where it came from (a path, or `the built-in profile`), for messages. */
  readonly source: string;
  /**
   * True for a profile without `defaultAction` and without rules (`{}`):
   * docker and podman run such a container without a filter, and so does strata.
   */
  readonly disabled: boolean;
  /** The default action. */
  readonly defaultAction: SeccompAction;
  /** Its errno, when given. */
  readonly defaultErrnoRet?: number;
  /** `architectures`, as given. */
  readonly architectures: readonly string[];
  /** `archMap`, as given. */
  readonly archMap: readonly SeccompArchMapEntry[];
  /** `flags`. */
  readonly flags: readonly string[];
  /** `listenerPath`. */
  readonly listenerPath?: string;
  /** `listenerMetadata`. */
  readonly listenerMetadata?: string;
  /** The rules, in order. */
  readonly rules: readonly SeccompRule[];

  /**
   * Makes a profile from its fields, as they are: a profile read from JSON
   * goes through {@linkcode parseSeccompProfile} or
   * {@linkcode loadSeccompProfile} (`seccomp_profile.ts`), which validate it.
   *
   * @example Usage
   * ```ts
   * import { SeccompProfile } from "./seccomp.ts";
   * const p = new SeccompProfile({
   *   disabled: false,
   *   defaultAction: "SCMP_ACT_ALLOW",
   *   architectures: [],
   *   archMap: [],
   *   flags: [],
   *   rules: [{ names: ["kexec_load"], action: "SCMP_ACT_ERRNO" }],
   * }, "mine");
   * console.log(p.translate({ capabilities: [] })?.syscalls?.length); // 1
   * ```
   */
  constructor(fields: SeccompProfileFields, source: string) {
    this.source = source;
    this.disabled = fields.disabled;
    this.defaultAction = fields.defaultAction;
    this.defaultErrnoRet = fields.defaultErrnoRet;
    this.architectures = fields.architectures;
    this.archMap = fields.archMap;
    this.flags = fields.flags;
    this.listenerPath = fields.listenerPath;
    this.listenerMetadata = fields.listenerMetadata;
    this.rules = fields.rules;
  }

  /**
   * The runtime spec's `linux.seccomp` for a container with `context`'s
   * capabilities on `context`'s architecture and kernel; undefined for a
   * {@linkcode SeccompProfile.disabled} profile. A new object every call.
   *
   * @example Usage
   * ```ts
   * import { defaultSeccompProfile } from "./seccomp.ts";
   * const s = defaultSeccompProfile().translate({ capabilities: ["CAP_SYS_ADMIN"] });
   * console.log(s?.syscalls?.some((r) => r.names.includes("mount"))); // true
   * ```
   */
  translate(context: SeccompContext): LinuxSeccomp | undefined {
    // Every `strata run` translates the built-in profile in a fresh process,
    // where each function runs for the first time (~0.5 ms then, ~0.07 ms
    // warm): plain loops.
    if (this.disabled) return undefined;
    const arch = context.arch ?? nativeSeccompArch();
    const caps = context.capabilities;
    let kernel = context.kernel;
    const out: LinuxSeccomp = { defaultAction: this.defaultAction };
    if (this.defaultErrnoRet !== undefined) out.defaultErrnoRet = this.defaultErrnoRet;
    const architectures = this.architectures.slice();
    const native = SECCOMP_ARCH_NAMES[arch];
    for (const a of this.archMap) {
      if (a.architecture !== native) continue;
      const dropX32 = native === "SCMP_ARCH_X86_64" && (context.x32 ?? kernelRunsX32()) === false;
      architectures.push(a.architecture);
      for (const sub of a.subArchitectures) {
        if (!(dropX32 && sub === "SCMP_ARCH_X32")) architectures.push(sub);
      }
      break;
    }
    if (architectures.length) out.architectures = architectures;
    if (this.flags.length) out.flags = this.flags.slice();
    if (this.listenerPath !== undefined) out.listenerPath = this.listenerPath;
    if (this.listenerMetadata !== undefined) out.listenerMetadata = this.listenerMetadata;
    const syscalls: LinuxSyscall[] = [];
    const rules = this.rules;
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i];
      const ex = r.excludes;
      if (ex !== undefined) {
        if (ex.arches !== undefined && ex.arches.indexOf(arch) >= 0) continue;
        if (ex.caps !== undefined && holdsAny(caps, ex.caps)) continue;
        if (ex.minKernel !== undefined && atLeast(kernel ??= this.#kernel(), ex.minKernel)) {
          continue;
        }
      }
      const inc = r.includes;
      if (inc !== undefined) {
        if (inc.arches !== undefined && inc.arches.length && inc.arches.indexOf(arch) < 0) continue;
        if (inc.caps !== undefined && !holdsAll(caps, inc.caps)) continue;
        if (inc.minKernel !== undefined && !atLeast(kernel ??= this.#kernel(), inc.minKernel)) {
          continue;
        }
      }
      const rule: LinuxSyscall = { names: r.names.slice(), action: r.action };
      if (r.errnoRet !== undefined) rule.errnoRet = r.errnoRet;
      const args = r.args;
      if (args !== undefined && args.length) {
        rule.args = [];
        for (let j = 0; j < args.length; j++) {
          const a = args[j];
          const arg: LinuxSeccompArg = { index: a.index, value: a.value, op: a.op };
          if (a.valueTwo !== undefined) arg.valueTwo = a.valueTwo;
          rule.args.push(arg);
        }
      }
      syscalls.push(rule);
    }
    out.syscalls = syscalls;
    return out;
  }

  #kernel(): KernelVersion {
    try {
      return runningKernel();
    } catch (e) {
      throw new SeccompProfileError(
        this.source,
        `its minKernel conditions need the kernel's version: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }
}

/** `caps` holds one of `wanted`. */
function holdsAny(caps: readonly string[], wanted: readonly string[]): boolean {
  for (let i = 0; i < wanted.length; i++) if (caps.indexOf(wanted[i]) >= 0) return true;
  return false;
}

/** `caps` holds every one of `wanted`. */
function holdsAll(caps: readonly string[], wanted: readonly string[]): boolean {
  for (let i = 0; i < wanted.length; i++) if (caps.indexOf(wanted[i]) < 0) return false;
  return true;
}

/** `kernel` is `min` (`"4.8"`) or later. */
function atLeast(kernel: KernelVersion, min: string): boolean {
  const dot = min.indexOf(".");
  const major = Number(min.slice(0, dot));
  return kernel[0] > major || (kernel[0] === major && kernel[1] >= Number(min.slice(dot + 1)));
}

let kernelRelease: KernelVersion | undefined;

/**
 * The running kernel's `[major, minor]`, from `/proc/sys/kernel/osrelease`
 * (what uname(2) reports), read once per process.
 *
 * @throws {Error} when it cannot be read or parsed.
 *
 * @example Usage
 * ```ts ignore
 * import { runningKernel } from "./seccomp.ts";
 * console.log(runningKernel()); // [6, 18]
 * ```
 */
export function runningKernel(): KernelVersion {
  if (kernelRelease) return kernelRelease;
  let text = "";
  try {
    // What uname(2) says, from /proc (through libc, already bound for a run),
    // else from Deno (--allow-sys).
    try {
      text = readProcText("/proc/sys/kernel/osrelease").trim();
    } catch {
      text = osRelease();
    }
  } catch (e) {
    throw new Error(
      `cannot read /proc/sys/kernel/osrelease: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const m = /^(\d+)\.(\d+)/.exec(text);
  if (!m) throw new Error(`cannot parse the kernel release "${text}"`);
  return kernelRelease = [Number(m[1]), Number(m[2])];
}

/** Deno's `build.arch` to libseccomp's name. */
const DENO_ARCHES: Record<string, string> = {
  x86_64: "amd64",
  aarch64: "arm64",
  riscv64: "riscv64",
  s390x: "s390x",
  powerpc64le: "ppc64le",
  loongarch64: "loong64",
};

/**
 * This machine's architecture in libseccomp's names (`amd64`, `arm64`): what
 * `includes.arches` and `excludes.arches` are compared with, and which
 * `archMap` entry applies.
 *
 * @example Usage
 * ```ts
 * import { nativeSeccompArch } from "./seccomp.ts";
 * console.log(nativeSeccompArch()); // "amd64" on x86-64
 * ```
 */
export function nativeSeccompArch(): string {
  return DENO_ARCHES[Deno.build.arch] ?? Deno.build.arch;
}

/** The built-in profile as JSON data (`seccomp_default.json`), as it is in the file. */
export const DEFAULT_PROFILE_DATA: unknown = defaultProfileData;

/** What messages call the built-in profile. */
export const DEFAULT_PROFILE_SOURCE = "the built-in default profile (bundle/seccomp_default.json)";

let builtIn: SeccompProfile | undefined;

/**
 * strata's built-in default profile (`seccomp_default.json`), read once per
 * process. What every container gets unless an option chooses otherwise.
 *
 * @example Usage
 * ```ts
 * import { defaultSeccompProfile } from "./seccomp.ts";
 * console.log(defaultSeccompProfile().defaultAction); // "SCMP_ACT_ERRNO"
 * ```
 */
export function defaultSeccompProfile(): SeccompProfile {
  if (builtIn) return builtIn;
  // Taken as it is, without validation: every run uses it, and a fresh
  // process (each `strata run`) would spend milliseconds validating what
  // tests/seccomp_test.ts validates once (seccomp_profile.ts
  // validatedDefaultSeccompProfile).
  const d = defaultProfileData as unknown as {
    defaultAction: SeccompAction;
    defaultErrnoRet: number;
    archMap: SeccompArchMapEntry[];
    syscalls: SeccompRule[];
  };
  return builtIn = new SeccompProfile({
    disabled: false,
    defaultAction: d.defaultAction,
    defaultErrnoRet: d.defaultErrnoRet,
    architectures: [],
    archMap: d.archMap,
    flags: [],
    rules: d.syscalls,
  }, DEFAULT_PROFILE_SOURCE);
}

// ---------------------------------------------------------------------------
// The choice a spec carries until newSpec finishes it

type Choice =
  | { kind: "default" }
  | { kind: "profile"; profile: SeccompProfile }
  | { kind: "unconfined" };

const choices = new WeakMap<Spec, Choice>();
const fromDefault = new WeakSet<LinuxSeccomp>();

/**
 * Records which profile `spec` gets (`"default"`, a profile, or
 * `"unconfined"` for none) and drops any `linux.seccomp` set before; the
 * profile is translated by {@linkcode finishSeccomp} once the capabilities
 * are final (a later `withCapAdd` opens the calls its capability governs).
 * For spec options; see `security.ts`.
 *
 * @example Usage
 * ```ts
 * import { chooseSeccomp, finishSeccomp } from "./seccomp.ts";
 * const spec = { ociVersion: "1.0.2" };
 * chooseSeccomp(spec, "unconfined");
 * finishSeccomp(spec);
 * console.log(spec); // { ociVersion: "1.0.2" }: no filter
 * ```
 */
export function chooseSeccomp(spec: Spec, choice: "default" | "unconfined" | SeccompProfile): void {
  choices.set(
    spec,
    typeof choice === "string" ? { kind: choice } : { kind: "profile", profile: choice },
  );
  if (spec.linux?.seccomp) delete spec.linux.seccomp;
}

/**
 * Sets `spec.linux.seccomp` from the profile chosen for it (the built-in
 * default unless an option chose another, or none), translated for the
 * spec's bounding capabilities; a `linux.seccomp` an option wrote itself is
 * kept. `newSpec` calls this after the options.
 *
 * @example Usage
 * ```ts
 * import { finishSeccomp } from "./seccomp.ts";
 * import { defaultSpec } from "./spec.ts";
 * const spec = defaultSpec();
 * finishSeccomp(spec);
 * console.log(spec.linux?.seccomp?.defaultAction); // "SCMP_ACT_ERRNO"
 * ```
 */
export function finishSeccomp(spec: Spec): void {
  const choice = choices.get(spec) ?? { kind: "default" };
  if (choice.kind === "unconfined") {
    if (spec.linux?.seccomp) delete spec.linux.seccomp;
    return;
  }
  if (spec.linux?.seccomp) return;
  const profile = choice.kind === "profile" ? choice.profile : defaultSeccompProfile();
  const seccomp = profile.translate({
    capabilities: spec.process?.capabilities?.bounding ?? [],
  });
  if (!seccomp) return;
  if (choice.kind === "default") fromDefault.add(seccomp);
  (spec.linux ??= {}).seccomp = seccomp;
}

/**
 * Tells whether `seccomp` is the built-in default's translation (made by
 * {@linkcode finishSeccomp} without a profile chosen): on a kernel without
 * seccomp the writer drops it, as docker does, where a profile the caller
 * chose is an error.
 *
 * @example Usage
 * ```ts
 * import { finishSeccomp, isDefaultSeccomp } from "./seccomp.ts";
 * import { defaultSpec } from "./spec.ts";
 * const spec = defaultSpec();
 * finishSeccomp(spec);
 * console.log(isDefaultSeccomp(spec.linux?.seccomp)); // true
 * ```
 */
export function isDefaultSeccomp(seccomp: LinuxSeccomp | undefined): boolean {
  return seccomp !== undefined && fromDefault.has(seccomp);
}
