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
 * This file is only the door: a `run` its run record covers takes the short
 * way (cli/cmd_run_warm.ts) before anything else loads; everything else is
 * parsed, dispatched and reported by cli/cmd_main.ts. The parts a command
 * line needs but a library user does not (the argument parser, the stderr
 * progress display, error formatting, each command, the demo image builder)
 * live in `cli/`, so `mod.ts` stays free of them and each can be tested
 * alone.
 *
 * @module
 */
import denoJson from "./deno.json" with { type: "json" };
import type { OutputSinks } from "./cli/output.ts";
import { cannotLoadCommands, reportFastRun } from "./cli/run_report.ts";
import { importOwnModule, runAsEntry } from "./sys/own_modules.ts";

export type { OutputSinks };

/** strata's version, from deno.json. */
export const VERSION: string = denoJson.version;

/**
 * The short way of a warm `run`: one module that imports nothing, imported
 * by a literal specifier (so it loads without `--allow-read`).
 */
const warmRun = () => import("./cli/cmd_run_warm.ts");

/**
 * Everything else (cli/cmd_main.ts and the ~80 modules it imports), loaded
 * only when needed (sys/own_modules.ts): imported now when Deno lets this
 * process read it; else, for the program itself, the same command line runs
 * again with it as the main module (no permission added); undefined when
 * neither can be done.
 */
async function commandLineModule(program: boolean): Promise<CommandLine | undefined> {
  const m = await importOwnModule<CommandLine>(COMMAND_LINE);
  if (m || !program) return m;
  runAsEntry(COMMAND_LINE); // returns only when it cannot
  return undefined;
}

/** cli/cmd_main.ts, or its own bundle beside this one's (`deno task build`). */
const COMMAND_LINE = new URL(
  import.meta.url.endsWith(".ts") ? "./cli/cmd_main.ts" : "./cli/cmd_main.js",
  import.meta.url,
);
/** Set when this module is the program's main module. */
let program = false;

type WarmRun = typeof import("./cli/cmd_run_warm.ts");
type CommandLine = typeof import("./cli/cmd_main.ts");

/** Options of {@linkcode main}. */
export interface MainOptions {
  /** Where output goes (default: the process's stdout and stderr). */
  sinks?: OutputSinks;
  /** Aborts the command (default: fired by SIGINT/SIGTERM). */
  signal?: AbortSignal;
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
  // `run` of an image its run record still covers: the short way, before
  // anything else loads (cli/cmd_run_warm.ts), else the long way below.
  if (args[0] === "run" && !options.sinks && !options.signal) {
    const warm: WarmRun = await warmRun();
    let status: number | undefined;
    try {
      status = await warm.fastRun(args);
    } catch (e) {
      return reportFastRun(warm.fastArgs(args)?.ref ?? "", e);
    }
    if (status !== undefined) return status;
  }
  const commands = await commandLineModule(program && !options.sinks && !options.signal);
  if (!commands) return cannotLoadCommands(decodeURIComponent(new URL(".", COMMAND_LINE).pathname));
  return await commands.commandLine(args, options, VERSION);
}

if (import.meta.main) {
  program = true;
  Deno.exit(await main(Deno.args));
}
