/**
 * Mounts as values: an {@linkcode OverlayMount} or a {@linkcode TmpFSMount}
 * says what to mount where; `mount()` and `unmount()` do it through the mount
 * backend picked at run time (see `sys/mount.ts`).
 *
 * @module
 */
import { basename, dirname } from "@std/path";
import {
  chooseMountBackend,
  MAX_LOWER_LAYERS,
  type MountBackend,
  type TmpfsMountOptions,
} from "../sys/mount.ts";
import { makeTempDir, remove } from "../sys/files.ts";

export { MAX_LOWER_LAYERS };

/**
 * A mount of a filesystem. `unmount()` is idempotent: it does nothing unless
 * this object mounted the filesystem and has not unmounted it yet.
 */
export interface Mount {
  /** Mounts the filesystem. */
  mount(signal?: AbortSignal): Promise<void>;
  /** Unmounts it (lazily when busy); a no-op when not mounted. */
  unmount(): Promise<void>;
}

/** What an {@linkcode OverlayMount} is made of. */
export interface OverlayMountInit {
  /** Where to mount. */
  mountpoint: string;
  /** Lower directories, bottom (base layer) first: the LAST one ends up on top. */
  lower: readonly string[];
  /** Upper directory (writable overlay); needs `work`. */
  upper?: string;
  /** Work directory, an empty directory on the same filesystem as `upper`. */
  work?: string;
  /** Mount read-only. */
  readonly?: boolean;
  /** A specific backend; default: the one picked for this process. */
  backend?: MountBackend;
}

/**
 * An overlay mount. Always mounted with `userxattr`, as root too: opaque
 * directories are `user.overlay.opaque=y` and whiteouts char 0/0 devices, so
 * one cache gives the same tree to root and to user namespaces.
 *
 * Lower directories are given bottom first, the order of an image's layers.
 * overlayfs' own `lowerdir=A:B:C` puts A on TOP, so the list is reversed where
 * it is handed to the kernel. (The seed passed image order straight through,
 * which put the base layer on top: an override in a later layer lost.)
 *
 * Up to 500 lower directories (overlayfs' limit) whatever their path length:
 * the new mount API takes one `lowerdir+` per layer, and the classic backends
 * fall back to short symlink names.
 *
 * A read-only overlay of ONE lower directory (a single-layer image) is
 * mounted over an empty directory made beside the mountpoint (removed on
 * unmount): the kernel refuses one lower without an upper ("at least 2
 * lowerdir are needed"), and a plain bind mount would show the layer's
 * whiteouts as 0/0 devices where the overlay hides them.
 *
 * @example Usage
 * ```ts ignore
 * import { OverlayMount } from "./mount.ts";
 * const m = new OverlayMount({
 *   mountpoint: "/run/x/rootfs",
 *   lower: ["/cache/base", "/cache/app"], // app is on top
 *   upper: "/run/x/upper",
 *   work: "/run/x/work",
 * });
 * await m.mount();
 * try {
 *   console.log(await Deno.readTextFile("/run/x/rootfs/etc/os-release"));
 * } finally {
 *   await m.unmount();
 * }
 * ```
 */
export class OverlayMount implements Mount, AsyncDisposable {
  /** Where the overlay is mounted. */
  readonly mountpoint: string;
  /** Lower directories, bottom first. */
  readonly lower: readonly string[];
  /** Upper directory, if writable. */
  readonly upper?: string;
  /** Work directory, with `upper`. */
  readonly work?: string;
  /** Mounted read-only. */
  readonly readonly: boolean;
  #backend?: MountBackend;
  #mounted = false;
  #empty?: string;

  /** Describes an overlay; nothing is mounted until {@linkcode OverlayMount.mount}. */
  constructor(init: OverlayMountInit) {
    this.mountpoint = init.mountpoint;
    this.lower = [...init.lower];
    this.upper = init.upper;
    this.work = init.work;
    this.readonly = init.readonly ?? false;
    this.#backend = init.backend;
  }

  /** Tells whether this object has it mounted. */
  get mounted(): boolean {
    return this.#mounted;
  }

  /** Mounts the overlay on {@linkcode OverlayMount.mountpoint}. */
  async mount(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.#mounted) throw new Error(`The overlay on ${this.mountpoint} is already mounted`);
    this.#backend ??= chooseMountBackend().backend;
    let lower = this.lower;
    if (this.upper === undefined && lower.length === 1) {
      // The kernel wants two lowers without an upper: an empty one below.
      this.#empty = await makeTempDir({
        dir: dirname(this.mountpoint),
        prefix: `.${basename(this.mountpoint)}-empty-`,
      });
      lower = [this.#empty, ...lower];
    }
    try {
      await this.#backend.mountOverlay(this.mountpoint, {
        lower,
        upper: this.upper,
        work: this.work,
        readonly: this.readonly,
        userxattr: true,
      });
    } catch (e) {
      await this.#removeEmpty();
      throw e;
    }
    this.#mounted = true;
  }

  async #removeEmpty(): Promise<void> {
    if (this.#empty === undefined) return;
    await remove(this.#empty).catch(() => {});
    this.#empty = undefined;
  }

  /** Unmounts it; does nothing when not mounted by this object. */
  async unmount(): Promise<void> {
    if (!this.#mounted) return;
    await this.#backend!.unmount(this.mountpoint);
    this.#mounted = false;
    await this.#removeEmpty();
  }

  /** Unmounts (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.unmount();
  }
}

/** What a {@linkcode TmpFSMount} is made of. */
export interface TmpFSMountInit extends TmpfsMountOptions {
  /** Where to mount. */
  mountpoint: string;
  /** A specific backend; default: the one picked for this process. */
  backend?: MountBackend;
}

/**
 * A tmpfs mount: memory-backed, gone when unmounted. Containers' upper
 * directories live on one.
 *
 * @example Usage
 * ```ts ignore
 * import { TmpFSMount } from "./mount.ts";
 * await using m = new TmpFSMount({ mountpoint: "/run/x", size: "64m", mode: 0o700 });
 * await m.mount();
 * ```
 */
export class TmpFSMount implements Mount, AsyncDisposable {
  /** Where the tmpfs is mounted. */
  readonly mountpoint: string;
  /** Size limit, if any. */
  readonly size?: string | number;
  /** Mode of its root directory. */
  readonly mode: number;
  #backend?: MountBackend;
  #mounted = false;

  /** Describes a tmpfs; nothing is mounted until {@linkcode TmpFSMount.mount}. */
  constructor(init: TmpFSMountInit) {
    this.mountpoint = init.mountpoint;
    this.size = init.size;
    this.mode = init.mode ?? 0o755;
    this.#backend = init.backend;
  }

  /** Tells whether this object has it mounted. */
  get mounted(): boolean {
    return this.#mounted;
  }

  /** Mounts the tmpfs on {@linkcode TmpFSMount.mountpoint}. */
  async mount(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.#mounted) throw new Error(`The tmpfs on ${this.mountpoint} is already mounted`);
    this.#backend ??= chooseMountBackend().backend;
    await this.#backend.mountTmpfs(this.mountpoint, { size: this.size, mode: this.mode });
    this.#mounted = true;
  }

  /** Unmounts it; does nothing when not mounted by this object. */
  async unmount(): Promise<void> {
    if (!this.#mounted) return;
    await this.#backend!.unmount(this.mountpoint);
    this.#mounted = false;
  }

  /** Unmounts (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.unmount();
  }
}
