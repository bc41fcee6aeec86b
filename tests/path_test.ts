/**
 * sys/path.ts against node:path's POSIX functions, which it replaces in the
 * import map: the same answers on hand-picked edge cases and on random paths.
 */
import posix from "node:path";
import { assertEquals, assertThrows } from "@std/assert";
import * as path from "../sys/path.ts";

const CASES = [
  "",
  ".",
  "..",
  "/",
  "//",
  "///",
  "//a",
  "a",
  "a/",
  "/a",
  "/a/",
  "a//b",
  "/a/b/",
  "/a/b//",
  "./a",
  "../a",
  "../../a/b",
  "a/..",
  "a/../",
  "a/../..",
  "/..",
  "/../a",
  "/a/./b/../c",
  ".profile",
  "a.",
  "a.b.c",
  "...",
  "/x/.hidden.tar.gz",
  "dir.d/file",
  "a/b.",
  "/a/b/c/",
];

function randomPath(rand: () => number): string {
  const parts = ["", ".", "..", "a", "b", "c.d", ".e", "f.", "..g"];
  const n = Math.floor(rand() * 6);
  let s = rand() < 0.5 ? "/" : "";
  for (let i = 0; i < n; i++) {
    s += parts[Math.floor(rand() * parts.length)];
    if (i < n - 1 || rand() < 0.3) s += rand() < 0.2 ? "//" : "/";
  }
  return s;
}

function seeded(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
}

function inputs(): string[] {
  const rand = seeded(42);
  const out = [...CASES];
  for (let i = 0; i < 2000; i++) out.push(randomPath(rand));
  return out;
}

Deno.test("path: one-argument functions agree with node:path (posix)", () => {
  for (const p of inputs()) {
    assertEquals(path.normalize(p), posix.posix.normalize(p), `normalize(${JSON.stringify(p)})`);
    assertEquals(path.dirname(p), posix.posix.dirname(p), `dirname(${JSON.stringify(p)})`);
    assertEquals(path.basename(p), posix.posix.basename(p), `basename(${JSON.stringify(p)})`);
    assertEquals(path.extname(p), posix.posix.extname(p), `extname(${JSON.stringify(p)})`);
    assertEquals(path.isAbsolute(p), posix.posix.isAbsolute(p), `isAbsolute(${JSON.stringify(p)})`);
    assertEquals(path.resolve(p), posix.posix.resolve(p), `resolve(${JSON.stringify(p)})`);
  }
});

Deno.test("path: join, resolve and relative agree with node:path (posix)", () => {
  const xs = inputs();
  const rand = seeded(7);
  const pick = () => xs[Math.floor(rand() * xs.length)];
  for (let i = 0; i < 3000; i++) {
    const a = pick();
    const b = pick();
    const c = pick();
    const what = JSON.stringify([a, b, c]);
    assertEquals(path.join(a, b, c), posix.posix.join(a, b, c), `join${what}`);
    assertEquals(path.join(a, b), posix.posix.join(a, b), `join${what}`);
    assertEquals(path.resolve(a, b, c), posix.posix.resolve(a, b, c), `resolve${what}`);
    assertEquals(path.relative(a, b), posix.posix.relative(a, b), `relative${what}`);
  }
  assertEquals(path.join(), posix.posix.join());
  assertEquals(path.resolve(), posix.posix.resolve());
});

Deno.test("path: basename with a suffix", () => {
  // (node:path has quirks for a suffix on paths with no last segment, like
  // basename("/", "b") === "/"; @std/path has others: strata never does that.)
  const suffixes = ["", ".gz", "b", "b.tar.gz", ".tar.gz", "z"];
  for (const p of [...CASES, "/a/b.tar.gz", "b.tar.gz/", "aaa/bbb"]) {
    if (path.basename(p) === "") continue;
    for (const s of suffixes) {
      assertEquals(path.basename(p, s), posix.posix.basename(p, s), `basename(${p}, ${s})`);
    }
  }
});

Deno.test("path: separators, and non-strings refused as node:path does", () => {
  assertEquals(path.SEPARATOR, "/");
  assertEquals(path.sep, posix.posix.sep);
  assertEquals(path.delimiter, posix.posix.delimiter);
  assertThrows(() => path.join("a", 1 as unknown as string), TypeError);
  assertThrows(() => path.dirname(undefined as unknown as string), TypeError);
});
