/**
 * POSIX path helpers with `@std/path`'s (and `node:path`'s POSIX) semantics,
 * in plain TypeScript. deno.json maps `@std/path` here: importing `node:path`
 * costs every process ~20 ms (the first `node:` import boots Deno's Node
 * compatibility layer), a large share of a warm `strata run`; and JSR, where
 * `jsr:@std/path` lives, is not reachable from every build host. Swapping
 * back is the one import-map line.
 *
 * Only what strata uses: {@linkcode join}, {@linkcode dirname},
 * {@linkcode basename}, {@linkcode extname}, {@linkcode resolve},
 * {@linkcode relative}, {@linkcode isAbsolute}, {@linkcode normalize} and
 * {@linkcode SEPARATOR}. strata runs on Linux only, so there is no Windows
 * flavour.
 *
 * @module
 */
import { cwd } from "./process.ts";

/** The path separator, `/`. */
export const SEPARATOR = "/";
/** The path separator, `/` (`node:path`'s name). */
export const sep = "/";
/** The `PATH` list delimiter, `:`. */
export const DELIMITER = ":";
/** The `PATH` list delimiter, `:` (`node:path`'s name). */
export const delimiter = ":";

function assertPath(path: unknown, what = "path"): asserts path is string {
  if (typeof path !== "string") {
    throw new TypeError(`The "${what}" argument must be of type string, not ${typeof path}`);
  }
}

/**
 * Resolves `.` and `..` segments and collapses repeated slashes of a path
 * whose leading slash (if any) was taken off; `..` above the start is kept
 * only when `allowAboveRoot`.
 */
function normalizeString(path: string, allowAboveRoot: boolean): string {
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (allowAboveRoot) out.push("..");
      continue;
    }
    out.push(seg);
  }
  return out.join("/");
}

/**
 * Normalizes `path`: collapses repeated slashes, resolves `.` and `..`
 * (a relative path keeps leading `..`), keeps one trailing slash; `""`
 * becomes `"."`.
 *
 * @example Usage
 * ```ts
 * import { normalize } from "./path.ts";
 * console.log(normalize("/a//b/../c/")); // "/a/c/"
 * console.log(normalize("../x/./y")); // "../x/y"
 * ```
 */
export function normalize(path: string): string {
  assertPath(path);
  if (path.length === 0) return ".";
  const absolute = path.startsWith("/");
  const trailing = path.endsWith("/");
  let p = normalizeString(path, !absolute);
  if (p.length === 0) {
    if (absolute) return "/";
    return trailing ? "./" : ".";
  }
  if (trailing) p += "/";
  return absolute ? `/${p}` : p;
}

/**
 * Joins the non-empty `paths` with `/` and normalizes the result; no
 * argument (or only empty ones) gives `"."`.
 *
 * @example Usage
 * ```ts
 * import { join } from "./path.ts";
 * console.log(join("/var/lib", "strata", "../x")); // "/var/lib/x"
 * ```
 */
export function join(...paths: string[]): string {
  let joined: string | undefined;
  for (const p of paths) {
    assertPath(p);
    if (p.length > 0) joined = joined === undefined ? p : `${joined}/${p}`;
  }
  return joined === undefined ? "." : normalize(joined);
}

/**
 * Resolves `paths` right to left into an absolute, normalized path without a
 * trailing slash, starting from the working directory when none of them is
 * absolute.
 *
 * @example Usage
 * ```ts
 * import { resolve } from "./path.ts";
 * console.log(resolve("/a/b", "../c", "d")); // "/a/c/d"
 * ```
 */
export function resolve(...paths: string[]): string {
  let resolved = "";
  let absolute = false;
  for (let i = paths.length - 1; i >= -1 && !absolute; i--) {
    const p = i >= 0 ? paths[i] : cwd();
    assertPath(p, i >= 0 ? `paths[${i}]` : "cwd");
    if (p.length === 0) continue;
    resolved = resolved ? `${p}/${resolved}` : p;
    absolute = p.startsWith("/");
  }
  const body = normalizeString(resolved, !absolute);
  if (absolute) return `/${body}`;
  return body.length > 0 ? body : ".";
}

/**
 * Tells whether `path` starts at the root (`/`).
 *
 * @example Usage
 * ```ts
 * import { isAbsolute } from "./path.ts";
 * console.log(isAbsolute("/etc"), isAbsolute("etc")); // true false
 * ```
 */
export function isAbsolute(path: string): boolean {
  assertPath(path);
  return path.startsWith("/");
}

/**
 * The path from `from` to `to` (both resolved first); `""` when they are the
 * same.
 *
 * @example Usage
 * ```ts
 * import { relative } from "./path.ts";
 * console.log(relative("/a/b/c", "/a/d")); // "../../d"
 * ```
 */
export function relative(from: string, to: string): string {
  assertPath(from, "from");
  assertPath(to, "to");
  if (from === to) return "";
  const f = resolve(from);
  const t = resolve(to);
  if (f === t) return "";
  const fs = f === "/" ? [] : f.slice(1).split("/");
  const ts = t === "/" ? [] : t.slice(1).split("/");
  let common = 0;
  while (common < fs.length && common < ts.length && fs[common] === ts[common]) common++;
  const up = fs.slice(common).map(() => "..");
  return [...up, ...ts.slice(common)].join("/");
}

/**
 * The directory part of `path`: everything before its last segment
 * (trailing slashes ignored); `"."` when there is none, `"/"` for the root.
 *
 * @example Usage
 * ```ts
 * import { dirname } from "./path.ts";
 * console.log(dirname("/a/b/"), dirname("a"), dirname("/a")); // "/a" "." "/"
 * ```
 */
export function dirname(path: string): string {
  assertPath(path);
  if (path.length === 0) return ".";
  const absolute = path.startsWith("/");
  let end = -1;
  let matchedSlash = true;
  for (let i = path.length - 1; i >= 1; --i) {
    if (path[i] === "/") {
      if (!matchedSlash) {
        end = i;
        break;
      }
    } else {
      matchedSlash = false;
    }
  }
  if (end === -1) return absolute ? "/" : ".";
  if (absolute && end === 1) return "//";
  return path.slice(0, end);
}

/**
 * The last segment of `path` (trailing slashes ignored), without `suffix`
 * when it ends with it (and is not all of it).
 *
 * @example Usage
 * ```ts
 * import { basename } from "./path.ts";
 * console.log(basename("/a/b.tar.gz"), basename("/a/b.tar.gz", ".gz")); // "b.tar.gz" "b.tar"
 * ```
 */
export function basename(path: string, suffix?: string): string {
  assertPath(path);
  if (suffix !== undefined) assertPath(suffix, "suffix");
  let end = path.length;
  while (end > 0 && path[end - 1] === "/") end--;
  if (end === 0) return "";
  const start = path.lastIndexOf("/", end - 1) + 1;
  const base = path.slice(start, end);
  if (suffix && suffix !== base && base.endsWith(suffix)) {
    return base.slice(0, base.length - suffix.length);
  }
  return base;
}

/**
 * The extension of the last segment of `path`, from its last `.` (a leading
 * dot does not count): `".gz"` for `a.tar.gz`, `""` for `.profile`.
 *
 * @example Usage
 * ```ts
 * import { extname } from "./path.ts";
 * console.log(extname("/x/a.tar.gz"), extname("/x/.profile")); // ".gz" ""
 * ```
 */
export function extname(path: string): string {
  assertPath(path);
  const base = basename(path);
  const dot = base.lastIndexOf(".");
  if (dot <= 0) return "";
  if (dot === 1 && base === "..") return "";
  return base.slice(dot);
}
