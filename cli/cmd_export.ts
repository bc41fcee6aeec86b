/**
 * `strata export IMAGE DIR`: the image's flattened filesystem, written to
 * DIR from a read-only overlay of its cached layers (so whiteouts and opaque
 * directories are resolved by the kernel exactly as a container sees them).
 *
 * @module
 */
import { join, resolve } from "@std/path";
import { OverlayMount } from "../overlay/mount.ts";
import { TempWork } from "../overlay/lock.ts";
import type { Context } from "./context.ts";
import { CliError } from "./errors.ts";
import { copyTree } from "./copy_tree.ts";
import { formatBytes, formatMs } from "./output.ts";
import { enterNamespace, pullImage } from "./pipeline.ts";

async function checkTarget(dir: string): Promise<void> {
  try {
    const st = await Deno.lstat(dir);
    if (!st.isDirectory) throw new CliError(`export`, `${dir} exists and is not a directory`);
    for await (const _ of Deno.readDir(dir)) {
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
  const { paths } = await pullImage(ctx, ref, "missing");
  const started = performance.now();
  const work = await TempWork.create(ctx.cacheRoot);
  try {
    const merged = join(work.path, "merged");
    await Deno.mkdir(merged);
    const m = new OverlayMount({ mountpoint: merged, lower: paths, readonly: true });
    await m.mount(ctx.signal);
    try {
      const r = await copyTree(merged, dir, { signal: ctx.signal });
      for (const w of r.warnings) ctx.out.warn(`export: ${w}`);
      ctx.out.note(
        `exported ${r.entries} entries (${formatBytes(r.bytes)}, ${r.hardlinks} hard links) ` +
          `to ${dir} in ${formatMs(performance.now() - started)}`,
      );
    } finally {
      await m.unmount();
    }
  } finally {
    await work.remove();
  }
  return 0;
}
