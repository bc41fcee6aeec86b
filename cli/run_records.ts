/**
 * Run records (cli/cmd_run_warm.ts) on the long way's side: written by a run
 * that made its bundle the long way, removed with the names `rm` removes,
 * and checked by `verify`, which builds again what it can of each from the
 * verified manifest and config and removes those that differ.
 *
 * @module
 */
import { join } from "@std/path";
import type { CachedBundle } from "../bundle/bundler.ts";
import { inUserNamespace, outsideUid } from "../bundle/host.ts";
import { defaultStateDir, findRuntime, type RuntimeChoice } from "../bundle/run.ts";
import { runTemplate } from "../bundle/run_template.ts";
import { digestOf } from "../image/blob.ts";
import { OciLayoutSource, openOciLayout, selectFromIndex } from "../image/layout.ts";
import { isShortName, parseRef } from "../image/ref.ts";
import type { SourceImage } from "../image/source.ts";
import { canonicalName, ImageStore } from "../image/store.ts";
import type { ImageConfig, ImageManifest } from "../image/types.ts";
import { currentIdMap } from "../overlay/cache.ts";
import { idMapKey } from "../overlay/idmap.ts";
import { chainKey, layerKey } from "../overlay/resolver.ts";
import { collapsedWarning, USERNS_ARGS_ENV } from "../overlay/userns.ts";
import { readProcText } from "../sys/proc.ts";
import { getEnv } from "../sys/env.ts";
import {
  mkdirSync,
  readDirSync,
  readTextFileSync,
  removeSync,
  renameSync,
  writeTextFileSync,
} from "../sys/files.ts";
import { escapeControls } from "./output.ts";
import type { Context } from "./context.ts";
import {
  codeIdentity,
  hostKey,
  isRunRecord,
  programStamp,
  readRunRecord,
  RUN_RECORD_FORMAT,
  type RunRecord,
  runRecordPath,
  type RunRecordUserns,
  SPEC_ARGS,
  SPEC_ROOTFS,
} from "./cmd_run_warm.ts";

/**
 * A record's file: its JSON on one line, the sha256 (hex) of that line on
 * the next, as cmd_run_warm.ts `readRunRecord` checks it.
 *
 * @example Usage
 * ```ts ignore
 * writeTextFileSync(path, recordFile(record));
 * ```
 */
export function recordFile(record: RunRecord): string {
  const json = JSON.stringify(record);
  return `${json}\n${digestOf(json).slice("sha256:".length)}\n`;
}

/**
 * Writes the run record for `ref` (cmd_run_warm.ts), so that the next
 * `strata run` of it takes the short way: for an OCI layout or a pulled,
 * fully qualified registry name, run without `--platform` (as root, or in the
 * user namespace strata made), while the
 * bundle's rootfs is fresh (the record's spec looks the image's user up in
 * it). A run whose record would say what this one's says writes it again all
 * the same: it costs this (long) run a millisecond.
 */
export async function recordRun(
  ctx: Context,
  ref: string,
  image: SourceImage,
  bundle: CachedBundle,
  rt: RuntimeChoice,
): Promise<void> {
  if (ctx.options.platform !== undefined) return;
  const path = runRecordPath(ctx.cacheRoot, ref);
  if (path === undefined) return;
  const parsed = parseRef(ref);
  if (parsed.transport !== "oci" && parsed.transport !== "docker") return;
  // A short name means what registries.conf makes of it, and a digest the
  // first name holding it: both are looked up the long way.
  if (
    parsed.transport === "docker" && (isShortName(ref) || /^[a-z0-9]+:[0-9a-f]{32,}$/i.test(ref))
  ) {
    return;
  }
  // Unprivileged: how the namespace was made (overlay/userns.ts), and what it maps.
  let userns: RunRecordUserns | undefined;
  if (inUserNamespace()) {
    const made = JSON.parse(getEnv(USERNS_ARGS_ENV) ?? "null") as unknown;
    if (!Array.isArray(made) || !made.length || !made.every((a) => typeof a === "string")) return;
    const line = (path: string) =>
      readProcText(path).split("\n").map((l) => l.trim().split(/\s+/).join(" ")).filter(Boolean)
        .join(" ");
    const warning = await collapsedWarning();
    userns = {
      unshare: made,
      uidMap: line("/proc/self/uid_map"),
      gidMap: line("/proc/self/gid_map"),
      ...(warning ? { warning: escapeControls(warning) } : {}),
    };
  } else if (outsideUid() !== 0) return;
  let lookup = image.digest;
  let lookupSize = image.manifestBytes.length;
  let lookupMediaType = image.manifest.mediaType ?? "";
  if (parsed.transport === "oci") {
    // The entry of index.json the tag selects, as the layout gives it, and
    // only when the layout itself still yields this image (not when this run
    // fell back to the stored one, which the long way says every time).
    const source = new OciLayoutSource(parsed.path, image.name);
    const entry = selectFromIndex(await source.readIndex(), parsed.tag, source.name);
    if (entry.digest !== (image.indexDigest ?? image.digest)) return;
    if ((await openOciLayout(parsed.path, parsed.tag)).digest !== image.digest) return;
    lookup = entry.digest;
    lookupSize = entry.size;
    lookupMediaType = entry.mediaType;
  }
  const template = await runTemplate(image.config, bundle.rootfs, image.name ?? image.digest);
  const host = hostKey(userns ? "userns" : "root", outsideUid());
  const code = codeIdentity();
  if (!template || host === undefined || code === undefined) return;
  const store = await ImageStore.create(ctx.cacheRoot);
  const name = canonicalName(ref);
  let crun: [string, number, number] | null | undefined;
  if (rt.name === "runc") {
    const found = findRuntime("crun");
    const st = found ? programStamp(found) : undefined;
    if (found && !st) return;
    crun = found && st ? [found, ...st] : null;
  }
  const spec = template.spec;
  const args = spec.process!.args ?? [];
  spec.root!.path = SPEC_ROOTFS;
  spec.process!.args = [SPEC_ARGS];
  const record: RunRecord = {
    format: RUN_RECORD_FORMAT,
    ref,
    name,
    refFile: await store.refFile(name),
    lookup,
    lookupSize,
    lookupMediaType,
    digest: image.digest,
    mapKey: idMapKey(currentIdMap()),
    layers: image.layers.map((l, i) => ({
      diffID: l.diffID,
      dirs: [layerKey(l.diffID), chainKey(l.diffID, image.layers.slice(0, i))],
    })),
    entrypoint: template.entrypoint,
    args,
    spec: JSON.stringify(spec),
    runtime: {
      name: rt.name,
      path: rt.path,
      ...(rt.reason ? { reason: rt.reason } : {}),
      ...(crun !== undefined ? { crun } : {}),
    },
    stateDir: defaultStateDir(rt.name),
    host,
    code,
    ...(userns ? { userns } : {}),
  };
  writeRunRecord(path, record);
}

/** Writes `record` to `path`: a temporary file renamed into place (a reader sees one or the other). */
function writeRunRecord(path: string, record: RunRecord): void {
  mkdirSync(join(path, ".."), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    writeTextFileSync(tmp, recordFile(record), { mode: 0o600 });
    renameSync(tmp, path);
  } catch (e) {
    try {
      removeSync(tmp);
    } catch {
      // not written
    }
    throw e;
  }
}

/** The directory of run records. */
function runsDir(cacheRoot: string): string {
  return join(cacheRoot, "images", "runs");
}

/**
 * Removes the records of the names in `names` (canonical names, as `rm`
 * reports them), and any record that cannot be read; returns how many.
 *
 * @example Usage
 * ```ts ignore
 * await removeRunRecords("/var/lib/strata", ["docker.io/library/busybox:latest"]);
 * ```
 */
export async function removeRunRecords(
  cacheRoot: string,
  names: readonly string[],
): Promise<number> {
  let n = 0;
  let entries: Deno.DirEntry[];
  try {
    entries = [...readDirSync(runsDir(cacheRoot))];
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.endsWith(".json")) continue;
    const path = join(runsDir(cacheRoot), e.name);
    const rec = await readRunRecord(path);
    if (rec && !names.includes(rec.name)) continue;
    try {
      removeSync(path);
      n++;
    } catch {
      // removed meanwhile
    }
  }
  return n;
}

/**
 * The run records of the cache that are damaged, with why: unreadable,
 * another format, a checksum that does not match, filed under another
 * reference's name, or saying what the verified manifest and config of its
 * image do not (its layers, their directories, the image's Entrypoint), or
 * a spec without its placeholders. (What the spec says of the image's user
 * cannot be built again without the image mounted: the checksum stands for
 * it.) Blobs of the image store that are missing leave the record alone:
 * the next run of it takes the long way.
 *
 * @example Usage
 * ```ts ignore
 * for (const r of damagedRunRecords(root)) console.log(r.path, r.reason);
 * ```
 */
export function damagedRunRecords(cacheRoot: string): { path: string; reason: string }[] {
  const out: { path: string; reason: string }[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...readDirSync(runsDir(cacheRoot))];
  } catch {
    return out;
  }
  const blob = (digest: string) => {
    const [alg, hex] = digest.split(":");
    try {
      return JSON.parse(
        readTextFileSync(join(cacheRoot, "images", "blobs", alg, hex)),
      ) as unknown;
    } catch {
      return undefined;
    }
  };
  for (const e of entries) {
    if (!e.isFile || !e.name.endsWith(".json")) continue;
    const path = join(runsDir(cacheRoot), e.name);
    const why = (() => {
      let text: string;
      try {
        text = readTextFileSync(path);
      } catch (err) {
        return `it cannot be read (${(err as Error).message})`;
      }
      const [line, sum] = text.split("\n");
      if (digestOf(line ?? "").slice("sha256:".length) !== sum) {
        return "its checksum does not match its contents";
      }
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch (err) {
        return `it is not JSON (${(err as Error).message})`;
      }
      if (!isRunRecord(rec)) return "it is not a run record of this strata";
      if (runRecordPath(cacheRoot, rec.ref) !== path) {
        return `it is the record of ${rec.ref}, filed under another name`;
      }
      const json = JSON.stringify.bind(JSON);
      const rootfs = json(SPEC_ROOTFS), args = json([SPEC_ARGS]);
      if (rec.spec.split(rootfs).length !== 2 || rec.spec.split(args).length !== 2) {
        return "its spec lacks the places of the rootfs and the command";
      }
      const manifest = blob(rec.digest) as ImageManifest | undefined;
      const config = manifest?.config?.digest
        ? blob(manifest.config.digest) as ImageConfig | undefined
        : undefined;
      if (!config) return undefined; // the store lost them: the next run takes the long way
      const diffIDs = config.rootfs?.diff_ids ?? [];
      if (json(diffIDs) !== json(rec.layers.map((l) => l.diffID))) {
        return "its layers are not the image's";
      }
      for (const [i, l] of rec.layers.entries()) {
        const want = [layerKey(l.diffID), chainKey(l.diffID, diffIDs.slice(0, i))];
        if (json(l.dirs) !== json(want)) return `its directories of layer ${l.diffID} are wrong`;
      }
      if (json(rec.entrypoint) !== json(config.config?.Entrypoint ?? [])) {
        return "its Entrypoint is not the image's";
      }
      return undefined;
    })();
    if (why) out.push({ path, reason: why });
  }
  return out;
}
