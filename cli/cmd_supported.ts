/**
 * `strata supported [--why]`: exit 0 when the cache directory supports the
 * overlay store, 1 when not; `--why` prints the mode, the id mapping (and,
 * not as root, whether subordinate ids are mapped, or why not), the mount
 * backend and the reason (on stdout: it is the result asked for), and
 * whether the kernel and the OCI runtime enforce seccomp filters here.
 *
 * @module
 */
import { supportedReason } from "../overlay/supported.ts";
import { selectRuntime } from "../bundle/run.ts";
import { seccompSupport } from "../bundle/seccomp_host.ts";
import { defaultSeccompProfile, nativeSeccompArch } from "../bundle/seccomp.ts";
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
      ...await seccompLines(),
    ];
    ctx.out.result(lines.join("\n"));
  }
  return r.supported ? 0 : 1;
}

/**
 * The `--why` lines on seccomp: does the kernel run filters (its actions,
 * `CONFIG_SECCOMP*`), does the runtime compile them (libseccomp, `runc
 * features`), and which profile a container gets by default.
 */
async function seccompLines(): Promise<string[]> {
  const runtime = await selectRuntime().catch(() => undefined);
  const s = await seccompSupport(runtime?.path);
  const config = Object.entries(s.config).map(([k, v]) => `${k}=${v}`).join(" ");
  const kernel = [
    s.kernel ? "filter mode" : "no filter mode",
    s.kernelActions.length ? `actions: ${s.kernelActions.join(" ")}` : "",
    config ? `${config} (${s.configSource})` : "",
    s.ownMode !== undefined ? `strata itself runs with Seccomp: ${s.ownMode}` : "",
  ].filter(Boolean).join("; ");
  let rt = "no OCI runtime found";
  if (s.runtime) {
    const f = s.features;
    rt = [
      `${s.runtime}: ${s.runtimeVersion ?? "version unknown"}`,
      s.libseccomp ? `libseccomp ${s.libseccomp}` : "",
      f
        ? `features: seccomp ${f.enabled ? "enabled" : "disabled"}, ${f.actions.length} actions, ` +
          `${f.archs.length} architectures`
        : "",
    ].filter(Boolean).join("; ");
  }
  const profile = defaultSeccompProfile();
  const arches = profile.translate({ capabilities: [], kernel: [0, 1] })?.architectures ?? [];
  return [
    `seccomp: ${s.enforced ? "enforced" : "not enforced"} (${s.reason})`,
    `seccomp kernel: ${kernel}`,
    `seccomp runtime: ${rt}`,
    `seccomp default: strata's built-in profile (${profile.defaultAction} errno ${
      profile.defaultErrnoRet ?? 1
    } for calls it does not allow; ${nativeSeccompArch()}: ${arches.join(", ") || "native only"})`,
  ];
}
