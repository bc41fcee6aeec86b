/**
 * The errors of the layer applicator: one class per kind of failure, all
 * extending {@linkcode ApplyError}, whose message names the tar entry and
 * the layer's digest when known, with the underlying error as `cause`.
 *
 * @module
 */

/**
 * Base class of every applicator failure. `entry` is the tar entry's name
 * and `layer` the layer's digest, when known; `cause` holds the underlying
 * error (an `ErrnoError`, a tar format error, a digest mismatch).
 *
 * @example Usage
 * ```ts ignore
 * import { ApplyError, TarApplicator } from "./applicator.ts";
 * try {
 *   await new TarApplicator().apply(stream, "/tmp/root");
 * } catch (e) {
 *   if (e instanceof ApplyError) console.error(e.entry, e.layer, e.cause);
 * }
 * ```
 */
export class ApplyError extends Error {
  /** The tar entry being applied, when the failure is about one. */
  readonly entry?: string;
  /** The layer's digest or name, when known. */
  readonly layer?: string;
  /** Creates the error; the message gets the entry and layer appended. */
  constructor(reason: string, entry?: string, layer?: string, options?: ErrorOptions) {
    super(
      `cannot apply ${layer ? `layer ${layer}` : "layer"}${
        entry !== undefined ? `, entry ${JSON.stringify(entry)}` : ""
      }: ${reason}`,
      options,
    );
    this.name = new.target.name;
    this.entry = entry;
    this.layer = layer;
  }
}

/**
 * The tarball is damaged (bad checksum, truncated, not a tar) or the stream
 * carrying it failed (a digest mismatch, a read error); `cause` says which.
 *
 * @example Usage
 * ```ts
 * import { DamagedLayerError } from "./applicator.ts";
 * const e = new DamagedLayerError("truncated", "etc/passwd", "sha256:abc");
 * console.log(e.message);
 * ```
 */
export class DamagedLayerError extends ApplyError {}

/**
 * A syscall writing an entry failed (no space, read-only, permission);
 * `cause` is the {@linkcode ErrnoError}.
 *
 * @example Usage
 * ```ts
 * import { EntryWriteError } from "./applicator.ts";
 * console.log(new EntryWriteError("openat: ENOSPC", "big.bin").message);
 * ```
 */
export class EntryWriteError extends ApplyError {}

/**
 * A hardlink's target is missing (in the root and, in direct mode, in every
 * lower layer), is a directory, or is the entry itself.
 *
 * @example Usage
 * ```ts
 * import { HardlinkTargetError } from "./applicator.ts";
 * console.log(new HardlinkTargetError("target etc/shadow does not exist", "x").message);
 * ```
 */
export class HardlinkTargetError extends ApplyError {}

/**
 * A device node could not be created (not privileged) and `devices: "error"`
 * was asked for.
 *
 * @example Usage
 * ```ts
 * import { DeviceNotPermittedError } from "./applicator.ts";
 * console.log(new DeviceNotPermittedError("mknod: EPERM", "dev/null").message);
 * ```
 */
export class DeviceNotPermittedError extends ApplyError {}

/**
 * A whiteout cannot be applied: its name is empty, `.` or `..`, or direct
 * mode could not create the char 0/0 device (neither root nor a user
 * namespace: use `whiteouts: "merged"`).
 *
 * @example Usage
 * ```ts
 * import { WhiteoutError } from "./applicator.ts";
 * console.log(new WhiteoutError("whiteout of '..'", "a/.wh..").message);
 * ```
 */
export class WhiteoutError extends ApplyError {}

/**
 * Wraps a parser error (or anything not an {@linkcode ApplyError}) as a
 * {@linkcode DamagedLayerError}; an `ApplyError` is returned as it is.
 *
 * @example Usage
 * ```ts
 * import { asDamaged, DamagedLayerError } from "./errors.ts";
 * const e = asDamaged(new Error("bad checksum"), "sha256:ab");
 * console.log(e instanceof DamagedLayerError); // true
 * ```
 */
export function asDamaged(e: unknown, layer?: string): unknown {
  if (e instanceof ApplyError) return e;
  const entry = (e as { entry?: string })?.entry;
  return new DamagedLayerError(
    `damaged tar: ${(e as Error)?.message ?? e}`,
    typeof entry === "string" ? entry : undefined,
    layer,
    { cause: e },
  );
}

/** An error as it crosses from the worker (structured clone keeps no classes). */
export interface SerializedError {
  /** Class name. */
  name: string;
  /** Message. */
  message: string;
  /** Entry, for an {@linkcode ApplyError}. */
  entry?: string;
  /** Layer, for an {@linkcode ApplyError}. */
  layer?: string;
  /** Own enumerable fields (errno, code, syscall, path, ...). */
  fields?: Record<string, unknown>;
  /** The cause, serialized the same way. */
  cause?: SerializedError;
}

/**
 * Turns an error into plain data for `postMessage`.
 *
 * @example Usage
 * ```ts
 * import { HardlinkTargetError, reviveError, serializeError } from "./errors.ts";
 * const back = reviveError(serializeError(new HardlinkTargetError("gone", "x", "sha256:ab")));
 * console.log(back instanceof HardlinkTargetError); // true
 * ```
 */
export function serializeError(e: unknown, depth = 0): SerializedError {
  if (!(e instanceof Error)) return { name: "Error", message: String(e) };
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e)) {
    if (k === "entry" || k === "layer" || k === "cause") continue;
    if (v === null || ["string", "number", "boolean"].includes(typeof v)) fields[k] = v;
  }
  return {
    name: e.name,
    message: e.message,
    entry: (e as ApplyError).entry,
    layer: (e as ApplyError).layer,
    fields,
    cause: e.cause !== undefined && depth < 4 ? serializeError(e.cause, depth + 1) : undefined,
  };
}

const classes: Record<string, typeof ApplyError> = {
  ApplyError,
  DamagedLayerError,
  EntryWriteError,
  HardlinkTargetError,
  DeviceNotPermittedError,
  WhiteoutError,
};

/**
 * Rebuilds an error serialized by {@linkcode serializeError}, with its
 * applicator class, message, entry, layer, fields and cause.
 *
 * @example Usage
 * ```ts
 * import { reviveError } from "./errors.ts";
 * const e = reviveError({ name: "WhiteoutError", message: "no", entry: "a/.wh.." });
 * console.log(e.name, e.message); // WhiteoutError no
 * ```
 */
export function reviveError(s: SerializedError): Error {
  const cause = s.cause ? reviveError(s.cause) : undefined;
  const cls = classes[s.name];
  const e: Error = cls
    ? new cls("", s.entry, s.layer, cause ? { cause } : undefined)
    : new Error("", cause ? { cause } : undefined);
  Object.defineProperty(e, "message", { value: s.message, writable: true, configurable: true });
  if (!cls) e.name = s.name;
  Object.assign(e, s.fields ?? {});
  return e;
}
