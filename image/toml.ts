/**
 * The TOML parser strata uses (smol-toml, pinned in the import map), behind a
 * module of its own so that image/registries_conf.ts can load it by a URL
 * computed at run time (see `TOML_URL` there); in the bundled CLI this is
 * its own bundle, `image/toml.js`.
 *
 * @module
 */
export { parse } from "smol-toml";
