/**
 * The cache housekeeping commands: `ls [--json]`, `rm IMAGE` and `prune`.
 *
 * @module
 */
import { join } from "@std/path";
import { ImageNotFoundError, ImageStore } from "../image/store.ts";
import { removeRunRecords } from "./run_records.ts";
import { storedName } from "../image/open.ts";
import { reclaimStaleBundles } from "../bundle/bundler.ts";
import { reclaimTemp } from "../overlay/lock.ts";
import { chainKey } from "../overlay/resolver.ts";
import { currentIdMap, type IdMap } from "../overlay/cache.ts";
import { describeMisfit, idMapKey, isIdMap, layerMisfit } from "../overlay/idmap.ts";
import type { TreeIds } from "../layer/record.ts";
import type { Context } from "./context.ts";
import { CliError } from "./errors.ts";
import { escapeControls, formatBytes, shortDigest } from "./output.ts";
import { enterNamespace } from "./pipeline.ts";
import {
  cachedLayers,
  diskUsage,
  exists,
  liveLayers,
  reclaimLayerLocks,
  referencedLayers,
  removeLayer,
  storedImages,
} from "./cache_scan.ts";

/** The shape `strata ls --json` prints. */
export interface LsJson {
  /** The cache root. */
  cache: string;
  /** Cached images, sorted by name. */
  images: {
    name: string;
    digest: string;
    platform: string;
    source?: string;
    saved: string;
    /** Total size of the layer blobs (compressed), bytes. */
    size: number;
    /** Bytes of file content of its layers as extracted in the cache. */
    extracted: number;
    /** Every layer cached. */
    complete: boolean;
    layers: {
      digest: string;
      diffID: string;
      size: number;
      /** A copy this process's uid/gid mapping may use is cached. */
      cached: boolean;
      /** That copy's directory name under `layers/`. */
      dir?: string;
      /** The uids and gids its files use (`[first, count]` runs), as extracted. */
      ids?: TreeIds;
      /** The uid/gid mapping it was extracted under. */
      idmap?: IdMap;
      /** Some owner could not be set at extraction: right for that mapping alone. */
      ownersLost?: boolean;
      /** Why the cached copy does not fit this process's mapping (then `cached` is false). */
      unfit?: string;
    }[];
  }[];
  /** Published layers in the cache. */
  layers: { count: number; unreferenced: number };
  /** Bytes the whole cache directory uses on disk. */
  diskUsage: number;
}

/**
 * Runs `strata ls`.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * await main(["ls", "--json"]);
 * ```
 */
export async function lsCommand(ctx: Context): Promise<number> {
  const root = ctx.cacheRoot;
  if (await exists(root)) await enterNamespace(ctx); // layers may belong to mapped ids
  const layers = await cachedLayers(root);
  // A layer is cached as `<key>` (its tree does not depend on its parents)
  // or as `<key>@<chain hex>` (extracted over this image's parents); when
  // this mapping may not use that copy, maybe as this mapping's own copy,
  // the same name with `~<id map key>` (as CachingLayerResolver looks).
  const byKey = new Map(layers.map((l) => [l.key, l]));
  const idmap = currentIdMap();
  const own = idMapKey(idmap);
  const find = (ids: string[], i: number) => {
    let names: string[];
    try {
      names = [ids[i].replace(":", "-"), chainKey(ids[i], ids.slice(0, i))];
    } catch {
      return { found: undefined }; // not a valid digest: not cached
    }
    const shared = byKey.get(names[0]) ?? byKey.get(names[1]);
    const rec = shared?.record;
    const misfit = rec && isIdMap(rec.idmap) ? layerMisfit(rec, idmap) : undefined;
    if (shared && !misfit) return { found: shared };
    const mine = byKey.get(`${names[0]}~${own}`) ?? byKey.get(`${names[1]}~${own}`);
    if (mine) return { found: mine };
    return {
      found: undefined,
      unfit: misfit && rec ? describeMisfit(misfit, rec.idmap, idmap) : undefined,
    };
  };
  const images = await storedImages(root);
  const used = new Set(images.flatMap((i) => i.layers.map((l) => l.diffID)));
  const report: LsJson = {
    cache: root,
    images: images.map((img) => {
      const ids = img.layers.map((l) => l.diffID);
      const lookups = ids.map((_, i) => find(ids, i));
      const found = lookups.map((l) => l.found);
      const ls = img.layers.map((l, i) => {
        const rec = found[i]?.record;
        return {
          ...l,
          cached: found[i] !== undefined,
          ...(found[i] ? { dir: found[i]!.key } : {}),
          ...(rec?.ids ? { ids: rec.ids } : {}),
          ...(rec?.idmap ? { idmap: rec.idmap } : {}),
          ...(rec?.ownersLost ? { ownersLost: true } : {}),
          ...(lookups[i].unfit ? { unfit: lookups[i].unfit } : {}),
        };
      });
      return {
        name: img.name,
        digest: img.digest,
        platform: img.platform,
        ...(img.source ? { source: img.source } : {}),
        saved: img.saved,
        size: img.size,
        extracted: found.reduce((n, l) => n + (l?.record?.record.bytes ?? 0), 0),
        complete: ls.every((l) => l.cached) && !img.error,
        layers: ls,
      };
    }),
    layers: {
      count: layers.length,
      unreferenced: layers.filter((l) => !used.has(l.diffID)).length,
    },
    diskUsage: await diskUsage(root),
  };
  if (ctx.options.json === true) {
    ctx.out.result(JSON.stringify(report, null, 2));
    return 0;
  }
  const rows = [["NAME", "DIGEST", "LAYERS", "SIZE", "EXTRACTED"]];
  for (const i of report.images) {
    const cached = i.layers.filter((l) => l.cached).length;
    rows.push([
      escapeControls(i.name), // a table for people (--json keeps the bytes)
      shortDigest(i.digest),
      cached === i.layers.length ? String(i.layers.length) : `${cached}/${i.layers.length} cached`,
      formatBytes(i.size),
      formatBytes(i.extracted),
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  ctx.out.result(
    rows.map((r) => r.map((v, c) => c === r.length - 1 ? v : v.padEnd(widths[c])).join("  "))
      .join("\n"),
  );
  ctx.out.result(
    `\n${report.images.length} image${report.images.length === 1 ? "" : "s"}, ` +
      `${report.layers.count} layer${report.layers.count === 1 ? "" : "s"} ` +
      `(${report.layers.unreferenced} unreferenced), ${
        formatBytes(report.diskUsage)
      } on disk in ${root}`,
  );
  return 0;
}

/**
 * Runs `strata rm IMAGE`: forgets the name (or every name of a digest);
 * prints the names removed. Layers stay until `strata prune`.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * await main(["rm", "oci:/tmp/layout:v1"]);
 * ```
 */
export async function rmCommand(ctx: Context): Promise<number> {
  const ref = ctx.args.positionals[0];
  if (!(await exists(join(ctx.cacheRoot, "images")))) {
    throw new CliError(`rm ${ref}`, `no image ${ref} in the cache ${ctx.cacheRoot}`);
  }
  const store = await ImageStore.create(ctx.cacheRoot);
  // A short name means what registries.conf makes of it, as for `run`.
  const name = await storedName(ctx.cacheRoot, ref, {
    registriesConf: ctx.options["registries-conf"] as string | undefined,
  });
  let names: string[];
  try {
    if (name === undefined) throw new ImageNotFoundError(ref, store.dir);
    names = await store.remove(name);
  } catch (e) {
    if (e instanceof ImageNotFoundError) {
      throw new CliError(`rm ${ref}`, `no image ${ref} in the cache ${ctx.cacheRoot}`);
    }
    throw e;
  }
  await removeRunRecords(ctx.cacheRoot, names);
  for (const n of names) ctx.out.result(n);
  ctx.out.note("its layers stay in the cache until `strata prune`");
  return 0;
}

/**
 * Runs `strata prune`: removes temp dirs of dead processes, containers whose
 * process is gone, and layers neither a stored image nor a live container
 * uses. Prints the diff_ids of the layers removed.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * await main(["prune"]);
 * ```
 */
export async function pruneCommand(ctx: Context): Promise<number> {
  const root = ctx.cacheRoot;
  if (!(await exists(root))) {
    ctx.out.note(`nothing to prune: ${root} does not exist`);
    return 0;
  }
  await enterNamespace(ctx);
  const before = await diskUsage(root);
  const containers = await reclaimStaleBundles(root);
  const temps = await exists(join(root, "tmp")) ? await reclaimTemp(root) : [];
  const { images } = await referencedLayers(root);
  const live = await liveLayers(root);
  let removed = 0;
  const printed = new Set<string>(); // a diff_id may have several `@<chain>` dirs
  for (const layer of await cachedLayers(root)) {
    if (images.has(layer.diffID)) continue;
    if (live.has(layer.diffID)) {
      ctx.out.note(
        `keeping ${shortDigest(layer.diffID)}: used by container ${live.get(layer.diffID)}`,
      );
      continue;
    }
    const r = await removeLayer(root, layer);
    if (r === "removed") {
      removed++;
      if (!printed.has(layer.diffID)) ctx.out.result(layer.diffID);
      printed.add(layer.diffID);
    } else {
      ctx.out.note(`keeping ${shortDigest(layer.diffID)}: ${r}`);
    }
  }
  await reclaimLayerLocks(root);
  const after = await diskUsage(root);
  ctx.out.note(
    `pruned ${removed} layer${removed === 1 ? "" : "s"}, ${temps.length} temp dir${
      temps.length === 1 ? "" : "s"
    }, ${containers.length} stale container${containers.length === 1 ? "" : "s"}: ` +
      `${formatBytes(Math.max(0, before - after))} freed`,
  );
  return 0;
}
