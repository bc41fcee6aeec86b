/**
 * The overlay store: mounts, the `supported` probe, LayerWorkdir, the caching
 * layer resolver, the cache directory and the user-namespace re-exec.
 *
 * @example Usage
 * ```ts ignore
 * import { CachingLayerResolver, defaultCacheRoot, ensureUserNamespace } from "./mod.ts";
 * await ensureUserNamespace();
 * const resolver = await CachingLayerResolver.create(defaultCacheRoot());
 * ```
 *
 * @module
 */
export * from "./mount.ts";
export * from "./supported.ts";
export * from "./workdir.ts";
export * from "./resolver.ts";
export * from "./prefetch.ts";
export * from "./cache.ts";
export * from "./idmap.ts";
export * from "./lock.ts";
export * from "./userns.ts";
export {
  chooseMountBackend,
  ErrnoError,
  type MountBackend,
  type MountBackendChoice,
  type MountBackendName,
  MountError,
  type OverlayMountOptions,
  type TmpfsMountOptions,
} from "../sys/mount.ts";
