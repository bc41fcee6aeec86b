/**
 * Resolves an image config's `User` (`user`, `uid`, `user:group`, `uid:gid`,
 * `uid:group`, `user:gid`) to the uid, gid and supplementary gids of the
 * container process, against the image's own `/etc/passwd` and `/etc/group`.
 *
 * The rules are the OCI image spec's (config.md, `User`): when no group is
 * given, the user's primary group from `/etc/passwd` and its supplementary
 * groups from `/etc/group` apply; when a group is given, only that group
 * applies. A numeric uid that `/etc/passwd` does not list runs with gid 0, as
 * containerd and Docker do. (The seed kept supplementary groups when a group
 * was given; the image spec and Docker's `USER` documentation say otherwise.)
 *
 * The files are read inside the rootfs with `openat2(RESOLVE_IN_ROOT)`: an
 * image whose `/etc/passwd` is a symlink to `/etc/shadow` or `../../..` reads
 * its own files, never the host's.
 *
 * @module
 */

import { check, cstr, Errno, errno, ErrnoError, libc, readFdAll } from "../sys/libc.ts";
import { SpecError } from "./spec.ts";

/** One `/etc/passwd` entry. */
export interface PasswdEntry {
  /** Login name. */
  name: string;
  /** User id. */
  uid: number;
  /** Primary group id. */
  gid: number;
  /** Home directory. */
  home: string;
}

/** One `/etc/group` entry. */
export interface GroupEntry {
  /** Group name. */
  name: string;
  /** Group id. */
  gid: number;
  /** Member login names. */
  members: string[];
}

/** A resolved container user. */
export interface ResolvedUser {
  /** User id. */
  uid: number;
  /** Primary group id. */
  gid: number;
  /** Supplementary group ids (never containing `gid`). */
  additionalGids: number[];
  /** Login name, when `/etc/passwd` lists the user. */
  username?: string;
  /** Home directory, when `/etc/passwd` lists the user. */
  home?: string;
}

/** The user database of an image: its parsed `/etc/passwd` and `/etc/group` (missing files are empty). */
export interface UserDatabase {
  /** `/etc/passwd` entries. */
  passwd: PasswdEntry[];
  /** `/etc/group` entries. */
  group: GroupEntry[];
}

/**
 * A `passwd` or `group` file line that cannot be parsed; names the file and line.
 *
 * @example Usage
 * ```ts
 * import { UserFileFormatError } from "./user.ts";
 * console.log(new UserFileFormatError("/etc/passwd", 3, "uid \"x\" is not a number").message);
 * ```
 */
export class UserFileFormatError extends SpecError {
  /** Creates the error for `file` at 1-based `line`. */
  constructor(
    readonly file: string,
    readonly line: number,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    // The reason quotes the file's own bytes: control characters (a NUL, an
    // escape sequence) are shown escaped, never written to the terminal.
    const shown = reason.slice(0, 200).replace(
      // deno-lint-ignore no-control-regex -- the control characters are what is escaped
      /[\x00-\x1f\x7f]/g,
      (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
    );
    super(`cannot parse ${file} line ${line}: ${shown}`, options);
    this.name = "UserFileFormatError";
  }
}

/**
 * The user named in `User` is not in the image's `/etc/passwd`.
 *
 * @example Usage
 * ```ts
 * import { UnknownUserError } from "./user.ts";
 * console.log(new UnknownUserError("app").message);
 * ```
 */
export class UnknownUserError extends SpecError {
  /** Creates the error for user name `user`. */
  constructor(readonly user: string, detail = "", options?: ErrorOptions) {
    super(
      `cannot resolve user "${user}": no such user in the image's /etc/passwd${detail}`,
      options,
    );
    this.name = "UnknownUserError";
  }
}

/**
 * The group named in `User` is not in the image's `/etc/group`.
 *
 * @example Usage
 * ```ts
 * import { UnknownGroupError } from "./user.ts";
 * console.log(new UnknownGroupError("staff").message);
 * ```
 */
export class UnknownGroupError extends SpecError {
  /** Creates the error for group name `group`. */
  constructor(readonly group: string, detail = "", options?: ErrorOptions) {
    super(
      `cannot resolve group "${group}": no such group in the image's /etc/group${detail}`,
      options,
    );
    this.name = "UnknownGroupError";
  }
}

/**
 * A `User` string that is none of the six forms the image spec allows.
 *
 * @example Usage
 * ```ts
 * import { InvalidUserError } from "./user.ts";
 * console.log(new InvalidUserError("a:b:c", "too many colons").message);
 * ```
 */
export class InvalidUserError extends SpecError {
  /** Creates the error for `user`. */
  constructor(readonly user: string, reason: string, options?: ErrorOptions) {
    super(`cannot parse user "${user}": ${reason}`, options);
    this.name = "InvalidUserError";
  }
}

const MAX_ID = 4294967294; // (uid_t)-1 is "no change" to the kernel

function parseID(s: string): number | undefined {
  if (!/^[0-9]+$/.test(s)) return undefined;
  const n = Number(s);
  return n <= MAX_ID ? n : undefined;
}

function lines(text: string): [number, string][] {
  const out: [number, string][] = [];
  text.split("\n").forEach((l, i) => {
    const line = l.endsWith("\r") ? l.slice(0, -1) : l;
    // Blank lines, comments and NIS compat entries ("+", "-") name nobody.
    if (line.trim() === "" || line.startsWith("#") || /^[+-]/.test(line)) return;
    out.push([i + 1, line]);
  });
  return out;
}

/**
 * Parses `/etc/passwd` text: `name:password:uid:gid:gecos:home:shell`.
 *
 * @throws {UserFileFormatError} for a line without 7 fields or with a
 *   non-numeric uid or gid; the message names `file` and the line.
 *
 * @example Usage
 * ```ts
 * import { parsePasswd } from "./user.ts";
 * console.log(parsePasswd("app:x:1000:1000::/home/app:/bin/sh\n"));
 * ```
 */
export function parsePasswd(text: string, file = "/etc/passwd"): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const [n, line] of lines(text)) {
    const f = line.split(":");
    if (f.length !== 7) {
      throw new UserFileFormatError(
        file,
        n,
        `expected 7 colon-separated fields, found ${f.length}`,
      );
    }
    const uid = parseID(f[2]);
    if (uid === undefined) throw new UserFileFormatError(file, n, `uid "${f[2]}" is not a number`);
    const gid = parseID(f[3]);
    if (gid === undefined) throw new UserFileFormatError(file, n, `gid "${f[3]}" is not a number`);
    out.push({ name: f[0], uid, gid, home: f[5] });
  }
  return out;
}

/**
 * Parses `/etc/group` text: `name:password:gid:member,member`.
 *
 * @throws {UserFileFormatError} for a line without 4 fields or with a
 *   non-numeric gid; the message names `file` and the line.
 *
 * @example Usage
 * ```ts
 * import { parseGroup } from "./user.ts";
 * console.log(parseGroup("staff:x:50:app,web\n")[0].members); // ["app", "web"]
 * ```
 */
export function parseGroup(text: string, file = "/etc/group"): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const [n, line] of lines(text)) {
    const f = line.split(":");
    if (f.length !== 4) {
      throw new UserFileFormatError(
        file,
        n,
        `expected 4 colon-separated fields, found ${f.length}`,
      );
    }
    const gid = parseID(f[2]);
    if (gid === undefined) throw new UserFileFormatError(file, n, `gid "${f[2]}" is not a number`);
    const members = f[3].split(",").map((m) => m.trim()).filter((m) => m !== "");
    out.push({ name: f[0], gid, members });
  }
  return out;
}

/**
 * Resolves a `User` string against `db`, per the OCI image spec.
 *
 * @throws {InvalidUserError} for an empty part or more than one colon.
 * @throws {UnknownUserError} for a user name not in `db.passwd`.
 * @throws {UnknownGroupError} for a group name not in `db.group`.
 *
 * @example Usage
 * ```ts
 * import { parseGroup, parsePasswd, resolveUser } from "./user.ts";
 * const db = {
 *   passwd: parsePasswd("app:x:1000:1000::/home/app:/bin/sh\n"),
 *   group: parseGroup("app:x:1000:\nstaff:x:50:app\n"),
 * };
 * console.log(resolveUser("app", db)); // uid 1000, gid 1000, additionalGids [50]
 * console.log(resolveUser("app:staff", db)); // uid 1000, gid 50, additionalGids []
 * ```
 */
export function resolveUser(user: string, db: UserDatabase, detail = ""): ResolvedUser {
  const parts = user.split(":");
  if (parts.length > 2) {
    throw new InvalidUserError(user, "expected user[:group], found more than one colon");
  }
  const [u, g] = parts;
  if (u === "") throw new InvalidUserError(user, "the user part is empty");
  if (g === "") throw new InvalidUserError(user, "the group part is empty");

  const uid = parseID(u);
  const entry = uid === undefined
    ? db.passwd.find((p) => p.name === u)
    : db.passwd.find((p) => p.uid === uid);
  if (entry === undefined && uid === undefined) throw new UnknownUserError(u, detail);
  const resolvedUid = uid ?? entry!.uid;

  const out: ResolvedUser = { uid: resolvedUid, gid: 0, additionalGids: [] };
  if (entry) {
    out.username = entry.name;
    out.home = entry.home;
  }

  if (g !== undefined) {
    // A group was given: it is the only group (image spec; Docker's USER).
    const gid = parseID(g);
    if (gid !== undefined) out.gid = gid;
    else {
      const ge = db.group.find((x) => x.name === g);
      if (!ge) throw new UnknownGroupError(g, detail);
      out.gid = ge.gid;
    }
    return out;
  }

  // No group: the primary group from passwd, supplementary ones from group.
  // An unlisted numeric uid runs with gid 0, as containerd and Docker do.
  if (!entry) return out;
  out.gid = entry.gid;
  const extra = new Set<number>();
  for (const ge of db.group) {
    if (ge.gid !== entry.gid && ge.members.includes(entry.name)) extra.add(ge.gid);
  }
  out.additionalGids = [...extra];
  return out;
}

const SYS_openat2 = 437n; // the same on x86_64 and aarch64 (asm-generic)
const O_RDONLY = 0;
const O_NONBLOCK = 0o4000;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
const O_PATH = 0o10000000;
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_IN_ROOT = 0x10;
/** Files larger than this are not user databases: refuse rather than read /dev/zero forever. */
const MAX_USER_FILE = 16 << 20;

/**
 * Reads the file at `path` inside the directory tree `root`, resolving every
 * symlink and `..` as if `root` were `/` (`openat2` with `RESOLVE_IN_ROOT`).
 * Returns `undefined` when the file does not exist.
 *
 * @throws {ErrnoError} when the file cannot be opened or read.
 * @throws {RangeError} for a file larger than 16 MiB (a device, most likely).
 *
 * @example Usage
 * ```ts ignore
 * import { readFileInRoot } from "./user.ts";
 * const text = readFileInRoot("/var/lib/strata/containers/x/bundle/rootfs", "/etc/passwd");
 * ```
 */
export function readFileInRoot(root: string, path: string): Uint8Array | undefined {
  const c = libc();
  const dirfd = check(c.open(cstr(root), O_PATH | O_DIRECTORY | O_CLOEXEC, 0), "open", root);
  try {
    const how = new BigUint64Array([
      BigInt(O_RDONLY | O_NONBLOCK | O_CLOEXEC),
      0n,
      BigInt(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS),
    ]);
    const rel = path.replace(/^\/+/, "");
    const fd = Number(
      c.sys_openat2(SYS_openat2, BigInt(dirfd), cstr(rel), new Uint8Array(how.buffer), 24n),
    );
    if (fd < 0) {
      const e = errno();
      if (e === Errno.ENOENT) return undefined;
      throw new ErrnoError("openat2", e, `${root}${path}`);
    }
    try {
      return readFdAll(fd, `${root}${path}`, MAX_USER_FILE);
    } finally {
      c.close(fd);
    }
  } finally {
    c.close(dirfd);
  }
}

/**
 * Reads and parses the user database of the rootfs at `root` safely (see
 * {@linkcode readFileInRoot}). Missing files give empty lists; error messages
 * name the file as `<root>/etc/passwd`.
 *
 * @example Usage
 * ```ts ignore
 * import { readUserDatabase, resolveUser } from "./user.ts";
 * const db = readUserDatabase("/path/to/rootfs");
 * console.log(resolveUser("nobody", db));
 * ```
 */
export function readUserDatabase(root: string): UserDatabase {
  const dec = new TextDecoder();
  const p = readFileInRoot(root, "/etc/passwd");
  const g = readFileInRoot(root, "/etc/group");
  return {
    passwd: p ? parsePasswd(dec.decode(p), `${root}/etc/passwd`) : [],
    group: g ? parseGroup(dec.decode(g), `${root}/etc/group`) : [],
  };
}
