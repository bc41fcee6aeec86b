/**
 * strata runs with `--allow-run --allow-ffi` alone (plus `--allow-net` for
 * registries): every file, environment and process call that Deno gates
 * behind another permission goes through `sys/` (files.ts, env.ts,
 * process.ts), which takes Deno's route when the permission is granted and
 * libc's otherwise. This test fails when code outside `sys/` (tests and
 * benchmarks aside) calls such a Deno API directly, and says which `sys/`
 * function to call instead, so that new code cannot drift back.
 *
 * @module
 */
import { assertEquals } from "@std/assert";
import { join, relative } from "@std/path";
import { repoRoot } from "./_helpers.ts";

const FILES = "sys/files.ts";
const ENV = "sys/env.ts";
const PROCESS = "sys/process.ts";

/** Each gated Deno API, and what to use instead. */
const INSTEAD: Record<string, string> = {
  env: `getEnv / setEnv / deleteEnv / envObject from ${ENV}`,
  uid: `getUid from ${PROCESS}`,
  gid: `getGid from ${PROCESS}`,
  execPath: `execPath from ${PROCESS}`,
  cwd: `cwd from ${PROCESS}`,
  osRelease: `osRelease from ${PROCESS}`,
  open: `openFile from ${FILES}`,
  openSync: `openFileSync from ${FILES}`,
  create: `openFile(path, { write: true, create: true, truncate: true }) from ${FILES}`,
  createSync: `openFileSync(path, { write: true, create: true, truncate: true }) from ${FILES}`,
  FsFile: `the OpenFile type from ${FILES}`,
  dlopen: "libc() from sys/libc.ts (bind the symbol there)",
  permissions: "granted from sys/permissions.ts (asked once per kind)",
};
for (
  const name of [
    "readFile",
    "readTextFile",
    "writeFile",
    "writeTextFile",
    "readDir",
    "stat",
    "lstat",
    "mkdir",
    "remove",
    "rename",
    "makeTempDir",
    "makeTempFile",
    "realPath",
    "readLink",
    "symlink",
    "chmod",
    "copyFile",
  ]
) {
  INSTEAD[name] = `${name} from ${FILES}`;
  INSTEAD[`${name}Sync`] = `${name}Sync from ${FILES}`;
}
/** Gated APIs strata has no use for yet: a `sys/` function must come first. */
for (
  const name of [
    "chown",
    "chownSync",
    "utime",
    "utimeSync",
    "link",
    "linkSync",
    "truncate",
    "truncateSync",
    "chdir",
    "umask",
    "hostname",
    "loadavg",
    "systemMemoryInfo",
    "networkInterfaces",
    "osUptime",
    "watchFs",
  ]
) {
  INSTEAD[name] ??= `a new function in sys/ with a libc route (see ${FILES}), tested both ways ` +
    "in tests/sys_routes_test.ts";
}

const GATED = new RegExp(`\\bDeno\\.(${Object.keys(INSTEAD).join("|")})\\b`, "g");
/** node: modules that reach files, the environment or the system behind other permissions. */
const NODE = /["']node:(fs|fs\/promises|os|process|child_process|worker_threads)["']/g;

/** Every TypeScript file of the repository outside sys/, tests/, bench/. */
function sources(dir = repoRoot): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const path = join(dir, e.name);
    const rel = relative(repoRoot, path);
    if (e.name.startsWith(".") || ["node_modules", "dist", "sys", "tests", "bench"].includes(rel)) {
      continue;
    }
    if (e.isDirectory) out.push(...sources(path));
    else if (e.isFile && e.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

/**
 * The warm run's module imports nothing, so that a warm `strata run` loads it
 * and cli.ts alone: it opens libc itself, takes the libc route for the
 * environment and files whatever is granted, and stops an interrupted
 * runtime with `Deno.Command` (a failure there is ignored; the long way says
 * it). Only those two calls are allowed there; everything else is checked.
 */
const OWN_LIBC: Record<string, RegExp> = {
  "cli/cmd_run_warm.ts": /\bDeno\.dlopen\(|\bnew Deno\.Command\(/,
};

/** A line without its comment: JSDoc and `//` lines are documentation, not calls. */
function code(line: string): string {
  const t = line.trimStart();
  if (t.startsWith("*") || t.startsWith("//") || t.startsWith("/*")) return "";
  return line.replace(/\s\/\/\s.*$/, "");
}

/** What is wrong with the code of `text`, one line per finding. */
function findings(rel: string, text: string): string[] {
  const out: string[] = [];
  text.split("\n").forEach((raw, i) => {
    let line = code(raw);
    if (OWN_LIBC[rel]) line = line.replace(OWN_LIBC[rel], "");
    const at = `${rel}:${i + 1}`;
    for (const m of line.matchAll(GATED)) {
      out.push(
        `${at}: Deno.${m[1]} needs a permission strata does not ask for; use ${INSTEAD[m[1]]}`,
      );
    }
    for (const m of line.matchAll(NODE)) {
      out.push(
        `${at}: node:${
          m[1]
        } reaches files, the environment or the system behind --allow-read/-env/-sys; ` +
          `use ${FILES}, ${ENV} or ${PROCESS}`,
      );
    }
    if (/\bnew Deno\.Command\(/.test(line)) {
      out.push(
        `${at}: use commandOutput or spawnCommand from sys/spawn.ts, which say a missing ` +
          "--allow-run as a MissingPermissionError",
      );
    }
    if (/\bnew Worker\(/.test(line) && !/\bworkerModule\(/.test(line)) {
      out.push(
        `${at}: a Worker's module needs --allow-read; pass its URL through workerModule from sys/worker.ts`,
      );
    }
    if (/(?<![\w.])import\(\s*[^"'\s)]/.test(line)) {
      out.push(
        `${at}: a dynamic import of a computed specifier needs --allow-read; import a string literal`,
      );
    }
  });
  return out;
}

Deno.test("no code outside sys/ calls a Deno API that needs more than --allow-run --allow-ffi", () => {
  const all: string[] = [];
  for (const path of sources()) {
    all.push(...findings(relative(repoRoot, path), Deno.readTextFileSync(path)));
  }
  assertEquals(all, [], `\n${all.join("\n")}\n`);
});

Deno.test("the guard finds what it is for, and not comments", () => {
  const sample = [
    "/**",
    " * const x = await Deno.readTextFile(path); // in an example: fine",
    " */",
    "const a = await Deno.readTextFile(p);",
    "const b = Deno.env.get('HOME');",
    "Deno.removeSignalListener('SIGINT', f); // not Deno.remove",
    "const u = Deno.uid();",
    "import { readFileSync } from 'node:fs';",
    "const w = new Worker(url, { type: 'module' });",
    "const v = new Worker(workerModule(url), { type: 'module' });",
    "const m = await import(name);",
    "const n = await import('./x.ts');",
    "let f: Deno.FsFile;",
    "const o = await new Deno.Command('runc').output();",
  ].join("\n");
  const got = findings("x.ts", sample).map((l) => l.split(": ")[1].split(" ")[0]);
  assertEquals(got, [
    "Deno.readTextFile",
    "Deno.env",
    "Deno.uid",
    "node:fs",
    "a",
    "a",
    "Deno.FsFile",
    "use",
  ]);
  const msg = findings("x.ts", "await Deno.readTextFile(p);")[0];
  assertEquals(
    msg,
    "x.ts:1: Deno.readTextFile needs a permission strata does not ask for; use readTextFile from sys/files.ts",
  );
});
