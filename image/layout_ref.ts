/**
 * Which entry of an OCI layout's `index.json` a tag names: the part of
 * opening `oci:DIR:TAG` that needs neither the platform nor any blob, shared
 * by `layout.ts` and a warm `strata run`, which reads `index.json` on every
 * run to see that the tag still names the entry its run record was made for.
 *
 * @module
 */

/** The annotation naming an entry of a layout's index.json. */
export const REF_NAME = "org.opencontainers.image.ref.name";

/**
 * The first entry whose `org.opencontainers.image.ref.name` is `tag`, or a
 * full reference ending in `:tag` (`example.com/app:v1`, not one with a
 * digest), as skopeo and umoci name them; undefined when none is.
 *
 * @example Usage
 * ```ts
 * import { taggedEntry } from "./layout_ref.ts";
 * const entries = [{ digest: "sha256:1", annotations: { "org.opencontainers.image.ref.name": "example.com/app:v1" } }];
 * console.log(taggedEntry(entries, "v1")?.digest); // "sha256:1"
 * ```
 */
export function taggedEntry<T extends { annotations?: Record<string, string> }>(
  manifests: readonly T[],
  tag: string,
): T | undefined {
  return manifests.find((d) => {
    const n = d.annotations?.[REF_NAME];
    return n === tag || (n !== undefined && n.endsWith(`:${tag}`) && !n.includes("@"));
  });
}
