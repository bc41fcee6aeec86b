/**
 * Export an image's root filesystem to a directory: resolve its layers into
 * the cache, mount them as one read-only overlay (so whiteouts and opaque
 * directories are applied by the kernel exactly as a container sees them),
 * and copy the merged tree keeping owners, modes, times, xattrs and hard
 * links. `strata export IMAGE DIR` does the same from the command line.
 *
 * Run: deno run --allow-run --allow-ffi --allow-read --allow-write --allow-env --allow-sys examples/export_rootfs.ts [IMAGE] DIR
 * (without IMAGE, the demo image built from the host's busybox)
 *
 * Permissions: --allow-run (unshare), --allow-ffi (mount, xattrs, mknod),
 * --allow-read and --allow-write (cache, DIR), --allow-env (cache location)
 * and --allow-sys (uid). /proc is read through libc (--allow-ffi).
 *
 * @module
 */
import { join, resolve } from "@std/path";
import { buildDemoImage } from "../cli/demo_image.ts";
import { copyTree } from "../cli/copy_tree.ts";
import { openImage } from "../image/open.ts";
import { ensureUserNamespace } from "../overlay/userns.ts";
import { CachingLayerResolver } from "../overlay/resolver.ts";
import { OverlayMount } from "../overlay/mount.ts";

const [imageArg, dirArg] = Deno.args.length >= 2 ? Deno.args : [undefined, Deno.args[0]];
if (!dirArg) {
  console.error("usage: export_rootfs.ts [IMAGE] DIR");
  Deno.exit(2);
}
const dir = resolve(dirArg);

await ensureUserNamespace();

const tmp = await Deno.makeTempDir({ prefix: "strata-export-" });
try {
  const ref = imageArg ?? (await buildDemoImage(join(tmp, "layout"))).ref;
  const cache = join(tmp, "cache");
  const image = await openImage(ref, { cacheRoot: cache });

  // Each layer once into the cache (bottom first; parents are passed along).
  const resolver = await CachingLayerResolver.create(cache);
  const lower: string[] = [];
  for (const [i, layer] of image.layers.entries()) {
    lower.push(await resolver.resolve(layer, image.layers.slice(0, i)));
  }

  const merged = join(tmp, "merged");
  await Deno.mkdir(merged);
  const overlay = new OverlayMount({ mountpoint: merged, lower, readonly: true });
  await overlay.mount();
  try {
    const r = await copyTree(merged, dir);
    console.log(
      `${ref}: ${r.entries} entries, ${r.bytes} bytes, ${r.hardlinks} hard links -> ${dir}`,
    );
    for (const w of r.warnings) console.log(`not kept: ${w}`);
  } finally {
    await overlay.unmount();
  }
} finally {
  await Deno.remove(tmp, { recursive: true });
}
