/**
 * From cached layers to a running container and back to nothing: OCI
 * runtime-spec types and options, confinement (the default seccomp profile,
 * capabilities, privileged mode), the spec writer, bundles on a tmpfs +
 * overlay, the caching bundler, and a runner for runc/crun.
 *
 * @example Usage
 * ```ts ignore
 * import { CachingBundler, runContainer, withCmd } from "./mod.ts";
 * const bundler = await CachingBundler.create("/var/lib/strata");
 * const bundle = await bundler.bundle(image, "c1", withCmd("echo", "hi"));
 * const { status } = await runContainer(bundle); // always cleans the bundle up
 * ```
 *
 * @module
 */
export * from "./spec.ts";
export * from "./options.ts";
export * from "./security.ts";
export * from "./seccomp.ts";
export * from "./seccomp_profile.ts";
export * from "./seccomp_host.ts";
export * from "./capabilities.ts";
export * from "./user.ts";
export * from "./writer.ts";
export * from "./bootstrap.ts";
export * from "./bundler.ts";
export * from "./run.ts";
export { canWriteCgroups, type HostRlimit, hostRlimits, inUserNamespace } from "./host.ts";
export type * from "../image/types.ts";
export type { LayerResolver } from "../overlay/resolver.ts";
