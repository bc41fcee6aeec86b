/**
 * What every command receives: the parsed command line, the output channels,
 * the cache directory and an abort signal that Ctrl-C fires.
 *
 * @module
 */
import type { OptionValues, ParsedArgs } from "./args.ts";
import { UsageError } from "./args.ts";
import type { Output } from "./output.ts";

/** The context a command runs in. */
export interface Context {
  /** The parsed command line. */
  readonly args: ParsedArgs;
  /** Option values by long name. */
  readonly options: OptionValues;
  /** Results (stdout) and notes and progress (stderr). */
  readonly out: Output;
  /** Fires on the first SIGINT/SIGTERM; commands pass it down so work stops and cleans up. */
  readonly signal: AbortSignal;
  /** The cache root: `--cache` or the store's default. */
  readonly cacheRoot: string;
  /**
   * Stops turning SIGINT/SIGTERM into `signal` (for `run`, whose runtime
   * wrapper forwards them to the container from then on).
   */
  releaseSignals(): void;
}

/** Options for opening images, from the global options. */
export interface ImageSourceOptions {
  /** `--platform` as given. */
  platform?: string;
  /**
   * False with `--tls-verify=false`, true with `--tls-verify`; unset
   * otherwise (then registries.conf's `insecure` decides, host by host).
   */
  tlsVerify?: boolean;
  /** `--creds USER:PASS` split. */
  creds?: { username: string; password: string };
}

/**
 * Reads the image-source options (`--platform`, `--tls-verify`, `--creds`).
 *
 * @throws {UsageError} when `--creds` has no colon or `--platform` is malformed.
 *
 * @example Usage
 * ```ts
 * import { imageSourceOptions } from "./context.ts";
 * console.log(imageSourceOptions({ creds: "me:secret" }, "pull").creds?.username); // "me"
 * ```
 */
export function imageSourceOptions(options: OptionValues, command?: string): ImageSourceOptions {
  const out: ImageSourceOptions = {};
  if (typeof options["tls-verify"] === "boolean") out.tlsVerify = options["tls-verify"];
  const creds = options.creds as string | undefined;
  if (creds !== undefined) {
    const i = creds.indexOf(":");
    if (i <= 0) throw new UsageError("option --creds must be USER:PASS", command);
    out.creds = { username: creds.slice(0, i), password: creds.slice(i + 1) };
  }
  const platform = options.platform as string | undefined;
  if (platform !== undefined) {
    if (!/^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/i.test(platform)) {
      throw new UsageError(
        `option --platform must be OS/ARCH[/VARIANT] (for example linux/arm64), not '${platform}'`,
        command,
      );
    }
    out.platform = platform;
  }
  return out;
}
