/**
 * What the kernel offers the seccomp filter: whether it runs filters at all,
 * and which system call ABIs it runs (a filter covering an ABI the kernel
 * refuses anyway costs the runtime time to build).
 *
 * @module
 */
import { accessible } from "./fs.ts";
import { errno, ffiAvailable, libc } from "./libc.ts";
import { readProcText } from "./proc.ts";

/** The x32 ABI's marker bit in a system call number (`__X32_SYSCALL_BIT`). */
const X32_SYSCALL_BIT = 0x40000000;
/** getpid in the x32 table. */
const X32_GETPID = X32_SYSCALL_BIT + 39;
const ENOSYS = 38;

let x32: boolean | undefined;

/**
 * Tells whether this x86-64 kernel runs x32 system calls
 * (`CONFIG_X86_X32_ABI`), by making one (x32's getpid: ENOSYS when the ABI is
 * not built in). Undefined when that cannot be asked safely: not x86-64, no
 * FFI, or this process already runs under a seccomp filter (which may kill a
 * process making a call of an ABI it does not cover). Asked once per process.
 *
 * @example Usage
 * ```ts ignore
 * import { kernelRunsX32 } from "./abi.ts";
 * console.log(kernelRunsX32()); // false on Debian's and most distributions' kernels
 * ```
 */
export function kernelRunsX32(): boolean | undefined {
  if (x32 !== undefined) return x32;
  if (Deno.build.arch !== "x86_64" || !ffiAvailable()) return undefined;
  try {
    const status = readProcText("/proc/self/status");
    const mode = /^Seccomp:\s*(\d+)/m.exec(status)?.[1];
    if (mode !== "0") return undefined;
  } catch {
    return undefined;
  }
  // `sys_openat2` is libc's syscall(2) under the name the applicator binds it
  // by, which a warm run has already bound (cli/pipeline.ts): a new symbol
  // would cost a dlopen. getpid ignores the other arguments.
  const r = Number(libc().sys_openat2(BigInt(X32_GETPID), 0n, null, null, 0n));
  return x32 = r >= 0 || errno() !== ENOSYS;
}

let filterMode: boolean | undefined;

/**
 * True when the kernel can run seccomp filters (`CONFIG_SECCOMP_FILTER`):
 * `/proc/sys/kernel/seccomp/actions_avail` exists (Linux 4.14+), or, on an
 * older kernel, `/proc/self/status` has a `Seccomp:` field. Checked once per
 * process.
 *
 * @example Usage
 * ```ts ignore
 * import { kernelHasSeccompFilter } from "./abi.ts";
 * console.log(kernelHasSeccompFilter()); // true on Debian's kernels
 * ```
 */
export function kernelHasSeccompFilter(): boolean {
  if (filterMode !== undefined) return filterMode;
  if (accessible("/proc/sys/kernel/seccomp/actions_avail", "exists")) return filterMode = true;
  try {
    return filterMode = /^Seccomp:/m.test(readProcText("/proc/self/status"));
  } catch {
    return filterMode = false;
  }
}
