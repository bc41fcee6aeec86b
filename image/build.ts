/**
 * Writes images into OCI layouts from layer tars held in memory: the way
 * tests, benchmarks and the demo make real images without a registry or a
 * build tool. Multi-platform images become an image index.
 *
 * @module
 */
import { join } from "@std/path";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { digestOf, parseDigest } from "./blob.ts";
import { parsePlatform } from "./platform.ts";
import { REF_NAME } from "./layout.ts";
import {
  type ContainerConfig,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  MediaType,
} from "./types.ts";
import { mkdir, readTextFile, writeFile, writeTextFile } from "../sys/files.ts";

/** One layer to write: an uncompressed tar and how to store it. */
export interface LayerInput {
  /** The uncompressed tar. */
  tar: Uint8Array;
  /** Compression of the stored blob (default gzip). */
  compression?: "gzip" | "zstd" | "none";
}

/** One platform image to write. */
export interface ImageInput {
  /** Layers, bottom first. */
  layers: LayerInput[];
  /** `os/arch[/variant]` (default linux/amd64). */
  platform?: string;
  /** Container defaults (`Cmd`, `Env`, ...). */
  config?: ContainerConfig;
  /** Use Docker v2 schema 2 media types instead of OCI ones. */
  docker?: boolean;
  /** Creation time written to the config (default the epoch, for reproducible digests). */
  created?: string;
}

/** What {@linkcode writeOciLayout} wrote for one tag. */
export interface WrittenImage {
  /** The descriptor in index.json (a manifest, or an index for several platforms). */
  descriptor: Descriptor;
  /** Per platform image: manifest digest, config digest, layer blob digests, diff_ids. */
  images: { digest: string; configDigest: string; layers: string[]; diffIDs: string[] }[];
}

async function writeBlob(dir: string, bytes: Uint8Array): Promise<string> {
  const digest = digestOf(bytes);
  const { algorithm, hex } = parseDigest(digest);
  await mkdir(join(dir, "blobs", algorithm), { recursive: true });
  await writeFile(join(dir, "blobs", algorithm, hex), bytes);
  return digest;
}

const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

/**
 * Writes one or more tagged images into the OCI layout at `dir` (created if
 * missing; an existing index.json is extended, replacing entries with the
 * same tag). A tag with several platform images is written as an image index.
 *
 * @example Usage
 * ```ts
 * import { writeOciLayout } from "./build.ts";
 * const dir = await Deno.makeTempDir();
 * const tar = new Uint8Array(1024); // an empty tar: two zero blocks
 * const [w] = await writeOciLayout(dir, [{ tag: "v1", images: [{ layers: [{ tar }] }] }]);
 * console.assert(w.images[0].diffIDs.length === 1);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeOciLayout(
  dir: string,
  tags: { tag?: string; images: ImageInput[] }[],
): Promise<WrittenImage[]> {
  await mkdir(dir, { recursive: true });
  await writeTextFile(join(dir, "oci-layout"), `{"imageLayoutVersion":"1.0.0"}`);
  let index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
  try {
    index = JSON.parse(await readTextFile(join(dir, "index.json")));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const out: WrittenImage[] = [];
  for (const { tag, images } of tags) {
    const written: WrittenImage["images"] = [];
    const descs: Descriptor[] = [];
    for (const img of images) {
      const docker = img.docker ?? false;
      const layers: Descriptor[] = [];
      const diffIDs: string[] = [];
      for (const l of img.layers) {
        const c = l.compression ?? "gzip";
        const blob = c === "gzip"
          ? gzipSync(l.tar)
          : c === "zstd"
          ? zstdCompressSync(l.tar)
          : l.tar;
        const mediaType = docker
          ? {
            gzip: MediaType.DockerLayerGzip,
            zstd: MediaType.DockerLayerZstd,
            none: MediaType.DockerLayer,
          }[c]
          : {
            gzip: MediaType.OciLayerGzip,
            zstd: MediaType.OciLayerZstd,
            none: MediaType.OciLayer,
          }[c];
        const bytes = new Uint8Array(blob.buffer, blob.byteOffset, blob.byteLength);
        layers.push({ mediaType, digest: await writeBlob(dir, bytes), size: bytes.length });
        diffIDs.push(digestOf(l.tar));
      }
      const p = parsePlatform(img.platform ?? "linux/amd64");
      const config: ImageConfig = {
        created: img.created ?? "1970-01-01T00:00:00Z",
        architecture: p.architecture,
        os: p.os,
        ...(p.variant ? { variant: p.variant } : {}),
        config: img.config ?? {},
        rootfs: { type: "layers", diff_ids: diffIDs },
        history: diffIDs.map(() => ({ created_by: "strata writeOciLayout" })),
      };
      const configBytes = json(config);
      const configDigest = await writeBlob(dir, configBytes);
      const manifest: ImageManifest = {
        schemaVersion: 2,
        mediaType: docker ? MediaType.DockerManifest : MediaType.OciManifest,
        config: {
          mediaType: docker ? MediaType.DockerConfig : MediaType.OciConfig,
          digest: configDigest,
          size: configBytes.length,
        },
        layers,
      };
      const manifestBytes = json(manifest);
      const digest = await writeBlob(dir, manifestBytes);
      descs.push({
        mediaType: manifest.mediaType!,
        digest,
        size: manifestBytes.length,
        platform: p,
      });
      written.push({ digest, configDigest, layers: layers.map((l) => l.digest), diffIDs });
    }
    let descriptor: Descriptor;
    if (descs.length === 1) {
      const { platform: _, ...d } = descs[0];
      descriptor = d;
    } else {
      const docker = images.every((i) => i.docker);
      const idx: ImageIndex = {
        schemaVersion: 2,
        mediaType: docker ? MediaType.DockerManifestList : MediaType.OciIndex,
        manifests: descs,
      };
      const bytes = json(idx);
      descriptor = {
        mediaType: idx.mediaType!,
        digest: await writeBlob(dir, bytes),
        size: bytes.length,
      };
    }
    if (tag) {
      descriptor.annotations = { [REF_NAME]: tag };
      index.manifests = index.manifests.filter((d) => d.annotations?.[REF_NAME] !== tag);
    }
    index.manifests.push(descriptor);
    out.push({ descriptor, images: written });
  }
  await writeFile(join(dir, "index.json"), json(index));
  return out;
}
