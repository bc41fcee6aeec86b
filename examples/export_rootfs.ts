/**
 * Export an image's root filesystem to a directory: resolve its layers into
 * the cache, mount them as one read-only overlay (so whiteouts and opaque
 * directories are applied by the kernel exactly as a container sees them),
 * and copy the merged tree keeping owners, modes, times, xattrs and hard
 * links. `strata export IMAGE DIR` does the same from the command line.
 *
 * Run: deno run --allow-run --allow-ffi examples/export_rootfs.ts [IMAGE] DIR
 * (without IMAGE, the demo image built from the host's busybox; add
 * --allow-net for an IMAGE in a registry)
 *
 * Permissions: --allow-run (unshare) and --allow-ffi (libc: mount, xattrs,
 * mknod, and the cache, DIR, the environment and the uid, which strata
 * reaches through libc when --allow-read, --allow-write, --allow-env and
 * --allow-sys are not granted; see the README's "Deno permissions").
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
import { makeTempDir, mkdir, remove } from "../sys/files.ts";

const [imageArg, dirArg] = Deno.args.length >= 2 ? Deno.args : [undefined, Deno.args[0]];
if (!dirArg) {
  console.error("usage: export_rootfs.ts [IMAGE] DIR");
  Deno.exit(2);
}
const dir = resolve(dirArg);

await ensureUserNamespace();

const tmp = await makeTempDir({ prefix: "strata-export-" });
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
  await mkdir(merged);
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
  await remove(tmp, { recursive: true });
}
