/**
 * The mount backends really mount (as root): layer order, 130 layers under a
 * long path, 500 layers, tmpfs, errors that name errno and path.
 */
import { join } from "@std/path";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import {
  chooseMountBackend,
  isMountpoint,
  type MountBackendName,
  MountError,
  mountOf,
  mountsBelow,
  unmountBelow,
} from "../sys/mount.ts";
import { mountBackend } from "../sys/mount.ts";
import { OverlayMount, TmpFSMount } from "../overlay/mount.ts";
import { isRoot, tempDir } from "./_helpers.ts";

const BACKENDS: MountBackendName[] = ["fsopen", "mount2", "command"];

/** Makes `n` lower dirs under `base`, each with `f` = its index and `only-<i>`. */
async function makeLowers(base: string, n: number): Promise<string[]> {
  const lowers: string[] = [];
  for (let i = 0; i < n; i++) {
    const d = join(base, `l${i}`);
    await Deno.mkdir(d, { recursive: true });
    await Deno.writeTextFile(join(d, "f"), String(i));
    await Deno.writeTextFile(join(d, `only-${i}`), "");
    lowers.push(d);
  }
  return lowers;
}

Deno.test("chooseMountBackend picks the new mount API on this kernel and says why", () => {
  const c = chooseMountBackend();
  assertEquals(c.name, Deno.env.get("STRATA_MOUNT_BACKEND") ?? "fsopen");
  assert(c.reason.length > 20, c.reason);
});

Deno.test({
  name: "the chosen backend: one mount(2) when the options fit in a page, lowerdir+ beyond",
  ignore: !isRoot || Deno.env.get("STRATA_MOUNT_BACKEND") !== undefined,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const backend = chooseMountBackend().backend;
    for (
      const [n, prefix, api] of [[3, "s", "lowerdir="], [
        130,
        "l".repeat(120),
        "lowerdir+=",
      ]] as const
    ) {
      const lowers = await makeLowers(join(dir, prefix), n);
      const [upper, work, merged] = ["upper", "work", "merged"].map((d) => join(dir, `${d}${n}`));
      for (const d of [upper, work, merged]) await Deno.mkdir(d);
      const m = new OverlayMount({ mountpoint: merged, lower: lowers, upper, work, backend });
      await m.mount();
      try {
        assertEquals(
          await Deno.readTextFile(join(merged, "f")),
          String(n - 1),
          "the last layer wins",
        );
        const info = await mountOf(merged);
        assertStringIncludes(info.superOptions, api);
        if (api === "lowerdir=") {
          assert(!info.superOptions.includes("lowerdir+="), info.superOptions);
        }
        assertStringIncludes(info.superOptions, "userxattr");
      } finally {
        await m.unmount();
      }
    }
    assertEquals(await mountsBelow(dir), []);
  },
});

for (const name of BACKENDS) {
  Deno.test({
    name: `${name}: the last lower is on top, 130 layers under a 150-char path`,
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const long = join(dir, "p".repeat(150 - dir.length - 1));
      assertEquals(long.length, 150);
      const lowers = await makeLowers(long, 130);
      const [upper, work, merged] = ["upper", "work", "merged"].map((d) => join(dir, d));
      for (const d of [upper, work, merged]) await Deno.mkdir(d);
      const cwd = Deno.cwd();
      const m = new OverlayMount({
        mountpoint: merged,
        lower: lowers,
        upper,
        work,
        backend: mountBackend(name),
      });
      await m.mount();
      try {
        assertEquals(Deno.cwd(), cwd, "the working directory did not move");
        assert(isMountpoint(merged));
        assertEquals(await Deno.readTextFile(join(merged, "f")), "129", "the last layer wins");
        const names = new Set<string>();
        for await (const e of Deno.readDir(merged)) names.add(e.name);
        assertEquals(names.size, 131);
        const info = await mountOf(merged);
        assertEquals(info.fstype, "overlay");
        assertStringIncludes(info.superOptions, "userxattr");
        // Writes land in the upper directory.
        await Deno.writeTextFile(join(merged, "new"), "x");
        assertEquals(await Deno.readTextFile(join(upper, "new")), "x");
      } finally {
        await m.unmount();
        await m.unmount(); // idempotent
      }
      assert(!(isMountpoint(merged)));
      assertEquals(await mountsBelow(dir), []);
    },
  });

  Deno.test({
    name: `${name}: tmpfs with size and mode`,
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const mp = join(dir, "t");
      await Deno.mkdir(mp);
      const t = new TmpFSMount({
        mountpoint: mp,
        size: "1m",
        mode: 0o710,
        backend: mountBackend(name),
      });
      await t.mount();
      try {
        assertEquals((await mountOf(mp)).fstype, "tmpfs");
        assertEquals((await Deno.stat(mp)).mode! & 0o7777, 0o710);
        await assertRejects(() => Deno.writeFile(join(mp, "big"), new Uint8Array(2 << 20)));
      } finally {
        await t.unmount();
      }
      assertEquals(await mountsBelow(dir), []);
    },
  });

  Deno.test({
    name: `${name}: a failed mount names errno and path`,
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const missing = join(dir, "missing-lower");
      await Deno.mkdir(join(dir, "m"));
      await Deno.mkdir(join(dir, "a"));
      const e = await assertRejects(
        () =>
          mountBackend(name).mountOverlay(join(dir, "m"), {
            lower: [join(dir, "a"), missing],
          }),
        MountError,
      );
      assertEquals(e.code, name === "command" ? e.code : "ENOENT");
      assertStringIncludes(e.message, name === "fsopen" ? missing : join(dir, "m"));
      assertEquals(await mountsBelow(dir), []);
    },
  });
}

Deno.test({
  name: "fsopen: 500 layers mount, 501 are refused before the kernel is asked",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const lowers = await makeLowers(join(dir, "x".repeat(100)), 501);
    const mp = join(dir, "m");
    await Deno.mkdir(mp);
    const ok = new OverlayMount({ mountpoint: mp, lower: lowers.slice(0, 500), readonly: true });
    await ok.mount();
    try {
      assertEquals(await Deno.readTextFile(join(mp, "f")), "499");
      await assertRejects(() => Deno.writeTextFile(join(mp, "g"), ""));
    } finally {
      await ok.unmount();
    }
    const tooMany = new OverlayMount({ mountpoint: mp, lower: lowers, readonly: true });
    await assertRejects(() => tooMany.mount(), RangeError, "at most 500");
  },
});

Deno.test({
  name: "unmountBelow removes stacked and nested leftovers, deepest first",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const mp = join(dir, "t");
    await Deno.mkdir(mp);
    const b = mountBackend("fsopen");
    await b.mountTmpfs(mp);
    await Deno.mkdir(join(mp, "inner"));
    await b.mountTmpfs(join(mp, "inner"));
    await b.mountTmpfs(mp); // stacked on top
    assertEquals((await mountsBelow(dir)).length, 2);
    await unmountBelow(dir);
    assertEquals(await mountsBelow(dir), []);
    assertEquals(await b.unmount(mp), false, "not a mountpoint any more");
  },
});
