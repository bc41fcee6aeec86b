/**
 * Errors a spec option leaves for a later option to make moot, thrown by
 * `newSpec` when none did: the image's `User` that cannot be resolved does
 * not matter when the caller names the user (docker never looks up the
 * image's `USER` under `--user`). Internal: not exported from `mod.ts`.
 *
 * @module
 */
import type { Spec } from "./spec.ts";

const pending = new WeakMap<Spec, Map<string, unknown>>();

/**
 * Records `error` for `spec` under `key`, replacing an earlier one.
 *
 * @example Usage
 * ```ts
 * import { deferError, throwDeferred } from "./deferred.ts";
 * const spec = { ociVersion: "1.0.2" };
 * deferError(spec, "user", new Error("no such user"));
 * try {
 *   throwDeferred(spec);
 * } catch (e) {
 *   console.log((e as Error).message); // "no such user"
 * }
 * ```
 */
export function deferError(spec: Spec, key: string, error: unknown): void {
  let m = pending.get(spec);
  if (!m) pending.set(spec, m = new Map());
  m.set(key, error);
}

/**
 * Forgets the error recorded for `spec` under `key`: a later option made it moot.
 *
 * @example Usage
 * ```ts
 * import { clearDeferred, deferError, throwDeferred } from "./deferred.ts";
 * const spec = { ociVersion: "1.0.2" };
 * deferError(spec, "user", new Error("no such user"));
 * clearDeferred(spec, "user");
 * throwDeferred(spec); // nothing left to throw
 * ```
 */
export function clearDeferred(spec: Spec, key: string): void {
  pending.get(spec)?.delete(key);
}

/**
 * Throws the first error still recorded for `spec`, if any.
 *
 * @example Usage
 * ```ts
 * import { throwDeferred } from "./deferred.ts";
 * throwDeferred({ ociVersion: "1.0.2" }); // nothing recorded: returns
 * ```
 */
export function throwDeferred(spec: Spec): void {
  const m = pending.get(spec);
  if (!m) return;
  for (const e of m.values()) throw e;
}
