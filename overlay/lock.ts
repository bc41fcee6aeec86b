/**
 * flock(2) locks and the temporary directories they guard. A lock dies with
 * the process holding it, so a crashed extraction never blocks the next one,
 * and its leftovers can be told apart from work in progress.
 *
 * @module
 */
import { join } from "@std/path";
import { cstr, errno, ErrnoError, ffiAvailable, libc } from "../sys/libc.ts";
import { unmountBelow } from "../sys/mount.ts";
import { AT, statx } from "../sys/fs.ts";
import {
  mkdir,
  type OpenFile,
  openFile,
  readDirSync,
  remove,
  removeSync,
  stat,
} from "../sys/files.ts";

const O_RDWR = 2;
const O_CREAT = 0o100;
const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/**
 * An exclusive flock(2) on a lock file, held until {@linkcode FileLock.release}
 * or the end of the process.
 *
 * @example Usage
 * ```ts
 * import { FileLock } from "./lock.ts";
 * const path = await Deno.makeTempFile();
 * const lock = await FileLock.acquire(path);
 * console.log(FileLock.tryAcquire(path)); // null: held (flock locks are per open file)
 * lock.release();
 * await Deno.remove(path);
 * ```
 */
export class FileLock {
  /** The lock file. */
  readonly path: string;
  #file?: OpenFile;
  #fd?: number;

  private constructor(path: string, file?: OpenFile, fd?: number) {
    this.path = path;
    this.#file = file;
    this.#fd = fd;
  }

  /**
   * Waits for an exclusive lock on `path` (created 0600 if missing).
   *
   * A lock file can be unlinked by whoever held it just before us (see
   * {@linkcode reclaimTemp}); a lock on an unlinked inode guards nothing, so
   * after locking, the path must still name the inode we locked, else retry.
   */
  static async acquire(path: string, signal?: AbortSignal): Promise<FileLock> {
    for (;;) {
      signal?.throwIfAborted();
      const file = await openFile(path, { read: true, write: true, create: true, mode: 0o600 });
      try {
        await file.lock(true);
      } catch (e) {
        file.close();
        throw e;
      }
      if (signal?.aborted) {
        file.close();
        signal.throwIfAborted();
      }
      const held = await file.stat();
      const now = await stat(path).catch(() => undefined);
      if (now && now.ino === held.ino && now.dev === held.dev) return new FileLock(path, file);
      file.close();
    }
  }

  /**
   * Takes the lock if it is free, else returns `null` at once. Needs FFI
   * (Deno's own `lock()` always waits); without it, returns `null`.
   */
  static tryAcquire(path: string): FileLock | null {
    if (!ffiAvailable()) return null;
    const c = libc();
    const fd = c.open(cstr(path), O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
    if (fd < 0) throw new ErrnoError("open", errno(), path);
    if (c.flock(fd, LOCK_EX | LOCK_NB) < 0) {
      const e = errno();
      c.close(fd);
      if (e === EWOULDBLOCK) return null;
      throw new ErrnoError("flock", e, path);
    }
    // As in acquire(): the path must still name the locked inode. If it was
    // unlinked meanwhile, its holder finished with it: report it as taken.
    const held = statx(fd, "", AT.EMPTY_PATH);
    const now = statx(AT.FDCWD, path, 0);
    if (
      typeof held === "number" || typeof now === "number" || held.ino !== now.ino ||
      held.dev !== now.dev
    ) {
      c.close(fd);
      return null;
    }
    return new FileLock(path, undefined, fd);
  }

  /** Releases the lock (idempotent). */
  release(): void {
    this.#file?.close();
    this.#file = undefined;
    if (this.#fd !== undefined) libc().close(this.#fd);
    this.#fd = undefined;
  }

  /** Releases the lock (for `using`). */
  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * A directory `tmp/<name>/` of a cache, guarded by the lock
 * `locks/tmp-<name>.lock` that is taken BEFORE the directory exists and
 * dropped only after it is gone: a directory whose lock is free belongs to a
 * dead process. Names are random and never reused.
 *
 * @example Usage
 * ```ts ignore
 * import { TempWork } from "./lock.ts";
 * const work = await TempWork.create("/var/lib/strata");
 * try {
 *   await Deno.writeTextFile(`${work.path}/x`, "partial");
 * } finally {
 *   await work.remove();
 * }
 * ```
 */
export class TempWork {
  /** The directory. */
  readonly path: string;
  #lock: FileLock;

  private constructor(path: string, lock: FileLock) {
    this.path = path;
    this.#lock = lock;
  }

  /** Locks a fresh name, then creates `root/tmp/<name>/` (0700). */
  static async create(root: string): Promise<TempWork> {
    const name = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
    const lock = await FileLock.acquire(join(root, "locks", `tmp-${name}.lock`));
    const path = join(root, "tmp", name);
    try {
      await mkdir(path, { mode: 0o700 });
    } catch (e) {
      await remove(lock.path).catch(() => {});
      lock.release();
      throw e;
    }
    return new TempWork(path, lock);
  }

  /** Removes the directory (unmounting anything left below it), then its lock. */
  async remove(): Promise<void> {
    await unmountBelow(this.path);
    await remove(this.path, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    await remove(this.#lock.path).catch(() => {});
    this.#lock.release();
  }

  /**
   * Removes the directory, then its lock, synchronously (from an `unload`
   * handler, where nothing asynchronous runs); nothing must be mounted below.
   */
  removeSync(): void {
    try {
      removeSync(this.path, { recursive: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    try {
      removeSync(this.#lock.path);
    } catch { /* gone already */ }
    this.#lock.release();
  }
}

/**
 * Removes the `tmp/` leftovers of dead processes (their lock is free) and
 * lock files of temporary work that no longer exists. Work of live processes
 * is left alone. Returns the paths removed.
 *
 * @example Usage
 * ```ts ignore
 * import { reclaimTemp } from "./lock.ts";
 * console.log(await reclaimTemp("/var/lib/strata"));
 * ```
 */
export async function reclaimTemp(root: string): Promise<string[]> {
  const removed: string[] = [];
  const names = new Set<string>();
  // Synchronous listings: usually both are (nearly) empty, and every command
  // opening the cache pays for this.
  for (const e of readDirSync(join(root, "tmp"))) names.add(e.name);
  for (const e of readDirSync(join(root, "locks"))) {
    const m = /^tmp-(.+)\.lock$/.exec(e.name);
    if (m) names.add(m[1]);
  }
  for (const name of names) {
    const lockPath = join(root, "locks", `tmp-${name}.lock`);
    const lock = FileLock.tryAcquire(lockPath);
    if (!lock) continue;
    try {
      const path = join(root, "tmp", name);
      await unmountBelow(path);
      try {
        await remove(path, { recursive: true });
        removed.push(path);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      await remove(lockPath).catch(() => {});
    } finally {
      lock.release();
    }
  }
  return removed;
}
