/**
 * The synchronous heart of the layer applicator: a `TarSink` that writes
 * each entry as the parser produces it, with `*at()` calls confined to the
 * root. Used by `TarApplicator` on the calling thread or in a worker
 * (`apply_worker.ts`); see `applicator.ts` for the policy it implements.
 *
 * @module
 */
import {
  AT,
  close,
  fchmod,
  fchmodat,
  fchown,
  fchownat,
  fgetxattr,
  flistxattr,
  fsetxattr,
  ftruncate,
  futimens,
  linkat,
  lsetxattrAt,
  makedev,
  mkdirat,
  mknodat,
  O,
  openat,
  openat2,
  pwriteAll,
  read,
  readDir,
  readlinkat,
  removeAt,
  RESOLVE,
  S,
  setxattrAt,
  type Stat,
  statx,
  symlinkat,
  unlinkat,
  utimensat,
  writeAll,
} from "../sys/fs.ts";
import type * as NodeCrypto from "node:crypto";
import { ErrnoError, errnoName, libc } from "../sys/libc.ts";
import { confine, isWithin, joinPath, splitPath } from "./path.ts";
import type { TarHeader, TarSink } from "./tar.ts";
import type { FileDigest, TreeRecord } from "./record.ts";
import type { ApplyOptions, WhiteoutMode } from "./applicator.ts";
import {
  ApplyError,
  DamagedLayerError,
  DeviceNotPermittedError,
  EntryWriteError,
  HardlinkTargetError,
  type SerializedError,
  WhiteoutError,
} from "./errors.ts";

/** What a writer needs from {@linkcode ApplyOptions} (all of it but the threading choices). */
export type WriterOptions = Omit<ApplyOptions, "threads" | "workers" | "expectedSize">;

/** Messages to the worker (`apply_worker.ts`). */
export type ToWorker =
  | { t: "warm"; crypto: boolean }
  | { t: "init"; root: string; options: WriterOptions }
  | { t: "data"; buf: Uint8Array }
  | { t: "end" }
  | { t: "abort" };

/** Messages from the worker. */
export type FromWorker =
  | { t: "ack"; buf: Uint8Array }
  | { t: "warn"; m: string }
  | {
    t: "done";
    entries: number;
    bytes: number;
    warnings: string[];
    dependsOnLowers: boolean;
    ownersLost: boolean;
    fileDigests?: Map<bigint, FileDigest>;
  }
  | { t: "record"; record: TreeRecord }
  | { t: "record-error"; e: SerializedError }
  | { t: "error"; e: SerializedError }
  | { t: "aborted" };

const WH = ".wh.";
const OPQ = ".wh..wh..opq";
const EMPTY = new Uint8Array(0);
const YES = new TextEncoder().encode("y");

const EPERM = 1, ENOENT = 2, EACCES = 13, EEXIST = 17, ENOTDIR = 20, EINVAL = 22, ELOOP = 40;
const EOPNOTSUPP = 95;

const DIR_OPEN = O.PATH | O.DIRECTORY;
const IN_ROOT = RESOLVE.IN_ROOT | RESOLVE.NO_MAGICLINKS;

interface DeferredDir {
  mode: number;
  uid: number;
  gid: number;
  atime: number;
  mtime: number;
  atimeNsec?: number;
  mtimeNsec?: number;
  xattrs?: Record<string, Uint8Array>;
  ino: bigint;
}

class Fail {
  constructor(readonly errno: number, readonly call: string) {}
}

/**
 * The synchronous heart of the applicator: a {@linkcode TarSink} that
 * writes each entry as the parser produces it. One instance per layer.
 *
 * @example Usage
 * ```ts ignore
 * import { LayerWriter } from "./writer.ts";
 * import { TarParser } from "./tar.ts";
 * const w = new LayerWriter("/tmp/root", { whiteouts: "direct" });
 * try {
 *   const p = new TarParser(w);
 *   p.push(Deno.readFileSync("layer.tar"));
 *   p.end();
 *   w.finish();
 * } finally {
 *   w.dispose();
 * }
 * ```
 */
export class LayerWriter implements TarSink {
  readonly #root: string;
  readonly #rootFd: number;
  readonly #rootReal: string;
  readonly #rootPrefix: string;
  readonly #mode: WhiteoutMode;
  readonly #opaqueName: string;
  readonly #devices: "skip" | "error";
  readonly #layer?: string;
  readonly #onWarning?: (m: string) => void;
  readonly #lowerPaths: string[];
  #lowerFds: number[] | undefined;
  readonly #euid: number;

  /** Parent dir fds (O_PATH) by confined path; "" is the root (never closed here). */
  readonly #parents = new Map<string, number>();
  /** Something was removed: drop all cached parents before the next entry. */
  #stale = false;
  /** Every path this layer wrote (entries and their implied parents). */
  readonly #created = new Set<string>();
  /**
   * Direct mode: lower files copied up for a hardlink, and the directories
   * implied on their way, until an entry of this layer takes the path. They
   * are lower content: a later whiteout or opaque marker over them removes
   * them (the link keeps the inode), as merged mode's overlay view does.
   */
  readonly #copiedUp = new Set<string>();
  /** Direct mode: a copy-up is making directories (they go to #copiedUp). */
  #copyingUp = false;
  /** Merged mode: directories whose metadata #keepDirMeta has looked at. */
  readonly #seenDirs = new Set<string>();
  /** Every ancestor of a path in #created. */
  readonly #createdBelow = new Set<string>([""]);
  /** Paths this layer whited out (direct mode: a dir written there later becomes opaque). */
  readonly #whiteouts = new Set<string>();
  /** Direct mode: directories this layer made opaque (lower content below them is hidden). */
  readonly #opaqueDirs = new Set<string>();
  /** Directories whose metadata is applied at the end. */
  readonly #dirs = new Map<string, DeferredDir>();
  /** Merged mode: opaque dirs to empty of lower content at the end. */
  readonly #pendingOpaque: string[] = [];
  readonly #warned = new Set<string>();
  /** Warnings so far (one per kind). */
  readonly warnings: string[] = [];

  /**
   * The tree written depends on what lies below it, so the same layer on
   * other parents could give another tree: direct mode made an implied
   * directory (its metadata is the topmost lower's, or 0755 root when none
   * holds it) or copied a lower file up; merged mode wrote below a
   * directory this layer did not name, applied a whiteout or an opaque
   * marker, or replaced something it did not write.
   */
  dependsOnLowers = false;
  /**
   * Some owner could not be set (ids this user namespace does not map): the
   * tree holds the applier's ids where the layer named others, so it is this
   * mapping's tree, not the layer's (a cache must not share it with
   * mappings that can set them).
   */
  ownersLost = false;
  /** Entries seen. */
  entries = 0;
  /** File bytes written. */
  bytes = 0;
  #disposed = false;
  #fd = -1;
  #hdr: TarHeader | undefined;
  #sparse = false;
  /**
   * With `fileDigests` asked for: the sha256 of each regular file written
   * whole (not sparse), by inode; a copied-up file has none.
   */
  readonly fileDigests: Map<bigint, FileDigest> | undefined;
  readonly #createHash: typeof NodeCrypto.createHash | undefined;
  /** The current file's content hash (with `fileDigests`). */
  #hash: NodeCrypto.Hash | undefined;

  /**
   * Opens `root` (which must exist) for one layer; throws
   * {@linkcode EntryWriteError} when it cannot. `createHash` (node:crypto's)
   * is needed for `fileDigests`, which it is passed apart from the options
   * since a worker receives those as a message.
   */
  constructor(root: string, o: WriterOptions, createHash?: typeof NodeCrypto.createHash) {
    this.#root = root;
    this.#mode = o.whiteouts ?? "direct";
    this.#opaqueName = `${o.overlayXattr ?? "user"}.overlay.opaque`;
    this.#devices = o.devices ?? "skip";
    this.#layer = o.layer;
    this.#onWarning = o.onWarning;
    this.#lowerPaths = o.lowerDirs ?? [];
    if ((o.fileDigests || o.record) && this.#mode === "direct") {
      if (!createHash) throw new TypeError("fileDigests needs createHash");
      this.#createHash = createHash;
      this.fileDigests = new Map();
    }
    this.#euid = libc().geteuid();
    const fd = openat(AT.FDCWD, root, DIR_OPEN, 0);
    if (fd < 0) {
      throw new EntryWriteError(
        `cannot open the root ${root}`,
        undefined,
        o.layer,
        { cause: new ErrnoError("open", -fd, root) },
      );
    }
    this.#rootFd = fd;
    const real = readlinkat(AT.FDCWD, `/proc/self/fd/${fd}`);
    this.#rootReal = typeof real === "string" ? real : root;
    this.#rootPrefix = this.#rootReal === "/" ? "/" : `${this.#rootReal}/`;
    // Probe openat2 once, so an old kernel gets a clear message instead of
    // an error on the first entry.
    const probe = openat2(fd, ".", DIR_OPEN, 0, IN_ROOT);
    if (probe < 0) {
      close(fd);
      throw new EntryWriteError(
        "openat2(RESOLVE_IN_ROOT) is not available (Linux 5.6 or later is needed)",
        undefined,
        o.layer,
        { cause: new ErrnoError("openat2", -probe, root) },
      );
    }
    close(probe);
  }

  // ---------------------------------------------------------------- errors

  #fail(e: unknown, entry = this.#hdr?.name): never {
    if (e instanceof ApplyError) throw e;
    if (e instanceof Fail) {
      const err = new ErrnoError(e.call, e.errno, entry);
      throw new EntryWriteError(`${e.call}: ${err.code}`, entry, this.#layer, { cause: err });
    }
    throw new EntryWriteError(String((e as Error)?.message ?? e), entry, this.#layer, {
      cause: e,
    });
  }

  /** A parser warning (unknown entry types and the like), passed on once per text. */
  warn(message: string): void {
    this.#warn(`parser:${message}`, message);
  }

  #warn(kind: string, message: string): void {
    if (this.#warned.has(kind)) return;
    this.#warned.add(kind);
    const m = `${this.#layer ? `layer ${this.#layer}: ` : ""}${message}`;
    this.warnings.push(m);
    this.#onWarning?.(m);
  }

  // --------------------------------------------------------- path resolution

  /**
   * Opens `path` inside the root: `openat2(RESOLVE_IN_ROOT)` on the root fd.
   * Returns the fd or `-errno`. As a second line of defence (it must never
   * fire), the opened directory's path is checked to lie below the root
   * before anything is created or removed through it.
   */
  #open(path: string, flags: number): number {
    const fd = openat2(this.#rootFd, path, flags, 0, IN_ROOT);
    if (fd < 0 || (flags & O.DIRECTORY) === 0) return fd;
    const real = readlinkat(AT.FDCWD, `/proc/self/fd/${fd}`);
    if (
      typeof real === "string" && real !== this.#rootReal &&
      !real.startsWith(this.#rootPrefix)
    ) {
      close(fd);
      throw new EntryWriteError(
        `${JSON.stringify(path)} resolved to ${real}, outside the root ${this.#rootReal}; refusing`,
        this.#hdr?.name,
        this.#layer,
      );
    }
    return fd;
  }

  /** Opens (cached) the directory `dir` inside the root; creates it (and its parents) when `create`. */
  #parent(dir: string, create: boolean): number {
    if (dir === "") return this.#rootFd;
    const cached = this.#parents.get(dir);
    if (cached !== undefined) return cached;
    if (this.#mode === "merged") this.#keepDirMeta(dir);
    let fd = this.#open(dir, DIR_OPEN);
    if (fd < 0) {
      if (!create || (fd !== -ENOENT && fd !== -ENOTDIR)) throw new Fail(-fd, "openat2");
      fd = this.#makeParents(dir);
    }
    this.#parents.set(dir, fd);
    return fd;
  }

  /**
   * Merged mode, before anything is written below `dir`, for each directory
   * on the way that this layer did not make:
   * - a lower layer's symlink or file there is replaced by a directory, never
   *   followed: what direct mode does (the layer's own dir has nothing there),
   *   and docker, podman and containerd, which apply into an empty upper dir
   *   (umoci follows such a symlink; see tests/conformance_test.ts);
   * - a lower directory's metadata is remembered, so that finish() puts it
   *   back: copy-up and new or removed children change its mtime, which the
   *   image never asked for (direct mode gives such an implied directory its
   *   lower metadata, and umoci restores a parent after each entry).
   */
  #keepDirMeta(dir: string): void {
    let prefix = "";
    for (const part of dir.split("/")) {
      const pdir = prefix;
      prefix = joinPath(prefix, part);
      if (this.#seenDirs.has(prefix)) continue;
      this.#seenDirs.add(prefix);
      if (this.#dirs.has(prefix) || this.#created.has(prefix)) continue;
      const pfd = this.#open(pdir || ".", DIR_OPEN);
      if (pfd < 0) return; // missing: #makeParents makes it, #implied sets it
      try {
        const st = statx(pfd, part, AT.SYMLINK_NOFOLLOW);
        if (typeof st === "number") return;
        this.dependsOnLowers = true; // a lower's, not named by this layer
        if ((st.mode & S.IFMT) !== S.IFDIR) {
          this.#clear(pfd, part, prefix, false);
          close(this.#makeParents(prefix)); // an implied directory, as in direct mode
          continue;
        }
        this.#dirs.set(prefix, lowerDirMeta(st, st.ino));
      } finally {
        close(pfd);
      }
    }
  }

  #dropParents(): void {
    for (const fd of this.#parents.values()) close(fd);
    this.#parents.clear();
  }

  /**
   * Forgets cached fds for `path` and everything below it (it was removed or
   * replaced) now, and every other cached fd before the next entry: a cached
   * path may reach the removed directory through a symlink ("a/b" with "a"
   * -> "x", then "x" replaced). The fds of callers in flight (the removed
   * path's parent) stay open until then. Removals are rare; reopening is cheap.
   */
  #invalidate(path: string): void {
    for (const [p, fd] of this.#parents) {
      if (isWithin(p, path)) {
        close(fd);
        this.#parents.delete(p);
      }
    }
    this.#stale = true;
    // Directories written there are gone: their metadata must not land on
    // whatever takes the path later.
    for (const p of this.#dirs.keys()) if (isWithin(p, path)) this.#dirs.delete(p);
    // So are copies made there: a later whiteout must not remove what takes the path.
    for (const p of this.#copiedUp) if (isWithin(p, path)) this.#copiedUp.delete(p);
  }

  /**
   * Creates the missing directories of `dir` (a tar may omit parents). In
   * direct mode they take the metadata of the topmost lower layer holding
   * them, so the overlay shows the lower directory unchanged; else 0755 root.
   */
  #makeParents(dir: string): number {
    const parts = dir.split("/");
    let prefix = "";
    let parentFd = this.#rootFd;
    let owned = -1;
    try {
      for (const part of parts) {
        const path = joinPath(prefix, part);
        let fd = this.#open(path, DIR_OPEN);
        if (fd === -ENOTDIR || fd === -ENOENT) {
          // Missing, or something else is there: a whiteout device (this
          // layer's own) is replaced; a symlink or file is not a directory.
          const st = statx(parentFd, part, AT.SYMLINK_NOFOLLOW);
          if (typeof st !== "number") {
            if ((st.mode & S.IFMT) === S.IFCHR && st.rdevMajor === 0 && st.rdevMinor === 0) {
              this.#unlink(parentFd, part, path);
            } else {
              throw new Fail(ENOTDIR, "openat2");
            }
          }
          const r = mkdirat(parentFd, part, 0o700);
          if (r < 0 && r !== -EEXIST) throw new Fail(-r, "mkdirat");
          fd = this.#open(path, DIR_OPEN);
          if (fd < 0) throw new Fail(-fd, "openat2");
          this.#implied(fd, path);
        } else if (fd < 0) {
          throw new Fail(-fd, "openat2");
        }
        if (owned >= 0) close(owned);
        owned = fd;
        parentFd = fd;
        prefix = path;
      }
    } catch (e) {
      if (owned >= 0) close(owned);
      throw e;
    }
    return owned;
  }

  /** Metadata of an implied directory `path`, just created and open as `fd`. */
  #implied(fd: number, path: string): void {
    if (this.#copyingUp) this.#copiedUp.add(path);
    else this.#markCreated(path);
    this.dependsOnLowers = true;
    // Direct mode: a directory made where this layer put a whiteout replaces
    // the lower one entirely. (Merged mode: overlayfs makes a directory
    // created over a whiteout opaque itself; the view refuses overlay xattrs.)
    if (this.#mode === "direct" && this.#whiteouts.has(path)) this.#setOpaque(fd, path);
    const lower = this.#mode === "direct" ? this.#lowerLookup(path) : undefined;
    const st = lower && typeof lower.stat !== "number" && (lower.stat.mode & S.IFMT) === S.IFDIR
      ? lower.stat
      : undefined;
    const mode = st ? st.mode & 0o7777 : 0o755;
    const uid = st?.uid ?? 0, gid = st?.gid ?? 0;
    // Else the time of the entry that implied it, so that applying the same
    // layer twice gives the same tree (and the same treeRecord).
    const h = this.#hdr;
    const mtime = st ? st.mtimeSec : h ? h.mtime : Date.now() / 1000;
    const nsec = st ? st.mtimeNsec : h?.mtimeNsec;
    const ino = statx(fd, "", AT.EMPTY_PATH);
    if (!this.#dirs.has(path) && typeof ino !== "number") {
      this.#dirs.set(path, {
        mode,
        uid,
        gid,
        atime: mtime,
        mtime,
        atimeNsec: nsec,
        mtimeNsec: nsec,
        ino: ino.ino,
      });
    }
  }

  #markCreated(path: string): void {
    this.#created.add(path);
    if (this.#copiedUp.size) this.#copiedUp.delete(path);
    let p = path;
    for (;;) {
      const i = p.lastIndexOf("/");
      if (i < 0) return;
      p = p.slice(0, i);
      if (this.#createdBelow.has(p)) return;
      this.#createdBelow.add(p);
    }
  }

  #unlink(dirfd: number, name: string, path: string): void {
    const r = unlinkat(dirfd, name, 0);
    if (r < 0 && r !== -ENOENT) throw new Fail(-r, "unlinkat");
    this.#invalidate(path);
  }

  /**
   * Removes whatever is at `name` in `dirfd` so that an entry can take its
   * place; keeps an existing directory when `keepDir` (a directory entry only
   * updates it). Returns true when a directory was kept.
   */
  #clear(dirfd: number, name: string, path: string, keepDir: boolean): boolean {
    const st = statx(dirfd, name, AT.SYMLINK_NOFOLLOW);
    if (typeof st === "number") {
      if (st === -ENOENT) return false;
      throw new Fail(-st, "statx");
    }
    const type = st.mode & S.IFMT;
    // Merged mode: what this layer did not write is a lower layer's.
    if (
      this.#mode === "merged" && !(keepDir && type === S.IFDIR) && !this.#created.has(path)
    ) this.dependsOnLowers = true;
    if (type === S.IFDIR) {
      if (keepDir) return true;
      const r = removeAt(dirfd, name);
      if (r < 0 && r !== -ENOENT) throw new Fail(-r, "remove");
      this.#invalidate(path);
      return false;
    }
    const r = unlinkat(dirfd, name, 0);
    if (r < 0 && r !== -ENOENT) throw new Fail(-r, "unlinkat");
    if (type === S.IFLNK) this.#invalidate(path);
    return false;
  }

  // ---------------------------------------------------------------- sink

  /** Creates (or replaces, or whites out) the entry `h`; a file stays open for its data. */
  entry(h: TarHeader): void {
    this.entries++;
    this.#hdr = h;
    // Bounded cache; dropped only here, between entries, so no call holds a closed fd.
    if (this.#stale || this.#parents.size > 64) {
      this.#dropParents();
      this.#stale = false;
    }
    this.#fd = -1;
    this.#sparse = false;
    this.#hash = undefined;
    try {
      if (h.name.includes("\0") || h.linkname?.includes("\0")) {
        throw new DamagedLayerError("name holds a NUL byte", h.name, this.#layer);
      }
      const path = confine(h.name);
      const [dir, base] = splitPath(path);
      if (base.startsWith(WH)) return this.#whiteout(dir, base);
      switch (h.type) {
        case "file":
          return this.#file(h, path, dir, base);
        case "directory":
          return this.#directory(h, path, dir, base);
        case "symlink":
          return this.#symlink(h, path, dir, base);
        case "hardlink":
          return this.#hardlink(h, path, dir, base);
        case "fifo":
        case "char":
        case "block":
          return this.#node(h, path, dir, base);
        default:
          this.#warn(
            `type:${(h as { type: string }).type}`,
            `skipped entry ${JSON.stringify(h.name)} of unsupported type ${
              (h as { type: string }).type
            }`,
          );
      }
    } catch (e) {
      this.#fail(e, h.name);
    }
  }

  /** Writes a piece of the current file (at `offset` for sparse files). */
  data(chunk: Uint8Array, offset: number): void {
    if (this.#fd < 0) return;
    // Sparse files: the parser gives each piece its offset in the real file;
    // pwrite leaves the holes as holes.
    const r = this.#sparse ? pwriteAll(this.#fd, chunk, offset) : writeAll(this.#fd, chunk);
    if (r < 0) this.#fail(new Fail(-r, "write"));
    this.#hash?.update(chunk);
    this.bytes += chunk.length;
  }

  /** Sets the current file's owner, mode, xattrs and times, and closes it. */
  entryEnd(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    const h = this.#hdr!;
    try {
      if (this.#sparse) {
        const r = ftruncate(fd, h.realSize ?? h.size);
        if (r < 0) throw new Fail(-r, "ftruncate");
      }
      const keep = this.#chown(fchown(fd, h.uid, h.gid), h, () => statx(fd, "", AT.EMPTY_PATH));
      const r = fchmod(fd, h.mode & keep);
      if (r < 0) throw new Fail(-r, "fchmod");
      if (h.xattrs) this.#xattrs(h.xattrs, (n, v) => fsetxattr(fd, n, v));
      const t = futimens(fd, atimeOf(h), h.mtime, atimeNsecOf(h), h.mtimeNsec);
      if (t < 0) throw new Fail(-t, "futimens");
      const hash = this.#hash;
      if (hash) {
        this.#hash = undefined;
        const st = statx(fd, "", AT.EMPTY_PATH);
        if (typeof st === "number") throw new Fail(-st, "statx");
        // By inode: a later inode of the same number (this one removed,
        // another file made) replaces it, or drops it (#forget).
        this.fileDigests!.set(st.ino, { size: st.size, sha256: hash.digest("hex") });
      }
    } catch (e) {
      this.#fail(e, h.name);
    } finally {
      close(fd);
    }
  }

  // ----------------------------------------------------------- entry kinds

  #file(h: TarHeader, path: string, dir: string, base: string): void {
    if (path === "") {
      throw new EntryWriteError("a file cannot replace the root", h.name, this.#layer);
    }
    const pfd = this.#parent(dir, true);
    const flags = O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW;
    let fd = openat(pfd, base, flags, 0o600);
    if (fd === -EEXIST) {
      // O_EXCL: never write through an existing file (it may be a hardlink
      // to another path) or a symlink; replace it.
      this.#clear(pfd, base, path, false);
      fd = openat(pfd, base, flags, 0o600);
    }
    if (fd < 0) throw new Fail(-fd, "openat");
    this.#fd = fd;
    this.#markCreated(path);
    this.#sparse = h.sparse !== undefined;
    if (this.#createHash && !this.#sparse) this.#hash = this.#createHash("sha256");
    else this.#forget(fd);
  }

  /** A regular file made here whose content is not hashed: no digest of an earlier inode of its number stands for it. */
  #forget(fd: number): void {
    if (!this.fileDigests) return;
    const st = statx(fd, "", AT.EMPTY_PATH);
    if (typeof st === "number") throw new Fail(-st, "statx");
    this.fileDigests.delete(st.ino);
  }

  #directory(h: TarHeader, path: string, dir: string, base: string): void {
    let ino: bigint;
    if (path === "") {
      const st = statx(this.#rootFd, "", AT.EMPTY_PATH);
      if (typeof st === "number") throw new Fail(-st, "statx");
      ino = st.ino;
    } else {
      const pfd = this.#parent(dir, true);
      let r = mkdirat(pfd, base, 0o700);
      if (r === -EEXIST) {
        if (!this.#clear(pfd, base, path, true)) r = mkdirat(pfd, base, 0o700);
        else r = 0;
      }
      if (r < 0) throw new Fail(-r, "mkdirat");
      const st = statx(pfd, base, AT.SYMLINK_NOFOLLOW);
      if (typeof st === "number") throw new Fail(-st, "statx");
      ino = st.ino;
      this.#markCreated(path);
      if (this.#mode === "direct" && this.#whiteouts.has(path)) {
        // `.wh.x` and a directory `x` in one layer: the directory replaces
        // the lower `x` entirely, which an overlay layer says with opacity.
        this.#withDir(path, (fd) => this.#setOpaque(fd, path));
      }
    }
    this.#dirs.set(path, {
      mode: h.mode & 0o7777,
      uid: h.uid,
      gid: h.gid,
      atime: atimeOf(h),
      mtime: h.mtime,
      atimeNsec: atimeNsecOf(h),
      mtimeNsec: h.mtimeNsec,
      xattrs: h.xattrs && Object.keys(h.xattrs).length ? h.xattrs : undefined,
      ino,
    });
  }

  #symlink(h: TarHeader, path: string, dir: string, base: string): void {
    if (path === "") {
      throw new EntryWriteError("a symlink cannot replace the root", h.name, this.#layer);
    }
    const pfd = this.#parent(dir, true);
    let r = symlinkat(h.linkname, pfd, base);
    if (r === -EEXIST) {
      this.#clear(pfd, base, path, false);
      r = symlinkat(h.linkname, pfd, base);
    }
    if (r < 0) throw new Fail(-r, "symlinkat");
    this.#markCreated(path);
    this.#chown(fchownat(pfd, base, h.uid, h.gid, AT.SYMLINK_NOFOLLOW), h);
    if (h.xattrs) this.#xattrs(h.xattrs, (n, v) => lsetxattrAt(pfd, base, n, v));
    this.#setTimes(pfd, base, h);
  }

  /** Sets the entry's times on `base` in `pfd` without following a symlink. */
  #setTimes(pfd: number, base: string, h: TarHeader): void {
    const t = utimensat(
      pfd,
      base,
      atimeOf(h),
      h.mtime,
      AT.SYMLINK_NOFOLLOW,
      atimeNsecOf(h),
      h.mtimeNsec,
    );
    if (t < 0) throw new Fail(-t, "utimensat");
  }

  #hardlink(h: TarHeader, path: string, dir: string, base: string): void {
    const target = confine(h.linkname);
    if (target === path) {
      // A link to itself (some tars write these) is a no-op if the file exists.
      if (
        path !== "" &&
        typeof statx(this.#parent(dir, false), base, AT.SYMLINK_NOFOLLOW) !== "number"
      ) {
        return;
      }
      throw new HardlinkTargetError(
        `target ${JSON.stringify(h.linkname)} is the entry itself`,
        h.name,
        this.#layer,
      );
    }
    if (path === "" || target === "") {
      throw new HardlinkTargetError(
        "a hardlink cannot be or point at the root",
        h.name,
        this.#layer,
      );
    }
    const [tdir, tbase] = splitPath(target);
    let tfd = this.#open(tdir || ".", DIR_OPEN);
    try {
      let st = tfd < 0 ? -ENOENT : statx(tfd, tbase, AT.SYMLINK_NOFOLLOW);
      if (st === -ENOENT || st === -ENOTDIR) {
        if (tfd >= 0) close(tfd);
        tfd = -1;
        // Direct mode: the target may live only in a lower layer; copy it up
        // so the link is a real one inside this layer (the seed wrote
        // hardlinks as symlinks, which changes what the file is).
        if (this.#mode === "direct" && this.#copyUp(target)) {
          tfd = this.#open(tdir || ".", DIR_OPEN);
          st = tfd < 0 ? tfd : statx(tfd, tbase, AT.SYMLINK_NOFOLLOW);
        }
      }
      if (typeof st === "number") {
        throw new HardlinkTargetError(
          `target ${JSON.stringify(h.linkname)} does not exist in the layer${
            this.#mode === "direct" && this.#lowerPaths.length ? " or its parents" : ""
          } (${errnoName(-st)})`,
          h.name,
          this.#layer,
        );
      }
      if (
        (st.mode & S.IFMT) === S.IFCHR && st.rdevMajor === 0 && st.rdevMinor === 0 &&
        this.#whiteouts.has(target) && !this.#created.has(target)
      ) {
        // This layer's whiteout, not a file: linking it would white out the
        // link's name too (merged mode finds nothing there).
        throw new HardlinkTargetError(
          `target ${JSON.stringify(h.linkname)} is whited out by this layer`,
          h.name,
          this.#layer,
        );
      }
      if ((st.mode & S.IFMT) === S.IFDIR) {
        throw new HardlinkTargetError(
          `target ${JSON.stringify(h.linkname)} is a directory`,
          h.name,
          this.#layer,
        );
      }
      const pfd = this.#parent(dir, true);
      // flags 0: a symlink target is linked itself, never followed.
      let r = linkat(tfd, tbase, pfd, base, 0);
      if (r === -EEXIST) {
        const same = statx(pfd, base, AT.SYMLINK_NOFOLLOW);
        if (typeof same !== "number" && same.ino === st.ino && same.dev === st.dev) {
          this.#markCreated(path);
          return; // already that file
        }
        this.#clear(pfd, base, path, false);
        r = linkat(tfd, tbase, pfd, base, 0);
      }
      if (r < 0) throw new Fail(-r, "linkat");
      this.#markCreated(path);
    } finally {
      if (tfd >= 0) close(tfd);
    }
  }

  #node(h: TarHeader, path: string, dir: string, base: string): void {
    if (path === "") {
      throw new EntryWriteError("a device cannot replace the root", h.name, this.#layer);
    }
    const pfd = this.#parent(dir, true);
    const type = h.type === "fifo" ? S.IFIFO : h.type === "char" ? S.IFCHR : S.IFBLK;
    const dev = h.type === "fifo" ? 0n : makedev(h.devmajor, h.devminor);
    let r = mknodat(pfd, base, type | 0o600, dev);
    if (r === -EEXIST) {
      this.#clear(pfd, base, path, false);
      r = mknodat(pfd, base, type | 0o600, dev);
    }
    if (r === -EPERM && h.type !== "fifo") {
      if (this.#devices === "error") {
        throw new DeviceNotPermittedError(
          `mknod of ${h.type} device ${h.devmajor}:${h.devminor} is not permitted (EPERM)`,
          h.name,
          this.#layer,
        );
      }
      this.#warn(
        "devices",
        `skipped device nodes (first: ${JSON.stringify(h.name)}): mknod is not permitted here`,
      );
      return;
    }
    if (r < 0) throw new Fail(-r, "mknodat");
    this.#markCreated(path);
    const keep = this.#chown(
      fchownat(pfd, base, h.uid, h.gid, AT.SYMLINK_NOFOLLOW),
      h,
      () => statx(pfd, base, AT.SYMLINK_NOFOLLOW),
    );
    // fchmodat follows a symlink, but `base` is the node just made.
    const m = fchmodat(pfd, base, h.mode & keep, 0);
    if (m < 0) throw new Fail(-m, "fchmodat");
    if (h.xattrs) this.#xattrs(h.xattrs, (n, v) => lsetxattrAt(pfd, base, n, v));
    this.#setTimes(pfd, base, h);
  }

  // ------------------------------------------------------------- whiteouts

  #whiteout(dir: string, base: string): void {
    if (base === OPQ) return this.#opaque(dir);
    if (base.startsWith(WH + WH)) return; // other aufs meta files (.wh..wh.plnk, ...): not content
    const name = base.slice(WH.length);
    if (name === "" || name === "." || name === "..") {
      throw new WhiteoutError(
        `whiteout of ${JSON.stringify(name)} names no file`,
        this.#hdr?.name,
        this.#layer,
      );
    }
    const path = joinPath(dir, name);
    if (this.#created.has(path) || this.#createdBelow.has(path)) {
      // The layer wrote `path` (or below it) too: the whiteout hides only the
      // lower `path`. A file written here already hides it; a directory must
      // stop showing lower children.
      const fd = this.#openDir(path);
      if (fd >= 0) {
        try {
          this.#opaqueWritten(fd, path);
        } finally {
          close(fd);
        }
      }
      this.#dropCopiedUp(path, false);
      return;
    }
    this.#whiteouts.add(path);
    if (this.#mode === "merged") {
      this.dependsOnLowers = true;
      let pfd: number;
      try {
        pfd = this.#parent(dir, false);
      } catch (e) {
        if (e instanceof Fail && (e.errno === ENOENT || e.errno === ENOTDIR)) return;
        throw e;
      }
      const r = removeAt(pfd, name);
      if (r < 0 && r !== -ENOENT) throw new Fail(-r, "remove");
      this.#invalidate(path);
      return;
    }
    this.#dropCopiedUp(path, true);
    const pfd = this.#parent(dir, true);
    let r = mknodat(pfd, name, S.IFCHR, 0n);
    if (r === -EEXIST) {
      this.#clear(pfd, name, path, false);
      r = mknodat(pfd, name, S.IFCHR, 0n);
    }
    if (r === -EPERM) {
      throw new WhiteoutError(
        "cannot create an overlay whiteout (char 0/0) here: it needs root or a user namespace; " +
          'apply with whiteouts: "merged" instead',
        this.#hdr?.name,
        this.#layer,
        { cause: new ErrnoError("mknodat", EPERM, path) },
      );
    }
    if (r < 0) throw new Fail(-r, "mknodat");
    // The whiteout entry's time, not now: the same layer gives the same tree.
    const h = this.#hdr;
    if (h) utimensat(pfd, name, h.mtime, h.mtime, AT.SYMLINK_NOFOLLOW, h.mtimeNsec, h.mtimeNsec);
  }

  /** Opens directory `path` for xattrs (O_RDONLY, last component not followed); -errno when not a dir. */
  #openDir(path: string): number {
    return this.#open(path || ".", O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
  }

  #withDir(path: string, f: (fd: number) => void): void {
    const fd = this.#openDir(path);
    if (fd < 0) throw new Fail(-fd, "openat2");
    try {
      f(fd);
    } finally {
      close(fd);
    }
  }

  #setOpaque(fd: number, path: string): void {
    this.#opaqueDirs.add(path);
    let r = fsetxattr(fd, this.#opaqueName, YES);
    if (r === EBADF_OPATH) r = setxattrAt(fd, "", this.#opaqueName, YES);
    if (r < 0) {
      throw new WhiteoutError(
        `cannot mark directory ${JSON.stringify(path)} opaque (${this.#opaqueName})`,
        this.#hdr?.name,
        this.#layer,
        { cause: new ErrnoError("fsetxattr", -r, path) },
      );
    }
  }

  /** Makes a directory this layer wrote into hide lower content (`fd` open on it). */
  #opaqueWritten(fd: number, path: string): void {
    if (this.#mode === "direct") this.#setOpaque(fd, path);
    else this.#pendingOpaque.push(path);
  }

  /**
   * `.wh..wh..opq` in `dir`. Like every entry, the marker's directory is
   * resolved inside the root, symlinks included (confined).
   */
  #opaque(dir: string): void {
    if (this.#mode === "direct") {
      let fd = this.#open(dir || ".", O.RDONLY | O.DIRECTORY);
      if (fd === -ENOENT) {
        this.#parent(dir, true); // the marker implies its directory
        fd = this.#open(dir || ".", O.RDONLY | O.DIRECTORY);
      }
      if (fd < 0) throw new Fail(-fd, "openat2");
      try {
        this.#setOpaque(fd, dir);
      } finally {
        close(fd);
      }
      this.#dropCopiedUp(dir, false);
      return;
    }
    if (dir === "" || this.#createdBelow.has(dir)) {
      // Children of this layer are already in there: remove the lower ones
      // selectively once the whole layer is known.
      this.#pendingOpaque.push(dir);
      return;
    }
    const [pdir, base] = splitPath(dir);
    const pfd = this.#parent(pdir, true);
    const st = statx(pfd, base, AT.SYMLINK_NOFOLLOW);
    if (typeof st === "number") {
      if (st !== -ENOENT) throw new Fail(-st, "statx");
      this.#parent(dir, true); // the marker implies its directory
      return;
    }
    const type = st.mode & S.IFMT;
    if (type === S.IFLNK && this.#created.has(dir)) {
      // This layer's own symlink: followed (confined), as direct mode does.
      this.#pendingOpaque.push(dir);
      return;
    }
    if (type !== S.IFDIR) {
      // A lower layer's symlink or file: an empty directory replaces it, as in
      // direct mode (docker, podman and containerd likewise), never followed.
      this.#clear(pfd, base, dir, false);
      this.#parent(dir, true);
      return;
    }
    // Nothing of this layer is inside yet: remove the merged directory and
    // make it again, which overlayfs records as an opaque directory (the
    // same upper dir as direct mode gives).
    const d = this.#dirs.get(dir);
    const r = removeAt(pfd, base);
    if (r < 0 && r !== -ENOENT) throw new Fail(-r, "remove");
    this.#invalidate(dir);
    const m = mkdirat(pfd, base, 0o700);
    if (m < 0) throw new Fail(-m, "mkdirat");
    const nst = statx(pfd, base, AT.SYMLINK_NOFOLLOW);
    if (typeof nst === "number") throw new Fail(-nst, "statx");
    if (d) {
      d.ino = nst.ino;
      this.#dirs.set(dir, d);
    } else {
      // Not an entry of this layer: keep the lower directory's metadata.
      this.#dirs.set(dir, lowerDirMeta(st, nst.ino));
    }
  }

  /**
   * Direct mode: removes what was copied up for hardlinks below `path` (and
   * `path` itself when `self`), now that this layer hides it. A directory
   * implied by a copy-up stays when an entry of this layer lies below it.
   * The links keep their content: they are the same inodes.
   */
  #dropCopiedUp(path: string, self: boolean): void {
    if (this.#copiedUp.size === 0) return;
    const hit = [...this.#copiedUp].filter((p) => (self || p !== path) && isWithin(p, path));
    for (const p of hit.sort((a, b) => depth(b) - depth(a))) {
      this.#copiedUp.delete(p);
      if (this.#createdBelow.has(p)) continue;
      const [dir, base] = splitPath(p);
      // Never through a symlink: only the directories the copy made.
      const fd = openat2(this.#rootFd, dir || ".", DIR_OPEN, 0, IN_ROOT | RESOLVE.NO_SYMLINKS);
      if (fd === -ENOENT || fd === -ENOTDIR || fd === -ELOOP) continue;
      if (fd < 0) throw new Fail(-fd, "openat2");
      try {
        const r = removeAt(fd, base);
        if (r < 0 && r !== -ENOENT) throw new Fail(-r, "remove");
      } finally {
        close(fd);
      }
      this.#invalidate(p);
    }
  }

  /** Merged mode: removes from `dir` (recursively) everything this layer did not write. */
  #emptyLower(dir: string, top = true): void {
    // The marked directory itself is resolved like the marker (symlinks
    // followed, confined); nothing below it is followed.
    const fd = top ? this.#open(dir || ".", O.RDONLY | O.DIRECTORY) : this.#openDir(dir);
    if (fd < 0) {
      if (fd === -ENOENT || fd === -ENOTDIR || fd === -ELOOP) return;
      throw new Fail(-fd, "openat2");
    }
    try {
      const list = readDir(fd);
      if (typeof list === "number") throw new Fail(-list, "getdents64");
      for (const e of list) {
        const p = joinPath(dir, e.name);
        if (this.#createdBelow.has(p)) this.#emptyLower(p, false);
        else if (this.#created.has(p)) {
          if (e.type === 4 /* DT_DIR */) this.#emptyLower(p, false);
        } else {
          const r = removeAt(fd, e.name);
          if (r < 0 && r !== -ENOENT) throw new Fail(-r, "remove");
          this.#invalidate(p);
        }
      }
    } finally {
      close(fd);
    }
  }

  // ------------------------------------------------------------ metadata

  /**
   * Handles the result `r` of a chown to `h`'s owners. When the ids cannot be
   * set here (not mapped in this user namespace), the file keeps the
   * applier's ids and one warning per layer says so. Returns the permission
   * bits the file may keep: a setuid (setgid) bit only when the file's owner
   * (group), read with `stat`, is the one the entry names, as chown(2) drops
   * them; otherwise a file meant to run as an unmapped id would run as root.
   */
  #chown(r: number, h: TarHeader, stat?: () => Stat | number): number {
    if (r >= 0) return 0o7777;
    if (r === -EINVAL || r === -EPERM) {
      this.ownersLost = true;
      this.#warn(
        "chown",
        `cannot set owners (first: ${h.uid}:${h.gid} on ${JSON.stringify(h.name)}, ${
          errnoName(-r)
        }); files keep the applier's ids (ids outside this user namespace's mapping?) and lose ` +
          "setuid and setgid bits that named other owners",
      );
      const st = stat?.();
      if (typeof st === "number" || st === undefined) return 0o1777;
      return 0o1777 | (st.uid === h.uid ? 0o4000 : 0) | (st.gid === h.gid ? 0o2000 : 0);
    }
    throw new Fail(-r, "fchown");
  }

  #xattrs(xattrs: Record<string, Uint8Array>, set: (n: string, v: Uint8Array) => number): void {
    for (const name in xattrs) {
      if (name.startsWith("trusted.overlay.") || name.startsWith("user.overlay.")) {
        this.#warn(
          "xattr-overlay",
          `dropped overlay xattrs from the tarball (first: ${name} on ${
            JSON.stringify(this.#hdr?.name)
          }): a layer may not forge whiteouts or opaque dirs`,
        );
        continue;
      }
      let quiet = false;
      if (name.startsWith("user.") || name.startsWith("system.posix_acl_")) {
        // applied
      } else if (name === "security.capability") {
        // applied; the kernel checks privilege
      } else if (name.startsWith("trusted.")) {
        if (this.#euid !== 0) continue;
        quiet = true;
      } else continue; // other security.* labels, unknown namespaces
      const r = set(name, xattrs[name] ?? EMPTY);
      if (r >= 0 || quiet) continue;
      if (r === -EPERM || r === -EOPNOTSUPP || r === -EACCES || r === -EINVAL) {
        this.#warn(
          `xattr:${name.slice(0, name.indexOf("."))}`,
          `cannot set xattr ${name} (first on ${JSON.stringify(this.#hdr?.name)}, ${
            errnoName(-r)
          }); skipped`,
        );
        continue;
      }
      throw new Fail(-r, `setxattr ${name}`);
    }
  }

  // ------------------------------------------------------------- lowers

  #lowers(): number[] {
    if (!this.#lowerFds) {
      this.#lowerFds = this.#lowerPaths.map((p) => {
        const fd = openat(AT.FDCWD, p, DIR_OPEN, 0);
        if (fd < 0) throw new Fail(-fd, `open lower dir ${p}`);
        return fd;
      });
    }
    return this.#lowerFds;
  }

  /**
   * Finds `path` in the lower layers the way overlayfs would: topmost layer
   * first, stopping at a whiteout or below an opaque directory. Returns the
   * layer's fd and the entry's stat, or undefined.
   */
  #lowerLookup(path: string): { fd: number; stat: Stat } | undefined {
    if (this.#hiddenHere(path)) return undefined;
    const fds = this.#lowers();
    const parts = path.split("/");
    for (let i = fds.length - 1; i >= 0; i--) {
      const lfd = fds[i];
      let opaque = false;
      let prefix = "";
      let found: Stat | undefined;
      for (let k = 0; k < parts.length; k++) {
        const [pdir, base] = [prefix, parts[k]];
        prefix = joinPath(prefix, parts[k]);
        const pfd = openat2(lfd, pdir || ".", DIR_OPEN, 0, IN_ROOT);
        if (pfd < 0) break;
        const st = statx(pfd, base, AT.SYMLINK_NOFOLLOW);
        if (typeof st === "number") {
          close(pfd);
          break;
        }
        const type = st.mode & S.IFMT;
        if (type === S.IFCHR && st.rdevMajor === 0 && st.rdevMinor === 0) {
          close(pfd);
          return undefined; // whited out here
        }
        if (k === parts.length - 1) found = st;
        else if (type === S.IFDIR) {
          const dfd = openat(pfd, base, O.RDONLY | O.DIRECTORY | O.NOFOLLOW, 0);
          if (dfd >= 0) {
            const v = fgetxattr(dfd, this.#opaqueName);
            if (typeof v !== "number" && v.length === 1 && v[0] === 0x79) opaque = true;
            close(dfd);
          }
        } else {
          close(pfd);
          break;
        }
        close(pfd);
      }
      if (found) return { fd: lfd, stat: found };
      if (opaque) return undefined;
    }
    return undefined;
  }

  /**
   * Tells whether this layer hides the lower `path`: it whited out `path` or
   * one of its ancestors, or made an ancestor opaque. The overlay will not
   * show the lower entry, so it must not lend its metadata to an implied
   * directory nor be copied up for a hardlink (merged mode, applying to the
   * view, has already removed it).
   */
  #hiddenHere(path: string): boolean {
    if (this.#opaqueDirs.has("")) return true;
    let i = -1;
    for (;;) {
      i = path.indexOf("/", i + 1);
      const prefix = i < 0 ? path : path.slice(0, i);
      if (this.#whiteouts.has(prefix)) return true;
      if (i < 0) return false;
      if (this.#opaqueDirs.has(prefix)) return true;
    }
  }

  /** Copies the lower file (or symlink) at `path` into the root. Returns false when no lower layer holds one. */
  #copyUp(path: string): boolean {
    if (this.#lowerPaths.length === 0) return false;
    const found = this.#lowerLookup(path);
    if (!found) return false;
    const { fd: lfd, stat } = found;
    const type = stat.mode & S.IFMT;
    const [dir, base] = splitPath(path);
    this.#copyingUp = true;
    let pfd: number;
    try {
      pfd = this.#parent(dir, true);
    } finally {
      this.#copyingUp = false;
    }
    const mtime = stat.mtimeSec, nsec = stat.mtimeNsec;
    if (type === S.IFLNK) {
      const lp = openat2(lfd, dir || ".", DIR_OPEN, 0, IN_ROOT);
      if (lp < 0) throw new Fail(-lp, "openat2");
      const target = readlinkat(lp, base);
      close(lp);
      if (typeof target === "number") throw new Fail(-target, "readlinkat");
      const r = symlinkat(target, pfd, base);
      if (r < 0) throw new Fail(-r, "symlinkat");
      this.#chown(fchownat(pfd, base, stat.uid, stat.gid, AT.SYMLINK_NOFOLLOW), {
        ...this.#hdr!,
        uid: stat.uid,
        gid: stat.gid,
      });
      utimensat(pfd, base, mtime, mtime, AT.SYMLINK_NOFOLLOW, nsec, nsec);
      this.#copiedUp.add(path);
      this.dependsOnLowers = true;
      return true;
    }
    if (type !== S.IFREG) return false;
    const src = openat2(lfd, path, O.RDONLY | O.NOFOLLOW, 0, IN_ROOT);
    if (src < 0) throw new Fail(-src, "openat2");
    const dst = openat(pfd, base, O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW, 0o600);
    if (dst < 0) {
      close(src);
      throw new Fail(-dst, "openat");
    }
    try {
      this.#forget(dst);
      const buf = copyBuf();
      for (;;) {
        const n = read(src, buf);
        if (n < 0) throw new Fail(-n, "read");
        if (n === 0) break;
        const w = writeAll(dst, buf.subarray(0, n));
        if (w < 0) throw new Fail(-w, "write");
      }
      const keep = this.#chown(
        fchown(dst, stat.uid, stat.gid),
        { ...this.#hdr!, uid: stat.uid, gid: stat.gid },
        () => statx(dst, "", AT.EMPTY_PATH),
      );
      fchmod(dst, stat.mode & keep);
      const names = flistxattr(src);
      if (typeof names !== "number") {
        for (const n of names) {
          if (n.startsWith("trusted.overlay.") || n.startsWith("user.overlay.")) continue;
          const v = fgetxattr(src, n);
          if (typeof v !== "number") fsetxattr(dst, n, v);
        }
      }
      futimens(dst, mtime, mtime, nsec, nsec);
    } finally {
      close(src);
      close(dst);
    }
    this.#copiedUp.add(path);
    this.dependsOnLowers = true;
    return true;
  }

  // ------------------------------------------------------------- the end

  /** Applies what waits for the whole layer: merged opaque dirs, then directory metadata. */
  finish(): void {
    this.#hdr = undefined;
    if (this.#pendingOpaque.length) this.dependsOnLowers = true;
    for (const dir of this.#pendingOpaque) {
      try {
        this.#emptyLower(dir);
      } catch (e) {
        this.#fail(e, dir);
      }
    }
    // Deepest first, so that a directory without search permission for the
    // applier is closed only after everything below it.
    const paths = [...this.#dirs.keys()].sort((a, b) => depth(b) - depth(a));
    for (const path of paths) {
      const d = this.#dirs.get(path)!;
      const fd = this.#openDir(path);
      if (fd < 0) {
        // Replaced by a later entry (a file or a symlink): nothing to do.
        if (fd === -ENOENT || fd === -ENOTDIR || fd === -ELOOP) continue;
        this.#fail(new Fail(-fd, "openat2"), path);
      }
      try {
        const st = statx(fd, "", AT.EMPTY_PATH);
        if (typeof st === "number") continue;
        // Direct mode: a different directory now (reached through a symlink
        // changed later) keeps its own metadata. Not in merged mode, where
        // copy-up may change a directory's inode number on some overlays;
        // removals already dropped what they replaced (#invalidate).
        if (this.#mode === "direct" && st.ino !== d.ino) continue;
        this.#chown(fchown(fd, d.uid, d.gid), { uid: d.uid, gid: d.gid, name: path } as TarHeader);
        const r = fchmod(fd, d.mode);
        if (r < 0) throw new Fail(-r, "fchmod");
        if (d.xattrs) this.#xattrs(d.xattrs, (n, v) => fsetxattr(fd, n, v));
        const t = futimens(fd, d.atime, d.mtime, d.atimeNsec, d.mtimeNsec);
        if (t < 0) throw new Fail(-t, "futimens");
      } catch (e) {
        this.#fail(e, path);
      } finally {
        close(fd);
      }
    }
  }

  /** Releases every fd; safe to call more than once. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = -1;
    this.#dropParents();
    for (const fd of this.#lowerFds ?? []) close(fd);
    this.#lowerFds = [];
    close(this.#rootFd);
  }

  /** The root this writer applies to. */
  get root(): string {
    return this.#root;
  }
}

const EBADF_OPATH = -9;

let sharedCopyBuf: Uint8Array | undefined;
function copyBuf(): Uint8Array {
  return sharedCopyBuf ??= new Uint8Array(1 << 20);
}

function depth(p: string): number {
  if (p === "") return 0;
  let n = 1;
  for (let i = 0; i < p.length; i++) if (p.charCodeAt(i) === 47) n++;
  return n;
}

function atimeOf(h: TarHeader): number {
  return h.atime !== undefined && h.atime > h.mtime ? h.atime : h.mtime;
}

/** The exact nanoseconds of the atime chosen by {@linkcode atimeOf}, when it is the mtime. */
function atimeNsecOf(h: TarHeader): number | undefined {
  return h.atime !== undefined && h.atime > h.mtime ? undefined : h.mtimeNsec;
}

/** A lower directory's metadata, kept as it is (atime set to its mtime), for the inode `ino`. */
function lowerDirMeta(st: Stat, ino: bigint): DeferredDir {
  return {
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    atime: st.mtimeSec,
    mtime: st.mtimeSec,
    atimeNsec: st.mtimeNsec,
    mtimeNsec: st.mtimeNsec,
    ino,
  };
}
