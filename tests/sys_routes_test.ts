/**
 * The two routes of sys/files.ts, sys/env.ts, sys/process.ts and
 * sys/worker.ts give the same results: the same probe (tests/_routes_probe.ts)
 * runs in a child with the Deno permissions granted (Deno's own API) and in a
 * child with `--allow-ffi` alone (libc), as root and as an unprivileged
 * user, and the two outputs must be equal, values and errors alike. The
 * layer worker is loaded both ways too and must write the same tree.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { TarWriter } from "../layer/tar_writer.ts";
import { snapshotTree } from "./_layers.ts";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  repoRoot,
  run,
  runAsUser,
  type RunResult,
  sh,
  tempDir,
} from "./_helpers.ts";

const WIDE = ["--allow-read", "--allow-write", "--allow-env", "--allow-sys", "--allow-ffi"];
const NARROW = ["--allow-ffi"];

/** The fixture the probe reads: every kind of file, with times a read cannot move. */
async function fixture(dir: string): Promise<void> {
  await Deno.mkdir(join(dir, "dir/nested"), { recursive: true });
  await Deno.writeTextFile(join(dir, "file"), "hello\n");
  await Deno.chmod(join(dir, "file"), 0o640);
  await Deno.writeTextFile(join(dir, "empty"), "");
  await Deno.writeFile(join(dir, "big"), crypto.getRandomValues(new Uint8Array(65536)));
  const big = await Deno.readFile(join(dir, "big"));
  await Deno.writeFile(join(dir, "big"), new Uint8Array([...big, ...big, ...big, ...big, 1]));
  await Deno.symlink("file", join(dir, "link"));
  await Deno.symlink("nowhere", join(dir, "dangling"));
  await Deno.symlink("loop", join(dir, "loop"));
  await sh("mkfifo", [join(dir, "fifo")]);
  await Deno.writeTextFile(join(dir, "secret"), "root only\n", { mode: 0o600 });
  await Deno.mkdir(join(dir, "ro"));
  await Deno.chmod(join(dir, "ro"), 0o555);
  // mtime with a fraction of a second; atime in the future, so that reading
  // a file in the first child does not move the atime the second one sees.
  for (const p of ["file", "empty", "big", "dir", "dir/nested", "secret", "ro", "."]) {
    Deno.utimeSync(join(dir, p), new Date("2100-01-01T00:00:00.123Z"), 1577934245.987);
  }
}

interface Probe {
  routes: Record<string, boolean>;
  results: Record<string, { value?: unknown; threw?: string; message?: string }>;
}

/** A scratch directory for one child: `owner`'s, holding `ro/` (root's, 0555) with a file `keep`. */
async function scratch(path: string, owner?: { uid: number; gid: number }): Promise<string> {
  await Deno.mkdir(join(path, "ro"), { recursive: true });
  await Deno.writeTextFile(join(path, "ro/keep"), "");
  await Deno.chmod(join(path, "ro"), 0o555);
  if (owner) await Deno.chown(path, owner.uid, owner.gid);
  return path;
}

/** The shell line that runs the probe with `flags`, a value that is not UTF-8 in its environment. */
function probeLine(flags: string[], fx: string, scratch: string): string[] {
  return [
    "sh",
    "-c",
    'STRATA_ROUTES_LATIN1=$(printf "caf\\351") exec "$@"',
    "sh",
    "env",
    "STRATA_ROUTES_A=alpha",
    "STRATA_ROUTES_EMPTY=",
    denoPath,
    "run",
    "--quiet",
    ...flags,
    join(repoRoot, "tests/_routes_probe.ts"),
    fx,
    scratch,
  ];
}

function parse(r: RunResult): Probe {
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Probe;
}

/** JSON with sorted keys: Deno's async stat lists a FileInfo's keys in another order. */
function canonical(v: unknown): string {
  return JSON.stringify(
    v,
    (_, x) =>
      x && typeof x === "object" && !Array.isArray(x)
        ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => a < b ? -1 : 1))
        : x,
  );
}

/**
 * One result, comparable across routes. Deno run without `-A` leaves the
 * operation and path out of some of its messages (an ENOTDIR from an open,
 * a NUL in a name: "Not a directory (os error 20)"), where with `-A`, and on
 * the libc route always, they are there ("...: readfile '/x/y'"); when only
 * one of the two messages has them, both are compared without.
 */
function comparable(r: Probe["results"][string], other: Probe["results"][string]): string {
  if (typeof r?.message !== "string" || typeof other?.message !== "string") return canonical(r);
  const context = / ?: [a-z]+ '.*$/s;
  const strip = context.test(r.message) !== context.test(other.message);
  return canonical({ ...r, message: strip ? r.message.replace(context, "") : r.message });
}

/** Asserts the two probes agree, naming each call that does not. */
function assertSame(wide: Probe, narrow: Probe): void {
  assertEquals(Object.values(wide.routes), [true, true, true, true], "Deno's API, wide");
  assertEquals(Object.values(narrow.routes), [false, false, false, false], "libc, narrow");
  const diff = Object.keys({ ...wide.results, ...narrow.results })
    .filter((k) =>
      comparable(wide.results[k], narrow.results[k]) !==
        comparable(narrow.results[k], wide.results[k])
    )
    .map((k) =>
      `${k}:\n  Deno: ${canonical(wide.results[k])}\n  libc: ${canonical(narrow.results[k])}`
    );
  assertEquals(diff, [], `\n${diff.join("\n")}`);
}

Deno.test("sys routes: Deno's API and libc give the same files, environment and ids (as root)", async () => {
  await using dir = await tempDir("strata-routes-");
  const fx = join(String(dir), "fx");
  await Deno.mkdir(fx);
  await fixture(fx);
  const a = await scratch(join(String(dir), "a"));
  const b = await scratch(join(String(dir), "b"));
  const all = await scratch(join(String(dir), "all"));
  const [sh0, ...wideArgs] = probeLine(WIDE, fx, a);
  const wide = parse(await run(sh0, wideArgs));
  const narrow = parse(await run(sh0, probeLine(NARROW, fx, b).slice(1)));
  assertSame(wide, narrow);
  // With -A Deno names the path in every message, as the libc route does: equal to the letter.
  const withAll = parse(await run(sh0, probeLine(["-A"], fx, all).slice(1)));
  assertEquals(canonical(withAll.results), canonical(narrow.results));
  // Not two failures that agree: the calls did what they say.
  const r = narrow.results;
  assertEquals(r["readTextFileSync"].value, "hello\n");
  assertEquals(r["readFile big"].value, 4 * 65536 + 1);
  assertEquals(r["open readable"].value, 4 * 65536 + 1);
  assertEquals(r["readLinkSync"].value, "file");
  assertEquals(
    r["statSync file"].value && (r["statSync file"].value as Deno.FileInfo).mode,
    0o100640,
  );
  assertEquals(r["readFile missing"].threw, "NotFound");
  assertEquals(r["getEnv"].value, "alpha");
  assertEquals(r["getEnv not UTF-8"].threw, "InvalidData");
  assertEquals(r["uid"].value, 0);
  assertEquals(r["cwd"].value, Deno.cwd());
  assertEquals(r["osRelease"].value, Deno.osRelease());
  assertEquals(r["execPath"].value, Deno.execPath());
  assertEquals(r["lock contention"].value, [false, true]);
  assertEquals(
    r["scratch at the end"].value,
    ["f-X", "o1", "o2", "pre-X-suf", "ro", "w1r", "w2", "w3"],
  );
});

Deno.test({
  name: "sys routes: the same as an unprivileged user (permission errors included)",
  ignore: !isRoot,
  fn: async () => {
    const { uid, gid, home } = await ensureTestUser();
    await using dir = await tempDir("strata-routes-user-");
    const fx = join(String(dir), "fx");
    await Deno.mkdir(fx, { mode: 0o755 });
    await fixture(fx);
    await Deno.chmod(fx, 0o755);
    const a = await scratch(join(String(dir), "a"), { uid, gid });
    const b = await scratch(join(String(dir), "b"), { uid, gid });
    const env = { DENO_DIR: join(home, ".deno") };
    const wide = parse(await runAsUser(probeLine(WIDE, fx, a), { env }));
    const narrow = parse(await runAsUser(probeLine(NARROW, fx, b), { env }));
    assertSame(wide, narrow);
    assertEquals(narrow.results["uid"].value, uid);
    assertEquals(narrow.results["readFile secret"].threw, "PermissionDenied");
    assertEquals(narrow.results["writeFile in a read-only dir"].threw, "PermissionDenied");
    assertEquals(narrow.results["getEnv HOME"].value, home);
  },
});

Deno.test("sys routes: the layer worker loads without --allow-read and writes the same tree", async () => {
  await using dir = await tempDir("strata-routes-worker-");
  const tar = new TarWriter({ defaultMtime: 1_700_000_000 });
  tar.directory("./", { mode: 0o755 });
  tar.directory("data/", { mode: 0o750, uid: 12, gid: 34 });
  for (let i = 0; i < 40; i++) {
    tar.file(`data/f${i}`, `${i}`.repeat(1 + i * 1000), { mode: 0o644 });
  }
  tar.symlink("data/link", "f1");
  tar.hardlink("data/hard", "data/f2");
  tar.file("big", "x".repeat(5 << 20), { mode: 0o600 }); // past the worker's minimum
  const file = join(String(dir), "layer.tar");
  await Deno.writeFile(file, tar.bytes());
  const probe = join(repoRoot, "tests/_worker_probe.ts");
  const roots: string[] = [];
  const results: unknown[] = [];
  for (const flags of [["-A"], NARROW]) {
    const root = join(String(dir), `root${flags.length}${flags[0]}`);
    const r = await run(denoPath, ["run", "--quiet", ...flags, probe, file, root]);
    assertEquals(r.code, 0, r.stderr);
    results.push(JSON.parse(r.stdout));
    roots.push(root);
  }
  assertEquals(results[0], results[1]);
  const [wide, narrow] = await Promise.all(roots.map(snapshotTree));
  assert(Object.keys(wide).length > 40);
  assertEquals(narrow, wide);
});
