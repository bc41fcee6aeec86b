/**
 * Runs every script in `examples/` the way its header says (the `Run:` line:
 * same flags, same stdin), so an example that drifts from the API, or whose
 * documented permissions are not enough, fails here.
 *
 * @module
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  repoRoot,
  runAsUser,
  type RunResult,
  tempDir,
} from "./_helpers.ts";

/** Reads the `Run:` line of an example's header: deno flags, args, and the stdin piped in. */
async function runLine(
  name: string,
): Promise<{ flags: string[]; args: string[]; stdin?: string }> {
  const text = await Deno.readTextFile(join(repoRoot, "examples", name));
  const m = / \* Run: (?:echo '([^']*)' \| )?deno run (.*?)examples\/[a-z_]+\.ts(.*)$/m.exec(text);
  if (!m) throw new Error(`examples/${name} has no "Run: deno run ..." line in its header`);
  return {
    stdin: m[1],
    flags: m[2].trim().split(/\s+/).filter(Boolean),
    args: m[3].replace(/\(.*\)|\[[A-Z]+\]/g, "").trim().split(/\s+/).filter(Boolean),
  };
}

async function runExample(name: string, extraArgs: string[] = []): Promise<RunResult> {
  const { flags, args, stdin } = await runLine(name);
  const env = Deno.env.toObject();
  delete env.NODE_EXTRA_CA_CERTS; // points at a missing file here; Deno warns about it
  const child = new Deno.Command(denoPath, {
    args: [
      "run",
      ...flags,
      join("examples", name),
      ...args.filter((a) => a !== "DIR"),
      ...extraArgs,
    ],
    cwd: repoRoot,
    env,
    clearEnv: true,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin + "\n"));
    await w.close();
  }
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

Deno.test("examples/function.ts: a function container answers the request on stdout", async () => {
  const r = await runExample("function.ts");
  assertEquals(r.code, 0, r.stderr);
  const response = JSON.parse(r.stdout);
  assertEquals(response.desired, { greeting: "hello, world" });
  assertEquals(response.results[0].severity, "Normal");
  assertStringIncludes(response.results[0].message, "ran as uid 1000");
});

Deno.test("examples/export_rootfs.ts: the flattened demo image lands in DIR", async () => {
  const before = new Set([...Deno.readDirSync("/tmp")].map((e) => e.name));
  await using outDir = await tempDir("strata-example-export-");
  const dir = join(String(outDir), "rootfs");
  const r = await runExample("export_rootfs.ts", [dir]);
  assertEquals(r.code, 0, r.stderr);
  assertStringIncludes(r.stdout, `-> ${dir}`);
  assertEquals(
    await Deno.readTextFile(join(dir, "etc/motd")),
    "hello from layer 2 (it overrides layer 1)\n",
  );
  assertEquals([...Deno.readDirSync(join(dir, "data/cache"))].map((e) => e.name), ["fresh.txt"]);
  assert((await Deno.lstat(join(dir, "bin/busybox"))).isFile);
  const left = [...Deno.readDirSync("/tmp")].map((e) => e.name)
    .filter((n) => n.startsWith("strata-export-") && !before.has(n));
  assertEquals(left, [], "the example removed its cache and temp dir");
});

Deno.test("examples/custom_spec_option.ts: the custom option shapes the container", async () => {
  const r = await runExample("custom_spec_option.ts");
  assertEquals(r.code, 0, r.stderr);
  assertEquals(
    r.stdout,
    "workshop\ncustom-option\nhello from the host, through a custom option\nscratch ok\n",
  );
});

Deno.test({
  name: "examples/function.ts: works for an unprivileged user too (user namespace)",
  ignore: !isRoot,
  fn: async () => {
    const { home } = await ensureTestUser();
    const { flags, stdin } = await runLine("function.ts");
    const r = await runAsUser([
      "sh",
      "-c",
      `printf '%s\\n' '${stdin}' | ${denoPath} run ${flags.join(" ")} ${
        join(repoRoot, "examples/function.ts")
      }`,
    ], { env: { DENO_DIR: join(home, ".deno") } });
    assertEquals(r.code, 0, r.stderr);
    assertEquals(JSON.parse(r.stdout).desired, { greeting: "hello, world" });
  },
});
