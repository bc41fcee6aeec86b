/**
 * The nearest known word to a typo, for "did you mean" hints: the CLI's
 * commands and options, a seccomp profile's field names.
 *
 * @module
 */

/**
 * The one of `known` within two edits of `word` (Levenshtein distance; the
 * first of the closest), or undefined when none is that near.
 *
 * @example Usage
 * ```ts
 * import { nearest } from "./nearest.ts";
 * console.log(nearest("pul", ["pull", "run"])); // "pull"
 * ```
 */
export function nearest(
  word: string,
  known: readonly string[],
  options: { ignoreCase?: boolean } = {},
): string | undefined {
  const fold = (s: string) => options.ignoreCase ? s.toLowerCase() : s;
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(fold(word), fold(k));
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

/** Levenshtein distance (short words only: 99 past 64 characters or 2 in length). */
function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2 || a.length > 64) return 99;
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(next[j - 1] + 1, row[j] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
}
