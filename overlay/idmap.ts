/**
 * Which cached layers a process may read: one whose files show, under this
 * process's uid/gid mapping, the owners they were extracted with.
 *
 * A layer's files on disk carry host (kernel) ids. The process that extracted
 * it saw each of them as the id its own mapping sends that host id back to;
 * `layer.json` records those ids (`ids`, sorted runs, as the extracting
 * process saw them) and that process's mapping (`idmap`, inside to host). A
 * process under another mapping sees host id H as the id its mapping sends H
 * to, or as the overflow id (65534, `nobody`) when H is not mapped at all.
 * So a layer reads back the same when, for every recorded id i, the writer's
 * mapping sends i to a host id H and the reader's mapping sends H back to i.
 * An unmapped H that happens to show as 65534 does not count: the kernel
 * still checks permissions against H, so a process running as 65534 in the
 * namespace would not own those files.
 *
 * Only the ids the files use matter, not the whole mapping: root's cache
 * (written under `0 0 4294967295`) reads the same from a user namespace that
 * maps `0 0 65536` as long as every owner is below 65536.
 *
 * @module
 */
import type { IdSpan, TreeIds } from "../layer/record.ts";
import { sha256Hex } from "../sys/sha256.ts";
import { formatRanges, type IdMap, idMapCompatible, type IdRange } from "./cache.ts";

/** What `layer.json` says about a layer's owners. */
export interface LayerOwnership {
  /** The mapping of the process that extracted it (`/proc/self/uid_map`, `gid_map`). */
  idmap: IdMap;
  /** The ids its inodes use, as that process saw them (absent: written by an older strata). */
  ids?: TreeIds;
  /** Some owner could not be set: the files kept the extracting process's ids. */
  ownersLost?: boolean;
  /** The applicator's warnings (an older strata said lost owners only there). */
  warnings?: string[];
}

/** Why a layer does not read back the same under a mapping. */
export type IdMisfit =
  | {
    /** A recorded id that reads back as another id, or not at all. */
    reason: "id";
    /** A uid or a gid. */
    kind: "uid" | "gid";
    /** The id as the extracting process saw it. */
    id: number;
    /** The host id it was written as (undefined: the record's own mapping does not map it). */
    host?: number;
    /** The id this mapping shows the host id as (undefined: unmapped, shown as the overflow id). */
    seenAs?: number;
  }
  | {
    /** The files kept the extracting process's ids: only that mapping reads them as extracted. */
    reason: "ownersLost";
  }
  | {
    /** No ids recorded (an older strata), and this mapping does not cover the whole recorded one. */
    reason: "unrecorded";
  };

/** The host id `id` stands for under `map`, or undefined when `map` does not map it. */
function toHost(map: readonly IdRange[], id: number): [host: number, left: number] | undefined {
  for (const [inside, outside, count] of map) {
    if (inside <= id && id < inside + count) return [outside + (id - inside), inside + count - id];
  }
  return undefined;
}

/** The id `map` shows host id `host` as, or undefined when `host` is not mapped. */
function fromHost(map: readonly IdRange[], host: number): [id: number, left: number] | undefined {
  for (const [inside, outside, count] of map) {
    if (outside <= host && host < outside + count) {
      return [inside + (host - outside), outside + count - host];
    }
  }
  return undefined;
}

/**
 * The first id of `ids` (as seen under `writer`) that does not read back as
 * itself under `reader`, with the host id it was written as and what `reader`
 * shows it as; undefined when every one does. Walks runs, not ids: each step
 * covers as many ids as both mappings keep linear over.
 *
 * @example Usage
 * ```ts
 * import { spanMisfit } from "./idmap.ts";
 * const full: [number, number, number][] = [[0, 0, 4294967295]];
 * console.log(spanMisfit([[0, 1], [1000, 1]], full, [[0, 0, 65536]])); // undefined
 * console.log(spanMisfit([[70000, 1]], full, [[0, 0, 65536]])); // { id: 70000, host: 70000 }
 * console.log(spanMisfit([[0, 1]], full, [[0, 100000, 65536]])); // { id: 0, host: 0 }
 * ```
 */
export function spanMisfit(
  ids: readonly IdSpan[],
  writer: readonly IdRange[],
  reader: readonly IdRange[],
): { id: number; host?: number; seenAs?: number } | undefined {
  for (const [first, count] of ids) {
    const end = first + count;
    for (let id = first; id < end;) {
      const w = toHost(writer, id);
      if (!w) return { id };
      const [host, wLeft] = w;
      const r = fromHost(reader, host);
      if (!r) return { id, host };
      const [seen, rLeft] = r;
      if (seen !== id) return { id, host, seenAs: seen };
      id += Math.min(end - id, wLeft, rLeft);
    }
  }
  return undefined;
}

/** True when `a` and `b` are the same mapping, range for range. */
export function sameIdMap(a: IdMap, b: IdMap): boolean {
  const same = (x: readonly IdRange[], y: readonly IdRange[]) =>
    x.length === y.length &&
    x.every((r, i) => r[0] === y[i][0] && r[1] === y[i][1] && r[2] === y[i][2]);
  return same(a.uid, b.uid) && same(a.gid, b.gid);
}

/** The warning an older strata's applicator gave when owners could not be set. */
const LOST_OWNERS_WARNING = "cannot set owners";

/**
 * Why the layer `record` describes does not read back with the owners it was
 * extracted with under `current`, or undefined when it does:
 * - the same mapping as the extracting process's: always;
 * - owners lost at extraction (the files kept the extracting user's ids, as
 *   when a user namespace maps only root): only that same mapping;
 * - ids recorded: each must read back as itself (see the module docs);
 * - no ids recorded (an older strata's layer): `current` must map every id
 *   the extracting mapping did, to the same host id (the rule that strata
 *   applied to the whole cache before), since its files may use any of them.
 *
 * @example Usage
 * ```ts
 * import { layerMisfit } from "./idmap.ts";
 * import type { IdMap } from "./cache.ts";
 * import type { TreeIds } from "../layer/record.ts";
 * const root: IdMap = { uid: [[0, 0, 4294967295]], gid: [[0, 0, 4294967295]] };
 * const below65536: IdMap = { uid: [[0, 0, 65536]], gid: [[0, 0, 65536]] };
 * const ids: TreeIds = { uid: [[0, 1], [1000, 1]], gid: [[0, 1]] };
 * console.log(layerMisfit({ idmap: root, ids }, below65536)); // undefined: all below 65536
 * ```
 */
export function layerMisfit(record: LayerOwnership, current: IdMap): IdMisfit | undefined {
  if (sameIdMap(record.idmap, current)) return undefined;
  const lost = record.ownersLost ??
    (record.ids === undefined &&
      (record.warnings ?? []).some((w) => w.includes(LOST_OWNERS_WARNING)));
  if (lost) return { reason: "ownersLost" };
  if (record.ids === undefined) {
    return idMapCompatible(record.idmap, current) ? undefined : { reason: "unrecorded" };
  }
  for (const kind of ["uid", "gid"] as const) {
    const m = spanMisfit(record.ids[kind], record.idmap[kind], current[kind]);
    if (m) return { reason: "id", kind, ...m };
  }
  return undefined;
}

/**
 * Says in words why a layer does not fit `current` (for error messages):
 * which id, the host id it was written as, and how `current` shows it.
 *
 * @example Usage
 * ```ts
 * import { describeMisfit } from "./idmap.ts";
 * import type { IdMap } from "./cache.ts";
 * const root: IdMap = { uid: [[0, 0, 4294967295]], gid: [[0, 0, 4294967295]] };
 * const below65536: IdMap = { uid: [[0, 0, 65536]], gid: [[0, 0, 65536]] };
 * const misfit = { reason: "id", kind: "uid", id: 70000, host: 70000 } as const;
 * console.log(describeMisfit(misfit, root, below65536)); // "... does not map ..."
 * ```
 */
export function describeMisfit(misfit: IdMisfit, written: IdMap, current: IdMap): string {
  const maps = (m: IdMap) => `uid map [${formatRanges(m.uid)}] gid map [${formatRanges(m.gid)}]`;
  const under = `extracted under ${maps(written)}`;
  if (misfit.reason === "ownersLost") {
    return `${under}, which could not give every file its owner (those kept the extracting ` +
      `user's ids), so it reads as extracted only under that same mapping, not under this ` +
      `process's ${maps(current)}`;
  }
  if (misfit.reason === "unrecorded") {
    return `${under} by an older strata, which did not record the ids its files use, and this ` +
      `process's ${maps(current)} does not map every id that one does the same way; ` +
      "`strata verify` run under that mapping records them";
  }
  const { kind, id, host, seenAs } = misfit;
  const map = `this process's ${kind} map [${formatRanges(current[kind])}]`;
  if (host === undefined) {
    return `${under}, and its record names ${kind} ${id}, which that mapping does not map ` +
      "(a damaged layer.json?)";
  }
  return `${under}, and holds files of ${kind} ${id} (host ${kind} ${host}), which ${map} ` +
    (seenAs === undefined
      ? "does not map (they would show as nobody)"
      : `shows as ${kind} ${seenAs}`);
}

/**
 * A short, stable name for a mapping: the first 16 hex digits of the sha256
 * of its ranges. Part of the directory name of a layer extracted for this
 * mapping alone (`layers/<key>~<id map key>`).
 *
 * @example Usage
 * ```ts
 * import { idMapKey } from "./idmap.ts";
 * console.log(idMapKey({ uid: [[0, 0, 65536]], gid: [[0, 0, 65536]] }).length); // 16
 * ```
 */
export function idMapKey(map: IdMap): string {
  return sha256Hex(`uid ${formatRanges(map.uid)}; gid ${formatRanges(map.gid)}`).slice(0, 16);
}

/** A recorded mapping's shape: `uid` and `gid` lists of `[inside, outside, count]`. */
export function isIdMap(v: unknown): v is IdMap {
  const ranges = (rs: unknown) =>
    Array.isArray(rs) && rs.length <= 340 &&
    rs.every((r) =>
      Array.isArray(r) && r.length === 3 && r.every((n) => Number.isSafeInteger(n) && n >= 0)
    );
  return typeof v === "object" && v !== null && ranges((v as IdMap).uid) &&
    ranges((v as IdMap).gid);
}

/** Recorded ids' shape: `uid` and `gid` lists of `[first, count]`, count ≥ 1. */
export function isTreeIds(v: unknown): v is TreeIds {
  const spans = (s: unknown) =>
    Array.isArray(s) &&
    s.every((r) =>
      Array.isArray(r) && r.length === 2 && Number.isSafeInteger(r[0]) && r[0] >= 0 &&
      Number.isSafeInteger(r[1]) && r[1] >= 1
    );
  return typeof v === "object" && v !== null && spans((v as TreeIds).uid) &&
    spans((v as TreeIds).gid);
}
