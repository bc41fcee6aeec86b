/**
 * The command line as a user meets it. The first half checks the parser, the
 * error line and the progress display in-process; the second half drives
 * `deno run -A cli.ts ...` as subprocesses on real images (the demo image,
 * built from the host's busybox) and a real cache: every command's success
 * and failure paths, exit statuses, `--json`, quiet stderr when not a TTY,
 * one-line errors, and `verify` catching a file changed inside a cached layer.
 *
 * @module
 */
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { join } from "@std/path";
import { parseArgs, UsageError } from "../cli/args.ts";
import { COMMANDS, GLOBAL_OPTIONS, TOP_OPTIONS } from "../cli/spec.ts";
import { describeError, errorLine, exitCodeFor, permissionHint } from "../cli/errors.ts";
import { formatBytes, Output } from "../cli/output.ts";
import { buildDemoImage, DEMO_EXPECTED } from "../cli/demo_image.ts";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  mountsBelow,
  repoRoot,
  run,
  runAsUser,
  type RunResult,
  sh,
  tempDir,
} from "./_helpers.ts";
import { Registry } from "./_registry.ts";
import { defaultStateDir } from "../bundle/run.ts";

const globals = [...GLOBAL_OPTIONS, ...TOP_OPTIONS];
const parse = (...args: string[]) => parseArgs(args, COMMANDS, globals);

Deno.test("parser: options before and after IMAGE, globals anywhere", () => {
  const a = parse("--cache", "/c", "pull", "oci:/x:t", "--quiet", "--platform=linux/arm64");
  assertEquals(a.command, "pull");
  assertEquals(a.positionals, ["oci:/x:t"]);
  assertEquals(a.options.cache, "/c");
  assertEquals(a.options.quiet, true);
  assertEquals(a.options.platform, "linux/arm64");
  const b = parse("pull", "--tls-verify=false", "img", "--cache=/d");
  assertEquals(b.options["tls-verify"], false);
  assertEquals(b.options.cache, "/d");
});

Deno.test("parser: run takes the command verbatim after IMAGE", () => {
  const a = parse("run", "-e", "A=1", "--env=B=2", "img", "--user", "0", "ls", "-l", "--env", "x");
  assertEquals(a.positionals, ["img"]);
  assertEquals(a.argv, ["ls", "-l", "--env", "x"]);
  assertEquals(a.options.env, ["A=1", "B=2"]);
  assertEquals(a.options.user, "0");
  const b = parse("run", "img", "--", "-x", "y");
  assertEquals(b.argv, ["-x", "y"]);
  const c = parse("run", "--", "img", "sh", "-c", "echo");
  assertEquals(c.positionals, ["img"]);
  assertEquals(c.argv, ["sh", "-c", "echo"]);
  const d = parse("run", "--read-only", "--network", "host", "img");
  assertEquals(d.argv, []);
  assertEquals(d.options["read-only"], true);
  assertEquals(d.options.network, "host");
});

Deno.test("parser: clear usage errors", () => {
  const e = assertThrows(() => parse("run", "--foo", "img"), UsageError);
  assertEquals(e.message, "unknown option --foo for run; see strata run --help");
  assertThrows(() => parse("frobnicate"), UsageError, "unknown command 'frobnicate'");
  assertThrows(() => parse("pul", "x"), UsageError, "unknown command 'pul' (did you mean 'pull'?)");
  assertThrows(
    () => parse("run", "--netwrok", "host", "img"),
    UsageError,
    "unknown option --netwrok for run (did you mean '--network'?)",
  );
  assertThrows(() => parse("pull"), UsageError, "pull needs IMAGE");
  assertThrows(() => parse("export", "img"), UsageError, "export needs DIR");
  assertThrows(() => parse("pull", "a", "b"), UsageError, "unexpected argument 'b' for pull");
  assertThrows(() => parse("pull", "a", "--cache"), UsageError, "--cache needs a value (DIR)");
  assertThrows(
    () => parse("run", "--network", "bridge", "img"),
    UsageError,
    "must be none or host, not 'bridge'",
  );
  assertThrows(() => parse("ls", "--json=maybe"), UsageError, "takes true or false");
  assertThrows(() => parse("ls", "-z"), UsageError, "unknown option -z for ls");
  // --help needs no positionals.
  assertEquals(parse("pull", "--help").options.help, true);
});

Deno.test("errors: one line, permission hints, exit codes", () => {
  const nested = new Error("resolve layer sha256:ab", {
    cause: new Error("apply failed\nbecause:\n  disk full"),
  });
  assertEquals(describeError(nested), "resolve layer sha256:ab: apply failed; because:; disk full");
  assertEquals(errorLine("pull x", new Error("boom")), "strata: pull x: boom");
  // What an image holds is quoted escaped: no escape sequence or CR reaches the terminal.
  let err = "";
  const o = new Output("plain", { stdout: () => {}, stderr: (t) => err += t });
  o.error(errorLine("pull x", new Error(`entry "a\x1b]0;pwned\x07\rb\u009b2J" is bad`)));
  o.warn("skipping device \x1b[31mred");
  assertEquals(
    err,
    'strata: pull x: entry "a\\x1b]0;pwned\\x07\\x0db\\x9b2J" is bad\n' +
      "strata: warning: skipping device \\x1b[31mred\n",
  );
  const nc = new Deno.errors.NotCapable(
    'Requires run access to "runc", run again with the --allow-run flag',
  );
  const hint = permissionHint(new Error("start container", { cause: nc }))!;
  assertStringIncludes(hint, "strata needs --allow-run to start runc");
  assertStringIncludes(hint, "(runc)");
  assertEquals(exitCodeFor(new Error("x"), "run"), 125);
  assertEquals(exitCodeFor(new Error("x"), "pull"), 1);
  assertEquals(exitCodeFor(new UsageError("x"), "run"), 2);
});

Deno.test("output: plain progress lines, nothing when quiet, results on stdout only", () => {
  const lines = { out: "", err: "" };
  const sinks = { stdout: (t: string) => lines.out += t, stderr: (t: string) => lines.err += t };
  const out = new Output("plain", sinks);
  const [a, b] = out.layers([{ digest: "sha256:" + "a".repeat(64), size: 2000 }, {
    digest: "sha256:" + "b".repeat(64),
    size: 10,
  }]);
  a.start();
  a.fetched(2000);
  a.applied(5000);
  a.done();
  b.done(true);
  out.endLayers();
  out.result("sha256:abc");
  assertEquals(lines.out, "sha256:abc\n");
  assertMatch(lines.err, /layer 1\/2 sha256:aaaaaaaaaaaa: fetching 2\.0 KB\n/);
  assertMatch(lines.err, /layer 1\/2 sha256:aaaaaaaaaaaa: done: 2\.0 KB fetched, 5\.0 KB applied/);
  assert(!lines.err.includes("layer 2/2"), "a cached layer prints nothing");
  assert(!lines.err.includes("\x1b"), "no escape codes when not a terminal");

  const q = { out: "", err: "" };
  const quiet = new Output("quiet", {
    stdout: (t) => q.out += t,
    stderr: (t) => q.err += t,
  });
  const [c] = quiet.layers([{ digest: "sha256:cc", size: 1 }]);
  c.start();
  c.done();
  quiet.note("hello");
  assertEquals(q.err, "");
  assertEquals(formatBytes(999), "999 B");
  assertEquals(formatBytes(1_500_000), "1.5 MB");
});

Deno.test("output: a terminal gets a bar redrawn in place", () => {
  let err = "";
  const out = new Output("tty", { stdout: () => {}, stderr: (t) => err += t });
  const [a, b] = out.layers([{ digest: "sha256:" + "d".repeat(64), size: 100 }, {
    digest: "sha256:" + "e".repeat(64),
    size: 5,
  }]);
  b.done(true);
  assertEquals(err, "", "nothing drawn while every layer is cached");
  a.start();
  a.fetched(100);
  a.done();
  out.endLayers();
  assertStringIncludes(err, "[....");
  assertStringIncludes(err, "\x1b[2F"); // cursor back up over the block to redraw it
  assertMatch(err, /layer 1\/2 dddddddddddd \[#+\] 100 B\/100 B, 0 B applied/);
  assertMatch(err, /layer 2\/2 eeeeeeeeeeee \[#+\] cached/);
});

// ---------------------------------------------------------------------------
// The CLI as a subprocess, on real images and a real cache.

const CLI = join(repoRoot, "cli.ts");

/** The environment subprocesses get: this one, minus a CA variable that makes Deno warn here. */
function cliEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = { ...Deno.env.toObject(), ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  delete env.STRATA_CACHE;
  return env;
}

/** Runs `deno run -A cli.ts ARGS` with piped output. */
async function strata(
  args: string[],
  options: { flags?: string[]; stdin?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const child = new Deno.Command(denoPath, {
    args: ["run", ...(options.flags ?? ["-A"]), CLI, ...args],
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: cliEnv(options.env),
    clearEnv: true,
  }).spawn();
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(options.stdin));
    await w.close();
  }
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** Asserts that stderr is exactly one `strata: ...` line without a stack trace. */
function assertOneErrorLine(r: RunResult, includes?: string): void {
  const lines = r.stderr.split("\n").filter((l) => l.trim());
  assertEquals(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  assertMatch(lines[0], /^strata: /);
  assert(!/\n\s+at /.test(r.stderr), "no stack trace");
  if (includes) assertStringIncludes(lines[0], includes);
}

let layout: Promise<{ dir: string; ref: string; digest: string; diffIDs: string[] }> | undefined;

/** The demo image as an OCI layout, built once for the whole file. */
function demoLayout() {
  layout ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "strata-cli-layout-" });
    // Shared by the tests of this file, removed when the file's tests end.
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    await Deno.chmod(dir, 0o755);
    const built = await buildDemoImage(join(dir, "layout"));
    // World-readable, for the unprivileged user's test.
    await sh("chmod", ["-R", "a+rX", dir]);
    return {
      dir,
      ref: built.ref,
      digest: built.digest,
      diffIDs: built.layers.map((l) => l.diffID),
    };
  })();
  return layout;
}

Deno.test("cli: help, version and usage errors exit 0 / 2 with one line", async () => {
  const help = await strata(["--help"]);
  assertEquals(help.code, 0);
  assertStringIncludes(help.stdout, "usage: strata [global options] COMMAND");
  assertEquals(help.stderr, "");
  const runHelp = await strata(["help", "run"]);
  assertEquals(runHelp.code, 0);
  assertStringIncludes(runHelp.stdout, "usage: strata run [options] IMAGE [--] [CMD [ARG...]]");
  assertStringIncludes(runHelp.stdout, "--read-only");
  const version = await strata(["--version"]);
  assertMatch(version.stdout, /^strata \d+\.\d+\.\d+\n$/);

  const unknown = await strata(["run", "--foo", "img"]);
  assertEquals(unknown.code, 2);
  assertEquals(
    unknown.stderr,
    "strata: usage: unknown option --foo for run; see strata run --help\n",
  );
  assertEquals(unknown.stdout, "");
  const cmd = await strata(["frobnicate"]);
  assertEquals(cmd.code, 2);
  assertOneErrorLine(cmd, "unknown command 'frobnicate'; see strata --help");
  const none = await strata([]);
  assertEquals(none.code, 2);
  assertOneErrorLine(none, "missing command");
  const missing = await strata(["export", "oci:/x"]);
  assertEquals(missing.code, 2);
  assertOneErrorLine(missing, "export needs DIR");
});

Deno.test("cli: pull prints only the digest; progress is plain lines, none with --quiet", async () => {
  const img = await demoLayout();
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const r = await strata(["pull", img.ref, "--cache", cache]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stdout, img.digest + "\n");
  assert(!r.stderr.includes("\x1b"), "no terminal escapes when stderr is a pipe");
  assertMatch(r.stderr, /layer 1\/3 sha256:[0-9a-f]{12}: fetching /);
  assertMatch(r.stderr, /layer 3\/3 sha256:[0-9a-f]{12}: done: .* fetched, .* applied/);
  // Everything cached now: a second pull prints the digest and no progress.
  const again = await strata(["--cache", cache, "pull", img.ref]);
  assertEquals(again.stdout, img.digest + "\n");
  assert(!again.stderr.includes("fetching"), again.stderr);
  // --quiet: nothing on stderr at all, on a cold cache too.
  await using cache2Dir = await tempDir("strata-cli-cache-");
  const cache2 = String(cache2Dir);
  const quiet = await strata(["pull", "-q", img.ref, "--cache", cache2]);
  assertEquals(quiet.code, 0);
  assertEquals(quiet.stdout, img.digest + "\n");
  assertEquals(quiet.stderr, "");

  const bad = await strata(["pull", `oci:${cache}/nope:x`, "--cache", cache]);
  assertEquals(bad.code, 1);
  assertEquals(bad.stdout, "");
  assertOneErrorLine(bad, `strata: pull oci:${cache}/nope:x: `);
  const debug = await strata(["pull", `oci:${cache}/nope:x`, "--cache", cache, "--debug"]);
  assertEquals(debug.code, 1);
  assertMatch(debug.stderr, /\n\s+at /, "--debug shows the stack");
});

Deno.test("cli: ls --json, rm and prune", async () => {
  const img = await demoLayout();
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const empty = await strata(["ls", "--json", "--cache", cache]);
  assertEquals(empty.code, 0);
  assertEquals(JSON.parse(empty.stdout).images, []);
  assertEquals((await strata(["pull", "-q", img.ref, "--cache", cache])).code, 0);

  const ls = await strata(["ls", "--json", "--cache", cache]);
  assertEquals(ls.code, 0, ls.stderr);
  const j = JSON.parse(ls.stdout);
  assertEquals(j.cache, String(cache));
  assertEquals(j.images.length, 1);
  assertEquals(j.images[0].name, img.ref);
  assertEquals(j.images[0].digest, img.digest);
  assertEquals(j.images[0].complete, true);
  assertEquals(j.images[0].layers.map((l: { diffID: string }) => l.diffID), img.diffIDs);
  assert(j.images[0].size > 1000 && j.images[0].extracted > j.images[0].size);
  assertEquals(j.layers, { count: 3, unreferenced: 0 });
  assert(j.diskUsage > 0);
  const text = await strata(["ls", "--cache", cache]);
  assertMatch(text.stdout, /^NAME\s+DIGEST\s+LAYERS\s+SIZE\s+EXTRACTED\n/);
  assertStringIncludes(text.stdout, img.ref);
  assertStringIncludes(text.stdout, "1 image, 3 layers (0 unreferenced)");
  // A name with a control character: escaped in the table, as is in the JSON.
  const odd = join(cache, "odd\x1b[2Jdir");
  await Deno.mkdir(odd);
  await sh("cp", ["-a", img.ref.slice("oci:".length).replace(/:[^:/]*$/, ""), join(odd, "l")]);
  const oddRef = `oci:${odd}/l:${img.ref.split(":").at(-1)}`;
  assertEquals((await strata(["pull", "-q", oddRef, "--cache", cache])).code, 0);
  const oddText = await strata(["ls", "--cache", cache]);
  assert(!oddText.stdout.includes("\x1b"), "no raw ESC in the table");
  assertStringIncludes(oddText.stdout, "odd\\x1b[2Jdir");
  const oddJson = JSON.parse((await strata(["ls", "--json", "--cache", cache])).stdout);
  assert(oddJson.images.some((i: { name: string }) => i.name === oddRef), "JSON keeps the name");
  assertEquals((await strata(["rm", oddRef, "--cache", cache])).code, 0);

  // prune keeps what an image references.
  const keep = await strata(["prune", "--cache", cache]);
  assertEquals(keep.code, 0, keep.stderr);
  assertEquals(keep.stdout, "");
  const rm = await strata(["rm", img.ref, "--cache", cache]);
  assertEquals(rm.code, 0);
  assertEquals(rm.stdout, img.ref + "\n");
  const rm2 = await strata(["rm", img.ref, "--cache", cache]);
  assertEquals(rm2.code, 1);
  assertOneErrorLine(rm2, `no image ${img.ref} in the cache`);
  // A leftover of a dead process in tmp/ goes too.
  await Deno.mkdir(join(cache, "tmp", "deadbeef"));
  await Deno.writeTextFile(join(cache, "locks", "tmp-deadbeef.lock"), "");
  const prune = await strata(["prune", "--cache", cache]);
  assertEquals(prune.code, 0, prune.stderr);
  assertEquals(prune.stdout.trim().split("\n").sort(), [...img.diffIDs].sort());
  assertStringIncludes(prune.stderr, "pruned 3 layers, 1 temp dir");
  assertEquals([...Deno.readDirSync(join(cache, "layers"))], []);
  assertEquals([...Deno.readDirSync(join(cache, "tmp"))], []);
});

Deno.test("cli: run passes argv, stdin, stdout and the exit status; strata failures are 125", async () => {
  const img = await demoLayout();
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const c = ["--cache", cache];
  const hello = await strata(["run", ...c, "-q", img.ref, "echo", "hello", "-n"]);
  assertEquals(hello.code, 0, hello.stderr);
  assertEquals(hello.stdout, "hello -n\n");
  const status = await strata(["run", ...c, img.ref, "--", "sh", "-c", "exit 7"]);
  assertEquals(status.code, 7);
  const opts = await strata([
    "run",
    ...c,
    "-e",
    "A=1",
    "--env=B=two words",
    "--user",
    "root:app",
    "--workdir",
    "/tmp",
    img.ref,
    "sh",
    "-c",
    'echo "$A|$B|$(id -u):$(id -g)|$(pwd)"',
  ]);
  assertEquals(opts.code, 0, opts.stderr);
  assertEquals(opts.stdout, "1|two words|0:1000|/tmp\n");
  const image = await strata(["run", ...c, img.ref]);
  assertEquals(image.code, 0, image.stderr);
  assertStringIncludes(image.stdout, "user: app (uid 1000, gid 1000), cwd: /home/app");
  for (const line of Object.values(DEMO_EXPECTED)) assertStringIncludes(image.stdout, line);
  const fn = await strata(["run", ...c, "-q", img.ref, "tr", "a-z", "A-Z"], { stdin: "shout\n" });
  assertEquals(fn.stdout, "SHOUT\n");
  const ro = await strata(["run", ...c, "--read-only", img.ref, "touch", "/x"]);
  assertEquals(ro.code, 1);
  assertStringIncludes(ro.stderr, "Read-only file system");
  // -t: a terminal in the container, relayed by runc; `script` gives strata one.
  const quote = (a: string) => `'${a.replaceAll("'", `'\\''`)}'`;
  const inner = [denoPath, "run", "-A", CLI, "run", ...c, "-q", "-it", img.ref, "sh", "-c"]
    .concat('tty; echo "TERM=$TERM"; exit 4').map(quote).join(" ");
  const tty = await run("script", ["-qec", inner, "/dev/null"], { env: cliEnv(), clearEnv: true });
  assertEquals(tty.code, 4, tty.stdout + tty.stderr);
  assertMatch(tty.stdout, /\/dev\/pts\/\d+\r?\n/);
  assertStringIncludes(tty.stdout, "TERM=xterm");
  const ep = await strata(["run", ...c, "-q", "--entrypoint", "/bin/echo", img.ref, "a", "b"]);
  assertEquals([ep.code, ep.stdout], [0, "a b\n"], ep.stderr);
  const noCmd = await strata(["run", ...c, "-q", "--entrypoint=", img.ref]);
  assertEquals(noCmd.code, 125);
  assertOneErrorLine(noCmd, "neither Entrypoint nor Cmd");
  // -v: host directories in the container, read-only or not.
  await using vol = await tempDir();
  await Deno.writeTextFile(join(String(vol), "in"), "from the host\n");
  const ro2 = await strata([
    "run",
    ...c,
    "-q",
    "-v",
    `${vol}:/data:ro`,
    img.ref,
    "sh",
    "-c",
    "cat /data/in; echo x > /data/out",
  ]);
  assertEquals([ro2.code, ro2.stdout], [1, "from the host\n"], ro2.stderr);
  assertStringIncludes(ro2.stderr, "Read-only file system");
  const rw = await strata([
    "run",
    ...c,
    "-q",
    "-u",
    "root",
    "--volume",
    `${vol}:/data`,
    img.ref,
    "sh",
    "-c",
    "echo y > /data/out",
  ]);
  assertEquals(rw.code, 0, rw.stderr);
  assertEquals(await Deno.readTextFile(join(String(vol), "out")), "y\n");
  for (const bad of [`${vol}`, `${vol}:data`, `${vol}:/data:rx`, `${vol}/missing:/data`]) {
    const r = await strata(["run", ...c, "-v", bad, img.ref, "true"]);
    assertEquals(r.code, 2, bad);
    assertOneErrorLine(r, "--volume");
  }
  // Limits: what the container's own cgroup says (v2 file names, else v1's).
  const cg = (v2: string, v1: string) =>
    `cat /sys/fs/cgroup/${v2} 2>/dev/null || cat /sys/fs/cgroup/${v1}`;
  const limits = await strata([
    "run",
    ...c,
    "-q",
    "-m",
    "64m",
    "--cpus",
    "0.5",
    "--pids-limit",
    "42",
    img.ref,
    "sh",
    "-c",
    [
      cg("memory.max", "memory/memory.limit_in_bytes"),
      cg("pids.max", "pids/pids.max"),
      cg("cpu.max", "cpu/cpu.cfs_quota_us"),
    ].join("; "),
  ]);
  assertEquals(limits.code, 0, limits.stderr);
  assertEquals(limits.stdout.split(/\s+/).filter((w) => w !== "100000"), [
    "67108864",
    "42",
    "50000",
    "",
  ]);
  for (const bad of [["-m", "lots"], ["--cpus", "x"], ["--pids-limit", "0"]]) {
    const r = await strata(["run", ...c, ...bad, img.ref, "true"]);
    assertEquals(r.code, 2, bad.join(" "));
    assertOneErrorLine(r, bad[0] === "-m" ? "--memory" : bad[0]);
  }
  const notty = await strata(["run", ...c, "-t", img.ref, "true"]);
  assertEquals(notty.code, 2);
  assertOneErrorLine(notty, "not a TTY");

  const noImage = await strata(["run", ...c, `oci:${cache}/missing:x`, "true"]);
  assertEquals(noImage.code, 125);
  assertOneErrorLine(noImage, `strata: run oci:${cache}/missing:x: `);
  const noUser = await strata(["run", ...c, "-q", "--user", "nobody-here", img.ref, "true"]);
  assertEquals(noUser.code, 125);
  assertOneErrorLine(noUser, "nobody-here");
  // A command the container cannot run: the shell's statuses, as docker and podman.
  const notFound = await strata(["run", ...c, "-q", img.ref, "no-such-command"]);
  assertEquals(notFound.code, 127, notFound.stderr);
  assertStringIncludes(notFound.stderr, "no-such-command");
  const notExec = await strata(["run", ...c, "-q", img.ref, "/etc/passwd"]);
  assertEquals(notExec.code, 126, notExec.stderr);
  const noRuntime = await strata(["run", ...c, "-q", "--runtime", "no-such-runtime", img.ref]);
  assertEquals(noRuntime.code, 125);
  assertOneErrorLine(noRuntime, "no-such-runtime");
  assertEquals(await mountsBelow(String(cache)), [], "no mount left behind");
  assertEquals([...Deno.readDirSync(join(cache, "containers"))], [], "no container left behind");
});

/**
 * Starts `deno run -A cli.ts ARGS sh -c 'echo up; read x'` and waits for its
 * "up": a container running until `finish()` writes its line and closes the
 * pipes.
 */
async function runningContainer(args: string[]) {
  const child = new Deno.Command(denoPath, {
    args: ["run", "-A", CLI, ...args, "sh", "-c", "echo up; read x"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: cliEnv(),
    clearEnv: true,
  }).spawn();
  const reader = child.stdout.getReader();
  const first = await reader.read();
  assertEquals(new TextDecoder().decode(first.value), "up\n");
  const finish = async () => {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode("bye\n"));
    await w.close();
    reader.releaseLock();
    await child.stdout.cancel();
    await child.stderr.cancel();
  };
  return { child, finish };
}

Deno.test("cli: prune never removes a layer a running container uses", async () => {
  const img = await demoLayout();
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const c = ["--cache", cache];
  const { child, finish } = await runningContainer([...c, "-q", "run", img.ref]);
  assertEquals((await strata(["rm", img.ref, ...c])).code, 0);
  const prune = await strata(["prune", ...c]);
  assertEquals(prune.code, 0, prune.stderr);
  assertEquals(prune.stdout, "", "nothing removed while the container runs");
  assertMatch(prune.stderr, /keeping sha256:[0-9a-f]{12}: used by container strata-/);
  await finish();
  assertEquals((await child.status).code, 0);
  const after = await strata(["prune", ...c]);
  assertEquals(after.stdout.trim().split("\n").length, 3, "removed once the container is gone");
});

Deno.test({
  name:
    "cli: a warm run as root mounts in its main thread's own namespace: never in the host's, gone after a kill -9",
  ignore: !isRoot,
  fn: async () => {
    const img = await demoLayout();
    await using cacheDir = await tempDir("strata-cli-cache-");
    const cache = String(cacheDir);
    const c = ["--cache", cache];
    assertEquals((await strata(["pull", ...c, "-q", img.ref])).code, 0);
    const { child, finish } = await runningContainer([...c, "-q", "run", img.ref]);
    // One process, not re-executed: its main thread (tid = pid) is in a mount
    // namespace of its own, its other threads still in the host's.
    const ns = (tid: string) => Deno.readLinkSync(`/proc/${child.pid}/task/${tid}/ns/mnt`);
    const host = Deno.readLinkSync("/proc/self/ns/mnt");
    const tids = [...Deno.readDirSync(`/proc/${child.pid}/task`)].map((e) => e.name);
    assert(tids.length > 1, "deno runs several threads");
    assertEquals(ns(String(child.pid)) === host, false, "the main thread has its own namespace");
    assert(tids.some((t) => ns(t) === host), "the other threads stay in the host's");
    // The bundle's tmpfs and overlay exist only there: the host sees none.
    assertEquals(await mountsBelow(cache), [], "no mount visible to the host while running");
    const containers = [...Deno.readDirSync(join(cache, "containers"))].map((e) => e.name);
    assertEquals(containers.length, 1);
    const bundle = join(cache, "containers", containers[0], "bundle");
    assertEquals([...Deno.readDirSync(bundle)], [], "the host sees an empty mountpoint");

    // kill -9: nothing can clean up. The container still runs (its runtime
    // holds the namespace); once it exits, the namespace and its mounts go.
    const stateLogs = () =>
      [...Deno.readDirSync(defaultStateDir("runc"))].filter((e) => e.name.endsWith(".log")).length;
    const logsBefore = stateLogs();
    child.kill("SIGKILL");
    assertEquals((await child.status).signal, "SIGKILL");
    await finish();
    assertEquals(await mountsBelow(cache), []);
    // The runtime's log was in the bundle's tmpfs: nothing left in its state dir.
    assertEquals(stateLogs(), logsBefore, "no runtime log left behind");
    // The next run reclaims the dead bundle's directory and works as usual.
    const again = await strata(["run", ...c, "-q", img.ref, "echo", "again"]);
    assertEquals(again.code, 0, again.stderr);
    assertEquals(again.stdout, "again\n");
    const prune = await strata(["prune", ...c]);
    assertEquals(prune.code, 0, prune.stderr);
    assertEquals([...Deno.readDirSync(join(cache, "containers"))], [], "dead bundle reclaimed");
    assertEquals(await mountsBelow(cache), []);
  },
});

Deno.test("cli: export writes the flattened tree with owners, links and whiteouts applied", async () => {
  const img = await demoLayout();
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  await using outDir = await tempDir("strata-cli-export-");
  const out = String(outDir);
  const dir = join(out, "rootfs");
  const r = await strata(["export", img.ref, dir, "--cache", cache]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stdout, "");
  assertMatch(r.stderr, /exported \d+ entries .*1 hard links/);
  assertEquals(
    await Deno.readTextFile(join(dir, "etc/motd")),
    "hello from layer 2 (it overrides layer 1)\n",
  );
  await assertMissing(join(dir, "etc/secret"));
  assertEquals([...Deno.readDirSync(join(dir, "data/cache"))].map((e) => e.name), ["fresh.txt"]);
  const a = await Deno.lstat(join(dir, "app/show.sh"));
  const b = await Deno.lstat(join(dir, "app/show-link.sh"));
  assertEquals(a.ino, b.ino, "hard link kept");
  const home = await Deno.lstat(join(dir, "home/app"));
  assertEquals([home.uid, home.gid], [1000, 1000]);
  assertEquals((await Deno.lstat(join(dir, "tmp"))).mode! & 0o7777, 0o1777);
  assertEquals(
    (await Deno.lstat(join(dir, "etc/motd"))).mtime!
      .getTime(),
    1704067200_000,
  );
  assertEquals(await Deno.readLink(join(dir, "bin/sh")), "busybox");
  // No overlay xattr leaks into the export.
  const xattrs = await run("getfattr", ["-R", "-d", "-m", "-", dir]);
  assert(!xattrs.stdout.includes("overlay"), xattrs.stdout);

  const again = await strata(["export", img.ref, dir, "--cache", cache]);
  assertEquals(again.code, 1);
  assertOneErrorLine(again, "is not empty");
  assertEquals(await mountsBelow(String(cache)), []);
});

Deno.test("cli: an export that fails part way leaves no half-written DIR", async () => {
  const img = await demoLayout();
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  await using outDir = await tempDir("strata-cli-export-");
  // A target on a 64 KiB tmpfs: the ~2 MB busybox copy runs out of space.
  const small = join(String(outDir), "small");
  await Deno.mkdir(small);
  await sh("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", small]);
  try {
    const dir = join(small, "rootfs");
    const r = await strata(["export", img.ref, dir, "--cache", cache, "--quiet"]);
    assertEquals(r.code, 1);
    assertOneErrorLine(r, "No space left on device");
    assertEquals([...Deno.readDirSync(small)], [], "neither DIR nor a partial copy is left");
    // An existing empty DIR is filled (replaced by the finished copy).
    const roomy = join(String(outDir), "roomy");
    await Deno.mkdir(roomy);
    const ok = await strata(["export", img.ref, roomy, "--cache", cache]);
    assertEquals(ok.code, 0, ok.stderr);
    assertEquals(
      await Deno.readTextFile(join(roomy, "etc/motd")),
      "hello from layer 2 (it overrides layer 1)\n",
    );
    assertEquals(
      [...Deno.readDirSync(String(outDir))].map((e) => e.name).sort(),
      ["roomy", "small"],
    );
  } finally {
    await sh("umount", [small]);
  }
});

async function assertMissing(path: string): Promise<void> {
  try {
    await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  throw new Error(`${path} exists`);
}

Deno.test("cli: verify finds a file changed inside a cached layer; pull repairs it", async () => {
  const img = await demoLayout();
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const c = ["--cache", cache];
  assertEquals((await strata(["pull", "-q", img.ref, ...c])).code, 0);
  const ok = await strata(["verify", ...c]);
  assertEquals(ok.code, 0, ok.stderr);
  assertStringIncludes(ok.stderr, "all intact");
  // Tamper: one byte of busybox's /etc/motd in layer 1 as it sits in the cache.
  const layer1 = join(cache, "layers", img.diffIDs[0].replace(":", "-"));
  await Deno.writeTextFile(join(layer1, "fs/etc/motd"), "hello from layer X\n");
  const bad = await strata(["verify", ...c]);
  assertEquals(bad.code, 1);
  assertEquals(bad.stdout, `damaged ${img.diffIDs[0]}\n`);
  assertMatch(bad.stderr, /DAMAGED: its files changed/);
  assertStringIncludes(
    bad.stderr.trim().split("\n").at(-1)!,
    `strata: verify: 1 damaged: layer ${img.diffIDs[0]}`,
  );
  await assertMissing(layer1);
  const ls = JSON.parse((await strata(["ls", "--json", ...c])).stdout);
  assertEquals(ls.images[0].complete, false);
  // The next pull extracts it again and verify is happy.
  const pull = await strata(["pull", img.ref, ...c]);
  assertEquals(pull.code, 0);
  assertMatch(pull.stderr, /1 of 3 layers extracted/);
  assertEquals((await strata(["verify", ...c])).code, 0);
  // A damaged image-store blob is found too.
  const blob = join(cache, "images/blobs/sha256", img.digest.slice(7));
  await Deno.writeTextFile(blob, "{}");
  const badBlob = await strata(["verify", ...c]);
  assertEquals(badBlob.code, 1);
  assertStringIncludes(badBlob.stdout, `damaged ${img.digest}`);
});

Deno.test("cli: pull from a real registry with basic auth and --tls-verify=false", async () => {
  const img = await demoLayout();
  await using reg = await Registry.start({ user: "alice", pass: "s3cret" });
  await reg.push(img.ref, "demo/busybox:v1", { creds: "alice:s3cret" });
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const ref = `${reg.host}/demo/busybox:v1`;
  const denied = await strata(["pull", ref, "--tls-verify=false", "--cache", cache]);
  assertEquals(denied.code, 1);
  assertOneErrorLine(denied, `strata: pull ${ref}: `);
  const r = await strata([
    "pull",
    "--tls-verify=false",
    "--creds",
    "alice:s3cret",
    `docker://${ref}`,
    "--cache",
    cache,
  ]);
  assertEquals(r.code, 0, r.stderr);
  assertMatch(r.stdout, /^sha256:[0-9a-f]{64}\n$/);
  // Offline from here: run by name, served from the image store and layer cache.
  const run1 = await strata(["run", "-q", "--cache", cache, ref, "cat", "/etc/motd"]);
  assertEquals(run1.code, 0, run1.stderr);
  assertEquals(run1.stdout, "hello from layer 2 (it overrides layer 1)\n");
  const byDigest = await strata(["run", "-q", "--cache", cache, r.stdout.trim(), "true"]);
  assertEquals(byDigest.code, 0, byDigest.stderr);
  const badCreds = await strata(["pull", ref, "--creds", "alice", "--cache", cache]);
  assertEquals(badCreds.code, 2);
  assertOneErrorLine(badCreds, "--creds must be USER:PASS");
});

Deno.test("cli: a registry with a self-signed certificate: --tls-verify=false skips the check, as skopeo", async () => {
  const img = await demoLayout();
  await using reg = await Registry.start(undefined, undefined, { tls: true });
  await reg.push(img.ref, "demo/busybox:v1");
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const ref = `docker://${reg.host}/demo/busybox:v1`;
  // Verified by default: one clear line, nothing pulled.
  const refused = await strata(["pull", ref, "--cache", cache]);
  assertEquals(refused.code, 1);
  assertOneErrorLine(refused, "certificate");
  // Turned off: strata runs itself again with Deno's own flag for that host.
  const pulled = await strata(["pull", "--tls-verify=false", ref, "--cache", cache]);
  assertEquals(pulled.code, 0, pulled.stderr);
  assertMatch(pulled.stdout, /^sha256:[0-9a-f]{64}\n$/);
  assertStringIncludes(pulled.stderr, "TLS certificate validation is disabled for: 127.0.0.1");
  const ran = await strata([
    "run",
    "-q",
    "--cache",
    cache,
    `${reg.host}/demo/busybox:v1`,
    "cat",
    "/etc/motd",
  ]);
  assertEquals(ran.code, 0, ran.stderr);
  assertEquals(ran.stdout, "hello from layer 2 (it overrides layer 1)\n");
  // The library says which flag a program needs.
  const { openImage } = await import("../image/open.ts");
  await assertRejects(
    () => openImage(ref, { tlsVerify: false }),
    Error,
    "--unsafely-ignore-certificate-errors=127.0.0.1",
  );
});

Deno.test("cli: supported exits 0 and --why explains the mode", async () => {
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const r = await strata(["supported", "--cache", cache]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stdout, "");
  const why = await strata(["supported", "--why", "--cache", cache]);
  assertEquals(why.code, 0);
  assertMatch(why.stdout, /^supported: yes\ncache: /);
  assertMatch(why.stdout, /\nmode: root/);
  assertMatch(why.stdout, /\nmount backend: \w+/);
  // On an overlayfs (a container's root filesystem) it is not supported.
  await using mDir = await tempDir("strata-cli-ovl-");
  const m = String(mDir);
  for (const d of ["l", "u", "w", "m"]) await Deno.mkdir(join(m, d));
  await sh("mount", [
    "-t",
    "overlay",
    "overlay",
    "-o",
    `lowerdir=${m}/l,upperdir=${m}/u,workdir=${m}/w`,
    `${m}/m`,
  ]);
  const no = await strata(["supported", "--why", "--cache", join(m, "m", "cache")]);
  assertEquals(no.code, 1);
  assertMatch(no.stdout, /supported: no[\s\S]*reason: .*overlayfs/);
});

Deno.test("cli: a missing Deno permission names the flag to add", async () => {
  await using cacheDir = await tempDir("strata-cli-cache-");
  const cache = String(cacheDir);
  const img = await demoLayout();
  // Without --allow-env the environment is read through libc: --allow-ffi is what is missing.
  const noFfi = await strata(["ls"], { flags: ["--allow-read", "--no-prompt"] });
  assertEquals(noFfi.code, 1);
  assertOneErrorLine(noFfi, "strata needs --allow-ffi (to call libc");
  // Mounting commands read /proc/self (id maps, mount namespace) through libc.
  const r = await strata(["pull", img.ref, "--cache", cache], {
    flags: [
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-run",
      "--allow-sys",
      "--no-prompt",
    ],
  });
  assertEquals(r.code, 1);
  assertOneErrorLine(r, "run deno with --allow-ffi");
  // `supported` is a silent yes/no, but "could not look" is not a "no": it says so.
  const sup = await strata(["supported", "--cache", cache], {
    flags: ["--allow-read", "--allow-write", "--allow-env", "--allow-run", "--no-prompt"],
  });
  assertEquals(sup.code, 1);
  assertOneErrorLine(sup, "run deno with --allow-ffi");
  if (isRoot) {
    // An unprivileged user needs --allow-run for unshare: said as such, not as
    // "cannot create a user namespace".
    const { home } = await ensureTestUser();
    const user = await runAsUser([denoPath, "run", "--allow-ffi", CLI, "pull", img.ref], {
      env: { DENO_DIR: join(home, ".deno"), STRATA_CACHE: join(home, "cache-noperm") },
    });
    assertEquals(user.code, 1);
    assertOneErrorLine(user, "strata needs --allow-run for unshare (to start unshare");
    assert(!user.stderr.includes("Cannot create a user namespace"), user.stderr);
  }
  // With the named permissions (no -A) the same pull works.
  const ok = await strata(["pull", img.ref, "--cache", cache], {
    flags: [
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-run",
      "--allow-sys",
      "--allow-ffi",
      "--no-prompt",
    ],
  });
  assertEquals(ok.code, 0, ok.stderr);
});

Deno.test("cli: demo runs end to end, cold then warm, and leaves nothing behind", async () => {
  // Its own TMPDIR, so "nothing left behind" is checked on a directory nobody else uses.
  await using tmpDir = await tempDir("strata-cli-demo-");
  const r = await strata(["demo"], { env: { TMPDIR: String(tmpDir) } });
  assertEquals(r.code, 0, r.stderr);
  for (const line of Object.values(DEMO_EXPECTED)) {
    assertEquals(r.stdout.split(line).length - 1, 2, `twice: ${line}`);
  }
  assertStringIncludes(r.stderr, `built oci:${tmpDir}/strata-demo-`);
  assertMatch(r.stderr, /cold run: [\d.]+ m?s \(3 layers extracted/);
  assertMatch(r.stderr, /warm run: [\d.]+ m?s \(0 extracted/);
  assertEquals([...Deno.readDirSync(String(tmpDir))], []);
});

Deno.test({
  name: "cli: an unprivileged user runs the demo in a user namespace, as the image's app user",
  ignore: !isRoot,
  fn: async () => {
    const { home } = await ensureTestUser();
    const r = await runAsUser([denoPath, "run", "-A", CLI, "demo"], {
      env: { DENO_DIR: join(home, ".deno") },
    });
    assertEquals(r.code, 0, r.stderr);
    assertStringIncludes(r.stdout, "user: app (uid 1000, gid 1000)");
    for (const line of Object.values(DEMO_EXPECTED)) assertStringIncludes(r.stdout, line);
  },
});

Deno.test("cli: Ctrl-C during a pull stops it, cleans up and exits 130", async () => {
  const img = await demoLayout();
  // A registry in this test serves the layout and sends only half of the
  // first layer's blob, then holds the connection: the pull blocks
  // mid-layer, so the signal lands mid-extraction.
  const layoutDir = img.ref.slice(4, -":demo".length);
  const index = JSON.parse(await Deno.readTextFile(join(layoutDir, "index.json")));
  const manifestDigest: string = index.manifests[0].digest;
  const manifestBytes = await Deno.readFile(
    join(layoutDir, "blobs/sha256", manifestDigest.slice(7)),
  );
  const manifest = JSON.parse(new TextDecoder().decode(manifestBytes));
  const stalled: string = manifest.layers[0].digest;
  const release = Promise.withResolvers<void>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/v2/") return new Response("{}");
    if (path.startsWith("/v2/demo/manifests/")) {
      return new Response(manifestBytes, {
        headers: {
          "content-type": manifest.mediaType ?? "application/vnd.oci.image.manifest.v1+json",
          "docker-content-digest": manifestDigest,
        },
      });
    }
    const m = /^\/v2\/demo\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path);
    if (!m) return new Response("not found", { status: 404 });
    const blob = await Deno.readFile(join(layoutDir, "blobs/sha256", m[1].slice(7)));
    if (m[1] !== stalled) return new Response(blob);
    const body = new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(blob.subarray(0, blob.length >> 1));
        await release.promise;
        c.close();
      },
    });
    return new Response(body, { headers: { "content-length": String(blob.length) } });
  });
  const ref = `127.0.0.1:${server.addr.port}/demo:latest`;
  await using workDir = await tempDir("strata-cli-int-");
  const cache = join(String(workDir), "cache");
  // setsid: its own process group, as a terminal's Ctrl-C signals the whole group.
  const child = new Deno.Command("setsid", {
    args: [denoPath, "run", "-A", CLI, "pull", ref, "--tls-verify=false", "--cache", cache],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: cliEnv(),
    clearEnv: true,
  }).spawn();
  let err = "";
  const reader = child.stderr.getReader();
  while (!err.includes("fetching")) {
    const { value, done } = await reader.read();
    if (done) break;
    err += new TextDecoder().decode(value);
  }
  await new Promise((r) => setTimeout(r, 300));
  await sh("kill", ["-INT", "--", `-${child.pid}`]);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    err += new TextDecoder().decode(value);
  }
  const status = await child.status;
  await child.stdout.cancel();
  assertEquals(status.code, 130, err);
  release.resolve();
  await server.shutdown();
  assertEquals(err.trim().split("\n").at(-1), `strata: pull ${ref}: interrupted`);
  assertEquals([...Deno.readDirSync(join(cache, "tmp"))], [], "no temp dir left");
  assertEquals([...Deno.readDirSync(join(cache, "layers"))], [], "no partial layer published");
});
