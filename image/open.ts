/**
 * `openImage`: one entry point for every transport strata reads, with the
 * image store in front of registries so that a pulled image opens again
 * offline.
 *
 * @module
 */
import { openOciLayout } from "./layout.ts";
import {
  type ImageRef,
  isShortName,
  parseRef,
  refString,
  type RegistryRef,
  registryRefString,
} from "./ref.ts";
import type { RegistryOptions } from "./registry.ts";
import type { ArchiveOptions } from "./archive.ts";
import type { SourceImage } from "./source.ts";
import { canonicalName, ImageNotFoundError, ImageStore, type StoredImage } from "./store.ts";
import type { ShortNameChooser } from "./short_name.ts";
import { parsePlatform, platformMatches } from "./platform.ts";

/** Options for {@linkcode openImage}. */
export interface OpenImageOptions extends RegistryOptions {
  /** `os/arch[/variant]` to choose from an index; default linux and the host's architecture. */
  platform?: string;
  /** Cancels fetching. */
  signal?: AbortSignal;
  /**
   * The cache root. When given, registry images are looked up in its image
   * store first and every image opened is saved there under its name.
   */
  cacheRoot?: string;
  /**
   * For registry references with a `cacheRoot`: `missing` (default) uses the
   * stored image when there is one, `always` asks the registry, `never` only
   * uses the store.
   */
  pull?: "missing" | "always" | "never";
  /**
   * With a `cacheRoot`: save the opened image under its name at once (true,
   * the default), or leave that to the caller (false), who calls
   * {@linkcode saveImage} once the image's layers are cached, so that a pull
   * whose layers turn out damaged leaves the name pointing where it did.
   */
  save?: boolean;
  /**
   * Makes the directory a compressed `oci-archive`/`docker-archive` is
   * decompressed into (default: a new one in `$TMPDIR`; see
   * {@linkcode ArchiveOptions}).
   */
  tempDir?: ArchiveOptions["tempDir"];
  /**
   * Receives notes for a person: a short name's resolution
   * (`resolved "busybox" to "docker.io/library/busybox:latest" (…)`), once,
   * when it is pulled.
   */
  onNote?: (message: string) => void;
  /**
   * Asks which image an ambiguous short name means (a terminal prompt, as
   * podman's); without one, `short-name-mode` decides (see
   * image/short_name.ts).
   */
  chooseShortName?: ShortNameChooser;
}

/** The fully qualified name each image opened from a short name got, for {@linkcode saveImage}. */
const resolvedNames = new WeakMap<SourceImage, string>();

/**
 * Opens the image `ref` names: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
 * `docker-archive:FILE[:NAME:TAG|:@N]`, `docker://HOST/REPO[:TAG|@DIGEST]` or
 * a bare registry reference (`busybox`, `127.0.0.1:5000/app:v1`). Every
 * manifest, index and config is verified against the digest naming it;
 * layers verify as they are read ({@linkcode Layer.uncompressed}).
 *
 * Registry pulls follow containers-registries.conf(5) (mirrors, remapped
 * locations, `blocked`, `insecure`; see image/registries_conf.ts), and a bare
 * short name (`busybox`, `team/app:1`) is resolved through its aliases and
 * `unqualified-search-registries` (image/short_name.ts), looked up in the
 * store by what it resolves to and saved under that; `registriesConf: false`
 * reads no registries.conf (then `busybox` is Docker Hub's).
 *
 * @example Usage
 * ```ts ignore
 * import { openImage } from "./open.ts";
 * const image = await openImage("docker://127.0.0.1:5000/app:v1", { tlsVerify: false });
 * for (const layer of image.layers) console.log(layer.diffID);
 * ```
 */
export async function openImage(ref: string, options: OpenImageOptions = {}): Promise<SourceImage> {
  const parsed = parseRef(ref);
  if (options.platform) parsePlatform(options.platform); // fail early on a malformed one
  // A short name's meaning comes from registries.conf (loaded only for one).
  if (parsed.transport === "docker" && isShortName(ref) && options.registriesConf !== false) {
    return await openShortName(ref, options);
  }
  const store = options.cacheRoot ? await ImageStore.create(options.cacheRoot) : undefined;
  const pull = options.pull ?? "missing";
  if (store && parsed.transport === "docker" && pull !== "always") {
    const rec = await storedRecord(store, parsed, options.platform);
    if (rec) return await openStored(store, rec, options);
    if (pull === "never") throw new ImageNotFoundError(ref, store.dir);
  }
  const image = await openRef(parsed, options);
  if (store && options.save !== false) {
    await store.save(image, canonicalName(ref), { source: refString(parsed) });
  }
  return image;
}

/** The stored image a registry reference names, if the store has it (for the platform asked). */
async function storedRecord(
  store: ImageStore,
  parsed: RegistryRef,
  platform: string | undefined,
): Promise<StoredImage | undefined> {
  const name = parsed.digest ? parsed.digest : registryRefString(parsed);
  let rec = await store.resolve(name);
  if (!rec && parsed.digest) rec = await store.resolve(registryRefString(parsed));
  if (
    rec && platform &&
    !platformMatches(parsePlatform(platform), parsePlatform(rec.platform), true)
  ) rec = undefined;
  return rec;
}

function openStored(
  store: ImageStore,
  rec: StoredImage,
  options: OpenImageOptions,
): Promise<SourceImage> {
  return store.open(rec.name, {
    signal: options.signal,
    openSource: (source, digest, signal) => openPinned(source, digest, { ...options, signal }),
  });
}

/**
 * Opens a short name: its registries.conf candidates (an alias, or each
 * unqualified-search registry) are looked up in the store first, in order;
 * otherwise `short-name-mode` narrows them and they are pulled in order
 * until one has the image, which is saved under its fully qualified name.
 */
async function openShortName(ref: string, options: OpenImageOptions): Promise<SourceImage> {
  const [{ loadRegistriesConf }, short] = await Promise.all([
    import("./registries_conf.ts"),
    import("./short_name.ts"),
  ]);
  const { chooseCandidates, resolutionNote, resolveShortName } = short;
  const conf = await loadRegistriesConf({ ...options, cacheDir: options.cacheRoot });
  const resolution = resolveShortName(conf, ref);
  const store = options.cacheRoot ? await ImageStore.create(options.cacheRoot) : undefined;
  const pull = options.pull ?? "missing";
  if (store && pull !== "always") {
    for (const candidate of resolution.candidates) {
      const rec = await storedRecord(store, candidate, options.platform);
      if (!rec) continue;
      const image = await openStored(store, rec, options);
      resolvedNames.set(image, rec.name);
      return image;
    }
    if (pull === "never") throw new ImageNotFoundError(ref, store.dir);
  }
  const candidates = await chooseCandidates(conf, resolution, options.chooseShortName);
  const failures: { where: string; error: unknown }[] = [];
  for (const candidate of candidates) {
    options.signal?.throwIfAborted();
    let image: SourceImage;
    try {
      image = await openRef(candidate, options);
    } catch (e) {
      // The next candidate, unless this one cannot go on (see openRegistryImage).
      const stop = options.signal?.aborted || (e as Error)?.name === "UnverifiedCertificateError" ||
        (e as Error)?.name === "RegistriesConfError";
      if (stop || candidates.length === 1) throw e;
      failures.push({ where: registryRefString(candidate), error: e });
      continue;
    }
    const name = registryRefString(candidate);
    options.onNote?.(resolutionNote(resolution, candidate));
    resolvedNames.set(image, name);
    if (store && options.save !== false) {
      await store.save(image, name, { source: refString(candidate) });
    }
    return image;
  }
  const text = (e: unknown) => (e instanceof Error ? e.message : String(e));
  throw new short.ShortNameError(
    ref,
    `no candidate has it: ${failures.map((f) => `${f.where}: ${text(f.error)}`).join("; ")}`,
    { cause: failures.at(-1)?.error },
  );
}

/**
 * The name in the image store of `cacheRoot` that `ref` means: for a short
 * name, the first of its registries.conf candidates (an alias, or each
 * unqualified-search registry) that the store holds, or undefined; any
 * other reference as it is. For `rm NAME`, which must remove what
 * `run NAME` would run.
 *
 * @example Usage
 * ```ts ignore
 * const name = await storedName(cacheRoot, "busybox"); // "docker.io/library/busybox:latest"
 * ```
 */
export async function storedName(
  cacheRoot: string,
  ref: string,
  options: OpenImageOptions = {},
): Promise<string | undefined> {
  if (!isShortName(ref) || options.registriesConf === false) return ref;
  const [{ loadRegistriesConf }, { resolveShortName }] = await Promise.all([
    import("./registries_conf.ts"),
    import("./short_name.ts"),
  ]);
  const resolution = resolveShortName(
    await loadRegistriesConf({ ...options, cacheDir: cacheRoot }),
    ref,
  );
  const store = await ImageStore.create(cacheRoot);
  for (const candidate of resolution.candidates) {
    const rec = await storedRecord(store, candidate, undefined);
    if (rec) return rec.name;
  }
  return undefined;
}

/**
 * Saves `image`, opened from `ref`, in the image store of `cacheRoot` under
 * `ref`'s name (what {@linkcode openImage} does unless told `save: false`).
 *
 * @example Usage
 * ```ts ignore
 * const image = await openImage(ref, { cacheRoot, save: false });
 * // ... cache every layer ...
 * await saveImage(cacheRoot, ref, image);
 * ```
 */
export async function saveImage(cacheRoot: string, ref: string, image: SourceImage): Promise<void> {
  const store = await ImageStore.create(cacheRoot);
  // A short name is saved under what it resolved to (docker.io/library/busybox:latest).
  const name = resolvedNames.get(image) ?? ref;
  await store.save(image, canonicalName(name), { source: refString(parseRef(name)) });
}

/**
 * Opens a parsed reference from its transport (no store).
 *
 * @example Usage
 * ```ts ignore
 * const image = await openRef(parseRef("oci:/tmp/layout:v1"));
 * ```
 */
export function openRef(parsed: ImageRef, options: OpenImageOptions = {}): Promise<SourceImage> {
  const o: RegistryOptions & ArchiveOptions = { cacheDir: options.cacheRoot, ...options };
  switch (parsed.transport) {
    // The registry client and the archive readers load on demand: a run from
    // a layout or from the store (offline) never needs them.
    case "docker":
      return import("./registry.ts").then((m) => m.openRegistryImage(parsed, o));
    case "oci":
      return openOciLayout(parsed.path, parsed.tag, { ...o, name: refString(parsed) });
    case "oci-archive":
      return import("./archive.ts").then((m) =>
        m.openOciArchive(parsed.path, parsed.tag, { ...o, name: refString(parsed) })
      );
    case "docker-archive":
      return import("./archive.ts").then((m) =>
        m.openDockerArchive(parsed.path, parsed, { ...o, name: refString(parsed) })
      );
  }
}

/**
 * Opens `source` again and checks it still yields manifest `digest`
 * (registries are asked for the digest itself, so a moved tag does not
 * matter). `ImageStore.open`'s `openSource` can wrap it.
 *
 * @example Usage
 * ```ts ignore
 * const image = await store.open("myapp", { openSource: (s, d, signal) => openPinned(s, d, { signal }) });
 * ```
 */
export async function openPinned(
  source: string,
  digest: string,
  options: OpenImageOptions = {},
): Promise<SourceImage> {
  const parsed = parseRef(source);
  if (parsed.transport === "docker") {
    return await openRef({ ...parsed, tag: undefined, digest }, options);
  }
  const image = await openRef(parsed, options);
  if (image.digest !== digest) {
    throw new Error(`${source} now holds manifest ${image.digest}, not ${digest}`);
  }
  return image;
}
