/**
 * `strata verify`: recompute the tree record of every cached layer and
 * compare it with the one written when the layer was extracted, and check
 * every stored manifest and config against its digest. Damaged layers are
 * removed (unless a live container uses them) so the next pull extracts
 * them again; the exit status is 1 when anything was damaged.
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
import { readDir, readFile, remove } from "../sys/files.ts";

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
  for (const [i, layer] of layers.entries()) {
    ctx.signal.throwIfAborted();
    const head = `layer ${i + 1}/${layers.length} ${shortDigest(layer.diffID)}${
      layer.chain ? ` (over chain ${layer.chain.slice(0, 12)})` : ""
    }`;
    let why: string | undefined;
    if (!layer.record?.record?.digest) why = "its layer.json is missing or unreadable";
    else {
      const now = await treeRecord(join(layer.path, "fs")).catch((e) => e as Error);
      if (now instanceof Error) why = `cannot read it: ${now.message}`;
      else {
        files += now.files;
        bytes += now.bytes;
        if (now.digest !== layer.record.record.digest) {
          why = `its files changed (${now.files} entries, ${now.bytes} bytes now; ` +
            `${layer.record.record.files} entries, ${layer.record.record.bytes} bytes when extracted)`;
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
  if (damaged.length) {
    throw new CliError(
      "verify",
      `${damaged.length} damaged: ${damaged.join(", ")}`,
      { exitCode: ExitCode.Failure },
    );
  }
  ctx.out.note(
    `verified ${layers.length} layer${layers.length === 1 ? "" : "s"} (${files} entries, ` +
      `${formatBytes(bytes)}) and ${blobs} image blob${blobs === 1 ? "" : "s"} in ` +
      `${formatMs(performance.now() - started)}: all intact`,
  );
  return 0;
}
