/**
 * `strata run` the short way: an image whose run record
 * (`bundle/run_record.ts`) still says everything about it, run as root by
 * this process alone. It reads the record, checks it as the module doc of
 * `run_record.ts` lists (the layout's `index.json` or the pulled name, every
 * layer directory, the cache's id map, the code and the host), claims the
 * container as `CachingBundler` does, moves its thread into a private mount
 * namespace, mounts the tmpfs and the overlay with one `mount(2)` each,
 * writes the recorded spec with this run's rootfs and command, and starts the
 * runtime through `posix_spawn`, as the long way does; it then cleans up as
 * `runContainer` does.
 *
 * It loads a handful of small modules instead of the image, layer, bundle
 * and runtime code (the long way's ~400 KB of TypeScript), reads a few small
 * files instead of opening and verifying the image, and hashes nothing: a
 * warm `strata run` spends its time in Deno's start and in the runtime.
 *
 * Whenever anything is not as recorded, or an option the record does not
 * cover is given, {@linkcode warmRun} returns undefined before it has made
 * anything, and `cmd_run.ts` runs the long way (which records the run
 * again). A failure after the claim undoes what was made and does the same.
 *
 * @module
 */
import { join, resolve } from "@std/path";
import type { Context } from "./context.ts";
import { addr, AT_FDCWD, bindLibc, cstr, NR, sys } from "../sys/libc.ts";
import { SPAWN_SYMBOLS, spawnInherited } from "../sys/spawn.ts";
import { overlayData, tmpfsData, validateOverlay } from "../sys/mount_options.ts";
import { currentIdMap, idMapCompatible, isIdentityMap, isIdMap } from "../overlay/idmap.ts";
import { enterThreadMountNamespace, USERNS_ENV } from "../overlay/thread_namespace.ts";
import { taggedEntry } from "../image/layout_ref.ts";
import { claimContainer } from "../bundle/claim.ts";
import { RuntimeError } from "../bundle/runtime_error.ts";
import {
  hostKey,
  readRunRecord,
  type RunRecord,
  runRecordPath,
  sameCode,
} from "../bundle/run_record.ts";

/** The options a record covers: none that changes the spec, the image or the runtime. */
const COVERED = new Set(["cache", "quiet", "interactive"]);

/** The libc calls of a warm run, bound in one `dlopen`: every system call goes through `syscall`. */
const SYMBOLS = SPAWN_SYMBOLS;

const X_OK = 1;
const AT_EACCESS = 0x200;
const EBUSY = 16;
const MNT_DETACH = 2;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function access(path: string, mode: number, flags: number): boolean {
  const p = cstr(path);
  return sys(NR.faccessat, AT_FDCWD, addr(p), mode, flags) === 0;
}

function exists(path: string): boolean {
  return access(path, 0, 0);
}

function readJSON(path: string): unknown {
  try {
    return JSON.parse(Deno.readTextFileSync(path));
  } catch {
    return undefined;
  }
}

/**
 * The OCI layout `ref` names still names the entry the record was made for
 * (same digest, size and media type), as `openOciLayout` would select it
 * (`oci-layout` checked, then `index.json`): a tag, or the only entry.
 */
function layoutStillNames(rec: RunRecord, ref: string): boolean {
  const value = ref.slice("oci:".length);
  const i = value.indexOf(":");
  const dir = resolve(i < 0 ? value : value.slice(0, i));
  const tag = i < 0 ? undefined : value.slice(i + 1);
  if (tag === "" || !value) return false;
  if (rec.name !== `oci:${dir}${tag ? `:${tag}` : ""}`) return false;
  const layout = readJSON(join(dir, "oci-layout")) as { imageLayoutVersion?: unknown } | undefined;
  const version = layout?.imageLayoutVersion;
  if (typeof version !== "string" || !version.startsWith("1.")) return false;
  const index = readJSON(join(dir, "index.json")) as { manifests?: unknown } | undefined;
  if (!Array.isArray(index?.manifests)) return false;
  const manifests = index.manifests as {
    digest?: unknown;
    size?: unknown;
    mediaType?: unknown;
    annotations?: Record<string, string>;
  }[];
  const entry = tag !== undefined
    ? taggedEntry(manifests, tag)
    : manifests.length === 1
    ? manifests[0]
    : undefined;
  return entry?.digest === rec.lookup && entry.size === rec.lookupSize &&
    entry.mediaType === rec.lookupMediaType && exists(rec.refFile);
}

/** The pulled name still points at the manifest the record was made for. */
function nameStillNames(rec: RunRecord): boolean {
  const r = readJSON(rec.refFile) as { name?: unknown; digest?: unknown } | undefined;
  return r?.name === rec.name && r.digest === rec.digest;
}

/** What `which` in bundle/run.ts finds for `name` on PATH. */
function onPath(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? DEFAULT_PATH).split(":")) {
    if (!dir) continue;
    const p = join(dir, name);
    if (!access(p, X_OK, AT_EACCESS)) continue;
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** `selectRuntime` would choose what the record says: the same program, the same crun. */
function sameRuntime(rec: RunRecord): boolean {
  const rt = rec.runtime;
  if (onPath(rt.name) !== rt.path) return false;
  if (rt.name !== "runc") return rt.name === "crun" && rt.crun === undefined;
  // runc after crun: crun's probe result holds for this boot (part of the
  // host key) and for the same crun, found at the same place.
  const crun = onPath("crun");
  if (crun === undefined) return rt.crun === null;
  if (!rt.crun || rt.crun.path !== crun) return false;
  try {
    return (Deno.statSync(crun).mtime?.getTime() ?? 0) === rt.crun.mtime;
  } catch {
    return false;
  }
}

/** The runtime's fallback warning was said already in this cache (`notes.json`). */
function warningSaid(cacheRoot: string, rec: RunRecord): boolean {
  if (!rec.runtime.reason) return true;
  const notes = readJSON(join(cacheRoot, "notes.json")) as Record<string, unknown> | undefined;
  return typeof notes?.[`using ${rec.runtime.name}: ${rec.runtime.reason}`] === "string";
}

/** `idmap.json` takes this process' mapping without widening it. */
function idMapAccepted(cacheRoot: string): boolean {
  const recorded = readJSON(join(cacheRoot, "idmap.json"));
  if (!isIdMap(recorded)) return false;
  const current = currentIdMap();
  return idMapCompatible(recorded, current) && idMapCompatible(current, recorded);
}

/** The lower directories, bottom first, as `cachedPath` finds them; undefined if one is missing. */
function lowerDirs(cacheRoot: string, rec: RunRecord): string[] | undefined {
  const out: string[] = [];
  for (const { dirs } of rec.layers) {
    const shared = join(cacheRoot, "layers", dirs[0], "fs");
    if (exists(shared)) {
      out.push(shared);
      continue;
    }
    const chained = join(cacheRoot, "layers", dirs[1], "fs");
    if (!exists(chained)) return undefined;
    out.push(chained);
  }
  return out;
}

/** Reads the record for `ref` and checks it; undefined when the long way must run. */
function checkedRecord(ctx: Context, ref: string): RunRecord | undefined {
  const path = runRecordPath(ctx.cacheRoot, ref);
  const rec = path === undefined ? undefined : readRunRecord(path);
  if (!rec || rec.ref !== ref || rec.userns) return undefined;
  if (ref.startsWith("oci:") ? !layoutStillNames(rec, ref) : !nameStillNames(rec)) {
    return undefined;
  }
  if (rec.host !== hostKey("root", 0) || !sameCode(rec.code)) return undefined;
  if (!idMapAccepted(ctx.cacheRoot) || !warningSaid(ctx.cacheRoot, rec)) return undefined;
  if (!sameRuntime(rec)) return undefined;
  return rec;
}

function mount(source: string, target: string, fstype: string, data: string): boolean {
  const [s, t, f, d] = [cstr(source), cstr(target), cstr(fstype), cstr(data)];
  return sys(NR.mount, addr(s), addr(t), addr(f), 0, addr(d)) === 0;
}

function unmount(target: string): void {
  const p = cstr(target);
  if (sys(NR.umount2, addr(p), 0) === -EBUSY) sys(NR.umount2, addr(p), MNT_DETACH);
}

/** What a warm run made, undone in reverse order by {@linkcode undo}. */
interface Made {
  dir: string;
  lock?: Deno.FsFile;
  tmp?: string;
  bundle?: string;
  mounts: string[];
}

function undo(m: Made): void {
  for (const t of m.mounts.splice(0).reverse()) unmount(t);
  for (const p of [m.bundle, m.dir, m.tmp]) {
    if (p === undefined) continue;
    try {
      Deno.removeSync(p, { recursive: true });
    } catch {
      // not made, or gone
    }
  }
  try {
    m.lock?.close(); // last: until now prune keeps the layers
  } catch {
    // closed already
  }
}

/** Makes the bundle: the claim, the tmpfs, the overlay, the spec. False when anything fails (undone). */
function makeBundle(
  m: Made,
  rec: RunRecord,
  lower: string[],
  argv: readonly string[],
): boolean {
  try {
    const bundle = join(m.dir, "bundle");
    const upper = join(bundle, "upper");
    const work = join(bundle, "work");
    const rootfs = join(bundle, "rootfs");
    const o = { lower, upper, work, userxattr: true };
    validateOverlay(rootfs, o);
    const { data, links } = overlayData(o);
    if (links) return false; // short links: the long way's mount backends
    Deno.renameSync(m.tmp!, m.dir);
    m.tmp = undefined;
    Deno.mkdirSync(bundle, { mode: 0o700 });
    m.bundle = bundle;
    if (!mount("tmpfs", bundle, "tmpfs", tmpfsData({ mode: 0o700 }).join(","))) return false;
    m.mounts.push(bundle);
    for (const d of [upper, work, rootfs]) Deno.mkdirSync(d, { mode: 0o700 });
    // The rootfs root takes the mode of the upper directory; containers expect 0755.
    Deno.chmodSync(upper, 0o755);
    if (!mount("overlay", rootfs, "overlay", data)) return false;
    m.mounts.push(rootfs);
    const spec = structuredClone(rec.spec) as {
      root: { path: string };
      process: { args: string[] };
    };
    spec.root.path = rootfs;
    if (argv.length) spec.process.args = [...rec.entrypoint, ...argv];
    if (spec.process.args.length === 0) return false; // no command: the long way says so
    Deno.writeTextFileSync(join(bundle, "config.json"), JSON.stringify(spec), {
      mode: 0o600,
      createNew: true,
    });
    return true;
  } catch {
    return false;
  }
}

const FORWARDED: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** The last error a runc/crun JSON log has, as `runContainer` reads it. */
function loggedError(log: string): string | undefined {
  let text = "";
  try {
    text = Deno.readTextFileSync(log);
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

async function runtimeCommand(path: string, args: string[]): Promise<void> {
  await new Deno.Command(path, { args, stdin: "null", stdout: "null", stderr: "null" })
    .output().catch(() => {});
}

/**
 * Runs `strata run` the short way when its record allows, returning the
 * container's exit status; undefined, having made nothing, when the long way
 * must run instead (`cmd_run.ts`).
 *
 * @throws the runtime's error (as `RuntimeError`) when it could not run the
 * container: the record was right, the container was not.
 *
 * @example Usage
 * ```ts ignore
 * import { warmRun } from "./cmd_run_warm.ts";
 * const status = await warmRun(ctx) ?? await runCommand(ctx);
 * ```
 */
export async function warmRun(ctx: Context): Promise<number | undefined> {
  for (const k of Object.keys(ctx.options)) if (!COVERED.has(k)) return undefined;
  const ref = ctx.args.positionals[0];
  try {
    if (Deno.uid() !== 0 || Deno.env.get(USERNS_ENV) !== undefined) return undefined;
    if (Deno.env.get("STRATA_MOUNT_BACKEND") !== undefined) return undefined;
    bindLibc(SYMBOLS);
    if (!isIdentityMap(currentIdMap())) return undefined;
  } catch {
    return undefined; // a permission missing: the long way says which
  }
  let rec: RunRecord | undefined;
  let lower: string[] | undefined;
  try {
    rec = checkedRecord(ctx, ref);
    lower = rec && lowerDirs(ctx.cacheRoot, rec);
  } catch {
    return undefined;
  }
  if (!rec || !lower) return undefined;
  if (!enterThreadMountNamespace()) return undefined;

  const containers = join(ctx.cacheRoot, "containers");
  const id = `strata-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const m: Made = { dir: join(containers, id), mounts: [] };
  try {
    const claim = await claimContainer(containers, id, {
      name: rec.name,
      digest: rec.digest,
      layers: rec.layers,
    });
    m.lock = claim.lock;
    m.tmp = claim.tmp;
  } catch {
    return undefined;
  }
  if (!makeBundle(m, rec, lower, ctx.args.argv)) {
    undo(m);
    return undefined;
  }
  return await runBundle(ctx, rec, m, id);
}

/** Runs the bundle made, as `runContainer` runs one with inherited stdio; cleans up. */
async function runBundle(ctx: Context, rec: RunRecord, m: Made, id: string): Promise<number> {
  const bundle = m.bundle!;
  const { path: runtime, name } = rec.runtime;
  const stateDir = rec.stateDir;
  const log = join(bundle, "runtime.log");
  ctx.releaseSignals();
  let child: ReturnType<typeof spawnInherited> | undefined;
  let early: Deno.Signal | undefined;
  let received = 0;
  const listeners = FORWARDED.map((sig) => {
    const h = () => {
      received++;
      if (!child) early ??= sig;
      else if (received > 1) {
        runtimeCommand(runtime, ["--root", stateDir, "kill", id, "KILL"]);
      } else {
        try {
          child.kill(SIGNAL_NUMBERS[sig]);
        } catch {
          // already gone
        }
      }
    };
    Deno.addSignalListener(sig, h);
    return [sig, h] as const;
  });
  let failure: unknown;
  try {
    Deno.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const st = Deno.lstatSync(stateDir);
    if (!st.isDirectory || (st.uid !== null && st.uid !== Deno.uid())) {
      throw new Error(
        `cannot use ${stateDir} as the runtime state directory: not a directory of ours`,
      );
    }
    if (early) return 128 + SIGNAL_NUMBERS[early];
    child = spawnInherited(runtime, [
      "--root",
      stateDir,
      "--log",
      log,
      "--log-format",
      "json",
      "run",
      "--bundle",
      bundle,
      id,
    ]);
    const { code } = await child.status;
    if (code !== 0) {
      const err = loggedError(log);
      if (err) {
        throw new RuntimeError(name, err);
      }
    }
    return code;
  } catch (e) {
    failure = e;
    throw e;
  } finally {
    try {
      // `run` deletes the container when its process exits; only an
      // interrupted runtime leaves state behind.
      if (exists(join(stateDir, id))) {
        await runtimeCommand(runtime, ["--root", stateDir, "delete", "--force", id]);
      }
      undo(m);
    } catch (e) {
      // deno-lint-ignore no-unsafe-finally -- only when no other error is in flight
      if (!failure) throw e;
    } finally {
      for (const [sig, h] of listeners) Deno.removeSignalListener(sig, h);
    }
  }
}
