/**
 * The cache directory: where it is by default, its layout (every directory
 * 0700), and `idmap.json`, the uid/gid mapping its files were written under.
 *
 * Layout of a cache root:
 * - `layers/sha256-<hex>/` one published layer keyed by diff_id: `fs/` (an
 *   overlay lower directory) and `layer.json`; a layer whose tree depends
 *   on its parents (an implied parent directory, a hardlink copied up) is
 *   `layers/sha256-<hex>@<chain id hex>/`, one per chain of parents.
 * - `tmp/<random>/` work in progress; reclaimed when its owner is gone.
 * - `locks/` flock(2) lock files.
 * - `images/` image metadata; `containers/<id>/` live bundles.
 * - `idmap.json` the uid/gid mapping of the user namespace the cache was
 *   written from.
 *
 * @module
 */
import { join } from "@std/path";
import { accessible } from "../sys/fs.ts";
import { currentIdMap, type IdMap, idMapCompatible, IdMapMismatchError, isIdMap } from "./idmap.ts";

export {
  currentIdMap,
  formatRanges,
  IDENTITY_MAP,
  type IdMap,
  idMapCompatible,
  IdMapMismatchError,
  type IdRange,
  isIdentityMap,
} from "./idmap.ts";
export { defaultCacheRoot } from "./cache_root.ts";

/** The sub-directories of a cache root. */
export const CACHE_DIRS = ["layers", "tmp", "locks", "images", "containers"] as const;

// Synchronous: a handful of metadata calls on a local directory cost less on
// this thread than a round trip each through Deno's thread pool (every
// command opens the cache, a warm `strata run` included).
function mkdir700(path: string): void {
  Deno.mkdirSync(path, { recursive: true, mode: 0o700 });
  const st = Deno.statSync(path);
  if (st.mode !== null && (st.mode & 0o777) !== 0o700) Deno.chmodSync(path, 0o700);
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
 * Creates the cache layout (every directory 0700) and checks, or records,
 * `idmap.json`. A process whose mapping covers the recorded one (same host
 * ids for every recorded id) may use the cache, and records its own mapping
 * when it is larger; any other mapping is refused.
 *
 * @throws {IdMapMismatchError} when the cache was written under another mapping.
 *
 * @example Usage
 * ```ts ignore
 * import { openCache } from "./cache.ts";
 * const { idmap } = await openCache("/var/lib/strata");
 * ```
 */
export async function openCache(root: string): Promise<{ root: string; idmap: IdMap }> {
  mkdir700(root);
  // Below a 0700 root nobody else can have made them: one existence check
  // each (no Deno.statSync and its FileInfo) unless they are missing.
  for (const d of CACHE_DIRS) if (!accessible(join(root, d))) mkdir700(join(root, d));
  const current = currentIdMap();
  const file = join(root, "idmap.json");
  let recorded: IdMap | undefined;
  try {
    recorded = JSON.parse(Deno.readTextFileSync(file)) as IdMap;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Error(`Cannot read ${file}: ${(e as Error).message}`, { cause: e });
    }
  }
  if (recorded !== undefined && !isIdMap(recorded)) {
    throw new Error(
      `Cannot read ${file}: not a uid/gid mapping ({"uid": [[inside, outside, count], ...], "gid": [...]})`,
    );
  }
  if (recorded) {
    if (!idMapCompatible(recorded, current)) throw new IdMapMismatchError(root, recorded, current);
    if (idMapCompatible(current, recorded)) return { root, idmap: current };
  }
  // Record (or widen) the mapping: written to a temp name, then renamed.
  const tmp = `${file}.${crypto.randomUUID()}`;
  try {
    await Deno.writeTextFile(tmp, JSON.stringify(current, null, 2) + "\n", { mode: 0o600 });
    await Deno.rename(tmp, file);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {}); // a full disk leaves no half-written file
    throw e;
  }
  return { root, idmap: current };
}
