/**
 * Mount option strings and the limits they meet, for overlayfs and tmpfs:
 * what fits in the one page `mount(2)` takes, what `fsconfig` takes, what
 * `/proc/self/mountinfo` can show. Apart from the mount backends
 * (`mount.ts`) so that a warm `strata run`, which makes two `mount(2)` calls,
 * builds their options without loading the backends.
 *
 * @module
 */
import { cstr } from "./libc.ts";

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

/** overlayfs stacks at most this many lower layers (`OVL_MAX_STACK`). */
export const MAX_LOWER_LAYERS = 500;

/** Options longer than this go through short symlink names (the limit is one 4 KiB page). */
export const OPTION_BUDGET = 3800;
/**
 * `fsconfig(FSCONFIG_SET_STRING)` copies its value with `strndup_user(value,
 * 256)` (fs/fsopen.c): a value must be shorter than this, in bytes.
 */
export const FSCONFIG_STRING_MAX = 256;
/** The longest path the kernel takes as a string, NUL included (`PATH_MAX`). */
export const PATH_MAX = 4096;

/**
 * Tells whether `s`, as the bytes the kernel gets, is shorter than `limit`
 * bytes: the length alone decides almost always; only a string between a
 * third of the limit and the limit is encoded to count.
 */
export function shorterThan(s: string, limit: number): boolean {
  if (s.length * 3 < limit) return true;
  if (s.length >= limit) return false;
  return cstr(s).length - 1 < limit;
}

export function validateOverlay(target: string, o: OverlayMountOptions): void {
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
export function checkPathMax(path: string, what: string, target = path): void {
  if (shorterThan(path, PATH_MAX)) return;
  throw new RangeError(
    `Cannot mount on ${clip(target)}: the ${what} ${clip(path)} is ${cstr(path).length - 1} ` +
      `bytes long, and the kernel takes paths shorter than ${PATH_MAX} bytes (PATH_MAX)`,
  );
}

/** Escapes a path for a `lowerdir=`/`upperdir=` option string. */
export function escapeOption(path: string): string {
  return path.replace(/[\\,:]/g, (c) => "\\" + c);
}

export function tmpfsData(o: TmpfsMountOptions): string[] {
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
export const MOUNTINFO_BUDGET = 56 * 1024;

/**
 * Tells whether `dirs` (option, path), as overlayfs shows them in mountinfo
 * (`key=path,`, with space, tab, newline, backslash and comma escaped as
 * `\ooo`), fit in {@linkcode MOUNTINFO_BUDGET}.
 */
export function mountinfoFits(dirs: readonly [key: string, path: string][]): boolean {
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
export interface Link {
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
export function overlayData(o: OverlayMountOptions): { data: string; links?: Link[] } {
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
