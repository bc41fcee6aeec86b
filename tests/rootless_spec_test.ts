/**
 * Rootless runs, runtime specs from hostile image
 * configs, signals through `strata run`. Each case runs the real CLI on a
 * busybox image built in code (`buildDemoImage` plus one extra layer).
 *
 * @module
 */
import { assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { buildDemoImage } from "../cli/demo_image.ts";
import type { ContainerConfig } from "../image/types.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  mountsBelow,
  repoRoot,
  runAsUser,
  runCli,
  tempDir,
} from "./_helpers.ts";

const MTIME = 1704067200;

/** The demo image plus one layer written by `extra`, with `config` over the demo's. */
async function image(
  dir: string,
  config: ContainerConfig,
  extra?: (w: TarWriter) => void,
): Promise<string> {
  const layers = [];
  if (extra) {
    const w = new TarWriter({ defaultMtime: MTIME });
    extra(w);
    layers.push({ tar: w.bytes() });
  }
  const built = await buildDemoImage(join(dir, "layout"), { config, extraLayers: layers });
  await Deno.chmod(join(dir, "layout"), 0o755);
  return built.ref;
}

Deno.test({
  name: "rootless: a setuid file whose owner is not mapped does not become setuid root",
  ignore: !isRoot,
  async fn() {
    const { uid, gid, home } = await ensureTestUser();
    await using tmp = await tempDir();
    const dir = String(tmp);
    const ref = await image(dir, { User: "app" }, (w) => {
      w.directory("s/", { mode: 0o755 });
      // Owners beyond the test user's 65536 subordinate ids.
      w.file("s/suid", "x", { mode: 0o4755, uid: 70000, gid: 0 });
      w.file("s/sgid", "x", { mode: 0o2755, uid: 0, gid: 70000 });
      w.file("s/both", "x", { mode: 0o6755, uid: 4294967294, gid: 4294967294 });
      w.file("s/root", "x", { mode: 0o6755, uid: 0, gid: 0 });
    });
    await Deno.chown(dir, uid, gid);
    const r = await runAsUser([
      denoPath,
      "run",
      "-A",
      join(repoRoot, "cli.ts"),
      "--cache",
      join(dir, "cache"),
      "run",
      ref,
      "--entrypoint",
      "",
      "stat",
      "-c",
      "%n %a %u:%g",
      "/s/suid",
      "/s/sgid",
      "/s/both",
      "/s/root",
    ], { env: { DENO_DIR: join(home, ".deno") } });
    assertEquals(r.code, 0, r.stderr);
    // The owners collapse to the applier's (root in the namespace), so the
    // bits that would run the file as that owner go, as chown(2) drops them.
    assertEquals(r.stdout.trim().split("\n"), [
      "/s/suid 755 0:0",
      "/s/sgid 755 0:0",
      "/s/both 755 0:0",
      "/s/root 6755 0:0",
    ]);
    const warnings = r.stderr.split("\n").filter((l) => l.includes("cannot set owners"));
    assertEquals(warnings.length, 1, r.stderr);
    assertStringIncludes(warnings[0], "setuid");
    assertEquals(await mountsBelow(dir), []);
  },
});

Deno.test({
  name: "spec: --user makes an image User that cannot be resolved moot, as docker's --user",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    // The image's User names nobody its /etc/passwd lists.
    const ref = await image(dir, { User: "ghost" });
    const cache = join(dir, "cache");
    const id = ["--entrypoint", "", "id", "-u"];
    const bad = await runCli(["--cache", cache, "run", ref, ...id]);
    assertEquals(bad.code, 125, bad.stderr);
    assertEquals(
      bad.stderr.trim().split("\n").at(-1),
      `strata: run ${ref}: ` +
        `cannot resolve user "ghost": no such user in the image's /etc/passwd`,
    );
    for (const [user, want] of [["0", "0"], ["app", "1000"], ["1234:5", "1234"]]) {
      const r = await runCli(["--cache", cache, "-q", "run", "-u", user, ref, ...id]);
      assertEquals([r.code, r.stdout.trim()], [0, want], r.stderr);
    }
    assertEquals(await mountsBelow(dir), []);
    assertEquals([...Deno.readDirSync(join(cache, "containers"))], []);
  },
});

Deno.test({
  name: "spec: an image Env entry without '=' unsets the name, as docker and containerd",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    // docker (ReplaceOrAppendEnvValues) and containerd (WithEnv) read a bare
    // name as "remove it"; runc refuses such an entry outright.
    const ref = await image(dir, { Env: ["PATH=/bin", "GONE=1", "GONE", "NEVER", "B=1", "B=2"] });
    const r = await runCli([
      "--cache",
      join(dir, "cache"),
      "-q",
      "run",
      ref,
      "--entrypoint",
      "",
      "sh",
      "-c",
      'echo "${GONE-unset} ${NEVER-unset} $B"; env | grep -c -e ^GONE -e ^NEVER',
    ]);
    assertEquals([r.code, r.stdout], [1, "unset unset 2\n0\n"], r.stderr);
    assertEquals(await mountsBelow(dir), []);
  },
});
