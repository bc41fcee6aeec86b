/**
 * Image archives: `oci-archive:FILE[:TAG]` (a tarred OCI layout) and
 * `docker-archive:FILE[:NAME:TAG|:@N]` (`docker save` / `skopeo copy
 * docker-archive:` output). The archive is indexed once by walking its tar
 * headers (seeking over member data), then blobs are read straight from
 * their offsets: nothing is unpacked to disk. A compressed archive
 * (`docker save | gzip`) is first decompressed to a temporary file.
 *
 * @module
 */
import { dirname, join, normalize } from "@std/path";
import {
  BlobFormatError,
  decompress,
  DigestMismatchError,
  digestOf,
  parseDigest,
  sniffCompression,
} from "./blob.ts";
import { selectFromIndex } from "./layout.ts";
import { parseRegistryRef, registryRefString } from "./ref.ts";
import {
  BlobNotFoundError,
  BlobSizeError,
  buildImage,
  checkDescriptor,
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
import {
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  MediaType,
} from "./types.ts";
import { makeTempDir, type OpenFile, openFile, remove, removeSync } from "../sys/files.ts";

/** One member of an indexed tar. */
export interface TarMember {
  /** Normalised path (no leading `./` or `/`). */
  name: string;
  /** Offset of the member's data in the file. */
  offset: number;
  /** Size of the member's data. */
  size: number;
  /** Tar type flag (`0` regular, `2` symlink, `1` hardlink, `5` directory, ...). */
  type: string;
  /** Link target for symlinks and hardlinks. */
  linkname: string;
}

/**
 * A tar archive on disk indexed by member name, read by offset.
 *
 * @example Usage
 * ```ts ignore
 * const tar = await TarIndex.open("/tmp/image.tar");
 * const bytes = await tar.read("index.json");
 * ```
 */
export class TarIndex {
  /** The archive file. */
  readonly path: string;
  /** Members by normalised name; later entries replace earlier ones, as tar extraction would. */
  readonly members: Map<string, TarMember>;

  private constructor(path: string, members: Map<string, TarMember>) {
    this.path = path;
    this.members = members;
  }

  /** Walks the headers of the (uncompressed) tar at `path`. */
  static async open(path: string): Promise<TarIndex> {
    const file = await openFile(path, { read: true });
    try {
      const members = await walk(file, path);
      return new TarIndex(path, members);
    } finally {
      file.close();
    }
  }

  /** Finds a member, following symlinks and hardlinks inside the archive. */
  get(name: string): TarMember | undefined {
    let m = this.members.get(normName(name));
    for (let hops = 0; m && (m.type === "1" || m.type === "2") && hops < 16; hops++) {
      const target = m.type === "2" && !m.linkname.startsWith("/")
        ? join(dirname(m.name), m.linkname)
        : m.linkname;
      m = this.members.get(normName(target));
    }
    return m && (m.type === "0" || m.type === "\0" || m.type === "7") ? m : undefined;
  }

  /** Reads a (small) member whole. */
  async read(name: string, max = MAX_DOCUMENT_SIZE): Promise<Uint8Array> {
    const m = this.#need(name);
    if (m.size > max) {
      throw new RangeError(`${this.path}: member ${name} is ${m.size} bytes, more than ${max}`);
    }
    const file = await openFile(this.path, { read: true });
    try {
      await file.seek(m.offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(m.size);
      let off = 0;
      while (off < buf.length) {
        const n = await file.read(buf.subarray(off));
        if (n === null) throw new RangeError(`${this.path}: member ${name} is truncated`);
        off += n;
      }
      return buf;
    } finally {
      file.close();
    }
  }

  /** Streams a member. */
  stream(name: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const m = this.#need(name);
    return fileStream(this.path, m.offset, m.size, signal);
  }

  /** Reads the first bytes of a member (for sniffing compression). */
  async head(name: string, n = 4): Promise<Uint8Array> {
    const m = this.#need(name);
    const file = await openFile(this.path, { read: true });
    try {
      await file.seek(m.offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(Math.min(n, m.size));
      let off = 0;
      while (off < buf.length) {
        const r = await file.read(buf.subarray(off));
        if (r === null) break;
        off += r;
      }
      return buf.subarray(0, off);
    } finally {
      file.close();
    }
  }

  #need(name: string): TarMember {
    const m = this.get(name);
    if (!m) {
      throw new BlobNotFoundError(name, this.path, "no such file in the archive");
    }
    return m;
  }
}

function normName(name: string): string {
  let n = normalize(name.replace(/^\/+/, ""));
  if (n === ".") n = "";
  return n.replace(/\/+$/, "");
}

const dec = new TextDecoder();

function cString(b: Uint8Array): string {
  const z = b.indexOf(0);
  return dec.decode(z < 0 ? b : b.subarray(0, z));
}

function parseNumber(b: Uint8Array, what: string, path: string): number {
  if (b[0] & 0x80) {
    // GNU base-256: big-endian two's complement with the top bit set.
    let v = b[0] & 0x7f;
    for (let i = 1; i < b.length; i++) v = v * 256 + b[i];
    return v;
  }
  const s = cString(b).trim();
  if (!s) return 0;
  if (!/^[0-7]+$/.test(s)) {
    throw new BlobFormatError(path, `bad ${what} field ${JSON.stringify(s)} in a tar header`);
  }
  return parseInt(s, 8);
}

function parsePax(data: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < data.length) {
    const sp = data.indexOf(0x20, off);
    if (sp < 0) break;
    const len = parseInt(dec.decode(data.subarray(off, sp)), 10);
    if (!(len > 0)) break;
    const rec = dec.decode(data.subarray(sp + 1, off + len - 1));
    const eq = rec.indexOf("=");
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    off += len;
  }
  return out;
}

async function readFull(file: OpenFile, buf: Uint8Array): Promise<number> {
  let off = 0;
  while (off < buf.length) {
    const n = await file.read(buf.subarray(off));
    if (n === null) break;
    off += n;
  }
  return off;
}

async function walk(file: OpenFile, path: string): Promise<Map<string, TarMember>> {
  const members = new Map<string, TarMember>();
  const header = new Uint8Array(512);
  let offset = 0;
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax: Record<string, string> = {};
  const size = (await file.stat()).size;
  for (;;) {
    await file.seek(offset, Deno.SeekMode.Start);
    const n = await readFull(file, header);
    if (n === 0) break; // no end-of-archive blocks: tolerated, as GNU tar does
    if (n < 512) throw new BlobFormatError(path, `truncated tar header at offset ${offset}`);
    if (header.every((b) => b === 0)) break;
    // Verify the header checksum, so a non-tar file fails clearly.
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : header[i];
    const stored = parseNumber(header.subarray(148, 156), "checksum", path);
    if (stored !== sum) {
      throw new BlobFormatError(
        path,
        `not a tar archive (bad header checksum at offset ${offset})`,
      );
    }
    const type = String.fromCharCode(header[156] || 0x30);
    let memberSize = parseNumber(header.subarray(124, 136), "size", path);
    if (!Number.isSafeInteger(memberSize)) {
      throw new BlobFormatError(path, `bad size field in the tar header at offset ${offset}`);
    }
    const dataOffset = offset + 512;
    const next = () => dataOffset + Math.ceil(memberSize / 512) * 512;
    if (type === "L" || type === "K" || type === "x" || type === "g") {
      if (memberSize > 1 << 20) {
        throw new BlobFormatError(path, `oversized ${type} header at ${offset}`);
      }
      const data = new Uint8Array(memberSize);
      if (await readFull(file, data) < memberSize) {
        throw new BlobFormatError(path, `truncated tar at offset ${dataOffset}`);
      }
      if (type === "L") longName = cString(data);
      else if (type === "K") longLink = cString(data);
      else if (type === "x") pax = { ...pax, ...parsePax(data) };
      offset = next();
      continue;
    }
    let name = cString(header.subarray(0, 100));
    const magic = dec.decode(header.subarray(257, 262));
    if (magic === "ustar") {
      const prefix = cString(header.subarray(345, 500));
      if (prefix) name = `${prefix}/${name}`;
    }
    if (longName !== undefined) name = longName;
    if (pax.path !== undefined) name = pax.path;
    let linkname = longLink ?? cString(header.subarray(157, 257));
    if (pax.linkpath !== undefined) linkname = pax.linkpath;
    if (pax.size) { // an empty value unsets the keyword: the header's size stands
      // A size that is not a plain decimal (NaN from "abc") once made the walk
      // seek to NaN, read the first header again and loop forever.
      memberSize = /^\d{1,16}$/.test(pax.size) ? Number(pax.size) : NaN;
      if (!Number.isSafeInteger(memberSize)) {
        throw new BlobFormatError(
          path,
          `bad pax size ${JSON.stringify(pax.size.slice(0, 40))} for member ${name}`,
        );
      }
    }
    if (type === "1" || type === "2" || type === "5") memberSize = type === "5" ? 0 : memberSize;
    if (dataOffset + memberSize > size) {
      throw new BlobFormatError(
        path,
        `truncated tar: member ${name} ends past the end of the file`,
      );
    }
    members.set(normName(name), {
      name: normName(name),
      offset: dataOffset,
      size: memberSize,
      type,
      linkname,
    });
    longName = longLink = undefined;
    pax = {};
    offset = next();
  }
  return members;
}

/** A directory of one's own for a decompressed archive, and how to remove it. */
export interface ArchiveTempDir {
  /** The directory (empty). */
  path: string;
  /** Removes it. */
  remove(): Promise<void>;
  /** Removes it synchronously, when the process exits (default: the directory alone). */
  removeSync?(): void;
}

/** Options of {@linkcode openOciArchive} and {@linkcode openDockerArchive}. */
export interface ArchiveOptions extends ResolveOptions {
  /** The image's name (default: the `oci-archive:`/`docker-archive:` reference). */
  name?: string;
  /**
   * Makes the directory a compressed archive is decompressed into (default:
   * a new one in `$TMPDIR`). The CLI gives a flock'd work directory under the
   * cache's `tmp/`, which the next command reclaims if this process is killed.
   */
  tempDir?: () => Promise<ArchiveTempDir>;
}

async function defaultTempDir(): Promise<ArchiveTempDir> {
  const path = await makeTempDir({ prefix: "strata-archive-" });
  return { path, remove: () => remove(path, { recursive: true }) };
}

/**
 * Opens an archive for indexing; a compressed archive is decompressed into
 * a temporary directory first (removed at once if that fails, else when the
 * process exits: the index reads it until then).
 */
async function openArchive(
  path: string,
  options: ArchiveOptions = {},
): Promise<TarIndex> {
  const file = await openFile(path, { read: true });
  let head: Uint8Array;
  try {
    head = new Uint8Array(4);
    head = head.subarray(0, await readFull(file, head));
  } finally {
    file.close();
  }
  const c = sniffCompression(head);
  if (c !== "gzip" && c !== "zstd") return await TarIndex.open(path);
  const dir = await (options.tempDir ?? defaultTempDir)();
  const onUnload = () => {
    try {
      if (dir.removeSync) dir.removeSync();
      else removeSync(dir.path, { recursive: true });
    } catch { /* already gone */ }
  };
  globalThis.addEventListener("unload", onUnload);
  try {
    const tmp = join(dir.path, "archive.tar");
    const out = await openFile(tmp, { write: true, createNew: true, mode: 0o600 });
    const mt = c === "gzip" ? MediaType.OciLayerGzip : MediaType.OciLayerZstd;
    await (await fileStream(path, 0, undefined, options.signal))
      .pipeThrough(decompress(mt, path)).pipeTo(out.writable);
    return await TarIndex.open(tmp);
  } catch (e) {
    globalThis.removeEventListener("unload", onUnload);
    await dir.remove().catch(() => {});
    throw e;
  }
}

/** Reads blobs from a tarred OCI layout. */
export class OciArchiveSource implements ImageSource {
  readonly name: string;
  /** The indexed archive. */
  readonly tar: TarIndex;

  /**
   * A source over an indexed archive.
   *
   * @example Usage
   * ```ts ignore
   * const source = new OciArchiveSource(await TarIndex.open("/tmp/x.tar"), "oci-archive:/tmp/x.tar");
   * ```
   */
  constructor(tar: TarIndex, name: string) {
    this.tar = tar;
    this.name = name;
  }

  #blob(desc: Descriptor): string {
    const { algorithm, hex } = parseDigest(desc.digest);
    const name = `blobs/${algorithm}/${hex}`;
    if (!this.tar.get(name)) {
      throw new BlobNotFoundError(desc.digest, this.name, `no member ${name} in the archive`);
    }
    return name;
  }

  /** Reads a manifest or index blob. */
  async fetchManifest(desc: Descriptor): Promise<FetchedDocument> {
    return { bytes: await this.tar.read(this.#blob(desc)) };
  }

  /** Reads a config blob. */
  fetchBlob(desc: Descriptor): Promise<Uint8Array> {
    return this.tar.read(this.#blob(desc));
  }

  /** Streams a layer blob from its offset in the archive; a member whose size is not the descriptor's is refused. */
  openBlob(desc: Descriptor, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const name = this.#blob(desc);
    const size = this.tar.get(name)!.size;
    if (size !== desc.size) {
      throw new BlobSizeError(`layer ${desc.digest} of ${this.name}`, desc.size, `${size} bytes`);
    }
    return this.tar.stream(name, signal);
  }
}

/**
 * Opens the image `tag` names in the OCI archive at `path`.
 *
 * @example Usage
 * ```ts ignore
 * import { openOciArchive } from "./archive.ts";
 * const image = await openOciArchive("/tmp/image.tar", "latest");
 * ```
 */
export async function openOciArchive(
  path: string,
  tag?: string,
  options: ArchiveOptions = {},
): Promise<SourceImage> {
  const tar = await openArchive(path, options);
  const name = options.name ?? `oci-archive:${path}${tag ? `:${tag}` : ""}`;
  if (!tar.get("oci-layout") || !tar.get("index.json")) {
    throw new ManifestError(name, "not an OCI archive (no oci-layout or index.json member)");
  }
  const source = new OciArchiveSource(tar, name);
  const index = parseJSON<ImageIndex>(await tar.read("index.json"), `index.json of ${name}`);
  const root = checkDescriptor(
    selectFromIndex(index, tag, name, options.platform),
    `index.json of ${name}`,
  );
  return await resolveImage(source, root, options);
}

/** One entry of a docker-archive's manifest.json. */
export interface DockerArchiveEntry {
  /** Path of the config JSON in the archive. */
  Config: string;
  /** Names (`repo:tag`) the image was saved under. */
  RepoTags?: string[] | null;
  /** Paths of the layer tars, bottom first. */
  Layers: string[];
  /** Descriptors of foreign layers, by diff_id. */
  LayerSources?: Record<string, Descriptor>;
}

const isStrings = (v: unknown) => Array.isArray(v) && v.every((s) => typeof s === "string");

/**
 * Checks the shape of manifest.json's entry `i` (as containers/image's typed
 * decoding does), so that a wrong type is named instead of failing later as
 * a TypeError.
 */
function checkEntry(e: unknown, i: number, what: string): asserts e is DockerArchiveEntry {
  const bad = (why: string) => new ManifestError(what, `entry ${i}: ${why}`);
  if (typeof e !== "object" || e === null || Array.isArray(e)) throw bad("not a JSON object");
  const entry = e as Record<string, unknown>;
  if (typeof entry.Config !== "string") throw bad("Config is not a path");
  if (!isStrings(entry.Layers)) throw bad("Layers is not a list of paths");
  if (entry.RepoTags != null && !isStrings(entry.RepoTags)) {
    throw bad("RepoTags is not a list of names");
  }
}

function canonical(name: string): string {
  try {
    return registryRefString(parseRegistryRef(name));
  } catch {
    return name;
  }
}

/** A digest named by a path like `blobs/sha256/HEX` or `HEX.json` / `HEX.tar`. */
function digestFromPath(path: string): string | undefined {
  let m = /^blobs\/(sha256|sha512)\/([0-9a-f]+)$/.exec(path);
  if (m) return `${m[1]}:${m[2]}`;
  m = /^([0-9a-f]{64})\.(?:json|tar)$/.exec(path);
  return m ? `sha256:${m[1]}` : undefined;
}

/**
 * Opens an image in a `docker save` archive. The archive has no manifest in
 * registry form, so strata writes the Docker v2 schema 2 manifest the image
 * would have (config and layers as stored); its digest is the image digest.
 * Uncompressed layers' blob digest is their diff_id; compressed ones are
 * hashed once here.
 *
 * @example Usage
 * ```ts ignore
 * import { openDockerArchive } from "./archive.ts";
 * const image = await openDockerArchive("/tmp/busybox.tar", { name: "busybox:latest" });
 * ```
 */
export async function openDockerArchive(
  path: string,
  select: { name?: string; index?: number } = {},
  options: ArchiveOptions = {},
): Promise<SourceImage> {
  const tar = await openArchive(path, options);
  const label = options.name ??
    `docker-archive:${path}${
      select.name ? `:${select.name}` : select.index !== undefined ? `:@${select.index}` : ""
    }`;
  if (!tar.get("manifest.json")) {
    throw new ManifestError(label, "not a docker archive (no manifest.json member)");
  }
  const entries = parseJSON<{ x: DockerArchiveEntry[] }>(
    new TextEncoder().encode(`{"x":${new TextDecoder().decode(await tar.read("manifest.json"))}}`),
    `manifest.json of ${label}`,
  ).x;
  if (!Array.isArray(entries) || entries.length === 0) {
    throw new ManifestError(`manifest.json of ${label}`, "no images");
  }
  entries.forEach((e, i) => checkEntry(e, i, `manifest.json of ${label}`));
  const tags = entries.flatMap((e) => e.RepoTags ?? []);
  let entry: DockerArchiveEntry | undefined;
  if (select.name !== undefined) {
    const want = canonical(select.name);
    entry = entries.find((e) =>
      (e.RepoTags ?? []).some((t) => t === select.name || canonical(t) === want)
    );
    if (!entry) {
      throw new BlobNotFoundError(
        select.name,
        label,
        `no image tagged ${select.name} (it has: ${tags.join(", ") || "no tags"})`,
      );
    }
  } else if (select.index !== undefined) {
    entry = entries[select.index];
    if (!entry) {
      throw new BlobNotFoundError(`@${select.index}`, label, `it holds ${entries.length} images`);
    }
  } else if (entries.length === 1) {
    entry = entries[0];
  } else {
    throw new ManifestError(
      label,
      `it holds ${entries.length} images; name one with :NAME:TAG or :@INDEX (it has: ${
        tags.join(", ")
      })`,
    );
  }

  const configBytes = await tar.read(entry.Config);
  const configDigest = digestOf(configBytes);
  const named = digestFromPath(normName(entry.Config));
  if (named && named.startsWith("sha256:") && named !== configDigest) {
    throw new DigestMismatchError(named, configDigest, `config ${entry.Config} of ${label}`);
  }
  const config = parseJSON<ImageConfig>(configBytes, `config ${entry.Config} of ${label}`);
  const diffIDs = config.rootfs?.diff_ids ?? [];
  if (diffIDs.length !== entry.Layers.length) {
    throw new ManifestError(
      label,
      `${entry.Layers.length} layers but the config lists ${diffIDs.length} diff_ids`,
    );
  }
  const members = new Map<string, string>();
  const layers: Descriptor[] = [];
  for (const [i, layerPath] of entry.Layers.entries()) {
    const m = tar.get(layerPath);
    if (!m) throw new BlobNotFoundError(layerPath, label, "layer tar missing from the archive");
    const c = sniffCompression(await tar.head(layerPath)) ?? "none";
    const mediaType = c === "gzip"
      ? MediaType.DockerLayerGzip
      : c === "zstd"
      ? MediaType.DockerLayerZstd
      : MediaType.DockerLayer;
    let digest = digestFromPath(normName(layerPath));
    // A compressed layer named by its diff_id: the name is not the blob's digest.
    if (digest && c !== "none" && digest === diffIDs[i]) digest = undefined;
    if (!digest) {
      if (c === "none") digest = diffIDs[i];
      else {
        // A compressed layer under a name that is not its digest: hash it once.
        // node:crypto loads here, not with the module: its first import costs
        // a process ~20 ms, which a warm `strata run` does not pay.
        const { createHash } = await import("node:crypto");
        const h = createHash("sha256");
        for await (const chunk of await tar.stream(layerPath)) h.update(chunk);
        digest = `sha256:${h.digest("hex")}`;
      }
    }
    members.set(digest, layerPath);
    layers.push({ mediaType, size: m.size, digest });
  }
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.DockerManifest,
    config: { mediaType: MediaType.DockerConfig, size: configBytes.length, digest: configDigest },
    layers,
  };
  const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest));
  const manifestDigest = digestOf(manifestBytes);
  const source: ImageSource = {
    name: label,
    fetchManifest: () =>
      Promise.resolve({ bytes: manifestBytes, mediaType: MediaType.DockerManifest }),
    fetchBlob: () => Promise.resolve(configBytes),
    openBlob: (desc, signal) => {
      const p = members.get(desc.digest);
      if (!p) throw new BlobNotFoundError(desc.digest, label, "no such layer");
      return tar.stream(p, signal);
    },
  };
  return await buildImage(
    source,
    { mediaType: MediaType.DockerManifest, size: manifestBytes.length, digest: manifestDigest },
    manifestBytes,
    manifest,
    options,
  );
}
