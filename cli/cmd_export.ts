/**
 * `strata export IMAGE DIR`: the image's flattened filesystem, written to
 * DIR from a read-only overlay of its cached layers (so whiteouts and opaque
 * directories are resolved by the kernel exactly as a container sees them).
 *
 * @module
 */
import { basename, dirname, join, resolve } from "@std/path";
import { OverlayMount } from "../overlay/mount.ts";
import { TempWork } from "../overlay/lock.ts";
import { openCache } from "../overlay/cache.ts";
import { claimContainer } from "../bundle/bundler.ts";
import type { Context } from "./context.ts";
import { CliError } from "./errors.ts";
import { copyTree } from "./copy_tree.ts";
import { formatBytes, formatMs } from "./output.ts";
import { cacheLayers, enterNamespace, openForCli, saveOpened } from "./pipeline.ts";
import type { Image } from "../image/types.ts";
import { MAX_LOWER_LAYERS } from "../sys/mount.ts";
import { chmod, lstat, mkdir, readDir, remove, rename } from "../sys/files.ts";

async function checkTarget(dir: string): Promise<void> {
  try {
    const st = await lstat(dir);
    if (!st.isDirectory) throw new CliError(`export`, `${dir} exists and is not a directory`);
    for await (const _ of readDir(dir)) {
      throw new CliError("export", `${dir} is not empty; give a new or empty directory`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/**
 * Runs `strata export`.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * await main(["export", "oci:/tmp/layout:v1", "/tmp/rootfs"]);
 * ```
 */
export async function exportCommand(ctx: Context): Promise<number> {
  const [ref, dirArg] = ctx.args.positionals;
  const dir = resolve(dirArg);
  await checkTarget(dir); // before any download
  await enterNamespace(ctx);
  const image = await openForCli(ctx, ref, "missing");
  if (image.layers.length > MAX_LOWER_LAYERS) {
    throw new CliError(
      "export",
      `${ref} has ${image.layers.length} layers; overlayfs stacks at most ${MAX_LOWER_LAYERS}`,
    );
  }
  // Registered like a running container before its layers are resolved, so
  // a concurrent `strata prune` keeps them while they are being read.
  const claim = await claimLayers(ctx.cacheRoot, image);
  try {
    await exportImage(ctx, image, dir);
    await saveOpened(ctx, ref, image); // its layers are cached: the name may point at it now
  } finally {
    await claim.release();
  }
  return 0;
}

async function exportImage(ctx: Context, image: Image, dir: string): Promise<void> {
  const { paths } = await cacheLayers(ctx, image);
  const started = performance.now();
  const work = await TempWork.create(ctx.cacheRoot);
  try {
    const merged = join(work.path, "merged");
    await mkdir(merged);
    let lower = paths;
    if (lower.length === 0) {
      // An image with no layers (valid: the spec only says layers SHOULD
      // have one) is an empty root, as umoci unpacks it; overlayfs needs a
      // lower directory, so it gets an empty one (as bootstrapBundle does).
      const empty = join(work.path, "empty");
      await mkdir(empty);
      await chmod(empty, 0o755);
      lower = [empty];
    }
    const m = new OverlayMount({ mountpoint: merged, lower, readonly: true });
    await m.mount(ctx.signal);
    // Copied under a hidden sibling name and renamed into place at the end
    // (rename(2) replaces an empty directory), so a failed or interrupted
    // export leaves no half-written DIR.
    const partial = join(
      dirname(dir),
      `.${basename(dir)}.strata-${crypto.randomUUID().slice(0, 8)}`,
    );
    try {
      const r = await copyTree(merged, partial, { signal: ctx.signal });
      await rename(partial, dir);
      for (const w of r.warnings) ctx.out.warn(`export: ${w}`);
      ctx.out.note(
        `exported ${r.entries} entries (${formatBytes(r.bytes)}, ${r.hardlinks} hard links) ` +
          `to ${dir} in ${formatMs(performance.now() - started)}`,
      );
    } catch (e) {
      await remove(partial, { recursive: true }).catch(() => {});
      throw e;
    } finally {
      await m.unmount();
    }
  } finally {
    await work.remove();
  }
}

/**
 * Records `image`'s layers as in use, the way a live bundle does
 * (`containers/<id>/` with a held `lock` and a `bundle.json` listing the
 * diff_ids), so `prune` and `verify` leave them alone until `release()`.
 *
 * @example Usage
 * ```ts ignore
 * const claim = await claimLayers("/var/lib/strata", image);
 * try { ... } finally { await claim.release(); }
 * ```
 */
export async function claimLayers(
  root: string,
  image: Image,
): Promise<{ release(): Promise<void> }> {
  await openCache(root); // the cache layout, 0700, with its id map checked
  const containers = join(root, "containers");
  const id = `export-${crypto.randomUUID().slice(0, 8)}`;
  const dir = join(containers, id);
  const { lock, tmp } = await claimContainer(containers, id, image);
  try {
    await rename(tmp, dir);
  } catch (e) {
    lock.close();
    await remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return {
    release: async () => {
      await remove(dir, { recursive: true }).catch(() => {});
      lock.close();
    },
  };
}
