/**
 * `strata run` the short way, and the run records it reads.
 *
 * A run that makes its bundle the long way (`cmd_run.ts`) writes a run
 * record, `<cache>/images/runs/<ref>.json`: what a run of that reference
 * needs once every layer is cached, so that the next run need not open,
 * verify and resolve the image again. It holds the entry of the layout's
 * `index.json` (or the pulled name's manifest) the reference led to, each
 * layer's two possible directory names (chain IDs hashed once, there), the
 * runtime spec built from the image config by the spec options themselves
 * (the user looked up in the image's own `/etc/passwd` once,
 * `bundle/run_template.ts`), the runtime chosen, and what all that depends
 * on.
 *
 * {@linkcode fastRun} runs from a record, as root, in this process, when the
 * command line is `strata run [--cache DIR] [-q] [-i] IMAGE [--] [CMD...]`
 * and the record still says what the long way would find:
 *
 * - the name: an OCI layout's `oci-layout` and `index.json` still name the
 *   same entry (digest, size and media type; read on every run, as before),
 *   and the image store still has the name; a pulled registry name still
 *   points at the same manifest (its `refs/` record);
 * - the cache: every layer directory is there (shared first, then chained,
 *   as `CachingLayerResolver.cachedPath` looks, and its own copy for this id
 *   mapping after those), extracted under this process' id mapping;
 * - the code that built the record: {@linkcode RUN_RECORD_FORMAT}, and the
 *   size and modification time of every source file the record follows
 *   from (a local install), or the versioned URL (a remote one);
 * - the host it was built for ({@linkcode hostKey}): the boot, the process'
 *   limits, capabilities and seccomp state, its cgroup, the user, and the
 *   environment the runtime and the mounts are found by;
 * - the runtime: the same program first on PATH, and crun passed over for the
 *   same reason, already said in this cache.
 *
 * It then claims the container as `CachingBundler` does (`containers/<id>/`
 * with its `lock` held and `bundle.json`), moves its thread into a private
 * mount namespace (`enterThreadMountNamespace`'s two calls), mounts the
 * tmpfs and the overlay with one `mount(2)` each (`Mount2Backend`'s options),
 * writes the recorded spec with this run's rootfs and command, and starts
 * the runtime through `posix_spawn` with the long way's arguments; it cleans
 * up as `runContainer` does. The container's exit status is returned.
 *
 * This module imports nothing: it opens libc itself (five symbols; every
 * system call through `syscall`) and makes each call directly, so that a
 * warm run loads it and `cli.ts` alone, not the ~60 modules of the long way
 * (image, layer, bundle, runtime and parser code), and spends its time in
 * Deno's start and in the runtime. Whatever is not as recorded, or cannot be
 * done this way, returns undefined before anything is made (after, what was
 * made is undone first), and `cli.ts` takes the long way, which records the
 * run again.
 *
 * @module
 */

/** The version of the record format; a record of another one is not used. */
export const RUN_RECORD_FORMAT = 2;

/** `root.path` of a record's spec: each run puts its own rootfs there. */
export const SPEC_ROOTFS = "\u0000strata-rootfs\u0000";
/** `process.args` of a record's spec (its only element): each run puts its command there. */
export const SPEC_ARGS = "\u0000strata-args\u0000";

/** One layer of a record: its diff_id and the directories it may be published as. */
export interface RunRecordLayer {
  /** The layer's diff_id. */
  diffID: string;
  /** Directory names under `layers/`: shared (`<alg>-<hex>`), then chained (`<alg>-<hex>@<chain hex>`). */
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
  /** For runc: the crun passed over (path, mtime seconds and nanoseconds), or null for none. */
  crun?: [path: string, sec: number, nsec: number] | null;
}

/** The code a record was built by. */
export interface RunRecordCode {
  /** The package root (a `file:` URL, or a remote, versioned one). */
  root: string;
  /** For a `file:` root: `[path, size, mtime s, mtime ns]` of each source file that counts. */
  files?: [path: string, size: number, sec: number, nsec: number][];
}

/** `images/runs/<ref>.json`. */
export interface RunRecord {
  /** {@linkcode RUN_RECORD_FORMAT}. */
  format: number;
  /** The reference as given on the command line. */
  ref: string;
  /** Its canonical name (as the image store names it; `bundle.json`'s `image`). */
  name: string;
  /** The image store's record of that name (`images/refs/<hex>.json`). */
  refFile: string;
  /**
   * The digest the name led to: for an OCI layout, its `index.json` entry (a
   * manifest, or an index resolved for this host's platform); for a pulled
   * name, the manifest.
   */
  lookup: string;
  /** The size that entry gives. */
  lookupSize: number;
  /** The media type that entry gives. */
  lookupMediaType: string;
  /** The manifest digest. */
  digest: string;
  /** Layers, bottom first. */
  layers: RunRecordLayer[];
  /**
   * This mapping's key (overlay/idmap.ts `idMapKey`): a layer directory
   * holding `idmap-<key>` was extracted under it, and its own copies of
   * layers are `<dir>~<key>`.
   */
  mapKey: string;
  /** The image's Entrypoint: a command given to a run replaces the image's Cmd after it. */
  entrypoint: string[];
  /** The image's own command (Entrypoint and Cmd), for a run given none. */
  args: string[];
  /** `config.json` as the long way writes it, with {@linkcode SPEC_ROOTFS} and {@linkcode SPEC_ARGS} in place. */
  spec: string;
  /** The runtime. */
  runtime: RunRecordRuntime;
  /** The runtime's state directory. */
  stateDir: string;
  /** {@linkcode hostKey} where it was built. */
  host: string;
  /** The code it was built by. */
  code: RunRecordCode;
  /** Unprivileged: the user namespace the run was made in, made again the same way. */
  userns?: RunRecordUserns;
}

/** How an unprivileged run's user namespace is made, and what it maps. */
export interface RunRecordUserns {
  /** The `unshare` arguments (before `--`) that made it (overlay/userns.ts). */
  unshare: string[];
  /** Its `/proc/self/uid_map`, as `inside outside count` numbers on one line. */
  uidMap: string;
  /** Its `/proc/self/gid_map`, the same way. */
  gidMap: string;
  /** The warning a run in it says (only root mapped), when there is one. */
  warning?: string;
}

// ---- libc -----------------------------------------------------------------

const x64 = Deno.build.arch === "x86_64";
const NR = {
  read: x64 ? 0 : 63,
  write: x64 ? 1 : 64,
  close: x64 ? 3 : 57,
  wait4: x64 ? 61 : 260,
  kill: x64 ? 62 : 129,
  flock: x64 ? 73 : 32,
  getuid: x64 ? 102 : 174,
  mount: x64 ? 165 : 40,
  umount2: x64 ? 166 : 39,
  openat: x64 ? 257 : 56,
  mkdirat: x64 ? 258 : 34,
  unlinkat: x64 ? 263 : 35,
  fchmodat: x64 ? 268 : 53,
  faccessat: x64 ? 269 : 48,
  unshare: x64 ? 272 : 97,
  renameat2: x64 ? 316 : 276,
  statx: x64 ? 332 : 291,
  getdents64: x64 ? 217 : 61,
} as const;
const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const AT_REMOVEDIR = 0x200;
const AT_EACCESS = 0x200;
const O_WRONLY = 1;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_TRUNC = 0o1000;
const O_CLOEXEC = 0o2000000;
const X_OK = 1;
const LOCK_EX = 2;
const EINTR = 4;
const EBUSY = 16;
const CLONE_NEWNS = 0x20000;
const MS_REC = 0x4000;
const MS_PRIVATE = 1 << 18;
const MNT_DETACH = 2;
const RENAME_NOREPLACE = 1;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

const symbols = {
  __errno_location: { parameters: [], result: "pointer" },
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"], result: "i64" },
  posix_spawn: {
    parameters: ["pointer", "pointer", "pointer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  waitid: { parameters: ["i32", "i32", "buffer", "i32"], result: "i32", nonblocking: true },
  environ: { type: "pointer" },
} as const;

let lib: Deno.DynamicLibrary<typeof symbols>["symbols"] | undefined;
/** `syscall`, typed to take numbers (Deno takes them for 64-bit parameters: no BigInt per call). */
let raw: (...args: number[]) => number | bigint;
let keep: unknown;

/** libc, opened once for this module: false when FFI is not permitted. */
function ffi(): boolean {
  if (lib) return true;
  try {
    const l = Deno.dlopen("libc.so.6", symbols);
    keep = l;
    lib = l.symbols;
    raw = lib.syscall as unknown as typeof raw;
    return true;
  } catch {
    return false;
  }
}

/** A system call; its result, or `-errno`. */
function sys(nr: number, a = 0, b = 0, c = 0, d = 0, e = 0): number {
  const r = Number(raw(nr, a, b, c, d, e, 0));
  if (r >= 0) return r;
  const p = lib!.__errno_location();
  return p === null ? -1 : -new Deno.UnsafePointerView(p).getInt32();
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Buffers whose addresses a call in progress uses. */
const held: Uint8Array[] = [];

/** A NUL-terminated copy of `s`, held until {@linkcode release}, and its address. */
function c(s: string): number {
  const b = encoder.encode(s + "\0");
  held.push(b);
  return at(b);
}

function at(b: Uint8Array): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b as Uint8Array<ArrayBuffer>)));
}

function release(): void {
  held.length = 0;
}

const readBuf = new Uint8Array(256 * 1024);

/** The text of a file, or undefined when it cannot be read (or is larger than 256 KiB). */
function readBytes(path: string): Uint8Array | undefined {
  const fd = sys(NR.openat, AT_FDCWD, c(path), O_CLOEXEC, 0);
  release();
  if (fd < 0) return undefined;
  try {
    let n = 0;
    for (;;) {
      const r = sys(NR.read, fd, at(readBuf) + n, readBuf.length - n);
      if (r === -EINTR) continue;
      if (r < 0) return undefined;
      if (r === 0) break;
      n += r;
      if (n === readBuf.length) return undefined;
    }
    return readBuf.subarray(0, n);
  } finally {
    sys(NR.close, fd);
  }
}

function readText(path: string): string | undefined {
  const b = readBytes(path);
  return b && decoder.decode(b);
}

function readJSON(path: string): unknown {
  const t = readText(path);
  if (t === undefined) return undefined;
  try {
    return JSON.parse(t);
  } catch {
    return undefined;
  }
}

function access(path: string, mode: number, flags: number): boolean {
  const r = sys(NR.faccessat, AT_FDCWD, c(path), mode, flags);
  release();
  return r === 0;
}

const exists = (path: string) => access(path, 0, 0);

const stxBuf = new Uint8Array(256);
const stx = new DataView(stxBuf.buffer);

/** `lstat`: type bits, owner, size and mtime; undefined when there is nothing there. */
function stamp(
  path: string,
): { mode: number; uid: number; size: number; sec: number; nsec: number } | undefined {
  const r = sys(NR.statx, AT_FDCWD, c(path), AT_SYMLINK_NOFOLLOW, 0x7ff, at(stxBuf));
  release();
  if (r < 0) return undefined;
  return {
    uid: stx.getUint32(20, true),
    mode: stx.getUint16(28, true),
    size: Number(stx.getBigUint64(40, true)),
    sec: Number(stx.getBigInt64(112, true)),
    nsec: stx.getUint32(120, true),
  };
}

/**
 * This process's environment, read once from libc's `environ`: the same
 * table `Deno.env` reads, reached without `--allow-env` (this module takes
 * the libc route whatever is granted, as sys/env.ts does without it).
 */
let envTable: Map<string, string> | undefined;

function environment(): Map<string, string> {
  if (envTable) return envTable;
  const m = new Map<string, string>();
  const table = new Deno.UnsafePointerView(lib!.environ!).getPointer();
  if (table) {
    const v = new Deno.UnsafePointerView(table);
    for (let i = 0;; i++) {
      const p = v.getPointer(i * 8);
      if (!p) break;
      const entry = Deno.UnsafePointerView.getCString(p);
      const eq = entry.indexOf("=");
      // getenv(3) takes the first entry of a name.
      if (eq > 0 && !m.has(entry.slice(0, eq))) m.set(entry.slice(0, eq), entry.slice(eq + 1));
    }
  }
  return envTable = m;
}

/** `getenv(name)`. */
const env = (name: string): string | undefined => environment().get(name);

const DT_UNKNOWN = 0;
const DT_REG = 8;
const S_IFREG_BITS = 0o100000;
const dentBuf = new Uint8Array(32 * 1024);

/**
 * The names of the regular files in `dir` (as `Deno.readDirSync` says `isFile`,
 * symlinks not followed: by the entry's type, or its lstat when the file system
 * does not say); undefined when it cannot be listed.
 */
function regularFiles(dir: string): string[] | undefined {
  const fd = sys(NR.openat, AT_FDCWD, c(dir), O_CLOEXEC, 0);
  release();
  if (fd < 0) return undefined;
  const names: string[] = [];
  try {
    const view = new DataView(dentBuf.buffer);
    for (;;) {
      const n = sys(NR.getdents64, fd, at(dentBuf), dentBuf.length);
      if (n < 0) return undefined;
      if (n === 0) return names;
      for (let off = 0; off < n;) {
        const reclen = view.getUint16(off + 16, true);
        const type = dentBuf[off + 18];
        let end = off + 19;
        while (dentBuf[end] !== 0) end++;
        const name = decoder.decode(dentBuf.subarray(off + 19, end));
        off += reclen;
        if (name === "." || name === "..") continue;
        if (
          type === DT_REG ||
          (type === DT_UNKNOWN &&
            ((stamp(`${dir}/${name}`)?.mode ?? 0) & 0o170000) === S_IFREG_BITS)
        ) names.push(name);
      }
    }
  } finally {
    sys(NR.close, fd);
  }
}

// ---- records --------------------------------------------------------------

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const HEX = "0123456789abcdef";

/**
 * Reads the record at `path`: its JSON on the first line, the sha256 of that
 * line's bytes on the second. Undefined when it cannot be read or the
 * digest does not match: a record damaged, or changed by anything but
 * strata, is never used (this is the check the long way's verification of
 * the stored manifest and config made on every run; native SHA-256, ~0.1 ms).
 *
 * @example Usage
 * ```ts ignore
 * import { readRunRecord, runRecordPath } from "./cmd_run_warm.ts";
 * const rec = await readRunRecord(runRecordPath(root, ref)!);
 * ```
 */
export async function readRunRecord(path: string): Promise<RunRecord | undefined> {
  if (!ffi()) return undefined;
  const b = readBytes(path);
  if (!b) return undefined;
  const nl = b.indexOf(10);
  if (nl < 0 || b.length !== nl + 1 + 64 + 1 || b[b.length - 1] !== 10) return undefined;
  const json = b.slice(0, nl);
  const sum = decoder.decode(b.subarray(nl + 1, nl + 65));
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", json));
  let hex = "";
  for (const x of d) hex += HEX[x >> 4] + HEX[x & 15];
  if (hex !== sum) return undefined;
  let rec: unknown;
  try {
    rec = JSON.parse(decoder.decode(json));
  } catch {
    return undefined;
  }
  return isRunRecord(rec) ? rec : undefined;
}

/** The longest record file name (`NAME_MAX` is 255). */
const MAX_NAME = 240;

/**
 * The file of the record for `ref` as given on the command line: base64url
 * of its UTF-8, no hashing; undefined for a reference too long to name a
 * file by (it then always takes the long way).
 *
 * @example Usage
 * ```ts
 * import { runRecordPath } from "./cmd_run_warm.ts";
 * console.log(runRecordPath("/var/lib/strata", "oci:/srv/app:v1"));
 * // "/var/lib/strata/images/runs/b2NpOi9zcnYvYXBwOnYx.json"
 * ```
 */
export function runRecordPath(cacheRoot: string, ref: string): string | undefined {
  const b = encoder.encode(ref);
  if (b.length * 4 / 3 > MAX_NAME) return undefined;
  // By hand: the first btoa of a process costs ~1 ms.
  let name = "";
  for (let i = 0; i < b.length; i += 3) {
    const n = (b[i] << 16) | ((b[i + 1] ?? 0) << 8) | (b[i + 2] ?? 0);
    const chars = i + 2 < b.length ? 4 : i + 1 < b.length ? 3 : 2;
    for (let k = 0; k < chars; k++) name += B64URL[(n >> (18 - 6 * k)) & 63];
  }
  return `${cacheRoot}/images/runs/${name}.json`;
}

const isStrings = (v: unknown): v is string[] =>
  Array.isArray(v) && v.every((s) => typeof s === "string");

/** A name under `layers/` as strata makes them: no separator, no dot first. */
const LAYER_DIR = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*-[a-f0-9]{32,}(?:@[a-f0-9]{32,})?$/;

/**
 * Tells whether `r` has the shape of a record of this format: every field a
 * run reads has its type, and every layer directory is a name strata gives
 * (a damaged record is never half used).
 *
 * @example Usage
 * ```ts
 * import { isRunRecord } from "./cmd_run_warm.ts";
 * console.log(isRunRecord({ format: 2 })); // false
 * ```
 */
export function isRunRecord(r: unknown): r is RunRecord {
  const v = r as RunRecord;
  if (typeof v !== "object" || v === null || v.format !== RUN_RECORD_FORMAT) return false;
  for (
    const k of [
      "ref",
      "name",
      "refFile",
      "lookup",
      "lookupMediaType",
      "digest",
      "spec",
      "stateDir",
      "host",
    ] as const
  ) {
    if (typeof v[k] !== "string") return false;
  }
  if (typeof v.lookupSize !== "number" || !/^[0-9a-f]{16}$/.test(v.mapKey)) return false;
  if (!Array.isArray(v.layers) || v.layers.length === 0 || v.layers.length > 500) return false;
  for (const l of v.layers) {
    if (typeof l?.diffID !== "string" || !isStrings(l.dirs) || l.dirs.length !== 2) return false;
    if (!LAYER_DIR.test(l.dirs[0]) || !LAYER_DIR.test(l.dirs[1])) return false;
  }
  if (!isStrings(v.entrypoint) || !isStrings(v.args)) return false;
  const rt = v.runtime;
  if (typeof rt?.name !== "string" || typeof rt.path !== "string" || !rt.path.startsWith("/")) {
    return false;
  }
  if (rt.reason !== undefined && typeof rt.reason !== "string") return false;
  if (rt.crun !== undefined && rt.crun !== null && !isStamped(rt.crun, 3)) return false;
  if (v.userns !== undefined) {
    const u = v.userns;
    if (typeof u !== "object" || u === null || !isStrings(u.unshare) || !u.unshare.length) {
      return false;
    }
    if (!/^[0-9 ]+$/.test(u.uidMap) || !/^[0-9 ]+$/.test(u.gidMap)) return false;
    if (u.warning !== undefined && typeof u.warning !== "string") return false;
  }
  if (typeof v.code?.root !== "string") return false;
  if (v.code.files !== undefined) {
    if (!Array.isArray(v.code.files) || !v.code.files.every((f) => isStamped(f, 4))) return false;
  }
  return true;
}

function isStamped(f: unknown, n: number): boolean {
  return Array.isArray(f) && f.length === n && typeof f[0] === "string" &&
    f.slice(1).every((x) => typeof x === "number");
}

/** The environment variables a run's mounts, runtime and state directory depend on. */
const HOST_ENV = ["PATH", "STRATA_MOUNT_BACKEND", "XDG_RUNTIME_DIR"];
/** The lines of `/proc/self/status` a spec can depend on. */
const STATUS_LINES = /^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):.*$/gm;
/**
 * Of those, what a new user namespace inherits: its own capability sets are
 * full (the bounding set too, whatever the outside's).
 */
const STATUS_LINES_USERNS = /^(NoNewPrivs|Seccomp):.*$/gm;

/**
 * What a run record depends on in the host and in this process, as one
 * string: the boot (`boot_id`: the kernel, its version and what was probed
 * of it, such as whether crun works), the resource limits, the capability
 * and seccomp lines of `/proc/self/status`, the cgroup, the (outside) user,
 * and the environment the runtime, its state directory and the mounts are
 * found by. In a user namespace (`userns`): only what the namespace
 * inherits from the process that makes it, so that a run inside it and the
 * process about to make one compute the same key, and what decides how it
 * is made: `/etc/subuid`, `/etc/subgid`, and `newuidmap` and `newgidmap` on
 * PATH (their change times: a setcap changes them too). Undefined when
 * `/proc` cannot be read.
 *
 * @example Usage
 * ```ts ignore
 * import { hostKey } from "./cmd_run_warm.ts";
 * console.log(hostKey("root", 0));
 * ```
 */
export function hostKey(mode: "root" | "userns", uid: number): string | undefined {
  if (!ffi()) return undefined;
  const status = readText("/proc/self/status");
  const boot = readText("/proc/sys/kernel/random/boot_id");
  const limits = readText("/proc/self/limits");
  const cgroup = readText("/proc/self/cgroup");
  if (status === undefined || boot === undefined || limits === undefined || cgroup === undefined) {
    return undefined;
  }
  const subids = mode === "root" ? [] : [
    ...["/etc/subuid", "/etc/subgid"].map((p) => `${p} ${changed(p)}`),
    ...["newuidmap", "newgidmap"].map((n) => {
      const p = onPath(n);
      return `${n} ${p ?? "none"} ${p ? changed(p) : ""}`;
    }),
  ];
  return [
    `mode ${mode} uid ${uid}`,
    boot.trim(),
    ...(status.match(mode === "root" ? STATUS_LINES : STATUS_LINES_USERNS) ?? []),
    limits,
    cgroup,
    ...HOST_ENV.map((k) => `${k}=${env(k) ?? ""}`),
    ...subids,
  ].join("\n");
}

/** A file's mode, size and change time (followed), or `none`. */
function changed(path: string): string {
  const r = sys(NR.statx, AT_FDCWD, c(path), 0, 0x7ff, at(stxBuf));
  release();
  if (r < 0) return "none";
  return `${stx.getUint16(28, true).toString(8)} ${stx.getBigUint64(40, true)} ${
    stx.getBigInt64(96, true)
  }.${stx.getUint32(104, true)}`;
}

/** The directories whose files a record follows from, below the package root. */
const CODE_DIRS = ["bundle", "overlay", "sys", "image"];
/** And the command line's files that it does. */
const CODE_FILES = ["cli/cmd_run.ts", "cli/pipeline.ts", "cli/cmd_run_warm.ts", "deno.json"];
/** The package root: this module is `cli/cmd_run_warm.ts`. */
const PACKAGE_ROOT = new URL("../", import.meta.url);

/**
 * The code this process runs, for a new record: the package root and, for a
 * local one, the size and modification time of the run command's files and
 * of every file of `bundle/`, `overlay/`, `sys/` and `image/` (and of those
 * directories: a file added or removed changes theirs).
 *
 * @example Usage
 * ```ts ignore
 * import { codeIdentity } from "./cmd_run_warm.ts";
 * console.log(codeIdentity()?.root);
 * ```
 */
export function codeIdentity(): RunRecordCode | undefined {
  if (PACKAGE_ROOT.protocol !== "file:") return { root: PACKAGE_ROOT.href };
  if (!ffi()) return undefined;
  const root = decodeURIComponent(PACKAGE_ROOT.pathname);
  const paths = [...CODE_FILES, ...CODE_DIRS.map((d) => `${d}/`)];
  for (const d of CODE_DIRS) {
    const names = regularFiles(root + d);
    if (!names) return undefined;
    for (const name of names) {
      if (name.endsWith(".ts") || name.endsWith(".json")) paths.push(`${d}/${name}`);
    }
  }
  const files: [string, number, number, number][] = [];
  for (const p of paths.sort()) {
    const st = stamp(root + p);
    if (!st) return undefined;
    files.push([p, p.endsWith("/") ? 0 : st.size, st.sec, st.nsec]);
  }
  return { root: PACKAGE_ROOT.href, files };
}

/** The code a record was built by is the code this process runs. */
function sameCode(code: RunRecordCode): boolean {
  if (code.root !== PACKAGE_ROOT.href) return false;
  if (PACKAGE_ROOT.protocol !== "file:") return code.files === undefined;
  if (!code.files) return false;
  const root = decodeURIComponent(PACKAGE_ROOT.pathname);
  for (const [p, size, sec, nsec] of code.files) {
    const st = stamp(root + p);
    if (!st || st.sec !== sec || st.nsec !== nsec || (!p.endsWith("/") && st.size !== size)) {
      return false;
    }
  }
  return true;
}

// ---- checks ---------------------------------------------------------------

/** What `--cache`, `-q`, `-i` and the rest of a `run` command line hold, when nothing else is there. */
interface FastArgs {
  cache?: string;
  quiet: boolean;
  ref: string;
  argv: string[];
}

/**
 * `run` with only the options a record covers (`--cache DIR`,
 * `--cache=DIR`, `-q`/`--quiet`, `-i`/`--interactive`, `--`), parsed as
 * cli/args.ts `parseArgs` parses them: options before and after IMAGE, the
 * container's command from the first argument after IMAGE that is not an
 * option (or the one after `--`). Undefined for anything else.
 */
export function fastArgs(args: readonly string[]): FastArgs | undefined {
  if (args[0] !== "run") return undefined;
  let cache: string | undefined;
  let ref: string | undefined;
  let quiet = false;
  let end = false;
  for (let i = 1; i < args.length; i++) {
    const a = args[i];
    if (end || a === "-" || !a.startsWith("-")) {
      if (ref === undefined) {
        ref = a;
        continue;
      }
      return { cache, quiet, ref, argv: args.slice(i) };
    }
    if (a === "--") end = true;
    else if (a === "--cache") {
      if (i + 1 >= args.length) return undefined;
      cache = args[++i];
    } else if (a.startsWith("--cache=")) cache = a.slice("--cache=".length);
    else if (a === "-q" || a === "--quiet") quiet = true;
    else if (a !== "-i" && a !== "--interactive") return undefined;
  }
  return ref === undefined ? undefined : { cache, quiet, ref, argv: [] };
}

/** A path `@std/path`'s `join`/`resolve` would leave as it is. */
const CLEAN = (p: string) =>
  p.startsWith("/") && (p === "/" || !p.endsWith("/")) && !/\/\/|\/\.\.?(\/|$)/.test(p) &&
  !/[\uD800-\uDFFF]/.test(p);

/** The layout `oci:DIR[:TAG]` still names the record's entry, and the store its name. */
function layoutStillNames(rec: RunRecord, ref: string): boolean {
  const value = ref.slice("oci:".length);
  const i = value.indexOf(":");
  const dir = i < 0 ? value : value.slice(0, i);
  const tag = i < 0 ? undefined : value.slice(i + 1);
  // A relative or unclean path: cli/args and @std/path resolve it, the long way.
  if (!CLEAN(dir) || tag === "" || rec.name !== ref) return false;
  const layout = readJSON(`${dir}/oci-layout`) as { imageLayoutVersion?: unknown } | undefined;
  const version = layout?.imageLayoutVersion;
  if (typeof version !== "string" || !version.startsWith("1.")) return false;
  const index = readJSON(`${dir}/index.json`) as { manifests?: unknown } | undefined;
  if (!Array.isArray(index?.manifests)) return false;
  const manifests = index.manifests as {
    digest?: unknown;
    size?: unknown;
    mediaType?: unknown;
    annotations?: Record<string, string>;
  }[];
  // As image/layout.ts selectFromIndex: a tag (or a full reference ending in
  // it) names the first entry it can; no tag, the only entry.
  const entry = tag === undefined ? manifests.length === 1 ? manifests[0] : undefined : manifests
    .find((d) => {
      const n = d?.annotations?.["org.opencontainers.image.ref.name"];
      return n === tag || (typeof n === "string" && n.endsWith(`:${tag}`) && !n.includes("@"));
    });
  return entry?.digest === rec.lookup && entry.size === rec.lookupSize &&
    entry.mediaType === rec.lookupMediaType && exists(rec.refFile);
}

/** A pulled name still points at the record's manifest. */
function nameStillNames(rec: RunRecord): boolean {
  const r = readJSON(rec.refFile) as { name?: unknown; digest?: unknown } | undefined;
  return r?.name === rec.name && r.digest === rec.digest;
}

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** What bundle/run.ts `which` finds for `name`: the first PATH directory holding it as an executable file. */
function onPath(name: string): string | undefined {
  for (const dir of (env("PATH") ?? DEFAULT_PATH).split(":")) {
    if (!dir) continue;
    const p = dir.endsWith("/") ? dir + name : `${dir}/${name}`;
    if (!access(p, X_OK, AT_EACCESS)) continue;
    const st = statFollowed(p);
    if (st !== undefined && (st & S_IFMT) === S_IFREG) return cleanJoin(dir, name);
  }
  return undefined;
}

/** `@std/path` join of a PATH entry and a name, for the paths strata records. */
function cleanJoin(dir: string, name: string): string | undefined {
  const p = `${dir.replace(/\/+$/, "")}/${name}`;
  return CLEAN(p) ? p : undefined;
}

/** The type and mode bits of what `path` resolves to. */
function statFollowed(path: string): number | undefined {
  const r = sys(NR.statx, AT_FDCWD, c(path), 0, 0x7ff, at(stxBuf));
  release();
  return r < 0 ? undefined : stx.getUint16(28, true);
}

/** `selectRuntime` would choose what the record says, for the same reason. */
function sameRuntime(rec: RunRecord): boolean {
  const rt = rec.runtime;
  if (onPath(rt.name) !== rt.path) return false;
  if (rt.name === "crun") return rt.crun === undefined;
  if (rt.name !== "runc") return false;
  // runc after crun: crun's probe holds for this boot (in the host key) and
  // for the same crun, found at the same place (its probe record says so too).
  const crun = onPath("crun");
  if (crun === undefined) return rt.crun === null;
  if (!rt.crun || rt.crun[0] !== crun) return false;
  const st = stampFollowed(crun);
  return st !== undefined && st[0] === rt.crun[1] && st[1] === rt.crun[2];
}

function stampFollowed(path: string): [number, number] | undefined {
  const r = sys(NR.statx, AT_FDCWD, c(path), 0, 0x7ff, at(stxBuf));
  release();
  return r < 0 ? undefined : [Number(stx.getBigInt64(112, true)), stx.getUint32(120, true)];
}

/**
 * The mtime of the program at `path` (followed), as {@linkcode RunRecordRuntime}
 * records crun's.
 *
 * @example Usage
 * ```ts ignore
 * import { programStamp } from "./cmd_run_warm.ts";
 * console.log(programStamp("/usr/bin/crun"));
 * ```
 */
export function programStamp(path: string): [number, number] | undefined {
  return ffi() ? stampFollowed(path) : undefined;
}

/** The runtime's fallback warning was said already in this cache (`notes.json`). */
function warningSaid(cacheRoot: string, rec: RunRecord): boolean {
  if (!rec.runtime.reason) return true;
  const notes = readJSON(`${cacheRoot}/notes.json`) as Record<string, unknown> | undefined;
  return typeof notes?.[`using ${rec.runtime.name}: ${rec.runtime.reason}`] === "string";
}

/** uid_map and gid_map are the initial namespace's. */
function initialIdMaps(): boolean {
  const identity = /^\s*0\s+0\s+4294967295\s*$/;
  return identity.test(readText("/proc/self/uid_map") ?? "") &&
    identity.test(readText("/proc/self/gid_map") ?? "");
}

/**
 * The lower directories, bottom first, as `CachingLayerResolver.cachedPath`
 * finds them: the shared directory, else the chained one, else this
 * mapping's own copy of either; the one found must hold this mapping's
 * marker (extracted under it). Undefined when a layer is missing, or the one
 * found was extracted under another mapping: whether it fits this one is
 * decided the long way, from its `layer.json`.
 */
function lowerDirs(cacheRoot: string, rec: RunRecord): string[] | undefined {
  const out: string[] = [];
  const marker = `idmap-${rec.mapKey}`;
  const layers = `${cacheRoot}/layers`;
  next: for (const { dirs: [shared, chained] } of rec.layers) {
    for (const name of [shared, chained, `${shared}~${rec.mapKey}`, `${chained}~${rec.mapKey}`]) {
      const dir = `${layers}/${name}`;
      if (!exists(`${dir}/fs`)) continue;
      if (!exists(`${dir}/${marker}`)) return undefined;
      out.push(`${dir}/fs`);
      continue next;
    }
    return undefined;
  }
  return out;
}

/**
 * The cache root cli/cmd_main.ts would use (overlay/cache.ts
 * `defaultCacheRoot`): `--cache`, `$STRATA_CACHE`, root's, or the user's.
 */
function cacheRoot(given: string | undefined, uid: number): string | undefined {
  let root = given ?? env("STRATA_CACHE");
  if (!root && given === undefined) {
    const xdg = env("XDG_CACHE_HOME");
    const home = env("HOME");
    root = uid === 0
      ? "/var/lib/strata"
      : xdg
      ? `${xdg}/strata`
      : home
      ? `${home}/.cache/strata`
      : "";
  }
  return root && CLEAN(root) ? root : undefined;
}

/** The record for the run `a` asks for, when every check holds. */
async function checkedRecord(
  a: FastArgs,
  root: string,
  uid: number,
): Promise<{ rec: RunRecord; lower: string[] } | undefined> {
  if (!initialIdMaps()) return undefined;
  const path = runRecordPath(root, a.ref);
  const rec = path === undefined ? undefined : await readRunRecord(path);
  if (!rec || rec.ref !== a.ref || (rec.userns === undefined) !== (uid === 0)) return undefined;
  if (a.ref.startsWith("oci:") ? !layoutStillNames(rec, a.ref) : !nameStillNames(rec)) {
    return undefined;
  }
  if (rec.host !== hostKey(uid === 0 ? "root" : "userns", uid) || !sameCode(rec.code)) {
    return undefined;
  }
  if (!warningSaid(root, rec) || !sameRuntime(rec)) return undefined;
  const st = stamp(rec.stateDir);
  if (!st || (st.mode & S_IFMT) !== S_IFDIR || st.uid !== uid) return undefined;
  const lower = lowerDirs(root, rec);
  return lower && { rec, lower };
}

// ---- the run --------------------------------------------------------------

/** What a run made, undone in reverse order by {@linkcode undo}. */
interface Made {
  /** `containers/.tmp-<random>`, until renamed. */
  tmp?: string;
  /** `containers/<id>`, once renamed. */
  dir?: string;
  /** The lock's fd (held while the bundle exists). */
  lock?: number;
  /** Mounted paths, in order. */
  mounts: string[];
}

function undo(m: Made): void {
  for (const t of m.mounts.splice(0).reverse()) {
    if (sys(NR.umount2, c(t), 0) === -EBUSY) sys(NR.umount2, c(t), MNT_DETACH);
    release();
  }
  const dir = m.dir ?? m.tmp;
  if (dir !== undefined) {
    // What is left: the bundle's mountpoint (empty once unmounted), the
    // lock and bundle.json; anything else the long way's prune reclaims.
    sys(NR.unlinkat, AT_FDCWD, c(`${dir}/bundle`), AT_REMOVEDIR);
    sys(NR.unlinkat, AT_FDCWD, c(`${dir}/started`), 0);
    sys(NR.unlinkat, AT_FDCWD, c(`${dir}/runtime.log`), 0);
    sys(NR.unlinkat, AT_FDCWD, c(`${dir}/bundle.json`), 0);
    sys(NR.unlinkat, AT_FDCWD, c(`${dir}/lock`), 0);
    sys(NR.unlinkat, AT_FDCWD, c(dir), AT_REMOVEDIR);
    release();
  }
  // Last: until the lock is released, prune keeps the layers.
  if (m.lock !== undefined) sys(NR.close, m.lock);
  m.lock = m.dir = m.tmp = undefined;
}

function writeFile(path: string, text: string, flags: number, mode: number): boolean {
  const fd = sys(NR.openat, AT_FDCWD, c(path), O_WRONLY | O_CREAT | O_CLOEXEC | flags, mode);
  release();
  if (fd < 0) return false;
  try {
    const b = encoder.encode(text);
    for (let off = 0; off < b.length;) {
      const n = sys(NR.write, fd, at(b) + off, b.length - off);
      if (n === -EINTR) continue;
      if (n <= 0) return false;
      off += n;
    }
    return true;
  } finally {
    sys(NR.close, fd);
  }
}

function mkdir(path: string, mode: number): boolean {
  const r = sys(NR.mkdirat, AT_FDCWD, c(path), mode);
  release();
  return r === 0;
}

function mount(source: string, target: string, fstype: string, flags: number, data: string) {
  const r = sys(NR.mount, c(source), c(target), fstype ? c(fstype) : 0, flags, data ? c(data) : 0);
  release();
  return r === 0;
}

/** Escapes a path for a `lowerdir=`/`upperdir=` option, as sys/mount.ts does. */
const escapeOption = (p: string) => p.replace(/[\\,:]/g, (ch) => "\\" + ch);

/** mount(2) takes one page of options; sys/mount.ts keeps them below this. */
const OPTION_BUDGET = 3800;

/**
 * Claims the container as bundle/bundler.ts `claimContainer` does
 * (`containers/.tmp-<random>` with its `lock` held and `bundle.json`,
 * renamed to `containers/<id>`); false when any of it fails (undone by the
 * caller).
 */
function claim(m: Made, rec: RunRecord, root: string, id: string): boolean {
  const containers = `${root}/containers`;
  const tmp = `${containers}/.tmp-${crypto.randomUUID().slice(0, 13)}`;
  if (!mkdir(tmp, 0o700)) return false;
  m.tmp = tmp;
  const lock = sys(NR.openat, AT_FDCWD, c(`${tmp}/lock`), O_WRONLY | O_CREAT | O_CLOEXEC, 0o600);
  release();
  if (lock < 0) return false;
  m.lock = lock;
  if (sys(NR.flock, lock, LOCK_EX) !== 0) return false;
  const record = {
    id,
    image: rec.name,
    imageDigest: rec.digest,
    diffIDs: rec.layers.map((l) => l.diffID),
    pid: Deno.pid,
    created: new Date().toISOString(),
  };
  if (!writeFile(`${tmp}/bundle.json`, JSON.stringify(record), O_TRUNC, 0o666)) return false;
  const dir = `${containers}/${id}`;
  const r = sys(NR.renameat2, AT_FDCWD, c(tmp), AT_FDCWD, c(dir), RENAME_NOREPLACE);
  release();
  if (r !== 0) return false;
  m.tmp = undefined;
  m.dir = dir;
  return mkdir(`${dir}/bundle`, 0o700);
}

/** The overlay's options, as sys/mount.ts gives them to `mount(2)`; undefined when they do not fit. */
function overlayOptions(lower: string[], bundle: string): string | undefined {
  const data = `lowerdir=${[...lower].reverse().map(escapeOption).join(":")},upperdir=${
    escapeOption(`${bundle}/upper`)
  },workdir=${escapeOption(`${bundle}/work`)},userxattr`;
  // Longer options (or a long multi-byte path) need the long way's mount backends.
  if (data.length * 3 > OPTION_BUDGET && encoder.encode(data).length > OPTION_BUDGET) {
    return undefined;
  }
  return data;
}

/** The recorded spec with this run's rootfs and command in place; undefined without a command. */
function specFor(rec: RunRecord, rootfs: string, argv: string[]): string | undefined {
  const args = argv.length ? [...rec.entrypoint, ...argv] : rec.args;
  if (args.length === 0) return undefined; // no command: the long way says so
  const rootfsJSON = JSON.stringify(SPEC_ROOTFS);
  const argsJSON = JSON.stringify([SPEC_ARGS]);
  const i = rec.spec.indexOf(rootfsJSON);
  const j = rec.spec.indexOf(argsJSON);
  if (i < 0 || j < 0 || rec.spec.indexOf(rootfsJSON, i + 1) >= 0) return undefined;
  if (rec.spec.indexOf(argsJSON, j + 1) >= 0) return undefined;
  return rec.spec.replace(rootfsJSON, () => JSON.stringify(rootfs))
    .replace(argsJSON, () => JSON.stringify(args));
}

/**
 * As root: moves this thread into a private mount namespace, and mounts and
 * writes the bundle (bundle/bootstrap.ts `bootstrapBundle`, the spec
 * writer); false when any of it fails (undone by the caller).
 */
function mountBundle(m: Made, rec: RunRecord, lower: string[], argv: string[]): boolean {
  const bundle = `${m.dir}/bundle`;
  // As overlay/userns.ts enterThreadMountNamespace: this thread alone, all private.
  if (sys(NR.unshare, CLONE_NEWNS) !== 0) return false;
  if (!mount("none", "/", "", MS_REC | MS_PRIVATE, "")) {
    throw new Error(
      "Cannot make the mounts of this thread's new mount namespace private (mount / MS_REC|MS_PRIVATE failed)",
    );
  }

  const [upper, work, rootfs] = [`${bundle}/upper`, `${bundle}/work`, `${bundle}/rootfs`];
  const data = overlayOptions(lower, bundle);
  const spec = specFor(rec, rootfs, argv);
  if (data === undefined || spec === undefined) return false;
  if (!mount("tmpfs", bundle, "tmpfs", 0, "mode=700")) return false;
  m.mounts.push(bundle);
  for (const d of [upper, work, rootfs]) if (!mkdir(d, 0o700)) return false;
  // The rootfs root takes the mode of the upper directory; containers expect 0755.
  const ch = sys(NR.fchmodat, AT_FDCWD, c(upper), 0o755, 0);
  release();
  if (ch !== 0) return false;
  if (!mount("overlay", rootfs, "overlay", 0, data)) return false;
  m.mounts.push(rootfs);
  return writeFile(`${bundle}/config.json`, spec, O_EXCL, 0o600);
}

/**
 * What runs in the user namespace of an unprivileged run, made by `unshare`
 * as overlay/userns.ts makes it: checks that the namespace maps what the
 * record says, mounts the bundle's tmpfs and overlay, writes the spec
 * (handed over in `STRATA_SPEC`), marks that all that was done, and becomes
 * the runtime. Only mount(8), mkdir(1) and the shell's builtins run before
 * the runtime: the mounts live in the namespace, and go with it when the
 * runtime exits, as with the long way.
 */
const IN_USERNS = `B=$1 D=$2 DATA=$3 UM=$4 GM=$5; shift 5
m=; while read -r a b c; do m="$m $a $b $c"; done < /proc/self/uid_map
[ "$m" = " $UM" ] || exit 121
m=; while read -r a b c; do m="$m $a $b $c"; done < /proc/self/gid_map
[ "$m" = " $GM" ] || exit 121
umask 077
mount -t tmpfs -o mode=700 tmpfs "$B" || exit 121
mkdir "$B/work" "$B/rootfs" || exit 121
mkdir -m 755 "$B/upper" || exit 121
printf '%s' "$STRATA_SPEC" > "$B/config.json" || exit 121
unset STRATA_SPEC
LIBMOUNT_FORCE_MOUNT2=always mount -t overlay -o "$DATA" overlay "$B/rootfs" || exit 121
: > "$D/started" || exit 121
exec "$@"`;

const SIGNALS: [Deno.Signal, number][] = [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]];

/** The last error a runc/crun JSON log has, as bundle/run.ts reads it. */
function loggedError(log: string): string | undefined {
  const text = readText(log) ?? "";
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
 * Starts `path args...` through posix_spawn, as sys/spawn.ts spawnInherited
 * does; with `env` (`K=V` strings) instead of this process' environment.
 */
function spawn(path: string, args: string[], env?: string[]): number {
  const strings = [path, ...args].map((s) => encoder.encode(s + "\0"));
  const argv = new BigUint64Array(strings.length + 1);
  strings.forEach((s, i) => argv[i] = BigInt(at(s)));
  const envStrings = env?.map((s) => encoder.encode(s + "\0"));
  const envp = envStrings && new BigUint64Array(envStrings.length + 1);
  envStrings?.forEach((s, i) => envp![i] = BigInt(at(s)));
  // glibc's posix_spawnattr_t: flags SETSIGDEF|SETSIGMASK at 0, SIGPIPE
  // reset to its default (bit 12 of the set at 8), nothing blocked (136).
  const attr = new Uint8Array(512);
  attr[0] = 0x04 | 0x08;
  attr[8 + 1] |= 1 << 4;
  const pid = new Int32Array(1);
  const P = Deno.UnsafePointer;
  const environ = envp ? P.of(envp) : new Deno.UnsafePointerView(lib!.environ!).getPointer();
  const r = lib!.posix_spawn(P.of(pid), P.of(strings[0]), null, P.of(attr), P.of(argv), environ);
  void [strings, envStrings, envp, attr];
  if (r !== 0) throw new Error(`cannot start ${path}: errno ${r}`);
  return pid[0];
}

/** Waits for `pid` to exit (on Deno's blocking pool), then reaps it: its status as `runContainer` gives it. */
async function wait(pid: number): Promise<number> {
  const info = new Uint8Array(128);
  for (let tries = 0;; tries++) {
    if (await lib!.waitid(1, pid, info, 4 | 0x01000000) === 0) break; // P_PID, WEXITED|WNOWAIT
    if (tries > 100 || sys(NR.kill, pid, 0) !== 0) throw new Error(`cannot wait for pid ${pid}`);
  }
  const raw = new Uint8Array(4);
  sys(NR.wait4, pid, at(raw), 1, 0); // WNOHANG
  const w = new DataView(raw.buffer).getInt32(0, true);
  const signal = w & 0x7f;
  return signal === 0 ? (w >> 8) & 0xff : 128 + signal;
}

/**
 * Runs `strata run` from its run record when the command line and the
 * record allow (see the module doc), returning the container's exit status;
 * undefined, having made nothing, when the long way must run instead.
 *
 * @throws the runtime's error (`RuntimeError`) when it could not run the
 * container: the record was right, the container was not.
 *
 * @example Usage
 * ```ts ignore
 * import { fastRun } from "./cmd_run_warm.ts";
 * const status = await fastRun(Deno.args) ?? await theLongWay();
 * ```
 */
export async function fastRun(args: readonly string[]): Promise<number | undefined> {
  const a = fastArgs(args);
  if (!a || !ffi()) return undefined;
  let checked: Awaited<ReturnType<typeof checkedRecord>>;
  let root: string | undefined;
  let uid: number;
  let unshare: string | undefined;
  try {
    // Not re-executed by strata, default mounts; root in the initial
    // namespaces, or a user about to make one.
    if (env("STRATA_NAMESPACE") !== undefined) return undefined;
    if (env("STRATA_MOUNT_BACKEND") !== undefined) return undefined;
    uid = sys(NR.getuid);
    if (uid !== 0 && (unshare = onPath("unshare")) === undefined) return undefined;
    root = cacheRoot(a.cache, uid);
    checked = root === undefined ? undefined : await checkedRecord(a, root, uid);
  } catch {
    return undefined; // a permission missing: the long way says which
  }
  if (!checked || root === undefined) return undefined;
  const { rec, lower } = checked;
  let early: number | undefined;
  let child: number | undefined;
  let received = 0;
  const id = `strata-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const inUserns = (argv: string[]) => [...rec.userns!.unshare, "--", ...argv];
  const runtime = (...argv: string[]) =>
    unshare
      ? runtimeCommand(unshare, inUserns([rec.runtime.path, ...argv]))
      : runtimeCommand(rec.runtime.path, argv);
  const forward = SIGNALS.map(([sig, n]) => {
    const h = () => {
      received++;
      if (child === undefined) early ??= n;
      else if (received > 1) runtime("--root", rec.stateDir, "kill", id, "KILL");
      else sys(NR.kill, child, n);
    };
    Deno.addSignalListener(sig, h);
    return [sig, h] as const;
  });
  const m: Made = { mounts: [] };
  try {
    let made = false;
    try {
      made = claim(m, rec, root, id) && (uid !== 0 || mountBundle(m, rec, lower, a.argv));
    } finally {
      release();
    }
    if (!made) return undefined;
    if (early !== undefined) return 128 + early;
    const dir = m.dir!;
    const bundle = `${dir}/bundle`;
    let log = `${bundle}/runtime.log`;
    const runtimeArgs = ["run", "--bundle", bundle, id];
    if (unshare === undefined) {
      child = spawn(rec.runtime.path, [
        "--root",
        rec.stateDir,
        "--log",
        log,
        "--log-format",
        "json",
        ...runtimeArgs,
      ]);
    } else {
      // Unprivileged: the mounts are made in the namespace (IN_USERNS), and
      // the log kept outside its tmpfs, which goes with it.
      const data = overlayOptions(lower, bundle);
      const spec = specFor(rec, `${bundle}/rootfs`, a.argv);
      if (data === undefined || spec === undefined) return undefined;
      log = `${dir}/runtime.log`;
      if (rec.userns!.warning && !a.quiet) writeStderr(rec.userns!.warning + "\n");
      const vars = [...environment()].map(([k, v]) => `${k}=${v}`);
      child = spawn(
        unshare,
        inUserns([
          "/bin/sh",
          "-c",
          IN_USERNS,
          "strata",
          bundle,
          dir,
          data,
          rec.userns!.uidMap,
          rec.userns!.gidMap,
          rec.runtime.path,
          "--root",
          rec.stateDir,
          "--log",
          log,
          "--log-format",
          "json",
          ...runtimeArgs,
        ]),
        [...vars, `STRATA_SPEC=${spec}`],
      );
    }
    const status = await wait(child);
    if (unshare !== undefined && !exists(`${dir}/started`)) {
      // The namespace could not be made as recorded: nothing ran. Unless
      // interrupted, the long way tries (and says why it cannot).
      return received ? 128 + (early ?? 2) : undefined;
    }
    if (status !== 0) {
      const err = loggedError(log);
      if (err) {
        const { RuntimeError } = await import("../bundle/runtime_error.ts");
        throw new RuntimeError(rec.runtime.name, err);
      }
    }
    return status;
  } finally {
    // `run` deletes the container when it exits; only an interrupted runtime leaves state.
    if (child !== undefined && exists(`${rec.stateDir}/${id}`)) {
      await runtime("--root", rec.stateDir, "delete", "--force", id);
    }
    undo(m);
    for (const [sig, h] of forward) Deno.removeSignalListener(sig, h);
    void keep;
  }
}

function writeStderr(text: string): void {
  let b = encoder.encode(text);
  while (b.length > 0) b = b.subarray(Deno.stderr.writeSync(b));
}
