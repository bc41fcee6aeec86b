/**
 * `strata run [opts] IMAGE [--] [CMD ARG...]`: bundle the image (pulling
 * what is not cached), run it with an OCI runtime, clean up. stdout, stderr
 * and the exit status are the container's; strata's own failures exit 125,
 * a command the container cannot run 127 (not found) or 126 (not executable).
 *
 * @module
 */
import { CachingBundler } from "../bundle/bundler.ts";
import {
  type BindMount,
  parseBytes,
  parseMilliCPU,
  withCmd,
  withCPULimit,
  withCwd,
  withEntrypoint,
  withEnv,
  withHostNetwork,
  withMemoryLimit,
  withMounts,
  withNetworkNone,
  withPidsLimit,
  withReadonlyRootFS,
  withTerminal,
  withUser,
} from "../bundle/options.ts";
import { runContainer, selectRuntime } from "../bundle/run.ts";
import { recordRun } from "./run_records.ts";
import { SpecError, type SpecOption } from "../bundle/spec.ts";
import type { SourceImage } from "../image/source.ts";
import type { CachingLayerResolver } from "../overlay/resolver.ts";
import { UsageError } from "./args.ts";
import type { Context } from "./context.ts";
import { enterNamespace, onceWarner, openCached, pullImage } from "./pipeline.ts";
import { getEnv } from "../sys/env.ts";
import { statSync } from "../sys/files.ts";

/**
 * Turns `--env` values into `K=V` strings: `K=V` as given, a bare `K` takes
 * the value from strata's own environment (and is skipped when unset), as
 * docker and podman do.
 *
 * @throws {UsageError} for an empty name.
 *
 * @example Usage
 * ```ts
 * import { envList } from "./cmd_run.ts";
 * console.log(envList(["A=1", "B=x=y"])); // ["A=1", "B=x=y"]
 * ```
 */
export function envList(values: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    const i = v.indexOf("=");
    const name = i < 0 ? v : v.slice(0, i);
    if (!name) throw new UsageError(`option --env needs NAME=VALUE, not '${v}'`, "run");
    if (i >= 0) out.push(v);
    else {
      const host = getEnv(name);
      if (host !== undefined) out.push(`${name}=${host}`);
    }
  }
  return out;
}

/**
 * Turns `--volume` values (`SRC:DST[:ro|rw]`, docker's form) into bind
 * mounts. SRC is a host path (a relative one is taken from the working
 * directory) that must exist; DST is absolute.
 *
 * @throws {UsageError} for a malformed value or a missing source.
 *
 * @example Usage
 * ```ts
 * import { volumeMounts } from "./cmd_run.ts";
 * console.log(volumeMounts(["/tmp:/data:ro"])); // [{ source: "/tmp", destination: "/data", readonly: true }]
 * ```
 */
export function volumeMounts(values: readonly string[]): BindMount[] {
  return values.map((v) => {
    const parts = v.split(":");
    const [source, destination, mode = "rw"] = parts;
    if (parts.length < 2 || parts.length > 3 || !source || !destination?.startsWith("/")) {
      throw new UsageError(
        `option --volume needs SRC:DST[:ro] with DST absolute, not '${v}'`,
        "run",
      );
    }
    if (mode !== "ro" && mode !== "rw") {
      throw new UsageError(`option --volume takes ro or rw after DST, not '${mode}'`, "run");
    }
    try {
      statSync(source);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      throw new UsageError(`option --volume: ${source} does not exist`, "run");
    }
    return { source, destination, readonly: mode === "ro" };
  });
}

/** `--memory`, `--cpus` and `--pids-limit`, checked now: a bad value is a usage error. */
function limitOptions(o: Context["options"]): SpecOption[] {
  const opts: SpecOption[] = [];
  const usage = (name: string, f: () => SpecOption) => {
    try {
      opts.push(f());
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      throw new UsageError(`option --${name}: ${e.message}`, "run");
    }
  };
  if (typeof o.memory === "string") {
    const memory = o.memory;
    // As `docker run -m`: k, m, g and t (any case, optionally with b or ib) are binary.
    const unit = /^([0-9]+(?:\.[0-9]+)?)\s*([kmgt])(?:i?b)?$/i.exec(memory);
    const bytes = unit ? `${unit[1]}${unit[2].toUpperCase()}i` : memory;
    usage("memory", () => withMemoryLimit(parseBytes(bytes)));
  }
  if (typeof o.cpus === "string") {
    const cpus = o.cpus;
    usage("cpus", () => (parseMilliCPU(cpus), withCPULimit(cpus)));
  }
  if (typeof o["pids-limit"] === "string") {
    const n = Number(o["pids-limit"]);
    if (!Number.isInteger(n) || n <= 0) {
      throw new UsageError(
        `option --pids-limit needs a positive integer, not '${o["pids-limit"]}'`,
        "run",
      );
    }
    opts.push(withPidsLimit(n));
  }
  return opts;
}

/** `--cap-add`/`--cap-drop` values as `CAP_*` names (or `ALL`); a bad one is a usage error. */
function capabilityValues(
  parseCapability: (v: string) => string | undefined,
  values: readonly string[],
  option: string,
): string[] {
  return values.map((v) => {
    const c = parseCapability(v);
    if (!c) {
      throw new UsageError(
        `option --${option}: unknown capability '${v}' (NET_RAW, CAP_SYS_ADMIN, ... or ALL)`,
        "run",
      );
    }
    return c;
  });
}

const SECURITY_OPTS = "seccomp=unconfined, seccomp=FILE.json, no-new-privileges[=true|false]";

/**
 * `--privileged`, `--cap-add`, `--cap-drop` and `--security-opt` as spec
 * options, in the order docker and podman give them meaning: privileged
 * first; with `--cap-add ALL` every capability minus those dropped, else the
 * drops and then the adds (so `--cap-drop ALL --cap-add NET_RAW` leaves
 * NET_RAW alone); a capability both added and dropped is refused, as podman
 * does; the seccomp choice last (an explicit profile applies even with
 * `--privileged`, as in podman). A profile file is read and validated here,
 * before any work: a bad one fails the run (exit 125) with one line naming
 * the file and the problem. The confinement modules load only when one of
 * these options is given: a plain run does not pay for them.
 *
 * @throws {UsageError} for an unknown capability or security option.
 * @throws {SeccompProfileError} for a profile file that cannot be used.
 *
 * @example Usage
 * ```ts
 * import { securityOptions } from "./cmd_run.ts";
 * const o = { "cap-add": ["net_raw"], "security-opt": ["seccomp=unconfined"] };
 * console.log((await securityOptions(o)).length); // 2
 * ```
 */
export async function securityOptions(o: Context["options"]): Promise<SpecOption[]> {
  if (
    o.privileged !== true && !o["cap-add"] && !o["cap-drop"] && !o["security-opt"]
  ) return [];
  const {
    withCapAdd,
    withCapDrop,
    withNoNewPrivileges,
    withoutSeccomp,
    withPrivileged,
    withSeccompProfile,
  } = await import("../bundle/security.ts");
  const { parseCapability } = await import("../bundle/capabilities.ts");
  const opts: SpecOption[] = [];
  if (o.privileged === true) opts.push(withPrivileged());
  const caps = (name: string) =>
    capabilityValues(parseCapability, (o[name] as string[] | undefined) ?? [], name);
  const add = caps("cap-add");
  const drop = caps("cap-drop");
  const both = add.find((c) => drop.includes(c));
  if (both) {
    throw new UsageError(
      both === "ALL"
        ? "options --cap-add ALL and --cap-drop ALL contradict each other"
        : `capability ${both} cannot be both added and dropped`,
      "run",
    );
  }
  if (add.includes("ALL")) {
    opts.push(withCapAdd("ALL"));
    if (drop.length) opts.push(withCapDrop(...drop));
  } else {
    if (drop.length) opts.push(withCapDrop(...drop));
    if (add.length) opts.push(withCapAdd(...add));
  }
  for (const raw of (o["security-opt"] as string[] | undefined) ?? []) {
    // docker's form is KEY=VALUE; its older KEY:VALUE is still accepted by docker and podman.
    const sep = raw.search(/[=:]/);
    const key = sep < 0 ? raw : raw.slice(0, sep);
    const value = sep < 0 ? undefined : raw.slice(sep + 1);
    if (key === "seccomp") {
      if (!value) {
        throw new UsageError(
          `option --security-opt seccomp needs =unconfined or =FILE.json`,
          "run",
        );
      }
      opts.push(value === "unconfined" ? withoutSeccomp() : withSeccompProfile(value));
    } else if (key === "no-new-privileges") {
      if (value !== undefined && value !== "true" && value !== "false") {
        throw new UsageError(
          `option --security-opt no-new-privileges takes true or false, not '${value}'`,
          "run",
        );
      }
      opts.push(withNoNewPrivileges(value !== "false"));
    } else if (["apparmor", "label", "mask", "unmask", "systempaths", "proc-opts"].includes(key)) {
      throw new UsageError(
        `option --security-opt ${key} is not supported by strata (it takes ${SECURITY_OPTS})`,
        "run",
      );
    } else {
      throw new UsageError(
        `option --security-opt: unknown option '${raw}' (strata takes ${SECURITY_OPTS})`,
        "run",
      );
    }
  }
  return opts;
}

/**
 * The spec options for the run flags, applied after the image config (so they win).
 *
 * @example Usage
 * ```ts ignore
 * const options = await runSpecOptions(ctx);
 * ```
 */
export async function runSpecOptions(ctx: Context): Promise<SpecOption[]> {
  const o = ctx.options;
  const opts: SpecOption[] = [];
  if (typeof o.entrypoint === "string") {
    opts.push(o.entrypoint === "" ? withEntrypoint() : withEntrypoint(o.entrypoint));
  }
  if (ctx.args.argv.length) opts.push(withCmd(...ctx.args.argv));
  if (typeof o.user === "string") opts.push(withUser(o.user));
  if (typeof o.workdir === "string") {
    if (!o.workdir.startsWith("/")) {
      throw new UsageError(`option --workdir needs an absolute path, not '${o.workdir}'`, "run");
    }
    opts.push(withCwd(o.workdir));
  }
  if (o.tty === true) {
    // runc relays the terminal through its own stdin and fails late ("open
    // /dev/tty: no such device") when that is not one: say so before any work.
    if (!Deno.stdin.isTerminal()) {
      throw new UsageError(
        "option --tty needs a terminal on stdin (the input is not a TTY)",
        "run",
      );
    }
    opts.push(withTerminal(true)); // before --env, so that -e TERM=... wins
  }
  const env = envList((o.env as string[] | undefined) ?? []);
  if (env.length) opts.push(withEnv(env));
  const volumes = volumeMounts((o.volume as string[] | undefined) ?? []);
  if (volumes.length) opts.push(withMounts(...volumes));
  if (o.network === "host") opts.push(withHostNetwork());
  else if (o.network === "none") opts.push(withNetworkNone());
  if (o["read-only"] === true) opts.push(withReadonlyRootFS(true));
  opts.push(...limitOptions(o));
  opts.push(...await securityOptions(o));
  return opts;
}

/**
 * Runs `strata run`.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * Deno.exit(await main(["run", "oci:/tmp/layout:v1", "--", "echo", "hi"]));
 * ```
 */
export async function runCommand(ctx: Context): Promise<number> {
  const specOptions = await runSpecOptions(ctx); // usage errors before any work
  const ref = ctx.args.positionals[0];
  // As root with every layer cached: one process, its main thread in a
  // private mount namespace. Otherwise the namespace comes first (which
  // re-executes the command line) and missing layers are pulled in it.
  const fast = await openCached(ctx, ref);
  let opened: { image: SourceImage; resolver: CachingLayerResolver };
  if (fast?.warm) opened = { image: fast.opened.image, resolver: fast.opened.counting.resolver };
  else {
    await enterNamespace(ctx);
    opened = await pullImage(ctx, ref, "missing", fast?.opened);
  }
  const runtime = ctx.options.runtime as string | undefined;
  // While the bundle is made: the runtime choice (runContainer makes it again
  // from what this call leaves in memory, so crun's probe result, kept on disk
  // per boot, is read once) and the once-per-cache warnings file.
  const choosing = runtime ? undefined : selectRuntime().catch(() => undefined);
  const warner = onceWarner(ctx);
  try {
    const { image, resolver } = opened;
    const bundler = await CachingBundler.create(ctx.cacheRoot, {
      resolver,
      onWarning: (m) => ctx.out.warn(m),
    });
    const id = `strata-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    const bundle = await bundler.bundle(image, id, ...specOptions, ctx.signal);
    // Before the container can change the rootfs the record's spec is built from.
    if (choosing) {
      const rt = await choosing;
      if (rt) await recordRun(ctx, ref, image, bundle, rt).catch(() => {});
    }
    // From here runContainer owns Ctrl-C: it forwards it to the container and
    // cleans up the bundle whatever happens.
    ctx.releaseSignals();
    const result = await runContainer(bundle, { id, runtime, onWarning: await warner });
    return result.status;
  } finally {
    // A failure before the run must not exit in the middle of a first probe
    // (its probe container and directory would be left behind).
    await choosing;
  }
}
