/**
 * Where the cache is by default (`$STRATA_CACHE`, `/var/lib/strata` for
 * root, `${XDG_CACHE_HOME:-~/.cache}/strata` otherwise): every command asks,
 * so this stays small.
 *
 * @module
 */
import { join } from "@std/path";
import { readProcText } from "../sys/proc.ts";
import { isIdentityMap, parseMap } from "./idmap.ts";

function isRealRoot(): boolean {
  if (Deno.uid() !== 0) return false;
  try {
    return isIdentityMap({
      uid: parseMap(readProcText("/proc/self/uid_map")),
      gid: parseMap(readProcText("/proc/self/gid_map")),
    });
  } catch {
    return true;
  }
}

/**
 * The default cache root: `$STRATA_CACHE`, else `/var/lib/strata` for root
 * (real root: uid 0 in the initial user namespace), else
 * `${XDG_CACHE_HOME:-$HOME/.cache}/strata`. Root of a user namespace made by
 * an unprivileged user counts as that user.
 *
 * @example Usage
 * ```ts
 * import { defaultCacheRoot } from "./cache_root.ts";
 * console.log(defaultCacheRoot());
 * ```
 */
export function defaultCacheRoot(): string {
  const env = Deno.env.get("STRATA_CACHE");
  if (env) return env;
  if (isRealRoot()) return "/var/lib/strata";
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "strata");
  const home = Deno.env.get("HOME");
  if (!home) throw new Error("Cannot find a cache directory: set STRATA_CACHE or HOME");
  return join(home, ".cache", "strata");
}
