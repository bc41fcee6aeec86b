/**
 * uid/gid mappings: what a user namespace maps (`/proc/self/uid_map`,
 * `gid_map`), and whether files written under one mapping read back with the
 * same owners under another (the check every command makes before using a
 * cache, `idmap.json`). Kept apart from `cache.ts` so that a warm run checks
 * it without loading the rest of the cache code.
 *
 * @module
 */
import { readProcText } from "../sys/proc.ts";

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

/**
 * Parses the text of `/proc/self/uid_map` (or `gid_map`) into ranges, sorted
 * by their first inside id.
 *
 * @example Usage
 * ```ts
 * import { parseMap } from "./idmap.ts";
 * console.log(parseMap("         0       1001          1\n")); // [[0, 1001, 1]]
 * ```
 */
export function parseMap(text: string): IdRange[] {
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
 * import { currentIdMap } from "./idmap.ts";
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
 * import { type IdMap, idMapCompatible } from "./idmap.ts";
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

/** The cache was written under a uid/gid mapping the current process does not have. */
export class IdMapMismatchError extends Error {
  /** The cache root. */
  readonly cacheRoot: string;
  /** The mapping recorded in `idmap.json`. */
  readonly recorded: IdMap;
  /** The mapping of this process. */
  readonly current: IdMap;
  /** Creates the error. */
  constructor(cacheRoot: string, recorded: IdMap, current: IdMap) {
    super(
      `Cannot use the cache ${cacheRoot}: it was written under uid map [${
        formatRanges(recorded.uid)
      }] gid map [${formatRanges(recorded.gid)}], but this process runs under uid map [${
        formatRanges(current.uid)
      }] gid map [${
        formatRanges(current.gid)
      }]; its files would show wrong owners. Use another cache (STRATA_CACHE) or the same mapping ` +
        "(the same user, with the same /etc/subuid and /etc/subgid ranges)",
    );
    this.name = "IdMapMismatchError";
    this.cacheRoot = cacheRoot;
    this.recorded = recorded;
    this.current = current;
  }
}

/**
 * Tells whether `v` has a recorded mapping's shape: `uid` and `gid` lists of
 * `[inside, outside, count]` ids.
 *
 * @example Usage
 * ```ts
 * import { isIdMap } from "./idmap.ts";
 * console.log(isIdMap({ uid: [[0, 0, 1]], gid: [[0, 0, 1]] }), isIdMap({ uid: 1 })); // true false
 * ```
 */
export function isIdMap(v: unknown): v is IdMap {
  const ranges = (rs: unknown) =>
    Array.isArray(rs) && rs.every((r) =>
      Array.isArray(r) && r.length === 3 &&
      r.every((n) => Number.isSafeInteger(n) && n >= 0)
    );
  return typeof v === "object" && v !== null && ranges((v as IdMap).uid) &&
    ranges((v as IdMap).gid);
}
