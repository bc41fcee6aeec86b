/**
 * The command line loads what a command needs (sys/own_modules.ts): cli.ts's
 * start-up graph is the short way of `run` and a few small modules; the rest
 * is imported when Deno may read it, and otherwise the same `deno run` line
 * runs again with cli/cmd_main.ts as the main module, flags unchanged.
 *
 * @module
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { denoPath, repoRoot, run, tempDir } from "./_helpers.ts";
import denoJson from "../deno.json" with { type: "json" };

const NARROW = ["--allow-run", "--allow-ffi"];

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string } }[];
}

/** The modules Deno loads to run `file` (code dependencies, dynamic ones included; not types). */
async function runtimeGraph(file: string): Promise<string[]> {
  const info = await run(denoPath, ["info", "--json", join(repoRoot, file)]);
  assertEquals(info.code, 0, info.stderr);
  const modules = new Map<string, InfoModule>();
  for (const m of JSON.parse(info.stdout).modules as InfoModule[]) modules.set(m.specifier, m);
  const seen = new Set<string>();
  const visit = (s: string) => {
    if (seen.has(s)) return;
    seen.add(s);
    for (const d of modules.get(s)?.dependencies ?? []) if (d.code) visit(d.code.specifier);
  };
  visit(`file://${join(repoRoot, file)}`);
  return [...seen].map((s) => s.replace(`file://${repoRoot}/`, "")).sort();
}

Deno.test("own modules: cli.ts's start-up graph leaves the command line's ~80 modules out", async () => {
  const files = await runtimeGraph("cli.ts");
  assert(files.includes("cli/cmd_run_warm.ts"), files.join(" "));
  assert(!files.includes("cli/cmd_main.ts"), files.join(" "));
  assert(files.length <= 25, `${files.length} modules: ${files.join(" ")}`);
  assert((await runtimeGraph("cli/cmd_main.ts")).length > 60, "cmd_main.ts's graph holds the rest");
});

Deno.test("own modules: with --allow-run --allow-ffi the command line runs again as cli/cmd_main.ts, flags kept", async () => {
  const version = `strata ${denoJson.version}\n`;
  // A relative path, a file: URL, and Deno flags with values before it.
  const forms: [string[], string][] = [
    [[...NARROW, "cli.ts", "--version"], "relative"],
    [[...NARROW, `file://${repoRoot}/cli.ts`, "--version"], "file URL"],
    [[...NARROW, "--config", "deno.json", "--seed", "1", "./cli.ts", "--version"], "flags"],
  ];
  for (const [args, what] of forms) {
    const r = await run(denoPath, ["run", ...args], { cwd: repoRoot });
    assertEquals([r.code, r.stdout, r.stderr], [0, version, ""], what);
  }
  // It is the same process: the exit status and stderr of a usage error come through.
  const bad = await run(denoPath, ["run", ...NARROW, "cli.ts", "lss"], { cwd: repoRoot });
  assertEquals(bad.code, 2);
  assertStringIncludes(bad.stderr, "unknown command 'lss' (did you mean 'ls'?)");
  // An argument that names cli.ts again is an argument, not the main module.
  const again = await run(denoPath, ["run", ...NARROW, "cli.ts", "ls", "--cache", "cli.ts"], {
    cwd: repoRoot,
  });
  assert(!again.stderr.includes("cannot load"), again.stderr);
});

Deno.test("own modules: main() called by another program without --allow-read says which flag to add", async () => {
  await using d = await tempDir("strata-own-modules-");
  const script = join(String(d), "caller.ts");
  await Deno.writeTextFile(
    script,
    `import { main } from ${JSON.stringify(`file://${repoRoot}/cli.ts`)};\n` +
      `Deno.exit(await main(["ls"]));\n`,
  );
  const r = await run(denoPath, [
    "run",
    ...NARROW,
    "--config",
    join(repoRoot, "deno.json"),
    script,
  ]);
  assertEquals(r.code, 125, r.stderr);
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  assertStringIncludes(lines[0], `--allow-read=${repoRoot}/cli/`);
  const ok = await run(denoPath, [
    "run",
    ...NARROW,
    `--allow-read=${repoRoot}`,
    "--config",
    join(repoRoot, "deno.json"),
    script,
  ]);
  assert(!ok.stderr.includes("cannot load"), ok.stderr);
});
