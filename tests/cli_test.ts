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
import { assert, assertEquals, assertMatch, assertStringIncludes, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { parseArgs, UsageError } from "../cli/args.ts";
import { COMMANDS, GLOBAL_OPTIONS, TOP_OPTIONS } from "../cli/spec.ts";
import { describeError, errorLine, exitCodeFor, permissionHint } from "../cli/errors.ts";
import { formatBytes, Output } from "../cli/output.ts";

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

export { join };
