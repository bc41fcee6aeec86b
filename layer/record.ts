/**
 * A content record of a directory tree: one sha256 over every path, its type,
 * mode, owner, mtime, size, link target, device numbers, xattrs, hardlink
 * identity and file content (of a file with over 1 GiB of holes, its data
 * segments), in a sorted walk. The store keeps it beside each
 * cached layer so `strata verify` can tell whether the layer was tampered with.
 * The same walk collects the uids and gids the tree's inodes use, as sorted
 * ranges: what a reader's id mapping must show the same way (see
 * `overlay/idmap.ts`).
 *
 * @module
 */
import type * as NodeCrypto from "node:crypto";
import {
  AT,
  close,
  dataSegments,
  fgetxattr,
  flistxattr,
  lgetxattrAt,
  llistxattrAt,
  O,
  openat,
  read,
  readDir,
  readlinkat,
  S,
  seekTo,
  type Stat,
  statx,
} from "../sys/fs.ts";
import { ErrnoError } from "../sys/libc.ts";

/** Ids `[first, first + count)`: one run of consecutive uids or gids. */
export type IdSpan = [first: number, count: number];

/** The uids and gids a tree's inodes are owned by, as sorted, disjoint, non-adjacent runs. */
export interface TreeIds {
  /** Owners (`st_uid`); uid 0 too when a file carries `security.capability` (see {@linkcode treeRecord}). */
  uid: IdSpan[];
  /** Groups (`st_gid`). */
  gid: IdSpan[];
}

/**
 * The runs of consecutive ids in `ids` (any order, repeats allowed), sorted.
 *
 * @example Usage
 * ```ts
 * import { idSpans } from "./record.ts";
 * console.log(idSpans([1000, 0, 2, 1, 1000])); // [[0, 3], [1000, 1]]
 * ```
 */
export function idSpans(ids: Iterable<number>): IdSpan[] {
  const sorted = [...new Set(ids)].sort((a, b) => a - b);
  const out: IdSpan[] = [];
  for (const id of sorted) {
    const last = out.at(-1);
    if (last && last[0] + last[1] === id) last[1]++;
    else out.push([id, 1]);
  }
  return out;
}

/** The result of {@linkcode treeRecord}. */
export interface TreeRecord {
  /** `sha256:<hex>` over the whole record. */
  digest: string;
  /** Entries recorded (files, dirs, links, devices; the root included). */
  files: number;
  /** Bytes of regular file content hashed. */
  bytes: number;
  /** The uids and gids of every entry (the root directory included), as seen by this process. */
  ids: TreeIds;
  /** One line per entry, when asked for with `lines: true` (for diffs in tests and `verify`). */
  lines?: string[];
}

/** The content digest of a regular file, known from when it was written (see {@linkcode TreeRecordOptions.fileDigests}). */
export interface FileDigest {
  /** Its size in bytes when it was hashed. */
  size: number;
  /** The hex sha256 of its content. */
  sha256: string;
}

/** Options of {@linkcode treeRecord}. */
export interface TreeRecordOptions {
  /**
   * The content digests of files in the tree by inode number, from the
   * writer that just made it (the applicator's `fileDigests`): a regular
   * file whose inode is listed, with the same size and no holes, is not
   * read. Only for a tree nobody else could have written to since; the
   * record is then what reading every file would give.
   */
  fileDigests?: ReadonlyMap<bigint, FileDigest>;
  /** Keep the per-entry lines in the result. */
  lines?: boolean;
  /** Which xattrs to record (default: all). */
  xattrs?: (name: string) => boolean;
  /** Leave out mtimes of directories (they change with any entry added or removed). */
  ignoreDirMtimes?: boolean;
}

/** Holes up to this many bytes are hashed as zeros (sha256 takes ~0.5 s a GiB); more are not. */
const HOLES_HASHED = 2 ** 30;
const zeros = new Uint8Array(1 << 20);

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/**
 * Records the tree at `dir` (see the module docs). Symlinks are recorded, never
 * followed; hardlinks are recorded as links to the first path (in sorted
 * order) of the same inode. `ids` lists every owner and group; a file
 * capability (`security.capability`) also counts as uid 0, the id it is bound
 * to: the kernel applies it only in namespaces whose root is the host id the
 * writer's root was.
 *
 * @example Usage
 * ```ts
 * import { treeRecord } from "./record.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "x");
 * const r = await treeRecord(dir);
 * console.log(r.digest, r.files, r.bytes); // sha256:..., 2, 1
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function treeRecord(
  dir: string,
  options: TreeRecordOptions = {},
): Promise<TreeRecord> {
  // Loaded here, not at the top: the first `node:` module costs a process
  // ~20 ms, and most importers of this module (the layer resolver on a warm
  // `strata run`) never record a tree.
  createHash ??= (await import("node:crypto")).createHash;
  return await recordTree(dir, options, createHash);
}

let createHash: typeof NodeCrypto.createHash | undefined;

function recordTree(
  dir: string,
  options: TreeRecordOptions,
  createHash: typeof NodeCrypto.createHash,
): Promise<TreeRecord> {
  const total = createHash("sha256");
  const lines: string[] | undefined = options.lines ? [] : undefined;
  const links = new Map<string, string>();
  const buf = new Uint8Array(1 << 20);
  let files = 0, bytes = 0;
  const filter = options.xattrs;
  const uids = new Set<number>(), gids = new Set<number>();
  let known: FileDigest | undefined;

  const root = openat(AT.FDCWD, dir, O.RDONLY | O.DIRECTORY, 0);
  if (root < 0) return Promise.reject(new ErrnoError("open", -root, dir));

  /** Xattrs of the open `fd`, or (fd < 0) of `name` in `dirfd`, not followed. */
  const xattrsOf = (fd: number, dirfd = -1, name = ""): string => {
    const names = fd >= 0 ? flistxattr(fd) : llistxattrAt(dirfd, name);
    if (typeof names === "number") return "";
    names.sort();
    let s = "";
    for (const n of names) {
      if (n === "security.capability") uids.add(0);
      if (filter && !filter(n)) continue;
      const v = fd >= 0 ? fgetxattr(fd, n) : lgetxattrAt(dirfd, name, n);
      s += ` x:${n}=${typeof v === "number" ? "?" : hex(v)}`;
    }
    return s;
  };

  const entry = (dirfd: number, name: string, path: string, st: Stat): void => {
    files++;
    uids.add(st.uid);
    gids.add(st.gid);
    const type = st.mode & S.IFMT;
    const dirMtime = type === S.IFDIR && options.ignoreDirMtimes;
    let line = `${JSON.stringify(path)} ${(st.mode >>> 0).toString(8)} ${st.uid}:${st.gid}` +
      (dirMtime ? "" : ` m:${st.mtimeSec}.${st.mtimeNsec}`);
    if (type === S.IFREG) {
      line += ` s:${st.size}`;
      const id = `${st.dev}/${st.ino}`;
      const first = st.nlink > 1 ? links.get(id) : undefined;
      if (first !== undefined) {
        line += ` link:${JSON.stringify(first)}`;
      } else if (
        (known = options.fileDigests?.get(st.ino)) !== undefined && known.size === st.size &&
        !(st.size > 0 && st.blocks * 512 < st.size)
      ) {
        if (st.nlink > 1) links.set(id, path);
        bytes += st.size;
        line += ` c:${known.sha256}${xattrsOf(-1, dirfd, name)}`;
      } else {
        if (st.nlink > 1) links.set(id, path);
        const fd = openat(dirfd, name, O.RDONLY | O.NOFOLLOW, 0);
        if (fd < 0) throw new ErrnoError("open", -fd, `${dir}/${path}`);
        try {
          const h = createHash("sha256");
          // Content is plain sha256, `c:`; holes are hashed from a zero
          // buffer, not read. A file with more than HOLES_HASHED of holes is
          // hashed by its data segments (offset, length, bytes), `cs:`, so
          // a terabyte of holes is not hashed as zeros.
          // Most files have no holes (their blocks cover their size): read
          // whole, with no lseek; only the others are asked for their data.
          const holey = st.size > 0 && st.blocks * 512 < st.size;
          const segs = holey ? dataSegments(fd, st.size) : -1;
          const data = typeof segs === "number" ? [[0, Infinity] as [number, number]] : segs;
          const holes = typeof segs === "number"
            ? 0
            : st.size - segs.reduce((n, [a, b]) => n + b - a, 0);
          const sparse = holes > HOLES_HASHED;
          let at = 0;
          const zerosTo = (end: number) => {
            for (; at < end; at += Math.min(zeros.length, end - at)) {
              h.update(zeros.subarray(0, Math.min(zeros.length, end - at)));
            }
          };
          for (const [start, end] of data) {
            if (sparse) h.update(`${start}+${end - start}:`);
            else zerosTo(start);
            // SEEK_DATA and SEEK_HOLE moved the file offset.
            const r = holey ? seekTo(fd, start) : 0;
            if (r < 0) throw new ErrnoError("lseek", -r, `${dir}/${path}`);
            for (at = start; at < end;) {
              const n = read(fd, end - at < buf.length ? buf.subarray(0, end - at) : buf);
              if (n < 0) throw new ErrnoError("read", -n, `${dir}/${path}`);
              if (n === 0) break;
              h.update(buf.subarray(0, n));
              bytes += n;
              at += n;
            }
          }
          if (!sparse) zerosTo(st.size);
          line += ` ${sparse ? "cs" : "c"}:${h.digest("hex")}${xattrsOf(fd)}`;
        } finally {
          close(fd);
        }
      }
    } else if (type === S.IFLNK) {
      const t = readlinkat(dirfd, name);
      line += ` l:${JSON.stringify(typeof t === "number" ? "?" : t)}${xattrsOf(-1, dirfd, name)}`;
    } else if (type !== S.IFDIR) {
      // Devices, FIFOs and sockets are never opened (a device read has effects).
      if (type === S.IFCHR || type === S.IFBLK) line += ` d:${st.rdevMajor},${st.rdevMinor}`;
      line += xattrsOf(-1, dirfd, name);
    }
    if (type === S.IFDIR) {
      const fd = name === "" ? root : openat(dirfd, name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW, 0);
      if (fd < 0) throw new ErrnoError("open", -fd, `${dir}/${path}`);
      try {
        line += xattrsOf(fd);
        emit(line);
        const list = readDir(fd);
        if (typeof list === "number") throw new ErrnoError("getdents64", -list, `${dir}/${path}`);
        list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        for (const e of list) {
          const child = path === "." ? e.name : `${path}/${e.name}`;
          const cst = statx(fd, e.name, AT.SYMLINK_NOFOLLOW);
          if (typeof cst === "number") throw new ErrnoError("statx", -cst, `${dir}/${child}`);
          entry(fd, e.name, child, cst);
        }
      } finally {
        if (fd !== root) close(fd);
      }
      return;
    }
    emit(line);
  };

  // Lines go to the hash in batches of 64 KiB, not one call each: ~20 ms
  // less for a layer of 7,000 entries (the digest is the same either way).
  let pending = "";
  const emit = (line: string) => {
    pending += line + "\n";
    if (pending.length > 1 << 16) {
      total.update(pending);
      pending = "";
    }
    lines?.push(line);
  };

  try {
    const st = statx(root, "", AT.EMPTY_PATH);
    if (typeof st === "number") throw new ErrnoError("statx", -st, dir);
    entry(root, "", ".", st);
  } catch (e) {
    return Promise.reject(e);
  } finally {
    close(root);
  }
  total.update(pending);
  return Promise.resolve({
    digest: `sha256:${total.digest("hex")}`,
    files,
    bytes,
    ids: { uid: idSpans(uids), gid: idSpans(gids) },
    lines,
  });
}
