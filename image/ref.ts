/**
 * Image references in skopeo's transport syntax, the same strings the CLI
 * takes: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
 * `docker-archive:FILE[:NAME:TAG|:@INDEX]`, `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`,
 * and a bare `[HOST[:PORT]/]REPO[:TAG|@DIGEST]` read as `docker://` with Docker
 * Hub's normalisation (`busybox` is `docker.io/library/busybox:latest`).
 *
 * @module
 */
import { resolve } from "@std/path";
import { parseDigest } from "./blob.ts";

/**
 * A reference that cannot be parsed.
 *
 * @example Usage
 * ```ts
 * import { parseRef, RefError } from "./ref.ts";
 * try {
 *   parseRef("docker://");
 * } catch (e) {
 *   console.assert(e instanceof RefError);
 * }
 * ```
 */
export class RefError extends Error {
  /** The reference as given. */
  readonly ref: string;
  /** Builds the error; `reason` says what is wrong with `ref`. */
  constructor(ref: string, reason: string, options?: ErrorOptions) {
    super(`Invalid image reference ${JSON.stringify(ref)}: ${reason}`, options);
    this.name = "RefError";
    this.ref = ref;
  }
}

/** A reference to an image in a registry (`docker://`). */
export interface RegistryRef {
  /** Transport. */
  transport: "docker";
  /** The registry as named, for example `docker.io` or `127.0.0.1:5000`. */
  domain: string;
  /** The host (and port) to contact, `registry-1.docker.io` for Docker Hub. */
  host: string;
  /** Repository path, for example `library/busybox`. */
  repository: string;
  /** Tag, `latest` when neither tag nor digest is given. */
  tag?: string;
  /** Manifest digest, when pinned. */
  digest?: string;
}

/** A reference to an image in an OCI layout directory (`oci:`). */
export interface OciLayoutRef {
  /** Transport. */
  transport: "oci";
  /** Absolute path of the layout directory. */
  path: string;
  /** `org.opencontainers.image.ref.name` to select, if any. */
  tag?: string;
}

/** A reference to an image in a tarred OCI layout (`oci-archive:`). */
export interface OciArchiveRef {
  /** Transport. */
  transport: "oci-archive";
  /** Absolute path of the archive. */
  path: string;
  /** `org.opencontainers.image.ref.name` to select, if any. */
  tag?: string;
}

/** A reference to an image in a `docker save` archive (`docker-archive:`). */
export interface DockerArchiveRef {
  /** Transport. */
  transport: "docker-archive";
  /** Absolute path of the archive. */
  path: string;
  /** `NAME:TAG` among the archive's `RepoTags`, if any. */
  name?: string;
  /** Index into the archive's manifest.json (`@N`), if any. */
  index?: number;
}

/** Any parsed image reference. */
export type ImageRef = RegistryRef | OciLayoutRef | OciArchiveRef | DockerArchiveRef;

const DOCKER_HUB = "docker.io";
const DOCKER_HUB_HOST = "registry-1.docker.io";
// distribution/reference's grammar.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DOMAIN =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;

/**
 * Parses a registry reference without transport prefix:
 * `[HOST[:PORT]/]REPO[:TAG][@DIGEST]`. The first component is a host when it
 * holds a `.` or `:` or is `localhost`; otherwise the image is on Docker Hub,
 * where one-component names live under `library/`.
 *
 * @example Usage
 * ```ts
 * import { parseRegistryRef } from "./ref.ts";
 * const r = parseRegistryRef("busybox");
 * console.assert(r.domain === "docker.io" && r.repository === "library/busybox" && r.tag === "latest");
 * ```
 */
export function parseRegistryRef(ref: string, original = ref): RegistryRef {
  if (!ref) throw new RefError(original, "empty reference");
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      parseDigest(digest);
    } catch (e) {
      throw new RefError(original, (e as Error).message, { cause: e });
    }
  }
  let domain = DOCKER_HUB;
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (
      first.includes(".") || first.includes(":") || first === "localhost" ||
      first.toLowerCase() !== first
    ) {
      domain = first;
      rest = rest.slice(slash + 1);
      if (!DOMAIN.test(domain)) {
        throw new RefError(original, `invalid registry host ${JSON.stringify(domain)}`);
      }
    }
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.indexOf(":", lastSlash + 1);
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) {
      throw new RefError(
        original,
        `invalid tag ${JSON.stringify(tag)} (letters, digits, '_', '.', '-'; at most 128)`,
      );
    }
  }
  if (!rest) throw new RefError(original, "missing repository name");
  for (const c of rest.split("/")) {
    if (!COMPONENT.test(c)) {
      throw new RefError(
        original,
        `invalid repository name component ${
          JSON.stringify(c)
        } (lowercase letters, digits and separators '.', '_', '__', '-')`,
      );
    }
  }
  if (domain === "index.docker.io") domain = DOCKER_HUB;
  if (domain === DOCKER_HUB && !rest.includes("/")) rest = `library/${rest}`;
  if (!tag && !digest) tag = "latest";
  return {
    transport: "docker",
    domain,
    host: domain === DOCKER_HUB ? DOCKER_HUB_HOST : domain,
    repository: rest,
    ...(tag ? { tag } : {}),
    ...(digest ? { digest } : {}),
  };
}

/**
 * Whether `ref`, as typed, is a short name: a registry reference without a
 * transport and without a registry host (`busybox`, `library/busybox:1.36`,
 * `team/app@sha256:…`), which containers-registries.conf(5) resolves through
 * its aliases and `unqualified-search-registries`. `docker://busybox` is not
 * one: the `docker://` transport names Docker Hub's image as skopeo does.
 *
 * @example Usage
 * ```ts
 * import { isShortName } from "./ref.ts";
 * console.assert(isShortName("busybox") && isShortName("library/busybox:1.36"));
 * console.assert(!isShortName("docker.io/busybox") && !isShortName("docker://busybox"));
 * console.assert(!isShortName("localhost/app") && !isShortName("127.0.0.1:5000/app"));
 * ```
 */
export function isShortName(ref: string): boolean {
  if (/^[a-z-]+:\/\//.test(ref) || /^(oci|oci-archive|docker-archive):/.test(ref)) return false;
  const slash = ref.indexOf("/");
  if (slash < 0) return !ref.startsWith("sha256:");
  const first = ref.slice(0, slash);
  return !(first.includes(".") || first.includes(":") || first === "localhost" ||
    first.toLowerCase() !== first);
}

/** Splits `PATH[:REST]` at the first colon, as skopeo does for its file transports. */
function splitPath(value: string, ref: string, what: string): [string, string | undefined] {
  const i = value.indexOf(":");
  const path = i < 0 ? value : value.slice(0, i);
  const rest = i < 0 ? undefined : value.slice(i + 1);
  if (!path) throw new RefError(ref, `missing ${what} path`);
  return [resolve(path), rest];
}

/**
 * Parses any reference strata accepts.
 *
 * @example Usage
 * ```ts
 * import { parseRef } from "./ref.ts";
 * console.assert(parseRef("oci:/tmp/layout:v1").transport === "oci");
 * console.assert(parseRef("docker://127.0.0.1:5000/app@sha256:" + "a".repeat(64)).transport === "docker");
 * ```
 */
export function parseRef(ref: string): ImageRef {
  if (typeof ref !== "string" || !ref.trim()) throw new RefError(String(ref), "empty reference");
  const m = /^([a-z-]+):(.*)$/s.exec(ref);
  const transport = m?.[1];
  const value = m?.[2] ?? "";
  switch (transport) {
    case "docker": {
      if (!value.startsWith("//")) {
        throw new RefError(ref, "docker transport references start with docker://");
      }
      return parseRegistryRef(value.slice(2), ref);
    }
    case "oci": {
      const [path, tag] = splitPath(value, ref, "layout directory");
      if (tag !== undefined && !tag) throw new RefError(ref, "empty tag after ':'");
      return { transport: "oci", path, ...(tag ? { tag } : {}) };
    }
    case "oci-archive": {
      const [path, tag] = splitPath(value, ref, "archive");
      if (tag !== undefined && !tag) throw new RefError(ref, "empty tag after ':'");
      return { transport: "oci-archive", path, ...(tag ? { tag } : {}) };
    }
    case "docker-archive": {
      const [path, sel] = splitPath(value, ref, "archive");
      if (sel === undefined) return { transport: "docker-archive", path };
      if (sel.startsWith("@")) {
        const index = Number(sel.slice(1));
        if (!/^\d+$/.test(sel.slice(1))) {
          throw new RefError(ref, `expected @INDEX (a number) after the archive path`);
        }
        return { transport: "docker-archive", path, index };
      }
      const r = parseRegistryRef(sel, ref);
      if (r.digest) {
        throw new RefError(ref, "a docker-archive reference takes NAME:TAG, not a digest");
      }
      return { transport: "docker-archive", path, name: sel };
    }
    case "containers-storage":
    case "dir":
    case "docker-daemon":
    case "sif":
    case "tarball":
      throw new RefError(
        ref,
        `transport "${transport}" is not supported by strata (use oci:, oci-archive:, docker-archive: or docker://)`,
      );
    default:
      // No transport, or a "host:port/..." whose host looks like one: a registry reference.
      return parseRegistryRef(ref);
  }
}

/**
 * The canonical name of a registry reference, as the image store keys it:
 * `docker.io/library/busybox:latest`, `127.0.0.1:5000/app@sha256:…`.
 *
 * @example Usage
 * ```ts
 * import { parseRegistryRef, registryRefString } from "./ref.ts";
 * console.assert(registryRefString(parseRegistryRef("busybox")) === "docker.io/library/busybox:latest");
 * ```
 */
export function registryRefString(r: RegistryRef): string {
  return `${r.domain}/${r.repository}${r.tag ? `:${r.tag}` : ""}${r.digest ? `@${r.digest}` : ""}`;
}

/**
 * Formats any reference back into its transport syntax (registry references
 * canonical, paths absolute).
 *
 * @example Usage
 * ```ts
 * import { parseRef, refString } from "./ref.ts";
 * console.assert(refString(parseRef("busybox")) === "docker://docker.io/library/busybox:latest");
 * ```
 */
export function refString(r: ImageRef): string {
  switch (r.transport) {
    case "docker":
      return `docker://${registryRefString(r)}`;
    case "oci":
    case "oci-archive":
      return `${r.transport}:${r.path}${r.tag ? `:${r.tag}` : ""}`;
    case "docker-archive":
      return `docker-archive:${r.path}${
        r.name ? `:${r.name}` : r.index !== undefined ? `:@${r.index}` : ""
      }`;
  }
}
