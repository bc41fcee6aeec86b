/**
 * Path policy for tar entry names: every name is CONFINED to the root it is
 * applied to, never refused. A name is cleaned lexically (`.` and empty
 * components dropped, `..` pops one component) and a `..` at the root stays
 * at the root, as if the root were `/`: `../../etc/passwd` and
 * `/etc/passwd` both mean `<root>/etc/passwd`. That is what
 * `openat2(RESOLVE_IN_ROOT)` and `filepath-securejoin` do for symlinks, which
 * the applicator resolves the same way when it opens each parent directory.
 *
 * @module
 */

/**
 * Cleans a tar entry name (or hardlink target) into a root-relative path with
 * no `.`, `..`, empty or leading `/` components; `""` means the root itself.
 * `..` never climbs above the root.
 *
 * @example Usage
 * ```ts
 * import { confine } from "./path.ts";
 * console.log(confine("./usr//bin/")); // "usr/bin"
 * console.log(confine("../../etc/passwd")); // "etc/passwd"
 * console.log(confine("/a/b/../../..")); // ""
 * ```
 */
export function confine(name: string): string {
  if (isClean(name)) return name;
  const out: string[] = [];
  for (const c of name.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") out.pop();
    else out.push(c);
  }
  return out.join("/");
}

// A cheap test for the common case (a name with nothing to clean), so that
// most entries skip the split and join.
function isClean(name: string): boolean {
  const n = name.length;
  if (n === 0 || name.charCodeAt(0) === 47 || name.charCodeAt(n - 1) === 47) return false;
  if (name.includes("//")) return false;
  // Any "." component: ".", "./x", "x/.", "x/./y", and ".." likewise.
  let start = 0;
  while (start <= n) {
    let end = name.indexOf("/", start);
    if (end < 0) end = n;
    const len = end - start;
    if (
      name.charCodeAt(start) === 46 &&
      (len === 1 || (len === 2 && name.charCodeAt(start + 1) === 46))
    ) return false;
    start = end + 1;
  }
  return true;
}

/**
 * Splits a confined path into its parent and its last component;
 * `["", "x"]` for a top-level name.
 *
 * @example Usage
 * ```ts
 * import { splitPath } from "./path.ts";
 * console.log(splitPath("usr/bin/ls")); // ["usr/bin", "ls"]
 * ```
 */
export function splitPath(path: string): [string, string] {
  const i = path.lastIndexOf("/");
  return i < 0 ? ["", path] : [path.slice(0, i), path.slice(i + 1)];
}

/**
 * Joins a confined directory path and a name.
 *
 * @example Usage
 * ```ts
 * import { joinPath } from "./path.ts";
 * console.log(joinPath("", "etc")); // "etc"
 * console.log(joinPath("etc", "passwd")); // "etc/passwd"
 * ```
 */
export function joinPath(dir: string, name: string): string {
  return dir === "" ? name : `${dir}/${name}`;
}

/**
 * Tells whether `path` is `dir` or lies below it (both confined; `""` is the root).
 *
 * @example Usage
 * ```ts
 * import { isWithin } from "./path.ts";
 * console.log(isWithin("a/b/c", "a/b")); // true
 * console.log(isWithin("a/bc", "a/b")); // false
 * ```
 */
export function isWithin(path: string, dir: string): boolean {
  if (dir === "") return true;
  return path === dir || (path.length > dir.length && path.startsWith(dir) &&
    path.charCodeAt(dir.length) === 47);
}
