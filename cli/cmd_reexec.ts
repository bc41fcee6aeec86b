/**
 * Running the command line again, loaded by `cli.ts` only when it does:
 * into the user/mount namespace before a mounting command's own modules load
 * (so the process that is replaced loaded next to nothing), and with
 * `--unsafely-ignore-certificate-errors=HOST` when `--tls-verify=false` meets
 * a registry certificate that cannot be verified.
 *
 * @module
 */
import type { Output } from "./output.ts";
import { ensureUserNamespace, rerunWithDenoFlags } from "../overlay/userns.ts";
import { getEnv } from "../sys/env.ts";

/**
 * Enters the namespace the mounting commands need (see
 * `ensureUserNamespace`), re-executing the command line when it has to.
 * When no namespace can be made it returns: the command loads and enters it
 * again, so its usage errors still come first and the failure is reported
 * as usual.
 *
 * @example Usage
 * ```ts ignore
 * await enterNamespaceEarly(out);
 * ```
 */
export async function enterNamespaceEarly(out: Output): Promise<void> {
  try {
    await ensureUserNamespace({ quiet: out.mode === "quiet", warn: (m) => out.note(m) });
  } catch {
    // reported by the command itself
  }
}

/** Marks the run started by {@linkcode rerunForCertificate}, with the host it is for. */
const TLS_RERUN_ENV = "STRATA_TLS_RERUN";

/**
 * TLS verification off for a registry (`--tls-verify=false`, or `insecure =
 * true` in registries.conf) whose certificate cannot be verified: Deno's
 * fetch can skip the check only for the whole process, so the command runs
 * again (same pid, same arguments) with
 * `--unsafely-ignore-certificate-errors=HOST` (Deno then says "DANGER: TLS
 * certificate validation is disabled for: HOST"), as skopeo skips it. The
 * failure happens at the first request to that host, before anything is
 * written; a second such host (a mirror, then its registry) adds its own
 * flag in one more run. Returns when that cannot be done (already done for
 * the host, or not run as `deno run`).
 *
 * @example Usage
 * ```ts ignore
 * await rerunForCertificate(error);
 * ```
 */
export async function rerunForCertificate(e: unknown): Promise<void> {
  if ((e as Error)?.name !== "UnverifiedCertificateError") return;
  const host = (e as { hostname?: string }).hostname;
  try {
    const done = getEnv(TLS_RERUN_ENV)?.split(",") ?? [];
    if (!host || done.includes(host)) return;
    await rerunWithDenoFlags([`--unsafely-ignore-certificate-errors=${host}`], {
      [TLS_RERUN_ENV]: [...done, host].join(","),
    });
  } catch {
    // cannot run again (no --allow-env, --allow-run): the error line says what to do
  }
}
