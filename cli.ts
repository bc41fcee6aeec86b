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
 * The two halves of the command line, each imported when it is first
 * needed: the short way of a warm `run` (one module that imports nothing)
 * and everything else. The specifiers are string literals: Deno loads a
 * module named by a computed one only with `--allow-read` on it, and strata
 * runs with `--allow-run --allow-ffi` alone. (Deno reads the literal ones'
 * module graph when it starts; executing it waits for the import.)
 */
const loaders = {
  run_warm: () => import("./cli/cmd_run_warm.ts"),
  main: () => import("./cli/cmd_main.ts"),
};

function load<T>(name: keyof typeof loaders): Promise<T> {
  return loaders[name]() as Promise<T>;
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
