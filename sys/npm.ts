/**
 * npm packages imported when first needed, without `--allow-read`.
 *
 * Deno reads the module graph of every string-literal import, dynamic ones
 * included, when a program starts; an npm package in that graph also costs
 * its resolution (the lockfile, `node_modules`, the package's metadata) on
 * every start, even of a command that never uses it. A package imported by a
 * computed specifier is resolved only when the import runs, and, unlike a
 * local module, needs no read permission for that. Local modules must keep
 * literal specifiers (tests/permission_guard_test.ts checks), so the one
 * computed import lives here, for `npm:` specifiers alone.
 *
 * @module
 */

/** An `npm:` specifier could not be imported; names it. */
export class NpmImportError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NpmImportError";
  }
}

/**
 * Imports the npm package `specifier` (`npm:NAME@VERSION`, pinned as in
 * deno.json's import map) when called, not when the program starts.
 *
 * @throws {NpmImportError} when `specifier` is not an `npm:` specifier or the
 * package cannot be loaded (not installed and the registry out of reach).
 *
 * @example Usage
 * ```ts ignore
 * import { importNpm } from "./npm.ts";
 * const { parse } = await importNpm<{ parse(s: string): unknown }>("npm:smol-toml@1.9.1");
 * ```
 */
export async function importNpm<T>(specifier: string): Promise<T> {
  if (!/^npm:(@[\w.-]+\/)?[\w.-]+@[\w.+-]+(\/[\w./-]*)?$/.test(specifier)) {
    throw new NpmImportError(`not a pinned npm: specifier: ${specifier}`);
  }
  try {
    return await import(specifier) as T;
  } catch (e) {
    throw new NpmImportError(`cannot load ${specifier}: ${(e as Error)?.message ?? e}`, {
      cause: e,
    });
  }
}
