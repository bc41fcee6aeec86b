/**
 * strata's own modules, loaded when a command needs them rather than when
 * the program starts, with or without `--allow-read`.
 *
 * Deno reads the whole module graph of every string-literal import, dynamic
 * ones included, before the program's first line runs: for the command line
 * that is ~80 modules, ~10 ms of every start, a warm `strata run` included,
 * which needs one of them. A module named by a computed specifier is read
 * only when the import runs, but Deno then asks for read permission on its
 * file, and strata runs with `--allow-run --allow-ffi` alone. So:
 *
 * - {@linkcode importOwnModule} imports a local module by a computed
 *   specifier when this process may read it (`-A`, `--allow-read`, or a
 *   remote module, which Deno's `--allow-import` rules cover);
 * - otherwise {@linkcode runAsEntry} runs the same `deno run` command line
 *   again (same pid, same Deno flags, same arguments) with that module as
 *   the main one: its literal imports are then the start-up graph, which
 *   needs no permission. No permission is added.
 *
 * @module
 */
import { readProcText } from "./proc.ts";
import { cwd, execPath } from "./process.ts";
import { resolve } from "./path.ts";
import { execInPlace } from "./exec.ts";

/** The file path of a `file:` URL. */
function filePath(url: URL): string {
  return decodeURIComponent(url.pathname);
}

/**
 * Tells whether Deno lets this process import the module at `url` after
 * start-up: a local file it may read, or a remote module.
 *
 * @example Usage
 * ```ts
 * import { mayImportLater } from "./own_modules.ts";
 * console.log(mayImportLater(new URL("./proc.ts", import.meta.url)));
 * ```
 */
export function mayImportLater(url: URL): boolean {
  if (url.protocol !== "file:") return true;
  try {
    return Deno.permissions.querySync({ name: "read", path: filePath(url) }).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Imports the module at `url` now, outside the start-up module graph, when
 * {@linkcode mayImportLater} says Deno allows it; undefined otherwise.
 *
 * @example Usage
 * ```ts ignore
 * import { importOwnModule } from "./own_modules.ts";
 * const m = await importOwnModule<typeof import("./proc.ts")>(new URL("./proc.ts", import.meta.url));
 * ```
 */
export async function importOwnModule<T>(url: URL): Promise<T | undefined> {
  if (!mayImportLater(url)) return undefined;
  return await import(url.href) as T;
}

/**
 * The command line that runs `entry` as this process runs its main module:
 * `deno run <this process's Deno flags> <entry> <Deno.args>`. Undefined when
 * this process is not `deno run MAIN ARGS...` as `/proc/self/cmdline` shows
 * it (a compiled binary, `deno eval`, a main module not found there).
 */
function entryArgv(entry: URL): string[] | undefined {
  let argv: string[];
  try {
    argv = readProcText("/proc/self/cmdline").split("\0");
  } catch {
    return undefined;
  }
  if (argv.at(-1) === "") argv.pop();
  if (argv[1] !== "run" || Deno.build.standalone) return undefined;
  const main = new URL(Deno.mainModule);
  if (main.protocol !== "file:") return undefined;
  const mainPath = filePath(main);
  const here = cwd();
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    let named: string;
    try {
      named = a.startsWith("file:") ? filePath(new URL(a)) : resolve(here, a);
    } catch {
      continue;
    }
    if (named !== mainPath) continue;
    const rest = argv.slice(i + 1);
    // The arguments after it must be the program's own, or it was a flag's value.
    if (rest.length !== Deno.args.length || rest.some((x, j) => x !== Deno.args[j])) continue;
    return ["run", ...argv.slice(2, i), filePath(entry), ...rest];
  }
  return undefined;
}

/**
 * Becomes `deno run <the same Deno flags> <entry> <the same arguments>`
 * (execvp: same pid, stdio, environment and working directory). Returns
 * only when that cannot be done: this process is not such a command line,
 * or FFI or the exec failed.
 *
 * @example Usage
 * ```ts ignore
 * import { runAsEntry } from "./own_modules.ts";
 * runAsEntry(new URL("../cli/cmd_main.ts", import.meta.url));
 * console.error("cannot run it");
 * ```
 */
export function runAsEntry(entry: URL): void {
  const argv = entryArgv(entry);
  if (!argv) return;
  let deno: string;
  try {
    deno = execPath();
  } catch {
    return;
  }
  execInPlace(deno, argv, {});
}
