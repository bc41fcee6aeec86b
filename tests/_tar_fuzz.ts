/**
 * The tar differential fuzz loop: seeded mutations of real tarballs, each
 * read by strata, GNU tar and libarchive and judged by
 * {@linkcode compareReadings}; strata is also fed every case in odd-sized
 * chunks, which must not change what it reads. Used by `tests/tar_diff_test.ts`
 * (a fixed seed, a few thousand cases) and by `deno task fuzz` (any seed and
 * count; failing cases are kept in `tests/tar_corpus/`).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "@std/path";
import type { CorpusArchive } from "./_tar_corpus.ts";
import {
  compareReadings,
  type GnuRaw,
  gnuReading,
  libarchiveReading,
  type Reading,
  runGnuTar,
  strataReading,
  type Verdict,
} from "./_tar_diff.ts";
import { mutate, Rng } from "./_tar_mutate.ts";

/** Where the cases that once failed are kept, and replayed. */
export const CORPUS_DIR: string = new URL("./tar_corpus/", import.meta.url).pathname;
/** The sparse file's size in the fuzz seeds: small, so each case stays quick. */
export const SEED_SPARSE_SIZE = 3 * 512 * 16;

/** A case whose reading broke the rule. */
export interface FuzzFailure {
  /** The case's bytes. */
  bytes: Uint8Array;
  /** What the mutator did, and from which archive. */
  what: string;
  /** Why the verdict failed. */
  problems: string[];
}

/** Counts of what happened over a run. */
export interface FuzzStats {
  cases: number;
  /** strata refused (with a TarFormatError). */
  refused: number;
  /** strata accepted and agreed. */
  agreed: number;
  /** GNU tar and libarchive both accepted but listed differently (strata sided with one). */
  readersDisagree: number;
}

/** The short content name of a regression file: sha256 of the bytes. */
export function caseName(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex").slice(0, 16) + ".tar";
}

/**
 * Judges strata's reading of `bytes` (`strata`, read here when not given)
 * against GNU tar's (`gnu`) and, with `useLib`, libarchive's; libarchive
 * only reads what strata accepted (a refusal needs no comparison).
 */
export function judge(
  bytes: Uint8Array,
  gnu: Reading | undefined,
  useLib: boolean,
  rng?: Rng,
  strata: Reading = strataReading(bytes),
): Verdict {
  const lib = useLib && strata.error === undefined ? libarchiveReading(bytes) : undefined;
  const v = compareReadings(strata, gnu, lib, bytes);
  // Chunking must not matter: the same reading from pieces of any size.
  const chunk = rng ? 1 + rng.int(700) : 61;
  const again = strataReading(bytes, chunk);
  const a = JSON.stringify([strata.entries, strata.error]);
  const b = JSON.stringify([again.entries, again.error]);
  if (a !== b) {
    v.problems.push(`pushed in ${chunk}-byte chunks, strata reads differently: ${b} vs ${a}`);
  }
  return v;
}

/**
 * Runs `count` seeded cases over `seeds` (GNU tar in batches of `batch`,
 * through files in `workDir`), calling `onFailure` for each failing case.
 */
export async function fuzz(options: {
  seed: number;
  count: number;
  /** Index of the first case (cases are numbered from 0 for a seed; default 0). */
  start?: number;
  seeds: CorpusArchive[];
  workDir: string;
  useGnu: boolean;
  useLib: boolean;
  batch?: number;
  onFailure?: (f: FuzzFailure) => void | Promise<void>;
  /** Called with each case strata accepts. */
  onAccepted?: (bytes: Uint8Array, what: string) => void;
  onProgress?: (stats: FuzzStats) => void;
}): Promise<{ failures: FuzzFailure[]; stats: FuzzStats }> {
  const failures: FuzzFailure[] = [];
  const stats: FuzzStats = { cases: 0, refused: 0, agreed: 0, readersDisagree: 0 };
  const batch = options.batch ?? 100;
  interface Batch {
    cases: { bytes: Uint8Array; what: string; rng: Rng }[];
    readings: Reading[];
    gnu: Promise<Map<number, GnuRaw>>;
  }
  // Batch k+1 is made and GNU tar starts on it while batch k is judged.
  const prepare = (n: number, first: number): Batch => {
    const cases: Batch["cases"] = [];
    for (let i = 0; i < n; i++) {
      // each case has its own generator: `deno task fuzz --case N` replays case N alone
      const caseRng = new Rng(options.seed * 1000003 + first + i);
      const base = caseRng.pick(options.seeds);
      const what: string[] = [];
      const bytes = mutate(base.bytes, caseRng, what);
      cases.push({
        bytes,
        what: `case ${first + i}, ${base.label}: ${what.join("; ")}`,
        rng: caseRng,
      });
    }
    // A refusal is always safe: GNU tar and libarchive only read what strata accepts.
    const readings = cases.map((c) => strataReading(c.bytes));
    const accepted = cases.map((_, i) => i).filter((i) => readings[i].error === undefined);
    const files = accepted.map((i) => {
      const f = join(options.workDir, `case-${first + i}.tar`);
      Deno.writeFileSync(f, cases[i].bytes);
      return f;
    });
    const gnu = (async () => {
      if (!options.useGnu) return new Map<number, GnuRaw>();
      const raw = await runGnuTar(files);
      for (const f of files) Deno.removeSync(f);
      return new Map(accepted.map((i, k) => [i, raw[k]]));
    })();
    return { cases, readings, gnu };
  };
  const start = options.start ?? 0;
  const end = start + options.count;
  let next: Batch | null = options.count > 0
    ? prepare(Math.min(batch, options.count), start)
    : null;
  for (let done = start; next; done += batch) {
    const cur: Batch = next;
    const after = done + batch;
    next = after < end ? prepare(Math.min(batch, end - after), after) : null;
    const gnuOf = await cur.gnu;
    for (const [i, c] of cur.cases.entries()) {
      const raw = gnuOf.get(i);
      const v = judge(
        c.bytes,
        raw ? gnuReading(raw) : undefined,
        options.useLib,
        c.rng,
        cur.readings[i],
      );
      stats.cases++;
      if (v.strata.error === undefined) options.onAccepted?.(c.bytes, c.what);
      if (v.strata.error !== undefined) stats.refused++;
      else if (v.problems.length === 0) stats.agreed++;
      if (
        v.gnu && v.lib && v.gnu.error === undefined && v.lib.error === undefined &&
        JSON.stringify(v.gnu.entries.map((e) => [e.name, e.type, e.size, e.sha, e.link])) !==
          JSON.stringify(v.lib.entries.map((e) => [e.name, e.type, e.size, e.sha, e.link]))
      ) stats.readersDisagree++;
      if (v.problems.length > 0) {
        const f = { bytes: c.bytes, what: c.what, problems: v.problems };
        failures.push(f);
        await options.onFailure?.(f);
      }
    }
    options.onProgress?.(stats);
  }
  return { failures, stats };
}
