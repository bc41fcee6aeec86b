/**
 * strata's tar parser against GNU tar and libarchive (bsdtar's reader), on
 * the same bytes (issue #14): real tarballs from every tool and format found
 * here, a seeded fuzz loop of mutations of them, and every case that ever
 * failed (`tests/tar_corpus/`). For each input strata either refuses it
 * with a TarFormatError or lists what the other readers list, field by field
 * (see tests/_tar_diff.ts for the rule, layer/tar.ts for the choices). And
 * applying an archive never makes anything its listing does not show.
 *
 * libarchive is read through FFI (`libarchive.so.13`); where it is missing
 * these tests are skipped, and say so.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { createHash } from "node:crypto";
import { gunzipSync } from "node:zlib";
import { TarApplicator } from "../layer/applicator.ts";
import { confine } from "../layer/path.ts";
import { treeRecord } from "../layer/record.ts";
import { TarFormatError, TarParser } from "../layer/tar.ts";
import { denoPath, isRoot, run, sandboxArgv, tempDir } from "./_helpers.ts";
import { libarchiveMissing } from "./_libarchive.ts";
import { buildCorpus, type CorpusArchive } from "./_tar_corpus.ts";
import {
  compareReadings,
  gnuReading,
  libarchiveReading,
  runGnuTar,
  strataReading,
} from "./_tar_diff.ts";
import { caseName, CORPUS_DIR, fuzz, judge, SEED_SPARSE_SIZE } from "./_tar_fuzz.ts";

/** The fuzz loop's fixed seed and default number of cases (`STRATA_TAR_FUZZ_CASES` overrides). */
const FUZZ_SEED = 14;
const FUZZ_CASES = Number(Deno.env.get("STRATA_TAR_FUZZ_CASES") ?? 2000);

const missing = libarchiveMissing();
if (missing && !Deno.args.includes("--child")) {
  console.error(`tar_diff_test: SKIPPED, libarchive is needed as the second reader: ${missing}`);
}

/** The regression cases: every `.tar` (and, for big ones, `.tar.gz`) in tests/tar_corpus/. */
function regressionCases(): { name: string; bytes: Uint8Array }[] {
  const out = [];
  for (const e of Deno.readDirSync(CORPUS_DIR)) {
    if (!e.isFile || !/\.tar(\.gz)?$/.test(e.name)) continue;
    const raw = Deno.readFileSync(join(CORPUS_DIR, e.name));
    out.push({
      name: e.name,
      bytes: e.name.endsWith(".gz") ? new Uint8Array(gunzipSync(raw)) : raw,
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : 1));
}

Deno.test({
  name:
    "tar differential: every tool's tarballs in every format read as GNU tar and libarchive read them",
  ignore: !!missing,
  async fn(t) {
    await using tmp = await tempDir("strata-tar-diff-");
    const { archives, skipped } = await buildCorpus(String(tmp));
    if (skipped.length) console.error(`tar_diff_test: not in the corpus: ${skipped.join("; ")}`);
    assert(archives.length >= 20, `only ${archives.length} archives`);
    const files = archives.map((a, i) => {
      const f = join(String(tmp), `corpus-${i}.tar`);
      Deno.writeFileSync(f, a.bytes);
      return f;
    });
    const gnu = await runGnuTar(files);
    for (const [i, a] of archives.entries()) {
      await t.step(a.label, () => {
        const s = strataReading(a.bytes);
        // Real tools' output is read, not refused.
        assertEquals(s.error, undefined, a.label);
        assert(s.entries.length >= 9, `${a.label}: ${s.entries.length} entries`);
        const v = compareReadings(s, gnuReading(gnu[i]), libarchiveReading(a.bytes), a.bytes);
        assertEquals(v.problems, [], a.label);
      });
    }
  },
});

Deno.test({
  name:
    `tar differential: ${FUZZ_CASES} seeded mutations (seed ${FUZZ_SEED}) refused or read alike`,
  ignore: !!missing,
  async fn() {
    await using tmp = await tempDir("strata-tar-fuzz-");
    const { archives } = await buildCorpus(String(tmp), SEED_SPARSE_SIZE);
    const seeds = archives.filter((a) => !a.varies);
    let kept: string | undefined;
    const { failures, stats } = await fuzz({
      seed: FUZZ_SEED,
      count: FUZZ_CASES,
      seeds,
      workDir: String(tmp),
      useGnu: true,
      useLib: true,
      onFailure: async (f) => {
        kept ??= await Deno.makeTempDir({ prefix: "strata-tar-fuzz-failures-" });
        Deno.writeFileSync(join(kept, caseName(f.bytes)), f.bytes);
        Deno.writeTextFileSync(
          join(kept, caseName(f.bytes).replace(/\.tar$/, ".txt")),
          `${f.what}\n${f.problems.join("\n")}\n`,
        );
      },
    });
    // A loop that refuses everything tests nothing.
    assert(stats.agreed > FUZZ_CASES / 5, `only ${stats.agreed} of ${FUZZ_CASES} cases accepted`);
    assertEquals(
      failures.map((f) => `${f.what}\n  ${f.problems.slice(0, 6).join("\n  ")}`),
      [],
      `failing cases kept in ${kept}: copy them to tests/tar_corpus/ (they are replayed there)`,
    );
  },
});

Deno.test({
  name: "tar differential: every case in tests/tar_corpus/ (cases that once failed)",
  ignore: !!missing,
  async fn(t) {
    const cases = regressionCases();
    assert(cases.length > 0, "no regression cases");
    await using tmp = await tempDir("strata-tar-corpus-");
    const files = cases.map((c) => {
      const f = join(String(tmp), c.name.replace(/\.gz$/, ""));
      Deno.writeFileSync(f, c.bytes);
      return f;
    });
    const gnu = await runGnuTar(files);
    for (const [i, c] of cases.entries()) {
      await t.step(c.name, () => {
        const v = judge(c.bytes, gnuReading(gnu[i]), true);
        assertEquals(v.problems, [], c.name);
      });
    }
  },
});

// ---- applying never does more than the listing shows ----------------------------

interface ListedEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  link: string;
  dev: string;
  sha?: string;
}

/** strata's listing of `bytes` (entries up to a refusal), with full content hashes. */
function listing(bytes: Uint8Array): { entries: ListedEntry[]; error?: string } {
  const entries: ListedEntry[] = [];
  let h: ReturnType<typeof createHash> | null = null;
  let cur: ListedEntry | null = null;
  let at = 0, real = 0;
  const zeros = (n: number) => {
    for (; n > 0; n -= Math.min(n, 1 << 16)) h!.update(new Uint8Array(Math.min(n, 1 << 16)));
  };
  const p = new TarParser({
    entry(x) {
      cur = {
        name: x.name,
        type: x.type,
        mode: x.mode,
        uid: x.uid,
        gid: x.gid,
        link: x.linkname,
        dev: `${x.devmajor},${x.devminor}`,
      };
      h = x.type === "file" ? createHash("sha256") : null;
      at = 0;
      real = x.realSize ?? x.size;
    },
    data(c, off) {
      if (off > at) zeros(off - at);
      h!.update(c);
      at = off + c.length;
    },
    entryEnd() {
      if (h) {
        if (real > at) zeros(real - at);
        cur!.sha = h.digest("hex");
      }
      entries.push(cur!);
    },
  });
  try {
    p.push(bytes);
    p.end();
  } catch (e) {
    if (!(e instanceof TarFormatError)) throw e;
    return { entries, error: e.message };
  }
  return { entries };
}

interface Node {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  link?: string;
  sha?: string;
  firstLink?: string;
  dev?: string;
}

/** The applied tree, from treeRecord's lines. */
async function treeNodes(root: string): Promise<Map<string, Node>> {
  const lines = (await treeRecord(root, { lines: true })).lines!;
  const nodes = new Map<string, Node>();
  for (const line of lines) {
    const m = /^("(?:[^"\\]|\\.)*") (\d+) (\d+):(\d+)(.*)$/.exec(line);
    if (!m) throw new Error(`unreadable record line ${line}`);
    const path = JSON.parse(m[1]) as string;
    const mode = parseInt(m[2], 8);
    const fmt = mode & 0o170000;
    const type = fmt === 0o100000
      ? "file"
      : fmt === 0o040000
      ? "directory"
      : fmt === 0o120000
      ? "symlink"
      : fmt === 0o020000
      ? "char"
      : fmt === 0o060000
      ? "block"
      : fmt === 0o010000
      ? "fifo"
      : "other";
    const n: Node = { path, type, mode: mode & 0o7777, uid: Number(m[3]), gid: Number(m[4]) };
    const rest = m[5];
    const l = / l:("(?:[^"\\]|\\.)*")/.exec(rest);
    if (l) n.link = JSON.parse(l[1]);
    const c = / c:([0-9a-f]{64})/.exec(rest);
    if (c) n.sha = c[1];
    const first = / link:("(?:[^"\\]|\\.)*")/.exec(rest);
    if (first) n.firstLink = JSON.parse(first[1]);
    const d = / d:(\d+,\d+)/.exec(rest);
    if (d) n.dev = d[1];
    if (path !== ".") nodes.set(path, n);
  }
  // A hardlink's line names the first path of its inode; give it that path's content.
  for (const n of nodes.values()) if (n.firstLink) n.sha = nodes.get(n.firstLink)?.sha;
  return nodes;
}

/** Resolves the parent components of the confined `path` through the tree's symlinks, in the root. */
function resolveParents(path: string, nodes: Map<string, Node>): string {
  let parts = path === "" ? [] : path.split("/");
  for (let hops = 0, i = 0; i < parts.length - 1;) {
    const prefix = parts.slice(0, i + 1).join("/");
    const n = nodes.get(prefix);
    if (n?.type === "symlink" && hops++ < 40) {
      const base = n.link!.startsWith("/") ? "" : parts.slice(0, i).join("/");
      const target = confine(base ? `${base}/${n.link}` : n.link!);
      parts = [...(target ? target.split("/") : []), ...parts.slice(i + 1)];
      i = 0;
      continue;
    }
    i++;
  }
  return parts.join("/");
}

/**
 * Checks that the tree at `root` holds nothing the listing does not name:
 * every path is a listed entry's (its parents resolved as the applicator
 * resolves them, in the root) or a directory above one; when the apply
 * succeeded, each listed path has the type, link target, content, mode and
 * owner of the last entry for it (whiteouts: a 0/0 device where the layer
 * writes nothing else).
 */
function checkTree(
  entries: ListedEntry[],
  nodes: Map<string, Node>,
  applied: boolean,
): string[] {
  const problems: string[] = [];
  const last = new Map<string, ListedEntry>();
  const whiteouts = new Set<string>();
  const named = new Set<string>();
  const resolvedOf = new Map<ListedEntry, string>();
  for (const e of entries) {
    const p = resolveParents(confine(e.name), nodes);
    resolvedOf.set(e, p);
    if (p === "") continue;
    const slash = p.lastIndexOf("/");
    const base = p.slice(slash + 1);
    if (base === ".wh..wh..opq") continue;
    if (base.startsWith(".wh.")) {
      const hidden = p.slice(0, slash + 1) + base.slice(4);
      whiteouts.add(hidden);
      named.add(hidden);
      continue;
    }
    named.add(p);
    last.set(p, e);
  }
  const above = new Set<string>();
  for (const p of named) {
    for (let i = p.indexOf("/"); i > 0; i = p.indexOf("/", i + 1)) above.add(p.slice(0, i));
  }
  for (const n of nodes.values()) {
    if (!named.has(n.path) && !(n.type === "directory" && above.has(n.path))) {
      problems.push(`${JSON.stringify(n.path)} (${n.type}) is in the tree but in no entry`);
    }
  }
  if (!applied) return problems;
  /** The entry a hardlink's content and type come from: its target's last entry before it. */
  const linkSource = (e: ListedEntry, depth = 0): ListedEntry | undefined => {
    const target = resolveParents(confine(e.link), nodes);
    let src: ListedEntry | undefined;
    for (const x of entries) {
      if (x === e) break;
      if (resolvedOf.get(x) === target) src = x;
    }
    return src?.type === "hardlink" && depth < 40 ? linkSource(src, depth + 1) : src;
  };
  for (const p of named) {
    const n = nodes.get(p);
    const e = last.get(p);
    if (!e) {
      if (whiteouts.has(p) && !(n?.type === "char" && n.dev === "0,0")) {
        problems.push(`whiteout ${JSON.stringify(p)}: ${n ? n.type : "nothing"} in the tree`);
      }
      continue;
    }
    const src = e.type === "hardlink" ? linkSource(e) : e;
    if (!n) {
      problems.push(`${JSON.stringify(p)} (${e.type}) is listed but not in the tree`);
      continue;
    }
    if (!src) continue;
    if (n.type !== src.type) {
      problems.push(`${JSON.stringify(p)}: listed ${e.type} (${src.type}), tree ${n.type}`);
      continue;
    }
    if (src.type === "symlink" && n.link !== src.link) {
      problems.push(
        `${JSON.stringify(p)}: link ${JSON.stringify(n.link)}, listed ${JSON.stringify(src.link)}`,
      );
    }
    if (src.type === "file" && n.sha !== src.sha) {
      problems.push(`${JSON.stringify(p)}: content differs`);
    }
    if ((src.type === "char" || src.type === "block") && n.dev !== src.dev) {
      problems.push(`${JSON.stringify(p)}: device ${n.dev}, listed ${src.dev}`);
    }
    if (e.type !== "hardlink" && !n.firstLink && src.type !== "symlink") {
      if (n.mode !== e.mode) {
        problems.push(
          `${JSON.stringify(p)}: mode ${n.mode.toString(8)}, listed ${e.mode.toString(8)}`,
        );
      }
      if (n.uid !== e.uid || n.gid !== e.gid) {
        problems.push(`${JSON.stringify(p)}: owner ${n.uid}:${n.gid}, listed ${e.uid}:${e.gid}`);
      }
    }
  }
  return problems;
}

interface ApplyOutcome {
  name: string;
  applied: boolean;
  error?: string;
  problems: string[];
}

/** Applies every `.tar` in `dir/cases` into its own root and checks each tree (the sandboxed child). */
async function applyCases(dir: string): Promise<ApplyOutcome[]> {
  const out: ApplyOutcome[] = [];
  const names = [...Deno.readDirSync(join(dir, "cases"))].map((e) => e.name).sort();
  for (const [i, name] of names.entries()) {
    const bytes = Deno.readFileSync(join(dir, "cases", name));
    const root = join(dir, "roots", String(i));
    Deno.mkdirSync(root, { recursive: true });
    const o: ApplyOutcome = { name, applied: false, problems: [] };
    try {
      await new TarApplicator({ threads: "main" }).apply(
        new Blob([bytes as Uint8Array<ArrayBuffer>]).stream(),
        root,
      );
      o.applied = true;
    } catch (e) {
      o.error = `${(e as Error).name}: ${(e as Error).message}`;
    }
    const l = listing(bytes);
    if (o.applied && l.error) o.problems.push(`applied what the parser refuses: ${l.error}`);
    o.problems.push(...checkTree(l.entries, await treeNodes(root), o.applied));
    if (i === 0 && o.applied && o.problems.length === 0) {
      // The check itself must be able to fail: a file nobody listed is seen.
      Deno.writeTextFileSync(join(root, "planted-by-the-test"), "x");
      const seen = checkTree(l.entries, await treeNodes(root), true);
      if (!seen.some((p) => p.includes("planted-by-the-test"))) {
        o.problems.push("the tree check missed a planted file");
      }
    }
    await Deno.remove(root, { recursive: true }).catch(() => {});
    out.push(o);
  }
  return out;
}

if (import.meta.main && Deno.args[0] === "--child") {
  console.log(JSON.stringify(await applyCases(Deno.args[1])));
}

Deno.test({
  name: "tar: applying the corpus and accepted fuzz cases makes exactly the listed names and links",
  ignore: !isRoot || !!missing,
  async fn() {
    await using tmp = await tempDir("strata-tar-apply-");
    const dir = String(tmp);
    const cases = join(dir, "cases");
    Deno.mkdirSync(cases);
    const { archives } = await buildCorpus(join(dir, "build"), SEED_SPARSE_SIZE);
    const all: CorpusArchive[] = [...archives];
    for (const c of regressionCases()) all.push({ label: c.name, bytes: c.bytes });
    // And 300 fuzz cases strata accepts (refused ones are never applied).
    await fuzz({
      seed: FUZZ_SEED + 1,
      count: 900,
      seeds: archives.filter((a) => !a.varies),
      workDir: join(dir, "build"),
      useGnu: false,
      useLib: false,
      onAccepted: (bytes, what) => {
        if (all.length < archives.length + 300) all.push({ label: what, bytes });
      },
    });
    for (const [i, a] of all.entries()) {
      Deno.writeFileSync(join(cases, `${String(i).padStart(4, "0")}.tar`), a.bytes);
    }
    const [cmd, ...argv] = sandboxArgv(dir, [
      denoPath,
      "run",
      "-A",
      "--no-check",
      "--frozen",
      import.meta.filename!,
      "--child",
      dir,
    ]);
    const r = await run(cmd, argv);
    assertEquals(r.code, 0, r.stderr);
    const outcomes: ApplyOutcome[] = JSON.parse(r.stdout.trim().split("\n").pop()!);
    assertEquals(outcomes.length, all.length);
    assert(outcomes[0].applied, "the first archive (GNU tar's) applies: the self-check ran on it");
    const bad = outcomes.filter((o) => o.problems.length > 0).map((o) =>
      `${all[Number(o.name.slice(0, 4))].label} (${o.error ?? "applied"}):\n  ${
        o.problems.slice(0, 5).join("\n  ")
      }`
    );
    assertEquals(bad, []);
    // The real tools' tarballs all apply, and most accepted fuzz cases too (a
    // check of trees that were never written would prove nothing).
    for (const o of outcomes.slice(0, archives.length)) assert(o.applied, `${o.name}: ${o.error}`);
    const applied = outcomes.filter((o) => o.applied).length;
    assert(applied > all.length / 2, `only ${applied} of ${all.length} applied`);
    console.log(
      `applied ${applied} of ${all.length} archives; the others were refused by the applicator`,
    );
  },
});
