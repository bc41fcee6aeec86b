/**
 * The image model shared by every part of strata: TypeScript types for the OCI
 * image spec (descriptor, manifest, index, config), the Docker v2 schema 2
 * media types, and the {@linkcode Image} and {@linkcode Layer} interfaces that
 * image sources produce and the layer cache consumes. They are strata's
 * counterpart of go-containerregistry's `v1.Image` and `v1.Layer`, which the
 * seed was written against.
 *
 * @module
 */

/** OCI and Docker media types strata understands. */
export const MediaType = {
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  OciLayer: "application/vnd.oci.image.layer.v1.tar",
  OciLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  OciLayerNondistributable: "application/vnd.oci.image.layer.nondistributable.v1.tar",
  OciLayerNondistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  OciLayerNondistributableZstd: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayer: "application/vnd.docker.image.rootfs.diff.tar",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerLayerZstd: "application/vnd.docker.image.rootfs.diff.tar.zstd",
  DockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

/**
 * A content digest, `algorithm:hex`, for example
 * `sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855`.
 */
export type Digest = string;

/** The platform an image was built for (OCI image index `platform`). */
export interface Platform {
  /** Operating system, for example `linux`. */
  os: string;
  /** CPU architecture in Go's names, for example `amd64` or `arm64`. */
  architecture: string;
  /** CPU variant, for example `v8` for `arm64`. */
  variant?: string;
  /** Operating system version. */
  "os.version"?: string;
  /** Required operating system features. */
  "os.features"?: string[];
}

/** An OCI content descriptor. */
export interface Descriptor {
  /** Media type of the referenced content. */
  mediaType: string;
  /** Digest of the referenced content. */
  digest: Digest;
  /** Size in bytes of the referenced content. */
  size: number;
  /** Locations the content may be fetched from. */
  urls?: string[];
  /** Arbitrary metadata. */
  annotations?: Record<string, string>;
  /** Platform, in an image index. */
  platform?: Platform;
  /** Type of an artifact, when the descriptor references one. */
  artifactType?: string;
}

/** An OCI image manifest (or a Docker v2 schema 2 manifest, which has the same shape). */
export interface ImageManifest {
  /** Always 2. */
  schemaVersion: number;
  /** Media type of this manifest. */
  mediaType?: string;
  /** The image config. */
  config: Descriptor;
  /** Layers, bottom (base) first. */
  layers: Descriptor[];
  /** Arbitrary metadata. */
  annotations?: Record<string, string>;
  /** A manifest this one refers to. */
  subject?: Descriptor;
  /** Type of an artifact. */
  artifactType?: string;
}

/** An OCI image index (or a Docker manifest list, which has the same shape). */
export interface ImageIndex {
  /** Always 2. */
  schemaVersion: number;
  /** Media type of this index. */
  mediaType?: string;
  /** The manifests, usually one per platform. */
  manifests: Descriptor[];
  /** Arbitrary metadata. */
  annotations?: Record<string, string>;
}

/** The `config` member of an OCI image config: defaults for running a container. */
export interface ContainerConfig {
  /** User (`user`, `uid`, `user:group`, `uid:gid`, `uid:group`, `user:gid`). */
  User?: string;
  /** Ports to expose (keys like `80/tcp`). */
  ExposedPorts?: Record<string, Record<string, never>>;
  /** Environment, `KEY=value`. */
  Env?: string[];
  /** Entrypoint argv. */
  Entrypoint?: string[] | null;
  /** Default arguments (or command, without an entrypoint). */
  Cmd?: string[] | null;
  /** Volumes (keys are container paths). */
  Volumes?: Record<string, Record<string, never>>;
  /** Working directory. */
  WorkingDir?: string;
  /** Labels. */
  Labels?: Record<string, string>;
  /** Signal to stop the container. */
  StopSignal?: string;
  /** Docker's hostname field (not in the OCI spec; honoured when present). */
  Hostname?: string;
}

/** An OCI image config. */
export interface ImageConfig {
  /** Creation time, RFC 3339. */
  created?: string;
  /** Author. */
  author?: string;
  /** CPU architecture. */
  architecture: string;
  /** Operating system. */
  os: string;
  /** CPU variant. */
  variant?: string;
  /** Defaults for running a container. */
  config?: ContainerConfig;
  /** The layers' uncompressed digests, bottom first. */
  rootfs: { type: string; diff_ids: Digest[] };
  /** Build history. */
  history?: {
    created?: string;
    created_by?: string;
    author?: string;
    comment?: string;
    empty_layer?: boolean;
  }[];
}

/**
 * One layer of an image: a (usually compressed) tar changeset.
 *
 * Streams returned by {@linkcode Layer.compressed} are NOT verified by the
 * source; whoever consumes them verifies `digest` (the blob) and `diffID` (the
 * uncompressed tar) while streaming. That keeps one read per blob.
 */
export interface Layer {
  /** Digest of the blob as stored (compressed). */
  readonly digest: Digest;
  /** Digest of the uncompressed tar, from the image config's `rootfs.diff_ids`. */
  readonly diffID: Digest;
  /** Media type of the blob. */
  readonly mediaType: string;
  /** Size of the blob in bytes. */
  readonly size: number;
  /** Opens the blob as stored. The caller verifies `digest` while reading. */
  compressed(signal?: AbortSignal): Promise<ReadableStream<Uint8Array>>;
  /**
   * Opens the uncompressed tar. The stream verifies `digest` and `diffID` as it
   * is read and errors, instead of closing, when either does not match: a
   * consumer that saw the stream close normally has read verified bytes.
   */
  uncompressed(signal?: AbortSignal): Promise<ReadableStream<Uint8Array>>;
}

/** An image: a manifest, its config and its layers. */
export interface Image {
  /** Digest of the manifest. */
  readonly digest: Digest;
  /** The manifest, exactly as parsed from the bytes that `digest` names. */
  readonly manifest: ImageManifest;
  /** Digest of the config blob. */
  readonly configDigest: Digest;
  /** The config. */
  readonly config: ImageConfig;
  /** The layers, bottom (base) first, excluding none. */
  readonly layers: readonly Layer[];
  /** The reference the image was opened from, for messages and listings. */
  readonly name?: string;
}
