/**
 * Reading a seccomp profile in docker's and podman's JSON format, strictly:
 * every field's type, the actions, architectures, operators, flags,
 * capabilities, `minKernel` versions, errno values and names, argument
 * indexes and 64-bit values. A mistake is one {@linkcode SeccompProfileError}
 * naming the file and the field. The result is a {@linkcode SeccompProfile}
 * (`seccomp.ts`), which translates it for a container.
 *
 * @module
 */

import { isCapability } from "./capabilities.ts";
import {
  DEFAULT_PROFILE_DATA,
  DEFAULT_PROFILE_SOURCE,
  type LinuxSeccompArg,
  SECCOMP_ARCH_NAMES,
  type SeccompAction,
  type SeccompArchMapEntry,
  type SeccompOperator,
  SeccompProfile,
  SeccompProfileError,
  type SeccompProfileFields,
  type SeccompRule,
  type SeccompRuleFilter,
} from "./seccomp.ts";
import { readTextFileSync } from "../sys/files.ts";
import { nearest } from "../sys/nearest.ts";

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

const ERRNO_LIST = "EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM " +
  "EACCES EFAULT ENOTBLK EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY " +
  "ETXTBSY EFBIG ENOSPC ESPIPE EROFS EMLINK EPIPE EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS " +
  "ENOTEMPTY ELOOP - ENOMSG EIDRM ECHRNG EL2NSYNC EL3HLT EL3RST ELNRNG EUNATCH ENOCSI EL2HLT EBADE " +
  "EBADR EXFULL ENOANO EBADRQC EBADSLT - EBFONT ENOSTR ENODATA ETIME ENOSR ENONET ENOPKG EREMOTE " +
  "ENOLINK EADV ESRMNT ECOMM EPROTO EMULTIHOP EDOTDOT EBADMSG EOVERFLOW ENOTUNIQ EBADFD EREMCHG " +
  "ELIBACC ELIBBAD ELIBSCN ELIBMAX ELIBEXEC EILSEQ ERESTART ESTRPIPE EUSERS ENOTSOCK EDESTADDRREQ " +
  "EMSGSIZE EPROTOTYPE ENOPROTOOPT EPROTONOSUPPORT ESOCKTNOSUPPORT EOPNOTSUPP EPFNOSUPPORT " +
  "EAFNOSUPPORT EADDRINUSE EADDRNOTAVAIL ENETDOWN ENETUNREACH ENETRESET ECONNABORTED ECONNRESET " +
  "ENOBUFS EISCONN ENOTCONN ESHUTDOWN ETOOMANYREFS ETIMEDOUT ECONNREFUSED EHOSTDOWN EHOSTUNREACH " +
  "EALREADY EINPROGRESS ESTALE EUCLEAN ENOTNAM ENAVAIL EISNAM EREMOTEIO EDQUOT ENOMEDIUM " +
  "EMEDIUMTYPE ECANCELED ENOKEY EKEYEXPIRED EKEYREVOKED EKEYREJECTED EOWNERDEAD ENOTRECOVERABLE " +
  "ERFKILL EHWPOISON";

let errnoTable: Readonly<Record<string, number>> | undefined;

/**
 * errno names for `errno` and `defaultErrno` (podman's spelling of
 * `errnoRet`), with the numbers of asm-generic: x86, ARM, RISC-V, s390
 * (MIPS, PA-RISC, SPARC and Alpha number them otherwise: give numbers
 * there). Built on first use: a run with the built-in profile never needs it.
 *
 * @example Usage
 * ```ts
 * import { errnoNumbers } from "./seccomp_profile.ts";
 * console.log(errnoNumbers().ENOSYS); // 38
 * ```
 */
export function errnoNumbers(): Readonly<Record<string, number>> {
  if (errnoTable) return errnoTable;
  const t: Record<string, number> = { EWOULDBLOCK: 11, EDEADLOCK: 35, ENOTSUP: 95 };
  ERRNO_LIST.split(" ").forEach((n, i) => {
    if (n !== "-") t[n] = i + 1;
  });
  return errnoTable = Object.freeze(t);
}

/** The largest errno the kernel returns from a filter (`MAX_ERRNO`). */
const MAX_ERRNO = 4095;
const MAX_U64 = (1n << 64n) - 1n;

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

/** ` (did you mean "x"?)` for the nearest of `known` to `word`, as the CLI parser suggests options. */
function suggestion(word: string, known: readonly string[]): string {
  const best = nearest(word, known, { ignoreCase: true });
  return best ? ` (did you mean "${best}"?)` : "";
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
  const n = errnoNumbers()[s];
  if (n === undefined) {
    w.fail(path, `unknown errno ${show(s)}${suggestion(s, Object.keys(errnoNumbers()))}`);
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

function kernelVersion(w: Where, path: string, v: Json): string | undefined {
  const s = optString(w, path, v);
  if (s === undefined || s === "") return undefined;
  const m = /^(\d+)\.(\d+)$/.exec(s);
  if (!m) w.fail(path, `expected a kernel version "<major>.<minor>" such as "4.8", not ${show(s)}`);
  if (Number(m[1]) === 0 && Number(m[2]) === 0) w.fail(path, `the kernel version cannot be 0.0`);
  return `${Number(m[1])}.${Number(m[2])}`;
}

function ruleFilter(w: Where, path: string, v: Json): SeccompRuleFilter | undefined {
  if (v === undefined || v === null) return undefined;
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
    if (!(a in SECCOMP_ARCH_NAMES)) {
      w.fail(
        `${path}.arches[${i}]`,
        `unknown architecture ${show(a)}${
          suggestion(a, Object.keys(SECCOMP_ARCH_NAMES))
        } (arches take libseccomp's names: amd64, arm64, x86, arm, s390x, ...)`,
      );
    }
  });
  const minKernel = kernelVersion(w, `${path}.minKernel`, v.minKernel);
  if (!caps.length && !arches.length && !minKernel) return undefined;
  return Object.freeze({
    ...(caps.length ? { caps: Object.freeze(caps) } : {}),
    ...(arches.length ? { arches: Object.freeze(arches) } : {}),
    ...(minKernel ? { minKernel } : {}),
  });
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

function validate(w: Where, data: Json): SeccompProfileFields {
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
    const includes = ruleFilter(w, `${p}.includes`, r.includes);
    const excludes = ruleFilter(w, `${p}.excludes`, r.excludes);
    return Object.freeze({
      names: Object.freeze(names),
      action,
      ...(errnoRet !== undefined ? { errnoRet } : {}),
      ...(args.length ? { args: Object.freeze(args) } : {}),
      ...(includes ? { includes } : {}),
      ...(excludes ? { excludes } : {}),
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
 * import { parseSeccompProfile } from "./seccomp_profile.ts";
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
  return new SeccompProfile(validate(new Where(source), data), source);
}

/**
 * Reads and validates the profile at `path` (synchronously: it is read once,
 * before a container is made).
 *
 * @throws {SeccompProfileError} when it cannot be read or is not a valid profile.
 *
 * @example Usage
 * ```ts ignore
 * import { loadSeccompProfile } from "./seccomp_profile.ts";
 * const p = loadSeccompProfile("/usr/share/containers/seccomp.json");
 * console.log(p.rules.length);
 * ```
 */
export function loadSeccompProfile(path: string): SeccompProfile {
  let text: string;
  try {
    text = readTextFileSync(path);
  } catch (e) {
    throw new SeccompProfileError(path, `cannot read it: ${(e as Error).message}`, { cause: e });
  }
  return parseSeccompProfile(text, path);
}

/**
 * The built-in profile's data checked by the strict validator, as a user's
 * file would be (the tests' check that it is a valid profile; every run reads
 * it with {@linkcode defaultSeccompProfile}, which skips the checks).
 *
 * @example Usage
 * ```ts
 * import { validatedDefaultSeccompProfile } from "./seccomp_profile.ts";
 * console.log(validatedDefaultSeccompProfile().rules.length > 0); // true
 * ```
 */
export function validatedDefaultSeccompProfile(): SeccompProfile {
  return parseSeccompProfile(DEFAULT_PROFILE_DATA, DEFAULT_PROFILE_SOURCE);
}
