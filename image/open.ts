/**
 * `openImage`: one entry point for every transport strata reads, with the
 * image store in front of registries so that a pulled image opens again
 * offline.
 *
 * @module
 */
import { openOciLayout } from "./layout.ts";
import { type ImageRef, parseRef, refString, registryRefString } from "./ref.ts";
import type { RegistryOptions } from "./registry.ts";
import type { ArchiveOptions } from "./archive.ts";
import type { SourceImage } from "./source.ts";
import { canonicalName, ImageNotFoundError, ImageStore } from "./store.ts";
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
}

/**
 * Opens the image `ref` names: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
 * `docker-archive:FILE[:NAME:TAG|:@N]`, `docker://HOST/REPO[:TAG|@DIGEST]` or
 * a bare registry reference (`busybox`, `127.0.0.1:5000/app:v1`). Every
 * manifest, index and config is verified against the digest naming it;
 * layers verify as they are read ({@linkcode Layer.uncompressed}).
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
  const store = options.cacheRoot ? await ImageStore.create(options.cacheRoot) : undefined;
  const pull = options.pull ?? "missing";
  if (store && parsed.transport === "docker" && pull !== "always") {
    const name = parsed.digest ? parsed.digest : registryRefString(parsed);
    let rec = await store.resolve(name);
    if (!rec && parsed.digest) rec = await store.resolve(registryRefString(parsed));
    if (
      rec && options.platform &&
      !platformMatches(parsePlatform(options.platform), parsePlatform(rec.platform), true)
    ) rec = undefined;
    if (rec) {
      return await store.open(rec.name, {
        signal: options.signal,
        openSource: (source, digest, signal) => openPinned(source, digest, { ...options, signal }),
      });
    }
    if (pull === "never") throw new ImageNotFoundError(ref, store.dir);
  }
  const image = await openRef(parsed, options);
  if (store && options.save !== false) {
    await store.save(image, canonicalName(ref), { source: refString(parsed) });
  }
  return image;
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
  await store.save(image, canonicalName(ref), { source: refString(parseRef(ref)) });
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
  const o: RegistryOptions & ArchiveOptions = { ...options };
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
