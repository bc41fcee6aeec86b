/**
 * The steps commands share, written once: enter the user/mount namespace,
 * open an image the way the CLI names it (a transport reference, a pulled
 * name, or a manifest digest), and bring every layer into the cache with
 * progress on stderr.
 *
 * @module
 */
import { join } from "@std/path";
import { bindLibc } from "../sys/libc.ts";
import { SPAWN_SYMBOLS } from "../sys/spawn.ts";
import type { Image } from "../image/types.ts";
import { openImage, type OpenImageOptions, saveImage } from "../image/open.ts";
import { ImageNotFoundError, ImageStore } from "../image/store.ts";
import { parseRef } from "../image/ref.ts";
import { parsePlatform, platformMatches, PlatformNotFoundError } from "../image/platform.ts";
import type { SourceImage } from "../image/source.ts";
import { CachingLayerResolver } from "../overlay/resolver.ts";
import { TempWork } from "../overlay/lock.ts";
import { ensureUserNamespace, enterThreadMountNamespace, USERNS_ENV } from "../overlay/userns.ts";
import type { Context } from "./context.ts";
import { imageSourceOptions } from "./context.ts";
import { UsageError } from "./args.ts";
import { formatMs } from "./output.ts";
import { claimContainer } from "../bundle/bundler.ts";
import { getEnv } from "../sys/env.ts";
import { mkdir, readTextFileSync, remove, writeTextFileSync } from "../sys/files.ts";
import { getUid } from "../sys/process.ts";

/**
 * Makes mounting possible: re-executes the CLI in a private mount namespace
 * (as root) or a user namespace (as anyone else) unless it already runs in
 * one. The parent never returns: it exits with the child's status.
 *
 * @example Usage
 * ```ts ignore
 * await enterNamespace(ctx);
 * ```
 */
export async function enterNamespace(ctx: Context): Promise<void> {
  await ensureUserNamespace({
    quiet: ctx.out.mode === "quiet",
    warn: (m) => ctx.out.note(m),
  });
}

/** The options {@linkcode openImage} takes, from the command line. */
export function openOptions(ctx: Context): OpenImageOptions {
  const s = imageSourceOptions(ctx.options, ctx.args.command);
  return {
    platform: s.platform,
    tlsVerify: s.tlsVerify,
    creds: s.creds ? `${s.creds.username}:${s.creds.password}` : undefined,
    registriesConf: ctx.options["registries-conf"] as string | undefined,
    cacheRoot: ctx.cacheRoot,
    signal: ctx.signal,
    onNote: (m) => ctx.out.note(m),
    onWarning: (m) => ctx.out.warn(m),
    chooseShortName: terminalChooser(),
    // A compressed archive's decompressed copy goes to a work directory of
    // the cache, which the next command reclaims if this one is killed
    // (in $TMPDIR nothing would). The cache may be new: make its dirs first.
    tempDir: async () => {
      for (const d of ["locks", "tmp"]) {
        await mkdir(join(ctx.cacheRoot, d), { recursive: true, mode: 0o700 });
      }
      const work = await TempWork.create(ctx.cacheRoot);
      return { path: work.path, remove: () => work.remove(), removeSync: () => work.removeSync() };
    },
  };
}

/**
 * An ambiguous short name's prompt, as podman's: only when stdin and stdout
 * are both terminals (a script never waits on it). The candidates are
 * numbered on stderr and the answer is read from stdin.
 */
function terminalChooser(): OpenImageOptions["chooseShortName"] {
  let tty = false;
  try {
    tty = Deno.stdin.isTerminal() && Deno.stdout.isTerminal();
  } catch {
    tty = false;
  }
  if (!tty) return undefined;
  return async (name, candidates) => {
    const lines = candidates.map((c, i) => `  ${i + 1}) ${c}`).join("\n");
    const ask =
      `? short name "${name}" could be one of:\n${lines}\n? choose 1-${candidates.length}: `;
    await Deno.stderr.write(new TextEncoder().encode(ask));
    const buf = new Uint8Array(256);
    let answer = "";
    while (!answer.includes("\n")) {
      const n = await Deno.stdin.read(buf);
      if (n === null) break;
      answer += new TextDecoder().decode(buf.subarray(0, n));
      if (answer.length > 64) break;
    }
    const i = Number(answer.trim()) - 1;
    if (!Number.isInteger(i) || i < 0 || i >= candidates.length) {
      throw new UsageError(
        `no image chosen for short name "${name}" (answered '${answer.trim()}')`,
      );
    }
    return candidates[i];
  };
}

function isDigest(s: string): boolean {
  return /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$/.test(s);
}

/**
 * Opens `ref` for a command:
 * - `pull`: always asks the source (a registry is asked for the tag again);
 * - otherwise a pulled name or manifest digest opens from the image store
 *   (offline), and a reference not pulled yet is opened from its source and
 *   saved under its name.
 *
 * The image is not saved under `ref` here: {@linkcode saveOpened} does that
 * once its layers are cached, so a pull that fails on a damaged layer leaves
 * the name pointing where it did.
 *
 * @example Usage
 * ```ts ignore
 * const image = await openForCli(ctx, "oci:/tmp/layout:v1", "missing");
 * ```
 */
export async function openForCli(
  ctx: Context,
  ref: string,
  pull: "missing" | "always",
): Promise<SourceImage> {
  const options = { ...openOptions(ctx), pull, save: false };
  if (isDigest(ref)) {
    const store = await ImageStore.create(ctx.cacheRoot);
    return await store.open(ref, {
      signal: ctx.signal,
      openSource: (source, _digest, signal) =>
        openImage(source, { ...options, cacheRoot: undefined, signal }),
    });
  }
  try {
    return await openImage(ref, options);
  } catch (e) {
    // A name pulled from a layout or archive that is gone since: the store
    // still has its manifest and config, and the layer cache its layers.
    // Not when the source answered that it has no image for the platform
    // asked for, nor when the stored image is for another one: a name
    // pulled for linux/arm/v6 must not run when linux/s390x is asked for.
    // Not for registry names either: openImage looked in the store for them
    // already (a short name by what registries.conf makes of it).
    if (pull === "always" || e instanceof PlatformNotFoundError) throw e;
    if (parseRef(ref).transport === "docker") throw e;
    const store = await ImageStore.create(ctx.cacheRoot);
    const rec = await store.resolve(ref).catch(() => undefined);
    if (!rec) throw e;
    if (
      options.platform &&
      !platformMatches(parsePlatform(options.platform), parsePlatform(rec.platform), true)
    ) throw e;
    ctx.out.note(`${ref}: source unavailable (${(e as Error).message}); using the stored image`);
    return await store.open(rec.name, { signal: ctx.signal });
  }
}

/**
 * Saves `image` under `ref` in the image store, once its layers are cached
 * (a manifest digest names no new image: nothing to save).
 *
 * @example Usage
 * ```ts ignore
 * await saveOpened(ctx, "oci:/tmp/layout:v1", image);
 * ```
 */
export async function saveOpened(ctx: Context, ref: string, image: SourceImage): Promise<void> {
  if (!isDigest(ref)) await saveImage(ctx.cacheRoot, ref, image);
}

/** What {@linkcode cacheLayers} returns. */
export interface CachedLayers {
  /** Lower directories, bottom first. */
  paths: string[];
  /** How many layers had to be extracted (0: all were cached). */
  extracted: number;
  /** Milliseconds it took. */
  ms: number;
}

/** A command's layer resolver and how many layers it extracted so far. */
export interface CountingResolver {
  /** The resolver (warnings go to the command's output). */
  resolver: CachingLayerResolver;
  /** Layers extracted through it so far. */
  extracted(): number;
}

/**
 * Opens the layer cache for a command: warnings go to its output, and the
 * layers it extracts are counted.
 *
 * @example Usage
 * ```ts ignore
 * const { resolver, extracted } = await commandResolver(ctx);
 * ```
 */
export async function commandResolver(ctx: Context): Promise<CountingResolver> {
  let extracted = 0;
  const resolver = await CachingLayerResolver.create(ctx.cacheRoot, {
    reextractUnmapped: ctx.options["reextract-unmapped"] === true,
    onWarning: (m) => ctx.out.warn(m),
    onEvent: (e) => {
      if (e.type === "extract") extracted++;
    },
  });
  return { resolver, extracted: () => extracted };
}

/**
 * Resolves every layer of `image` into the cache (extracting what is
 * missing), reporting per-layer progress on stderr. `counting` is the
 * resolver to use (default: a new {@linkcode commandResolver}).
 *
 * @example Usage
 * ```ts ignore
 * const { paths } = await cacheLayers(ctx, image);
 * ```
 */
export async function cacheLayers(
  ctx: Context,
  image: Image,
  counting?: CountingResolver,
): Promise<CachedLayers> {
  const started = performance.now();
  const { resolver, extracted } = counting ?? await commandResolver(ctx);
  const before = extracted();
  const progress = ctx.out.layers(image.layers);
  let paths: string[];
  try {
    // Later layers download while earlier ones are applied, in order (overlay/prefetch.ts).
    // Not from a layout or an archive: their blobs are local files, and
    // spooling them ahead would only copy them (bench/pull.ts: 5-25% slower).
    const local = /^(oci|oci-archive|docker-archive):/.test(image.name ?? "");
    paths = await resolver.resolveAll(image.layers, {
      signal: ctx.signal,
      concurrency: local ? 0 : undefined,
      onLayer: (e) => {
        const p = progress[e.index];
        if (e.type === "fetch-start") p.start();
        else if (e.type === "fetch-bytes") p.fetched(e.bytes!);
        else if (e.type === "apply-bytes") p.applied(e.bytes!);
        else if (e.type === "cached") p.done(true);
        else if (e.type === "done") p.done(!e.extracted);
        else if (e.type === "failed") p.failed();
      },
    });
  } finally {
    ctx.out.endLayers();
  }
  return { paths, extracted: extracted() - before, ms: performance.now() - started };
}

/**
 * Opens `ref` and makes sure all its layers are cached; notes how long it
 * took. The layer cache opens (checks its id map, reclaims dead processes'
 * temporary directories) while the image is being opened; the resolver is
 * returned for later use (a bundler).
 *
 * @example Usage
 * ```ts ignore
 * const { image, paths } = await pullImage(ctx, "oci:/tmp/layout:v1", "always");
 * ```
 */
export async function pullImage(
  ctx: Context,
  ref: string,
  pull: "missing" | "always",
  opened?: OpenedImage,
): Promise<
  {
    image: SourceImage;
    paths: string[];
    extracted: number;
    ms: number;
    resolver: CachingLayerResolver;
  }
> {
  const started = performance.now();
  const { image, counting } = opened ?? await openWithCache(ctx, ref, pull);
  // Until the image is saved, no name references the layers extracted so far:
  // a claim (as a container's) keeps `prune` from removing them under the
  // pull, which would fail the next layer that reads them as its lowers.
  const { lock, tmp } = await claimContainer(
    join(ctx.cacheRoot, "containers"),
    `pull-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`,
    image,
  );
  let r: CachedLayers;
  try {
    r = await cacheLayers(ctx, image, counting);
    await saveOpened(ctx, ref, image);
  } finally {
    await remove(tmp, { recursive: true }).catch(() => {});
    lock.close(); // last: until the claim is gone, prune keeps its layers
  }
  r.ms = performance.now() - started;
  if (r.extracted > 0) {
    ctx.out.note(
      `${ref}: ${r.extracted} of ${image.layers.length} layers extracted in ${formatMs(r.ms)}`,
    );
  }
  return { image, ...r, resolver: counting.resolver };
}

/** An image and the layer cache, opened side by side ({@linkcode openWithCache}). */
export interface OpenedImage {
  /** The image. */
  image: SourceImage;
  /** The command's layer resolver. */
  counting: CountingResolver;
}

/**
 * Opens `ref` (see {@linkcode openForCli}) and the layer cache (checking its
 * id map, reclaiming dead processes' temporary directories) at the same
 * time; the image's own failure is reported first, as if one came after the
 * other.
 *
 * @example Usage
 * ```ts ignore
 * const { image, counting } = await openWithCache(ctx, "oci:/tmp/layout:v1", "missing");
 * ```
 */
export async function openWithCache(
  ctx: Context,
  ref: string,
  pull: "missing" | "always",
): Promise<OpenedImage> {
  const [opened, counting] = await Promise.allSettled([
    openForCli(ctx, ref, pull),
    commandResolver(ctx),
  ]);
  if (opened.status === "rejected") throw opened.reason;
  if (counting.status === "rejected") throw counting.reason;
  return { image: opened.value, counting: counting.value };
}

/**
 * The fast way into a run, as root: opens `ref` and the layer cache, and when
 * every layer is cached already, moves this thread into a private mount
 * namespace of its own (overlay/userns.ts `enterThreadMountNamespace`) and
 * says `warm`, so that the bundle is mounted, run and unmounted without
 * re-executing the command line. Not warm (a layer is missing, or no
 * namespace can be made this way): the caller enters the namespace the
 * usual way and pulls, passing `opened` on to {@linkcode pullImage} so that
 * nothing is opened twice when that does not re-execute. Undefined when
 * not tried (not root, no FFI). A failure to open the image or the cache is
 * thrown, as {@linkcode pullImage} would.
 *
 * @example Usage
 * ```ts ignore
 * const fast = await openCached(ctx, "oci:/tmp/layout:v1");
 * if (!fast?.warm) await pullImage(ctx, "oci:/tmp/layout:v1", "missing", fast?.opened);
 * ```
 */
export async function openCached(
  ctx: Context,
  ref: string,
): Promise<{ opened: OpenedImage; warm: boolean } | undefined> {
  if (!rootOutsideNamespaces()) return undefined;
  try {
    // What a warm run calls, bound at once (sys/libc.ts bindLibc).
    bindLibc(WARM_RUN_SYMBOLS);
  } catch {
    return undefined; // no --allow-ffi: the usual way says what is missing
  }
  const opened = await openWithCache(ctx, ref, "missing");
  const { image, counting: { resolver } } = opened;
  for (let i = 0; i < image.layers.length; i++) {
    if (!resolver.cachedPath(image.layers[i].diffID, image.layers.slice(0, i))) {
      return { opened, warm: false };
    }
  }
  if (!enterThreadMountNamespace()) return { opened, warm: false };
  await saveOpened(ctx, ref, image);
  return { opened, warm: true };
}

/** The libc calls of a warm run as root: /proc reads, cache lookups, the namespace, the mounts, user lookup. */
const WARM_RUN_SYMBOLS = [
  "open",
  "read",
  "close",
  "faccessat",
  "unshare",
  "mount",
  "umount2",
  "sys_openat2",
  ...SPAWN_SYMBOLS,
] as const;

/** Root (uid 0) and not re-executed into a namespace by strata: worth trying {@linkcode openCached}. */
function rootOutsideNamespaces(): boolean {
  try {
    return getUid() === 0 && getEnv(USERNS_ENV) === undefined;
  } catch {
    return false; // no --allow-sys or --allow-env: the usual way
  }
}

/**
 * A warning sink that shows each distinct warning about the runtime choice
 * (crun passed over for runc, and why) once per cache, not on every run: it
 * is about the host, and repeating it on every `strata run` would bury the
 * container's own stderr. Other warnings always show. Shown ones are kept in
 * `<cache>/notes.json`.
 *
 * @example Usage
 * ```ts ignore
 * await runContainer(bundle, { onWarning: await onceWarner(ctx) });
 * ```
 */
export function onceWarner(ctx: Context): Promise<(message: string) => void> {
  const file = join(ctx.cacheRoot, "notes.json");
  let shown: Record<string, string> = {};
  try {
    shown = JSON.parse(readTextFileSync(file)); // small; read on every run
  } catch {
    shown = {};
  }
  return Promise.resolve((message: string) => {
    if (!message.startsWith("using ")) return ctx.out.warn(message);
    if (shown[message] && ctx.options.debug !== true) return;
    ctx.out.warn(`${message} (said once per cache)`);
    shown[message] = new Date().toISOString();
    try {
      writeTextFileSync(file, JSON.stringify(shown, null, 2) + "\n", { mode: 0o600 });
    } catch {
      // read-only cache: it will be said again next time
    }
  });
}

export { ImageNotFoundError };
