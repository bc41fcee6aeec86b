/**
 * The process environment: through `Deno.env` when `--allow-env` is granted,
 * else through libc (`getenv`, `setenv`, `unsetenv`, `environ`), which needs
 * only `--allow-ffi`. Both read and change the same table (Deno's `Deno.env`
 * is libc's environment), and both refuse the same names and values with the
 * same errors, so which one is used changes nothing else. Code outside
 * `sys/` calls these, never `Deno.env` (tests/permission_guard_test.ts).
 *
 * @module
 */
import { cstr, environTable, libc } from "./libc.ts";
import { granted } from "./permissions.ts";

const strict = new TextDecoder("utf-8", { fatal: true });

/** Deno's checks of a variable's name, with its words. */
function checkKey(key: string): void {
  if (key === "") throw new TypeError("Key is an empty string.");
  if (/[=\0]/.test(key)) throw new TypeError(`Key contains invalid characters: ${quote(key)}`);
}

function checkValue(value: string): void {
  if (value.includes("\0")) {
    throw new TypeError(`Value contains invalid characters: ${quote(value)}`);
  }
}

/** A string as Rust's `{:?}` prints it, as in Deno's messages. */
function quote(s: string): string {
  return `"${
    // deno-lint-ignore no-control-regex
    s.replace(/[\\"\0-\x1f\x7f]/g, (c) => {
      if (c === "\\" || c === '"') return `\\${c}`;
      if (c === "\n") return "\\n";
      if (c === "\r") return "\\r";
      if (c === "\t") return "\\t";
      if (c === "\0") return "\\0";
      return `\\u{${c.charCodeAt(0).toString(16)}}`;
    })}"`;
}

/** Bytes as Rust's `{:?}` of an `OsStr` prints them: invalid UTF-8 as `\xNN`. */
function quoteBytes(b: Uint8Array): string {
  let out = "";
  let i = 0;
  while (i < b.length) {
    // The longest valid prefix decodes; a byte that starts no valid sequence is escaped.
    let j = i + 1;
    let text: string | undefined;
    for (let n = Math.min(4, b.length - i); n >= 1; n--) {
      try {
        text = strict.decode(b.subarray(i, i + n));
        j = i + n;
        break;
      } catch { /* shorter */ }
    }
    out += text !== undefined
      ? quote(text).slice(1, -1)
      : `\\x${b[i].toString(16).toUpperCase().padStart(2, "0")}`;
    i = j;
  }
  return `"${out}"`;
}

/** Decodes the C string at `p` as Deno does (bytes that are not UTF-8 come back as bytes). */
function decodeC(p: Deno.PointerObject): string | Uint8Array {
  const text = Deno.UnsafePointerView.getCString(p);
  if (!text.includes("\uFFFD")) return text;
  // A replacement character: invalid UTF-8, or a real U+FFFD. Ask the bytes.
  const view = new Deno.UnsafePointerView(p);
  let n = 0;
  while (view.getUint8(n) !== 0) n++;
  const bytes = new Uint8Array(n);
  view.copyInto(bytes);
  try {
    return strict.decode(bytes);
  } catch {
    return bytes;
  }
}

/**
 * The value of the environment variable `name`, or undefined.
 *
 * @throws {TypeError} for an empty name or one holding `=` or NUL (as `Deno.env.get`).
 * @throws {Deno.errors.InvalidData} when the value is not UTF-8 (as `Deno.env.get`).
 *
 * @example Usage
 * ```ts
 * import { getEnv } from "./env.ts";
 * console.log(getEnv("HOME"));
 * ```
 */
export function getEnv(name: string): string | undefined {
  if (granted("env")) return Deno.env.get(name);
  checkKey(name);
  environTable(); // binds getenv with the other symbols of the libc routes, once
  const p = libc().getenv(cstr(name));
  if (p === null) return undefined;
  const v = decodeC(p);
  if (typeof v === "string") return v;
  throw new Deno.errors.InvalidData(`environment variable was not valid unicode: ${quoteBytes(v)}`);
}

/**
 * Sets the environment variable `name` to `value` for this process and the
 * programs it starts from now on.
 *
 * @throws {TypeError} for a name or value Deno refuses (empty, `=`, NUL).
 *
 * @example Usage
 * ```ts
 * import { getEnv, setEnv } from "./env.ts";
 * setEnv("STRATA_EXAMPLE", "1");
 * console.log(getEnv("STRATA_EXAMPLE")); // "1"
 * ```
 */
export function setEnv(name: string, value: string): void {
  if (granted("env")) return Deno.env.set(name, value);
  checkKey(name);
  checkValue(value);
  if (libc().setenv(cstr(name), cstr(value), 1) !== 0) {
    throw new RangeError(`cannot set the environment variable ${name}: out of memory`);
  }
}

/**
 * Removes the environment variable `name` (nothing happens when it is not set).
 *
 * @example Usage
 * ```ts
 * import { deleteEnv } from "./env.ts";
 * deleteEnv("STRATA_EXAMPLE");
 * ```
 */
export function deleteEnv(name: string): void {
  if (granted("env")) return Deno.env.delete(name);
  if (name === "" || /[=\0]/.test(name)) {
    throw new TypeError(`Key contains invalid characters: ${quote(name)}`);
  }
  libc().unsetenv(cstr(name));
}

/**
 * The whole environment as an object, as `Deno.env.toObject()` (variables
 * whose name or value is not UTF-8 are left out, as there).
 *
 * @example Usage
 * ```ts
 * import { envObject } from "./env.ts";
 * console.log(Object.keys(envObject()).length > 0);
 * ```
 */
export function envObject(): Record<string, string> {
  if (granted("env")) return Deno.env.toObject();
  const out: Record<string, string> = {};
  const table = environTable();
  if (table === null) return out;
  const view = new Deno.UnsafePointerView(table);
  for (let i = 0;; i++) {
    const p = view.getPointer(i * 8);
    if (p === null) break;
    const entry = decodeC(p);
    if (typeof entry !== "string") continue;
    const eq = entry.indexOf("=", 1); // a name may not be empty, so "=x=1" is the name "=x"
    if (eq < 0) continue;
    out[entry.slice(0, eq)] = entry.slice(eq + 1); // a duplicate: the last wins, as in Deno
  }
  return out;
}
