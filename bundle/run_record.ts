/**
 * Run records, `<cache>/images/runs/<name>.json`: what a `strata run` of an
 * image needs once every one of its layers is cached, written by a run that
 * made its bundle the long way, so that the next run of the same name can
 * skip that way (`cli/cmd_run_warm.ts`). A record holds what a run would
 * otherwise read, verify and compute again: the manifest digest the name led
 * to, the layers' directories (their chain IDs hashed once, here), the
 * runtime spec built from the image config (its user looked up in the
 * image's `/etc/passwd` once), and the runtime chosen.
 *
 * A record is only ever a shortcut: the run that uses it first checks that
 * it still says what the long way would find, and takes the long way (which
 * writes the record again) when anything differs:
 *
 * - the name: an OCI layout's `index.json` still names the same entry (read
 *   on every run, as before), a pulled name still points at the same
 *   manifest (its `refs/` record);
 * - the cache: every layer directory is there, and `idmap.json` accepts this
 *   process' id mapping;
 * - the code that built it: `format`, and the size and modification time of
 *   every source file of `bundle/`, `overlay/`, `sys/` and `image/` and of
 *   the run command (or, for a remote install, the versioned URL);
 * - the host it was built for ({@linkcode hostKey}): the boot (the kernel and
 *   what was probed of it), the process' limits, capabilities and seccomp
 *   state, its cgroup, the user, and the environment the runtime is found
 *   and the mounts are made by.
 *
 * Records are derived data: `strata verify` builds each one again from the
 * verified manifest and config and removes those that differ, `rm` and
 * `prune` remove the ones of names they remove.
 *
 * @module
 */
import { join } from "@std/path";
import { readProcText } from "../sys/proc.ts";

/** The version of the record format; a record of another one is not used. */
export const RUN_RECORD_FORMAT = 1;

/** How a record's run reaches a mount namespace. */
export interface RunRecordUserns {
  /** `unshare` arguments (before `--`) that made the user namespace. */
  unshare: string[];
  /** `/proc/self/uid_map` inside it, as read there. */
  uidMap: string;
  /** `/proc/self/gid_map` inside it. */
  gidMap: string;
  /** The warning a run in it prints (only root mapped), if any. */
  warning?: string;
}

/** One layer of a record: its diff_id and the directories it may be published as. */
export interface RunRecordLayer {
  /** The layer's diff_id. */
  diffID: string;
  /**
   * Directory names under `layers/`: shared (`<alg>-<hex>`), then chained
   * (`<alg>-<hex>@<chain hex>`); the first that exists is used, as
   * `CachingLayerResolver.cachedPath` looks them up.
   */
  dirs: [shared: string, chained: string];
}

/** The runtime a record's runs use, and what it was chosen over. */
export interface RunRecordRuntime {
  /** Its name (`runc`, `crun`). */
  name: string;
  /** Its path, as found on PATH. */
  path: string;
  /** Why crun was passed over, when it was (said once per cache). */
  reason?: string;
  /** For runc: the crun passed over (its path and mtime), or null when there was none. */
  crun?: { path: string; mtime: number } | null;
}

/** The code a record was built by. */
export interface RunRecordCode {
  /** The package root (a `file:` URL, or a remote, versioned one). */
  root: string;
  /** For a `file:` root: `[path, size, mtime ms]` of every source file that counts. */
  files?: [path: string, size: number, mtime: number][];
}

/** `images/runs/<name>.json`. */
export interface RunRecord {
  /** {@linkcode RUN_RECORD_FORMAT}. */
  format: number;
  /** The reference as given on the command line. */
  ref: string;
  /** Its canonical name (as the image store names it). */
  name: string;
  /** The image store's record of that name (`refs/<hex>.json`). */
  refFile: string;
  /**
   * The digest the name led to: for an OCI layout, the entry of its
   * `index.json` (a manifest, or an index resolved for this host's platform);
   * for a pulled name, the manifest.
   */
  lookup: string;
  /** The size the entry gives for it (a layout's `index.json`; else the manifest's). */
  lookupSize: number;
  /** The media type the entry gives for it. */
  lookupMediaType: string;
  /** The manifest digest. */
  digest: string;
  /** Layers, bottom first. */
  layers: RunRecordLayer[];
  /** The image's Entrypoint (a command given on the command line replaces its Cmd). */
  entrypoint: string[];
  /** The image's StopSignal. */
  stopSignal?: string;
  /** The runtime spec of the image's own command, `root.path` empty. */
  spec: Record<string, unknown>;
  /** The runtime chosen, and why another was passed over. */
  runtime: RunRecordRuntime;
  /** The runtime's state directory. */
  stateDir: string;
  /** {@linkcode hostKey} where it was built. */
  host: string;
  /** The code it was built by. */
  code: RunRecordCode;
  /** Unprivileged: the user namespace the run was made in. */
  userns?: RunRecordUserns;
}

/** The longest file name a record gets (`NAME_MAX` is 255). */
const MAX_NAME = 240;

/**
 * The file of the record for `ref` as given (base64url of its UTF-8: no
 * hashing), or undefined for a reference too long to name a file by.
 *
 * @example Usage
 * ```ts
 * import { runRecordPath } from "./run_record.ts";
 * console.log(runRecordPath("/var/lib/strata", "oci:/srv/app:v1"));
 * // "/var/lib/strata/images/runs/b2NpOi9zcnYvYXBwOnYx.json"
 * ```
 */
export function runRecordPath(cacheRoot: string, ref: string): string | undefined {
  const bytes = new TextEncoder().encode(ref);
  if (bytes.length * 4 / 3 > MAX_NAME) return undefined;
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  const name = btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  return join(cacheRoot, "images", "runs", `${name}.json`);
}

/**
 * Reads a record; undefined when there is none, or it cannot be read, or it
 * is not one of this format (the caller then takes the long way, which
 * writes it again).
 *
 * @example Usage
 * ```ts ignore
 * import { readRunRecord } from "./run_record.ts";
 * const record = readRunRecord("/var/lib/strata/images/runs/b2NpOi9zcnYvYXBwOnYx.json");
 * ```
 */
export function readRunRecord(path: string): RunRecord | undefined {
  let r: RunRecord;
  try {
    r = JSON.parse(Deno.readTextFileSync(path));
  } catch {
    return undefined;
  }
  return isRunRecord(r) ? r : undefined;
}

const isStrings = (v: unknown): v is string[] =>
  Array.isArray(v) && v.every((s) => typeof s === "string");

/**
 * Tells whether `r` has the shape of a record of this format: every field a
 * run reads has its type (a damaged record is never half used).
 *
 * @example Usage
 * ```ts
 * import { isRunRecord } from "./run_record.ts";
 * console.log(isRunRecord({ format: 1 })); // false
 * ```
 */
export function isRunRecord(r: unknown): r is RunRecord {
  const v = r as RunRecord;
  if (typeof v !== "object" || v === null || v.format !== RUN_RECORD_FORMAT) return false;
  for (const k of ["ref", "name", "refFile", "lookup", "digest", "stateDir", "host"] as const) {
    if (typeof v[k] !== "string") return false;
  }
  if (!Array.isArray(v.layers) || v.layers.length === 0) return false;
  for (const l of v.layers) {
    if (typeof l?.diffID !== "string" || !isStrings(l.dirs) || l.dirs.length !== 2) return false;
    if (l.dirs.some((d) => d.includes("/") || d.startsWith("."))) return false;
  }
  if (!isStrings(v.entrypoint)) return false;
  if (v.stopSignal !== undefined && typeof v.stopSignal !== "string") return false;
  const s = v.spec as { root?: unknown; process?: { args?: unknown } };
  if (typeof s !== "object" || s === null || typeof s.root !== "object" || s.root === null) {
    return false;
  }
  if (typeof s.process !== "object" || s.process === null || !isStrings(s.process.args)) {
    return false;
  }
  const rt = v.runtime;
  if (typeof rt?.name !== "string" || typeof rt.path !== "string" || !rt.path.startsWith("/")) {
    return false;
  }
  if (rt.reason !== undefined && typeof rt.reason !== "string") return false;
  if (
    rt.crun !== undefined && rt.crun !== null &&
    (typeof rt.crun.path !== "string" || typeof rt.crun.mtime !== "number")
  ) return false;
  if (typeof v.lookupSize !== "number" || typeof v.lookupMediaType !== "string") return false;
  if (typeof v.code?.root !== "string") return false;
  if (v.code.files !== undefined) {
    if (!Array.isArray(v.code.files)) return false;
    for (const f of v.code.files) {
      if (
        !Array.isArray(f) || typeof f[0] !== "string" || typeof f[1] !== "number" ||
        typeof f[2] !== "number"
      ) return false;
    }
  }
  if (v.userns !== undefined) {
    const u = v.userns;
    if (!isStrings(u.unshare) || typeof u.uidMap !== "string" || typeof u.gidMap !== "string") {
      return false;
    }
    if (u.warning !== undefined && typeof u.warning !== "string") return false;
  }
  return true;
}

/**
 * Writes a record: a temporary file renamed into place, so a reader sees the
 * old record or the new one. Creates `images/runs/` when needed.
 *
 * @example Usage
 * ```ts ignore
 * import { runRecordPath, writeRunRecord } from "./run_record.ts";
 * writeRunRecord(runRecordPath(root, ref)!, record);
 * ```
 */
export function writeRunRecord(path: string, record: RunRecord): void {
  const dir = join(path, "..");
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    Deno.writeTextFileSync(tmp, JSON.stringify(record), { mode: 0o600 });
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // not written
    }
    throw e;
  }
}

/**
 * Removes the records of `names` (canonical names) below `cacheRoot`; for
 * `rm` and `prune`, which remove names. Returns how many it removed.
 *
 * @example Usage
 * ```ts ignore
 * import { removeRunRecords } from "./run_record.ts";
 * removeRunRecords("/var/lib/strata", (r) => r.name === "docker.io/library/busybox:latest");
 * ```
 */
export function removeRunRecords(cacheRoot: string, which: (r: RunRecord) => boolean): number {
  const dir = join(cacheRoot, "images", "runs");
  let n = 0;
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.endsWith(".json")) continue;
    const path = join(dir, e.name);
    const r = readRunRecord(path);
    if (r !== undefined && !which(r)) continue;
    try {
      Deno.removeSync(path);
      n++;
    } catch {
      // removed meanwhile
    }
  }
  return n;
}

/** The environment variables a run's mounts, runtime and state directory depend on. */
const HOST_ENV = ["PATH", "STRATA_MOUNT_BACKEND", "XDG_RUNTIME_DIR"];

/** The lines of `/proc/self/status` a spec can depend on. */
const STATUS_LINES = /^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):.*$/gm;

/** Of those, the ones a new user namespace inherits (its own capabilities are always full). */
const STATUS_LINES_USERNS = /^(CapBnd|NoNewPrivs|Seccomp):.*$/gm;

/**
 * What a run record depends on in the host and the process, as one string:
 * the boot (`/proc/sys/kernel/random/boot_id`: the kernel, its version and
 * what was probed of it, such as which runtime works), the resource limits,
 * the capability and seccomp lines of `/proc/self/status`, the cgroup, the
 * (outside) user id, and the environment the runtime, its state directory
 * and the mounts are found by. In a user namespace (`userns`), only what the
 * namespace inherits from the process that makes it, so that this process
 * and a run inside the namespace it makes compute the same key.
 *
 * @example Usage
 * ```ts ignore
 * import { hostKey } from "./run_record.ts";
 * console.log(hostKey("root", 0) === hostKey("root", 0)); // true
 * ```
 */
export function hostKey(mode: "root" | "userns", outsideUid: number): string {
  const status = readProcText("/proc/self/status")
    .match(mode === "root" ? STATUS_LINES : STATUS_LINES_USERNS) ?? [];
  const env = HOST_ENV.map((k) => `${k}=${Deno.env.get(k) ?? ""}`);
  return [
    `mode ${mode} uid ${outsideUid}`,
    readProcText("/proc/sys/kernel/random/boot_id").trim(),
    ...status,
    readProcText("/proc/self/limits"),
    readProcText("/proc/self/cgroup"),
    ...env,
  ].join("\n");
}

/** The directories whose files a record's contents follow from. */
const CODE_DIRS = ["bundle", "overlay", "sys", "image"];
/** And the files of the command line's that do. */
const CODE_FILES = ["cli/cmd_run.ts", "cli/pipeline.ts", "cli/cmd_run_warm.ts", "deno.json"];

/** The package root: this module is `bundle/run_record.ts`. */
const PACKAGE_ROOT = new URL("../", import.meta.url);

/**
 * The code this process runs, for a new record: the package root and, for a
 * local one, the size and modification time of every source file of
 * `bundle/`, `overlay/`, `sys/` and `image/` and of the run command's own.
 *
 * @example Usage
 * ```ts ignore
 * import { codeIdentity } from "./run_record.ts";
 * console.log(codeIdentity().root);
 * ```
 */
export function codeIdentity(): RunRecordCode {
  if (PACKAGE_ROOT.protocol !== "file:") return { root: PACKAGE_ROOT.href };
  const root = decodeURIComponent(PACKAGE_ROOT.pathname);
  const paths = [...CODE_FILES];
  for (const d of CODE_DIRS) {
    for (const e of Deno.readDirSync(join(root, d))) {
      if (e.isFile && (e.name.endsWith(".ts") || e.name.endsWith(".json"))) {
        paths.push(`${d}/${e.name}`);
      }
    }
  }
  paths.sort();
  const files: [string, number, number][] = [];
  for (const p of paths) {
    const st = Deno.lstatSync(join(root, p));
    files.push([p, st.size, st.mtime?.getTime() ?? 0]);
  }
  // The directories too: a file added or removed changes their mtime.
  for (const d of CODE_DIRS) {
    files.push([`${d}/`, 0, Deno.lstatSync(join(root, d)).mtime?.getTime() ?? 0]);
  }
  return { root: PACKAGE_ROOT.href, files };
}

/**
 * Tells whether the code a record was built by is the code this process
 * runs: the same package root and, for a local one, every file listed still
 * of the size and modification time it had (one `lstat` each).
 *
 * @example Usage
 * ```ts ignore
 * import { codeIdentity, sameCode } from "./run_record.ts";
 * console.log(sameCode(codeIdentity())); // true
 * ```
 */
export function sameCode(code: RunRecordCode): boolean {
  if (code.root !== PACKAGE_ROOT.href) return false;
  if (PACKAGE_ROOT.protocol !== "file:") return code.files === undefined;
  if (!code.files) return false;
  const root = decodeURIComponent(PACKAGE_ROOT.pathname);
  for (const [p, size, mtime] of code.files) {
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(join(root, p));
    } catch {
      return false;
    }
    if ((st.mtime?.getTime() ?? 0) !== mtime || (!p.endsWith("/") && st.size !== size)) {
      return false;
    }
  }
  return true;
}
