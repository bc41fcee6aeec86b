/**
 * `strata verify`: recompute the tree record of every cached layer and
 * compare it, and the uids and gids its files use, with those written when
 * the layer was extracted, and check every stored manifest and config
 * against its digest. Damaged layers are removed (unless a live container
 * uses them) so the next pull extracts them again; the exit status is 1 when
 * anything was damaged. A layer whose owners this process's uid/gid mapping
 * would show other than they were extracted with (another mapping's copy)
 * is not checked, and said so: its files would differ only in how they read
 * here. A layer an older strata wrote, without its ids, gets them recorded
 * once its tree is found intact.
 *
 * @module
 */
import { join } from "@std/path";
import { treeRecord } from "../layer/record.ts";
import { digestOf } from "../image/blob.ts";
import type { Context } from "./context.ts";
import { CliError, ExitCode } from "./errors.ts";
import { formatBytes, formatMs, shortDigest } from "./output.ts";
import { enterNamespace } from "./pipeline.ts";
import { cachedLayers, exists, removeLayer } from "./cache_scan.ts";
import { ImageStore } from "../image/store.ts";
import { damagedRunRecords } from "./run_records.ts";
import {
  readDir,
  readDirSync,
  readFile,
  remove,
  rename,
  writeFile,
  writeTextFile,
} from "../sys/files.ts";
import { currentIdMap } from "../overlay/cache.ts";
import { describeMisfit, idMapKey, isIdMap, isTreeIds, layerMisfit } from "../overlay/idmap.ts";
import { idmapMarker, type LayerRecord } from "../overlay/resolver.ts";
import type { TreeIds } from "../layer/record.ts";

/** Writes `record` as the layer's `layer.json`, through a temp file renamed over it. */
async function rewriteRecord(dir: string, record: LayerRecord): Promise<void> {
  const file = join(dir, "layer.json");
  const tmp = `${file}.${crypto.randomUUID()}`;
  try {
    await writeTextFile(tmp, JSON.stringify(record, null, 2) + "\n", { mode: 0o600 });
    await rename(tmp, file);
  } catch (e) {
    await remove(tmp).catch(() => {});
    throw e;
  }
}

const spans = (ids: TreeIds) =>
  `uids ${ids.uid.map(([a, n]) => n > 1 ? `${a}-${a + n - 1}` : `${a}`).join(",")} gids ${
    ids.gid.map(([a, n]) => n > 1 ? `${a}-${a + n - 1}` : `${a}`).join(",")
  }`;

async function* storeBlobs(root: string): AsyncGenerator<{ digest: string; path: string }> {
  const base = join(root, "images", "blobs");
  if (!(await exists(base))) return;
  for await (const alg of readDir(base)) {
    if (!alg.isDirectory) continue;
    for await (const b of readDir(join(base, alg.name))) {
      if (b.isFile && /^[a-f0-9]+$/.test(b.name)) {
        yield { digest: `${alg.name}:${b.name}`, path: join(base, alg.name, b.name) };
      }
    }
  }
}

/**
 * Runs `strata verify`.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * Deno.exit(await main(["verify"]));
 * ```
 */
export async function verifyCommand(ctx: Context): Promise<number> {
  const root = ctx.cacheRoot;
  if (!(await exists(root))) {
    ctx.out.note(`nothing to verify: ${root} does not exist`);
    return 0;
  }
  await enterNamespace(ctx);
  const started = performance.now();
  const damaged: string[] = [];
  let files = 0, bytes = 0;
  const layers = await cachedLayers(root);
  const idmap = currentIdMap();
  let skipped = 0;
  for (const [i, layer] of layers.entries()) {
    ctx.signal.throwIfAborted();
    const head = `layer ${i + 1}/${layers.length} ${shortDigest(layer.diffID)}${
      layer.chain ? ` (over chain ${layer.chain.slice(0, 12)})` : ""
    }${layer.idmapKey ? ` (for id map ${layer.idmapKey})` : ""}`;
    let why: string | undefined;
    const rec = layer.record;
    if (!rec?.record?.digest) why = "its layer.json is missing or unreadable";
    else if (!isIdMap(rec.idmap) || (rec.ids !== undefined && !isTreeIds(rec.ids))) {
      why = "its layer.json does not say which uid/gid mapping and ids its files were written with";
    } else {
      const misfit = layerMisfit(rec, idmap);
      // The marker a reader under the extracting mapping trusts without
      // reading layer.json must name that mapping, and no other.
      const marker = idmapMarker(idMapKey(rec.idmap));
      const markers = [...readDirSync(layer.path)].map((e) => e.name)
        .filter((n) => n.startsWith("idmap-"));
      const wrongMarker = markers.find((m) => m !== marker);
      if (wrongMarker || (rec.ids && markers.length === 0)) {
        why = wrongMarker
          ? `it is marked as extracted under another uid/gid mapping (${wrongMarker}) than its layer.json says (${marker})`
          : `its ${marker} marker is missing`;
      } else if (misfit) {
        // Its files would read with other owners here: not damaged, not checkable.
        skipped++;
        ctx.out.note(
          `${head}: not checked under this uid/gid mapping: it was ${
            describeMisfit(misfit, rec.idmap, idmap)
          }`,
        );
        continue;
      }
      if (!why) {
        const now = await treeRecord(join(layer.path, "fs")).catch((e) => e as Error);
        if (now instanceof Error) why = `cannot read it: ${now.message}`;
        else {
          files += now.files;
          bytes += now.bytes;
          if (now.digest !== rec.record.digest) {
            why = `its files changed (${now.files} entries, ${now.bytes} bytes now; ` +
              `${rec.record.files} entries, ${rec.record.bytes} bytes when extracted)`;
          } else if (rec.ids && JSON.stringify(rec.ids) !== JSON.stringify(now.ids)) {
            why = `its record's ids (${spans(rec.ids)}) are not those its files use (${
              spans(now.ids)
            })`;
          } else if (!rec.ids) {
            // An older strata's layer, intact, read under a mapping that shows
            // it as extracted: the ids its files use, recorded once, let
            // mappings that map only those read it too.
            await rewriteRecord(layer.path, {
              ...rec,
              ids: now.ids,
              ownersLost: rec.warnings?.some((w) => w.includes("cannot set owners")) ?? false,
            });
            await writeFile(join(layer.path, marker), new Uint8Array(), { mode: 0o600 });
            ctx.out.note(`${head}: ok; recorded the ids its files use (${spans(now.ids)})`);
            continue;
          }
        }
      }
    }
    if (!why) {
      ctx.out.note(`${head}: ok`);
      continue;
    }
    const r = await removeLayer(root, layer);
    const fate = r === "removed"
      ? "removed, the next pull extracts it again"
      : `NOT removed (${r}); run verify again later`;
    ctx.out.note(`${head}: DAMAGED: ${why}; ${fate}`);
    ctx.out.result(`damaged ${layer.diffID}`);
    damaged.push(`layer ${layer.diffID}`);
  }
  let blobs = 0;
  for await (const b of storeBlobs(root)) {
    blobs++;
    const actual = digestOf(await readFile(b.path), b.digest.split(":")[0]);
    if (actual === b.digest) continue;
    await remove(b.path).catch(() => {});
    ctx.out.note(
      `image blob ${shortDigest(b.digest)}: DAMAGED (content is ${
        shortDigest(actual)
      }); removed, pull the image again`,
    );
    ctx.out.result(`damaged ${b.digest}`);
    damaged.push(`image blob ${b.digest}`);
  }
  // Name records: a damaged one makes `ls`, `rm` and `prune` refuse to
  // guess what it named; without it the next pull saves the name again.
  if (await exists(join(root, "images", "refs"))) {
    for (const r of await (await ImageStore.create(root)).damagedRecords()) {
      await remove(r.path).catch(() => {});
      const file = r.path.slice(root.length + 1);
      ctx.out.note(
        `image name record ${file}: DAMAGED (${r.reason}); removed, pull the image again`,
      );
      ctx.out.result(`damaged ${file}`);
      damaged.push(`image name record ${file}`);
    }
  }
  // Run records (cli/cmd_run_warm.ts): a damaged one is removed; the next
  // run of its reference takes the long way and writes it again.
  for (const r of damagedRunRecords(root)) {
    await remove(r.path).catch(() => {});
    const file = r.path.slice(root.length + 1);
    ctx.out.note(
      `run record ${file}: DAMAGED (${r.reason}); removed, the next run writes it again`,
    );
    ctx.out.result(`damaged ${file}`);
    damaged.push(`run record ${file}`);
  }
  if (damaged.length) {
    throw new CliError(
      "verify",
      `${damaged.length} damaged: ${damaged.join(", ")}`,
      { exitCode: ExitCode.Failure },
    );
  }
  const checked = layers.length - skipped;
  ctx.out.note(
    `verified ${checked} layer${checked === 1 ? "" : "s"} (${files} entries, ` +
      `${formatBytes(bytes)}) and ${blobs} image blob${blobs === 1 ? "" : "s"} in ` +
      `${formatMs(performance.now() - started)}: all intact` +
      (skipped ? `; ${skipped} written for other uid/gid mappings not checked` : ""),
  );
  return 0;
}
