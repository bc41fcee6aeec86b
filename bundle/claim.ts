/**
 * Claiming a container directory, `containers/<id>/`: its `lock`, held while
 * the bundle exists, and `bundle.json`, the layers it mounts, which `prune`
 * and `verify` honour while the lock is held. Apart from `bundler.ts` so that
 * a warm `strata run` claims one without loading the bundler.
 *
 * @module
 */
import { join } from "@std/path";

/** What a claim records of its image: an `Image` has all of it. */
export interface ClaimedImage {
  /** The image's name, when known. */
  readonly name?: string;
  /** The manifest digest. */
  readonly digest: string;
  /** The layers it mounts, bottom first. */
  readonly layers: readonly { readonly diffID: string }[];
}

/** What `containers/<id>/bundle.json` records. */
export interface BundleRecord {
  /** The bundle id. */
  id: string;
  /** The image's name, when known. */
  image?: string;
  /** The image's manifest digest. */
  imageDigest: string;
  /** The diff_ids of the layers the bundle mounts, bottom first. */
  diffIDs: string[];
  /** The pid of the process that made it. */
  pid: number;
  /** When it was made (RFC 3339). */
  created: string;
}

/**
 * Claims `image`'s layers under the name `id`: makes
 * `containersDir/.tmp-<random>/` holding a `lock` (held by the returned
 * file) and a `bundle.json` record listing the diff_ids, which `prune` and
 * `verify` honour while the lock is held. The caller renames the directory
 * to its name and closes the lock when done; on failure nothing is left.
 *
 * @example Usage
 * ```ts ignore
 * import { claimContainer } from "./claim.ts";
 * const { lock, tmp } = await claimContainer("/var/lib/strata/containers", "export-1", image);
 * ```
 */
export async function claimContainer(
  containersDir: string,
  id: string,
  image: ClaimedImage,
): Promise<{ lock: Deno.FsFile; tmp: string }> {
  // Synchronous calls: a fresh directory, a lock nobody else can hold yet and
  // a small record cost less here than a thread-pool round trip each.
  const tmp = join(containersDir, `.tmp-${crypto.randomUUID().slice(0, 13)}`);
  Deno.mkdirSync(tmp, { mode: 0o700 });
  const lock = Deno.openSync(join(tmp, "lock"), { write: true, create: true, mode: 0o600 });
  try {
    lock.lockSync(true);
    const record: BundleRecord = {
      id,
      image: image.name,
      imageDigest: image.digest,
      diffIDs: image.layers.map((l) => l.diffID),
      pid: Deno.pid,
      created: new Date().toISOString(),
    };
    Deno.writeTextFileSync(join(tmp, "bundle.json"), JSON.stringify(record));
  } catch (e) {
    lock.close();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return { lock, tmp };
}
