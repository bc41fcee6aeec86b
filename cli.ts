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

export type { OutputSinks };

/** strata's version, from deno.json. */
export const VERSION: string = denoJson.version;

/**
 * Loads `cli/cmd_NAME.ts`. A literal `import("./cli/cmd_main.ts")` would
 * make Deno read, hash and resolve that module and everything it imports
 * when the program starts (every module strata has); a specifier built from
 * a template with a fixed file-name prefix is resolved only when the import
 * runs, and `deno bundle` still finds every match (esbuild expands it to
 * `cli/cmd_*.ts`).
 */
function load<T>(name: string): Promise<T> {
  return import(`./cli/cmd_${name}.ts`);
}

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
    const warm = await load<WarmRun>("run_warm");
    let status: number | undefined;
    try {
      status = await warm.fastRun(args);
    } catch (e) {
      return (await load<CommandLine>("main")).reportFastRun(warm.fastArgs(args)?.ref ?? "", e);
    }
    if (status !== undefined) return status;
  }
  return await (await load<CommandLine>("main")).commandLine(args, options, VERSION);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
