/**
 * The store without root: an unprivileged user (with and without subordinate
 * ids) re-executes into a user namespace with ensureUserNamespace(), then
 * resolves and mounts an image; and root's cache read from a user namespace
 * that root made with the identity mapping. Each case is a small Deno script
 * run as that user.
 */
import { join } from "@std/path";
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { CachingLayerResolver } from "../overlay/resolver.ts";
import { mountsBelow } from "../sys/mount.ts";
import { sampleImage, snapshotTree } from "./_layers.ts";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  repoRoot,
  run,
  runAsUser,
  sh,
  tempDir,
  TEST_USER,
  withOverlayView,
} from "./_helpers.ts";

const SCRIPT = `
import { ensureUserNamespace, namespaceInfo } from "${repoRoot}/overlay/userns.ts";
import { supportedReason } from "${repoRoot}/overlay/supported.ts";
import { CachingLayerResolver } from "${repoRoot}/overlay/resolver.ts";
import { OverlayMount } from "${repoRoot}/overlay/mount.ts";
import { sampleImage, snapshotTree } from "${repoRoot}/tests/_layers.ts";
const [root, mode, reexec] = Deno.args;
if (reexec === "1") await ensureUserNamespace();
const info = await namespaceInfo();
const supported = await supportedReason(root + "-probe");
const events = [];
let out;
try {
  const r = await CachingLayerResolver.create(root, { mode, onEvent: (e) => events.push(e.type) });
  const layers = sampleImage(5);
  const lowers = [];
  for (let i = 0; i < layers.length; i++) lowers.push(await r.resolve(layers[i], layers.slice(0, i)));
  const view = await Deno.makeTempDir({ dir: root });
  const m = new OverlayMount({ mountpoint: view, lower: lowers, readonly: true });
  await m.mount();
  try {
    out = { tree: await snapshotTree(view), lowers };
  } finally {
    await m.unmount();
    await Deno.remove(view);
  }
} catch (e) {
  out = { error: e.name + ": " + e.message };
}
console.log(JSON.stringify({ info, supported, events, ...out }));
`;

interface ScriptResult {
  info: { mode: string; uidMap: number[][]; collapsed: boolean; reexecuted: boolean; uid: number };
  supported: { supported: boolean; reason: string; mode: string };
  events: string[];
  tree?: Record<string, { uid: number; type: string; content?: string }>;
  lowers?: string[];
  error?: string;
}

function parse(r: { code: number; stdout: string; stderr: string }): ScriptResult {
  const line = r.stdout.split("\n").find((l) => l.startsWith("{"));
  if (r.code !== 0 || !line) throw new Error(`script exited ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(line);
}

/**
 * The deno command line for a script. The repository's deno.json is left out
 * (its npm imports would make deno fetch packages as the test user): a small
 * import map beside the script maps what strata's modules import.
 */
const denoArgs = (script: string, args: string[]) => [
  Deno.execPath(),
  "run",
  "-A",
  "--frozen",
  "--no-config",
  `--import-map=${script}.imports.json`,
  script,
  ...args,
];

/** Writes a script and its import map (see {@linkcode denoArgs}). */
async function writeScript(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path, text);
  await Deno.writeTextFile(
    `${path}.imports.json`,
    JSON.stringify({ imports: { "@std/path": "node:path" } }),
  );
}

/** A directory the test user owns, inside a world-traversable temp dir. */
async function userDir(parent: string, name: string, uid: number, gid: number): Promise<string> {
  const d = join(parent, name);
  await Deno.mkdir(d);
  await Deno.chown(d, uid, gid);
  return d;
}

/** The image tree as root sees it, resolved in a root cache. */
async function rootTree(dir: string, root: string): Promise<Record<string, unknown>> {
  const r = await CachingLayerResolver.create(root);
  const layers = sampleImage(5);
  const lowers: string[] = [];
  for (let i = 0; i < layers.length; i++) {
    lowers.push(await r.resolve(layers[i], layers.slice(0, i)));
  }
  return await withOverlayView(dir, lowers, snapshotTree);
}

Deno.test({
  name: "rootless with subordinate ids: user namespace, both modes, owners kept",
  ignore: !isRoot,
  async fn() {
    const { uid, gid } = await ensureTestUser();
    const subuid = (await Deno.readTextFile("/etc/subuid")).split("\n")
      .find((l) => l.startsWith(`${TEST_USER}:`))!.split(":").map(Number);
    await using tmp = await tempDir();
    const dir = String(tmp);
    const script = join(dir, "rootless.ts");
    await writeScript(script, SCRIPT);
    const expected = await rootTree(dir, join(dir, "rootcache"));
    const trees: unknown[] = [];
    for (const mode of ["direct", "workdir"]) {
      const home = await userDir(dir, mode, uid, gid);
      const root = join(home, "cache");
      const res = parse(await runAsUser(denoArgs(script, [root, mode, "1"])));
      assertEquals(res.error, undefined);
      assertEquals(res.info.mode, "userns");
      assert(res.info.reexecuted);
      assertEquals(res.info.uid, 0);
      assertEquals(res.info.uidMap, [[0, uid, 1], [1, subuid[1], subuid[2] - 1]]);
      assertEquals(res.info.collapsed, false);
      assert(res.supported.supported, res.supported.reason);
      assertEquals(res.events.filter((e) => e === "extract").length, 5);
      // uid 1000 in the image is uid 1000 in the namespace, and a subordinate id on the host.
      assertEquals(res.tree!["data/f4"].uid, 1000);
      // (The namespace sees the host's paths: its mount namespace is a copy.)
      assertEquals((await Deno.lstat(join(res.lowers![4], "data", "f4"))).uid, subuid[1] + 999);
      trees.push(res.tree);
      // The user's cache is the user's: 0700 and owned by them on the host.
      const st = await Deno.stat(root);
      assertEquals([st.uid, st.mode! & 0o777], [uid, 0o700]);
    }
    assertEquals(trees[0], trees[1], "direct and workdir agree");
    assertEquals(trees[0], expected, "and agree with root's tree");
    assertEquals(await mountsBelow(dir), [], "the namespace's mounts died with it");
  },
});

const NOSUB_USER = "strata-nosub";

Deno.test({
  name: "rootless without subordinate ids: owners collapse to root, said once, not an error",
  ignore: !isRoot,
  async fn() {
    if ((await run("id", ["-u", NOSUB_USER])).code !== 0) {
      await sh("useradd", ["--create-home", "--shell", "/bin/sh", NOSUB_USER]);
    }
    // useradd gives new users a subordinate range (login.defs SUB_UID_COUNT): take it away.
    for (const f of ["/etc/subuid", "/etc/subgid"]) {
      const lines = (await Deno.readTextFile(f)).split("\n");
      const kept = lines.filter((l) => !l.startsWith(`${NOSUB_USER}:`));
      if (kept.length !== lines.length) await Deno.writeTextFile(f, kept.join("\n"));
    }
    const uid = Number((await sh("id", ["-u", NOSUB_USER])).trim());
    const gid = Number((await sh("id", ["-g", NOSUB_USER])).trim());
    await using tmp = await tempDir();
    const dir = String(tmp);
    const script = join(dir, "rootless.ts");
    await writeScript(script, SCRIPT);
    const root = join(await userDir(dir, "home", uid, gid), "cache");
    const r = await run("setpriv", [
      `--reuid=${uid}`,
      `--regid=${gid}`,
      "--init-groups",
      "--",
      "env",
      "-i",
      `HOME=/home/${NOSUB_USER}`,
      `USER=${NOSUB_USER}`,
      `PATH=${Deno.env.get("PATH")}`,
      ...denoArgs(script, [root, "direct", "1"]),
    ], { cwd: "/" });
    const res = parse(r);
    assertEquals(res.error, undefined);
    assertEquals(res.info.uidMap, [[0, uid, 1]]);
    assert(res.info.collapsed);
    const warnings = r.stderr.split("\n").filter((l) => l.includes("only root is mapped"));
    assertEquals(warnings.length, 1, r.stderr);
    assertStringIncludes(warnings[0], `no /etc/subuid and /etc/subgid ranges for ${NOSUB_USER}`);
    assertStringIncludes(warnings[0], "usermod --add-subuids");
    assertEquals(res.tree!["data/f4"].uid, 0, "uid 1000 collapsed to root");
    assertEquals(res.tree!["data/f4"].content, "data 4\n");
    assertEquals(await mountsBelow(dir), []);
  },
});

/**
 * Runs `argv` in a new user + mount namespace that root creates with the
 * identity mapping (written to uid_map/gid_map directly: newuidmap refuses
 * it, even for root).
 */
async function inIdentityUserns(
  argv: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command("unshare", {
    args: [
      "--user",
      "--mount",
      "--propagation",
      "private",
      "--",
      "sh",
      "-c",
      'read _ && exec "$@"',
      "sh",
      ...argv,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const ours = await Deno.readLink("/proc/self/ns/user");
  for (let i = 0; i < 200; i++) {
    const theirs = await Deno.readLink(`/proc/${child.pid}/ns/user`).catch(() => ours);
    if (theirs !== ours) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  await Deno.writeTextFile(`/proc/${child.pid}/uid_map`, "0 0 4294967295\n");
  await Deno.writeTextFile(`/proc/${child.pid}/gid_map`, "0 0 4294967295\n");
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode("go\n"));
  await w.close();
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

Deno.test({
  name:
    "root's cache is read from a user namespace root made (identity map), refused by layer under root-only",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const script = join(dir, "userns.ts");
    await writeScript(script, SCRIPT);
    const root = join(dir, "cache");
    const expected = await rootTree(dir, root);
    const res = parse(await inIdentityUserns(denoArgs(script, [root, "direct", "0"])));
    assertEquals(res.error, undefined);
    assertEquals(res.info.uidMap, [[0, 0, 4294967295]]);
    assertEquals(res.events, [], "all cached: nothing extracted");
    assertEquals(res.tree, expected);
    // In a namespace that maps only root, uid 1000 would read as nobody: the
    // first layer holding it is refused by name (layer 0 holds only root's).
    const r = await run("unshare", [
      "--user",
      "--map-root-user",
      "--mount",
      "--",
      ...denoArgs(script, [root, "direct", "0"]),
    ]);
    const bad = parse(r);
    assertStringIncludes(bad.error!, "LayerIdMapError");
    assertStringIncludes(bad.error!, sampleImage(5)[1].diffID);
    assertStringIncludes(bad.error!, "uid 1000 (host uid 1000)");
    assertStringIncludes(bad.error!, "uid map [0 0 1]");
    assertEquals(bad.events, [], "nothing extracted");
    assertEquals(await mountsBelow(dir), []);
  },
});

const REEXEC_SCRIPT = `
import { ensureUserNamespace, namespaceInfo } from "${repoRoot}/overlay/userns.ts";
await ensureUserNamespace();
const info = await namespaceInfo();
Deno.addSignalListener("SIGTERM", () => {
  console.log("got SIGTERM");
  Deno.exit(9);
});
console.log(JSON.stringify({ pid: Deno.pid, args: Deno.args, info }));
await new Promise((r) => setTimeout(r, 30_000));
`;

Deno.test({
  name:
    "ensureUserNamespace as root: same argv in a private mount namespace, SIGTERM and status passed on",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const script = join(String(tmp), "reexec.ts");
    await writeScript(script, REEXEC_SCRIPT);
    const [cmd, ...args] = denoArgs(script, ["a b", "--flag"]);
    const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    const first = JSON.parse(text.split("\n")[0]);
    // With FFI the process becomes `unshare` and then the program (exec): same pid.
    assertEquals(first.pid, child.pid, "the program runs again in the same process");
    assertEquals(first.args, ["a b", "--flag"]);
    assertEquals(first.info.mode, "root");
    assert(first.info.reexecuted);
    assert(first.info.privateMountNamespace);
    const ns = async (pid: number) => await Deno.readLink(`/proc/${pid}/ns/mnt`);
    assert((await ns(first.pid)) !== (await ns(Deno.pid)), "a mount namespace of its own");
    child.kill("SIGTERM"); // straight to the program (no parent in between)
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    const status = await child.status;
    await child.stderr.cancel();
    assertStringIncludes(text, "got SIGTERM");
    assertEquals(status.code, 9, "the child's exit status");
  },
});

/**
 * A PATH that gives every command of /usr/bin and /usr/sbin, with
 * `newuidmap`/`newgidmap` as `helpers` says: `hidden` (missing, as without
 * Debian's uidmap package; `gid` hides only newgidmap), `unusable` (copies
 * that are not setuid), `failing` (setuid-root copies of `false`). The
 * package itself stays installed: other tests run at the same time.
 */
async function helperPath(
  dir: string,
  helpers: "hidden" | "gid" | "unusable" | "failing",
): Promise<string> {
  const bin = join(dir, `bin-${helpers}`);
  await Deno.mkdir(bin, { mode: 0o755 });
  const hide = helpers === "gid" ? ["newgidmap"] : ["newuidmap", "newgidmap"];
  for (const from of ["/usr/sbin", "/usr/bin"]) {
    for await (const e of Deno.readDir(from)) {
      if (hide.includes(e.name)) continue;
      await Deno.symlink(join(from, e.name), join(bin, e.name)).catch((err) => {
        if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      });
    }
  }
  for (const name of helpers === "unusable" || helpers === "failing" ? hide : []) {
    await Deno.copyFile(helpers === "failing" ? "/bin/false" : `/usr/bin/${name}`, join(bin, name));
    await Deno.chmod(join(bin, name), helpers === "failing" ? 0o4755 : 0o755);
  }
  return bin;
}

Deno.test({
  name: "rootless with subordinate ranges but no usable newuidmap/newgidmap: the warning and " +
    "supported --why name the real cause and the fix",
  ignore: !isRoot,
  async fn() {
    const { uid, gid } = await ensureTestUser();
    await using tmp = await tempDir();
    const dir = String(tmp);
    const home = await userDir(dir, "home", uid, gid);
    const cases: [Parameters<typeof helperPath>[1], string[]][] = [
      ["hidden", [
        `${TEST_USER} has /etc/subuid and /etc/subgid ranges, but newuidmap and newgidmap`,
        "not installed",
        "apt-get install uidmap",
      ]],
      ["gid", ["but newgidmap, which maps them, is not installed", "apt-get install uidmap"]],
      ["unusable", [
        "bin-unusable/newuidmap and",
        "bin-unusable/newgidmap are neither setuid root nor given file capabilities",
        "apt-get install --reinstall uidmap",
      ]],
      ["failing", [
        "and newuidmap and newgidmap, but mapping them failed: unshare",
        "--map-auto",
        "exited 1",
      ]],
    ];
    for (const [helpers, says] of cases) {
      const bin = await helperPath(dir, helpers);
      const r = await runAsUser(
        [denoPath, "run", "-A", join(repoRoot, "cli.ts"), "supported", "--why", "--cache", home],
        { env: { PATH: bin } },
      );
      assertEquals(r.code, 0, `${helpers}: ${r.stderr}`);
      // Owners collapse (only root mapped), said once, with the cause.
      assertStringIncludes(r.stdout, `mapping uids [0 ${uid} 1]`);
      const warnings = r.stderr.split("\n").filter((l) => l.includes("only root is mapped"));
      assertEquals(warnings.length, 1, `${helpers}: ${r.stderr}`);
      const why = r.stdout.split("\n").find((l) => l.startsWith("subordinate ids: "));
      for (const text of [warnings[0], why ?? ""]) {
        for (const s of says) assertStringIncludes(text, s, `${helpers}: ${text}`);
        assert(!text.includes("no /etc/subuid and /etc/subgid ranges"), text);
      }
    }
    // The real helpers, for contrast: every subordinate id mapped, no warning.
    const ok = await runAsUser([
      denoPath,
      "run",
      "-A",
      join(repoRoot, "cli.ts"),
      "supported",
      "--why",
      "--cache",
      home,
    ]);
    assertEquals(ok.code, 0, ok.stderr);
    assert(!ok.stderr.includes("only root is mapped"), ok.stderr);
    assertStringIncludes(ok.stdout, "subordinate ids: 65536 uids mapped");
    assertEquals(await mountsBelow(dir), []);
  },
});
