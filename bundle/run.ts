/**
 * Runs a bundle with an OCI runtime (`runc run --bundle P ID`) through
 * `Deno.Command` and always leaves nothing behind: the runtime's state is
 * deleted when the runtime did not delete it itself, and the bundle is
 * cleaned up, on success, failure, abort and Ctrl-C alike.
 *
 * The runtime is the caller's choice, or the first that works here: crun,
 * then runc. crun 1.8 refuses hosts with hybrid cgroups ("cgroups in hybrid
 * mode not supported"); a cheap probe run finds that out once per boot (the
 * result is kept in the state directory) and the reason is reported once.
 *
 * In a user namespace runc detects that it is rootless by itself (verified:
 * `unshare -Urm` and `--map-auto`); it only needs a writable state directory,
 * which is chosen here, and a spec without cgroup limits when the cgroup
 * filesystem is not writable, which the spec writer takes care of.
 *
 * @module
 */

import { join } from "@std/path";
import type { Bundle } from "./bootstrap.ts";
import { defaultSpec } from "./spec.ts";
import { inUserNamespace, outsideUid } from "./host.ts";
import { adaptSpecToHost } from "./writer.ts";
import { readProcText } from "../sys/proc.ts";
import { accessible } from "../sys/fs.ts";
import { ffiAvailable, libc } from "../sys/libc.ts";
import { RuntimeError } from "./runtime_error.ts";
import { commandOutput, spawnCommand, spawnInherited } from "../sys/spawn.ts";
import { MissingPermissionError } from "../sys/permissions.ts";
import { getEnv } from "../sys/env.ts";
import {
  lstatSync,
  makeTempDir,
  mkdir,
  mkdirSync,
  readTextFileSync,
  remove,
  removeSync,
  statSync,
  writeTextFile,
} from "../sys/files.ts";
import { getUid } from "../sys/process.ts";

export { RuntimeError };

/** How one standard stream of the container is connected. */
export type Stdio = "inherit" | "piped" | "null";

/** Options of {@linkcode runContainer}. */
export interface RunOptions {
  /**
   * `"runc"`, `"crun"`, another runtime's name or path. Default: the first of
   * crun and runc that works on this host.
   */
  runtime?: string;
  /** Container id for the runtime. Default: `strata-` and random hex. */
  id?: string;
  /** Standard input. Default `"inherit"`, or `"piped"` when `input` is given. */
  stdin?: Stdio;
  /**
   * Bytes (or a stream of them) written to the container's standard input,
   * which is then closed: a function-style container reads its request
   * here. Implies `stdin: "piped"`.
   */
  input?: Uint8Array | ReadableStream<Uint8Array>;
  /** Standard output. Default `"inherit"`. */
  stdout?: Stdio;
  /** Standard error. Default `"inherit"`. */
  stderr?: Stdio;
  /**
   * Aborting stops the container (its stop signal, then SIGKILL after
   * `killTimeout`), cleans up, and rejects with the signal's reason.
   */
  signal?: AbortSignal;
  /**
   * The signal an abort sends first (a name such as `"SIGQUIT"` or
   * `"QUIT"`, or a number). Default: the bundle's `stopSignal` (the image's
   * `StopSignal`, as `docker stop` sends), else SIGTERM.
   */
  stopSignal?: string | number;
  /**
   * Forward SIGINT, SIGTERM and SIGHUP received by this process to the
   * container; a second one kills it (SIGKILL). Default true.
   */
  forwardSignals?: boolean;
  /** Milliseconds between the stop signal and SIGKILL on abort. Default 2000. */
  killTimeout?: number;
  /** The runtime's state directory (`--root`). Default: see {@linkcode defaultStateDir}. */
  stateDir?: string;
  /** Clean up the bundle when the run ends. Default true. */
  cleanup?: boolean;
  /** Called with each warning (runtime fallback). Default: `console.error`. */
  onWarning?: (message: string) => void;
}

/** What {@linkcode runContainer} returns. */
export interface RunResult {
  /** The container's exit code; 128+N when a signal N killed it. */
  status: number;
  /** Captured standard output, when `stdout: "piped"`. */
  stdout?: Uint8Array;
  /** Captured standard error, when `stderr: "piped"`. */
  stderr?: Uint8Array;
  /** The runtime that ran it (its path). */
  runtime: string;
  /** The container id used. */
  id: string;
}

/**
 * No usable OCI runtime was found.
 *
 * @example Usage
 * ```ts
 * import { RuntimeNotFoundError } from "./run.ts";
 * console.log(new RuntimeNotFoundError("youki").message);
 * ```
 */
export class RuntimeNotFoundError extends Error {
  /** Creates the error for `runtime`, with why others were not used. */
  constructor(readonly runtime: string, detail = "", options?: ErrorOptions) {
    super(`cannot find the OCI runtime "${runtime}" on PATH${detail}`, options);
    this.name = "RuntimeNotFoundError";
  }
}

/**
 * The state directory a runtime keeps container state in (`--root`): under
 * `/run/strata` as root on the host; else under `$XDG_RUNTIME_DIR/strata`;
 * else `/tmp/strata-<uid>` (created 0700 and checked to be ours).
 *
 * @example Usage
 * ```ts
 * import { defaultStateDir } from "./run.ts";
 * console.log(defaultStateDir("runc")); // "/run/strata/runc" as root
 * ```
 */
export function defaultStateDir(runtimeName: string): string {
  if (!inUserNamespace() && getUid() === 0) return join("/run/strata", runtimeName);
  const xdg = getEnv("XDG_RUNTIME_DIR");
  if (xdg) return join(xdg, "strata", runtimeName);
  return join("/tmp", `strata-${outsideUid()}`, runtimeName);
}

function ensureStateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // A world-writable parent (/tmp) could hold someone else's directory or a symlink.
  const st = lstatSync(dir);
  if (!st.isDirectory || (st.uid !== null && st.uid !== getUid())) {
    throw new Error(`cannot use ${dir} as the runtime state directory: not a directory of ours`);
  }
}

/** Removes a file, ignoring any failure (synchronous: one small file after every run). */
function removeQuietly(path: string): void {
  try {
    removeSync(path);
  } catch {
    // gone already, or not ours to remove: nothing to do
  }
}

const found = new Map<string, string>();

/**
 * Finds `name` on PATH (or checks a path). A hit is remembered per PATH and
 * checked with one stat next time: scanning PATH costs an exception per
 * directory that lacks the program, and a run looks runtimes up twice.
 */
function which(name: string): string | undefined {
  const key = `${getEnv("PATH")}\0${name}`;
  const hit = found.get(key);
  if (hit !== undefined) {
    try {
      if (statSync(hit).isFile) return hit;
    } catch {
      // gone since: search again
    }
  }
  const path = search(name);
  if (path === undefined) found.delete(key);
  else found.set(key, path);
  return path;
}

function search(name: string): string | undefined {
  if (name.includes("/")) {
    try {
      return statSync(name).isFile ? name : undefined;
    } catch {
      return undefined;
    }
  }
  for (
    const dir of (getEnv("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
      .split(":")
  ) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      // accessible() first: PATH often has many directories without the program.
      if (accessible(p, "executable") && statSync(p).isFile) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Where {@linkcode selectRuntime} finds `name` (a name on PATH, or a path):
 * the first PATH directory holding it as an executable file.
 *
 * @example Usage
 * ```ts
 * import { findRuntime } from "./run.ts";
 * console.log(findRuntime("runc")); // "/usr/sbin/runc" here
 * ```
 */
export function findRuntime(name: string): string | undefined {
  return which(name);
}

/** A runtime chosen by {@linkcode selectRuntime}. */
export interface RuntimeChoice {
  /** Short name (`runc`, `crun`, or the basename). */
  name: string;
  /** Absolute path. */
  path: string;
  /** Why a preferred runtime was passed over, when one was. */
  reason?: string;
}

interface ProbeRecord {
  bootId: string;
  path: string;
  mtime: number;
  ok: boolean;
  reason: string;
}

const probes = new Map<string, Promise<{ ok: boolean; reason: string }>>();
const warned = new Set<string>();

function bootId(): string {
  try {
    return readProcText("/proc/sys/kernel/random/boot_id").trim();
  } catch {
    return "";
  }
}

/**
 * Tells whether the runtime at `path` can run a container here, by running a
 * probe container whose command does not exist: a runtime that gets as far as
 * exec works; one that stops earlier (crun on hybrid cgroups) does not, and
 * its message is the reason. The result is kept in `stateDir` for this boot.
 */
async function probe(path: string, stateDir: string): Promise<{ ok: boolean; reason: string }> {
  const key = `${path}\0${stateDir}`;
  let p = probes.get(key);
  if (!p) {
    p = probeUncached(path, stateDir);
    probes.set(key, p);
  }
  return await p;
}

async function probeUncached(path: string, stateDir: string) {
  ensureStateDir(stateDir);
  const record = join(stateDir, "probe.json");
  const mtime = statSync(path).mtime?.getTime() ?? 0;
  const boot = bootId();
  try {
    const r = JSON.parse(readTextFileSync(record)) as ProbeRecord;
    if (r.bootId === boot && r.path === path && r.mtime === mtime) return r;
  } catch {
    // no record yet
  }
  const dir = await makeTempDir({ dir: stateDir, prefix: "probe-" });
  const id = `strata-probe-${crypto.randomUUID().slice(0, 8)}`;
  let result: { ok: boolean; reason: string };
  try {
    await mkdir(join(dir, "rootfs"));
    const spec = defaultSpec();
    spec.process!.args = ["/strata-probe-missing"];
    spec.root = { path: join(dir, "rootfs"), readonly: true };
    adaptSpecToHost(spec);
    await writeTextFile(join(dir, "config.json"), JSON.stringify(spec));
    const out = await commandOutput(path, {
      args: ["--root", stateDir, "run", "--bundle", dir, id],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    });
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    const reachedExec = text.includes("strata-probe-missing");
    result = {
      ok: out.success || reachedExec,
      reason: text.trim().split("\n").filter((l) => l.trim()).at(-1) ?? `exit ${out.code}`,
    };
    await commandOutput(path, {
      args: ["--root", stateDir, "delete", "--force", id],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    });
  } catch (e) {
    // A missing --allow-run says nothing about the runtime: not recorded.
    if (e instanceof MissingPermissionError) throw e;
    result = { ok: false, reason: (e as Error).message };
  } finally {
    await remove(dir, { recursive: true }).catch(() => {});
  }
  const rec: ProbeRecord = { bootId: boot, path, mtime, ...result };
  await writeTextFile(record, JSON.stringify(rec)).catch(() => {});
  return result;
}

/**
 * Chooses the runtime: `preferred` when given (a name on PATH or a path),
 * else the first of crun and runc that works here. `stateDirOf(name)` gives
 * the state directory used for the probe.
 *
 * @throws {RuntimeNotFoundError} when none is found.
 *
 * @example Usage
 * ```ts ignore
 * import { selectRuntime } from "./run.ts";
 * const rt = await selectRuntime();
 * console.log(rt.name, rt.reason); // "runc" "crun: cgroups in hybrid mode not supported, ..."
 * ```
 */
export async function selectRuntime(
  preferred?: string,
  stateDirOf: (name: string) => string = defaultStateDir,
): Promise<RuntimeChoice> {
  if (preferred) {
    const path = which(preferred);
    if (!path) throw new RuntimeNotFoundError(preferred);
    return { name: preferred.split("/").at(-1)!, path };
  }
  const reasons: string[] = [];
  for (const name of ["crun", "runc"]) {
    const path = which(name);
    if (!path) {
      reasons.push(`${name}: not installed`);
      continue;
    }
    if (name === "runc") return { name, path, reason: reasons.join("; ") || undefined };
    const p = await probe(path, stateDirOf(name));
    if (p.ok) return { name, path, reason: reasons.join("; ") || undefined };
    reasons.push(`${name}: ${p.reason}`);
  }
  throw new RuntimeNotFoundError("runc", ` (nor a working crun: ${reasons.join("; ")})`);
}

async function runtimeCmd(path: string, args: string[]): Promise<Deno.CommandOutput> {
  return await commandOutput(path, { args, stdin: "null", stdout: "null", stderr: "piped" });
}

/** The last error-level message of a runc/crun JSON log. */
function lastLoggedError(log: string): string | undefined {
  let text = "";
  try {
    // Synchronous: the bundle may be mounted in this thread's namespace only.
    text = readTextFileSync(log);
  } catch {
    return undefined;
  }
  let msg: string | undefined;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as { level?: string; msg?: string };
      if ((r.level === "error" || r.level === "fatal") && r.msg) msg = r.msg;
    } catch {
      if (/error/i.test(line)) msg = line.trim();
    }
  }
  return msg;
}

const FORWARDED: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * Runs `bundle` with an OCI runtime and returns the container's exit status
 * (128+N when signal N killed it). Signals this process gets (SIGINT,
 * SIGTERM, SIGHUP) go to the container; a second one kills it. Whatever
 * happens, the runtime's state is removed and the bundle is cleaned up.
 *
 * @throws {RuntimeError} when the runtime could not create or start the container.
 * @throws the abort reason, after cleaning up, when `signal` aborts the run.
 *
 * @example Usage
 * ```ts ignore
 * import { CachingBundler } from "./bundler.ts";
 * import { runContainer } from "./run.ts";
 * import { withArgs } from "./options.ts";
 * const bundler = await CachingBundler.create("/var/lib/strata");
 * const bundle = await bundler.bundle(image, "c1", withArgs("/bin/true"));
 * const { status } = await runContainer(bundle);
 * Deno.exit(status);
 * ```
 */
export async function runContainer(bundle: Bundle, options: RunOptions = {}): Promise<RunResult> {
  const warn = options.onWarning ?? ((m: string) => console.error(`strata: ${m}`));
  const signal = options.signal;
  const id = options.id ?? `strata-${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  let rt: RuntimeChoice | undefined;
  let stateDir = "";
  // What the signal handlers and the abort need of the runtime's process.
  let child: { kill(signal: number): void } | undefined;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const listeners: [Deno.Signal, () => void][] = [];
  let onAbort: (() => void) | undefined;
  let log = "";
  let failure: { error: unknown } | undefined;

  const forceKill = () => {
    // The runtime forwards catchable signals to the container; SIGKILL it
    // cannot catch, so that one goes through `kill`.
    if (rt && child) {
      runtimeCmd(rt.path, ["--root", stateDir, "kill", id, "KILL"]).catch(() => {});
    }
  };
  // Listen before anything else: a Ctrl-C while the runtime is chosen must not
  // kill this process with the bundle still mounted.
  let early: Deno.Signal | undefined;
  let received = 0;
  if (options.forwardSignals ?? true) {
    for (const sig of FORWARDED) {
      const h = () => {
        received++;
        if (!child) early ??= sig;
        else if (received > 1) forceKill();
        else {
          try {
            child.kill(signalNumber(sig));
          } catch {
            // already gone
          }
        }
      };
      Deno.addSignalListener(sig, h);
      listeners.push([sig, h]);
    }
  }
  try {
    signal?.throwIfAborted();
    rt = await selectRuntime(
      options.runtime,
      options.stateDir ? () => options.stateDir! : defaultStateDir,
    );
    if (rt.reason && !warned.has(rt.reason)) {
      warned.add(rt.reason);
      warn(`using ${rt.name}: ${rt.reason}`);
    }
    stateDir = options.stateDir ?? defaultStateDir(rt.name);
    ensureStateDir(stateDir);
    signal?.throwIfAborted();
    if (early) return { status: 128 + signalNumber(early), runtime: rt.path, id };

    // In the bundle (its tmpfs): gone with the bundle's cleanup, and with its
    // mount namespace or by `prune` when this process is killed; in the
    // runtime's state directory a killed run left it there for good.
    log = join(bundle.path, "runtime.log");
    const args = ["--root", stateDir, "--log", log, "--log-format", "json", "run", "--bundle"];
    args.push(bundle.path, id);
    const stdio = {
      stdin: options.input !== undefined ? "piped" : options.stdin ?? "inherit",
      stdout: options.stdout ?? "inherit",
      stderr: options.stderr ?? "inherit",
    } as const;
    let command: Deno.ChildProcess | undefined;
    let exited: Promise<number>;
    if (
      stdio.stdin === "inherit" && stdio.stdout === "inherit" && stdio.stderr === "inherit" &&
      ffiAvailable()
    ) {
      // The common case (the CLI's): through libc, which costs a warm run
      // less than Deno's process modules (sys/spawn.ts).
      const spawned = spawnInherited(rt.path, args);
      child = { kill: (n) => spawned.kill(n) };
      exited = spawned.status.then((s) => s.code);
    } else {
      command = spawnCommand(rt.path, { args, ...stdio });
      const running = command;
      child = {
        kill: (n) => {
          const name = SIGNAL_NAMES.get(n);
          if (name) running.kill(name);
          else if (ffiAvailable()) libc().kill(running.pid, n); // a real-time signal: no name in Deno
          else running.kill("SIGTERM");
        },
      };
      exited = command.status.then((s) => s.code);
    }
    if (options.input !== undefined && command) {
      const input = options.input;
      const stdin = command.stdin;
      // Fed alongside the run: a container that exits without reading all of
      // its input closes the pipe, which is not an error of the run.
      (input instanceof Uint8Array
        ? (async () => {
          const w = stdin.getWriter();
          try {
            await w.write(input);
          } finally {
            await w.close().catch(() => {});
          }
        })()
        : input.pipeTo(stdin)).catch(() => {});
    }
    if (signal) {
      const running = child;
      const stop = stopSignalOf(options.stopSignal ?? bundle.stopSignal, warn);
      onAbort = () => {
        try {
          running.kill(stop);
        } catch {
          // already gone
        }
        killTimer = setTimeout(forceKill, options.killTimeout ?? 2000);
      };
      signal.addEventListener("abort", onAbort, { once: true });
    }

    let status: number;
    let stdout: Uint8Array | undefined;
    let stderr: Uint8Array | undefined;
    if (command && (options.stdout === "piped" || options.stderr === "piped")) {
      const out = await command.output();
      status = out.code;
      if (options.stdout === "piped") stdout = out.stdout;
      if (options.stderr === "piped") stderr = out.stderr;
    } else {
      status = await exited;
    }
    signal?.throwIfAborted();
    if (status !== 0) {
      const err = lastLoggedError(log);
      if (err) throw new RuntimeError(rt.name, err);
    }
    return { status, stdout, stderr, runtime: rt.path, id };
  } catch (e) {
    failure = { error: e };
    throw e;
  } finally {
    if (killTimer !== undefined) clearTimeout(killTimer);
    if (onAbort) signal?.removeEventListener("abort", onAbort);
    try {
      // `run` deletes the container when its process exits; only an
      // interrupted runtime leaves state behind.
      if (rt && stateDir && accessible(join(stateDir, id), "exists")) {
        await runtimeCmd(rt.path, ["--root", stateDir, "delete", "--force", id]).catch(() => {});
      }
      if (log && !(options.cleanup ?? true)) removeQuietly(log);
      if (options.cleanup ?? true) await bundle.cleanup();
    } catch (e) {
      // A cleanup failure surfaces unless the run already failed (that error
      // says more; the bundle is then left for `prune` to reclaim).
      // deno-lint-ignore no-unsafe-finally -- deliberate: only when no other error is in flight
      if (!failure) throw e;
      warn(`cannot clean up ${bundle.path}: ${(e as Error).message}`);
    } finally {
      for (const [sig, h] of listeners) Deno.removeSignalListener(sig, h);
    }
  }
}

/** Linux signal numbers (x86_64 and aarch64 agree on these). */
const SIGNALS = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
} as const satisfies Partial<Record<Deno.Signal, number>>;

const SIGNAL_NAMES = new Map<number, Deno.Signal>(
  Object.entries(SIGNALS).map(([k, v]) => [v, k as Deno.Signal]),
);

function signalNumber(sig: Deno.Signal): number {
  return (SIGNALS as Partial<Record<Deno.Signal, number>>)[sig] ?? 15;
}

/** glibc's SIGRTMIN (the kernel's 32 and 33 are its own) and the kernel's SIGRTMAX. */
const SIGRTMIN = 34;
const SIGRTMAX = 64;

/**
 * Parses a signal as images and docker write it: `SIGQUIT`, `QUIT`, `3`,
 * `SIGRTMIN+3`, `RTMAX-1`. Undefined when it is none.
 *
 * @example Usage
 * ```ts
 * import { parseSignal } from "./run.ts";
 * console.log(parseSignal("SIGQUIT"), parseSignal("RTMIN+3"), parseSignal("9")); // 3 37 9
 * ```
 */
export function parseSignal(value: string | number): number | undefined {
  if (typeof value === "number") {
    return Number.isInteger(value) && value > 0 && value <= SIGRTMAX ? value : undefined;
  }
  const v = value.trim().toUpperCase();
  if (/^[0-9]+$/.test(v)) return parseSignal(Number(v));
  const name = v.startsWith("SIG") ? v : `SIG${v}`;
  const known = (SIGNALS as Record<string, number>)[name];
  if (known) return known;
  const rt = /^SIGRT(MIN|MAX)(?:([+-])([0-9]+))?$/.exec(name);
  if (!rt) return undefined;
  const n = (rt[1] === "MIN" ? SIGRTMIN : SIGRTMAX) + (rt[2] === "-" ? -1 : 1) * Number(rt[3] ?? 0);
  return n >= SIGRTMIN && n <= SIGRTMAX ? n : undefined;
}

/** The stop signal to send: `value` parsed, else SIGTERM (with a warning for a bad one). */
function stopSignalOf(value: string | number | undefined, warn: (m: string) => void): number {
  if (value === undefined || value === "") return SIGNALS.SIGTERM;
  const n = parseSignal(value);
  if (n !== undefined) return n;
  warn(`the stop signal ${JSON.stringify(value)} is not a signal; using SIGTERM`);
  return SIGNALS.SIGTERM;
}
