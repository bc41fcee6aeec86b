/**
 * `strata pull IMAGE`: fetch and extract every layer into the cache, save
 * the image under its name, print its digest (the only thing on stdout).
 *
 * @module
 */
import type { Context } from "./context.ts";
import { enterNamespace, pullImage } from "./pipeline.ts";
import { getUid } from "../sys/process.ts";

function isRoot(): boolean {
  try {
    return getUid() === 0;
  } catch {
    return false;
  }
}

/**
 * Runs `strata pull`.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * await main(["pull", "oci:/tmp/layout:v1"]);
 * ```
 */
export async function pullCommand(ctx: Context): Promise<number> {
  // Extraction mounts nothing (the resolver's direct mode): root needs no
  // namespace of its own for it; a user needs one to own the layers' ids.
  if (!isRoot()) await enterNamespace(ctx);
  const ref = ctx.args.positionals[0];
  const { image } = await pullImage(ctx, ref, "always");
  ctx.out.result(image.digest);
  return 0;
}
