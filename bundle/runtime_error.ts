/**
 * The error of a runtime that could not run a container, apart from
 * `run.ts` so that a warm `strata run` can raise it without loading that.
 *
 * @module
 */

/**
 * The runtime failed to create or start the container (as opposed to the
 * container exiting non-zero); the message is the runtime's own.
 *
 * @example Usage
 * ```ts
 * import { RuntimeError } from "./runtime_error.ts";
 * const e = new RuntimeError("runc", "exec: \"/x\": executable file not found in $PATH");
 * console.log(e.exitCode); // 127
 * ```
 */
export class RuntimeError extends Error {
  /**
   * When the container's command itself could not be run, the shell's status
   * for it, as docker and podman return: 127 not found, 126 found but not
   * executable. Undefined for other failures.
   */
  readonly exitCode?: 126 | 127;
  /** Creates the error for `runtime` with its message `detail`. */
  constructor(readonly runtime: string, detail: string, options?: ErrorOptions) {
    super(`${runtime} could not run the container: ${detail}`, options);
    this.name = "RuntimeError";
    // runc and crun: `exec: "CMD": executable file not found in $PATH`,
    // `exec: "CMD": no such file or directory`, `exec: "CMD": permission denied`.
    if (/exec[^:]*: .*(?:executable file not found|no such file or directory)/i.test(detail)) {
      this.exitCode = 127;
    } else if (
      /exec[^:]*: .*(?:permission denied|is a directory|exec format error)/i.test(detail)
    ) {
      this.exitCode = 126;
    }
  }
}
