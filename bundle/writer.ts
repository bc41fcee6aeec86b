/**
 * Writes a bundle's `config.json`: the seed's `RuntimeSpecWriter`. The
 * default writer builds the spec from the defaults and the options, then
 * fits it to this host before writing it atomically:
 *
 * - a spec without a command is refused (`NoCommandError`);
 * - an rlimit above this process's hard limit is refused (`RlimitError`):
 *   raising one needs CAP_SYS_RESOURCE, which this host lacks (FINDINGS);
 * - in a user namespace whose cgroups are not writable, cgroup limits are
 *   dropped with a warning (runc would fail with "container could not join or
 *   create cgroup");
 * - in a user namespace, a process uid or gid this namespace does not map is
 *   refused with the reason, instead of runc's bare "invalid argument";
 * - on a kernel without seccomp filters, the default seccomp filter is
 *   dropped with a warning (as docker does) and a profile the caller chose is
 *   refused (`SeccompUnsupportedError`).
 *
 * @module
 */

import { basename, dirname, join } from "@std/path";
import {
  canRaiseRlimits,
  canWriteCgroups,
  gidMappings,
  hostRlimits,
  inUserNamespace,
  isMapped,
  uidMappings,
} from "./host.ts";
import { isDefaultSeccomp } from "./seccomp.ts";
import { kernelHasSeccompFilter } from "../sys/abi.ts";
import {
  newSpec,
  NoCommandError,
  RlimitError,
  type Spec,
  SpecError,
  type SpecOption,
} from "./spec.ts";
import { removeSync, renameSync, writeTextFileSync } from "../sys/files.ts";

/**
 * Writes an OCI runtime spec to `path` (a `config.json` file), built from the
 * defaults and `options` in order.
 */
export interface RuntimeSpecWriter {
  /** Builds the spec from `options` and writes it to `path`. */
  write(path: string, ...options: SpecOption[]): Promise<void>;
}

/** Options of {@linkcode JSONSpecWriter}. */
export interface SpecWriterOptions {
  /** Fit the spec to this host (see the module doc). Default true. */
  adaptToHost?: boolean;
  /** Called with each warning (dropped limits). Default: `console.error`. */
  onWarning?: (message: string) => void;
  /** What the spec is for, in error messages (an image name). */
  what?: string;
}

/**
 * A process uid or gid that this user namespace does not map.
 *
 * @example Usage
 * ```ts
 * import { UnmappedIDError } from "./writer.ts";
 * console.log(new UnmappedIDError("uid", 1000).message);
 * ```
 */
export class UnmappedIDError extends SpecError {
  /** Creates the error for `kind` (`uid` or `gid`) `id`. */
  constructor(readonly kind: "uid" | "gid", readonly id: number, options?: ErrorOptions) {
    super(
      `cannot run the container process as ${kind} ${id}: this user namespace does not map it ` +
        `(only ${
          (kind === "uid" ? uidMappings() : gidMappings()).map((r) =>
            r.count === 1 ? `${r.inside}` : `${r.inside}-${r.inside + r.count - 1}`
          ).join(", ")
        }); enter it with subordinate ids (unshare --map-auto, which needs /etc/subuid and newuidmap)`,
      options,
    );
    this.name = "UnmappedIDError";
  }
}

/**
 * A seccomp profile was chosen for a container on a kernel that cannot
 * enforce it (no `CONFIG_SECCOMP_FILTER`).
 *
 * @example Usage
 * ```ts
 * import { SeccompUnsupportedError } from "./writer.ts";
 * console.log(new SeccompUnsupportedError().message);
 * ```
 */
export class SeccompUnsupportedError extends SpecError {
  /** Creates the error. */
  constructor(options?: ErrorOptions) {
    super(
      "cannot apply the seccomp profile: this kernel has no seccomp filter mode " +
        "(CONFIG_SECCOMP_FILTER); run with seccomp=unconfined to go without one",
      options,
    );
    this.name = "SeccompUnsupportedError";
  }
}

/**
 * Fits `spec` to this host in place (see the module doc) and returns the
 * warnings it produced.
 *
 * @throws {NoCommandError} when the process has no args.
 * @throws {RlimitError} for an rlimit above the host's hard limit.
 * @throws {UnmappedIDError} for a process id the user namespace lacks.
 * @throws {SeccompUnsupportedError} for a chosen seccomp profile on a kernel
 *   without seccomp filters.
 *
 * @example Usage
 * ```ts
 * import { newSpec } from "./spec.ts";
 * import { withArgs } from "./options.ts";
 * import { adaptSpecToHost } from "./writer.ts";
 * const spec = await newSpec(withArgs("/bin/true"));
 * console.log(adaptSpecToHost(spec)); // [] as root on the host
 * ```
 */
export function adaptSpecToHost(spec: Spec, what?: string): string[] {
  const warnings: string[] = [];
  if (!spec.process?.args?.length) throw new NoCommandError(what);

  if (!canRaiseRlimits()) {
    const host = hostRlimits();
    for (const r of spec.process.rlimits ?? []) {
      const h = host[r.type];
      if (h && r.hard > h.hard) throw new RlimitError(r.type, r.hard, h.hard);
    }
  }

  if (spec.linux?.seccomp && !kernelHasSeccompFilter()) {
    if (!isDefaultSeccomp(spec.linux.seccomp)) throw new SeccompUnsupportedError();
    delete spec.linux.seccomp;
    warnings.push("running without the default seccomp filter: this kernel has no seccomp");
  }

  if (!inUserNamespace()) return warnings;
  const ownUserNS = spec.linux?.namespaces?.some((n) => n.type === "user" && !n.path);

  const res = spec.linux?.resources;
  if (res && !canWriteCgroups()) {
    const dropped = Object.keys(res).filter((k) => k !== "devices" && res[k] !== undefined);
    for (const k of dropped) delete res[k];
    if (dropped.length) {
      warnings.push(
        `ignoring the ${dropped.join(", ")} limit${dropped.length > 1 ? "s" : ""}: ` +
          `this user namespace cannot write the cgroup filesystem`,
      );
    }
    if (spec.linux?.cgroupsPath) delete spec.linux.cgroupsPath;
  }

  if (!ownUserNS) {
    const u = spec.process.user;
    if (!isMapped(u.uid, uidMappings())) throw new UnmappedIDError("uid", u.uid);
    if (!isMapped(u.gid, gidMappings())) throw new UnmappedIDError("gid", u.gid);
    for (const g of u.additionalGids ?? []) {
      if (!isMapped(g, gidMappings())) throw new UnmappedIDError("gid", g);
    }
  }
  return warnings;
}

/**
 * `spec` as JSON. A seccomp argument above 2^53 is a bigint
 * (`LinuxSeccompArg`), which `JSON.stringify` refuses: it is written as the
 * exact integer. Only such a spec pays for the replacer.
 *
 * @example Usage
 * ```ts
 * import { specJSON } from "./writer.ts";
 * console.log(specJSON({ ociVersion: "1.0.2" })); // {"ociVersion":"1.0.2"}
 * ```
 */
export function specJSON(spec: Spec): string {
  try {
    return JSON.stringify(spec);
  } catch (e) {
    if (!(e instanceof TypeError) || !/BigInt/i.test(e.message)) throw e;
    return JSON.stringify(
      spec,
      (_k, v) => typeof v === "bigint" ? (JSON as unknown as RawJSON).rawJSON(String(v)) : v,
    );
  }
}

/** `JSON.rawJSON` (V8 11.4+; not yet in TypeScript's lib). */
interface RawJSON {
  rawJSON(text: string): unknown;
}

/**
 * Writes `spec` as JSON to `path` atomically (a temporary file in the same
 * directory, renamed over `path`), mode 0600.
 *
 * @example Usage
 * ```ts ignore
 * import { defaultSpec } from "./spec.ts";
 * import { writeSpecFile } from "./writer.ts";
 * await writeSpecFile("/tmp/bundle/config.json", defaultSpec());
 * ```
 */
export function writeSpecFile(path: string, spec: Spec): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${crypto.randomUUID().slice(0, 8)}.tmp`);
  try {
    // Synchronous: a bundle is on a mount this thread may alone see
    // (overlay/userns.ts enterThreadMountNamespace), and a few KiB cost less
    // written here than sent to the thread pool.
    writeTextFileSync(tmp, specJSON(spec), { mode: 0o600, createNew: true });
    renameSync(tmp, path);
  } catch (e) {
    try {
      removeSync(tmp);
    } catch {
      // not written
    }
    return Promise.reject(
      new SpecError(`cannot write the runtime spec ${path}: ${(e as Error).message}`, {
        cause: e,
      }),
    );
  }
  return Promise.resolve();
}

/**
 * The default {@linkcode RuntimeSpecWriter}: defaults, then options, then
 * {@linkcode adaptSpecToHost}, written with {@linkcode writeSpecFile}.
 *
 * @example Usage
 * ```ts ignore
 * import { JSONSpecWriter } from "./writer.ts";
 * import { withArgs } from "./options.ts";
 * await new JSONSpecWriter().write("/tmp/bundle/config.json", withArgs("/bin/true"));
 * ```
 */
export class JSONSpecWriter implements RuntimeSpecWriter {
  #options: SpecWriterOptions;

  /** Creates a writer. */
  constructor(options: SpecWriterOptions = {}) {
    this.#options = options;
  }

  /** Builds the spec from `options`, fits it to the host and writes it to `path`. */
  async write(path: string, ...options: SpecOption[]): Promise<void> {
    const spec = await this.build(...options);
    await writeSpecFile(path, spec);
  }

  /** Builds and fits the spec without writing it. */
  async build(...options: SpecOption[]): Promise<Spec> {
    let spec: Spec;
    try {
      spec = await newSpec(...options);
    } catch (e) {
      if (e instanceof SpecError) throw e;
      throw new SpecError(`cannot apply spec option: ${(e as Error).message}`, { cause: e });
    }
    if (this.#options.adaptToHost ?? true) {
      const warn = this.#options.onWarning ?? ((m: string) => console.error(`strata: ${m}`));
      for (const w of adaptSpecToHost(spec, this.#options.what)) warn(w);
    }
    return spec;
  }
}

/**
 * Writes a spec with the default writer: `new JSONSpecWriter().write(path, ...options)`.
 *
 * @example Usage
 * ```ts ignore
 * import { writeSpec } from "./writer.ts";
 * import { withArgs } from "./options.ts";
 * await writeSpec("/tmp/bundle/config.json", withArgs("/bin/true"));
 * ```
 */
export function writeSpec(path: string, ...options: SpecOption[]): Promise<void> {
  return new JSONSpecWriter().write(path, ...options);
}
