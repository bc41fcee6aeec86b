/**
 * Archives, the cache's crash safety and integrity, a full
 * disk, and the command line's answers to common mistakes. Every case runs
 * the CLI as a subprocess against a real cache and checks what is on disk
 * and the exit status.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { digestOf } from "../image/blob.ts";
import { MediaType } from "../image/types.ts";
import { gzip, TarWriter } from "../layer/tar_writer.ts";
import {
  denoPath,
  isRoot,
  repoRoot,
  runAsUser,
  runCli,
  type RunResult,
  tempDir,
} from "./_helpers.ts";
import { APPLETS, busyboxBytes, GROUP, PASSWD } from "./_bundle_helpers.ts";
import { buildOciLayout } from "../cli/demo_image.ts";

const CLI = join(repoRoot, "cli.ts");
const enc = new TextEncoder();

/** The CLI, killed after 60 s (see _helpers.ts runCli). */
const strata = (args: string[], env: Record<string, string> = {}): Promise<RunResult> =>
  runCli(args, { env });

/** Asserts one `strata: ` error line on stderr (progress lines aside) and no stack trace. */
function assertOneErrorLine(r: RunResult, includes: string[]): string {
  const lines = r.stderr.split("\n").filter((l) => l.trim() && !/^layer \d+\/\d+ /.test(l));
  assertEquals(lines.length, 1, `one error line on stderr, got:\n${r.stderr}`);
  assertMatch(lines[0], /^strata: /);
  assert(!/^\s+at /m.test(r.stderr), `no stack trace:\n${r.stderr}`);
  for (const s of includes) assertStringIncludes(lines[0], s);
  return lines[0];
}

/** Names under `dir` (none when it is missing). */
function names(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------
// prune while a pull is extracting

/**
 * A registry on 127.0.0.1 serving one image whose last layer's blob is held
 * back until `release()` is called.
 */
function holdingRegistry(layers: Uint8Array[]) {
  const blobs = new Map<string, Uint8Array<ArrayBuffer>>();
  const descs = layers.map((tar) => {
    const blob = gzip(tar);
    const digest = digestOf(blob);
    blobs.set(digest, blob);
    return { mediaType: MediaType.OciLayerGzip, digest, size: blob.length };
  });
  const config = enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: layers.map((t) => digestOf(t)) },
  }));
  blobs.set(digestOf(config), new Uint8Array(config));
  const manifest = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length },
    layers: descs,
  }));
  const held = descs.at(-1)!.digest;
  let release!: () => void;
  const released = new Promise<void>((r) => release = r);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/v2/") return new Response("{}");
    if (path.endsWith("/manifests/v1") || path.endsWith(`/manifests/${digestOf(manifest)}`)) {
      return new Response(req.method === "HEAD" ? null : manifest, {
        headers: {
          "content-type": MediaType.OciManifest,
          "docker-content-digest": digestOf(manifest),
          "content-length": String(manifest.length),
        },
      });
    }
    const m = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path);
    const blob = m && blobs.get(m[1]);
    if (!blob) return new Response("not found", { status: 404 });
    if (m![1] === held) await released;
    return new Response(blob, { headers: { "content-length": String(blob.length) } });
  });
  const host = `127.0.0.1:${server.addr.port}`;
  return {
    ref: `docker://${host}/held/image:v1`,
    release,
    [Symbol.asyncDispose]: async () => {
      release();
      await server.shutdown();
    },
  };
}

Deno.test("cache: prune during a pull keeps the layers the pull has extracted so far", async () => {
  await using tmp = await tempDir("strata-cache-test-");
  const cache = join(String(tmp), "cache");
  const base = new TarWriter({ defaultMtime: 1 }).directory("etc/").file("etc/a", "a").bytes();
  // Writes below a directory of the lower layer: its extraction reads the lower.
  const top = new TarWriter({ defaultMtime: 2 }).file("etc/b", "b").bytes();
  await using reg = holdingRegistry([base, top]);
  const pull = strata(["pull", "-q", "--tls-verify=false", "--cache", cache, reg.ref]);
  const baseDir = join(cache, "layers", digestOf(base).replace(":", "-"));
  for (let i = 0; i < 300 && !names(baseDir).includes("fs"); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert(names(baseDir).includes("fs"), "the base layer was published while the top one waits");
  const prune = await strata(["prune", "--cache", cache]);
  assertEquals(prune.code, 0, prune.stderr);
  assertStringIncludes(prune.stderr, "used by container pull-");
  reg.release();
  const r = await pull;
  assertEquals(r.code, 0, r.stderr);
  assert(names(baseDir).includes("fs"), `prune removed a layer the pull needs:\n${prune.stdout}`);
  const v = await strata(["verify", "--cache", cache]);
  assertEquals(v.code, 0, v.stderr);
});

// ---------------------------------------------------------------------------
// A command the image cannot run

/** An OCI layout of a busybox image (`/etc/motd` a plain 0644 file), tag `v1`. */
async function busyboxLayout(dir: string): Promise<string> {
  const t = new TarWriter({ defaultMtime: 1_700_000_000 });
  for (const d of ["bin/", "etc/", "tmp/", "proc/", "sys/", "dev/"]) {
    t.directory(d, { mode: 0o755 });
  }
  t.file("bin/busybox", busyboxBytes(), { mode: 0o755 });
  for (const a of APPLETS) t.symlink(`bin/${a}`, "busybox");
  t.file("etc/passwd", PASSWD, { mode: 0o644 }).file("etc/group", GROUP, { mode: 0o644 });
  t.file("etc/motd", "#!/bin/sh\necho hi\n", { mode: 0o644 });
  return (await buildOciLayout(dir, { layers: [{ tar: t.bytes() }], tag: "v1" })).ref;
}

Deno.test({
  name:
    "cache: run of a command not in the image exits 127, of one not executable 126 (docker, podman)",
  ignore: !isRoot,
  fn: async (t) => {
    await using tmp = await tempDir("strata-cache-test-");
    const cache = join(String(tmp), "cache");
    const ref = await busyboxLayout(join(String(tmp), "image"));
    for (
      const [argv, code] of [
        [["nosuchcmd"], 127],
        [["/no/such/file"], 127],
        [["/etc/motd"], 126], // mode 0644
        [["/etc"], 126], // a directory
        [["sh", "-c", "exit 3"], 3], // the container's own status stays its own
      ] as const
    ) {
      await t.step(argv.join(" "), async () => {
        const r = await strata(["run", "--cache", cache, ref, ...argv]);
        assertEquals(r.code, code, r.stderr);
        if (code === 3) return;
        const line = r.stderr.split("\n").filter((l) =>
          l.startsWith("strata: ") && !/warning/.test(l)
        );
        assertEquals(line.length, 1, r.stderr);
        assertStringIncludes(line[0], argv[0]);
        assert(!/^\s+at /m.test(r.stderr), r.stderr);
      });
    }
  },
});

// ---------------------------------------------------------------------------
// docker-archive manifest.json entries of the wrong shape

/** A docker-archive at `path` whose manifest.json is `manifest`, with a good config and layer. */
async function dockerArchiveWith(path: string, manifest: (e: Record<string, unknown>) => unknown) {
  const layer = new TarWriter({ defaultMtime: 1 }).file("etc/a", "a").bytes();
  const config = enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [digestOf(layer)] },
  }));
  const entry = { Config: "config.json", RepoTags: ["app:v1"], Layers: ["l/layer.tar"] };
  const tar = new TarWriter({ defaultMtime: 1 })
    .file("manifest.json", JSON.stringify(manifest(entry)))
    .file("config.json", config)
    .file("l/layer.tar", layer);
  await Deno.writeFile(path, tar.bytes());
  return path;
}

Deno.test("cache: docker-archive manifest.json entries of the wrong type are named, not a TypeError", async (t) => {
  await using tmp = await tempDir("strata-cache-test-");
  const cache = join(String(tmp), "cache");
  const cases: [string, (e: Record<string, unknown>) => unknown, string, string[]][] = [
    ["a null entry", () => [null], "", ["manifest.json", "entry 0"]],
    ["Layers holding numbers", (e) => [{ ...e, Layers: [1] }], "", ["manifest.json", "Layers"]],
    ["Config an object", (e) => [{ ...e, Config: {} }], "", ["manifest.json", "Config"]],
    ["RepoTags a string, image named", (e) => [{ ...e, RepoTags: "app:v1" }], ":app:v1", [
      "manifest.json",
      "RepoTags",
    ]],
    ["a second entry broken", (e) => [e, { ...e, Layers: "l/layer.tar" }], ":app:v1", [
      "manifest.json",
      "entry 1",
    ]],
  ];
  for (const [name, manifest, select, includes] of cases) {
    await t.step(name, async () => {
      const path = await dockerArchiveWith(join(String(tmp), `${name}.tar`), manifest);
      const r = await strata(["pull", "--cache", cache, `docker-archive:${path}${select}`]);
      assertEquals(r.code, 1, r.stderr);
      const line = assertOneErrorLine(r, includes);
      assert(!/is not a function|Cannot read properties/.test(line), line);
      assertEquals(names(join(cache, "layers")), []);
    });
  }
  // The good archive still pulls.
  const good = await dockerArchiveWith(join(String(tmp), "good.tar"), (e) => [e]);
  const r = await strata(["pull", "-q", "--cache", cache, `docker-archive:${good}`]);
  assertEquals(r.code, 0, r.stderr);
});

// ---------------------------------------------------------------------------
// layer.json: the mapping and ids a layer's owners are read by

Deno.test("cache: a layer.json whose mapping or ids are of the wrong shape is named; verify removes it", async (t) => {
  await using tmp = await tempDir("strata-cache-test-");
  const layout = await buildOciLayout(join(String(tmp), "image"), {
    layers: [{ tar: new TarWriter({ defaultMtime: 1 }).file("a", "a").bytes() }],
    tag: "v1",
  });
  const cache = join(String(tmp), "cache");
  const cases: [string, (rec: Record<string, unknown>) => unknown][] = [
    ["no idmap", ({ idmap: _, ...rec }) => rec],
    ["an idmap of strings", (rec) => ({ ...rec, idmap: { uid: [["0", "0", "1"]], gid: [] } })],
    ["ids an array", (rec) => ({ ...rec, ids: [1, 2] })],
    ["an id run of count 0", (rec) => ({ ...rec, ids: { uid: [[0, 0]], gid: [[0, 1]] } })],
    ["not an object", () => null],
  ];
  for (const [name, damage] of cases) {
    await t.step(name, async () => {
      const pulled = await strata(["pull", "-q", "--cache", cache, layout.ref]);
      assertEquals(pulled.code, 0, pulled.stderr);
      const [dir] = names(join(cache, "layers"));
      const file = join(cache, "layers", dir, "layer.json");
      const text = JSON.stringify(damage(JSON.parse(await Deno.readTextFile(file))));
      await Deno.writeTextFile(file, text);
      // Under the mapping that extracted it, a run trusts the layer's marker
      // file and reads no layer.json (as a warm run read none before);
      // verify finds the damage.
      const marker = names(join(cache, "layers", dir)).find((n) => n.startsWith("idmap-"))!;
      const trusted = await strata(["pull", "-q", "--cache", cache, layout.ref]);
      assertEquals(trusted.code, 0, trusted.stderr);
      // Without the marker (an older strata's layer, or read by another
      // mapping) layer.json is read, and its damage named.
      await Deno.remove(join(cache, "layers", dir, marker));
      const r = await strata(["pull", "-q", "--cache", cache, layout.ref]);
      assertEquals(r.code, 1, r.stderr);
      const line = assertOneErrorLine(r, [file]);
      assert(!/iterable|Cannot read properties/.test(line), line);
      assertEquals(await Deno.readTextFile(file), text, "left as it was");
      const v = await strata(["verify", "--cache", cache]);
      assertEquals(v.code, 1, v.stderr);
      assertStringIncludes(v.stdout, `damaged ${layout.layers[0].diffID}`);
      assertEquals(names(join(cache, "layers")), [], "removed, to be extracted again");
    });
  }
});

Deno.test({
  name: "cache: a disk too full for the first layer leaves no layer and no temp dir",
  ignore: !isRoot,
  fn: async () => {
    await using tmp = await tempDir("strata-cache-test-");
    const fs = join(String(tmp), "fs");
    await Deno.mkdir(fs);
    const m = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", fs],
    })
      .output();
    assertEquals(m.code, 0, new TextDecoder().decode(m.stderr));
    // Fill it (tmpfs pages): the cache's directories fit, the layer's data does not.
    await Deno.writeFile(join(fs, "filler"), new Uint8Array(64 << 10)).catch(() => {});
    const layout = await buildOciLayout(join(String(tmp), "image"), {
      layers: [{ tar: new TarWriter({ defaultMtime: 1 }).file("a", "a").bytes() }],
      tag: "v1",
    });
    const cache = join(fs, "cache");
    for (let i = 0; i < 2; i++) {
      const r = await strata(["pull", "-q", "--cache", cache, layout.ref]);
      assertEquals(r.code, 1, r.stderr);
      assertOneErrorLine(r, ["No space left on device"]);
    }
    assertEquals(names(join(cache, "layers")), []);
    assertEquals(names(join(cache, "tmp")), []);
  },
});

// ---------------------------------------------------------------------------
// Damaged image store records

Deno.test("cache: verify finds and removes a damaged image name record; ls and prune work again", async (t) => {
  await using tmp = await tempDir("strata-cache-test-");
  const layout = await buildOciLayout(join(String(tmp), "image"), {
    layers: [{ tar: new TarWriter({ defaultMtime: 1 }).file("a", "a").bytes() }],
    tag: "v1",
  });
  const damages: [string, (text: string) => string, string][] = [
    ["truncated", (s) => s.slice(0, 20), "not valid JSON"],
    ["empty", () => "", "not valid JSON"],
    [
      "fields of the wrong type",
      (s) => JSON.stringify({ ...JSON.parse(s), digest: [1], size: "x" }),
      "digest",
    ],
  ];
  for (const [name, damage, why] of damages) {
    await t.step(name, async () => {
      const cache = join(String(tmp), name);
      const pulled = await strata(["pull", "-q", "--cache", cache, layout.ref]);
      assertEquals(pulled.code, 0, pulled.stderr);
      const refs = join(cache, "images", "refs");
      const [file] = names(refs);
      const text = await Deno.readTextFile(join(refs, file));
      await Deno.writeTextFile(join(refs, file), damage(text));
      // Before: ls fails with one line naming the record (no TypeError), prune removes nothing.
      const ls = await strata(["ls", "--cache", cache]);
      assertEquals(ls.code, 1, ls.stderr);
      assert(!/toFixed|Cannot read properties/.test(assertOneErrorLine(ls, [file])), ls.stderr);
      const prune = await strata(["prune", "--cache", cache]);
      assertEquals(names(join(cache, "layers")).length, 1, prune.stderr);
      // verify names the record, removes it, and says damaged.
      const v = await strata(["verify", "--cache", cache]);
      assertEquals(v.code, 1, v.stderr);
      assertStringIncludes(v.stdout, file);
      assertStringIncludes(v.stderr, why);
      assertEquals(names(refs), []);
      for (const args of [["verify"], ["ls"], ["pull", "-q", layout.ref], ["verify"]]) {
        const r = await strata([args[0], "--cache", cache, ...args.slice(1)]);
        assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      }
      assertEquals(names(refs), [file], "the pull saved the name again");
    });
  }
});

// ---------------------------------------------------------------------------
// A compressed archive's decompressed copy after kill -9

Deno.test("cache: a compressed archive's decompressed copy is reclaimed after kill -9", async () => {
  await using tmp = await tempDir("strata-cache-test-");
  const dir = String(tmp);
  const cache = join(dir, "cache");
  const tmpdir = join(dir, "tmpdir");
  await Deno.mkdir(tmpdir);
  // 96 MiB of zeros: a small .tar.gz whose decompressed copy and layer take a while.
  const layer = new TarWriter({ defaultMtime: 1 }).file("zeros", new Uint8Array(96 << 20)).bytes();
  const config = enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [digestOf(layer)] },
  }));
  const archive = new TarWriter({ defaultMtime: 1 })
    .file(
      "manifest.json",
      JSON.stringify([{ Config: "c.json", RepoTags: ["z:v1"], Layers: ["l.tar"] }]),
    )
    .file("c.json", config)
    .file("l.tar", layer)
    .bytes();
  const path = join(dir, "z.tar.gz");
  await Deno.writeFile(path, gzip(archive, 1));
  const copies = () =>
    [
      ...names(tmpdir),
      ...names(join(cache, "tmp")).flatMap((d) => names(join(cache, "tmp", d))),
    ].filter((n) => n.endsWith(".tar"));
  const env: Record<string, string> = { ...Deno.env.toObject(), TMPDIR: tmpdir };
  delete env.STRATA_CACHE;
  const child = new Deno.Command("setsid", {
    args: [denoPath, "run", "-A", CLI, "pull", "-q", "--cache", cache, `docker-archive:${path}`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
    env,
    clearEnv: true,
  }).spawn();
  try {
    for (let i = 0; i < 3000 && copies().length === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert(copies().length > 0, "the archive was decompressed somewhere");
  } finally {
    // The whole session: the CLI re-executes itself under unshare.
    await new Deno.Command("kill", { args: ["-9", "--", `-${child.pid}`] }).output();
    await child.status;
  }
  const r = await strata(["prune", "--cache", cache], { TMPDIR: tmpdir });
  assertEquals(r.code, 0, r.stderr);
  assertEquals(copies(), [], "no decompressed copy left behind");
});

// ---------------------------------------------------------------------------
// --cache naming a file

Deno.test("cache: --cache naming a file says it is not a directory", async () => {
  await using tmp = await tempDir("strata-cache-test-");
  const file = join(String(tmp), "file");
  await Deno.writeTextFile(file, "x");
  for (
    const [args, code] of [[["pull", "oci:/nonexistent:v1"], 1], [["ls"], 1], [
      ["verify"],
      1,
    ]] as const
  ) {
    const r = await strata([...args, "--cache", file]);
    assertEquals(r.code, code, r.stderr);
    const line = assertOneErrorLine(r, [file, "not a directory"]);
    assert(!/File exists/.test(line), line);
  }
  assertEquals(await Deno.readTextFile(file), "x");
});

Deno.test({
  name: "cache: another user's cache is named as such, not as an EACCES deep inside it",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir("strata-cache-test-");
    const cache = join(String(tmp), "root-cache");
    await Deno.mkdir(cache, { mode: 0o700 }); // root's, as /var/lib/strata
    for (const args of [["ls"], ["pull", "oci:/nonexistent:v1"]]) {
      const r = await runAsUser([denoPath, "run", "-A", CLI, ...args, "--cache", cache]);
      assertEquals(r.code, 1, r.stderr);
      assertOneErrorLine(r, [cache, "belongs to another user", "--cache"]);
    }
  },
});
