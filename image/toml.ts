/**
 * The TOML parser strata uses (smol-toml, pinned in the import map), behind a
 * module of its own that image/registries_conf.ts loads only when a file has
 * to be parsed.
 *
 * @module
 */
export { parse } from "smol-toml";
