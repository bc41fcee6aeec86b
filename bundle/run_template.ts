/**
 * The runtime spec a run record keeps (`run_record.ts`): the one every run
 * of the image would build when only its command is given, built once with
 * the spec options themselves (`withImageConfig` against the image's own
 * `/etc/passwd` and `/etc/group`, then fitted to the host) so that a record
 * can never say anything the long way would not.
 *
 * @module
 */
import type { ImageConfig } from "../image/types.ts";
import { withImageConfig, withRootFS } from "./options.ts";
import { newSpec, type Spec } from "./spec.ts";
import { adaptSpecToHost } from "./writer.ts";

/** What {@linkcode runTemplate} builds. */
export interface RunTemplate {
  /** The spec, `root.path` empty (each run sets its own rootfs). */
  spec: Spec;
  /** The image's Entrypoint: a command given to a run replaces the image's Cmd after it. */
  entrypoint: string[];
  /** The image's StopSignal, when it has one. */
  stopSignal?: string;
}

/**
 * Builds the spec of a run of an image with nothing but its command given:
 * `withRootFS(rootfs)` and `withImageConfig(config, rootfs)` as
 * `CachingBundler.bundle` applies them, fitted to this host as the spec
 * writer fits them, with `root.path` left empty. `rootfs` is a freshly
 * mounted rootfs of the image (no container has run in it yet: the user is
 * looked up in its files). Undefined when the image's own spec cannot be
 * built (a `User` its files do not name) or fitting it warns: every run then
 * takes the long way, which says so.
 *
 * @example Usage
 * ```ts ignore
 * import { runTemplate } from "./run_template.ts";
 * const t = await runTemplate(image.config, bundle.rootfs, image.name ?? image.digest);
 * ```
 */
export async function runTemplate(
  config: ImageConfig,
  rootfs: string,
  what: string,
): Promise<RunTemplate | undefined> {
  let spec: Spec;
  try {
    spec = await newSpec(withRootFS(rootfs), withImageConfig(config, rootfs));
  } catch {
    return undefined;
  }
  const p = spec.process!;
  const args = p.args ?? [];
  // An image without a command: each run gives one (or fails the long way).
  if (args.length === 0) p.args = ["/"];
  let warnings: string[];
  try {
    warnings = adaptSpecToHost(spec, what);
  } catch {
    return undefined;
  }
  if (warnings.length) return undefined;
  p.args = args;
  spec.root = { ...spec.root!, path: "" };
  const stop = config.config?.StopSignal;
  return {
    spec,
    entrypoint: [...(config.config?.Entrypoint ?? [])],
    ...(typeof stop === "string" && stop ? { stopSignal: stop } : {}),
  };
}
