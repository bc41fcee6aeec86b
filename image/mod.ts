/**
 * Image sources: references, OCI layouts and archives, registries (with
 * containers-registries.conf(5)), the image metadata store, and blob
 * verification.
 *
 * @module
 */
export * from "./types.ts";
export * from "./blob.ts";
export * from "./ref.ts";
export * from "./platform.ts";
export * from "./source.ts";
export * from "./layout.ts";
export * from "./archive.ts";
export * from "./auth.ts";
export * from "./registries_conf.ts";
export * from "./short_name.ts";
export * from "./registry.ts";
export * from "./store.ts";
export * from "./open.ts";
export * from "./build.ts";
