/**
 * Builds the bundled CLI exactly as `deno task build` does (the command is
 * read from deno.json), into a directory of the caller's choice, for the
 * tests and the benchmarks.
 *
 * @module
 */
import { join } from "@std/path";
import { denoPath, repoRoot, sh } from "./_helpers.ts";

/**
 * Runs deno.json's `build` task with its `--outdir dist` replaced by
 * `outdir`; returns the path of the bundled `cli.js`.
 */
export async function buildCli(outdir: string): Promise<string> {
  const config = JSON.parse(await Deno.readTextFile(join(repoRoot, "deno.json")));
  const task: string = config.tasks.build;
  const words = task.split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "bundle") {
    throw new Error(`unexpected build task: ${task}`);
  }
  const i = words.indexOf("--outdir");
  if (i < 0 || words[i + 1] !== "dist") throw new Error(`build task has no --outdir dist: ${task}`);
  words[i + 1] = outdir;
  await sh(denoPath, words.slice(1), { cwd: repoRoot });
  return join(outdir, "cli.js");
}
