/**
 * `deno task fuzz [--seed N] [--count N] [--start N]`: the tar differential
 * fuzz loop of `tests/tar_diff_test.ts` for as long as asked (default: seed
 * from the clock, 20000 cases). Every failing case is kept in
 * `tests/tar_corpus/` (its bytes, gzipped when big, and beside it what was done and what went
 * wrong), where the test replays it: commit it with the fix. `--start N
 * --count 1` re-runs case N of a seed alone.
 *
 * @module
 */
import { join } from "@std/path";
import { gzipSync } from "node:zlib";
import { libarchiveMissing } from "./_libarchive.ts";
import { buildCorpus } from "./_tar_corpus.ts";
import { caseName, CORPUS_DIR, fuzz, SEED_SPARSE_SIZE } from "./_tar_fuzz.ts";

function arg(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(Deno.args[i + 1]);
  if (!Number.isSafeInteger(v) || v < 0) {
    console.error(`tar_fuzz: --${name} needs a whole number`);
    Deno.exit(2);
  }
  return v;
}

if (import.meta.main) {
  const missing = libarchiveMissing();
  if (missing) {
    console.error(`tar_fuzz: libarchive is needed as the second reader: ${missing}`);
    Deno.exit(1);
  }
  const seed = arg("seed", Date.now() % 1_000_000_007);
  const count = arg("count", 20000);
  const start = arg("start", 0);
  const work = await Deno.makeTempDir({ prefix: "strata-tar-fuzz-" });
  try {
    const { archives } = await buildCorpus(work, SEED_SPARSE_SIZE);
    console.error(`tar_fuzz: seed ${seed}, cases ${start}..${start + count - 1}`);
    const t0 = performance.now();
    const { failures, stats } = await fuzz({
      seed,
      count,
      start,
      seeds: archives.filter((a) => !a.varies),
      workDir: work,
      useGnu: true,
      useLib: true,
      onFailure: (f) => {
        const name = caseName(f.bytes);
        // big cases (an oversized record) are kept compressed
        if (f.bytes.length > 65536) {
          Deno.writeFileSync(join(CORPUS_DIR, `${name}.gz`), gzipSync(f.bytes));
        } else Deno.writeFileSync(join(CORPUS_DIR, name), f.bytes);
        Deno.writeTextFileSync(
          join(CORPUS_DIR, name.replace(/\.tar$/, ".txt")),
          `seed ${seed}, ${f.what}\n${f.problems.join("\n")}\n`,
        );
        console.error(`FAIL ${name}: ${f.what}\n  ${f.problems.slice(0, 4).join("\n  ")}`);
      },
      onProgress: (s) => {
        const secs = ((performance.now() - t0) / 1000).toFixed(0);
        console.error(`${s.cases} cases, ${s.refused} refused, ${s.agreed} agreed (${secs} s)`);
      },
    });
    console.log(JSON.stringify({ seed, start, ...stats, failures: failures.length }));
    if (failures.length) {
      console.error(`tar_fuzz: ${failures.length} failing cases kept in ${CORPUS_DIR}`);
      Deno.exit(1);
    }
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}
