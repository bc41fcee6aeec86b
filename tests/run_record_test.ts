/**
 * The short way of `strata run` (cli/cmd_run_warm.ts) and the run records it
 * reads: a run that made its bundle the long way records it, the next run
 * takes the short way and writes the same config.json, bundle.json and mount
 * options the long way writes, and anything not as recorded (the layout's
 * tag, the index entry, a layer, a layer's id-map marker, the record itself,
 * the name, the code, the environment, the runtime) sends the run the long
 * way, which records it again. Its parser is checked against cli/args.ts on
 * many command lines; its cleanup against kill -9 and prune.
 *
 * A run took the short way when it left the record file as it was: the long
 * way writes it again (a new inode) on every run that can be recorded.
 *
 * @module
 */
import { assert, assertEquals, assertNotEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { buildDemoImage, DEMO_EXPECTED } from "../cli/demo_image.ts";
import { parseArgs } from "../cli/args.ts";
import { COMMANDS, GLOBAL_OPTIONS, TOP_OPTIONS } from "../cli/spec.ts";
import {
  fastArgs,
  isRunRecord,
  readRunRecord,
  runRecordPath,
  SPEC_ARGS,
  SPEC_ROOTFS,
} from "../cli/cmd_run_warm.ts";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  mountsBelow,
  repoRoot,
  run,
  runAsUser,
  runCli,
  sh,
  tempDir,
} from "./_helpers.ts";

const skip = !isRoot;

/** A directory holding a `runc` that copies what it is given before it runs the real one. */
async function capturingRuntime(dir: string): Promise<{ bin: string; out: string }> {
  const bin = join(dir, "bin");
  const out = join(dir, "captured");
  await Deno.mkdir(bin);
  await Deno.mkdir(out);
  const real = (await run("sh", ["-c", "command -v runc"])).stdout.trim();
  await Deno.writeTextFile(
    join(bin, "runc"),
    `#!/bin/sh
b=""; prev=""
for a in "$@"; do [ "$prev" = "--bundle" ] && b="$a"; prev="$a"; done
if [ -n "$b" ] && [ -n "$STRATA_TEST_CAPTURE" ]; then
  n=$(ls "$STRATA_TEST_CAPTURE" | wc -l)
  mkdir "$STRATA_TEST_CAPTURE/$n"
  cp "$b/config.json" "$STRATA_TEST_CAPTURE/$n/config.json"
  cp "$b/../bundle.json" "$STRATA_TEST_CAPTURE/$n/bundle.json"
  grep " $b/rootfs " /proc/self/mountinfo > "$STRATA_TEST_CAPTURE/$n/mountinfo" || true
fi
exec ${real} "$@"
`,
    { mode: 0o755 },
  );
  return { bin, out };
}

interface Captured {
  config: string;
  bundle: Record<string, unknown>;
  mount: string;
}

/** What the capturing runtime saw on its `n`th run, the run's own id and bundle path made generic. */
async function captured(out: string, n: number): Promise<Captured> {
  const dir = join(out, String(n));
  const bundle = JSON.parse(await Deno.readTextFile(join(dir, "bundle.json")));
  const generic = (s: string) => s.replaceAll(bundle.id, "ID");
  const mountinfo = await Deno.readTextFile(join(dir, "mountinfo"));
  return {
    config: generic(await Deno.readTextFile(join(dir, "config.json"))),
    bundle: { ...bundle, id: "ID", pid: 0, created: "" },
    // Mount options after the " - " separator: type, source, super options.
    mount: generic(mountinfo.split(" - ")[1] ?? ""),
  };
}

/** The inode of the record of `ref` (undefined: none): a new one means the long way ran. */
function recordInode(cache: string, ref: string): number | undefined {
  try {
    return Deno.statSync(runRecordPath(cache, ref)!).ino ?? undefined;
  } catch {
    return undefined;
  }
}

interface Fixture {
  cache: string;
  layout: string;
  ref: string;
  env: Record<string, string>;
  out: string;
  strata(args: string[], env?: Record<string, string>): ReturnType<typeof runCli>;
}

async function fixture(dir: string): Promise<Fixture> {
  const layout = join(dir, "layout");
  const built = await buildDemoImage(layout);
  const cache = join(dir, "cache");
  const rt = await capturingRuntime(dir);
  const env = { PATH: `${rt.bin}:${Deno.env.get("PATH")}`, STRATA_TEST_CAPTURE: rt.out };
  return {
    cache,
    layout,
    ref: built.ref,
    env,
    out: rt.out,
    strata: (args, more = {}) => runCli(args, { env: { ...env, ...more } }),
  };
}

Deno.test({
  name: "run record: a warm run takes the short way and writes what the long way writes",
  ignore: skip,
  fn: async () => {
    await using d = await tempDir("strata-record-");
    const f = await fixture(String(d));
    const c = ["--cache", f.cache];
    const long = await f.strata(["run", ...c, f.ref, "--", "sh", "-c", "echo $HOME; id -u"]);
    assertEquals(long.code, 0, long.stderr);
    const inode = recordInode(f.cache, f.ref);
    assert(inode !== undefined, "the long way recorded the run");
    if ((await Array.fromAsync(Deno.readDir(f.out))).length === 0) {
      console.warn("crun runs on this host: the capturing runc was not used, nothing to compare");
      return;
    }
    const short = await f.strata(["run", ...c, "-q", f.ref, "--", "sh", "-c", "echo $HOME; id -u"]);
    assertEquals([short.code, short.stdout, short.stderr], [0, long.stdout, ""]);
    assertEquals(recordInode(f.cache, f.ref), inode, "the record was used, not written again");
    assertEquals(await captured(f.out, 1), await captured(f.out, 0));

    // The image's own command (the record's), and a status passed through.
    const own = await f.strata(["run", ...c, f.ref]);
    assertEquals(own.code, 0, own.stderr);
    for (const line of Object.values(DEMO_EXPECTED)) assertStringIncludes(own.stdout, line);
    assertStringIncludes(own.stdout, "user: app (uid 1000, gid 1000), cwd: /home/app");
    const seven = await f.strata(["run", ...c, f.ref, "sh", "-c", "exit 7"]);
    assertEquals(seven.code, 7);
    assertEquals(recordInode(f.cache, f.ref), inode);
    await Deno.remove(runRecordPath(f.cache, f.ref)!);
    const ownLong = await f.strata(["run", ...c, f.ref]);
    assertEquals(ownLong.stdout, own.stdout);
    assertEquals(await captured(f.out, 2), await captured(f.out, 4));

    // A command the container cannot run: 127 and the long way's error line.
    await Deno.remove(runRecordPath(f.cache, f.ref)!);
    const missingLong = await f.strata(["run", ...c, f.ref, "/nonexistent"]);
    const inode2 = recordInode(f.cache, f.ref);
    const missing = await f.strata(["run", ...c, f.ref, "/nonexistent"]);
    assertEquals(recordInode(f.cache, f.ref), inode2);
    assertEquals([missing.code, missingLong.code], [127, 127]);
    assertEquals(missing.stderr, missingLong.stderr);

    // Nothing left behind by either way.
    assertEquals(await mountsBelow(f.cache), []);
    assertEquals([...Deno.readDirSync(join(f.cache, "containers"))], []);
  },
});

Deno.test({
  name: "run record: anything not as recorded takes the long way, which records it again",
  ignore: skip,
  fn: async () => {
    await using d = await tempDir("strata-record-");
    const f = await fixture(String(d));
    const c = ["--cache", f.cache];
    const greet = ["sh", "-c", 'echo "$GREETING"'];
    /** Runs `args` twice: the first must take the long way (a new record), the second the short. */
    const longThenShort = async (why: string, args: string[], env: Record<string, string> = {}) => {
      const before = recordInode(f.cache, f.ref);
      const first = await f.strata(["run", ...c, f.ref, ...args], env);
      const after = recordInode(f.cache, f.ref);
      assertNotEquals(after, before, `${why}: the long way wrote the record again`);
      const again = await f.strata(["run", ...c, f.ref, ...args], env);
      assertEquals(recordInode(f.cache, f.ref), after, `${why}: then the short way`);
      assertEquals(again.stdout, first.stdout, why);
      return first;
    };
    await longThenShort("first run", greet);

    // The tag moved to another image: the new one runs.
    await buildDemoImage(f.layout, { config: { Env: ["GREETING=moved"] } });
    const moved = await longThenShort("tag moved", greet);
    assertEquals(moved.stdout, "moved\n");

    // A layer directory gone (as after prune): extracted again.
    const rec = (await readRunRecord(runRecordPath(f.cache, f.ref)!))!;
    const top = rec.layers.at(-1)!;
    for (const name of top.dirs) {
      await Deno.remove(join(f.cache, "layers", name), { recursive: true }).catch(() => {});
    }
    assertEquals((await longThenShort("layer removed", greet)).stdout, "moved\n");

    // A layer without this mapping's marker: the long way reads its layer.json.
    const marked = rec.layers[0].dirs.map((n) => join(f.cache, "layers", n)).find((p) => {
      try {
        return Deno.statSync(join(p, `idmap-${rec.mapKey}`)).isFile;
      } catch {
        return false;
      }
    })!;
    await Deno.remove(join(marked, `idmap-${rec.mapKey}`));
    await longThenShort("marker removed", greet);

    // The record damaged, or changed by hand: not used.
    const file = runRecordPath(f.cache, f.ref)!;
    await Deno.writeTextFile(
      file,
      (await Deno.readTextFile(file)).replace("GREETING=moved", "GREETING=EVIL"),
    );
    assertEquals((await longThenShort("record changed", greet)).stdout, "moved\n");
    await Deno.writeTextFile(file, "{ not json");
    await longThenShort("record damaged", greet);

    // The environment the mounts and the runtime are found by.
    // A forced mount backend is the long way's alone.
    for (let i = 0; i < 2; i++) {
      const before = recordInode(f.cache, f.ref);
      const r = await f.strata(["run", ...c, f.ref, ...greet], { STRATA_MOUNT_BACKEND: "mount2" });
      assertEquals(r.stdout, "moved\n");
      assertNotEquals(recordInode(f.cache, f.ref), before, "mount backend forced");
    }
    await longThenShort("mount backend no longer forced", greet);
    await longThenShort("another PATH", greet, { PATH: Deno.env.get("PATH")! });
    await longThenShort("the first PATH again", greet);

    // An option the record does not cover: the long way, record untouched.
    const inode = recordInode(f.cache, f.ref);
    const env = await f.strata(["run", ...c, "-e", "GREETING=given", f.ref, ...greet]);
    assertEquals(env.stdout, "given\n");
    assertNotEquals(recordInode(f.cache, f.ref), inode);

    // The name removed: rm removes its record, the next run saves the name again.
    const rm = await f.strata(["rm", ...c, f.ref]);
    assertEquals(rm.code, 0, rm.stderr);
    assertEquals(recordInode(f.cache, f.ref), undefined);
    await longThenShort("name removed", greet);

    // The code the record was built by: a file of bundle/ touched.
    const spec = join(repoRoot, "bundle", "spec.ts");
    const st = Deno.statSync(spec);
    try {
      Deno.utimeSync(spec, st.atime!, new Date(st.mtime!.getTime() + 1000));
      await longThenShort("code changed", greet);
    } finally {
      Deno.utimeSync(spec, st.atime!, st.mtime!);
    }

    // An index.json entry whose size no longer matches its manifest: the long
    // way falls back to the stored image, and says so, on every run.
    const indexPath = join(f.layout, "index.json");
    const index = JSON.parse(await Deno.readTextFile(indexPath));
    index.manifests[0].size += 1;
    await Deno.writeTextFile(indexPath, JSON.stringify(index));
    for (let i = 0; i < 2; i++) {
      const r = await f.strata(["run", ...c, f.ref, ...greet]);
      assertEquals(r.stdout, "moved\n");
      assertStringIncludes(r.stderr, "using the stored image");
    }
    assertEquals(await mountsBelow(f.cache), []);
  },
});

Deno.test({
  name: "run record: kill -9 of a warm run leaves no mount; prune keeps a warm run's layers",
  ignore: skip,
  fn: async () => {
    await using d = await tempDir("strata-record-");
    const f = await fixture(String(d));
    const c = ["--cache", f.cache];
    assertEquals((await f.strata(["run", ...c, f.ref, "true"])).code, 0);
    const inode = recordInode(f.cache, f.ref);
    // A warm run of a container that waits; prune while it runs.
    const argv = [Deno.execPath(), "run", "-A", join(repoRoot, "cli.ts"), "run", ...c, f.ref];
    const slow = new Deno.Command(argv[0], {
      args: [...argv.slice(1), "sh", "-c", "sleep 2; cat /etc/motd"],
      env: f.env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await new Promise((r) => setTimeout(r, 700));
    const prune = await f.strata(["prune", ...c]);
    assertEquals(prune.code, 0, prune.stderr);
    const out = await slow.output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertStringIncludes(new TextDecoder().decode(out.stdout), "hello from layer 2");
    assertEquals(recordInode(f.cache, f.ref), inode, "it was the short way");

    // kill -9 while the container runs: its mounts were in the thread's
    // private namespace and go with it (runc, strata's child, outlives it
    // until the container exits); prune then reclaims the container.
    const victim = new Deno.Command(argv[0], {
      args: [...argv.slice(1), "sleep", "2"],
      env: f.env,
      stdout: "null",
      stderr: "null",
    }).spawn();
    await new Promise((r) => setTimeout(r, 800));
    victim.kill("SIGKILL");
    await victim.status;
    assertEquals(await mountsBelow(f.cache), []);
    await new Promise((r) => setTimeout(r, 2500));
    const after = await f.strata(["prune", ...c]);
    assertEquals(after.code, 0, after.stderr);
    assertEquals([...Deno.readDirSync(join(f.cache, "containers"))].map((e) => e.name), []);
    assertEquals(await mountsBelow(f.cache), []);
  },
});

Deno.test({
  name: "run record: an unprivileged warm run takes the short way, as the long way runs it",
  ignore: skip,
  fn: async () => {
    const { uid, gid } = await ensureTestUser();
    await using d = await tempDir("strata-record-");
    const dir = String(d);
    const built = await buildDemoImage(join(dir, "layout"));
    const rt = await capturingRuntime(dir);
    const home = join(dir, "home");
    await Deno.mkdir(home);
    await sh("chmod", ["-R", "a+rX", dir]);
    await sh("chown", [`${uid}:${gid}`, home, rt.out]);
    const cache = join(home, "cache");
    const env = { PATH: `${rt.bin}:${Deno.env.get("PATH")}`, STRATA_TEST_CAPTURE: rt.out };
    const strata = (args: string[]) =>
      runAsUser(
        [denoPath, "run", "-A", join(repoRoot, "cli.ts"), "run", "--cache", cache, ...args],
        {
          env,
        },
      );
    // The image runs as app (uid 1000), who owns /home/app: with subordinate ids, 1000 inside.
    const cmd = ["sh", "-c", "id -u; stat -c %u /home/app; cat /etc/motd"];
    const long = await strata([built.ref, ...cmd]);
    assertEquals(long.code, 0, long.stderr);
    assertEquals(long.stdout, "1000\n1000\nhello from layer 2 (it overrides layer 1)\n");
    const inode = recordInode(cache, built.ref);
    assert(inode !== undefined, "the long way recorded the run");
    const short = await strata(["-q", built.ref, ...cmd]);
    assertEquals([short.code, short.stdout, short.stderr], [0, long.stdout, ""]);
    assertEquals(recordInode(cache, built.ref), inode, "the short way");
    if ((await Array.fromAsync(Deno.readDir(rt.out))).length === 2) {
      assertEquals(await captured(rt.out, 1), await captured(rt.out, 0));
    }
    assertEquals((await strata([built.ref, "sh", "-c", "exit 7"])).code, 7);
    assertEquals(recordInode(cache, built.ref), inode);

    // A record saying another mapping (its digest made again): the namespace
    // made does not map what it says, so nothing runs the short way.
    const { recordFile } = await import("../cli/run_records.ts");
    const file = runRecordPath(cache, built.ref)!;
    const rec = JSON.parse((await Deno.readTextFile(file)).split("\n")[0]);
    rec.userns.uidMap = rec.userns.uidMap.replace(/^0 \d+/, "0 12345");
    await Deno.writeTextFile(file, recordFile(rec));
    const other = await strata([built.ref, ...cmd]);
    assertEquals([other.code, other.stdout], [0, long.stdout], other.stderr);
    assertNotEquals(recordInode(cache, built.ref), inode, "the long way, which recorded it again");
    assertEquals(await mountsBelow(cache), []);
    assertEquals([...Deno.readDirSync(join(cache, "containers"))], []);
  },
});

Deno.test({
  name:
    "run record: with --allow-run --allow-ffi alone a warm run takes the short way, root and rootless",
  ignore: skip,
  fn: async () => {
    const { uid, gid } = await ensureTestUser();
    await using d = await tempDir("strata-record-narrow-");
    const dir = String(d);
    const built = await buildDemoImage(join(dir, "layout"));
    const home = join(dir, "home");
    await Deno.mkdir(home);
    await sh("chmod", ["-R", "a+rX", dir]);
    await sh("chown", [`${uid}:${gid}`, home]);
    const cmd = ["sh", "-c", "id -u; cat /etc/motd"];
    for (const who of ["root", "user"] as const) {
      const cache = join(who === "root" ? dir : home, `cache-${who}`);
      const argv = [
        denoPath,
        "run",
        "--allow-run",
        "--allow-ffi",
        join(repoRoot, "cli.ts"),
        "run",
        "-q",
        "--cache",
        cache,
        built.ref,
        ...cmd,
      ];
      const strata = () => who === "root" ? run(argv[0], argv.slice(1)) : runAsUser(argv, {});
      const long = await strata();
      assertEquals(long.code, 0, `${who}: ${long.stderr}`);
      assertEquals(long.stdout, "1000\nhello from layer 2 (it overrides layer 1)\n");
      const inode = recordInode(cache, built.ref);
      assert(inode !== undefined, `${who}: the long way recorded the run`);
      const short = await strata();
      assertEquals([short.code, short.stdout, short.stderr], [0, long.stdout, ""], who);
      assertEquals(recordInode(cache, built.ref), inode, `${who}: the short way`);
      assertEquals(await mountsBelow(cache), []);
    }
  },
});

Deno.test("run record: the short way's parser reads command lines as cli/args.ts does", () => {
  const globals = [...GLOBAL_OPTIONS, ...TOP_OPTIONS];
  const words = [
    "run",
    "--cache",
    "/c",
    "--cache=/d",
    "-q",
    "--quiet",
    "-i",
    "--interactive",
    "--",
    "-",
    "img",
    "oci:/x:t",
    "ls",
    "-l",
    "-e",
    "A=1",
    "--debug",
    "-qi",
    "--quiet=false",
  ];
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
  let compared = 0;
  for (let i = 0; i < 4000; i++) {
    const args = ["run", ...Array.from({ length: rand(7) }, () => words[rand(words.length)])];
    const fast = fastArgs(args);
    let parsed: ReturnType<typeof parseArgs> | undefined;
    try {
      parsed = parseArgs(args, COMMANDS, globals);
    } catch {
      parsed = undefined;
    }
    if (!fast) continue;
    assert(parsed, `fastArgs took ${JSON.stringify(args)}, which parseArgs refuses`);
    const keys = Object.keys(parsed.options).filter((k) => k !== "cache");
    assert(
      keys.every((k) => k === "quiet" || k === "interactive"),
      `${JSON.stringify(args)}: options ${keys}`,
    );
    assertEquals(
      { cache: fast.cache, quiet: fast.quiet, ref: fast.ref, argv: fast.argv },
      {
        cache: parsed.options.cache as string | undefined,
        quiet: parsed.options.quiet === true,
        ref: parsed.positionals[0],
        argv: parsed.argv,
      },
      JSON.stringify(args),
    );
    compared++;
  }
  assert(compared > 300, `only ${compared} command lines compared`);
  assertEquals(fastArgs(["run", "--cache", "/c", "img", "-q", "ls", "-q"]), {
    cache: "/c",
    quiet: true,
    ref: "img",
    argv: ["ls", "-q"],
  });
  assertEquals(fastArgs(["run", "-e", "A=1", "img"]), undefined);
});

Deno.test("run record: file names, shapes and checksums", async () => {
  const b64 = (s: string) =>
    btoa(String.fromCharCode(...new TextEncoder().encode(s)))
      .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  for (const ref of ["oci:/srv/app:v1", "a", "ab", "abc", "é€😀", "?>>~~~", "x".repeat(170)]) {
    assertEquals(runRecordPath("/c", ref), `/c/images/runs/${b64(ref)}.json`);
  }
  assertEquals(runRecordPath("/c", "x".repeat(181)), undefined);
  assertEquals(JSON.stringify(SPEC_ROOTFS).includes("\\u0000"), true);
  assertEquals(JSON.stringify([SPEC_ARGS]).includes("\\u0000"), true);

  await using d = await tempDir("strata-record-");
  const rec = {
    format: 2,
    ref: "oci:/x:t",
    name: "oci:/x:t",
    refFile: "/c/images/refs/a.json",
    lookup: "sha256:" + "a".repeat(64),
    lookupSize: 1,
    lookupMediaType: "application/vnd.oci.image.manifest.v1+json",
    digest: "sha256:" + "a".repeat(64),
    layers: [{
      diffID: "sha256:" + "b".repeat(64),
      dirs: ["sha256-" + "b".repeat(64), "sha256-" + "b".repeat(64) + "@" + "c".repeat(64)],
    }],
    mapKey: "0123456789abcdef",
    entrypoint: [],
    args: ["/bin/true"],
    spec: JSON.stringify({ root: { path: SPEC_ROOTFS }, process: { args: [SPEC_ARGS] } }),
    runtime: { name: "runc", path: "/usr/sbin/runc", crun: null },
    stateDir: "/run/strata/runc",
    host: "h",
    code: { root: "file:///x/" },
  };
  assert(isRunRecord(rec));
  for (const bad of ["../../etc", ".hidden", "sha256-" + "b".repeat(64) + "/x", ""]) {
    assert(!isRunRecord({ ...rec, layers: [{ ...rec.layers[0], dirs: [bad, bad] }] }), bad);
  }
  assert(!isRunRecord({ ...rec, format: 1 }));
  assert(!isRunRecord({ ...rec, runtime: { name: "runc", path: "runc" } }));
  const { recordFile } = await import("../cli/run_records.ts");
  const path = join(String(d), "r.json");
  await Deno.writeTextFile(path, recordFile(rec));
  assertEquals(await readRunRecord(path), rec);
  const text = await Deno.readTextFile(path);
  await Deno.writeTextFile(path, text.replace("/bin/true", "/bin/fals"));
  assertEquals(await readRunRecord(path), undefined, "changed: its digest no longer matches");
  await Deno.writeTextFile(path, text + "\n");
  assertEquals(await readRunRecord(path), undefined, "anything after the digest");
});

Deno.test({
  name: "run record: verify removes a damaged or wrong record, keeps a good one",
  ignore: skip,
  fn: async () => {
    await using d = await tempDir("strata-record-");
    const f = await fixture(String(d));
    const c = ["--cache", f.cache];
    assertEquals((await f.strata(["run", ...c, f.ref, "true"])).code, 0);
    const ok = await f.strata(["verify", ...c]);
    assertEquals(ok.code, 0, ok.stderr);
    const file = runRecordPath(f.cache, f.ref)!;
    const good = await Deno.readTextFile(file);
    // Changed by hand, digest and all: verify still finds what it says wrong.
    const { recordFile } = await import("../cli/run_records.ts");
    const rec = JSON.parse(good.split("\n")[0]);
    rec.layers[0].dirs[0] = "sha256-" + "0".repeat(64);
    await Deno.writeTextFile(file, recordFile(rec));
    const wrong = await f.strata(["verify", ...c]);
    assertEquals(wrong.code, 1);
    assertStringIncludes(wrong.stderr, "run record images/runs/");
    assertStringIncludes(wrong.stdout, "damaged images/runs/");
    assertEquals(recordInode(f.cache, f.ref), undefined);
    // Damaged on disk.
    await Deno.writeTextFile(file, good.replace("runc", "rUnc"));
    const damaged = await f.strata(["verify", ...c]);
    assertEquals(damaged.code, 1);
    assertStringIncludes(damaged.stderr, "checksum");
    assertEquals(recordInode(f.cache, f.ref), undefined);
  },
});
