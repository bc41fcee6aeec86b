/**
 * Runs every script in `examples/` the way its header says (the `Run:` line:
 * same flags, same stdin), as root and as an unprivileged user, so an example
 * that drifts from the API, or whose documented permissions are not enough,
 * fails here. The flags are exactly `--allow-run --allow-ffi`: strata needs
 * no other permission for local images.
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
  sh,
  tempDir,
} from "./_helpers.ts";

const EXAMPLES = ["function.ts", "export_rootfs.ts", "custom_spec_option.ts"];

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

Deno.test("examples: every one runs with --allow-run --allow-ffi and nothing more", async () => {
  const listed = [...Deno.readDirSync(join(repoRoot, "examples"))].map((e) => e.name).sort();
  assertEquals(listed, [...EXAMPLES].sort(), "every example is run by this file");
  for (const name of EXAMPLES) {
    assertEquals((await runLine(name)).flags, ["--allow-run", "--allow-ffi"], name);
  }
});

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

/** Runs an example as the unprivileged test user, with the header's flags and stdin. */
async function runExampleAsUser(name: string, extraArgs: string[] = []): Promise<RunResult> {
  const { home } = await ensureTestUser();
  const { flags, args, stdin } = await runLine(name);
  const argv = [
    denoPath,
    "run",
    ...flags,
    join(repoRoot, "examples", name),
    ...args.filter((a) => a !== "DIR"),
    ...extraArgs,
  ].map((a) => `'${a}'`).join(" ");
  return await runAsUser([
    "sh",
    "-c",
    stdin === undefined ? `${argv} </dev/null` : `printf '%s\\n' '${stdin}' | ${argv}`,
  ], { env: { DENO_DIR: join(home, ".deno") } });
}

Deno.test({
  name: "examples/function.ts: works for an unprivileged user too (user namespace)",
  ignore: !isRoot,
  fn: async () => {
    const r = await runExampleAsUser("function.ts");
    assertEquals(r.code, 0, r.stderr);
    assertEquals(JSON.parse(r.stdout).desired, { greeting: "hello, world" });
  },
});

Deno.test({
  name: "examples/export_rootfs.ts: works for an unprivileged user too (user namespace)",
  ignore: !isRoot,
  fn: async () => {
    const { uid, gid } = await ensureTestUser();
    await using outDir = await tempDir("strata-example-export-user-");
    await sh("chown", [`${uid}:${gid}`, String(outDir)]);
    const dir = join(String(outDir), "rootfs");
    const r = await runExampleAsUser("export_rootfs.ts", [dir]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(
      await Deno.readTextFile(join(dir, "etc/motd")),
      "hello from layer 2 (it overrides layer 1)\n",
    );
    assert((await Deno.lstat(join(dir, "bin/busybox"))).isFile);
  },
});

Deno.test({
  name: "examples/custom_spec_option.ts: works for an unprivileged user too (user namespace)",
  ignore: !isRoot,
  fn: async () => {
    const r = await runExampleAsUser("custom_spec_option.ts");
    assertEquals(r.code, 0, r.stderr);
    assertEquals(
      r.stdout,
      "workshop\ncustom-option\nhello from the host, through a custom option\nscratch ok\n",
    );
  },
});
