/**
 * A Worker's module without `--allow-read`. Deno loads a Worker's module
 * (and every module it imports) only with read permission on its file, even
 * when the program's own modules load without it. Without `--allow-read`,
 * {@linkcode workerModule} reads the module and its static imports through
 * libc (sys/files.ts) and hands them to Deno as `blob:` URLs, each import
 * pointing at its dependency's blob, so the Worker runs the same code from
 * the same files. With `--allow-read` it returns the module's own URL.
 *
 * Only static `import`/`export ... from` statements are followed (the
 * Worker's modules use no dynamic imports of local files); type-only ones
 * are dropped, as the TypeScript emit drops them. `node:` and other
 * non-file specifiers are left as they are.
 *
 * @module
 */
import { readTextFileSync } from "./files.ts";
import { granted } from "./permissions.ts";

/** A Worker's module could not be prepared; names the module. */
export class WorkerModuleError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WorkerModuleError";
  }
}

const built = new Map<string, string>();

/**
 * The URL to give `new Worker(...)` for the module at `url`: `url` itself
 * when Deno may read it, else a `blob:` URL of the same module graph (built
 * once per process).
 *
 * @throws {WorkerModuleError} when a module of the graph cannot be read or
 * imports in a cycle.
 *
 * @example Usage
 * ```ts ignore
 * import { workerModule } from "./worker.ts";
 * const w = new Worker(workerModule(new URL("./w.ts", import.meta.url)), { type: "module" });
 * ```
 */
export function workerModule(url: URL): string | URL {
  if (url.protocol !== "file:" || granted("read") || Deno.build.standalone) return url;
  let blob = built.get(url.href);
  if (!blob) {
    blob = load(url.href, new Map(), []);
    built.set(url.href, blob);
  }
  return blob;
}

/**
 * `import`/`export` statements that start a line (TypeScript sources) or
 * follow a `;` or `}` (minified bundles): group 1 the clause, group 2 or 3
 * the specifier. JSDoc examples start with ` * ` and are not matched.
 */
const STATEMENT =
  /(?:^|[;}])[ \t]*(import|export)(?=[\s{*"'])([^;'"`]*?)(?:\bfrom[ \t]*(["'])([^"'\n]+)\3|(["'])([^"'\n]+)\5)/gm;

function isTypeOnly(kind: string, clause: string): boolean {
  const c = clause.trim();
  if (/^type\b(?!\s*,)/.test(c) && !/^type\s+from\b/.test(c)) return true;
  if (kind === "export" && /^type\s*\{/.test(c)) return true;
  const braces = /^\{([^}]*)\}$/.exec(c);
  if (!braces) return false;
  const names = braces[1].split(",").map((n) => n.trim()).filter(Boolean);
  return names.length > 0 && names.every((n) => /^type\s/.test(n));
}

function load(href: string, done: Map<string, string>, path: string[]): string {
  const have = done.get(href);
  if (have) return have;
  if (path.includes(href)) {
    throw new WorkerModuleError(
      `cannot load the worker's modules without --allow-read: they import in a cycle (${
        [...path.slice(path.indexOf(href)), href].join(" -> ")
      })`,
    );
  }
  let source: string;
  try {
    source = readTextFileSync(decodeURIComponent(new URL(href).pathname));
  } catch (e) {
    throw new WorkerModuleError(`cannot read the worker module ${href}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const next = [...path, href];
  const out = source.replace(
    STATEMENT,
    (
      all,
      kind: string,
      clause: string,
      _q1,
      fromSpec?: string,
      _q2?: string,
      bareSpec?: string,
    ) => {
      const spec = fromSpec ?? bareSpec!;
      if (fromSpec === undefined && kind === "export") return all; // not a re-export
      if (fromSpec !== undefined && isTypeOnly(kind, clause)) {
        // Dropped, as the emit drops it; the separator before it stays.
        return all.startsWith(";") || all.startsWith("}") ? all[0] : "";
      }
      const target = resolveSpecifier(spec, href);
      if (!target.startsWith("file:")) return all;
      const blob = load(target, done, next);
      return all.slice(0, all.length - spec.length - 1) + blob + all.slice(-1);
    },
  );
  const type = href.endsWith(".ts") || href.endsWith(".mts")
    ? "application/typescript"
    : "text/javascript";
  const url = URL.createObjectURL(new Blob([out], { type }));
  done.set(href, url);
  return url;
}

function resolveSpecifier(spec: string, from: string): string {
  if (spec.startsWith("./") || spec.startsWith("../") || spec.startsWith("/")) {
    return new URL(spec, from).href;
  }
  try {
    return import.meta.resolve(spec); // the import map
  } catch {
    return spec;
  }
}
