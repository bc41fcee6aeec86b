/**
 * Platforms in Go's names (`linux/amd64`, `linux/arm64/v8`): parsing the
 * `--platform` string, the host's default, and choosing an index entry.
 *
 * @module
 */
import type { Descriptor, Platform } from "./types.ts";

/**
 * No manifest in an index matches the wanted platform.
 *
 * @example Usage
 * ```ts
 * import { PlatformNotFoundError } from "./platform.ts";
 * const e = new PlatformNotFoundError("linux/s390x", ["linux/amd64"], "busybox");
 * console.assert(e.message.includes("linux/amd64"));
 * ```
 */
export class PlatformNotFoundError extends Error {
  /** The platform asked for. */
  readonly wanted: string;
  /** The platforms the index offers. */
  readonly available: string[];
  /** Builds the error for image `what`. */
  constructor(wanted: string, available: string[], what: string, options?: ErrorOptions) {
    super(
      `No manifest for platform ${wanted} in ${what}; it has: ${
        available.length ? available.join(", ") : "no platform-specific manifests"
      } (choose one with --platform OS/ARCH[/VARIANT])`,
      options,
    );
    this.name = "PlatformNotFoundError";
    this.wanted = wanted;
    this.available = available;
  }
}

const GO_ARCH: Record<string, string> = {
  x86_64: "amd64",
  aarch64: "arm64",
  arm: "arm",
  armv7l: "arm",
  i686: "386",
  i386: "386",
  ppc64le: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
};

/**
 * Parses `os/arch[/variant]` (or `arch` alone, meaning linux).
 *
 * @example Usage
 * ```ts
 * import { parsePlatform } from "./platform.ts";
 * const p = parsePlatform("linux/arm64/v8");
 * console.assert(p.architecture === "arm64" && p.variant === "v8");
 * ```
 */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().toLowerCase().split("/");
  if (parts.some((p) => !p) || parts.length > 3) {
    throw new RangeError(`Invalid platform ${JSON.stringify(s)}: expected OS/ARCH[/VARIANT]`);
  }
  if (parts.length === 1) return { os: "linux", architecture: GO_ARCH[parts[0]] ?? parts[0] };
  const [os, arch, variant] = parts;
  return { os, architecture: GO_ARCH[arch] ?? arch, ...(variant ? { variant } : {}) };
}

/**
 * The platform of this machine: linux and Deno's architecture in Go's name.
 *
 * @example Usage
 * ```ts
 * import { hostPlatform } from "./platform.ts";
 * console.assert(hostPlatform().os === "linux");
 * ```
 */
export function hostPlatform(): Platform {
  const arch = GO_ARCH[Deno.build.arch] ?? Deno.build.arch;
  return { os: "linux", architecture: arch, ...(arch === "arm64" ? { variant: "v8" } : {}) };
}

/** Formats a platform as `os/arch[/variant]`. */
export function formatPlatform(p: Platform | undefined): string {
  if (!p) return "unknown";
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

// Variants a platform implies when none is written (containerd's normalisation:
// amd64 is amd64/v1, arm64 is arm64/v8).
const DEFAULT_VARIANT: Record<string, string> = { amd64: "v1", arm64: "v8", arm: "v7" };

// The oldest variant each architecture's older variants run down to: a
// linux/amd64/v3 machine runs v2 and v1 images, linux/arm/v7 runs v6 and v5
// (containerd's platform vector, in which the nearest comes first).
const LOWEST_VARIANT: Record<string, number> = { amd64: 1, arm: 5 };

/** The variants `want` also runs, best first: amd64/v3 gives v2, v1. */
function olderVariants(want: Platform): string[] {
  const lowest = LOWEST_VARIANT[want.architecture];
  const n = /^v(\d+)$/.exec(variantOf(want) ?? "")?.[1];
  if (lowest === undefined || n === undefined) return [];
  const out: string[] = [];
  for (let v = Number(n) - 1; v >= lowest; v--) out.push(`v${v}`);
  return out;
}

function variantOf(p: Platform): string | undefined {
  return p.variant ?? DEFAULT_VARIANT[p.architecture];
}

/**
 * Tells whether `have` is what `want` asks for. OS and architecture must be
 * equal; variants are compared with their defaults filled in (arm64 means
 * v8), and with `loose`, a `want` without a variant takes any variant.
 */
export function platformMatches(
  want: Platform,
  have: Platform | undefined,
  loose = false,
): boolean {
  if (!have) return false;
  if (want.os !== have.os || want.architecture !== have.architecture) return false;
  if (loose && !want.variant) return true;
  return variantOf(want) === variantOf(have);
}

/**
 * Chooses the index entry for `want`, or throws {@linkcode PlatformNotFoundError}
 * listing what the index has. An index whose only entry has no platform yields
 * that entry. Without an exact match, an older variant the wanted one runs is
 * taken, nearest first (amd64/v3 takes v2, then v1, which plain amd64 is;
 * arm/v7 takes v6, then v5), as containerd does; never a newer one.
 *
 * @example Usage
 * ```ts
 * import { choosePlatform } from "./platform.ts";
 * const d = choosePlatform([
 *   { mediaType: "m", digest: "sha256:1", size: 1, platform: { os: "linux", architecture: "arm64" } },
 *   { mediaType: "m", digest: "sha256:2", size: 1, platform: { os: "linux", architecture: "amd64" } },
 * ], { os: "linux", architecture: "amd64" }, "an image");
 * console.assert(d.digest === "sha256:2");
 * ```
 */
export function choosePlatform(
  manifests: Descriptor[],
  want: Platform,
  what: string,
): Descriptor {
  const found = manifests.find((d) => platformMatches(want, d.platform)) ??
    manifests.find((d) => platformMatches(want, d.platform, true));
  if (found) return found;
  for (const variant of olderVariants(want)) {
    const older = manifests.find((d) => platformMatches({ ...want, variant }, d.platform));
    if (older) return older;
  }
  if (manifests.length === 1 && !manifests[0].platform) return manifests[0];
  throw new PlatformNotFoundError(
    formatPlatform(want),
    [...new Set(manifests.filter((d) => d.platform).map((d) => formatPlatform(d.platform)))],
    what,
  );
}
