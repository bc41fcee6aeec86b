/**
 * OCI image layouts (`oci:DIR[:TAG]`): a directory holding `oci-layout`,
 * `index.json` and `blobs/ALG/HEX`, as skopeo, umoci and buildah write them.
 *
 * @module
 */
import { join } from "@std/path";
import { choosePlatform, hostPlatform, parsePlatform } from "./platform.ts";
import {
  BlobNotFoundError,
  type FetchedDocument,
  fileStream,
  type ImageSource,
  ManifestError,
  MAX_DOCUMENT_SIZE,
  parseJSON,
  resolveImage,
  type ResolveOptions,
  type SourceImage,
} from "./source.ts";
import { parseDigest } from "./blob.ts";
import type { Descriptor, ImageIndex, Platform } from "./types.ts";

/** The annotation naming an entry of a layout's index.json. */
export const REF_NAME = "org.opencontainers.image.ref.name";

/**
 * Chooses the descriptor for `tag` from a layout's top-level index. Without a
 * tag: its only entry, or, when every entry has a platform and none a name
 * (an index written inline), the entry for `platform`.
 *
 * @example Usage
 * ```ts
 * import { selectFromIndex } from "./layout.ts";
 * const d = selectFromIndex({ schemaVersion: 2, manifests: [
 *   { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:1", size: 1,
 *     annotations: { "org.opencontainers.image.ref.name": "v1" } },
 * ] }, "v1", "oci:/x");
 * console.assert(d.digest === "sha256:1");
 * ```
 */
export function selectFromIndex(
  index: ImageIndex,
  tag: string | undefined,
  what: string,
  platform?: string | Platform,
): Descriptor {
  const manifests = Array.isArray(index.manifests) ? index.manifests : [];
  const names = manifests.map((d) => d.annotations?.[REF_NAME]).filter((n) => n !== undefined);
  if (tag !== undefined) {
    // ref.name may hold a full reference ("example.com/app:v1") or just the tag.
    const found = manifests.find((d) => {
      const n = d.annotations?.[REF_NAME];
      return n === tag || (n !== undefined && n.endsWith(`:${tag}`) && !n.includes("@"));
    });
    if (found) return found;
    throw new BlobNotFoundError(
      tag,
      what,
      `no image named ${JSON.stringify(tag)} in index.json (it has: ${
        names.length ? names.join(", ") : "no named images"
      })`,
    );
  }
  if (manifests.length === 1) return manifests[0];
  if (manifests.length === 0) throw new ManifestError(`index.json of ${what}`, "no images");
  if (names.length === 0 && manifests.every((d) => d.platform)) {
    const want = typeof platform === "string"
      ? parsePlatform(platform)
      : platform ?? hostPlatform();
    return choosePlatform(manifests, want, what);
  }
  throw new ManifestError(
    `index.json of ${what}`,
    `it holds ${manifests.length} images; name one with :TAG (it has: ${
      names.length ? names.join(", ") : "no named images"
    })`,
  );
}

/** Reads blobs from an OCI layout directory. */
export class OciLayoutSource implements ImageSource {
  readonly name: string;
  /** The layout directory. */
  readonly dir: string;

  /**
   * A source reading blobs below `dir`.
   *
   * @example Usage
   * ```ts ignore
   * const source = new OciLayoutSource("/tmp/layout");
   * ```
   */
  constructor(dir: string, name = `oci:${dir}`) {
    this.dir = dir;
    this.name = name;
  }

  /** The path of the blob `digest` names. */
  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.dir, "blobs", algorithm, hex);
  }

  async #stat(desc: Descriptor): Promise<Deno.FileInfo> {
    const path = this.blobPath(desc.digest);
    try {
      return await Deno.stat(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new BlobNotFoundError(desc.digest, this.name, `no file ${path}`, { cause: e });
      }
      throw e;
    }
  }

  async #small(desc: Descriptor, what: string): Promise<Uint8Array> {
    const st = await this.#stat(desc);
    if (st.size > MAX_DOCUMENT_SIZE) {
      throw new ManifestError(
        `${what} ${desc.digest} of ${this.name}`,
        `${st.size} bytes is too large`,
      );
    }
    return await Deno.readFile(this.blobPath(desc.digest));
  }

  /** Reads a manifest or index blob. */
  async fetchManifest(desc: Descriptor): Promise<FetchedDocument> {
    return { bytes: await this.#small(desc, "manifest") };
  }

  /** Reads a config blob. */
  fetchBlob(desc: Descriptor): Promise<Uint8Array> {
    return this.#small(desc, "config");
  }

  /** Streams a layer blob. */
  async openBlob(desc: Descriptor, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    await this.#stat(desc);
    return await fileStream(this.blobPath(desc.digest), 0, undefined, signal);
  }

  /** Reads and checks `oci-layout` and `index.json`. */
  async readIndex(): Promise<ImageIndex> {
    let layout: { imageLayoutVersion?: string };
    try {
      layout = parseJSON(
        await Deno.readFile(join(this.dir, "oci-layout")),
        `oci-layout of ${this.name}`,
      );
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new ManifestError(
          this.name,
          `not an OCI layout: no file ${join(this.dir, "oci-layout")}`,
          {
            cause: e,
          },
        );
      }
      throw e;
    }
    if (
      typeof layout.imageLayoutVersion !== "string" || !layout.imageLayoutVersion.startsWith("1.")
    ) {
      throw new ManifestError(
        `oci-layout of ${this.name}`,
        `unsupported imageLayoutVersion ${JSON.stringify(layout.imageLayoutVersion)}`,
      );
    }
    return parseJSON<ImageIndex>(
      await Deno.readFile(join(this.dir, "index.json")),
      `index.json of ${this.name}`,
    );
  }
}

/**
 * Opens the image `tag` names in the OCI layout at `dir`.
 *
 * @example Usage
 * ```ts ignore
 * import { openOciLayout } from "./layout.ts";
 * const image = await openOciLayout("/tmp/layout", "latest");
 * ```
 */
export async function openOciLayout(
  dir: string,
  tag?: string,
  options: ResolveOptions & { name?: string } = {},
): Promise<SourceImage> {
  const source = new OciLayoutSource(dir, options.name);
  const index = await source.readIndex();
  const root = selectFromIndex(index, tag, source.name, options.platform);
  return await resolveImage(source, root, options);
}
