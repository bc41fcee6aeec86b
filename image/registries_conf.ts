/**
 * containers-registries.conf(5): where images come from, as podman, skopeo
 * and buildah read it. Version 2 (TOML) with its `registries.conf.d/*.conf`
 * drop-ins, and version 1 (`[registries.search]`, …) in the main file.
 *
 * Which files (containers/image's `sysregistriesv2`, checked against its
 * source): the main file is `--registries-conf FILE`, else
 * `$CONTAINERS_REGISTRIES_CONF` (or the older `$REGISTRIES_CONFIG_PATH`), else
 * `~/.config/containers/registries.conf` when it exists, else
 * `/etc/containers/registries.conf`. A main file named explicitly must exist;
 * the default ones may be missing. The drop-ins follow in name order:
 * `/etc/containers/registries.conf.d/*.conf` then
 * `~/.config/containers/registries.conf.d/*.conf`, except that only the
 * latter are read when the main file is the user's own, and only
 * `$CONTAINERS_REGISTRIES_CONF_DIR` when that is set. Naming the main file
 * does not stop the drop-ins: a test that wants no host configuration at all
 * sets both variables.
 *
 * How they merge: a later file's `[[registry]]` replaces an earlier one with
 * the same `prefix` (others are added), its `unqualified-search-registries`
 * and `credential-helpers` replace earlier ones when present (even empty),
 * its `short-name-mode` when set, and its `[aliases]` are merged in (an alias
 * set to `""` erases one).
 *
 * The TOML parser (smol-toml) is loaded only when a file exists: a command
 * that needs no registry never pays for it.
 *
 * @module
 */
import { join } from "@std/path";
import { importNpm } from "../sys/npm.ts";
import type { RegistryRef } from "./ref.ts";
import { getEnv } from "../sys/env.ts";
import {
  readDirSync,
  readFileSync,
  readTextFileSync,
  removeSync,
  renameSync,
  statSync,
  writeTextFileSync,
} from "../sys/files.ts";

/** `short-name-mode`: what an ambiguous short name does. */
export type ShortNameMode = "enforcing" | "permissive" | "disabled";

/** A mirror's `pull-from-mirror`: which references it serves. */
export type PullFromMirror = "all" | "digest-only" | "tag-only";

/** A place images are fetched from: a `[[registry]]`'s location or one of its mirrors. */
export interface RegistryEndpoint {
  /** `host[:port][/namespace…]`; empty only for a `*.example.com` prefix (the name as typed). */
  readonly location: string;
  /** Plain HTTP and unverified TLS allowed for this endpoint alone. */
  readonly insecure: boolean;
}

/** One `[[registry.mirror]]`. */
export interface RegistryMirror extends RegistryEndpoint {
  /** Which pulls use it. */
  readonly pullFromMirror: PullFromMirror;
}

/** One `[[registry]]` table. */
export interface RegistryEntry extends RegistryEndpoint {
  /** The names it applies to (`host`, `host/namespace`, `host/ns/repo`, `*.host`). */
  readonly prefix: string;
  /** Pulls of matching names are refused. */
  readonly blocked: boolean;
  /** Mirrors serve only pulls by digest. */
  readonly mirrorByDigestOnly: boolean;
  /** The mirrors, tried in order before the location. */
  readonly mirrors: readonly RegistryMirror[];
  /** The file it comes from. */
  readonly file: string;
}

/** An `[aliases]` entry. */
export interface ShortNameAlias {
  /** The fully qualified name (no tag), or undefined when a later file erased it with `""`. */
  readonly value?: string;
  /** The file it comes from. */
  readonly file: string;
}

/** The configuration all files make together. */
export interface RegistriesConf {
  /** The files read, in order. */
  readonly files: readonly string[];
  /** Every `[[registry]]`, one per prefix, sorted by prefix. */
  readonly registries: readonly RegistryEntry[];
  /** `unqualified-search-registries`, in order. */
  readonly unqualifiedSearchRegistries: readonly string[];
  /** The file that set `unqualified-search-registries` (the main file when none did). */
  readonly searchRegistriesFile: string;
  /** `short-name-mode` (default permissive, as containers/image). */
  readonly shortNameMode: ShortNameMode;
  /** `[aliases]`, by short name. */
  readonly aliases: ReadonlyMap<string, ShortNameAlias>;
  /** Things accepted but worth saying (unknown keys, credential helpers strata does not run). */
  readonly warnings: readonly string[];
}

/**
 * A registries.conf file that cannot be used: unreadable, not TOML, or a
 * setting of the wrong type or form. The message is one line naming the
 * file and, when known, the line.
 *
 * @example Usage
 * ```ts
 * import { RegistriesConfError } from "./registries_conf.ts";
 * const e = new RegistriesConfError("/etc/containers/registries.conf", 'short-name-mode must be enforcing, permissive or disabled, not "strict"', 3);
 * console.assert(e.message.startsWith("/etc/containers/registries.conf:3: "));
 * ```
 */
export class RegistriesConfError extends Error {
  /** The file. */
  readonly file: string;
  /** The line (1-based), when known. */
  readonly line?: number;
  /** Builds the error for `file` (at `line`, when known). */
  constructor(file: string, problem: string, line?: number, options?: ErrorOptions) {
    super(`${file}${line ? `:${line}` : ""}: ${problem}`, options);
    this.name = "RegistriesConfError";
    this.file = file;
    if (line) this.line = line;
  }
}

/**
 * A pull of a name whose `[[registry]]` says `blocked = true`.
 *
 * @example Usage
 * ```ts
 * import { BlockedRegistryError } from "./registries_conf.ts";
 * const e = new BlockedRegistryError("evil.example.com/x:1", "evil.example.com", "/etc/containers/registries.conf");
 * console.assert(e.message.includes("blocked"));
 * ```
 */
export class BlockedRegistryError extends Error {
  /** The name refused. */
  readonly ref: string;
  /** Builds the error for `ref`, blocked by the entry of `prefix` in `file`. */
  constructor(ref: string, prefix: string, file: string, options?: ErrorOptions) {
    super(
      `pulling ${ref} is blocked: [[registry]] prefix "${prefix}" in ${file} says blocked = true`,
      options,
    );
    this.name = "BlockedRegistryError";
    this.ref = ref;
  }
}

/** Where registries.conf is read from ({@linkcode loadRegistriesConf}). */
export interface RegistriesConfOptions {
  /**
   * The main file (as skopeo's `--registries-conf`); `false` reads no
   * registries.conf at all. Default: `$CONTAINERS_REGISTRIES_CONF`, else
   * `$REGISTRIES_CONFIG_PATH`, else `~/.config/containers/registries.conf`
   * when it exists, else `/etc/containers/registries.conf`.
   */
  registriesConf?: string | false;
  /**
   * The one drop-in directory to read (default `$CONTAINERS_REGISTRIES_CONF_DIR`,
   * else the system's and the user's `registries.conf.d`).
   */
  registriesConfDir?: string;
  /**
   * A directory to keep the merged configuration in, as JSON
   * (`registries-conf.json`; the CLI uses its cache root): the next process
   * reads that instead of loading the TOML parser and parsing every file,
   * while the files are the same (names, inodes, sizes, times).
   */
  cacheDir?: string;
}

/** The files {@linkcode loadRegistriesConf} would read. */
export interface RegistriesConfSources {
  /** The main file. */
  main: string;
  /** True when it was named (option or environment): then it must exist. */
  explicit: boolean;
  /** The drop-in directories, in order. */
  dirs: string[];
}

const SYSTEM_FILE = "/etc/containers/registries.conf";
const SYSTEM_DIR = "/etc/containers/registries.conf.d";
/** A registries.conf larger than this is refused (they are a few KiB). */
const MAX_FILE = 4 << 20;

const env = getEnv;

function existsSync(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Works out which files hold the configuration (see the module doc).
 *
 * @example Usage
 * ```ts
 * import { registriesConfSources } from "./registries_conf.ts";
 * const s = registriesConfSources({ registriesConf: "/tmp/r.conf", registriesConfDir: "/tmp/r.d" });
 * console.assert(s.main === "/tmp/r.conf" && s.explicit && s.dirs.length === 1);
 * ```
 */
export function registriesConfSources(options: RegistriesConfOptions = {}): RegistriesConfSources {
  const home = env("HOME");
  const userFile = home ? join(home, ".config/containers/registries.conf") : undefined;
  const userDir = home ? join(home, ".config/containers/registries.conf.d") : undefined;
  const dirOverride = options.registriesConfDir ??
    (env("CONTAINERS_REGISTRIES_CONF_DIR") || undefined);
  const named = typeof options.registriesConf === "string"
    ? options.registriesConf
    : env("CONTAINERS_REGISTRIES_CONF") || env("REGISTRIES_CONFIG_PATH") || undefined;
  const dirs = (list: (string | undefined)[]) =>
    dirOverride !== undefined ? [dirOverride] : list.filter((d): d is string => !!d);
  if (named) return { main: named, explicit: true, dirs: dirs([SYSTEM_DIR, userDir]) };
  if (userFile && existsSync(userFile)) {
    return { main: userFile, explicit: false, dirs: dirs([userDir]) };
  }
  return { main: SYSTEM_FILE, explicit: false, dirs: dirs([SYSTEM_DIR, userDir]) };
}

/** The `*.conf` files of a drop-in directory, in name order (none when it is missing). */
function dropIns(dir: string): string[] {
  const out: string[] = [];
  try {
    for (const e of readDirSync(dir)) {
      if (!e.isDirectory && e.name.endsWith(".conf")) out.push(join(dir, e.name));
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return [];
    throw new RegistriesConfError(
      dir,
      `cannot read the drop-in directory: ${(e as Error).message}`,
      undefined,
      {
        cause: e,
      },
    );
  }
  // Byte order, as Go's filepath.WalkDir lists them.
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function readConf(file: string): string | undefined {
  let bytes: Uint8Array;
  try {
    const st = statSync(file);
    if (st.isDirectory) throw new RegistriesConfError(file, "is a directory, not a file");
    if (st.size > MAX_FILE) throw new RegistriesConfError(file, `larger than ${MAX_FILE} bytes`);
    bytes = readFileSync(file);
  } catch (e) {
    if (e instanceof RegistriesConfError) throw e;
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new RegistriesConfError(file, `cannot read it: ${(e as Error).message}`, undefined, {
      cause: e,
    });
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    throw new RegistriesConfError(file, "is not UTF-8 text", undefined, { cause: e });
  }
}

/**
 * smol-toml's specifier: deno.json's import map pins the same
 * (tests/registries_conf_test.ts checks that they agree).
 */
export const SMOL_TOML = "npm:smol-toml@1.9.1";

/**
 * smol-toml, loaded only when a file has to be parsed (sys/npm.ts): out of
 * the module graph Deno reads when a command starts, so a warm `run` does
 * not resolve an npm package it never uses.
 */
function loadToml(): Promise<{ parse: Parse }> {
  return importNpm<{ parse: Parse }>(SMOL_TOML);
}

let cached: { key: string; conf: RegistriesConf | undefined } | undefined;

/** The JSON form {@linkcode RegistriesConfOptions.cacheDir} holds. */
interface CachedConf {
  version: 1;
  key: string;
  conf: Omit<RegistriesConf, "aliases"> & { aliases: [string, ShortNameAlias][] } | null;
}
const CACHE_FILE = "registries-conf.json";

function readCache(dir: string, key: string): { conf: RegistriesConf | undefined } | undefined {
  try {
    const c = JSON.parse(readTextFileSync(join(dir, CACHE_FILE))) as CachedConf;
    if (c?.version !== 1 || c.key !== key) return undefined;
    if (c.conf === null) return { conf: undefined };
    return { conf: { ...c.conf, aliases: new Map(c.conf.aliases) } };
  } catch {
    return undefined; // none yet, or unreadable: parse the files
  }
}

function writeCache(dir: string, key: string, conf: RegistriesConf | undefined): void {
  const c: CachedConf = {
    version: 1,
    key,
    conf: conf ? { ...conf, aliases: [...conf.aliases] } : null,
  };
  const file = join(dir, CACHE_FILE);
  const tmp = `${file}.tmp-${crypto.randomUUID()}`;
  try {
    writeTextFileSync(tmp, JSON.stringify(c), { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    try {
      removeSync(tmp);
    } catch { /* never written */ }
    // A read-only cache, or none yet: parsed again next time.
  }
}

/**
 * Reads and merges the registries.conf files (see the module doc). Returns
 * undefined when there is none at all (then strata behaves as it always
 * did: short names are Docker Hub's, every name is pulled from its own
 * registry). The result is kept for the process, and in
 * {@linkcode RegistriesConfOptions.cacheDir} when given, while the files stay
 * as they are.
 *
 * @throws {RegistriesConfError} for a file that cannot be read or used, or a
 * named main file that does not exist.
 *
 * @example Usage
 * ```ts
 * import { loadRegistriesConf } from "./registries_conf.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/r.conf`, 'unqualified-search-registries = ["registry.example.com"]\n');
 * const conf = await loadRegistriesConf({ registriesConf: `${dir}/r.conf`, registriesConfDir: `${dir}/none` });
 * console.assert(conf?.unqualifiedSearchRegistries[0] === "registry.example.com");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadRegistriesConf(
  options: RegistriesConfOptions = {},
): Promise<RegistriesConf | undefined> {
  if (options.registriesConf === false) return undefined;
  const sources = registriesConfSources(options);
  const files = [sources.main, ...sources.dirs.flatMap(dropIns)];
  // What the files are now: a changed one (even replaced by a rename) is read again.
  let present = 0;
  const key = files.map((f) => {
    try {
      const st = statSync(f);
      present++;
      return [f, st.dev, st.ino, st.size, st.mtime?.getTime(), st.ctime?.getTime()].join("\0");
    } catch {
      return `${f}\0-`;
    }
  }).join("\n");
  if (present === 0 && sources.explicit) {
    throw new RegistriesConfError(
      sources.main,
      "no such file (it was named by --registries-conf or $CONTAINERS_REGISTRIES_CONF)",
    );
  }
  if (cached?.key === key) return cached.conf;
  const kept = options.cacheDir ? readCache(options.cacheDir, key) : undefined;
  if (kept) {
    cached = { key, conf: kept.conf };
    return kept.conf;
  }
  const result = present ? await parseFiles(sources, files) : undefined;
  cached = { key, conf: result };
  if (options.cacheDir) writeCache(options.cacheDir, key, result);
  return result;
}

async function parseFiles(
  sources: RegistriesConfSources,
  files: string[],
): Promise<RegistriesConf | undefined> {
  let conf: Partial | undefined;
  const text = readConf(sources.main);
  if (text === undefined && sources.explicit) {
    throw new RegistriesConfError(
      sources.main,
      "no such file (it was named by --registries-conf or $CONTAINERS_REGISTRIES_CONF)",
    );
  }
  const { parse } = await loadToml().catch((e) => {
    throw new RegistriesConfError(
      files[0],
      `cannot load the TOML parser: ${(e as Error).message}`,
      undefined,
      { cause: e },
    );
  });
  if (text !== undefined) conf = parseFile(parse, text, sources.main, false);
  for (const f of files.slice(1)) {
    const t = readConf(f);
    if (t === undefined) continue; // removed since the listing
    const part = parseFile(parse, t, f, true);
    conf = conf ? merge(conf, part) : part;
  }
  return conf ? finish(conf, sources.main) : undefined;
}

/**
 * Parses one file's text (no merging, no drop-ins): for checking a file, or
 * a configuration that is not on disk.
 *
 * @throws {RegistriesConfError} naming `file` and the line of the problem.
 *
 * @example Usage
 * ```ts
 * import { parseRegistriesConf } from "./registries_conf.ts";
 * const conf = await parseRegistriesConf('[[registry]]\nprefix = "example.com/foo"\nlocation = "mirror.local/foo"\n', "r.conf");
 * console.assert(conf.registries[0].location === "mirror.local/foo");
 * ```
 */
export async function parseRegistriesConf(
  text: string,
  file: string,
  options: { dropIn?: boolean } = {},
): Promise<RegistriesConf> {
  const { parse } = await loadToml();
  return finish(parseFile(parse, text, file, options.dropIn ?? false), file);
}

/** One file's settings, before merging: a field is undefined when the file does not set it. */
interface Partial {
  registries: RegistryEntry[];
  search?: string[];
  searchFile?: string;
  helpers?: string[];
  mode?: ShortNameMode;
  aliases: Map<string, ShortNameAlias>;
  files: string[];
  warnings: string[];
}

function merge(base: Partial, update: Partial): Partial {
  const byPrefix = new Map(base.registries.map((r) => [r.prefix, r]));
  for (const r of update.registries) byPrefix.set(r.prefix, r);
  return {
    registries: [...byPrefix.values()],
    search: update.search ?? base.search,
    searchFile: update.search ? update.searchFile : base.searchFile,
    helpers: update.helpers ?? base.helpers,
    mode: update.mode ?? base.mode,
    aliases: new Map([...base.aliases, ...update.aliases]),
    files: [...base.files, ...update.files],
    warnings: [...base.warnings, ...update.warnings],
  };
}

function finish(p: Partial, main: string): RegistriesConf {
  const warnings = [...p.warnings];
  const helpers = (p.helpers ?? []).filter((h) => h !== "containers-auth.json");
  if (helpers.length) {
    warnings.push(
      `credential-helpers ${helpers.map((h) => `"${h}"`).join(", ")} are not run by strata: ` +
        "it reads the auth files (containers-auth.json) only",
    );
  }
  return {
    files: p.files,
    registries: [...p.registries].sort((
      a,
      b,
    ) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0)),
    unqualifiedSearchRegistries: p.search ?? [],
    searchRegistriesFile: p.searchFile ?? p.files[0] ?? main,
    shortNameMode: p.mode ?? "permissive",
    aliases: p.aliases,
    warnings,
  };
}

// distribution/reference's grammar, as image/ref.ts uses it.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;
const HOSTNAME =
  /^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$/;

/** A first component that names a registry host (as Docker and containers/image decide). */
function looksLikeHost(first: string): boolean {
  return first.includes(".") || first.includes(":") || first === "localhost";
}

type Path = (string | number)[];
type Parse = (toml: string, options?: { maxDepth?: number }) => Record<string, unknown>;

const KNOWN_TOP = new Set([
  "registry",
  "unqualified-search-registries",
  "credential-helpers",
  "short-name-mode",
  "additional-layer-store-auth-helper",
  "aliases",
  "registries",
]);
const KNOWN_REGISTRY = new Set([
  "prefix",
  "location",
  "insecure",
  "blocked",
  "mirror",
  "mirror-by-digest-only",
  "pull-from-mirror",
]);
const KNOWN_MIRROR = new Set(["location", "insecure", "pull-from-mirror"]);

function parseFile(parse: Parse, text: string, file: string, dropIn: boolean): Partial {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text, { maxDepth: 64 });
  } catch (e) {
    const err = e as Error & { line?: number; column?: number };
    // smol-toml's message carries a code excerpt after a blank line: the first line is the
    // problem. The cause says it alone too (the CLI prints each cause's message once).
    const problem = err.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
    const at = err.column ? ` (column ${err.column})` : "";
    throw new RegistriesConfError(file, `not valid TOML: ${problem}${at}`, err.line, {
      cause: new SyntaxError(problem),
    });
  }
  const fail = (path: Path, problem: string): never => {
    throw new RegistriesConfError(file, problem, lineOf(text, path));
  };
  const warnings: string[] = [];
  const warnUnknown = (
    obj: Record<string, unknown>,
    known: Set<string>,
    where: Path,
    what: string,
  ) => {
    for (const k of Object.keys(obj)) {
      if (known.has(k)) continue;
      const line = lineOf(text, [...where, k]);
      warnings.push(
        `${file}${line ? `:${line}` : ""}: unknown key "${k}" in ${what} (ignored, as podman does)`,
      );
    }
  };
  warnUnknown(doc, KNOWN_TOP, [], "the top level");

  const str = (v: unknown, path: Path, what: string): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== "string") fail(path, `${what} must be a string, not ${typeName(v)}`);
    return v as string;
  };
  const bool = (v: unknown, path: Path, what: string): boolean => {
    if (v === undefined) return false;
    if (typeof v !== "boolean") fail(path, `${what} must be true or false, not ${typeName(v)}`);
    return v as boolean;
  };
  const strings = (v: unknown, path: Path, what: string): string[] | undefined => {
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) fail(path, `${what} must be an array of strings, not ${typeName(v)}`);
    return (v as unknown[]).map((s, i) => {
      if (typeof s !== "string") fail(path, `${what}[${i}] must be a string, not ${typeName(s)}`);
      return s as string;
    });
  };
  const table = (v: unknown, path: Path, what: string): Record<string, unknown> => {
    if (!isTable(v)) fail(path, `${what} must be a table, not ${typeName(v)}`);
    return v as Record<string, unknown>;
  };
  const tables = (v: unknown, path: Path, what: string): Record<string, unknown>[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v)) {
      fail(path, `${what} must be an array of tables ([[${path.join(".")}]]), not ${typeName(v)}`);
    }
    return (v as unknown[]).map((t, i) => table(t, [...path, i], what));
  };

  // Version 1: [registries.search], [registries.insecure], [registries.block].
  let v1: { search?: string[]; insecure: string[]; block: string[] } | undefined;
  if (doc.registries !== undefined) {
    if (dropIn) {
      fail(
        ["registries"],
        "a drop-in file must use the version 2 format ([registries.*] tables are version 1)",
      );
    }
    const r = table(doc.registries, ["registries"], "registries");
    const list = (k: string) => {
      if (r[k] === undefined) return undefined;
      const t = table(r[k], ["registries", k], `[registries.${k}]`);
      return strings(t.registries, ["registries", k, "registries"], `registries.${k}.registries`) ??
        [];
    };
    v1 = { search: list("search"), insecure: list("insecure") ?? [], block: list("block") ?? [] };
    for (const k of ["registry", "unqualified-search-registries", "short-name-mode", "aliases"]) {
      if (doc[k] !== undefined) {
        fail([k], `mixes the version 1 format ([registries.*]) with the version 2 setting "${k}"`);
      }
    }
  }

  const registries: RegistryEntry[] = [];
  const seen = new Set<string>();
  const add = (entry: RegistryEntry, path: Path) => {
    if (seen.has(entry.prefix)) {
      const line = lineOf(text, path);
      warnings.push(
        `${file}${
          line ? `:${line}` : ""
        }: a second [[registry]] with prefix "${entry.prefix}" is ignored (the first one wins, as in podman)`,
      );
      return;
    }
    seen.add(entry.prefix);
    registries.push(entry);
  };

  if (v1) {
    const byLocation = new Map<string, { insecure: boolean; blocked: boolean }>();
    const entry = (loc: string, i: number, k: string) => {
      const location = endpointLocation(
        loc,
        ["registries", k, "registries"],
        `registries.${k}.registries[${i}]`,
        fail,
      );
      const e = byLocation.get(location) ?? { insecure: false, blocked: false };
      byLocation.set(location, e);
      return e;
    };
    v1.block.forEach((l, i) => entry(l, i, "block").blocked = true);
    v1.insecure.forEach((l, i) => entry(l, i, "insecure").insecure = true);
    for (const [location, e] of byLocation) {
      add({ prefix: location, location, ...e, mirrorByDigestOnly: false, mirrors: [], file }, [
        "registries",
      ]);
    }
  }

  tables(doc.registry, ["registry"], "[[registry]]").forEach((r, i) => {
    const at = (k: string): Path => ["registry", i, k];
    warnUnknown(r, KNOWN_REGISTRY, ["registry", i], "[[registry]]");
    const rawLocation = str(r.location, at("location"), "location") ?? "";
    const rawPrefix = str(r.prefix, at("prefix"), "prefix") ?? "";
    const insecure = bool(r.insecure, at("insecure"), "insecure");
    const blocked = bool(r.blocked, at("blocked"), "blocked");
    const mirrorByDigestOnly = bool(
      r["mirror-by-digest-only"],
      at("mirror-by-digest-only"),
      "mirror-by-digest-only",
    );
    if (r["pull-from-mirror"] !== undefined) {
      fail(
        at("pull-from-mirror"),
        "pull-from-mirror belongs in a [[registry.mirror]] table, not in [[registry]]",
      );
    }
    let prefix = trimLocation(rawPrefix, at("prefix"), "prefix", fail);
    const wildcard = prefix.startsWith("*.");
    const location = rawLocation === ""
      ? ""
      : endpointLocation(rawLocation, at("location"), "location", fail);
    if (!prefix) {
      if (!location) fail(["registry", i], "[[registry]] needs a location or a prefix");
      prefix = location;
    } else if (wildcard) checkWildcard(prefix, at("prefix"), fail);
    else checkName(prefix, at("prefix"), "prefix", fail);
    if (!location && !wildcard) {
      fail(
        at("prefix"),
        `[[registry]] prefix "${prefix}" needs a location (only a *.example.com prefix may go without)`,
      );
    }
    const mirrors = tables(r.mirror, ["registry", i, "mirror"], "[[registry.mirror]]").map(
      (m, j) => {
        const mat = (k: string): Path => ["registry", i, "mirror", j, k];
        warnUnknown(m, KNOWN_MIRROR, ["registry", i, "mirror", j], "[[registry.mirror]]");
        const loc = str(m.location, mat("location"), "mirror location") ?? "";
        if (!loc) fail(["registry", i, "mirror", j], "[[registry.mirror]] needs a location");
        const pfm = str(m["pull-from-mirror"], mat("pull-from-mirror"), "pull-from-mirror") ?? "";
        if (pfm && pfm !== "all" && pfm !== "digest-only" && pfm !== "tag-only") {
          fail(
            mat("pull-from-mirror"),
            `pull-from-mirror must be all, digest-only or tag-only, not "${pfm}"`,
          );
        }
        if (pfm && mirrorByDigestOnly) {
          fail(
            mat("pull-from-mirror"),
            `pull-from-mirror cannot be set on a mirror of a [[registry]] with mirror-by-digest-only (prefix "${prefix}")`,
          );
        }
        return {
          location: endpointLocation(loc, mat("location"), "mirror location", fail),
          insecure: bool(m.insecure, mat("insecure"), "insecure"),
          pullFromMirror: (pfm || "all") as PullFromMirror,
        };
      },
    );
    add({ prefix, location, insecure, blocked, mirrorByDigestOnly, mirrors, file }, [
      "registry",
      i,
    ]);
  });

  // The same location twice must agree on insecure and blocked (containers/image refuses it too).
  const byLocation = new Map<string, RegistryEntry>();
  registries.forEach((r) => {
    const key = r.location || r.prefix;
    const other = byLocation.get(key);
    if (!other) return void byLocation.set(key, r);
    for (const k of ["insecure", "blocked"] as const) {
      if (other[k] !== r[k]) {
        const i = (Array.isArray(doc.registry) ? doc.registry : []).findIndex((t) =>
          isTable(t) && (t.prefix ?? t.location) === r.prefix
        );
        fail(
          i >= 0 ? ["registry", i, k] : ["registry"],
          `registry "${key}" is given twice with different ${k} settings`,
        );
      }
    }
  });

  let search = strings(
    doc["unqualified-search-registries"],
    ["unqualified-search-registries"],
    "unqualified-search-registries",
  );
  if (v1?.search) search = v1.search;
  search = search?.map((s, i) => {
    const reg = s.replace(/\/+$/, "");
    if (/^https?:\/\//.test(reg) || !DOMAIN.test(reg)) {
      fail(
        ["unqualified-search-registries"],
        `unqualified-search-registries[${i}] "${s}" is not a registry host[:port]`,
      );
    }
    return reg;
  });

  const helpers = strings(doc["credential-helpers"], ["credential-helpers"], "credential-helpers");
  str(
    doc["additional-layer-store-auth-helper"],
    ["additional-layer-store-auth-helper"],
    "additional-layer-store-auth-helper",
  );
  const rawMode = str(doc["short-name-mode"], ["short-name-mode"], "short-name-mode");
  if (rawMode && rawMode !== "enforcing" && rawMode !== "permissive" && rawMode !== "disabled") {
    fail(
      ["short-name-mode"],
      `short-name-mode must be enforcing, permissive or disabled, not "${rawMode}"`,
    );
  }

  const aliases = new Map<string, ShortNameAlias>();
  if (doc.aliases !== undefined) {
    const t = table(doc.aliases, ["aliases"], "[aliases]");
    for (const [name, value] of Object.entries(t)) {
      const at: Path = ["aliases", name];
      if (typeof value !== "string") {
        fail(at, `alias "${name}" must be a string, not ${typeName(value)}`);
      }
      const why = shortNameProblem(name);
      if (why) fail(at, `alias name "${name}" ${why}`);
      if (value === "") {
        aliases.set(name, { file });
        continue;
      }
      aliases.set(name, { value: aliasValue(value as string, at, fail), file });
    }
  }

  return {
    registries,
    search,
    searchFile: search ? file : undefined,
    helpers,
    mode: (rawMode || undefined) as ShortNameMode | undefined,
    aliases,
    files: [file],
    warnings,
  };
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return "an array";
  if (isTable(v)) return "a table";
  if (typeof v === "string") return `the string ${JSON.stringify(v)}`;
  if (typeof v === "number" || typeof v === "bigint") return `the number ${v}`;
  if (typeof v === "boolean") return `${v}`;
  return typeof v === "object" ? "a date" : typeof v;
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) &&
    (Object.getPrototypeOf(v) === null || Object.getPrototypeOf(v) === Object.prototype);
}

type Fail = (path: Path, problem: string) => never;

/** Drops trailing slashes and refuses URL schemes (containers/image's parseLocation). */
function trimLocation(input: string, path: Path, what: string, fail: Fail): string {
  const trimmed = input.replace(/\/+$/, "");
  if (/^https?:\/\//.test(trimmed)) {
    fail(
      path,
      `${what} "${input}" must not start with a URL scheme (write host[:port][/namespace])`,
    );
  }
  return trimmed;
}

function endpointLocation(input: string, path: Path, what: string, fail: Fail): string {
  const location = trimLocation(input, path, what, fail);
  checkName(location, path, what, fail, false);
  return location;
}

/**
 * Checks `host[:port][/component…]`: no tag, no digest. containers/image
 * matches prefixes against an image's repository name without its tag, so a
 * prefix with a tag or digest would never apply to a pull: refused rather
 * than ignored. A prefix must start with something that is a registry host
 * in an image name (a `.`, a `:` or `localhost`), or no name would ever match.
 */
function checkName(name: string, path: Path, what: string, fail: Fail, prefix = true): void {
  const slash = name.indexOf("/");
  const host = slash < 0 ? name : name.slice(0, slash);
  const rest = slash < 0 ? "" : name.slice(slash + 1);
  if (name.includes("@")) {
    fail(
      path,
      `${what} "${name}" must not hold a digest (@…): it names a registry, namespace or repository`,
    );
  }
  if (rest.includes(":")) {
    fail(
      path,
      `${what} "${name}" must not hold a tag (:…): it names a registry, namespace or repository`,
    );
  }
  if (!DOMAIN.test(host)) {
    fail(path, `${what} "${name}" does not start with a registry host[:port]`);
  }
  if (prefix && !looksLikeHost(host) && host.toLowerCase() === host) {
    fail(
      path,
      `${what} "${name}" does not start with a registry host (one with a '.', a ':' or localhost): ` +
        `image names are matched fully qualified (docker.io/library/…), so it would never match`,
    );
  }
  if (rest) {
    for (const c of rest.split("/")) {
      if (!COMPONENT.test(c)) {
        fail(path, `${what} "${name}" has an invalid repository path component "${c}"`);
      }
    }
  }
}

function checkWildcard(prefix: string, path: Path, fail: Fail): void {
  if (/[/@:]/.test(prefix) || !HOSTNAME.test(prefix.slice(2))) {
    fail(
      path,
      `wildcard prefix "${prefix}" must be *.example.com (no port, namespace, tag or digest; '*' only at the start)`,
    );
  }
}

/**
 * Why `name` cannot be the left side of an alias (a short name: no
 * registry, tag or digest), or undefined when it can.
 */
function shortNameProblem(name: string): string | undefined {
  if (name.includes("@")) return "must not hold a digest";
  const slash = name.indexOf("/");
  const first = slash < 0 ? name : name.slice(0, slash);
  if (slash >= 0 && (looksLikeHost(first) || first.toLowerCase() !== first)) {
    return "must be a short name, without a registry";
  }
  if (name.slice(name.lastIndexOf("/") + 1).includes(":")) return "must not hold a tag";
  for (const c of name.split("/")) {
    if (!COMPONENT.test(c)) return `has an invalid repository name component "${c}"`;
  }
  return undefined;
}

/** An alias's value: fully qualified, no tag or digest; Docker Hub's normalised (`docker.io/alpine` → `docker.io/library/alpine`). */
function aliasValue(value: string, path: Path, fail: Fail): string {
  const slash = value.indexOf("/");
  const first = slash < 0 ? "" : value.slice(0, slash);
  if (slash < 0 || !looksLikeHost(first)) {
    fail(path, `alias value "${value}" must be a fully qualified name (registry/repository)`);
  }
  if (value.includes("@")) fail(path, `alias value "${value}" must not hold a digest`);
  if (value.slice(slash + 1).includes(":")) {
    fail(path, `alias value "${value}" must not hold a tag`);
  }
  checkName(value, path, "alias value", fail, false);
  let v = value;
  if (first === "index.docker.io") v = `docker.io${v.slice(first.length)}`;
  if (v.startsWith("docker.io/") && !v.slice("docker.io/".length).includes("/")) {
    v = `docker.io/library/${v.slice("docker.io/".length)}`;
  }
  return v;
}

/**
 * The line (1-based) of the value at `path` in TOML `text`: `["registry", 2,
 * "insecure"]` is the `insecure` key of the third `[[registry]]` table.
 * A light scan of table headers and `key =` lines (strings spanning lines are
 * skipped); undefined when the value is not written that way (an inline
 * table), or the nearest enclosing table's header line.
 */
function lineOf(text: string, path: Path): number | undefined {
  const lines = text.split("\n");
  let table: Path = [];
  const counts = new Map<string, number>();
  let best: { line: number; depth: number } | undefined;
  const consider = (full: Path, line: number) => {
    let depth = 0;
    while (depth < full.length && depth < path.length && full[depth] === path[depth]) depth++;
    if (depth < full.length) return; // not on the way to `path`
    if (!best || depth > best.depth) best = { line, depth };
  };
  let inString: string | undefined;
  for (let n = 0; n < lines.length; n++) {
    let line = lines[n];
    if (inString) {
      const end = line.indexOf(inString);
      if (end < 0) continue;
      line = line.slice(end + 3);
      inString = undefined;
    }
    const trimmed = line.trim();
    const header = /^\[(\[)?\s*([^\]]+?)\s*\](\])?/.exec(trimmed);
    if (header) {
      const names = splitKey(header[2]);
      const resolved: Path = [];
      for (let i = 0; i < names.length; i++) {
        resolved.push(names[i]);
        const k = JSON.stringify(resolved);
        const isLast = i === names.length - 1;
        if (isLast && header[1]) {
          const c = (counts.get(k) ?? -1) + 1;
          counts.set(k, c);
          // A new element resets the counts of the arrays below it.
          for (const key of [...counts.keys()]) {
            if (key !== k && key.startsWith(k.slice(0, -1) + ",")) counts.delete(key);
          }
          resolved.push(c);
        } else if (counts.has(k)) resolved.push(counts.get(k)!);
      }
      table = resolved;
      consider(table, n + 1);
      continue;
    }
    const kv = /^((?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_.\- ]+?))\s*=(.*)$/.exec(trimmed);
    if (kv) {
      consider([...table, ...splitKey(kv[1])], n + 1);
      const rest = kv[2];
      for (const q of ['"""', "'''"]) {
        const at = rest.indexOf(q);
        if (at >= 0 && rest.indexOf(q, at + 3) < 0) inString = q;
      }
    }
  }
  return best?.line;
}

/** Splits a dotted TOML key (`a."b.c".d`) into its parts. */
function splitKey(key: string): string[] {
  const out: string[] = [];
  const re = /\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*(?:\.|$)/y;
  let m: RegExpExecArray | null;
  while (re.lastIndex < key.length && (m = re.exec(key))) {
    out.push(m[1] !== undefined ? JSON.parse(`"${m[1]}"`) : m[2] ?? m[3]);
  }
  return out;
}

/**
 * How many characters of `ref` (a name as `domain/repository[:tag][@digest]`)
 * the `prefix` matches, or -1: the prefix must end where a path component,
 * tag or digest begins (`example.com/foo` matches `example.com/foo/app` and
 * `example.com/foo:1`, not `example.com/foobar`; a host prefix does not match
 * the same host on another port). `*.example.com` matches any subdomain's
 * name, up to the end of its host name.
 *
 * @example Usage
 * ```ts
 * import { prefixMatch } from "./registries_conf.ts";
 * console.assert(prefixMatch("example.com/foo/app:1", "example.com/foo") === 15);
 * console.assert(prefixMatch("example.com/foobar:1", "example.com/foo") === -1);
 * console.assert(prefixMatch("a.b.example.com/x", "*.example.com") === 15);
 * ```
 */
export function prefixMatch(ref: string, prefix: string): number {
  const slash = ref.indexOf("/");
  const host = slash < 0 ? ref : ref.slice(0, slash);
  if (prefix.startsWith("*.")) {
    const hostname = host.replace(/:\d+$/, "");
    return hostname.endsWith(prefix.slice(1)) && hostname.length > prefix.length - 1
      ? hostname.length
      : -1;
  }
  if (!ref.startsWith(prefix)) return -1;
  if (ref.length === prefix.length) return prefix.length;
  const next = ref[prefix.length];
  if (next === "/" || next === "@") return prefix.length;
  // A ':' after the host is a port (another registry); after a path, a tag.
  if (next === ":" && prefix.length > host.length) return prefix.length;
  return -1;
}

/**
 * The `[[registry]]` whose prefix matches `name` (`domain/repository`,
 * without tag or digest) the longest, if any.
 *
 * @example Usage
 * ```ts
 * import { findRegistry, parseRegistriesConf } from "./registries_conf.ts";
 * const conf = await parseRegistriesConf('[[registry]]\nprefix = "example.com"\nlocation = "mirror.local"\n', "r.conf");
 * console.assert(findRegistry(conf, "example.com/app")?.location === "mirror.local");
 * ```
 */
export function findRegistry(conf: RegistriesConf, name: string): RegistryEntry | undefined {
  let best: RegistryEntry | undefined;
  for (const r of conf.registries) {
    if (prefixMatch(name, r.prefix) >= 0 && (!best || r.prefix.length > best.prefix.length)) {
      best = r;
    }
  }
  return best;
}

/** One place to try a pull from ({@linkcode pullSources}). */
export interface PullSource {
  /** The reference at that place (the location's or mirror's name for the image). */
  readonly ref: RegistryRef;
  /** Plain HTTP and unverified TLS allowed there. */
  readonly insecure: boolean;
  /** A mirror (true) or the registry's own location (false). */
  readonly mirror: boolean;
}

/**
 * Where to pull `ref` from, in order: the mirrors its `[[registry]]` allows
 * for this reference (`mirror-by-digest-only`, `pull-from-mirror`), then its
 * location (or the name itself). With no matching entry (or no
 * configuration), only the name itself.
 *
 * @throws {BlockedRegistryError} when the matching entry is blocked.
 *
 * @example Usage
 * ```ts
 * import { parseRegistriesConf, pullSources } from "./registries_conf.ts";
 * import { parseRegistryRef } from "./ref.ts";
 * const conf = await parseRegistriesConf('[[registry]]\nprefix = "example.com/foo"\nlocation = "upstream.local/bar"\n[[registry.mirror]]\nlocation = "cache.local/foo"\n', "r.conf");
 * const s = pullSources(conf, parseRegistryRef("example.com/foo/app:1"));
 * console.assert(s.map((p) => `${p.ref.domain}/${p.ref.repository}`).join(" ") === "cache.local/foo/app upstream.local/bar/app");
 * ```
 */
export function pullSources(conf: RegistriesConf | undefined, ref: RegistryRef): PullSource[] {
  const self: PullSource = { ref, insecure: false, mirror: false };
  if (!conf) return [self];
  const name = `${ref.domain}/${ref.repository}`;
  const entry = findRegistry(conf, name);
  if (!entry) return [self];
  if (entry.blocked) {
    const full = `${name}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
    throw new BlockedRegistryError(full, entry.prefix, entry.file);
  }
  const byDigest = ref.digest !== undefined;
  const mirrors = entry.mirrors.filter((m) =>
    entry.mirrorByDigestOnly
      ? byDigest
      : m.pullFromMirror === "all" || (m.pullFromMirror === "digest-only") === byDigest
  );
  // What follows the prefix in the name (a wildcard's match ends at the host
  // name: a port typed after it is dropped, the location says where to go).
  const rest = name.slice(prefixMatch(name, entry.prefix)).replace(/^:\d+/, "");
  const rewrite = (location: string): RegistryRef => {
    if (!location) return ref; // a *.example.com entry without a location: the name as typed
    return rewritten(location, rest, ref, entry);
  };
  return [
    ...mirrors.map((m) => ({ ref: rewrite(m.location), insecure: m.insecure, mirror: true })),
    { ref: rewrite(entry.location), insecure: entry.insecure, mirror: false },
  ];
}

/** `location` + what followed the matched prefix, as a reference (tag and digest kept). */
function rewritten(
  location: string,
  rest: string,
  ref: RegistryRef,
  entry: RegistryEntry,
): RegistryRef {
  const slash = location.indexOf("/");
  let domain = slash < 0 ? location : location.slice(0, slash);
  let path = [slash < 0 ? "" : location.slice(slash + 1), rest.replace(/^\//, "")]
    .filter(Boolean).join("/");
  if (!path) {
    throw new RegistriesConfError(
      entry.file,
      `[[registry]] prefix "${entry.prefix}" with location "${location}" leaves no repository name for ${ref.domain}/${ref.repository}`,
    );
  }
  if (domain === "index.docker.io") domain = "docker.io";
  if (domain === "docker.io" && !path.includes("/")) path = `library/${path}`;
  return {
    transport: "docker",
    domain,
    host: domain === "docker.io" ? "registry-1.docker.io" : domain,
    repository: path,
    ...(ref.tag ? { tag: ref.tag } : {}),
    ...(ref.digest ? { digest: ref.digest } : {}),
  };
}
