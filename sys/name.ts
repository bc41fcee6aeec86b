/**
 * File names are bytes, JavaScript strings are UTF-16. A name that is not
 * valid UTF-8 (Latin-1 `caf\xe9`, as old archives hold) would lose its bytes
 * in a plain `TextDecoder` (each invalid byte becomes U+FFFD, so `caf\xe9`
 * and `caf\xe8` would become the same name). Names are decoded here the way
 * Python's `surrogateescape` does: every byte that is not part of valid UTF-8
 * becomes the lone surrogate U+DC80..U+DCFF, which valid UTF-8 never decodes
 * to, and encoding turns such a surrogate back into its byte. So
 * `encodeName(decodeName(b))` is `b` for every byte string, and valid UTF-8
 * names are the plain strings they always were.
 *
 * @module
 */

const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();
/** A lone low surrogate in the escape range (a pair is one code point under `u`). */
const ESCAPED = /[\uDC80-\uDCFF]/u;

const cont = (b: Uint8Array, j: number) => j < b.length && (b[j] & 0xc0) === 0x80;

/** Length of the valid UTF-8 sequence at `b[i]`, or 0 when it is not one. */
function seqLen(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(b, i + 1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    const c1 = b[i + 1];
    if ((c === 0xe0 && c1 < 0xa0) || (c === 0xed && c1 > 0x9f)) return 0; // overlong, surrogate
    return cont(b, i + 1) && cont(b, i + 2) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    const c1 = b[i + 1];
    if ((c === 0xf0 && c1 < 0x90) || (c === 0xf4 && c1 > 0x8f)) return 0; // overlong, > U+10FFFF
    return cont(b, i + 1) && cont(b, i + 2) && cont(b, i + 3) ? 4 : 0;
  }
  return 0;
}

/**
 * Decodes a file name's bytes: UTF-8, with each byte that is not part of
 * valid UTF-8 kept as the lone surrogate U+DC00 + byte.
 *
 * @example Usage
 * ```ts
 * import { decodeName, encodeName } from "./name.ts";
 * const name = decodeName(new Uint8Array([0x63, 0x61, 0x66, 0xe9])); // "caf\udce9"
 * console.assert(encodeName(name).join() === "99,97,102,233");
 * ```
 */
export function decodeName(b: Uint8Array): string {
  try {
    return strict.decode(b);
  } catch {
    let out = "";
    let run = 0;
    let i = 0;
    while (i < b.length) {
      const n = seqLen(b, i);
      if (n > 0) {
        i += n;
        continue;
      }
      if (i > run) out += strict.decode(b.subarray(run, i));
      out += String.fromCharCode(0xdc00 + b[i]);
      run = ++i;
    }
    if (run < b.length) out += strict.decode(b.subarray(run));
    return out;
  }
}

/**
 * Writes the bytes of the name `s` into `buf` (which holds at least
 * `s.length * 3` bytes) and returns how many: UTF-8, except that a lone
 * surrogate U+DC80..U+DCFF is the byte it escapes (see {@linkcode decodeName}).
 *
 * @example Usage
 * ```ts
 * import { encodeNameInto } from "./name.ts";
 * const buf = new Uint8Array(12);
 * console.assert(encodeNameInto("caf\udce9", buf) === 4 && buf[3] === 0xe9);
 * ```
 */
export function encodeNameInto(s: string, buf: Uint8Array): number {
  const { written } = encoder.encodeInto(s, buf);
  if (written === s.length || !ESCAPED.test(s)) return written; // ASCII, or nothing escaped
  let n = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xdc80 && cp <= 0xdcff) buf[n++] = cp - 0xdc00;
    else n += encoder.encodeInto(ch, buf.subarray(n)).written;
  }
  return n;
}

/**
 * The bytes of the name `s` (see {@linkcode encodeNameInto}).
 *
 * @example Usage
 * ```ts
 * import { encodeName } from "./name.ts";
 * console.assert(encodeName("caf\udce9").length === 4);
 * ```
 */
export function encodeName(s: string): Uint8Array {
  const buf = new Uint8Array(s.length * 3);
  return buf.subarray(0, encodeNameInto(s, buf));
}

/**
 * Tells whether the name `s` holds escaped bytes (it was not valid UTF-8), so
 * a Deno API, which takes names as UTF-8, would name another file.
 *
 * @example Usage
 * ```ts
 * import { hasEscapes } from "./name.ts";
 * console.assert(hasEscapes("caf\udce9") && !hasEscapes("café"));
 * ```
 */
export function hasEscapes(s: string): boolean {
  return ESCAPED.test(s);
}
