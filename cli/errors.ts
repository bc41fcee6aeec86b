/**
 * How the CLI reports failure: one line, `strata: <what>: <why>`, and an exit
 * status; `--debug` adds the stack and every cause. A missing Deno permission
 * becomes a sentence naming the flag to add, because Deno's own message
 * ("Requires run access to ...") does not say what strata was trying to do.
 *
 * @module
 */
import { UsageError } from "./args.ts";

/** Exit statuses of the CLI. */
export const ExitCode = {
  /** Success. */
  Ok: 0,
  /** A general failure (or "no" from `supported`, "damaged" from `verify`). */
  Failure: 1,
  /** The command line could not be understood. */
  Usage: 2,
  /** `run` failed before or around the container (docker and podman use 125 too). */
  RunFailure: 125,
} as const;

/**
 * A failure the CLI explains itself: `what` is the operation, the message the
 * reason, `exitCode` what the process returns.
 *
 * @example Usage
 * ```ts
 * import { CliError } from "./errors.ts";
 * throw new CliError("verify", "2 damaged layers: sha256:ab.., sha256:cd..", { exitCode: 1 });
 * ```
 */
export class CliError extends Error {
  /** The operation that failed, printed before the reason. */
  readonly what: string;
  /** The process exit status. */
  readonly exitCode: number;
  /** Creates the error. */
  constructor(what: string, why: string, options?: ErrorOptions & { exitCode?: number }) {
    super(why, options);
    this.name = "CliError";
    this.what = what;
    this.exitCode = options?.exitCode ?? ExitCode.Failure;
  }
}

/** What each Deno permission is needed for in strata, for the message. */
const permissionUse: Record<string, string> = {
  run: "to start runc, unshare and mount helpers",
  ffi: "for mounts and file metadata through libc",
  read: "to read the cache and image files",
  write: "to write the cache",
  env: "to find the cache directory and credentials",
  net: "to pull from registries",
  sys: "to read system information",
  import: "to load modules",
};

function chain(e: unknown): unknown[] {
  const out: unknown[] = [];
  const seen = new Set<unknown>();
  let cur: unknown = e;
  while (cur !== undefined && cur !== null && !seen.has(cur) && out.length < 16) {
    seen.add(cur);
    out.push(cur);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return out;
}

/**
 * Finds a missing Deno permission anywhere in an error's cause chain and says
 * which flag to add, or returns undefined.
 *
 * @example Usage
 * ```ts
 * import { permissionHint } from "./errors.ts";
 * const e = new Deno.errors.NotCapable('Requires run access to "runc", run again with the --allow-run flag');
 * console.log(permissionHint(e)); // "strata needs --allow-run to start runc, ..."
 * ```
 */
export function permissionHint(e: unknown): string | undefined {
  for (const c of chain(e)) {
    if (!(c instanceof Error)) continue;
    // strata's own (sys/permissions.ts MissingPermissionError and its
    // subclasses) already name the flag and what it is for.
    if (
      c.name === "MissingPermissionError" || c.name === "ProcPermissionError" ||
      c.name === "FfiPermissionError"
    ) return oneLine(c.message);
    const notCapable = c instanceof Deno.errors.NotCapable || c.name === "NotCapable";
    // Deno 1 and some node: shims raise PermissionDenied for the same thing;
    // tell it apart from EACCES by Deno's "Requires ... access" wording.
    const denied = c instanceof Deno.errors.PermissionDenied &&
      /Requires \w+ access/.test(c.message);
    if (!notCapable && !denied) continue;
    const m = /Requires (\w+) access(?: to "?([^",]+)"?)?/.exec(c.message) ??
      /--allow-(\w+)/.exec(c.message);
    const kind = m?.[1];
    if (!kind) return `strata lacks a Deno permission: ${oneLine(c.message)}`;
    const target = m?.[2] ? ` (${m[2]})` : "";
    if (kind === "all") {
      // Deno grants /proc/self/* and similar special files only with -A.
      return `strata needs -A (--allow-all) to read ${
        m?.[2] ?? "special files"
      } (id maps, mounts, namespaces); run deno with -A`;
    }
    return `strata needs --allow-${kind} ${
      permissionUse[kind] ?? ""
    }${target}; run deno with --allow-${kind} or -A`
      .replace(/ +/g, " ").replace(" ;", ";");
  }
  return undefined;
}

/** Collapses a message onto one line (its control characters are escaped by `Output`). */
export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, "; ").trim();
}

/**
 * The reason part of the error line: the error's message, plus the messages
 * of its causes that it does not already contain (so "resolve layer X: EIO"
 * keeps the EIO that only the cause named).
 *
 * @example Usage
 * ```ts
 * import { describeError } from "./errors.ts";
 * const e = new Error("pull failed", { cause: new Error("connection refused") });
 * console.log(describeError(e)); // "pull failed: connection refused"
 * ```
 */
export function describeError(e: unknown): string {
  const hint = permissionHint(e);
  if (hint) return hint;
  let text = "";
  for (const c of chain(e)) {
    const msg = oneLine(c instanceof Error ? c.message : String(c));
    if (!msg || text.includes(msg)) continue;
    text = text ? `${text}: ${msg}` : msg;
    if (text.length > 400) break;
  }
  return text || (e instanceof Error ? e.name : "unknown error");
}

/**
 * Formats the one error line the CLI prints, `strata: <what>: <why>`.
 *
 * @example Usage
 * ```ts
 * import { errorLine } from "./errors.ts";
 * console.log(errorLine("pull oci:/x", new Error("no index.json")));
 * // "strata: pull oci:/x: no index.json"
 * ```
 */
export function errorLine(what: string, e: unknown): string {
  if (e instanceof UsageError) return `strata: usage: ${oneLine(e.message)}`;
  const w = e instanceof CliError ? e.what : what;
  return `strata: ${w ? `${w}: ` : ""}${describeError(e)}`;
}

/**
 * The long form `--debug` prints: every error in the cause chain with its stack.
 *
 * @example Usage
 * ```ts
 * import { debugReport } from "./errors.ts";
 * console.log(debugReport(new Error("x", { cause: new Error("y") })));
 * ```
 */
export function debugReport(e: unknown): string {
  const parts = chain(e).map((c, i) => {
    const head = i === 0 ? "" : "caused by: ";
    if (c instanceof Error) return head + (c.stack ?? `${c.name}: ${c.message}`);
    return head + String(c);
  });
  return parts.join("\n");
}

/**
 * The exit status for an error: usage errors 2, `CliError` its own, a
 * container command that could not be run 127 or 126 (the runtime's error
 * says which; see bundle/run.ts `RuntimeError`), other failures of `run`
 * 125, anything else 1.
 *
 * @example Usage
 * ```ts
 * import { exitCodeFor } from "./errors.ts";
 * console.log(exitCodeFor(new Error("x"), "run")); // 125
 * ```
 */
export function exitCodeFor(e: unknown, command?: string): number {
  if (e instanceof UsageError) return ExitCode.Usage;
  if (e instanceof CliError) return e.exitCode;
  if (command === "run") {
    // By shape, not class: this module stays out of the bundle code's imports.
    const own = (e as { name?: string; exitCode?: unknown })?.exitCode;
    if ((e as Error)?.name === "RuntimeError" && (own === 126 || own === 127)) return own;
    return ExitCode.RunFailure;
  }
  return ExitCode.Failure;
}
