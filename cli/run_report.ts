/**
 * The lines cli.ts itself may have to say before the rest of the command
 * line loads: a failure of the short way of `run`, and modules that cannot
 * be loaded. Small on purpose: it is part of every start.
 *
 * @module
 */
import { errorLine, exitCodeFor } from "./errors.ts";
import { detectMode, Output, processSinks } from "./output.ts";

/**
 * Reports a failure of the short way of `run` (cli/cmd_run_warm.ts: the
 * runtime could not run the container) as the long way reports it, and
 * returns the exit status.
 *
 * @example Usage
 * ```ts ignore
 * return reportFastRun("oci:/x:v1", error); // 127 for a command not found
 * ```
 */
export function reportFastRun(ref: string, e: unknown): number {
  new Output(detectMode(false), processSinks).error(errorLine(`run ${ref}`, e));
  return exitCodeFor(e, "run");
}

/**
 * Says that the command line's modules cannot be loaded in this process
 * (Deno may not read `dir`, and the command line cannot be run again with
 * them as the main module) and which flag helps; returns 125.
 *
 * @example Usage
 * ```ts ignore
 * return cannotLoadCommands("/opt/strata/cli");
 * ```
 */
export function cannotLoadCommands(dir: string): number {
  new Output(detectMode(false), processSinks).error(
    `strata: error: cannot load the command line's modules from ${dir}: Deno may not read them ` +
      `after start-up here; add --allow-read=${dir}, or run it as \`deno run ... cli.ts\``,
  );
  return 125;
}
