/**
 * Mount backends: the only code in strata that mounts and unmounts. Three
 * backends share one interface and are picked at run time:
 *
 * 1. `fsopen`: the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`)
 *    through Deno FFI. overlayfs takes one lower layer per `"lowerdir+"`
 *    call (Linux 6.8+), so the one-page limit of mount options never applies.
 *    Each layer (and the upper and work directories) is handed over as an
 *    `O_PATH` file descriptor (`FSCONFIG_SET_FD`, Linux 6.13+), so no path
 *    string reaches the kernel at all; where the kernel takes only strings,
 *    `fsconfig` copies each with a 256-byte limit (`strndup_user(value, 256)`
 *    in fs/fsopen.c), and a longer path (a chain-keyed layer is
 *    `<root>/layers/sha256-<64 hex>@<64 hex>/fs`: 146 characters plus the
 *    root) is named through a short symlink in a link directory that is the
 *    calling thread's working directory for the call. So are all the lower
 *    layers when their full paths would make the overlay's line in
 *    `/proc/self/mountinfo` (which shows each layer as given) longer than
 *    runc can read (Go's 64 KiB line limit): 500 chain-keyed layers are.
 * 2. `mount2`: classic `mount(2)`/`umount2(2)` through FFI. Options must fit in
 *    one page (4 KiB), so a long `lowerdir=` list (and, under a very long
 *    root, the upper and work directories) is written with short relative
 *    names of symlinks (like Docker's overlay2 `l/` directory) that are
 *    resolved against a *thread-local* working directory: the calling thread
 *    first un-shares its `fs_struct` (`unshare(CLONE_FS)`), so no other thread
 *    of the process ever sees the working directory move.
 * 3. `command`: `mount(8)`/`umount(8)` through `Deno.Command`, for programs run
 *    without `--allow-ffi`. Long lists use the same symlinks, with the child's
 *    own working directory, and `LIBMOUNT_FORCE_MOUNT2=always`: libmount 2.39+
 *    would otherwise hand the whole `lowerdir=` list to `fsconfig` as one
 *    string, and fail past 255 bytes (util-linux issue 2287).
 *
 * With FFI the chosen backend mounts whatever fits in one page of options
 * (every tmpfs, overlays of a few dozen layers) with one `mount(2)` call, as
 * containerd does (the data page is parsed inside the kernel: no 256-byte
 * limit there), and turns to `fsopen` (or `mount2`'s symlinks on an older
 * kernel) only for longer lower lists.
 *
 * Every path still has to be one the kernel can name: shorter than
 * `PATH_MAX` (4096 bytes, the terminating NUL included), the mountpoint and
 * each layer alike; a longer one fails with `ENAMETOOLONG`, named in the error.
 *
 * Lower directories are always given bottom first (image order); each backend
 * stacks them so that the LAST one is on top.
 *
 * @module
 */
import { join } from "@std/path";
import { AT_FDCWD, check, cstr, errno, ErrnoError, ffiAvailable, libc } from "./libc.ts";
import { readProcText } from "./proc.ts";
import {
  makeTempDir,
  makeTempDirSync,
  realPath,
  remove,
  removeSync,
  symlink,
  symlinkSync,
} from "./files.ts";
import { getEnv } from "./env.ts";
import { cwd, osRelease } from "./process.ts";
import { commandOutput } from "./spawn.ts";

export { ErrnoError };

/** The name of a mount backend. */
export type MountBackendName = "fsopen" | "mount2" | "command";

/** What an overlay mount is made of. */
export interface OverlayMountOptions {
  /** Lower directories, bottom (base layer) first. 1 to 500 of them. */
  lower: readonly string[];
  /** The upper directory; without it the overlay is read-only. */
  upper?: string;
  /** The work directory, on the same filesystem as `upper`; required with `upper`. */
  work?: string;
  /** Mount read-only (`MOUNT_ATTR_RDONLY`), even with an upper directory. */
  readonly?: boolean;
  /**
   * Use `user.overlay.*` xattrs instead of `trusted.overlay.*` (default true).
   * strata always mounts with it, as root too, so that one cache gives one
   * tree to root and to user namespaces (Linux 5.11, commit 2d2f2d7322ff).
   */
  userxattr?: boolean;
}

/** What a tmpfs mount is made of. */
export interface TmpfsMountOptions {
  /** Size limit: bytes, or a tmpfs size string such as `"64m"` or `"50%"`. */
  size?: string | number;
  /** Mode of the root directory (default 0o755). */
  mode?: number;
}

/** One way of mounting and unmounting. */
export interface MountBackend {
  /** Which backend this is. */
  readonly name: MountBackendName;
  /** Mounts an overlay on `target`. */
  mountOverlay(target: string, options: OverlayMountOptions): Promise<void>;
  /** Mounts a tmpfs on `target`. */
  mountTmpfs(target: string, options?: TmpfsMountOptions): Promise<void>;
  /**
   * Unmounts `target`; a busy mount is detached lazily (`MNT_DETACH`).
   * Resolves `false`, without error, when `target` is not a mountpoint.
   */
  unmount(target: string): Promise<boolean>;
}

/**
 * A mount or unmount that failed: the errno, the path, and what the kernel
 * said about it (the `fsopen` context log, or `mount(8)`'s stderr).
 *
 * @example Usage
 * ```ts
 * import { MountError } from "./mount.ts";
 * const e = new MountError("fsconfig(upperdir)", 22, "/x/upper", "overlayfs: upper fs missing required features");
 * console.log(e.message);
 * ```
 */
export class MountError extends ErrnoError {
  /** The kernel's (or the mount command's) own words, when there are any. */
  readonly detail: string;
  /** Creates the error; `detail` is appended to the message. */
  constructor(
    syscall: string,
    errno: number,
    path?: string,
    detail = "",
    options?: ErrorOptions,
  ) {
    super(syscall, errno, path, options);
    this.name = "MountError";
    this.detail = detail.trim();
    if (this.detail) this.message += `: ${this.detail}`;
  }
}

/** overlayfs stacks at most this many lower layers (`OVL_MAX_STACK`). */
export const MAX_LOWER_LAYERS = 500;

const FSOPEN_CLOEXEC = 1;
const FSCONFIG_SET_FLAG = 0;
const FSCONFIG_SET_STRING = 1;
const FSCONFIG_SET_FD = 5;
const FSCONFIG_CMD_CREATE = 6;
const FSMOUNT_CLOEXEC = 1;
const MOUNT_ATTR_RDONLY = 1;
const MOVE_MOUNT_F_EMPTY_PATH = 4;
const MS_RDONLY = 1;
const MNT_DETACH = 2;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
const O_PATH = 0o10000000;
const CLONE_FS = 0x200;
const EPERM = 1;
const EBUSY = 16;
const EINVAL = 22;
const ENOENT = 2;
/** Options longer than this go through short symlink names (the limit is one 4 KiB page). */
const OPTION_BUDGET = 3800;
/**
 * `fsconfig(FSCONFIG_SET_STRING)` copies its value with `strndup_user(value,
 * 256)` (fs/fsopen.c): a value must be shorter than this, in bytes.
 */
const FSCONFIG_STRING_MAX = 256;
/** The longest path the kernel takes as a string, NUL included (`PATH_MAX`). */
const PATH_MAX = 4096;

/**
 * Tells whether `s`, as the bytes the kernel gets, is shorter than `limit`
 * bytes: the length alone decides almost always; only a string between a
 * third of the limit and the limit is encoded to count.
 */
function shorterThan(s: string, limit: number): boolean {
  if (s.length * 3 < limit) return true;
  if (s.length >= limit) return false;
  return cstr(s).length - 1 < limit;
}

function validateOverlay(target: string, o: OverlayMountOptions): void {
  if (o.lower.length === 0) {
    throw new RangeError(`Cannot mount an overlay on ${target}: no lower directory`);
  }
  if (o.lower.length > MAX_LOWER_LAYERS) {
    throw new RangeError(
      `Cannot mount an overlay on ${target}: ${o.lower.length} lower directories, overlayfs stacks at most ${MAX_LOWER_LAYERS}`,
    );
  }
  if (o.upper === undefined && o.lower.length < 2) {
    // overlayfs: "at least 2 lowerdir are needed while upperdir nonexistent".
    throw new RangeError(
      `Cannot mount an overlay on ${target}: without an upper directory overlayfs needs at least 2 lower directories`,
    );
  }
  if ((o.upper === undefined) !== (o.work === undefined)) {
    throw new TypeError(
      `Cannot mount an overlay on ${target}: upper and work directories go together`,
    );
  }
  checkPathMax(target, "mountpoint");
  for (const l of o.lower) checkPathMax(l, "lower directory", target);
  if (o.upper !== undefined) checkPathMax(o.upper, "upper directory", target);
  if (o.work !== undefined) checkPathMax(o.work, "work directory", target);
}

/** A path cut to 200 characters for a message. */
function clip(path: string): string {
  return path.length > 200 ? `${path.slice(0, 200)}…` : path;
}

/**
 * Refuses, by name, a path the kernel cannot take as a string (`PATH_MAX`,
 * 4096 bytes with the NUL): the mountpoint always reaches it as one, and so
 * does every layer, if only to be opened for `FSCONFIG_SET_FD`.
 */
function checkPathMax(path: string, what: string, target = path): void {
  if (shorterThan(path, PATH_MAX)) return;
  throw new RangeError(
    `Cannot mount on ${clip(target)}: the ${what} ${clip(path)} is ${cstr(path).length - 1} ` +
      `bytes long, and the kernel takes paths shorter than ${PATH_MAX} bytes (PATH_MAX)`,
  );
}

/** Escapes a path for a `lowerdir=`/`upperdir=` option string. */
function escapeOption(path: string): string {
  return path.replace(/[\\,:]/g, (c) => "\\" + c);
}

function tmpfsData(o: TmpfsMountOptions): string[] {
  const opts: string[] = [];
  if (o.size !== undefined) opts.push(`size=${o.size}`);
  opts.push(`mode=${(o.mode ?? 0o755).toString(8)}`);
  return opts;
}

/**
 * The most bytes of layer paths an overlay may show in `/proc/self/mountinfo`
 * (overlayfs shows each layer as it was given: a path, or the real path of a
 * file descriptor). Go's `bufio.Scanner` gives up on a line of 64 KiB, and
 * runc reads mountinfo so (moby/sys/mountinfo): 500 chain-keyed layers by
 * full path, ~180 KB, failed with "runc run failed: bufio.Scanner: token too
 * long". The rest of the line (mountpoint, upper and work directories, other
 * options) gets the remaining 8 KiB.
 */
const MOUNTINFO_BUDGET = 56 * 1024;

/**
 * Tells whether `dirs` (option, path), as overlayfs shows them in mountinfo
 * (`key=path,`, with space, tab, newline, backslash and comma escaped as
 * `\ooo`), fit in {@linkcode MOUNTINFO_BUDGET}.
 */
function mountinfoFits(dirs: readonly [key: string, path: string][]): boolean {
  let n = 0;
  for (const [key, path] of dirs) {
    n += key.length + 2 + path.length * 3; // UTF-8 at most triples a UTF-16 length
    if (n > MOUNTINFO_BUDGET) break;
  }
  if (n <= MOUNTINFO_BUDGET) return true;
  n = 0;
  for (const [key, path] of dirs) {
    n += key.length + 2 + cstr(path).length - 1;
    n += 3 * (path.match(/[ \t\n\\,]/g)?.length ?? 0);
  }
  return n <= MOUNTINFO_BUDGET;
}

/** A short name in a link directory for a directory whose path is too long to pass. */
interface Link {
  /** The symlink's name (relative to the link directory). */
  name: string;
  /** The directory it points at. */
  target: string;
}

/**
 * Builds the option string of an overlay; when it is too long for one page,
 * `lowerdir=` names short symlinks (base-36 indexes: at most two characters
 * for 500 layers), and so do `upperdir=` and `workdir=` (`U`, `W`) when the
 * page is still too small for them (a root of ~1.8 KB): the names are
 * relative, so the caller must mount with the link directory as working
 * directory.
 */
function overlayData(o: OverlayMountOptions): { data: string; links?: Link[] } {
  const topFirst = [...o.lower].reverse();
  const tail = (upper?: string, work?: string) => {
    const opts: string[] = [];
    if (upper !== undefined) opts.push(`upperdir=${escapeOption(upper)}`);
    if (work !== undefined) opts.push(`workdir=${escapeOption(work)}`);
    if (o.userxattr ?? true) opts.push("userxattr");
    return opts;
  };
  const plain = [`lowerdir=${topFirst.map(escapeOption).join(":")}`, ...tail(o.upper, o.work)]
    .join(",");
  if (shorterThan(plain, OPTION_BUDGET + 1)) return { data: plain };
  const links: Link[] = topFirst.map((target, i) => ({ name: i.toString(36), target }));
  const lowerdir = `lowerdir=${links.map((l) => l.name).join(":")}`;
  let data = [lowerdir, ...tail(o.upper, o.work)].join(",");
  if (!shorterThan(data, OPTION_BUDGET + 1) && o.upper !== undefined && o.work !== undefined) {
    links.push({ name: "U", target: o.upper }, { name: "W", target: o.work });
    data = [lowerdir, ...tail("U", "W")].join(",");
  }
  if (!shorterThan(data, OPTION_BUDGET + 1)) {
    throw new RangeError(`overlay options too long even with short names (${data.length} bytes)`);
  }
  return { data, links };
}

/** `path` made absolute against this process' working directory. */
function absolute(path: string): string {
  return path.startsWith("/") ? path : join(cwd(), path);
}

/**
 * Makes a directory of symlinks named `links[i].name` (in the temp
 * directory: its own path stays short whatever the cache root), runs `fn`
 * with its path, and removes it. Targets are made absolute first: they are
 * resolved from the link directory, not from here.
 */
function withLinkDir<T>(links: Link[], fn: (dir: string) => T): T {
  const dir = makeTempDirSync({ prefix: "strata-l-" });
  try {
    for (const l of links) symlinkSync(absolute(l.target), join(dir, l.name));
    return fn(dir);
  } finally {
    removeSync(dir, { recursive: true });
  }
}

/** {@linkcode withLinkDir} for a function that returns a promise. */
async function withLinkDirAsync<T>(links: Link[], fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await makeTempDir({ prefix: "strata-l-" });
  try {
    for (const l of links) await symlink(absolute(l.target), join(dir, l.name));
    return await fn(dir);
  } finally {
    await remove(dir, { recursive: true });
  }
}

/** Reads the messages the kernel queued on an fs context (`e overlayfs: ...`). */
function fsContextLog(fd: number): string {
  const buf = new Uint8Array(4096);
  const lines: string[] = [];
  for (let i = 0; i < 32; i++) {
    const n = Number(libc().read(fd, buf, BigInt(buf.length)));
    if (n <= 0) break;
    lines.push(new TextDecoder().decode(buf.subarray(0, n)).replace(/^[ewi] /, ""));
  }
  return lines.join("; ");
}

/**
 * Throws for a failed `fsconfig`/`fsmount` on context `fd`, with the kernel's
 * log. `e` is errno, read by the caller straight after the call, before any
 * string is built: with the message built first, a full test run here once
 * reported EAGAIN for a missing layer (ENOENT), errno reset by whatever ran
 * on this thread in between.
 */
function fsFail(fd: number, e: number, syscall: string, path?: string): never {
  const log = fsContextLog(fd);
  throw new MountError(syscall, e, path, log);
}

function umountFfi(target: string): boolean {
  const p = cstr(target);
  if (libc().umount2(p, 0) === 0) return true;
  let e = errno();
  if (e === EBUSY) {
    if (libc().umount2(p, MNT_DETACH) === 0) return true;
    e = errno();
  }
  if (e === EINVAL || e === ENOENT) return false;
  throw new MountError("umount2", e, target);
}

/**
 * How the new mount API is told which directory a layer (or the upper or
 * work directory) is: `fd`, an `O_PATH` file descriptor
 * (`FSCONFIG_SET_FD`, which overlayfs takes since Linux 6.13); `path`, its
 * path as a string (`FSCONFIG_SET_STRING`, Linux 6.8+), shorter than 256
 * bytes or else through a short symlink.
 */
export type LayerNaming = "fd" | "path";

/** Sets a flag (`value` null) or a string option on an fs context. */
function setString(ctx: number, key: string, value: string | null, path?: string): void {
  const c = libc();
  const r = value === null
    ? c.fsconfig(ctx, FSCONFIG_SET_FLAG, cstr(key), null, 0)
    : c.fsconfig(ctx, FSCONFIG_SET_STRING, cstr(key), cstr(value), 0);
  if (r < 0) fsFail(ctx, errno(), `fsconfig(${key})`, path ?? value ?? undefined);
}

/**
 * Hands `path` to an fs context as an `O_PATH` directory descriptor, closed
 * again at once: overlayfs takes its own reference to the directory.
 */
function setDirFd(ctx: number, key: string, path: string): void {
  const c = libc();
  const dir = c.open(cstr(path), O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (dir < 0) {
    const e = errno(); // first: a message built before it could reset errno
    throw new MountError(`open(${key})`, e, path);
  }
  try {
    if (c.fsconfig(ctx, FSCONFIG_SET_FD, cstr(key), null, dir) < 0) {
      fsFail(ctx, errno(), `fsconfig(${key})`, path);
    }
  } finally {
    c.close(dir);
  }
}

/** The new mount API: one `fsconfig` call per lower layer, no page limit. */
class FsopenBackend implements MountBackend {
  readonly name = "fsopen" as const;
  #naming?: LayerNaming;

  /** `naming` undefined: asked of the kernel on the first overlay (once per process). */
  constructor(naming?: LayerNaming) {
    this.#naming = naming;
  }

  /** How directories are handed to overlayfs. */
  get naming(): LayerNaming {
    return this.#naming ??= layerNaming();
  }

  #mount(fstype: string, target: string, attrs: number, configure: (ctx: number) => void): void {
    const c = libc();
    const fd = c.fsopen(cstr(fstype), FSOPEN_CLOEXEC);
    if (fd < 0) {
      const e = errno();
      throw new MountError(`fsopen(${fstype})`, e, target);
    }
    try {
      configure(fd);
      if (c.fsconfig(fd, FSCONFIG_CMD_CREATE, null, null, 0) < 0) {
        fsFail(fd, errno(), `fsconfig(create ${fstype})`, target);
      }
      const mfd = c.fsmount(fd, FSMOUNT_CLOEXEC, attrs);
      if (mfd < 0) fsFail(fd, errno(), "fsmount", target);
      try {
        const r = c.move_mount(mfd, cstr(""), AT_FDCWD, cstr(target), MOVE_MOUNT_F_EMPTY_PATH);
        if (r < 0) {
          const e = errno();
          throw new MountError("move_mount", e, target);
        }
      } finally {
        c.close(mfd);
      }
    } finally {
      c.close(fd);
    }
  }

  mountOverlay(target: string, o: OverlayMountOptions): Promise<void> {
    validateOverlay(target, o);
    // "lowerdir+" appends below the layers given so far: top first.
    const dirs: [key: string, path: string][] = [];
    for (let i = o.lower.length - 1; i >= 0; i--) dirs.push(["lowerdir+", o.lower[i]]);
    if (o.upper !== undefined) dirs.push(["upperdir", o.upper]);
    if (o.work !== undefined) dirs.push(["workdir", o.work]);
    const attrs = o.readonly ? MOUNT_ATTR_RDONLY : 0;
    const flags = (ctx: number) => {
      if (o.userxattr ?? true) setString(ctx, "userxattr", null);
    };
    const byFd = this.naming === "fd";
    // Each lower by its full path would give the overlay a line in
    // mountinfo too long to read for Go programs (runc among them): then
    // every lower gets a short link name, and mountinfo shows those.
    const short = !mountinfoFits(dirs);
    if (byFd && !short) {
      this.#mount("overlay", target, attrs, (ctx) => {
        for (const [key, path] of dirs) setDirFd(ctx, key, path);
        flags(ctx);
      });
      return Promise.resolve();
    }
    // Strings: a path of 256 bytes or more is named by a short link,
    // relative to the link directory made this thread's working directory.
    const links: Link[] = [];
    const values = dirs.map(([key, path]): [string, string | undefined, string] => {
      const lower = key === "lowerdir+";
      if (byFd && !lower) return [key, undefined, path]; // by fd after all
      if (!(short && lower) && shorterThan(path, FSCONFIG_STRING_MAX)) return [key, path, path];
      const name = links.length.toString(36);
      links.push({ name, target: path });
      return [key, name, path];
    });
    const mount = (at: string) =>
      this.#mount("overlay", at, attrs, (ctx) => {
        for (const [key, value, path] of values) {
          if (value === undefined) setDirFd(ctx, key, path);
          else setString(ctx, key, value, path);
        }
        flags(ctx);
      });
    if (links.length === 0) mount(target);
    else {
      const at = absolute(target);
      withLinkDir(links, (dir) => inThreadCwd(dir, () => mount(at)));
    }
    return Promise.resolve();
  }

  mountTmpfs(target: string, o: TmpfsMountOptions = {}): Promise<void> {
    this.#mount("tmpfs", target, 0, (ctx) => {
      for (const kv of tmpfsData(o)) {
        const i = kv.indexOf("=");
        setString(ctx, kv.slice(0, i), kv.slice(i + 1), target);
      }
    });
    return Promise.resolve();
  }

  unmount(target: string): Promise<boolean> {
    return Promise.resolve(umountFfi(target));
  }
}

let threadFsPrivate = false;

/**
 * Runs `fn` with the calling thread's working directory set to `dir`, after
 * making the thread's fs_struct private so that other threads keep theirs.
 */
function inThreadCwd<T>(dir: string, fn: () => T): T {
  const c = libc();
  if (!threadFsPrivate) {
    check(c.unshare(CLONE_FS), "unshare(CLONE_FS)");
    threadFsPrivate = true;
  }
  const saved = check(c.open(cstr("."), O_PATH | O_DIRECTORY | O_CLOEXEC, 0), "open", ".");
  try {
    const d = check(c.open(cstr(dir), O_PATH | O_DIRECTORY | O_CLOEXEC, 0), "open", dir);
    try {
      check(c.fchdir(d), "fchdir", dir);
    } finally {
      c.close(d);
    }
    try {
      return fn();
    } finally {
      check(c.fchdir(saved), "fchdir", "(previous working directory)");
    }
  } finally {
    c.close(saved);
  }
}

/** Classic mount(2): options in one page, long lists through short symlinks. */
class Mount2Backend implements MountBackend {
  readonly name = "mount2" as const;

  #mount(source: string, fstype: string, target: string, flags: number, data: string): void {
    const r = libc().mount(cstr(source), cstr(target), cstr(fstype), BigInt(flags), cstr(data));
    if (r < 0) {
      const e = errno();
      throw new MountError(`mount(${fstype})`, e, target);
    }
  }

  mountOverlay(target: string, o: OverlayMountOptions): Promise<void> {
    validateOverlay(target, o);
    const { data, links } = overlayData(o);
    const flags = o.readonly ? MS_RDONLY : 0;
    if (!links) {
      this.#mount("overlay", "overlay", target, flags, data);
      return Promise.resolve();
    }
    // The target is absolute, the layers are relative to the link dir.
    const at = absolute(target);
    withLinkDir(
      links,
      (dir) => inThreadCwd(dir, () => this.#mount("overlay", "overlay", at, flags, data)),
    );
    return Promise.resolve();
  }

  mountTmpfs(target: string, o: TmpfsMountOptions = {}): Promise<void> {
    this.#mount("tmpfs", "tmpfs", target, 0, tmpfsData(o).join(","));
    return Promise.resolve();
  }

  unmount(target: string): Promise<boolean> {
    return Promise.resolve(umountFfi(target));
  }
}

const errnoByText: [RegExp, number][] = [
  [/permission denied|operation not permitted|must be superuser/i, 1],
  [/no such file/i, 2],
  [/busy/i, 16],
  [/not mounted|not a mount ?point/i, 22],
  [/unknown filesystem|no such device/i, 19],
  [/name too long/i, 36],
];

function guessErrno(stderr: string): number {
  for (const [re, n] of errnoByText) if (re.test(stderr)) return n;
  return EINVAL;
}

/** mount(8)/umount(8) as child processes, for when FFI is not permitted. */
class CommandBackend implements MountBackend {
  readonly name = "command" as const;

  async #run(args: string[], what: string, path: string, cwd?: string): Promise<void> {
    const out = await commandOutput(args[0], {
      args: args.slice(1),
      cwd,
      // libmount 2.39+ would give the options to fsconfig(2) one string
      // each, `lowerdir=` whole, and fail past 255 bytes; mount(2) takes a
      // page. (2.38 always uses mount(2) and ignores this.)
      env: { LIBMOUNT_FORCE_MOUNT2: "always" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    });
    if (!out.success) {
      const text = new TextDecoder().decode(out.stderr);
      throw new MountError(what, guessErrno(text), path, text);
    }
  }

  async mountOverlay(target: string, o: OverlayMountOptions): Promise<void> {
    validateOverlay(target, o);
    const { data, links } = overlayData(o);
    const args = ["mount", "-t", "overlay", "-o", data, ...(o.readonly ? ["-r"] : [])];
    if (!links) return await this.#run([...args, "overlay", target], "mount(8) overlay", target);
    const at = absolute(target);
    await withLinkDirAsync(
      links,
      (dir) => this.#run([...args, "overlay", at], "mount(8) overlay", target, dir),
    );
  }

  async mountTmpfs(target: string, o: TmpfsMountOptions = {}): Promise<void> {
    const args = ["mount", "-t", "tmpfs", "-o", tmpfsData(o).join(","), "tmpfs", target];
    await this.#run(args, "mount(8) tmpfs", target);
  }

  async unmount(target: string): Promise<boolean> {
    try {
      await this.#run(["umount", target], "umount(8)", target);
      return true;
    } catch (e) {
      if (!(e instanceof MountError)) throw e;
      if (e.errno === EINVAL || e.errno === ENOENT) return false;
      if (e.errno !== EBUSY) throw e;
    }
    await this.#run(["umount", "-l", target], "umount(8) -l", target);
    return true;
  }
}

/** The backend picked at run time and why. */
export interface MountBackendChoice {
  /** The backend itself. */
  backend: MountBackend;
  /** Its name. */
  name: MountBackendName;
  /** Why it was picked, in a sentence (for `strata supported --why`). */
  reason: string;
}

/** Options of {@linkcode mountBackend}. */
export interface MountBackendOptions {
  /**
   * For `fsopen`: how layers are handed to overlayfs. Default: as file
   * descriptors where the kernel takes them (asked once per process), else
   * as paths.
   */
  naming?: LayerNaming;
}

/**
 * Returns the backend of that name (no probing; for `fsopen`, whether the
 * kernel takes layers as file descriptors is asked on its first overlay,
 * unless `options.naming` says).
 *
 * @example Usage
 * ```ts
 * import { mountBackend } from "./mount.ts";
 * console.log(mountBackend("command").name); // "command"
 * console.log(mountBackend("fsopen", { naming: "path" }).name); // "fsopen"
 * ```
 */
export function mountBackend(
  name: MountBackendName,
  options: MountBackendOptions = {},
): MountBackend {
  switch (name) {
    case "fsopen":
      return new FsopenBackend(options.naming);
    case "mount2":
      return new Mount2Backend();
    case "command":
      return new CommandBackend();
    default:
      throw new TypeError(`Unknown mount backend ${JSON.stringify(name)}`);
  }
}

function kernelAtLeast(major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(osRelease());
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

/**
 * What {@linkcode chooseMountBackend} hands out when FFI is permitted: a
 * mount whose options fit in one page (every tmpfs, an overlay of a few
 * dozen layers) is one `mount(2)` call, as containerd mounts; only an
 * overlay whose lower list is longer needs the new mount API (or, on an
 * older kernel, short symlink names), and only then is the kernel probed
 * for it. A warm `strata run` so neither probes nor binds the new API's
 * four calls, and makes one system call per mount instead of a dozen.
 */
class OnePageFirstBackend implements MountBackend {
  readonly #mount2 = new Mount2Backend();
  #probed?: MountBackendChoice;

  /** The backend for what does not fit in one page (probed on first use). */
  get probed(): MountBackendChoice {
    return this.#probed ??= probeNewApi();
  }

  get name(): MountBackendName {
    return this.probed.name;
  }

  mountOverlay(target: string, o: OverlayMountOptions): Promise<void> {
    validateOverlay(target, o);
    if (overlayData(o).links !== undefined) return this.probed.backend.mountOverlay(target, o);
    return this.#explained(
      () => this.#mount2.mountOverlay(target, o),
      (b) => b.mountOverlay(target, o),
    );
  }

  mountTmpfs(target: string, o: TmpfsMountOptions = {}): Promise<void> {
    return this.#explained(
      () => this.#mount2.mountTmpfs(target, o),
      (b) => b.mountTmpfs(target, o),
    );
  }

  /**
   * Mounts with `mount(2)`; when that fails, once more through the new mount
   * API where there is one: `mount(2)` gives an errno alone, `fsopen` also
   * the kernel's own words ("overlayfs: filesystem on ... not supported as
   * upperdir"), which the error then carries.
   */
  async #explained(
    mount2: () => Promise<void>,
    again: (backend: MountBackend) => Promise<void>,
  ): Promise<void> {
    try {
      await mount2();
    } catch (e) {
      if (this.probed.name !== "fsopen") throw e;
      await again(this.probed.backend);
    }
  }

  unmount(target: string): Promise<boolean> {
    return Promise.resolve(umountFfi(target));
  }
}

/** Parses `STRATA_MOUNT_BACKEND`: `fsopen`, `fsopen:fd`, `fsopen:path`, `mount2` or `command`. */
function forcedBackend(value: string): MountBackend {
  const [name, naming] = value.split(":", 2);
  const known = naming === undefined
    ? name === "fsopen" || name === "mount2" || name === "command"
    : name === "fsopen" && (naming === "fd" || naming === "path");
  if (!known) {
    throw new TypeError(
      `Unknown mount backend ${JSON.stringify(value)} in STRATA_MOUNT_BACKEND ` +
        "(fsopen, fsopen:fd, fsopen:path, mount2 or command)",
    );
  }
  return mountBackend(name as MountBackendName, { naming: naming as LayerNaming | undefined });
}

function probe(): MountBackendChoice {
  const forced = getEnv("STRATA_MOUNT_BACKEND");
  if (forced) {
    const backend = forcedBackend(forced);
    return { backend, name: backend.name, reason: `STRATA_MOUNT_BACKEND=${forced} asks for it` };
  }
  if (!ffiAvailable()) {
    return {
      backend: new CommandBackend(),
      name: "command",
      reason: "FFI is not permitted (no --allow-ffi), so mount(8) and umount(8) are run instead",
    };
  }
  const backend = new OnePageFirstBackend();
  return {
    backend,
    get name() {
      return backend.probed.name;
    },
    get reason() {
      return `${backend.probed.reason}; mounts whose options fit in one page (every tmpfs, ` +
        "an overlay of a few dozen layers) take one mount(2) call";
    },
  };
}

/** What the kernel said about `FSCONFIG_SET_FD` for "lowerdir+" (asked once per process). */
let namingAnswer: LayerNaming | undefined;

/**
 * Asks overlayfs whether it takes a layer as a file descriptor: one
 * `FSCONFIG_SET_FD` of `/` on an fs context that is dropped again. Kernels
 * before 6.13 refuse it with EINVAL (the option is a string there). Where no
 * fs context can be made yet (no mount privilege), the kernel version tells.
 */
function layerNaming(ctx?: number): LayerNaming {
  if (namingAnswer !== undefined) return namingAnswer;
  const c = libc();
  const own = ctx === undefined ? c.fsopen(cstr("overlay"), FSOPEN_CLOEXEC) : ctx;
  if (own < 0) return kernelAtLeast(6, 13) ? "fd" : "path";
  try {
    const root = c.open(cstr("/"), O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (root < 0) return "path";
    try {
      const r = c.fsconfig(own, FSCONFIG_SET_FD, cstr("lowerdir+"), null, root);
      return namingAnswer = r === 0 ? "fd" : "path";
    } finally {
      c.close(root);
    }
  } finally {
    if (ctx === undefined) c.close(own);
  }
}

const NAMING_REASON: Record<LayerNaming, string> = {
  fd: "each layer, upper and work directory handed over as an O_PATH file descriptor " +
    "(FSCONFIG_SET_FD, Linux 6.13+): no path string reaches the kernel, so no limit on path " +
    "length or layer count below 500 layers",
  path: "layers handed over as path strings (this kernel takes no file descriptor for them, " +
    "Linux < 6.13); a path of 256 bytes or more, past fsconfig's string limit, through a short " +
    "symlink",
};

/** Which way long overlays are mounted: the new mount API when the kernel takes `lowerdir+`. */
function probeNewApi(): MountBackendChoice {
  const c = libc();
  const fd = c.fsopen(cstr("overlay"), FSOPEN_CLOEXEC);
  if (fd < 0) {
    const e = errno();
    const why = new ErrnoError("fsopen(overlay)", e).message;
    if (e === EPERM && kernelAtLeast(6, 8)) {
      const naming = layerNaming();
      return {
        backend: new FsopenBackend(naming),
        name: "fsopen",
        reason: `new mount API on Linux ${osRelease()} (>= 6.8), ${NAMING_REASON[naming]}; ` +
          `probing it said ${why}: no mount privilege here yet (run as root or inside a user namespace)`,
      };
    }
    return {
      backend: new Mount2Backend(),
      name: "mount2",
      reason: `the new mount API is unusable (${why}), so classic mount(2) is used`,
    };
  }
  try {
    if (layerNaming(fd) === "fd") {
      return {
        backend: new FsopenBackend("fd"),
        name: "fsopen",
        reason:
          `new mount API (Linux ${osRelease()}): one "lowerdir+" per layer, ${NAMING_REASON.fd}`,
      };
    }
    const r = c.fsconfig(fd, FSCONFIG_SET_STRING, cstr("lowerdir+"), cstr("/"), 0);
    if (r < 0) {
      const e = errno();
      return {
        backend: new Mount2Backend(),
        name: "mount2",
        reason: `overlayfs does not take "lowerdir+" (${
          new ErrnoError("fsconfig", e).code
        }; Linux < 6.8), so classic mount(2) is used with short symlink names for long layer lists`,
      };
    }
  } finally {
    c.close(fd);
  }
  return {
    backend: new FsopenBackend("path"),
    name: "fsopen",
    reason:
      `new mount API (Linux ${osRelease()}): one "lowerdir+" per layer, ${NAMING_REASON.path}`,
  };
}

let chosen: MountBackendChoice | undefined;

/**
 * Picks the mount backend once per process: the new mount API when `fsopen`
 * works and overlayfs takes `lowerdir+` (each layer as a file descriptor
 * where the kernel takes one, else as a path), else classic `mount(2)`, else
 * (no FFI permission) `mount(8)`. `STRATA_MOUNT_BACKEND` forces one
 * (`fsopen`, `fsopen:fd`, `fsopen:path`, `mount2`, `command`). With FFI,
 * what fits in one page of mount options is mounted with `mount(2)` whatever
 * the choice, and the kernel is probed for the new API only when a longer
 * overlay comes (or `name` or `reason` is read).
 *
 * @example Usage
 * ```ts ignore
 * import { chooseMountBackend } from "./mount.ts";
 * const { name, reason } = chooseMountBackend();
 * console.log(`${name}: ${reason}`);
 * ```
 */
export function chooseMountBackend(): MountBackendChoice {
  chosen ??= probe();
  return chosen;
}

/**
 * Tells whether a path is a mountpoint, from `/proc/self/mountinfo`.
 *
 * @example Usage
 * ```ts
 * import { isMountpoint } from "./mount.ts";
 * console.log(isMountpoint("/proc")); // true
 * ```
 */
export function isMountpoint(path: string): boolean {
  const text = readProcText("/proc/self/mountinfo");
  return text.split("\n").some((l) => unescapeMountinfo(l.split(" ")[4] ?? "") === path);
}

/** One line of `/proc/self/mountinfo`, the fields strata reads. */
export interface MountInfo {
  /** Where it is mounted. */
  mountpoint: string;
  /** Filesystem type, for example `overlay`. */
  fstype: string;
  /** Mount source. */
  source: string;
  /** Superblock options (for overlay: lowerdir, upperdir, ...). */
  superOptions: string;
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\(\d{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Finds the mount that holds `path` (the longest mountpoint that is a prefix
 * of its real path).
 *
 * @example Usage
 * ```ts
 * import { mountOf } from "./mount.ts";
 * console.log((await mountOf("/proc/self")).fstype); // "proc"
 * ```
 */
export async function mountOf(path: string): Promise<MountInfo> {
  const real = await realPath(path);
  const text = readProcText("/proc/self/mountinfo");
  let best: MountInfo | undefined;
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    const sep = f.indexOf("-");
    const mp = unescapeMountinfo(f[4]);
    if (!(real === mp || real.startsWith(mp === "/" ? "/" : mp + "/"))) continue;
    // Later lines are mounted later, so on a tie the later one hides the earlier.
    if (!best || mp.length >= best.mountpoint.length) {
      best = {
        mountpoint: mp,
        fstype: f[sep + 1],
        source: unescapeMountinfo(f[sep + 2]),
        superOptions: f[sep + 3] ?? "",
      };
    }
  }
  if (!best) throw new Error(`No mount holds ${path} (${real}) in /proc/self/mountinfo`);
  return best;
}

/**
 * Lists the mountpoints at or below `path` (real path), deepest first.
 *
 * @example Usage
 * ```ts
 * import { mountsBelow } from "./mount.ts";
 * console.log(await mountsBelow("/proc")); // ["/proc/sys/fs/binfmt_misc", ..., "/proc"]
 * ```
 */
export async function mountsBelow(path: string): Promise<string[]> {
  let real: string;
  try {
    real = await realPath(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const text = readProcText("/proc/self/mountinfo");
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f.length < 5) continue;
    const mp = unescapeMountinfo(f[4]);
    if (mp === real || mp.startsWith(real === "/" ? "/" : real + "/")) out.add(mp);
  }
  return [...out].sort((a, b) => b.length - a.length);
}

/**
 * Unmounts everything at or below `path`, deepest first (lazily when busy):
 * the leftovers of a process that crashed outside a private mount namespace.
 * Returns the mountpoints unmounted.
 *
 * @example Usage
 * ```ts ignore
 * import { unmountBelow } from "./mount.ts";
 * await unmountBelow("/var/lib/strata/tmp/0123456789abcdef");
 * ```
 */
export async function unmountBelow(path: string): Promise<string[]> {
  const mps = await mountsBelow(path);
  if (mps.length === 0) return [];
  const backend = chooseMountBackend().backend;
  const done: string[] = [];
  for (const mp of mps) {
    // A path may carry several stacked mounts; unmount until it is none.
    for (let i = 0; i < 16 && await backend.unmount(mp); i++) done.push(mp);
  }
  return done;
}
