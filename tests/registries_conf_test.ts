/**
 * containers-registries.conf(5) without a network: which files are read and
 * how they merge, prefix matching, the order of pull sources, short-name
 * resolution, and bad files named with their line. The pulls themselves (a
 * real pull-through cache in front of a real registry) are in
 * registry_mirror_test.ts.
 *
 * @module
 */
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { join } from "@std/path";
import {
  BlockedRegistryError,
  findRegistry,
  loadRegistriesConf,
  parseRegistriesConf,
  prefixMatch,
  pullSources,
  RegistriesConfError,
  registriesConfSources,
  SMOL_TOML,
} from "../image/registries_conf.ts";
import { parseRegistryRef, registryRefString } from "../image/ref.ts";
import { chooseCandidates, resolveShortName, ShortNameError } from "../image/short_name.ts";
import { denoPath, repoRoot, run, tempDir } from "./_helpers.ts";

const DIGEST = `sha256:${"ab".repeat(32)}`;

/** The places a pull of `name` tries, as `[mirror ]domain/repo[:tag][@digest]`. */
function sourcesOf(conf: Awaited<ReturnType<typeof parseRegistriesConf>>, name: string): string[] {
  return pullSources(conf, parseRegistryRef(name)).map((s) =>
    `${s.mirror ? "mirror " : ""}${registryRefString(s.ref)}${s.insecure ? " insecure" : ""}`
  );
}

Deno.test("registries.conf: the man page's example pulls from the mirrors in order, then the location", async () => {
  const conf = await parseRegistriesConf(
    `unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true

[[registry]]
location = "registry.com"

[[registry.mirror]]
location = "mirror.registry.com"
`,
    "example.conf",
  );
  assertEquals(sourcesOf(conf, "example.com/foo/image:latest"), [
    "mirror example-mirror-0.local/mirror-for-foo/image:latest",
    "mirror example-mirror-1.local/mirrors/foo/image:latest insecure",
    "internal-registry-for-example.com/bar/image:latest",
  ]);
  // A mirror belongs to its own [[registry]] only.
  assertEquals(sourcesOf(conf, "registry.com/image"), [
    "mirror mirror.registry.com/image:latest",
    "registry.com/image:latest",
  ]);
  // No entry: the name itself.
  assertEquals(sourcesOf(conf, "example.com/other/image:1"), ["example.com/other/image:1"]);
  assertEquals(sourcesOf(conf, `registry.com/a/b@${DIGEST}`), [
    `mirror mirror.registry.com/a/b@${DIGEST}`,
    `registry.com/a/b@${DIGEST}`,
  ]);
});

Deno.test("registries.conf: a prefix matches whole components; the longest wins; *.host matches subdomains", async () => {
  assertEquals(prefixMatch("example.com/foo/app:1", "example.com/foo"), 15);
  assertEquals(prefixMatch("example.com/foo", "example.com/foo"), 15);
  assertEquals(prefixMatch(`example.com/foo@${DIGEST}`, "example.com/foo"), 15);
  assertEquals(prefixMatch("example.com/foobar/app", "example.com/foo"), -1);
  assertEquals(
    prefixMatch("example.com:5000/app", "example.com"),
    -1,
    "another port is another registry",
  );
  assertEquals(prefixMatch("example.com:5000/app", "example.com:5000"), 16);
  assertEquals(prefixMatch("a.example.com/x", "*.example.com"), 13);
  assertEquals(prefixMatch("a.b.example.com:5000/x", "*.example.com"), 15);
  assertEquals(prefixMatch("example.com/x", "*.example.com"), -1);
  assertEquals(prefixMatch("evilexample.com/x", "*.example.com"), -1);
  assertEquals(prefixMatch("a.example.com.evil.org/x", "*.example.com"), -1);
  assertEquals(prefixMatch("evil.org/a.example.com/x", "*.example.com"), -1);

  const conf = await parseRegistriesConf(
    `[[registry]]
prefix = "example.com"
location = "all.local"

[[registry]]
prefix = "example.com/team"
location = "team.local/t"

[[registry]]
prefix = "example.com/team/special"
location = "special.local/s"

[[registry]]
prefix = "*.example.com"
insecure = true

[[registry]]
prefix = "docker.io/library/busybox"
location = "hub-mirror.local/busybox"

[[registry]]
prefix = "docker.io/alpine"
location = "never.local"
`,
    "prefixes.conf",
  );
  assertEquals(findRegistry(conf, "example.com/team/special")?.location, "special.local/s");
  assertEquals(findRegistry(conf, "example.com/team/app")?.location, "team.local/t");
  assertEquals(findRegistry(conf, "example.com/teamwork/app")?.location, "all.local");
  assertEquals(sourcesOf(conf, "example.com/team/special:2"), ["special.local/s:2"]);
  assertEquals(sourcesOf(conf, "example.com/team/a/b:2"), ["team.local/t/a/b:2"]);
  // A wildcard without a location keeps the name and applies its settings.
  assertEquals(sourcesOf(conf, "reg.example.com/x/y:1"), ["reg.example.com/x/y:1 insecure"]);
  // Docker Hub's names are matched normalised: library/ included.
  assertEquals(sourcesOf(conf, "busybox"), ["hub-mirror.local/busybox:latest"]);
  assertEquals(sourcesOf(conf, "docker.io/library/alpine"), ["docker.io/library/alpine:latest"]);
});

Deno.test("registries.conf: mirror-by-digest-only and pull-from-mirror choose the mirrors per reference", async () => {
  const conf = await parseRegistriesConf(
    `[[registry]]
prefix = "a.example.com"
location = "upstream-a.local"
mirror-by-digest-only = true
[[registry.mirror]]
location = "mirror-a.local"

[[registry]]
prefix = "b.example.com"
location = "upstream-b.local"
[[registry.mirror]]
location = "digests.local"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.local"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "both.local"
pull-from-mirror = "all"
`,
    "mirrors.conf",
  );
  assertEquals(sourcesOf(conf, "a.example.com/x:1"), ["upstream-a.local/x:1"]);
  assertEquals(sourcesOf(conf, `a.example.com/x@${DIGEST}`), [
    `mirror mirror-a.local/x@${DIGEST}`,
    `upstream-a.local/x@${DIGEST}`,
  ]);
  assertEquals(sourcesOf(conf, "b.example.com/x:1"), [
    "mirror tags.local/x:1",
    "mirror both.local/x:1",
    "upstream-b.local/x:1",
  ]);
  assertEquals(sourcesOf(conf, `b.example.com/x@${DIGEST}`), [
    `mirror digests.local/x@${DIGEST}`,
    `mirror both.local/x@${DIGEST}`,
    `upstream-b.local/x@${DIGEST}`,
  ]);
});

Deno.test("registries.conf: a blocked prefix refuses the pull, naming the entry and its file", async () => {
  const conf = await parseRegistriesConf(
    `[[registry]]\nprefix = "example.com/evil"\nlocation = "example.com/evil"\nblocked = true\n`,
    "/etc/x/blocked.conf",
  );
  const e = assertThrows(
    () => pullSources(conf, parseRegistryRef("example.com/evil/app:1")),
    BlockedRegistryError,
  );
  assertStringIncludes(e.message, "example.com/evil/app:1");
  assertStringIncludes(e.message, "/etc/x/blocked.conf");
  assertEquals(sourcesOf(conf, "example.com/good/app:1"), ["example.com/good/app:1"]);
});

Deno.test("registries.conf: drop-ins load in name order after the main file and override it", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  const main = join(dir, "registries.conf");
  const d = join(dir, "registries.conf.d");
  await Deno.mkdir(join(d, "sub.conf"), { recursive: true });
  await Deno.writeTextFile(
    main,
    `unqualified-search-registries = ["one.example.com"]
short-name-mode = "enforcing"
[aliases]
"app" = "one.example.com/team/app"
"tool" = "one.example.com/tools/tool"
[[registry]]
prefix = "one.example.com"
location = "one-mirror.local"
[[registry]]
location = "kept.example.com"
`,
  );
  await Deno.writeTextFile(
    join(d, "20-second.conf"),
    `unqualified-search-registries = ["three.example.com"]\n[aliases]\n"tool" = ""\n`,
  );
  await Deno.writeTextFile(
    join(d, "10-first.conf"),
    `unqualified-search-registries = ["two.example.com"]
[[registry]]
prefix = "one.example.com"
location = "replaced.local"
`,
  );
  await Deno.writeTextFile(join(d, "30-not-a-conf.ignore"), "this is = not [ toml");
  await Deno.writeTextFile(join(d, "sub.conf", "40.conf"), "neither = [ is this");
  const conf = await loadRegistriesConf({ registriesConf: main, registriesConfDir: d });
  assert(conf);
  assertEquals(conf.files, [main, join(d, "10-first.conf"), join(d, "20-second.conf")]);
  assertEquals(conf.unqualifiedSearchRegistries, ["three.example.com"]);
  assertEquals(conf.searchRegistriesFile, join(d, "20-second.conf"));
  assertEquals(conf.shortNameMode, "enforcing", "kept: no drop-in sets it");
  assertEquals(findRegistry(conf, "one.example.com/x")?.location, "replaced.local");
  assertEquals(findRegistry(conf, "kept.example.com/x")?.file, main);
  assertEquals(conf.aliases.get("app")?.value, "one.example.com/team/app");
  assertEquals(conf.aliases.get("tool")?.value, undefined, 'erased by "" in a drop-in');
  // An erased alias falls back to the search list.
  assertEquals(
    resolveShortName(conf, "tool").candidates.map(registryRefString),
    ["three.example.com/tool:latest"],
  );
  // An empty list in a drop-in still replaces the one before.
  await Deno.writeTextFile(join(d, "50-empty.conf"), "unqualified-search-registries = []\n");
  const again = await loadRegistriesConf({ registriesConf: main, registriesConfDir: d });
  assertEquals(again?.unqualifiedSearchRegistries, []);
  // A named main file must exist; drop-ins alone make a configuration.
  await assertRejects(
    () => loadRegistriesConf({ registriesConf: join(dir, "missing.conf"), registriesConfDir: d }),
    RegistriesConfError,
    "missing.conf: no such file",
  );
});

Deno.test("registries.conf: which files, as containers/image finds them", async () => {
  await using tmp = await tempDir();
  const home = String(tmp);
  const saved = ["HOME", "CONTAINERS_REGISTRIES_CONF", "CONTAINERS_REGISTRIES_CONF_DIR"].map(
    (k) => [k, Deno.env.get(k)] as const,
  );
  try {
    Deno.env.set("HOME", home);
    Deno.env.delete("CONTAINERS_REGISTRIES_CONF");
    Deno.env.delete("CONTAINERS_REGISTRIES_CONF_DIR");
    const userDir = join(home, ".config/containers/registries.conf.d");
    assertEquals(registriesConfSources(), {
      main: "/etc/containers/registries.conf",
      explicit: false,
      dirs: ["/etc/containers/registries.conf.d", userDir],
    });
    // The user's own file replaces the system's, and then only the user's drop-ins count.
    await Deno.mkdir(join(home, ".config/containers"), { recursive: true });
    await Deno.writeTextFile(join(home, ".config/containers/registries.conf"), "");
    assertEquals(registriesConfSources(), {
      main: join(home, ".config/containers/registries.conf"),
      explicit: false,
      dirs: [userDir],
    });
    // Naming the file (as podman's variable or skopeo's option) keeps both drop-in directories.
    Deno.env.set("CONTAINERS_REGISTRIES_CONF", "/x/env.conf");
    assertEquals(registriesConfSources(), {
      main: "/x/env.conf",
      explicit: true,
      dirs: ["/etc/containers/registries.conf.d", userDir],
    });
    assertEquals(registriesConfSources({ registriesConf: "/x/flag.conf" }).main, "/x/flag.conf");
    Deno.env.set("CONTAINERS_REGISTRIES_CONF_DIR", "/x/d");
    assertEquals(registriesConfSources().dirs, ["/x/d"]);
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
});

Deno.test("registries.conf: a bad file is one line naming the file, the line and the problem", async () => {
  const cases: [string, number | undefined, string][] = [
    ['a = "ok"\nb = [1,\n2\nc = 3\n', 4, "not valid TOML"],
    ["x = 1\nx = 2\n", 2, "not valid TOML"],
    [
      'short-name-mode = "strict"\n',
      1,
      'short-name-mode must be enforcing, permissive or disabled, not "strict"',
    ],
    ['unqualified-search-registries = "docker.io"\n', 1, "must be an array of strings"],
    [
      'unqualified-search-registries = ["docker.io", 5]\n',
      1,
      "unqualified-search-registries[1] must be a string",
    ],
    ['unqualified-search-registries = ["https://docker.io"]\n', 1, "not a registry host"],
    [
      '[[registry]]\nlocation = "a.example.com"\n\n[[registry]]\nprefix = "b.example.com/app:1"\nlocation = "c.example.com"\n',
      5,
      "must not hold a tag",
    ],
    [
      `[[registry]]\nprefix = "b.example.com/app@${DIGEST}"\nlocation = "c.example.com"\n`,
      2,
      "must not hold a digest",
    ],
    ['[[registry]]\nprefix = "example.*.com"\n', 2, "does not start with a registry host"],
    ['[[registry]]\nprefix = "*.example.com/foo"\n', 2, "wildcard prefix"],
    ['[[registry]]\nprefix = "app/team"\nlocation = "x.example.com"\n', 2, "would never match"],
    ['[[registry]]\nprefix = "example.com"\n', 2, "needs a location"],
    ["[[registry]]\ninsecure = true\n", 1, "needs a location or a prefix"],
    [
      '[[registry]]\nlocation = "a.example.com"\ninsecure = "yes"\n',
      3,
      'insecure must be true or false, not the string "yes"',
    ],
    ['[[registry]]\nlocation = "https://a.example.com"\n', 2, "URL scheme"],
    [
      '[[registry]]\nlocation = "a.example.com"\npull-from-mirror = "all"\n',
      3,
      "belongs in a [[registry.mirror]]",
    ],
    [
      '[[registry]]\nlocation = "a.example.com"\n[[registry.mirror]]\nlocation = "m.example.com"\n[[registry.mirror]]\nlocation = "n.example.com"\npull-from-mirror = "sometimes"\n',
      7,
      "pull-from-mirror must be all, digest-only or tag-only",
    ],
    [
      '[[registry]]\nlocation = "a.example.com"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m.example.com"\npull-from-mirror = "tag-only"\n',
      6,
      "mirror-by-digest-only",
    ],
    [
      '[[registry]]\nlocation = "a.example.com"\n[[registry.mirror]]\ninsecure = true\n',
      3,
      "needs a location",
    ],
    [
      '[[registry]]\nlocation = "a.example.com"\n[[registry]]\nprefix = "a.example.com/x"\nlocation = "a.example.com"\ninsecure = true\n',
      6,
      "different insecure",
    ],
    ['registry = "a.example.com"\n', 1, "array of tables"],
    ['[aliases]\n"busybox" = "docker.io/library/busybox:1.36"\n', 2, "must not hold a tag"],
    ['[aliases]\n"busybox" = "busybox"\n', 2, "fully qualified"],
    [
      '[aliases]\n"docker.io/busybox" = "docker.io/library/busybox"\n',
      2,
      "short name, without a registry",
    ],
    ['[aliases]\n"busybox:1" = "docker.io/library/busybox"\n', 2, "must not hold a tag"],
    ['[aliases]\n"ok" = "quay.io/x/ok"\n"bad" = 3\n', 3, 'alias "bad" must be a string'],
    [
      'unqualified-search-registries = ["b.example.com"]\n[registries.search]\nregistries = ["a.example.com"]\n',
      1,
      "mixes the version 1 format",
    ],
  ];
  for (const [text, line, problem] of cases) {
    const e = await assertRejects(
      () => parseRegistriesConf(text, "/tmp/bad.conf"),
      RegistriesConfError,
    );
    assertStringIncludes(e.message, problem, text);
    assertEquals(e.line, line, `${e.message}\n--- for:\n${text}`);
    assert(e.message.startsWith(`/tmp/bad.conf${line ? `:${line}` : ""}: `), e.message);
    assert(!e.message.includes("\n"), "one line");
  }
  // Version 1 is for the main file only.
  await assertRejects(
    () =>
      parseRegistriesConf('[registries.search]\nregistries = ["a.example.com"]\n', "d.conf", {
        dropIn: true,
      }),
    RegistriesConfError,
    "drop-in file must use the version 2 format",
  );
});

Deno.test("registries.conf: version 1 files are read as version 2; unknown keys are warned about, not fatal", async () => {
  const v1 = await parseRegistriesConf(
    `[registries.search]
registries = ['registry1.example.com', 'registry2.example.com']
[registries.insecure]
registries = ['registry3.example.com']
[registries.block]
registries = ['registry.untrusted.example.com']
`,
    "v1.conf",
  );
  assertEquals(v1.unqualifiedSearchRegistries, ["registry1.example.com", "registry2.example.com"]);
  assertEquals(sourcesOf(v1, "registry3.example.com/x:1"), ["registry3.example.com/x:1 insecure"]);
  assertThrows(
    () => pullSources(v1, parseRegistryRef("registry.untrusted.example.com/x")),
    BlockedRegistryError,
  );

  const w = await parseRegistriesConf(
    'color = "blue"\n[[registry]]\nlocation = "a.example.com"\nmirror-by-digest-onyl = true\ncredential-helpers = []\n',
    "w.conf",
  );
  assertEquals(w.warnings.length, 3, String(w.warnings));
  assertStringIncludes(w.warnings[0], 'w.conf:1: unknown key "color"');
  assertStringIncludes(
    w.warnings[1],
    'w.conf:4: unknown key "mirror-by-digest-onyl" in [[registry]]',
  );
  const helpers = await parseRegistriesConf(
    'credential-helpers = ["pass", "containers-auth.json"]\n',
    "h.conf",
  );
  assertStringIncludes(helpers.warnings.join(" "), '"pass" are not run by strata');
});

Deno.test("registries.conf: the host's own files (Debian's containers-image package) parse", async () => {
  const files = ["/etc/containers/registries.conf"];
  try {
    for (const e of Deno.readDirSync("/etc/containers/registries.conf.d")) {
      if (e.name.endsWith(".conf")) files.push(`/etc/containers/registries.conf.d/${e.name}`);
    }
  } catch { /* no drop-ins here */ }
  let read = 0;
  for (const f of files) {
    let text: string;
    try {
      text = await Deno.readTextFile(f);
    } catch {
      continue;
    }
    read++;
    const conf = await parseRegistriesConf(text, f, { dropIn: f.includes(".conf.d/") });
    if (f.endsWith("shortnames.conf")) {
      assertEquals(conf.aliases.get("busybox")?.value, "docker.io/library/busybox");
    }
  }
  if (read === 0) console.warn("no /etc/containers/registries.conf here: nothing to check");
});

Deno.test("short names: an alias, else the search list in order; tags and digests carried over", async () => {
  const conf = await parseRegistriesConf(
    `unqualified-search-registries = ["quay.example.com", "docker.io"]
[aliases]
"app" = "registry.example.com/team/app"
"hub" = "docker.io/alpine"
`,
    "/etc/containers/registries.conf",
  );
  const names = (input: string) => resolveShortName(conf, input).candidates.map(registryRefString);
  assertEquals(names("app"), ["registry.example.com/team/app:latest"]);
  assertEquals(names("app:v2"), ["registry.example.com/team/app:v2"]);
  assertEquals(names(`app@${DIGEST}`), [`registry.example.com/team/app@${DIGEST}`]);
  assertEquals(names("hub"), ["docker.io/library/alpine:latest"]);
  assertEquals(names("busybox:1.36"), [
    "quay.example.com/busybox:1.36",
    "docker.io/library/busybox:1.36",
  ]);
  assertEquals(names("team/tool"), [
    "quay.example.com/team/tool:latest",
    "docker.io/team/tool:latest",
  ]);
  assertEquals(resolveShortName(conf, "app").how, "alias");
  assertEquals(resolveShortName(undefined, "busybox").candidates.map(registryRefString), [
    "docker.io/library/busybox:latest",
  ]);

  // short-name-mode, with several candidates.
  const modes = async (mode: string, choose?: () => Promise<string | undefined>) => {
    const c = await parseRegistriesConf(
      `unqualified-search-registries = ["a.example.com", "b.example.com"]\nshort-name-mode = "${mode}"\n`,
      "m.conf",
    );
    return (await chooseCandidates(c, resolveShortName(c, "x"), choose)).map(registryRefString);
  };
  assertEquals(await modes("disabled"), ["a.example.com/x:latest", "b.example.com/x:latest"]);
  assertEquals(await modes("permissive"), ["a.example.com/x:latest", "b.example.com/x:latest"]);
  const e = await assertRejects(() => modes("enforcing"), ShortNameError);
  assertStringIncludes(e.message, "ambiguous");
  assertStringIncludes(e.message, "no terminal");
  assertEquals(await modes("enforcing", () => Promise.resolve("b.example.com/x:latest")), [
    "b.example.com/x:latest",
  ]);
  assertEquals(await modes("disabled", () => Promise.resolve("b.example.com/x:latest")), [
    "a.example.com/x:latest",
    "b.example.com/x:latest",
  ], "disabled never asks");

  const none = await parseRegistriesConf(
    '[aliases]\n"app" = "registry.example.com/app"\n',
    "/etc/r.conf",
  );
  const err = assertThrows(() => resolveShortName(none, "busybox"), ShortNameError);
  assertStringIncludes(err.message, "no unqualified-search-registries in /etc/r.conf");
});

Deno.test("registries.conf: the parsed configuration is kept in the cache while the files stay the same", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  const main = join(dir, "registries.conf");
  const d = join(dir, "d");
  await Deno.mkdir(d);
  const cacheDir = join(dir, "cache");
  await Deno.mkdir(cacheDir);
  const opts = { registriesConf: main, registriesConfDir: d, cacheDir };
  await Deno.writeTextFile(main, 'unqualified-search-registries = ["one.example.com"]\n');
  assertEquals((await loadRegistriesConf(opts))?.unqualifiedSearchRegistries, ["one.example.com"]);
  const kept = JSON.parse(await Deno.readTextFile(join(cacheDir, "registries-conf.json")));
  assertEquals(kept.conf.unqualifiedSearchRegistries, ["one.example.com"]);
  // A new process reads the kept copy instead of the files (edited here to tell them apart).
  kept.conf.unqualifiedSearchRegistries = ["from-the-cache.example.com"];
  await Deno.writeTextFile(join(cacheDir, "registries-conf.json"), JSON.stringify(kept));
  const inAnotherProcess = async () => {
    const code = `const { loadRegistriesConf } = await import(${
      JSON.stringify(new URL("../image/registries_conf.ts", import.meta.url).href)
    }); console.log((await loadRegistriesConf(${
      JSON.stringify(opts)
    }))?.unqualifiedSearchRegistries.join());`;
    const r = await run(denoPath, ["eval", "--config", `${repoRoot}/deno.json`, code]);
    assertEquals(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  assertEquals(await inAnotherProcess(), "from-the-cache.example.com");
  // Any change to a file (an edit, a new drop-in) is read again.
  await Deno.writeTextFile(main, 'unqualified-search-registries = ["two.example.com"]\n');
  assertEquals((await loadRegistriesConf(opts))?.unqualifiedSearchRegistries, ["two.example.com"]);
  await Deno.writeTextFile(main, 'unqualified-search-registries = ["2.example.com"]\n');
  assertEquals(await inAnotherProcess(), "2.example.com");
  await Deno.writeTextFile(
    join(d, "10.conf"),
    'unqualified-search-registries = ["three.example.com"]\n',
  );
  assertEquals((await loadRegistriesConf(opts))?.unqualifiedSearchRegistries, [
    "three.example.com",
  ]);
  // A bad file is never kept: it fails every time.
  await Deno.writeTextFile(join(d, "20.conf"), "short-name-mode = 1\n");
  for (let i = 0; i < 2; i++) {
    await assertRejects(() => loadRegistriesConf(opts), RegistriesConfError, "20.conf:1");
  }
});

Deno.test("registries.conf: the TOML parser is the one deno.json pins, out of the start-up graph", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(join(repoRoot, "deno.json")));
  assertEquals(denoJson.imports["smol-toml"], SMOL_TOML);
  // The module graph Deno reads when the CLI starts holds no npm package.
  const info = await run(denoPath, ["info", "--json", join(repoRoot, "cli.ts")]);
  assertEquals(info.code, 0, info.stderr);
  const graph = JSON.parse(info.stdout) as { modules: { specifier: string }[] };
  assert(graph.modules.length > 20, "the whole graph was listed");
  assertEquals(graph.modules.map((m) => m.specifier).filter((s) => s.startsWith("npm:")), []);
});
