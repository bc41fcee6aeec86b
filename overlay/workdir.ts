/**
 * The seed's LayerWorkdir: produce an overlayfs layer (whiteouts as char 0/0
 * devices, opaque directories as xattrs) from an OCI layer by applying the
 * OCI layer to an overlay of its parents and keeping the upper directory.
 *
 * @module
 */
import { join } from "@std/path";
import { cstr, errno, ErrnoError, libc } from "../sys/libc.ts";
import { AT, close, O, openat, readDir, S, statx } from "../sys/fs.ts";
import { type Mount, OverlayMount } from "./mount.ts";
import { chmod, makeTempDir, mkdir, remove } from "../sys/files.ts";

/** Creates the overlay a {@linkcode LayerWorkdir} applies a layer to. `lower` is bottom first. */
export type NewOverlayMountFn = (
  mountpoint: string,
  lower: readonly string[],
  upper: string,
  work: string,
) => Mount;

/**
 * The default {@linkcode NewOverlayMountFn}: an {@linkcode OverlayMount} (always `userxattr`).
 *
 * @example Usage
 * ```ts
 * import { defaultNewOverlayMount } from "./workdir.ts";
 * const m = defaultNewOverlayMount("/m", ["/a", "/b"], "/u", "/w"); // b on top of a
 * ```
 */
export function defaultNewOverlayMount(
  mountpoint: string,
  lower: readonly string[],
  upper: string,
  work: string,
): Mount {
  return new OverlayMount({ mountpoint, lower, upper, work });
}

/** How a {@linkcode LayerWorkdir} is created. */
export interface WorkDirOptions {
  /** Makes the overlay of the parent layers. */
  newOverlayMount: NewOverlayMountFn;
}

/** Configures a new {@linkcode LayerWorkdir} (the seed's option-function shape). */
export type NewLayerWorkdirOption = (o: WorkDirOptions) => void;

/**
 * Configures how a new layer workdir creates its overlay mount.
 *
 * @example Usage
 * ```ts ignore
 * import { LayerWorkdir, OverlayMount, withNewOverlayMountFn } from "./mod.ts";
 * const wd = await LayerWorkdir.create("/cache/tmp", "sha256:ab", ["/cache/l1"], withNewOverlayMountFn(
 *   (mountpoint, lower, upper, work) => new OverlayMount({ mountpoint, lower, upper, work }),
 * ));
 * ```
 */
export function withNewOverlayMountFn(fn: NewOverlayMountFn): NewLayerWorkdirOption {
  return (o) => {
    o.newOverlayMount = fn;
  };
}

/**
 * A temporary directory in which an OCI layer becomes an overlayfs layer.
 *
 * It is not possible to create overlay whiteouts *directly* everywhere: they
 * are character devices, and before Linux 5.8 mknod needed CAP_MKNOD in the
 * initial user namespace. Applying the layer to an overlay whose lowers are
 * the parent layers and whose upper is empty makes the kernel write the
 * whiteouts and opaque directories itself; the upper is then a valid lower
 * layer for the next layer or for a container's root filesystem.
 *
 * With no parents there is nothing to white out: the layer is applied
 * straight to the upper directory and nothing is mounted.
 *
 * @example Usage
 * ```ts ignore
 * import { LayerWorkdir } from "./workdir.ts";
 * const wd = await LayerWorkdir.create("/cache/tmp", layer.diffID, ["/cache/layers/a/fs"]);
 * try {
 *   await applyLayer(layer, wd.applyPath(), { whiteouts: "merged" });
 *   await wd.seal();
 *   await Deno.rename(wd.resultPath(), "/cache/layers/b/fs");
 * } finally {
 *   await wd.cleanup();
 * }
 * ```
 */
export class LayerWorkdir {
  /** The temporary directory holding `upper/`, `work/` and `merged/`. */
  readonly path: string;
  /** The parent layers, bottom first. */
  readonly parents: readonly string[];
  #mount?: Mount;
  #cleaned = false;
  #sealed = false;

  private constructor(path: string, parents: readonly string[], mount?: Mount) {
    this.path = path;
    this.parents = parents;
    this.#mount = mount;
  }

  /**
   * Creates a workdir below `dir` for the layer `digest`, over
   * `parentLayerPaths` (bottom first), and mounts its overlay when there are
   * parents. Options are option functions ({@linkcode withNewOverlayMountFn})
   * or a partial {@linkcode WorkDirOptions} object.
   */
  static async create(
    dir: string,
    digest: string,
    parentLayerPaths: readonly string[],
    ...options: (NewLayerWorkdirOption | Partial<WorkDirOptions>)[]
  ): Promise<LayerWorkdir> {
    const o: WorkDirOptions = { newOverlayMount: defaultNewOverlayMount };
    for (const opt of options) {
      if (typeof opt === "function") opt(o);
      else if (opt.newOverlayMount) o.newOverlayMount = opt.newOverlayMount;
    }
    const prefix = digest.replace(/[^A-Za-z0-9]/g, "-").slice(0, 24) + "-";
    const path = await makeTempDir({ dir, prefix });
    try {
      await chmod(path, 0o700);
      const upper = join(path, "upper");
      await mkdir(upper, { mode: 0o755 });
      if (parentLayerPaths.length === 0) return new LayerWorkdir(path, []);
      const work = join(path, "work");
      const merged = join(path, "merged");
      await mkdir(work, { mode: 0o700 });
      await mkdir(merged, { mode: 0o755 });
      const mount = o.newOverlayMount(merged, [...parentLayerPaths], upper, work);
      await mount.mount();
      return new LayerWorkdir(path, [...parentLayerPaths], mount);
    } catch (e) {
      await remove(path, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /** Where the OCI layer is applied (extracted): the merged overlay, or the upper without parents. */
  applyPath(): string {
    return join(this.path, this.#mount ? "merged" : "upper");
  }

  /** Where the resulting overlayfs layer is: the upper directory. Read it after {@linkcode LayerWorkdir.seal}. */
  resultPath(): string {
    return join(this.path, "upper");
  }

  /**
   * Unmounts the overlay, so that the result can be moved and used as a lower
   * layer, and strips from the result the xattrs overlayfs keeps for its own
   * bookkeeping as an upper (`origin`, `impure`, `uuid`, `nlink`): they name
   * file handles of this particular mount and mean nothing in a lower layer.
   * Opaque markers stay. Idempotent.
   */
  async seal(): Promise<void> {
    if (!this.#mount || this.#sealed) return;
    await this.#mount.unmount();
    await stripBookkeeping(this.resultPath());
    this.#sealed = true;
  }

  /** Unmounts the overlay and removes the temporary directory (with the result, unless moved away). Idempotent. */
  async cleanup(): Promise<void> {
    if (this.#cleaned) return;
    await this.seal();
    await remove(this.path, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    this.#cleaned = true;
  }
}

/** overlayfs xattrs (after `user.overlay.`) that only describe an upper dir in use. */
const BOOKKEEPING = new Set(["origin", "impure", "uuid", "nlink", "upper", "protattr"]);

function listXattrs(path: string): string[] {
  const c = libc();
  const p = cstr(path);
  let buf = new Uint8Array(1024);
  for (;;) {
    const n = Number(c.llistxattr(p, buf, BigInt(buf.length)));
    if (n >= 0) {
      return new TextDecoder().decode(buf.subarray(0, n)).split("\0").filter(Boolean);
    }
    const e = errno();
    if (e === 34 /* ERANGE */) {
      buf = new Uint8Array(buf.length * 4);
      continue;
    }
    if (e === 95 /* EOPNOTSUPP */) return [];
    throw new ErrnoError("llistxattr", e, path);
  }
}

async function stripBookkeeping(root: string): Promise<void> {
  const walk = async (path: string): Promise<void> => {
    for (const name of listXattrs(path)) {
      const m = /^(?:user|trusted)\.overlay\.(.+)$/.exec(name);
      if (!m || !BOOKKEEPING.has(m[1])) continue;
      if (libc().lremovexattr(cstr(path), cstr(name)) < 0) {
        throw new ErrnoError(`lremovexattr ${name}`, errno(), path);
      }
    }
    // Through sys/fs, not Deno.readDir: names that are not UTF-8 keep their bytes.
    const st = statx(AT.FDCWD, path, AT.SYMLINK_NOFOLLOW);
    if (typeof st === "number") throw new ErrnoError("statx", -st, path);
    if ((st.mode & S.IFMT) !== S.IFDIR) return;
    const fd = openat(AT.FDCWD, path, O.RDONLY | O.DIRECTORY | O.NOFOLLOW, 0);
    if (fd < 0) throw new ErrnoError("open", -fd, path);
    const names = readDir(fd);
    close(fd);
    if (typeof names === "number") throw new ErrnoError("getdents64", -names, path);
    for (const e of names) await walk(join(path, e.name));
  };
  await walk(root);
}
