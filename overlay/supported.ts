/**
 * Can the overlay store work in a cache directory? {@linkcode supported}
 * keeps the seed's boolean; {@linkcode supportedReason} says why, the way
 * containerd's `overlayutils/check.go` does.
 *
 * @module
 */
import { join } from "@std/path";
import { chooseMountBackend, type MountBackendName, mountOf } from "../sys/mount.ts";
import { type IdMap, onOverlayfs } from "./cache.ts";
import { namespaceInfo, type PrivilegeMode } from "./userns.ts";
import { LayerWorkdir } from "./workdir.ts";
import { lstat, makeTempDir, mkdir, remove, writeTextFile } from "../sys/files.ts";
import { osRelease } from "../sys/process.ts";

/** What {@linkcode supportedReason} found. */
export interface SupportReport {
  /** True when a LayerWorkdir could be made (with a real overlay mount) and cleaned up. */
  supported: boolean;
  /** Same as `supported`. */
  ok: boolean;
  /** Why, in a sentence or two. */
  reason: string;
  /** Privilege mode of this process. */
  mode: PrivilegeMode;
  /** The uid/gid mapping of this process. */
  idmap: IdMap | null;
  /** The mount backend and why it was picked. */
  backend: { name: MountBackendName; reason: string };
  /** Filesystem type of the cache root, when known. */
  fstype?: string;
}

/**
 * Tells whether the overlay store works in `cacheRoot`: true when a
 * {@linkcode LayerWorkdir} over a parent layer can be mounted, written
 * through (a whiteout included) and cleaned up there. Never throws.
 *
 * overlayfs was not allowed in unprivileged user namespaces before Linux
 * 5.11 (commit 459c7c565ac36ba09ffbf), and an overlayfs cannot have its upper
 * directory on another overlayfs (a cache inside a container's root
 * filesystem).
 *
 * @example Usage
 * ```ts ignore
 * import { supported } from "./supported.ts";
 * if (!(await supported("/var/lib/strata"))) console.log("no overlay here");
 * ```
 */
export async function supported(cacheRoot: string): Promise<boolean> {
  try {
    return (await supportedReason(cacheRoot)).supported;
  } catch {
    return false;
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Like {@linkcode supported}, with the reason, the privilege mode, the
 * uid/gid mapping and the mount backend (what `strata supported --why`
 * prints). Never throws.
 *
 * @example Usage
 * ```ts ignore
 * import { supportedReason } from "./supported.ts";
 * const r = await supportedReason("/var/lib/strata");
 * console.log(r.supported, r.reason, r.mode, r.backend.name);
 * ```
 */
export async function supportedReason(cacheRoot: string): Promise<SupportReport> {
  let mode: PrivilegeMode = "unprivileged";
  let idmap: IdMap | null = null;
  let backend: SupportReport["backend"] = { name: "command", reason: "not probed" };
  let fstype: string | undefined;
  const report = (ok: boolean, reason: string): SupportReport => ({
    supported: ok,
    ok,
    reason,
    mode,
    idmap,
    backend,
    fstype,
  });
  try {
    const info = await namespaceInfo();
    mode = info.mode;
    idmap = { uid: info.uidMap, gid: info.gidMap };
    const choice = chooseMountBackend();
    backend = { name: choice.name, reason: choice.reason };
  } catch (e) {
    return report(false, `cannot inspect this process: ${errorText(e)}`);
  }
  let probeRoot: string;
  try {
    await mkdir(cacheRoot, { recursive: true, mode: 0o700 });
    probeRoot = await makeTempDir({ dir: cacheRoot, prefix: ".supported-" });
  } catch (e) {
    return report(false, `cannot create a directory in ${cacheRoot}: ${errorText(e)}`);
  }
  try {
    fstype = (await mountOf(probeRoot)).fstype;
  } catch {
    // unknown filesystem type: the probe below still decides
  }
  try {
    const lower = join(probeRoot, "lower");
    await mkdir(join(lower, "dir"), { recursive: true });
    await writeTextFile(join(lower, "dir", "gone"), "x");
    const wd = await LayerWorkdir.create(probeRoot, "probe", [lower]);
    try {
      // A write and a delete through the overlay: the delete makes a whiteout.
      await writeTextFile(join(wd.applyPath(), "dir", "new"), "y");
      await remove(join(wd.applyPath(), "dir", "gone"));
      await wd.seal();
      const wh = await lstat(join(wd.resultPath(), "dir", "gone"));
      if (!wh.isCharDevice || wh.rdev !== 0) {
        throw new Error("the overlay did not write a char 0/0 whiteout for a deleted file");
      }
    } finally {
      await wd.cleanup();
    }
    return report(
      true,
      `overlayfs works in ${cacheRoot} (${fstype ?? "unknown filesystem"}), as ${mode}, ` +
        `with userxattr, through the ${backend.name} backend`,
    );
  } catch (e) {
    return report(false, explain(e, cacheRoot, mode, fstype));
  } finally {
    await remove(probeRoot, { recursive: true }).catch(() => {});
  }
}

function kernelBefore(major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(osRelease());
  if (!m) return false;
  return Number(m[1]) < major || (Number(m[1]) === major && Number(m[2]) < minor);
}

function explain(e: unknown, root: string, mode: PrivilegeMode, fstype?: string): string {
  const msg = errorText(e);
  const code = (e as { code?: string }).code;
  if (fstype === "overlay") return `${onOverlayfs(root)} [${msg}]`;
  if (code === "EPERM" || code === "EACCES") {
    if (mode === "unprivileged") {
      return `mounting needs privilege: this process is neither root nor in a user namespace; ` +
        `call ensureUserNamespace() first (the strata CLI does) or run as root [${msg}]`;
    }
    if (mode === "userns" && kernelBefore(5, 11)) {
      return `Linux ${osRelease()} does not allow overlayfs in user namespaces ` +
        `(added in 5.11, commit 459c7c565ac36ba09ffbf) [${msg}]`;
    }
    return `the mount was refused [${msg}]`;
  }
  if (code === "ENODEV") return `the kernel has no overlayfs (modprobe overlay) [${msg}]`;
  if (code === "EINVAL" && fstype && !["ext4", "xfs", "btrfs", "tmpfs"].includes(fstype)) {
    return `overlayfs refused ${fstype} under ${root} as its upper directory [${msg}]`;
  }
  return msg;
}
