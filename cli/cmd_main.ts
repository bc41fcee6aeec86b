/**
 * The command line but for the short way of `run` (cli.ts): parse,
 * dispatch, turn failures into one line and an exit status. Loaded by
 * `cli.ts` on demand, so that a warm `strata run` loads none of it; without
 * `--allow-read`, cli.ts runs it as the main module instead.
 *
 * @module
 */
import type { ParsedArgs } from "./args.ts";
import { commandHelp, parseArgs, UsageError } from "./args.ts";
import { COMMANDS, GLOBAL_OPTIONS, TOP_OPTIONS, topHelp } from "./spec.ts";
import { debugReport, errorLine, exitCodeFor } from "./errors.ts";
import { detectMode, Output, type OutputSinks, processSinks } from "./output.ts";
import type { Context } from "./context.ts";
import { defaultCacheRoot } from "../overlay/cache.ts";
import { statSync } from "../sys/files.ts";
import { getUid } from "../sys/process.ts";
import denoJson from "../deno.json" with { type: "json" };

/** What {@linkcode commandLine} takes besides the arguments (cli.ts `MainOptions`). */
export interface CommandLineOptions {
  /** Where output goes (default: the process's stdout and stderr). */
  sinks?: OutputSinks;
  /** Aborts the command (default: fired by SIGINT/SIGTERM). */
  signal?: AbortSignal;
}

type Handler = (ctx: Context) => Promise<number>;

/**
 * The part of the command line each command needs, imported when it runs
 * (`strata --help` and `strata ls` run no mount or runtime code). String
 * literals, as in cli.ts: a computed specifier needs `--allow-read`.
 */
const modules = {
  supported: () => import("./cmd_supported.ts"),
  pull: () => import("./cmd_pull.ts"),
  run: () => import("./cmd_run.ts"),
  export: () => import("./cmd_export.ts"),
  cache: () => import("./cmd_cache.ts"),
  verify: () => import("./cmd_verify.ts"),
  demo: () => import("./cmd_demo.ts"),
  reexec: () => import("./cmd_reexec.ts"),
};

function load<T>(name: keyof typeof modules): Promise<T> {
  return modules[name]() as Promise<T>;
}

type CommandModule = Record<string, Handler>;

// Commands load on demand: `strata --help` and `strata ls` do not pay for the
// mount and runtime code, and a command whose part fails to load says so alone.
const handlers: Record<string, [module: keyof typeof modules, name: string]> = {
  supported: ["supported", "supportedCommand"],
  pull: ["pull", "pullCommand"],
  run: ["run", "runCommand"],
  export: ["export", "exportCommand"],
  ls: ["cache", "lsCommand"],
  rm: ["cache", "rmCommand"],
  prune: ["cache", "pruneCommand"],
  verify: ["verify", "verifyCommand"],
  demo: ["demo", "demoCommand"],
};

async function loadHandler(command: string): Promise<Handler> {
  const [module, name] = handlers[command];
  return (await load<CommandModule>(module))[name];
}

/**
 * Commands whose first step is entering the user/mount namespace (which, as
 * root outside a private mount namespace or as a user, re-executes the whole
 * command line under `unshare`): they enter it here, before their modules
 * load, so the parent process that only waits for the child loads next to
 * nothing. Their own `enterNamespace` call then returns at once in the child.
 */
const ENTER_FIRST = new Set(["run", "pull", "demo", "export"]);

type Reexec = typeof import("./cmd_reexec.ts");

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

/**
 * `run` the long way (cli/cmd_run.ts), which as a user first re-executes
 * into a user namespace, before its modules load.
 */
async function runHandler(ctx: Context): Promise<number> {
  if (!isRoot()) await (await load<Reexec>("reexec")).enterNamespaceEarly(ctx.out);
  return await (await loadHandler("run"))(ctx);
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
 * Runs the command line `args` (without the program name) the long way and
 * returns the exit status; `version` is strata's (cli.ts `version`).
 *
 * @example Usage
 * ```ts ignore
 * import { commandLine } from "./cmd_main.ts";
 * Deno.exit(await commandLine(["ls", "--json"], {}, "0.1.0"));
 * ```
 */
export async function commandLine(
  args: string[],
  options: CommandLineOptions,
  version: string,
): Promise<number> {
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
        out.result(`strata ${version}`);
        return 0;
      }
      if (o.help) {
        out.result(topHelp(version));
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
    // Root pulls mount nothing (layers are extracted straight into their
    // directories): no namespace, so no second Deno start either.
    if (ENTER_FIRST.has(spec.name) && spec.name !== "run" && !(spec.name === "pull" && isRoot())) {
      await (await load<Reexec>("reexec")).enterNamespaceEarly(out);
    }
    const handler = spec.name === "run" ? runHandler : await loadHandler(spec.name);
    const signals = options.signal ? undefined : installSignals(controller);
    // `run` releases the signals early (to runContainer); the finally removes them.
    options.signal?.addEventListener("abort", () => controller.abort(options.signal!.reason));
    try {
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
    if (!options.sinks && (e as Error)?.name === "UnverifiedCertificateError") {
      await (await load<Reexec>("reexec")).rerunForCertificate(e);
    }
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

// Run as the main module by cli.ts (sys/own_modules.ts `runAsEntry`) when
// Deno may not read strata's modules after start-up: this module's literal
// imports are then the start-up graph.
if (import.meta.main) {
  Deno.exit(await commandLine(Deno.args, {}, denoJson.version));
}
