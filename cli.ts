/**
 * strata's command line: `deno run --allow-run --allow-ffi cli.ts COMMAND ...`
 * (plus `--allow-net` for registries), or installed as `strata` with
 * `deno install -g --allow-run --allow-ffi --allow-net -n strata jsr:@strata/store/cli`
 * (or a local path to this file).
 *
 * ```sh
 * strata pull docker://127.0.0.1:5000/busybox:latest --tls-verify=false
 * strata run busybox -- echo hello
 * strata ls --json
 * ```
 *
 * This file is only the table of contents: parse, dispatch, turn failures
 * into one line and an exit status. The parts a command line needs but a
 * library user does not (the argument parser, the stderr progress display,
 * error formatting, each command, the demo image builder) live in `cli/`, so
 * `mod.ts` stays free of them and each can be tested alone.
 *
 * @module
 */
import denoJson from "./deno.json" with { type: "json" };
import { commandHelp, parseArgs, type ParsedArgs, UsageError } from "./cli/args.ts";
import { COMMANDS, GLOBAL_OPTIONS, TOP_OPTIONS, topHelp } from "./cli/spec.ts";
import { debugReport, errorLine, exitCodeFor } from "./cli/errors.ts";
import { detectMode, Output, type OutputSinks, processSinks } from "./cli/output.ts";

export type { OutputSinks };
import type { Context } from "./cli/context.ts";
import { getEnv } from "./sys/env.ts";
import { statSync } from "./sys/files.ts";
import { getUid } from "./sys/process.ts";

/** strata's version, from deno.json. */
export const VERSION: string = denoJson.version;

type Handler = (ctx: Context) => Promise<number>;

// Commands load on demand: `strata --help` and `strata ls` do not pay for the
// mount and runtime code, and a command whose part fails to load says so alone.
const handlers: Record<string, () => Promise<Handler>> = {
  supported: async () => (await import("./cli/cmd_supported.ts")).supportedCommand,
  pull: async () => (await import("./cli/cmd_pull.ts")).pullCommand,
  run: async () => (await import("./cli/cmd_run.ts")).runCommand,
  export: async () => (await import("./cli/cmd_export.ts")).exportCommand,
  ls: async () => (await import("./cli/cmd_cache.ts")).lsCommand,
  rm: async () => (await import("./cli/cmd_cache.ts")).rmCommand,
  prune: async () => (await import("./cli/cmd_cache.ts")).pruneCommand,
  verify: async () => (await import("./cli/cmd_verify.ts")).verifyCommand,
  demo: async () => (await import("./cli/cmd_demo.ts")).demoCommand,
};

/**
 * Commands whose first step is entering the user/mount namespace (which, as
 * root outside a private mount namespace or as a user, re-executes the whole
 * command line under `unshare`): they enter it here, before their modules
 * load, so the parent process that only waits for the child loads next to
 * nothing. Their own `enterNamespace` call then returns at once in the child.
 */
const ENTER_FIRST = new Set(["run", "pull", "demo", "export"]);

async function enterNamespaceEarly(out: Output): Promise<void> {
  const { ensureUserNamespace } = await import("./overlay/userns.ts");
  try {
    await ensureUserNamespace({ quiet: out.mode === "quiet", warn: (m) => out.note(m) });
  } catch {
    // No namespace can be made: the command loads and enters it again, so
    // its usage errors still come first and the failure is reported as usual.
  }
}

/**
 * Root runs a cached image without re-executing itself (cli/pipeline.ts
 * `openCached`): `run` then decides about the namespace once the image is open.
 */
function isRoot(): boolean {
  try {
    return getUid() === 0;
  } catch {
    return false;
  }
}

/** Marks the run started by {@linkcode rerunForCertificate}, with the host it is for. */
const TLS_RERUN_ENV = "STRATA_TLS_RERUN";

/**
 * TLS verification off for a registry (`--tls-verify=false`, or `insecure =
 * true` in registries.conf) whose certificate cannot be verified: Deno's
 * fetch can skip the check only for the whole process, so the command runs
 * again (same pid, same arguments) with
 * `--unsafely-ignore-certificate-errors=HOST` (Deno then says "DANGER: TLS
 * certificate validation is disabled for: HOST"), as skopeo skips it. The
 * failure happens at the first request to that host, before anything is
 * written; a second such host (a mirror, then its registry) adds its own
 * flag in one more run. Returns when that cannot be done (already done for
 * the host, or not run as `deno run`).
 */
async function rerunForCertificate(e: unknown): Promise<void> {
  if ((e as Error)?.name !== "UnverifiedCertificateError") return;
  const host = (e as { hostname?: string }).hostname;
  try {
    const done = getEnv(TLS_RERUN_ENV)?.split(",") ?? [];
    if (!host || done.includes(host)) return;
    const { rerunWithDenoFlags } = await import("./overlay/userns.ts");
    await rerunWithDenoFlags([`--unsafely-ignore-certificate-errors=${host}`], {
      [TLS_RERUN_ENV]: [...done, host].join(","),
    });
  } catch {
    // cannot run again (no --allow-env, --allow-run): the error line says what to do
  }
}

/** Options of {@linkcode main}. */
export interface MainOptions {
  /** Where output goes (default: the process's stdout and stderr). */
  sinks?: OutputSinks;
  /** Aborts the command (default: fired by SIGINT/SIGTERM). */
  signal?: AbortSignal;
}

function what(args: ParsedArgs | undefined): string {
  if (!args?.command) return "";
  const first = args.positionals[0];
  return first ? `${args.command} ${first}` : args.command;
}

interface SignalHandling {
  /** From now on the signals are someone else's (a listener stays, doing nothing). */
  release(): void;
  /** Removes the listeners. */
  uninstall(): void;
}

function installSignals(controller: AbortController): SignalHandling {
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  let count = 0;
  let released = false;
  const onSignal = () => {
    if (released) return;
    // The first signal asks the command to stop and clean up; a second one
    // means the user does not want to wait.
    if (++count > 1) Deno.exit(130);
    controller.abort(new Error("interrupted"));
  };
  const added: Deno.Signal[] = [];
  for (const s of signals) {
    try {
      Deno.addSignalListener(s, onSignal);
      added.push(s);
    } catch {
      // Not supported here (Windows, or no permission): default handling.
    }
  }
  return {
    // Released, not removed: `run` adds its own listeners next, and a signal
    // Deno still listens to costs nothing to listen to again (unbinding and
    // binding it again cost a warm run ~1 ms).
    release: () => {
      released = true;
    },
    uninstall: () => {
      for (const s of added.splice(0)) Deno.removeSignalListener(s, onSignal);
    },
  };
}

/**
 * After a failure, what was wrong with the cache root itself, said plainly:
 * it is not a directory (the first mkdir or readdir below it said "File
 * exists" or "Not a directory" about a path inside it), or it belongs to
 * another user (an EACCES about a path inside it). Checked only on failure:
 * a warm run pays no stat for it.
 */
function cacheProblem(root: string | undefined, e: unknown): Error | undefined {
  if (!root) return undefined;
  let st: Deno.FileInfo;
  try {
    st = statSync(root);
  } catch {
    return undefined;
  }
  if (!st.isDirectory) return new Error(`the cache ${root} is not a directory`);
  const denied = e instanceof Deno.errors.PermissionDenied ||
    /EACCES|Permission denied \(os error 13\)/.test(String((e as Error)?.message ?? e));
  let mine = true;
  try {
    mine = st.uid === null || st.uid === getUid();
  } catch { /* no --allow-sys: say nothing more */ }
  if (denied && !mine) {
    return new Error(
      `the cache ${root} belongs to another user: use one of your own (--cache DIR or STRATA_CACHE)`,
      { cause: e },
    );
  }
  return undefined;
}

/**
 * Runs the CLI with `args` (without the program name) and returns the exit
 * status; it prints results to stdout and everything else to stderr.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "./cli.ts";
 * Deno.exit(await main(["ls", "--json"]));
 * ```
 */
export async function main(args: string[], options: MainOptions = {}): Promise<number> {
  const sinks = options.sinks ?? processSinks;
  let parsed: ParsedArgs | undefined;
  let debug = args.includes("--debug");
  let out = new Output(detectMode(args.includes("--quiet") || args.includes("-q")), sinks);
  const controller = new AbortController();
  let root: string | undefined;
  try {
    // `strata help [COMMAND]` is `strata [COMMAND] --help`.
    if (args[0] === "help") args = [...args.slice(1, 2), "--help"];
    parsed = parseArgs(args, COMMANDS, [...GLOBAL_OPTIONS, ...TOP_OPTIONS]);
    const o = parsed.options;
    debug = o.debug === true;
    out = new Output(detectMode(o.quiet === true), sinks);
    if (!parsed.command) {
      if (o.version) {
        out.result(`strata ${VERSION}`);
        return 0;
      }
      if (o.help) {
        out.result(topHelp(VERSION));
        return 0;
      }
      throw new UsageError("missing command");
    }
    const spec = COMMANDS.find((c) => c.name === parsed!.command)!;
    if (o.help) {
      out.result(commandHelp(spec, GLOBAL_OPTIONS));
      return 0;
    }
    if (o.version) throw new UsageError(`unknown option --version for ${spec.name}`, spec.name);
    if (ENTER_FIRST.has(spec.name) && !(spec.name === "run" && isRoot())) {
      await enterNamespaceEarly(out);
    }
    const handler = await handlers[spec.name]();
    const signals = options.signal ? undefined : installSignals(controller);
    // `run` releases the signals early (to runContainer); the finally removes them.
    options.signal?.addEventListener("abort", () => controller.abort(options.signal!.reason));
    try {
      const { defaultCacheRoot } = await import("./overlay/cache.ts");
      const cacheRoot = (o.cache as string | undefined) ?? defaultCacheRoot();
      root = cacheRoot;
      return await handler({
        args: parsed,
        options: o,
        out,
        signal: controller.signal,
        cacheRoot,
        releaseSignals: () => signals?.release(),
      });
    } finally {
      signals?.uninstall();
    }
  } catch (e) {
    out.endLayers();
    if (!options.sinks) await rerunForCertificate(e);
    if (controller.signal.aborted && !debug) {
      // Ctrl-C: the command stopped and cleaned up; say so plainly, exit as shells do.
      out.error(`strata: ${what(parsed)}: interrupted`);
      return 130;
    }
    const err = cacheProblem(root, e) ?? e;
    out.error(errorLine(what(parsed), err));
    if (debug) out.error(debugReport(e));
    return exitCodeFor(err, parsed?.command);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
