/**
 * strata: run OCI container images without a daemon.
 *
 * An overlay-based container store, ported from (and past) crossplane's Go
 * package `internal/oci/store/overlay`. The flow is the folder order:
 *
 * - `image/`: open an image from an OCI layout, an archive or a registry,
 *   every document and blob verified against its digest;
 * - `layer/`: apply a layer tarball to a directory, confined to it, with OCI
 *   whiteouts turned into overlay whiteouts;
 * - `overlay/`: mounts, the `supported` probe, `LayerWorkdir` and the
 *   `CachingLayerResolver` that extracts each layer once into the cache;
 * - `bundle/`: OCI runtime bundles (`config.json` plus an overlay rootfs on a
 *   tmpfs upper), the `CachingBundler`, and `runContainer`.
 *
 * @example Usage
 * ```ts ignore
 * import {
 *   CachingBundler,
 *   defaultCacheRoot,
 *   ensureUserNamespace,
 *   openImage,
 *   runContainer,
 *   withArgs,
 * } from "@strata/store";
 *
 * await ensureUserNamespace(); // re-executes under unshare when not root
 * const root = defaultCacheRoot();
 * const image = await openImage("oci:./layout:demo", { cacheRoot: root });
 * const bundler = await CachingBundler.create(root);
 * const bundle = await bundler.bundle(image, "hello", withArgs(["echo", "hi"]));
 * const { status } = await runContainer(bundle);
 * Deno.exit(status);
 * ```
 *
 * @module
 */
export * from "./image/mod.ts";
export * from "./layer/mod.ts";
export * from "./overlay/mod.ts";
export * from "./bundle/mod.ts";
export { MissingPermissionError } from "./sys/permissions.ts";
export { FfiPermissionError } from "./sys/libc.ts";
export type { OpenFile } from "./sys/files.ts";
