/**
 * registries.conf as a fleet uses it, with real registries on loopback: an
 * upstream `docker-registry`, a second one in Distribution's pull-through
 * proxy mode in front of it, and a registries.conf that remaps a made-up
 * prefix (`fleet.example.com/apps`) to the upstream and lists a dead mirror
 * and the proxy as its mirrors. Everything runs through the CLI, each
 * command with its own temp registries.conf (`--registries-conf` or
 * `$CONTAINERS_REGISTRIES_CONF`); nothing under /etc/containers is read.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { buildDemoImage, DEMO_EXPECTED } from "../cli/demo_image.ts";
import { denoPath, repoRoot, runCli, type RunResult, tempDir } from "./_helpers.ts";
import { Registry } from "./_registry.ts";

function assertOneErrorLine(r: RunResult, ...includes: string[]): string {
  assertEquals(r.code, 1, r.stderr);
  const lines = r.stderr.split("\n").filter((l) => l.trim());
  assertEquals(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  assertMatch(lines[0], /^strata: /);
  for (const s of includes) assertStringIncludes(lines[0], s);
  return lines[0];
}

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/**
 * Whether `path` is there within `ms`: Distribution's proxy commits a blob to
 * its own storage after it has streamed it to the client, so the pull may
 * finish a moment before the proxy holds the blob.
 */
async function appears(path: string, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (await exists(path)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return await exists(path);
}

/** A port that accepts connections and closes them at once, counting them: a broken mirror. */
function brokenMirror(): { host: string; connections: () => number } & Disposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let n = 0;
  (async () => {
    try {
      for await (const c of listener) {
        n++;
        c.close();
      }
    } catch { /* closed */ }
  })();
  return {
    host: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    connections: () => n,
    [Symbol.dispose]: () => listener.close(),
  };
}

Deno.test("mirrors: a fleet pulls through a pull-through cache, by the name it typed", async (t) => {
  await using tmp = await tempDir("strata-mirror-");
  const dir = String(tmp);
  const img = await buildDemoImage(join(dir, "layout"));
  await using upstream = await Registry.start(undefined, dir);
  await upstream.push(img.ref, "team/app:v1");
  await using proxy = await Registry.start(undefined, dir, { proxy: `http://${upstream.host}` });
  using broken = brokenMirror();
  const conf = join(dir, "registries.conf");
  await Deno.writeTextFile(
    conf,
    `[[registry]]
prefix = "fleet.example.com/apps"
location = "${upstream.host}/team"
insecure = true

[[registry.mirror]]
location = "${broken.host}/team"
insecure = true

[[registry.mirror]]
location = "${proxy.host}/team"
insecure = true
`,
  );
  let n = 0;
  const cache = () => join(dir, `cache-${n++}`);
  const name = "fleet.example.com/apps/app:v1";
  let digest = "";

  await t.step(
    "the pull goes through the mirror after the broken one; the name stays",
    async () => {
      const c = cache();
      const r = await runCli(["pull", "--registries-conf", conf, "--cache", c, name]);
      assertEquals(r.code, 0, r.stderr);
      digest = r.stdout.trim();
      assertMatch(digest, /^sha256:[0-9a-f]{64}$/);
      assert(broken.connections() > 0, "the broken mirror was tried first");
      const ls = await runCli(["ls", "--json", "--cache", c]);
      const images = JSON.parse(ls.stdout).images;
      assertEquals(images.map((i: { name: string }) => i.name), [name]);
      assertEquals(images[0].source, `docker://${name}`);
      // The proxy fetched every layer from the upstream and keeps it: the pull came through it.
      for (const l of images[0].layers) {
        assert(await appears(proxy.blobData(l.digest)), `the proxy holds ${l.digest}`);
      }
      // By that name it runs (offline, from the cache) and is removed.
      const ran = await runCli(["run", "-q", "--cache", c, name, "cat", "/etc/motd"]);
      assertEquals(ran.stdout, `${DEMO_EXPECTED.motd}\n`, ran.stderr);
      const rm = await runCli(["rm", "-q", "--cache", c, name]);
      assertEquals(rm.stdout, `${name}\n`, rm.stderr);
    },
  );

  await t.step("an image no source has: one line naming every place tried and why", async () => {
    const r = await runCli([
      "pull",
      "--registries-conf",
      conf,
      "--cache",
      cache(),
      "fleet.example.com/apps/nothere:v1",
    ]);
    const line = assertOneErrorLine(
      r,
      `mirror ${broken.host}/team/nothere:v1`,
      `mirror ${proxy.host}/team/nothere:v1`,
      `${upstream.host}/team/nothere:v1`,
      "MANIFEST_UNKNOWN",
    );
    assert(
      line.indexOf(broken.host) < line.indexOf(proxy.host) &&
        line.lastIndexOf(proxy.host) < line.lastIndexOf(upstream.host),
      `in the order tried: ${line}`,
    );
  });

  await t.step('pull-from-mirror = "digest-only" skips the mirror for a tag', async () => {
    await using fresh = await Registry.start(undefined, dir, { proxy: `http://${upstream.host}` });
    const digestOnly = join(dir, "digest-only.conf");
    await Deno.writeTextFile(
      digestOnly,
      `[[registry]]
prefix = "fleet.example.com/apps"
location = "${upstream.host}/team"
insecure = true
[[registry.mirror]]
location = "${fresh.host}/team"
insecure = true
pull-from-mirror = "digest-only"
`,
    );
    const c = cache();
    const byTag = await runCli(["pull", "--registries-conf", digestOnly, "--cache", c, name]);
    assertEquals(byTag.code, 0, byTag.stderr);
    const layers = JSON.parse((await runCli(["ls", "--json", "--cache", c])).stdout).images[0]
      .layers as { digest: string }[];
    await new Promise((r) => setTimeout(r, 500)); // what the proxy would still be committing
    for (const l of layers) {
      assert(!await exists(fresh.blobData(l.digest)), "not through the mirror");
    }
    const pinned = `fleet.example.com/apps/app@${digest}`;
    const byDigest = await runCli([
      "pull",
      "--registries-conf",
      digestOnly,
      "--cache",
      cache(),
      pinned,
    ]);
    assertEquals(byDigest.code, 0, byDigest.stderr);
    assertEquals(byDigest.stdout.trim(), digest);
    for (const l of layers) assert(await appears(fresh.blobData(l.digest)), "through the mirror");
  });

  await t.step("blocked = true refuses the pull with one line naming the file", async () => {
    const blocked = join(dir, "blocked.conf");
    await Deno.writeTextFile(
      blocked,
      `[[registry]]
prefix = "fleet.example.com/apps/app"
location = "${upstream.host}/team/app"
insecure = true
blocked = true
`,
    );
    const r = await runCli(["pull", "--cache", cache(), name], {
      env: { CONTAINERS_REGISTRIES_CONF: blocked },
    });
    assertOneErrorLine(r, "blocked", blocked, "fleet.example.com/apps/app");
  });

  await t.step("the upstream stopped: the mirror alone still serves the image", async () => {
    await upstream[Symbol.asyncDispose]();
    for (const ref of [name, `fleet.example.com/apps/app@${digest}`]) {
      const c = cache();
      const r = await runCli(["pull", "--registries-conf", conf, "--cache", c, ref]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(r.stdout.trim(), digest);
      const ran = await runCli(["run", "-q", "--cache", c, ref, "cat", "/etc/motd"]);
      assertEquals(ran.stdout, `${DEMO_EXPECTED.motd}\n`, ran.stderr);
    }
  });
});

Deno.test("mirrors: insecure is per registry, and --tls-verify overrides it both ways", async () => {
  await using tmp = await tempDir("strata-mirror-");
  const dir = String(tmp);
  const img = await buildDemoImage(join(dir, "layout"));
  await using plain = await Registry.start(undefined, dir);
  await plain.push(img.ref, "team/app:v1");
  await using tls = await Registry.start(undefined, dir, { tls: true });
  await tls.push(img.ref, "team/app:v1");
  const port = plain.host.split(":")[1];
  const conf = join(dir, "registries.conf");
  // The same plain-HTTP registry under two names: one marked insecure, one not.
  await Deno.writeTextFile(
    conf,
    `[[registry]]
prefix = "plain.example.com"
location = "${plain.host}/team"
insecure = true

[[registry]]
prefix = "strict.example.com"
location = "localhost:${port}/team"

[[registry]]
prefix = "selfsigned.example.com"
location = "${tls.host}/team"
insecure = true
`,
  );
  let n = 0;
  const pull = (ref: string, ...flags: string[]) =>
    runCli(["pull", "--registries-conf", conf, "--cache", join(dir, `c${n++}`), ...flags, ref]);

  const ok = await pull("plain.example.com/app:v1");
  assertEquals(ok.code, 0, ok.stderr);
  assertOneErrorLine(await pull("strict.example.com/app:v1"), "--tls-verify=false");
  const forced = await pull("strict.example.com/app:v1", "--tls-verify=false");
  assertEquals(forced.code, 0, forced.stderr);
  assertOneErrorLine(await pull("plain.example.com/app:v1", "--tls-verify"), "--tls-verify=false");
  // Unverified TLS for that host alone: strata runs itself again with Deno's flag for it.
  const selfSigned = await pull("selfsigned.example.com/app:v1");
  assertEquals(selfSigned.code, 0, selfSigned.stderr);
  assertStringIncludes(selfSigned.stderr, "TLS certificate validation is disabled for: 127.0.0.1");
  assertEquals(selfSigned.stdout.trim(), ok.stdout.trim());
  // The same registry without insecure: its certificate is checked, and refused.
  assertOneErrorLine(await pull(`${tls.host}/team/app:v1`), "certificate");
});

Deno.test("mirrors: credentials go by the registry contacted; --creds stay with the name's registry", async () => {
  await using tmp = await tempDir("strata-mirror-");
  const dir = String(tmp);
  const img = await buildDemoImage(join(dir, "layout"));
  const login = { user: "fleet", pass: "s3cret" };
  await using mirror = await Registry.start(login, dir);
  await mirror.push(img.ref, "team/app:v1", { creds: `${login.user}:${login.pass}` });
  const conf = join(dir, "registries.conf");
  // The location is a port where nothing listens: only the mirror can serve.
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadHost = `127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close();
  await Deno.writeTextFile(
    conf,
    `[[registry]]
prefix = "private.example.com"
location = "${deadHost}"
insecure = true
[[registry.mirror]]
location = "${mirror.host}"
insecure = true
`,
  );
  const auth = join(dir, "auth.json");
  await Deno.writeTextFile(
    auth,
    JSON.stringify({ auths: { [mirror.host]: { auth: btoa(`${login.user}:${login.pass}`) } } }),
  );
  let n = 0;
  const pull = (env: Record<string, string>, ...flags: string[]) =>
    runCli(
      [
        "pull",
        "--registries-conf",
        conf,
        "--cache",
        join(dir, `c${n++}`),
        ...flags,
        "private.example.com/team/app:v1",
      ],
      { env },
    );
  const noAuth = join(dir, "none.json");
  await Deno.writeTextFile(noAuth, "{}");
  // Without the mirror's login it refuses; the error names both places.
  assertOneErrorLine(await pull({ REGISTRY_AUTH_FILE: noAuth }), mirror.host, deadHost);
  const ok = await pull({ REGISTRY_AUTH_FILE: auth });
  assertEquals(ok.code, 0, ok.stderr);
  // --creds are for private.example.com: not sent to the mirror, whose own login is used.
  const withCreds = await pull({ REGISTRY_AUTH_FILE: auth }, "--creds", "someone:else");
  assertEquals(withCreds.code, 0, withCreds.stderr);
});

Deno.test("short names: the search list in order, an alias, and enforcing mode without a terminal", async () => {
  await using tmp = await tempDir("strata-mirror-");
  const dir = String(tmp);
  const img = await buildDemoImage(join(dir, "layout"));
  await using empty = await Registry.start(undefined, dir);
  await using reg = await Registry.start(undefined, dir);
  await reg.push(img.ref, "team/app:v1");
  const conf = join(dir, "registries.conf");
  const write = (mode: string) =>
    Deno.writeTextFile(
      conf,
      `unqualified-search-registries = ["${empty.host}", "${reg.host}"]
short-name-mode = "${mode}"
[aliases]
"fleetapp" = "${reg.host}/team/app"
[[registry]]
location = "${empty.host}"
insecure = true
[[registry]]
location = "${reg.host}"
insecure = true
`,
    );
  await write("permissive");
  const c = join(dir, "cache");
  const cli = (...args: string[]) =>
    runCli(["--cache", c, ...args], { env: { CONTAINERS_REGISTRIES_CONF: conf } });

  const pulled = await cli("pull", "team/app:v1");
  assertEquals(pulled.code, 0, pulled.stderr);
  assertStringIncludes(
    pulled.stderr,
    `resolved "team/app:v1" to "${reg.host}/team/app:v1" (unqualified-search-registries in ${conf})`,
  );
  const ls = await cli("ls", "--json");
  assertEquals(JSON.parse(ls.stdout).images.map((i: { name: string }) => i.name), [
    `${reg.host}/team/app:v1`,
  ]);
  // Run by the short name: found in the store under what it resolved to; nothing pulled or said.
  const ran = await cli("run", "team/app:v1", "cat", "/etc/motd");
  assertEquals(ran.stdout, `${DEMO_EXPECTED.motd}\n`, ran.stderr);
  assert(!ran.stderr.includes("resolved"), ran.stderr);

  const aliased = await cli("pull", "fleetapp:v1");
  assertEquals(aliased.code, 0, aliased.stderr);
  assertStringIncludes(
    aliased.stderr,
    `resolved "fleetapp:v1" to "${reg.host}/team/app:v1" (an alias in ${conf})`,
  );
  const rm = await cli("rm", "-q", "team/app:v1");
  assertEquals(rm.stdout, `${reg.host}/team/app:v1\n`, rm.stderr);

  await write("enforcing");
  assertOneErrorLine(await cli("pull", "team/app:v1"), "ambiguous", "no terminal", conf);
  // An alias is never ambiguous.
  assertEquals((await cli("pull", "fleetapp:v1")).code, 0);
  // On a terminal (script(1) gives it one), enforcing asks which one is meant.
  const line = [denoPath, "run", "-A", `${repoRoot}/cli.ts`, "pull", "--cache", join(dir, "tty")];
  const child = new Deno.Command("script", {
    args: ["-qec", [...line, "--registries-conf", conf, "team/app:v1"].join(" "), "/dev/null"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const input = child.stdin.getWriter();
  await input.write(new TextEncoder().encode("2\n")); // held by the terminal until read
  await input.close();
  const asked = await child.output();
  const screen = new TextDecoder().decode(asked.stdout);
  assertEquals(asked.code, 0, screen);
  assertStringIncludes(screen, `1) ${empty.host}/team/app:v1`);
  assertStringIncludes(screen, `2) ${reg.host}/team/app:v1`);
  assertStringIncludes(screen, `resolved "team/app:v1" to "${reg.host}/team/app:v1"`);
});

Deno.test("registries.conf: a malformed file is named with its line and nothing falls back", async () => {
  await using tmp = await tempDir("strata-mirror-");
  const dir = String(tmp);
  const img = await buildDemoImage(join(dir, "layout"));
  await using reg = await Registry.start(undefined, dir);
  await reg.push(img.ref, "team/app:v1");
  const c = join(dir, "cache");
  const ref = `${reg.host}/team/app:v1`;
  const good = await runCli(["pull", "--tls-verify=false", "--cache", c, ref]);
  assertEquals(good.code, 0, good.stderr);
  const bad = join(dir, "bad.conf");
  await Deno.writeTextFile(
    bad,
    `[[registry]]\nprefix = "${reg.host}"\nlocation = "${reg.host}"\ninsecure = yes\n`,
  );
  for (const how of [["--registries-conf", bad], []]) {
    const r = await runCli(
      ["pull", "--tls-verify=false", "--cache", join(dir, "c2"), ...how, ref],
      {
        env: how.length ? {} : { CONTAINERS_REGISTRIES_CONF: bad },
      },
    );
    assertOneErrorLine(r, `${bad}:4: not valid TOML`);
  }
  const typed = join(dir, "typed.conf");
  await Deno.writeTextFile(
    typed,
    `unqualified-search-registries = ["${reg.host}"]\nshort-name-mode = "strict"\n`,
  );
  assertOneErrorLine(
    await runCli(["pull", "--registries-conf", typed, "--cache", join(dir, "c3"), "team/app:v1"]),
    `${typed}:2: short-name-mode must be enforcing, permissive or disabled`,
  );
  // A named file that is missing is an error too, not "no file".
  assertOneErrorLine(
    await runCli([
      "pull",
      "--registries-conf",
      join(dir, "nope.conf"),
      "--cache",
      join(dir, "c4"),
      ref,
    ]),
    "nope.conf: no such file",
  );
  // A cached image run by its full name needs no registries.conf: the bad one is not even read.
  const warm = await runCli([
    "run",
    "-q",
    "--registries-conf",
    bad,
    "--cache",
    c,
    ref,
    "cat",
    "/etc/motd",
  ]);
  assertEquals(warm.stdout, `${DEMO_EXPECTED.motd}\n`, warm.stderr);
});
