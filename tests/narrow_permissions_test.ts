/**
 * The command line with exactly the permissions the README gives it:
 * `deno run --allow-run --allow-ffi cli.ts ...` for local images (OCI
 * layouts, `oci-archive` plain and gzip'd, `docker-archive`, the cache), plus
 * `--allow-net` for a registry, as root and as an unprivileged user. Every
 * command the README lists runs; a permission still missing is one error
 * line naming the flag (and the host), and a typed error from the library.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { buildDemoImage } from "../cli/demo_image.ts";
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
import { Registry, skopeoCopy, TokenFront } from "./_registry.ts";

const NARROW = ["--allow-run", "--allow-ffi"];
const CLI = join(repoRoot, "cli.ts");
const MOTD = "hello from layer 2 (it overrides layer 1)\n";

interface Images {
  dir: string;
  layout: string;
  archive: string;
  archiveGz: string;
  docker: string;
}

/** The demo image as an OCI layout, an oci-archive (plain and gzip'd) and a docker-archive. */
async function images(dir: string): Promise<Images> {
  const built = await buildDemoImage(join(dir, "layout"));
  const archive = join(dir, "demo.tar");
  await sh("tar", ["-cf", archive, "-C", join(dir, "layout"), "."]);
  await sh("sh", ["-c", `gzip -c '${archive}' > '${archive}.gz'`]);
  const docker = join(dir, "docker.tar");
  await skopeoCopy(built.ref, `docker-archive:${docker}:demo/busybox:v1`);
  await sh("chmod", ["-R", "a+rX", dir]);
  return {
    dir,
    layout: built.ref,
    archive: `oci-archive:${archive}:demo`,
    archiveGz: `oci-archive:${archive}.gz:demo`,
    docker: `docker-archive:${docker}`,
  };
}

/** The environment of the CLI: this one's PATH and HOME, nothing that names a cache. */
function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
    ...extra,
  };
}

type Strata = (args: string[], options?: { env?: Record<string, string> }) => Promise<RunResult>;

/** `deno run FLAGS cli.ts ARGS`, as root. */
function asRoot(flags: string[]): Strata {
  return (args, options = {}) =>
    run("timeout", ["-s", "KILL", "120", denoPath, "run", ...flags, CLI, ...args], {
      env: baseEnv(options.env),
      clearEnv: true,
    });
}

/** `deno run FLAGS cli.ts ARGS`, as the unprivileged test user. */
async function asUser(flags: string[]): Promise<Strata> {
  const { home } = await ensureTestUser();
  return (args, options = {}) =>
    runAsUser(["timeout", "-s", "KILL", "120", denoPath, "run", ...flags, CLI, ...args], {
      env: { DENO_DIR: join(home, ".deno"), ...options.env },
    });
}

/** Asserts stderr is exactly one `strata: ...` line, no stack trace. */
function assertOneErrorLine(r: RunResult, includes: string): void {
  const lines = r.stderr.split("\n").filter((l) => l.trim());
  assertEquals(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  assertMatch(lines[0], /^strata: /);
  assert(!/\n\s+at /.test(r.stderr), "no stack trace");
  assertStringIncludes(lines[0], includes);
}

/** Every command the README lists, on every kind of local image, under `strata`. */
async function everyCommand(strata: Strata, img: Images, cache: string, out: string) {
  const c = ["--cache", cache];
  const sup = await strata(["supported", "--why", ...c]);
  assertEquals(sup.code, 0, sup.stderr);
  assertStringIncludes(sup.stdout, "supported: yes");

  const digests: string[] = [];
  for (const ref of [img.layout, img.archive, img.archiveGz, img.docker]) {
    const r = await strata(["pull", "-q", ref, ...c]);
    assertEquals(r.code, 0, `pull ${ref}: ${r.stderr}`);
    assertMatch(r.stdout, /^sha256:[0-9a-f]{64}\n$/);
    digests.push(r.stdout.trim());
  }
  assertEquals(digests[0], digests[1], "the layout and its archive are the same image");

  const motd = await strata(["run", "-q", ...c, img.archive, "cat", "/etc/motd"]);
  assertEquals([motd.code, motd.stdout], [0, MOTD], motd.stderr);
  const id = await strata(["run", "-q", ...c, img.docker, "id", "-u"]);
  assertEquals([id.code, id.stdout], [0, "1000\n"], id.stderr);
  const status = await strata(["run", "-q", ...c, img.layout, "sh", "-c", "exit 7"]);
  assertEquals(status.code, 7, status.stderr);

  const exported = await strata(["export", "-q", ...c, img.layout, out]);
  assertEquals(exported.code, 0, exported.stderr);
  assertEquals(await Deno.readTextFile(join(out, "etc/motd")), MOTD);
  assertEquals([...Deno.readDirSync(join(out, "data/cache"))].map((e) => e.name), ["fresh.txt"]);

  // The cache named by STRATA_CACHE: the environment read without --allow-env.
  const ls = await strata(["ls", "--json"], { env: { STRATA_CACHE: cache } });
  assertEquals(ls.code, 0, ls.stderr);
  const listing = JSON.parse(ls.stdout);
  assertEquals(listing.cache, cache);
  assertEquals(listing.images.length, 4);
  assert(listing.images.every((i: { complete: boolean }) => i.complete));

  const verify = await strata(["verify", ...c]);
  assertEquals(verify.code, 0, verify.stderr);
  assertStringIncludes(verify.stderr, "all intact");

  for (const ref of [img.layout, img.archive, img.archiveGz, img.docker]) {
    const rm = await strata(["rm", ref, ...c]);
    assertEquals(rm.code, 0, `rm ${ref}: ${rm.stderr}`);
  }
  const prune = await strata(["prune", ...c]);
  assertEquals(prune.code, 0, prune.stderr);
  assertEquals(prune.stdout.trim().split("\n").length, 3, "the 3 layers pruned");
  const empty = await strata(["ls", "--json", ...c]);
  assertEquals(JSON.parse(empty.stdout).layers.count, 0);

  const missing = await strata(["run", ...c, "oci:/nonexistent/strata-layout:v1"]);
  assertEquals(missing.code, 125);
  assertOneErrorLine(missing, "/nonexistent/strata-layout");
}

Deno.test({
  name: "narrow permissions: every command on local images with --allow-run --allow-ffi (root)",
  ignore: !isRoot,
  async fn() {
    await using dir = await tempDir("strata-narrow-");
    const img = await images(join(String(dir), "img"));
    const cache = join(String(dir), "cache");
    await everyCommand(asRoot(NARROW), img, cache, join(String(dir), "out"));
    assertEquals(await mountsBelow(String(dir)), []);
  },
});

Deno.test({
  name: "narrow permissions: every command on local images with --allow-run --allow-ffi (user)",
  ignore: !isRoot,
  async fn() {
    const { uid, gid } = await ensureTestUser();
    await using dir = await tempDir("strata-narrow-user-");
    const img = await images(join(String(dir), "img"));
    const mine = join(String(dir), "mine");
    await Deno.mkdir(mine);
    await Deno.chown(mine, uid, gid);
    await everyCommand(await asUser(NARROW), img, join(mine, "cache"), join(mine, "out"));
  },
});

Deno.test({
  name: "narrow permissions: a registry adds --allow-net, and without it the flag is named",
  ignore: !isRoot,
  async fn() {
    await using dir = await tempDir("strata-narrow-net-");
    const img = await images(join(String(dir), "img"));
    await using reg = await Registry.start();
    await reg.push(img.layout, "demo/busybox:v1");
    const ref = `${reg.host}/demo/busybox:v1`;
    const cache = join(String(dir), "cache");
    const c = ["--cache", cache, "--tls-verify=false"];

    const denied = await asRoot(NARROW)(["pull", ref, ...c]);
    assertEquals(denied.code, 1);
    assertOneErrorLine(denied, `strata needs --allow-net for ${reg.host} (to reach registries`);
    assertStringIncludes(denied.stderr, "): run deno with --allow-net");

    const strata = asRoot([...NARROW, "--allow-net"]);
    const pulled = await strata(["pull", "-q", ref, ...c]);
    assertEquals(pulled.code, 0, pulled.stderr);
    // Pulled: it runs by name with no network at all.
    const motd = await asRoot(NARROW)(["run", "-q", "--cache", cache, ref, "cat", "/etc/motd"]);
    assertEquals([motd.code, motd.stdout], [0, MOTD], motd.stderr);

    // A registry that sends blob downloads to another host: --allow-net
    // naming only the registry is not enough, and the error names the other.
    await using front = new TokenFront(reg.host);
    const viaFront = `${front.host}/demo/busybox:v1`;
    const onlyRegistry = asRoot([...NARROW, `--allow-net=${front.host}`]);
    const r = await onlyRegistry(["pull", viaFront, "--cache", join(String(dir), "c2"), ...c]);
    assertEquals(r.code, 1);
    assertOneErrorLine(r, "(to reach registries: the registry, its token service and the hosts");
    assert(!r.stderr.includes(`for ${front.host} `), "the registry itself was allowed");
    assertMatch(r.stderr, /strata needs --allow-net for 127\.0\.0\.1:\d+ \(/);
    const all = await strata(["pull", "-q", viaFront, "--cache", join(String(dir), "c2"), ...c]);
    assertEquals(all.code, 0, all.stderr);
  },
});

Deno.test({
  name:
    "narrow permissions: credentials from an auth file, and a self-signed registry with --tls-verify=false",
  ignore: !isRoot,
  async fn() {
    await using dir = await tempDir("strata-narrow-auth-");
    const img = await images(join(String(dir), "img"));
    const strata = asRoot([...NARROW, "--allow-net"]);
    // Basic auth: the login comes from $REGISTRY_AUTH_FILE, read without --allow-env/-read.
    await using reg = await Registry.start({ user: "alice", pass: "s3cret" });
    await reg.push(img.layout, "demo/busybox:v1", { creds: "alice:s3cret" });
    const authFile = join(String(dir), "auth.json");
    await Deno.writeTextFile(
      authFile,
      JSON.stringify({ auths: { [reg.host]: { auth: btoa("alice:s3cret") } } }),
    );
    const ref = `${reg.host}/demo/busybox:v1`;
    const c = ["--cache", join(String(dir), "cache"), "--tls-verify=false", "-q"];
    const anonymous = await strata(["pull", ref, ...c]);
    assertEquals(anonymous.code, 1, "refused without the login");
    const pulled = await strata(["pull", ref, ...c], { env: { REGISTRY_AUTH_FILE: authFile } });
    assertEquals(pulled.code, 0, pulled.stderr);
    // HTTPS with a certificate nobody signed: strata runs itself again with
    // Deno's --unsafely-ignore-certificate-errors, and keeps the narrow flags.
    await using tls = await Registry.start(undefined, undefined, { tls: true });
    await tls.push(img.layout, "demo/busybox:v1");
    const tlsRef = `docker://${tls.host}/demo/busybox:v1`;
    const again = await strata([
      "pull",
      tlsRef,
      "--cache",
      join(String(dir), "c2"),
      "--tls-verify=false",
    ]);
    assertEquals(again.code, 0, again.stderr);
    assertStringIncludes(again.stderr, "TLS certificate validation is disabled for: 127.0.0.1");
  },
});

Deno.test("narrow permissions: the library throws MissingPermissionError naming --allow-net", async () => {
  await using reg = await Registry.start();
  await using dir = await tempDir("strata-narrow-lib-");
  const probe = [
    `import { openImage, MissingPermissionError } from "file://${repoRoot}/mod.ts";`,
    "try {",
    `  await openImage("docker://${reg.host}/none/such:v1", { tlsVerify: false });`,
    "} catch (e) {",
    "  console.log(JSON.stringify({",
    "    typed: e instanceof MissingPermissionError, flag: e.flag, target: e.target,",
    "    cause: e.cause?.name, message: e.message,",
    "  }));",
    "}",
  ].join("\n");
  const file = join(String(dir), "probe.ts");
  await Deno.writeTextFile(file, probe);
  const config = join(repoRoot, "deno.json");
  const r = await run(denoPath, ["run", "--quiet", "--config", config, ...NARROW, file], {
    cwd: repoRoot,
  });
  assertEquals(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assertEquals(
    [got.typed, got.flag, got.target, got.cause],
    [true, "--allow-net", reg.host, "NotCapable"],
  );
  assertStringIncludes(got.message, "run deno with --allow-net");
});

/** Runs `source` (a module importing strata by absolute URL) with `flags`, as root or as the test user. */
async function script(
  dir: string,
  source: string,
  flags: string[],
  asTestUser: boolean,
): Promise<RunResult> {
  const file = join(dir, "script.ts");
  await Deno.writeTextFile(file, source);
  await Deno.chmod(dir, 0o755);
  const argv = [
    denoPath,
    "run",
    "--quiet",
    "--config",
    join(repoRoot, "deno.json"),
    ...flags,
    file,
  ];
  if (!asTestUser) return await run(argv[0], argv.slice(1), { cwd: repoRoot });
  const { home } = await ensureTestUser();
  return await runAsUser(argv, { cwd: repoRoot, env: { DENO_DIR: join(home, ".deno") } });
}

Deno.test({
  name: "narrow permissions: the program re-executed under unshare keeps its own narrow flags",
  ignore: !isRoot,
  async fn() {
    await using dir = await tempDir("strata-narrow-reexec-");
    const source = [
      `import { ensureUserNamespace, namespaceInfo } from "file://${repoRoot}/mod.ts";`,
      "await ensureUserNamespace({ quiet: true });",
      "const info = await namespaceInfo();",
      "const state = (name: Deno.PermissionName) => Deno.permissions.querySync({ name }).state;",
      "console.log(JSON.stringify({",
      "  reexecuted: info.reexecuted, mode: info.mode,",
      '  run: state("run"), ffi: state("ffi"), read: state("read"), env: state("env"),',
      "}));",
    ].join("\n");
    for (const asTestUser of [false, true]) {
      const r = await script(String(dir), source, NARROW, asTestUser);
      assertEquals(r.code, 0, r.stderr);
      const got = JSON.parse(r.stdout);
      assertEquals(got, {
        reexecuted: true,
        mode: asTestUser ? "userns" : "root",
        run: "granted",
        ffi: "granted",
        read: "prompt",
        env: "prompt",
      }, asTestUser ? "as a user" : "as root");
    }
  },
});
