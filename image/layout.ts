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
  BlobSizeError,
  checkDescriptor,
  type FetchedDocument,
  fileStream,
  type ImageSource,
  ManifestError,
  MAX_DOCUMENT_SIZE,
  parseJSON,
  readSmallFile,
  resolveImage,
  type ResolveOptions,
  type SourceImage,
} from "./source.ts";
import { parseDigest } from "./blob.ts";
import type { Descriptor, ImageIndex, Platform } from "./types.ts";
import { realPathSync, statSync } from "../sys/files.ts";

/**
 * A layout blob strata refuses to read: a symlink resolving outside the
 * layout, or not a regular file.
 *
 * @example Usage
 * ```ts
 * import { UnsafeBlobError } from "./layout.ts";
 * const e = new UnsafeBlobError("layer sha256:ab of oci:/x", "not a regular file");
 * console.assert(e.message === "Refusing layer sha256:ab of oci:/x: not a regular file");
 * ```
 */
export class UnsafeBlobError extends Error {
  /** Builds the error for blob `what`. */
  constructor(what: string, reason: string, options?: ErrorOptions) {
    super(`Refusing ${what}: ${reason}`, options);
    this.name = "UnsafeBlobError";
  }
}

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

  #root?: string;

  /**
   * Finds the file of blob `desc` and checks it may be read: it must resolve
   * (symlinks followed) to a regular file inside the layout. A blob that is a
   * symlink to a host file could not pass off other content (every blob is
   * verified against its digest), but strata would still read, hash and name
   * the digest of a file the layout's author chose outside it, or block on a
   * FIFO, or read `/dev/zero` forever; layouts written by skopeo, umoci,
   * buildah and strata never hold such links, so they are refused.
   */
  #resolve(desc: Descriptor, what: string): { path: string; size: number } {
    const path = this.blobPath(desc.digest);
    let real: string;
    try {
      // Synchronous: metadata of local files, cheaper here than a thread-pool
      // round trip each (a warm `strata run` resolves manifest and config).
      this.#root ??= realPathSync(this.dir);
      real = realPathSync(path);
    } catch (e) {
      // The message says it all; Deno's ("No such file ... realpath '...'") would repeat it.
      if (e instanceof Deno.errors.NotFound) {
        throw new BlobNotFoundError(desc.digest, this.name, `no file ${path}`);
      }
      throw e;
    }
    const root = this.#root!;
    if (!real.startsWith(root.endsWith("/") ? root : `${root}/`)) {
      throw new UnsafeBlobError(
        `${what} ${desc.digest} of ${this.name}`,
        `${path} resolves to ${real}, outside the layout`,
      );
    }
    const st = statSync(real);
    if (!st.isFile) {
      throw new UnsafeBlobError(
        `${what} ${desc.digest} of ${this.name}`,
        `${path} is not a regular file`,
      );
    }
    return { path: real, size: st.size };
  }

  async #small(desc: Descriptor, what: string): Promise<Uint8Array> {
    const { path, size } = await this.#resolve(desc, what);
    if (size > MAX_DOCUMENT_SIZE) {
      throw new ManifestError(
        `${what} ${desc.digest} of ${this.name}`,
        `${size} bytes is too large`,
      );
    }
    return await readSmallFile(path, `${what} ${desc.digest} of ${this.name}`);
  }

  /** Reads a manifest or index blob. */
  async fetchManifest(desc: Descriptor): Promise<FetchedDocument> {
    return { bytes: await this.#small(desc, "manifest") };
  }

  /** Reads a config blob. */
  fetchBlob(desc: Descriptor): Promise<Uint8Array> {
    return this.#small(desc, "config");
  }

  /** Streams a layer blob; a file whose size is not the descriptor's is refused before reading. */
  async openBlob(desc: Descriptor, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const { path, size } = await this.#resolve(desc, "layer");
    if (size !== desc.size) {
      throw new BlobSizeError(`layer ${desc.digest} of ${this.name}`, desc.size, `${size} bytes`);
    }
    return await fileStream(path, 0, desc.size, signal);
  }

  /** Reads and checks `oci-layout` and `index.json`. */
  async readIndex(): Promise<ImageIndex> {
    let layout: { imageLayoutVersion?: string };
    try {
      layout = parseJSON(
        await readSmallFile(join(this.dir, "oci-layout"), `oci-layout of ${this.name}`),
        `oci-layout of ${this.name}`,
      );
    } catch (e) {
      // Without the cause: Deno's "No such file ... stat '...'" would only repeat the path.
      if (e instanceof Deno.errors.NotFound) {
        throw new ManifestError(
          this.name,
          `not an OCI layout: no file ${join(this.dir, "oci-layout")}`,
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
    const what = `index.json of ${this.name}`;
    const path = join(this.dir, "index.json");
    let bytes: Uint8Array;
    try {
      bytes = await readSmallFile(path, what);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new ManifestError(what, `no file ${path}`);
      throw e;
    }
    return parseJSON<ImageIndex>(bytes, what);
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
  const root = checkDescriptor(
    selectFromIndex(index, tag, source.name, options.platform),
    `index.json of ${source.name}`,
  );
  return await resolveImage(source, root, options);
}
