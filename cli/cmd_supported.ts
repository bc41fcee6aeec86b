/**
 * `strata supported [--why]`: exit 0 when the cache directory supports the
 * overlay store, 1 when not; `--why` prints the mode, the id mapping (and,
 * not as root, whether subordinate ids are mapped, or why not), the mount
 * backend and the reason (on stdout: it is the result asked for).
 *
 * @module
 */
import { supportedReason } from "../overlay/supported.ts";
import { namespaceInfo, subordinateIds } from "../overlay/userns.ts";
import type { Context } from "./context.ts";
import { describeError, permissionHint } from "./errors.ts";
import { enterNamespace } from "./pipeline.ts";

/**
 * Runs `strata supported`.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * Deno.exit(await main(["supported", "--why"]));
 * ```
 */
export async function supportedCommand(ctx: Context): Promise<number> {
  const why = ctx.options.why === true;
  try {
    // Checked where strata works: in the namespace the other commands enter.
    await enterNamespace(ctx);
  } catch (e) {
    if (why) {
      ctx.out.result(`supported: no\ncache: ${ctx.cacheRoot}\nreason: ${describeError(e)}`);
      return 1;
    }
    // Not a "no": strata could not look. Said (with the flag to add), not
    // left to a silent exit 1 that reads as "not supported".
    if (permissionHint(e)) throw e;
    return 1;
  }
  const r = await supportedReason(ctx.cacheRoot);
  if (why) {
    const info = await namespaceInfo();
    const lines = [
      `supported: ${r.supported ? "yes" : "no"}`,
      `cache: ${ctx.cacheRoot}${r.fstype ? ` (${r.fstype})` : ""}`,
      `mode: ${info.summary}`,
      // Not root: whether image files keep their owners, and if not, why.
      ...(info.mode === "root" ? [] : [`subordinate ids: ${(await subordinateIds()).reason}`]),
      `mount backend: ${r.backend.name} (${r.backend.reason})`,
      `reason: ${r.reason}`,
    ];
    ctx.out.result(lines.join("\n"));
  }
  return r.supported ? 0 : 1;
}
