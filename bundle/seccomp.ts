/**
 * Seccomp profiles in the format docker and podman read (`defaultAction`,
 * `archMap`, `syscalls[].names` with `includes`/`excludes` by capability,
 * architecture and kernel version, `errnoRet`, ...), validated strictly and
 * translated into the OCI runtime spec's `linux.seccomp` for one container:
 * its bounding capabilities, this machine's architecture and its kernel. The
 * runtime (runc, through libseccomp) compiles that into the BPF filter.
 *
 * The built-in default profile is data, `seccomp_default.json` beside this
 * file (an allowlist: anything not named fails with EPERM). `newSpec` applies
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
 * x32, aarch64 brings arm).
 *
 * @module
 */

import type { Spec } from "./spec.ts";
import { isCapability } from "./capabilities.ts";
import { readProcText } from "../sys/proc.ts";
import defaultProfileData from "./seccomp_default.json" with { type: "json" };

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

/** The actions the runtime spec defines. */
export const SECCOMP_ACTIONS: readonly SeccompAction[] = [
  "SCMP_ACT_KILL",
  "SCMP_ACT_KILL_PROCESS",
  "SCMP_ACT_KILL_THREAD",
  "SCMP_ACT_TRAP",
  "SCMP_ACT_ERRNO",
  "SCMP_ACT_TRACE",
  "SCMP_ACT_ALLOW",
  "SCMP_ACT_LOG",
  "SCMP_ACT_NOTIFY",
];

/** The argument comparisons the runtime spec defines. */
export const SECCOMP_OPERATORS: readonly SeccompOperator[] = [
  "SCMP_CMP_NE",
  "SCMP_CMP_LT",
  "SCMP_CMP_LE",
  "SCMP_CMP_EQ",
  "SCMP_CMP_GE",
  "SCMP_CMP_GT",
  "SCMP_CMP_MASKED_EQ",
];

/** The `SCMP_ARCH_*` names the runtime spec (and libseccomp 2.5/2.6) define. */
export const SECCOMP_ARCHITECTURES: readonly string[] = [
  "SCMP_ARCH_X86",
  "SCMP_ARCH_X86_64",
  "SCMP_ARCH_X32",
  "SCMP_ARCH_ARM",
  "SCMP_ARCH_AARCH64",
  "SCMP_ARCH_MIPS",
  "SCMP_ARCH_MIPS64",
  "SCMP_ARCH_MIPS64N32",
  "SCMP_ARCH_MIPSEL",
  "SCMP_ARCH_MIPSEL64",
  "SCMP_ARCH_MIPSEL64N32",
  "SCMP_ARCH_PPC",
  "SCMP_ARCH_PPC64",
  "SCMP_ARCH_PPC64LE",
  "SCMP_ARCH_S390",
  "SCMP_ARCH_S390X",
  "SCMP_ARCH_PARISC",
  "SCMP_ARCH_PARISC64",
  "SCMP_ARCH_RISCV64",
  "SCMP_ARCH_LOONGARCH64",
  "SCMP_ARCH_M68K",
  "SCMP_ARCH_SH",
  "SCMP_ARCH_SHEB",
];

/** The `SECCOMP_FILTER_FLAG_*` names the runtime spec defines. */
export const SECCOMP_FLAGS: readonly string[] = [
  "SECCOMP_FILTER_FLAG_TSYNC",
  "SECCOMP_FILTER_FLAG_LOG",
  "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
  "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/**
 * Architecture names in `includes.arches`/`excludes.arches`: libseccomp's
 * (what docker and podman compare with), with the `SCMP_ARCH_*` each stands
 * for. `mips3l64n32` and `mipsle` are spellings docker's own tables use.
 */
const ARCH_NAMES: Record<string, string> = {
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
 * errno names for `errno` and `defaultErrno` (podman's spelling of
 * `errnoRet`), with the numbers of asm-generic: x86, ARM, RISC-V, s390
 * (MIPS, PA-RISC, SPARC and Alpha number them otherwise: give numbers there).
 */
export const ERRNO_NAMES: Readonly<Record<string, number>> = Object.freeze(Object.fromEntries(
  (
    "EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM EACCES EFAULT " +
    "ENOTBLK EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY ETXTBSY EFBIG " +
    "ENOSPC ESPIPE EROFS EMLINK EPIPE EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS ENOTEMPTY " +
    "ELOOP - ENOMSG EIDRM ECHRNG EL2NSYNC EL3HLT EL3RST ELNRNG EUNATCH ENOCSI EL2HLT EBADE EBADR " +
    "EXFULL ENOANO EBADRQC EBADSLT - EBFONT ENOSTR ENODATA ETIME ENOSR ENONET ENOPKG EREMOTE " +
    "ENOLINK EADV ESRMNT ECOMM EPROTO EMULTIHOP EDOTDOT EBADMSG EOVERFLOW ENOTUNIQ EBADFD " +
    "EREMCHG ELIBACC ELIBBAD ELIBSCN ELIBMAX ELIBEXEC EILSEQ ERESTART ESTRPIPE EUSERS ENOTSOCK " +
    "EDESTADDRREQ EMSGSIZE EPROTOTYPE ENOPROTOOPT EPROTONOSUPPORT ESOCKTNOSUPPORT EOPNOTSUPP " +
    "EPFNOSUPPORT EAFNOSUPPORT EADDRINUSE EADDRNOTAVAIL ENETDOWN ENETUNREACH ENETRESET " +
    "ECONNABORTED ECONNRESET ENOBUFS EISCONN ENOTCONN ESHUTDOWN ETOOMANYREFS ETIMEDOUT " +
    "ECONNREFUSED EHOSTDOWN EHOSTUNREACH EALREADY EINPROGRESS ESTALE EUCLEAN ENOTNAM ENAVAIL " +
    "EISNAM EREMOTEIO EDQUOT ENOMEDIUM EMEDIUMTYPE ECANCELED ENOKEY EKEYEXPIRED EKEYREVOKED " +
    "EKEYREJECTED EOWNERDEAD ENOTRECOVERABLE ERFKILL EHWPOISON"
  ).split(" ").map((n, i) => [n, i + 1] as const).filter(([n]) => n !== "-")
    .concat([["EWOULDBLOCK", 11], ["EDEADLOCK", 35], ["ENOTSUP", 95]]),
));

/** The largest errno the kernel returns from a filter (`MAX_ERRNO`). */
const MAX_ERRNO = 4095;
const MAX_U64 = (1n << 64n) - 1n;

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

/** The conditions of a rule (`includes` or `excludes`), validated. */
export interface SeccompRuleFilter {
  /** Capabilities (`CAP_*`). */
  readonly caps: readonly string[];
  /** Architectures, in libseccomp's names (`amd64`, `arm64`, `s390x`, ...). */
  readonly arches: readonly string[];
  /** Kernel version, or undefined. */
  readonly minKernel?: KernelVersion;
}

/** A rule of a profile, validated: `name` folded into `names`, `errno` resolved. */
export interface SeccompRule {
  /** The system calls. */
  readonly names: readonly string[];
  /** The action. */
  readonly action: SeccompAction;
  /** The errno, when given. */
  readonly errnoRet?: number;
  /** Argument comparisons. */
  readonly args: readonly LinuxSeccompArg[];
  /** Conditions that must hold. */
  readonly includes: SeccompRuleFilter;
  /** Conditions under which the rule is dropped. */
  readonly excludes: SeccompRuleFilter;
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
}

/**
 * A validated seccomp profile in docker's and podman's format. Make one with
 * {@linkcode parseSeccompProfile}, {@linkcode loadSeccompProfile} or
 * {@linkcode defaultSeccompProfile}; {@linkcode SeccompProfile.translate}
 * gives the runtime spec's `linux.seccomp` for a container.
 *
 * @example Usage
 * ```ts
 * import { parseSeccompProfile } from "./seccomp.ts";
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
  /** True when some rule has a `minKernel` condition (the kernel version is read then). */
  readonly #needsKernel: boolean;

  /**
   * Validates `data` (a parsed profile); prefer {@linkcode parseSeccompProfile},
   * which also takes JSON text.
   *
   * @throws {SeccompProfileError} naming `source` and the field at fault.
   */
  constructor(data: unknown, source = "(given)") {
    const fields = data === TRUSTED ? trustedFields! : validate(new Where(source), data);
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
    this.#needsKernel = fields.rules.some((r) => r.includes.minKernel || r.excludes.minKernel);
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
    if (this.disabled) return undefined;
    const arch = context.arch ?? nativeSeccompArch();
    let kernel = context.kernel;
    if (!kernel && this.#needsKernel) {
      try {
        kernel = runningKernel();
      } catch (e) {
        throw new SeccompProfileError(
          this.source,
          `its minKernel conditions need the kernel's version: ${(e as Error).message}`,
          { cause: e },
        );
      }
    }
    const caps = new Set(context.capabilities);
    const out: LinuxSeccomp = { defaultAction: this.defaultAction };
    if (this.defaultErrnoRet !== undefined) out.defaultErrnoRet = this.defaultErrnoRet;
    const architectures = [...this.architectures];
    const native = ARCH_NAMES[arch];
    const mapped = this.archMap.find((a) => a.architecture === native);
    if (mapped) architectures.push(mapped.architecture, ...mapped.subArchitectures);
    if (architectures.length) out.architectures = architectures;
    if (this.flags.length) out.flags = [...this.flags];
    if (this.listenerPath !== undefined) out.listenerPath = this.listenerPath;
    if (this.listenerMetadata !== undefined) out.listenerMetadata = this.listenerMetadata;
    const syscalls: LinuxSyscall[] = [];
    for (const r of this.rules) {
      if (!applies(r, arch, caps, kernel)) continue;
      const s: LinuxSyscall = { names: [...r.names], action: r.action };
      if (r.errnoRet !== undefined) s.errnoRet = r.errnoRet;
      if (r.args.length) s.args = r.args.map((a) => ({ ...a }));
      syscalls.push(s);
    }
    out.syscalls = syscalls;
    return out;
  }
}

function applies(
  r: SeccompRule,
  arch: string,
  caps: Set<string>,
  kernel: KernelVersion | undefined,
): boolean {
  const ex = r.excludes;
  if (ex.arches.length && ex.arches.includes(arch)) return false;
  if (ex.caps.some((c) => caps.has(c))) return false;
  if (ex.minKernel && kernelAtLeast(kernel, ex.minKernel)) return false;
  const inc = r.includes;
  if (inc.arches.length && !inc.arches.includes(arch)) return false;
  if (inc.caps.some((c) => !caps.has(c))) return false;
  if (inc.minKernel && !kernelAtLeast(kernel, inc.minKernel)) return false;
  return true;
}

function kernelAtLeast(kernel: KernelVersion | undefined, min: KernelVersion): boolean {
  if (!kernel) return false;
  return kernel[0] > min[0] || (kernel[0] === min[0] && kernel[1] >= min[1]);
}

let kernelRelease: KernelVersion | undefined;

/**
 * The running kernel's `[major, minor]`, from uname(2) (or
 * `/proc/sys/kernel/osrelease` without `--allow-sys`), read once per process.
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
    // uname(2) through Deno (--allow-sys), else the same string from /proc.
    try {
      text = Deno.osRelease();
    } catch {
      text = readProcText("/proc/sys/kernel/osrelease").trim();
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

// ---------------------------------------------------------------------------
// Validation

type Json = unknown;

/** A path into the profile for messages: `syscalls[3].args[0].op`. */
class Where {
  constructor(readonly source: string) {}
  fail(path: string, problem: string): never {
    throw new SeccompProfileError(this.source, path ? `${path}: ${problem}` : problem);
  }
}

function typeName(v: Json): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "bigint") return "a number";
  return `a ${typeof v}`;
}

function show(v: Json): string {
  if (typeof v === "bigint") return String(v);
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `nearest` of `known` within two edits of `word`, as the CLI parser suggests options. */
function suggestion(word: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestD = 3;
  for (const k of known) {
    const d = editDistance(word.toLowerCase(), k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best ? ` (did you mean "${best}"?)` : "";
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2 || a.length > 64) return 99;
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(next[j - 1] + 1, row[j] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
}

function checkKeys(
  w: Where,
  path: string,
  obj: Record<string, Json>,
  known: readonly string[],
): void {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) {
      w.fail(path ? `${path}.${k}` : k, `unknown field${suggestion(k, known)}`);
    }
  }
}

function optString(w: Where, path: string, v: Json): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") w.fail(path, `expected a string, not ${typeName(v)} ${show(v)}`);
  return v;
}

function optArray(w: Where, path: string, v: Json): Json[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) w.fail(path, `expected an array, not ${typeName(v)} ${show(v)}`);
  return v;
}

function stringArray(w: Where, path: string, v: Json): string[] {
  return optArray(w, path, v).map((x, i) => {
    if (typeof x !== "string") {
      w.fail(`${path}[${i}]`, `expected a string, not ${typeName(x)} ${show(x)}`);
    }
    return x;
  });
}

function oneOf<T extends string>(
  w: Where,
  path: string,
  v: Json,
  known: readonly T[],
  what: string,
): T {
  if (typeof v !== "string") {
    w.fail(path, `expected ${what} (a string), not ${typeName(v)} ${show(v)}`);
  }
  if (!(known as readonly string[]).includes(v)) {
    w.fail(path, `unknown ${what} ${show(v)}${suggestion(v, known)}`);
  }
  return v as T;
}

function errnoNumber(w: Where, path: string, v: Json): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_ERRNO) {
    w.fail(path, `expected an errno from 0 to ${MAX_ERRNO}, not ${show(v)}`);
  }
  return v;
}

/** podman's `errno`/`defaultErrno`: a name (`EPERM`) or a number in a string. */
function errnoName(w: Where, path: string, v: Json): number | undefined {
  const s = optString(w, path, v);
  if (s === undefined || s === "") return undefined;
  if (/^[0-9]+$/.test(s)) return errnoNumber(w, path, Number(s));
  const n = ERRNO_NAMES[s];
  if (n === undefined) {
    w.fail(path, `unknown errno ${show(s)}${suggestion(s, Object.keys(ERRNO_NAMES))}`);
  }
  return n;
}

/** `errnoRet` and `errno` together: they must agree. */
function errnoOf(
  w: Where,
  path: string,
  retKey: string,
  nameKey: string,
  obj: Record<string, Json>,
): number | undefined {
  const ret = errnoNumber(w, path ? `${path}.${retKey}` : retKey, obj[retKey]);
  const named = errnoName(w, path ? `${path}.${nameKey}` : nameKey, obj[nameKey]);
  if (ret !== undefined && named !== undefined && ret !== named) {
    w.fail(
      path,
      `${nameKey} ${show(obj[nameKey])} (${named}) and ${retKey} ${ret} disagree`,
    );
  }
  return named ?? ret;
}

function u64(w: Where, path: string, v: Json, required: boolean): number | bigint | undefined {
  if (v === undefined || v === null) {
    if (required) w.fail(path, "is required");
    return undefined;
  }
  if (typeof v === "bigint") {
    if (v < 0n || v > MAX_U64) w.fail(path, `expected an unsigned 64-bit integer, not ${v}`);
    return v;
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    w.fail(path, `expected an unsigned 64-bit integer, not ${typeName(v)} ${show(v)}`);
  }
  return v;
}

function kernelVersion(w: Where, path: string, v: Json): KernelVersion | undefined {
  const s = optString(w, path, v);
  if (s === undefined || s === "") return undefined;
  const m = /^(\d+)\.(\d+)$/.exec(s);
  if (!m) w.fail(path, `expected a kernel version "<major>.<minor>" such as "4.8", not ${show(s)}`);
  const version = [Number(m[1]), Number(m[2])] as const;
  if (version[0] === 0 && version[1] === 0) w.fail(path, `the kernel version cannot be 0.0`);
  return version;
}

const NO_FILTER: SeccompRuleFilter = Object.freeze({ caps: [], arches: [] });

function ruleFilter(w: Where, path: string, v: Json): SeccompRuleFilter {
  if (v === undefined || v === null) return NO_FILTER;
  if (!isObject(v)) w.fail(path, `expected an object, not ${typeName(v)} ${show(v)}`);
  checkKeys(w, path, v, ["caps", "arches", "minKernel"]);
  const caps = stringArray(w, `${path}.caps`, v.caps);
  caps.forEach((c, i) => {
    if (!isCapability(c)) {
      w.fail(`${path}.caps[${i}]`, `unknown capability ${show(c)} (expected a CAP_* name)`);
    }
  });
  const arches = stringArray(w, `${path}.arches`, v.arches);
  arches.forEach((a, i) => {
    if (!(a in ARCH_NAMES)) {
      w.fail(
        `${path}.arches[${i}]`,
        `unknown architecture ${show(a)}${
          suggestion(a, Object.keys(ARCH_NAMES))
        } (arches take libseccomp's names: amd64, arm64, x86, arm, s390x, ...)`,
      );
    }
  });
  const minKernel = kernelVersion(w, `${path}.minKernel`, v.minKernel);
  if (!caps.length && !arches.length && !minKernel) return NO_FILTER;
  return Object.freeze({ caps, arches, ...(minKernel ? { minKernel } : {}) });
}

const SYSCALL_NAME = /^[a-z_][a-z0-9_]{0,63}$/;

const PROFILE_KEYS = [
  "defaultAction",
  "defaultErrnoRet",
  "defaultErrno",
  "architectures",
  "archMap",
  "syscalls",
  "flags",
  "listenerPath",
  "listenerMetadata",
  "comment",
];

const RULE_KEYS = [
  "names",
  "name",
  "action",
  "errnoRet",
  "errno",
  "args",
  "comment",
  "includes",
  "excludes",
];

function takesErrno(action: SeccompAction): boolean {
  return action === "SCMP_ACT_ERRNO" || action === "SCMP_ACT_TRACE";
}

/** What {@linkcode validate} returns: a profile's fields. */
interface ProfileFields {
  disabled: boolean;
  defaultAction: SeccompAction;
  defaultErrnoRet?: number;
  architectures: readonly string[];
  archMap: readonly SeccompArchMapEntry[];
  flags: readonly string[];
  listenerPath?: string;
  listenerMetadata?: string;
  rules: readonly SeccompRule[];
}

function validate(w: Where, data: Json): ProfileFields {
  if (!isObject(data)) w.fail("", `expected a JSON object, not ${typeName(data)}`);
  checkKeys(w, "", data, PROFILE_KEYS);
  const syscallsIn = optArray(w, "syscalls", data.syscalls);
  const hasDefault = data.defaultAction !== undefined && data.defaultAction !== null &&
    data.defaultAction !== "";
  if (!hasDefault) {
    // docker and podman: neither a default action nor rules means no filter at all.
    if (syscallsIn.length === 0) {
      return {
        disabled: true,
        defaultAction: "SCMP_ACT_ALLOW",
        architectures: [],
        archMap: [],
        flags: [],
        rules: [],
      };
    }
    w.fail("defaultAction", "is required (the action for calls no rule names)");
  }
  const defaultAction = oneOf(w, "defaultAction", data.defaultAction, SECCOMP_ACTIONS, "action");
  if (defaultAction === "SCMP_ACT_NOTIFY") {
    w.fail("defaultAction", "SCMP_ACT_NOTIFY cannot be the default action");
  }
  const defaultErrnoRet = errnoOf(w, "", "defaultErrnoRet", "defaultErrno", data);
  if (defaultErrnoRet !== undefined && !takesErrno(defaultAction)) {
    w.fail(
      "defaultErrnoRet",
      `${defaultAction} takes no errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)`,
    );
  }
  const architectures = stringArray(w, "architectures", data.architectures);
  architectures.forEach((a, i) =>
    oneOf(w, `architectures[${i}]`, a, SECCOMP_ARCHITECTURES, "architecture")
  );
  const archMap = optArray(w, "archMap", data.archMap).map((e, i): SeccompArchMapEntry => {
    const p = `archMap[${i}]`;
    if (!isObject(e)) w.fail(p, `expected an object, not ${typeName(e)} ${show(e)}`);
    checkKeys(w, p, e, ["architecture", "subArchitectures"]);
    if (e.architecture === undefined || e.architecture === null) {
      w.fail(`${p}.architecture`, "is required");
    }
    const architecture = oneOf(
      w,
      `${p}.architecture`,
      e.architecture,
      SECCOMP_ARCHITECTURES,
      "architecture",
    );
    const subArchitectures = stringArray(w, `${p}.subArchitectures`, e.subArchitectures);
    subArchitectures.forEach((a, j) =>
      oneOf(w, `${p}.subArchitectures[${j}]`, a, SECCOMP_ARCHITECTURES, "architecture")
    );
    return Object.freeze({ architecture, subArchitectures: Object.freeze(subArchitectures) });
  });
  if (architectures.length && archMap.length) {
    w.fail("", "both architectures and archMap are given; use one of them");
  }
  const flags = stringArray(w, "flags", data.flags);
  flags.forEach((f, i) => oneOf(w, `flags[${i}]`, f, SECCOMP_FLAGS, "flag"));
  const listenerPath = optString(w, "listenerPath", data.listenerPath) || undefined;
  const listenerMetadata = optString(w, "listenerMetadata", data.listenerMetadata) || undefined;
  if (listenerMetadata !== undefined && listenerPath === undefined) {
    w.fail("listenerMetadata", "is given without listenerPath");
  }
  if (listenerPath !== undefined && !listenerPath.startsWith("/")) {
    w.fail("listenerPath", `expected an absolute path, not ${show(listenerPath)}`);
  }
  optString(w, "comment", data.comment);

  const rules = syscallsIn.map((r, i): SeccompRule => {
    const p = `syscalls[${i}]`;
    if (!isObject(r)) w.fail(p, `expected an object, not ${typeName(r)} ${show(r)}`);
    checkKeys(w, p, r, RULE_KEYS);
    const names = stringArray(w, `${p}.names`, r.names);
    const name = optString(w, `${p}.name`, r.name);
    if (name && names.length) w.fail(p, "both name and names are given; use one of them");
    if (name) names.push(name);
    if (!names.length) w.fail(p, "names the system calls it is for in names (or name): none given");
    names.forEach((n, j) => {
      if (!SYSCALL_NAME.test(n)) {
        w.fail(`${p}.names[${j}]`, `${show(n)} is not a system call name`);
      }
    });
    if (r.action === undefined || r.action === null) w.fail(`${p}.action`, "is required");
    const action = oneOf(w, `${p}.action`, r.action, SECCOMP_ACTIONS, "action");
    const errnoRet = errnoOf(w, p, "errnoRet", "errno", r);
    if (errnoRet !== undefined && !takesErrno(action)) {
      w.fail(
        `${p}.errnoRet`,
        `${action} takes no errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)`,
      );
    }
    if (action === "SCMP_ACT_NOTIFY" && listenerPath === undefined) {
      w.fail(`${p}.action`, "SCMP_ACT_NOTIFY needs a listenerPath to send the notifications to");
    }
    const args = optArray(w, `${p}.args`, r.args).map((a, j): LinuxSeccompArg => {
      const q = `${p}.args[${j}]`;
      if (!isObject(a)) w.fail(q, `expected an object, not ${typeName(a)} ${show(a)}`);
      checkKeys(w, q, a, ["index", "value", "valueTwo", "op"]);
      const index = a.index;
      if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index > 5) {
        w.fail(`${q}.index`, `expected an argument index from 0 to 5, not ${show(index)}`);
      }
      const value = u64(w, `${q}.value`, a.value, true)!;
      const valueTwo = u64(w, `${q}.valueTwo`, a.valueTwo, false);
      if (a.op === undefined || a.op === null) w.fail(`${q}.op`, "is required");
      const op = oneOf(w, `${q}.op`, a.op, SECCOMP_OPERATORS, "operator");
      const arg: LinuxSeccompArg = { index, value, op };
      if (valueTwo !== undefined) arg.valueTwo = valueTwo;
      return Object.freeze(arg);
    });
    optString(w, `${p}.comment`, r.comment);
    return Object.freeze({
      names: Object.freeze(names),
      action,
      ...(errnoRet !== undefined ? { errnoRet } : {}),
      args: Object.freeze(args),
      includes: ruleFilter(w, `${p}.includes`, r.includes),
      excludes: ruleFilter(w, `${p}.excludes`, r.excludes),
    });
  });
  return {
    disabled: false,
    defaultAction,
    ...(defaultErrnoRet !== undefined ? { defaultErrnoRet } : {}),
    architectures: Object.freeze(architectures),
    archMap: Object.freeze(archMap),
    flags: Object.freeze(flags),
    ...(listenerPath !== undefined ? { listenerPath } : {}),
    ...(listenerMetadata !== undefined ? { listenerMetadata } : {}),
    rules: Object.freeze(rules),
  };
}

/**
 * JSON.parse keeping integers above 2^53 exact (as bigint): 64-bit masks in
 * `args` would otherwise be rounded silently.
 */
function parseJson(text: string): Json {
  return JSON.parse(text, (_key, value, context?: { source?: string }) => {
    if (typeof value === "number" && !Number.isSafeInteger(value) && context?.source) {
      const src = context.source;
      if (/^-?[0-9]+$/.test(src)) return BigInt(src);
    }
    return value;
  });
}

/**
 * Validates a profile in docker's and podman's format: `input` is its JSON
 * text or the parsed value; `source` names it in errors (a path).
 *
 * Every field is checked: its type, the actions, architectures (in
 * `architectures`, `archMap` and `arches` conditions), operators, flags,
 * capabilities, `minKernel` versions, errno values and names, argument
 * indexes and 64-bit values (kept exact above 2^53); an unknown field is an
 * error too (a misspelt `excludes` would otherwise open a rule
 * unconditionally). `null` stands for an absent optional field, as for
 * docker and podman.
 *
 * @throws {SeccompProfileError} naming `source` and the field at fault.
 *
 * @example Usage
 * ```ts
 * import { parseSeccompProfile } from "./seccomp.ts";
 * try {
 *   parseSeccompProfile('{"defaultAction": "SCMP_ACT_DENY"}', "p.json");
 * } catch (e) {
 *   console.log((e as Error).message);
 *   // seccomp profile p.json: defaultAction: unknown action "SCMP_ACT_DENY" ...
 * }
 * ```
 */
export function parseSeccompProfile(input: string | unknown, source = "(given)"): SeccompProfile {
  let data: Json = input;
  if (typeof input === "string") {
    try {
      data = parseJson(input);
    } catch (e) {
      throw new SeccompProfileError(source, `not valid JSON: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }
  return new SeccompProfile(data, source);
}

/**
 * Reads and validates the profile at `path` (synchronously: it is read once,
 * before a container is made).
 *
 * @throws {SeccompProfileError} when it cannot be read or is not a valid profile.
 *
 * @example Usage
 * ```ts ignore
 * import { loadSeccompProfile } from "./seccomp.ts";
 * const p = loadSeccompProfile("/usr/share/containers/seccomp.json");
 * console.log(p.rules.length);
 * ```
 */
export function loadSeccompProfile(path: string): SeccompProfile {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new SeccompProfileError(path, `cannot read it: ${(e as Error).message}`, { cause: e });
  }
  return parseSeccompProfile(text, path);
}

/** What messages call the built-in profile. */
export const DEFAULT_PROFILE_SOURCE = "the built-in default profile (bundle/seccomp_default.json)";

let builtIn: SeccompProfile | undefined;

/** The constructor's marker for fields that need no validation (the built-in profile's). */
const TRUSTED = Symbol("trusted");
let trustedFields: ProfileFields | undefined;

/**
 * The built-in profile's fields, read without validation: every run uses it,
 * and a fresh process (each `strata run`) would spend ~3 ms validating what
 * the tests validate once (tests/seccomp_test.ts checks that the strict
 * validator accepts it and yields the same profile).
 */
function builtInFields(raw: typeof defaultProfileData): ProfileFields {
  const filter = (f: { caps?: string[]; arches?: string[]; minKernel?: string } | undefined) => {
    if (!f) return NO_FILTER;
    const k = f.minKernel?.split(".").map(Number) as [number, number] | undefined;
    return { caps: f.caps ?? [], arches: f.arches ?? [], ...(k ? { minKernel: k } : {}) };
  };
  const rules: SeccompRule[] = [];
  for (const r of raw.syscalls as RawRule[]) {
    rules.push({
      names: r.names,
      action: r.action as SeccompAction,
      ...(r.errnoRet !== undefined ? { errnoRet: r.errnoRet } : {}),
      args: (r.args ?? []) as LinuxSeccompArg[],
      includes: filter(r.includes),
      excludes: filter(r.excludes),
    });
  }
  return {
    disabled: false,
    defaultAction: raw.defaultAction as SeccompAction,
    defaultErrnoRet: raw.defaultErrnoRet,
    architectures: [],
    archMap: raw.archMap,
    flags: [],
    rules,
  };
}

interface RawRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[];
  includes?: { caps?: string[]; arches?: string[]; minKernel?: string };
  excludes?: { caps?: string[]; arches?: string[]; minKernel?: string };
}

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
  trustedFields = builtInFields(defaultProfileData);
  try {
    builtIn = new SeccompProfile(TRUSTED, DEFAULT_PROFILE_SOURCE);
  } finally {
    trustedFields = undefined;
  }
  return builtIn;
}

/**
 * The built-in profile's data checked by the strict validator, as a user's
 * file would be (the tests' check that it is a valid profile; every run reads
 * it with {@linkcode defaultSeccompProfile}, which skips the checks).
 *
 * @example Usage
 * ```ts
 * import { validatedDefaultSeccompProfile } from "./seccomp.ts";
 * console.log(validatedDefaultSeccompProfile().rules.length > 0); // true
 * ```
 */
export function validatedDefaultSeccompProfile(): SeccompProfile {
  return parseSeccompProfile(defaultProfileData, DEFAULT_PROFILE_SOURCE);
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
