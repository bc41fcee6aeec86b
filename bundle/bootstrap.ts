/**
 * Bootstraps an OCI runtime bundle: a tmpfs at the bundle path holding the
 * overlay's `upper` and `work` directories and the `config.json`, and an
 * overlay `rootfs` atop the image's cached layers. Everything a container
 * writes lives in memory and is gone with `cleanup()`.
 *
 * Layout of a bundle at `P` (everything below `P` is on the tmpfs):
 *
 * ```
 * P/            tmpfs
 * P/upper/      overlay upper directory
 * P/work/       overlay work directory
 * P/rootfs/     overlay of the layers (bottom first) + upper
 * P/config.json written by the spec writer
 * ```
 *
 * @module
 */

import { join } from "@std/path";
import { OverlayMount, TmpFSMount } from "../overlay/mount.ts";
import { chmodSync, mkdirSync, remove, removeSync } from "../sys/files.ts";

/** An OCI runtime bundle: a directory holding `config.json` and the rootfs. */
export interface Bundle {
  /** The bundle directory (what `runc run --bundle` takes). */
  readonly path: string;
  /**
   * The signal that asks the container to stop (the image's `StopSignal`,
   * as `SIGQUIT` or `3`): what `runContainer` sends first on abort. Default
   * SIGTERM.
   */
  readonly stopSignal?: string;
  /** Unmounts and removes the bundle; safe to call more than once. */
  cleanup(): Promise<void>;
}

/** Options of {@linkcode bootstrapBundle}. */
export interface BootstrapOptions {
  /** Size limit of the tmpfs holding what the container writes (`64m`, bytes). Default: tmpfs' own (half of RAM). */
  tmpfsSize?: string | number;
  /** Aborts the mounts. */
  signal?: AbortSignal;
}

/**
 * Bootstraps a bundle at `path` over `parentLayerPaths` (bottom first). A
 * plain function type: the seed's `BundleBootstrapper` interface and its `Fn`
 * adapter in one.
 */
export type BundleBootstrapper = (
  path: string,
  parentLayerPaths: readonly string[],
  options?: BootstrapOptions,
) => Promise<OverlayBundle>;

/**
 * The bootstrapping or the cleanup of a bundle failed.
 *
 * @example Usage
 * ```ts
 * import { BundleError } from "./bootstrap.ts";
 * console.log(new BundleError("/b", "cannot mount the rootfs overlay").message);
 * ```
 */
export class BundleError extends Error {
  /** Creates the error for the bundle at `path`. */
  constructor(readonly path: string, reason: string, options?: ErrorOptions) {
    super(
      `bundle ${path}: ${reason}${options?.cause ? `: ${(options.cause as Error).message}` : ""}`,
      options,
    );
    this.name = "BundleError";
  }
}

/**
 * A bundle whose rootfs is a temporary overlay on cached layers (the seed's
 * `Bundle`). Made by {@linkcode bootstrapBundle}.
 */
export class OverlayBundle implements Bundle, AsyncDisposable {
  /** The bundle directory. */
  readonly path: string;
  /** The rootfs mountpoint (`<path>/rootfs`). */
  readonly rootfs: string;
  /** The lower directories, bottom first. */
  readonly lower: readonly string[];
  #mounts: (OverlayMount | TmpFSMount)[];
  #cleaning?: Promise<void>;

  /** Wraps mounts already made; `mounts` are unmounted in reverse order. */
  constructor(path: string, lower: readonly string[], mounts: (OverlayMount | TmpFSMount)[]) {
    this.path = path;
    this.rootfs = join(path, "rootfs");
    this.lower = lower;
    this.#mounts = mounts;
  }

  /** The path of the bundle's `config.json`. */
  get configPath(): string {
    return join(this.path, "config.json");
  }

  /** Unmounts the overlay, then the tmpfs, and removes the directory. Idempotent. */
  cleanup(): Promise<void> {
    return this.#cleaning ??= this.#cleanup();
  }

  async #cleanup(): Promise<void> {
    const errors: unknown[] = [];
    for (const m of [...this.#mounts].reverse()) {
      try {
        await m.unmount();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length === 0) {
      try {
        // Synchronous, and one rmdir: unmounted, the directory is empty
        // (everything was on the tmpfs); a recursive remove only if it is not.
        try {
          removeSync(this.path);
        } catch (e) {
          if (e instanceof Deno.errors.NotFound) throw e;
          removeSync(this.path, { recursive: true });
        }
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) errors.push(e);
      }
    }
    if (errors.length) {
      this.#cleaning = undefined; // let a later call retry
      throw new BundleError(this.path, "cannot clean up", { cause: errors[0] });
    }
  }

  /** Cleans up (for `await using`). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.cleanup();
  }
}

/**
 * Creates a bundle at `path` (which must not exist): a tmpfs there holding
 * `upper` and `work`, and an overlay `rootfs` on `parentLayerPaths` (bottom
 * first; with none, an empty lower directory). On failure everything made is
 * undone before the error is thrown.
 *
 * @throws {BundleError} when a directory or mount cannot be made.
 *
 * @example Usage
 * ```ts ignore
 * import { bootstrapBundle } from "./bootstrap.ts";
 * await using bundle = await bootstrapBundle("/run/strata/b1", ["/cache/layers/sha256-.../fs"], { tmpfsSize: "64m" });
 * console.log(bundle.rootfs); // "/run/strata/b1/rootfs"
 * ```
 */
export async function bootstrapBundle(
  path: string,
  parentLayerPaths: readonly string[],
  options: BootstrapOptions = {},
): Promise<OverlayBundle> {
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (e) {
    throw new BundleError(path, "cannot create the bundle directory", { cause: e });
  }
  const tmpfs = new TmpFSMount({ mountpoint: path, size: options.tmpfsSize, mode: 0o700 });
  const mounts: (OverlayMount | TmpFSMount)[] = [];
  try {
    try {
      await tmpfs.mount(options.signal);
    } catch (e) {
      throw new BundleError(path, "cannot mount the tmpfs", { cause: e });
    }
    mounts.push(tmpfs);
    const upper = join(path, "upper");
    const work = join(path, "work");
    const rootfs = join(path, "rootfs");
    for (const d of [upper, work, rootfs]) mkdirSync(d, { mode: 0o700 });
    // The rootfs root takes the mode of the upper directory; containers expect 0755.
    chmodSync(upper, 0o755);
    let lower = [...parentLayerPaths];
    if (lower.length === 0) {
      // overlayfs needs at least one lower directory.
      const empty = join(path, "lower");
      mkdirSync(empty, { mode: 0o755 });
      lower = [empty];
    }
    const overlay = new OverlayMount({ mountpoint: rootfs, lower, upper, work });
    try {
      await overlay.mount(options.signal);
    } catch (e) {
      throw new BundleError(path, "cannot mount the rootfs overlay", { cause: e });
    }
    mounts.push(overlay);
    return new OverlayBundle(path, [...parentLayerPaths], mounts);
  } catch (e) {
    for (const m of mounts.reverse()) await m.unmount().catch(() => {});
    await remove(path, { recursive: true }).catch(() => {});
    throw e instanceof BundleError ? e : new BundleError(path, "cannot bootstrap", { cause: e });
  }
}

// bootstrapBundle is the default BundleBootstrapper.
const _default: BundleBootstrapper = bootstrapBundle;
void _default;
