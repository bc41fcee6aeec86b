/**
 * The cache directory: where it is by default, its layout (every directory
 * 0700), and the uid/gid mapping of this process.
 *
 * Layout of a cache root:
 * - `layers/sha256-<hex>/` one published layer keyed by diff_id: `fs/` (an
 *   overlay lower directory) and `layer.json`; a layer whose tree depends
 *   on its parents (an implied parent directory, a hardlink copied up) is
 *   `layers/sha256-<hex>@<chain id hex>/`, one per chain of parents.
 * - `tmp/<random>/` work in progress; reclaimed when its owner is gone.
 * - `locks/` flock(2) lock files.
 * - `layers/<key>~<id map key>/` a layer extracted for one uid/gid mapping
 *   alone (see `idmap.ts`): the shared copy's owners would read wrong under
 *   it, or it could not set the owners the layer names.
 * - `images/` image metadata; `containers/<id>/` live bundles.
 *
 * @module
 */
import { join } from "@std/path";
import { readProcText } from "../sys/proc.ts";
import { accessible } from "../sys/fs.ts";
import { getEnv } from "../sys/env.ts";
import { chmodSync, mkdirSync, statSync } from "../sys/files.ts";
import { getUid } from "../sys/process.ts";

/** The sub-directories of a cache root. */
export const CACHE_DIRS = ["layers", "tmp", "locks", "images", "containers"] as const;

/** One line of `/proc/self/uid_map`: ids `[inside, inside+count)` are host ids `[outside, ...)`. */
export type IdRange = [inside: number, outside: number, count: number];

/** The uid and gid mappings of a user namespace. */
export interface IdMap {
  /** `/proc/self/uid_map`. */
  uid: IdRange[];
  /** `/proc/self/gid_map`. */
  gid: IdRange[];
}

/** The mapping of the initial user namespace (every id is itself). */
export const IDENTITY_MAP: IdMap = {
  uid: [[0, 0, 4294967295]],
  gid: [[0, 0, 4294967295]],
};

function parseMap(text: string): IdRange[] {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
    const [a, b, c] = l.split(/\s+/).map(Number);
    return [a, b, c] as IdRange;
  }).sort((x, y) => x[0] - y[0]);
}

/**
 * Reads the uid/gid mapping of the current user namespace.
 *
 * @example Usage
 * ```ts
 * import { currentIdMap } from "./cache.ts";
 * console.log(currentIdMap().uid); // [[0, 0, 4294967295]] outside any user namespace
 * ```
 */
export function currentIdMap(): IdMap {
  // Read once: a process' mapping is fixed when its user namespace is made
  // (strata enters a new one only by re-executing), and every command asks.
  idMap ??= {
    uid: parseMap(readProcText("/proc/self/uid_map")),
    gid: parseMap(readProcText("/proc/self/gid_map")),
  };
  const copy = (rs: IdRange[]) => rs.map(([a, b, c]): IdRange => [a, b, c]);
  return { uid: copy(idMap.uid), gid: copy(idMap.gid) };
}

let idMap: IdMap | undefined;

/** Tells whether `map` is the identity mapping of the initial user namespace. */
export function isIdentityMap(map: IdMap): boolean {
  const one = (r: IdRange[]) =>
    r.length === 1 && r[0][0] === 0 && r[0][1] === 0 && r[0][2] === 4294967295;
  return one(map.uid) && one(map.gid);
}

/** Formats ranges the way `/proc/self/uid_map` does, on one line: `0 1001 1, 1 100000 65536`. */
export function formatRanges(ranges: IdRange[]): string {
  return ranges.map((r) => r.join(" ")).join(", ");
}

/** True when `current` maps every id `recorded` maps, to the same host id. */
function covers(current: IdRange[], recorded: IdRange[]): boolean {
  for (const [inside, outside, count] of recorded) {
    let pos = inside;
    const end = inside + count;
    while (pos < end) {
      const r = current.find(([ci, , cc]) => ci <= pos && pos < ci + cc);
      if (!r || r[1] + (pos - r[0]) !== outside + (pos - inside)) return false;
      pos = Math.min(r[0] + r[2], end);
    }
  }
  return true;
}

/**
 * Tells whether files written under `recorded` read back with the same
 * owners under `current`: every id `recorded` maps must map to the same host
 * id. A larger mapping is compatible; a smaller or shifted one is not (files
 * would show other owners, or `nobody`).
 *
 * @example Usage
 * ```ts
 * import { type IdMap, idMapCompatible } from "./cache.ts";
 * const rootOnly: IdMap = { uid: [[0, 1001, 1]], gid: [[0, 1001, 1]] };
 * const sub: IdMap["uid"] = [[0, 1001, 1], [1, 100000, 65536]];
 * const withSub: IdMap = { uid: sub, gid: sub };
 * console.log(idMapCompatible(rootOnly, withSub)); // true
 * console.log(idMapCompatible(withSub, rootOnly)); // false
 * ```
 */
export function idMapCompatible(recorded: IdMap, current: IdMap): boolean {
  return covers(current.uid, recorded.uid) && covers(current.gid, recorded.gid);
}

function isRealRoot(): boolean {
  if (getUid() !== 0) return false;
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
 * import { defaultCacheRoot } from "./cache.ts";
 * console.log(defaultCacheRoot());
 * ```
 */
export function defaultCacheRoot(): string {
  const env = getEnv("STRATA_CACHE");
  if (env) return env;
  if (isRealRoot()) return "/var/lib/strata";
  const xdg = getEnv("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "strata");
  const home = getEnv("HOME");
  if (!home) throw new Error("Cannot find a cache directory: set STRATA_CACHE or HOME");
  return join(home, ".cache", "strata");
}

// Synchronous: a handful of metadata calls on a local directory cost less on
// this thread than a round trip each through Deno's thread pool (every
// command opens the cache, a warm `strata run` included).
function mkdir700(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  const st = statSync(path);
  if (st.mode !== null && (st.mode & 0o777) !== 0o700) chmodSync(path, 0o700);
}

/**
 * Why a cache on an overlayfs cannot work: overlayfs takes no upper directory
 * (nor char 0/0 whiteouts) on overlayfs.
 *
 * @example Usage
 * ```ts
 * import { onOverlayfs } from "./cache.ts";
 * console.log(onOverlayfs("/var/lib/strata"));
 * ```
 */
export function onOverlayfs(root: string): string {
  return `${root} is on an overlayfs (for example a container's root filesystem), and ` +
    `overlayfs cannot use an upper directory on overlayfs: put the cache on another ` +
    `filesystem (a volume, a bind mount or a tmpfs)`;
}

/**
 * Creates the cache layout (every directory 0700) and returns it with this
 * process's uid/gid mapping. Which layers the mapping may read is decided
 * per layer, from what each one's `layer.json` records (see `idmap.ts`):
 * the cache itself is open to any mapping. (An older strata kept one
 * mapping for the whole cache in `idmap.json`; it is left alone, unread.)
 *
 * @example Usage
 * ```ts ignore
 * import { openCache } from "./cache.ts";
 * const { idmap } = await openCache("/var/lib/strata");
 * ```
 */
export function openCache(root: string): Promise<{ root: string; idmap: IdMap }> {
  try {
    mkdir700(root);
    // Below a 0700 root nobody else can have made them: one existence check
    // each (no Deno.statSync and its FileInfo) unless they are missing.
    for (const d of CACHE_DIRS) if (!accessible(join(root, d))) mkdir700(join(root, d));
    return Promise.resolve({ root, idmap: currentIdMap() });
  } catch (e) {
    return Promise.reject(e);
  }
}
