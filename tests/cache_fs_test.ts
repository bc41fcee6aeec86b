/**
 * The cache on other filesystems (a small ext4 that runs
 * out of inodes) and concurrent commands on one cache. Each case drives the
 * real CLI on layouts written in code.
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { join } from "@std/path";
import { buildOciLayout } from "../cli/demo_image.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { isRoot, run, runCli, sh, tempDir } from "./_helpers.ts";

/** A temp dir with a fresh ext4 of `inodes` inodes mounted at `mnt` (loop device detached on dispose). */
async function smallExt4(inodes: number) {
  const tmp = await tempDir();
  const img = join(String(tmp), "fs.img");
  const mnt = join(String(tmp), "mnt");
  await Deno.mkdir(mnt);
  await sh("truncate", ["-s", "32M", img]);
  await sh("mkfs.ext4", ["-q", "-N", String(inodes), img]);
  const loop = (await sh("losetup", ["-f", "--show", img])).trim();
  await sh("mount", [loop, mnt]);
  return {
    mnt,
    async [Symbol.asyncDispose]() {
      await run("umount", [mnt]);
      await run("losetup", ["-d", loop]);
      await tmp[Symbol.asyncDispose]();
    },
  };
}

/** A layer of `n` small files under `many/`. */
function manyFiles(n: number): Uint8Array {
  const t = new TarWriter().directory("./", { mode: 0o755 }).directory("many", { mode: 0o755 });
  for (let i = 0; i < n; i++) t.file(`many/f${i}`, `${i}\n`);
  return t.bytes();
}

Deno.test({
  name: "pull out of inodes: one ENOSPC line, nothing published, prune reclaims every leftover",
  ignore: !isRoot,
  async fn() {
    await using fs = await smallExt4(256);
    await using src = await tempDir();
    const cache = join(fs.mnt, "cache");
    for (let i = 0; i < 3; i++) {
      // Three different layers: each failed extraction of its own.
      const big = await buildOciLayout(join(String(src), `big${i}`), {
        layers: [{ tar: manyFiles(400 + i) }],
      });
      const r = await runCli(["pull", "-q", "--cache", cache, big.ref], { timeout: 20 });
      assertEquals(r.code, 1, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assertEquals(lines.length, 1, r.stderr);
      assertMatch(lines[0], /ENOSPC/);
      assertEquals([...Deno.readDirSync(join(cache, "layers"))], []);
      assertEquals([...Deno.readDirSync(join(cache, "tmp"))], []);
    }
    const pruned = await runCli(["prune", "-q", "--cache", cache]);
    assertEquals(pruned.code, 0, pruned.stderr);
    // Failed pulls cost nothing once pruned: no lock file of a layer never published stays.
    assertEquals([...Deno.readDirSync(join(cache, "locks"))].map((e) => e.name), []);
    // A pull that fits works afterwards.
    const small = await buildOciLayout(join(String(src), "small"), {
      layers: [{ tar: manyFiles(50) }],
    });
    const ok = await runCli(["pull", "-q", "--cache", cache, small.ref], { timeout: 20 });
    assertEquals(ok.code, 0, ok.stderr);
    const verified = await runCli(["verify", "--cache", cache], { timeout: 20 });
    assertEquals(verified.code, 0, verified.stderr + verified.stdout);
    assert(verified.stdout.includes("all intact") || verified.stderr.includes("all intact"));
  },
});

Deno.test({
  name: "a cache on an overlayfs: pull refuses at once with one line, nothing extracted",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const [lower, upper, work, merged] = ["l", "u", "w", "m"].map((d) => join(String(tmp), d));
    for (const d of [lower, upper, work, merged]) await Deno.mkdir(d);
    await sh("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${lower},upperdir=${upper},workdir=${work}`,
      merged,
    ]);
    const cache = join(merged, "cache");
    // A whiteout in the top layer: an extraction there fails only on it.
    const base = new TarWriter().directory("./", { mode: 0o755 }).file("a", "a\n").bytes();
    const top = new TarWriter().directory("./", { mode: 0o755 }).file(".wh.a", "").bytes();
    const built = await buildOciLayout(join(String(tmp), "layout"), {
      layers: [{ tar: base }, { tar: top }],
    });
    const sup = await runCli(["supported", "--cache", cache]);
    assertEquals(sup.code, 1, sup.stdout + sup.stderr);
    for (const cmd of ["pull", "run"]) {
      const r = await runCli([
        cmd,
        "-q",
        "--cache",
        cache,
        built.ref,
        ...cmd === "run" ? ["true"] : [],
      ]);
      assertEquals(r.code, cmd === "run" ? 125 : 1, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assertEquals(lines.length, 1, r.stderr);
      assertMatch(lines[0], /is on an overlayfs/);
      assertEquals([...Deno.readDirSync(join(cache, "layers"))], []);
    }
  },
});
