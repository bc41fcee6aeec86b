/**
 * The mount backends really mount (as root): layer order, 131 chain-keyed
 * layers and 500 layers under a root long enough that every layer's path
 * passes fsconfig's 256-byte string limit, a root near PATH_MAX, tmpfs,
 * errors that name errno and path. Every backend, and both ways the new
 * mount API can be handed a layer (file descriptor, path), in turn.
 */
import { join } from "@std/path";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import {
  chooseMountBackend,
  isMountpoint,
  type MountBackend,
  mountBackend,
  MountError,
  mountOf,
  mountsBelow,
  unmountBelow,
} from "../sys/mount.ts";
import { OverlayMount, TmpFSMount } from "../overlay/mount.ts";
import { isRoot, longPath, tempDir } from "./_helpers.ts";

/** Every backend, and both ways the new mount API can be handed a layer. */
const VARIANTS: [label: string, make: () => MountBackend][] = [
  ["fsopen:fd", () => mountBackend("fsopen", { naming: "fd" })],
  ["fsopen:path", () => mountBackend("fsopen", { naming: "path" })],
  ["mount2", () => mountBackend("mount2")],
  ["command", () => mountBackend("command")],
];

const bytes = (s: string) => new TextEncoder().encode(s).length;

/**
 * Makes `n` lower dirs shaped like a cache's chain-keyed layers
 * (`<root>/layers/sha256-<64 hex>@<64 hex>/fs`), each with `f` = its index
 * and `only-<i>`.
 */
async function makeChainLowers(root: string, n: number): Promise<string[]> {
  const lowers: string[] = [];
  for (let i = 0; i < n; i++) {
    const hex = (c: string) => i.toString(16).padStart(64, c);
    const d = join(root, "layers", `sha256-${hex("a")}@${hex("c")}`, "fs");
    await Deno.mkdir(d, { recursive: true });
    await Deno.writeTextFile(join(d, "f"), String(i));
    await Deno.writeTextFile(join(d, `only-${i}`), "");
    lowers.push(d);
  }
  return lowers;
}

/** Upper, work and mountpoint directories below `base`, made. */
async function rwDirs(base: string): Promise<[upper: string, work: string, merged: string]> {
  const [upper, work, merged] = ["upper", "work", "rootfs"].map((d) => join(base, d));
  for (const d of [upper, work, merged]) await Deno.mkdir(d, { recursive: true });
  return [upper, work, merged];
}

/** Mounts `lowers` read-write on `root`'s own upper, checks order, entries and writes, unmounts. */
async function checkRw(root: string, lowers: string[], backend: MountBackend): Promise<void> {
  const [upper, work, merged] = await rwDirs(join(root, "containers", "c1", "bundle"));
  const cwd = Deno.cwd();
  const m = new OverlayMount({ mountpoint: merged, lower: lowers, upper, work, backend });
  await m.mount();
  try {
    assertEquals(Deno.cwd(), cwd, "the working directory did not move");
    assert(isMountpoint(merged));
    const n = lowers.length;
    assertEquals(await Deno.readTextFile(join(merged, "f")), String(n - 1), "the last layer wins");
    const names = new Set<string>();
    for await (const e of Deno.readDir(merged)) names.add(e.name);
    assertEquals(names.size, n + 1);
    for (let i = 0; i < n; i++) assert(names.has(`only-${i}`), `only-${i}`);
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
  assert(!isMountpoint(merged));
}

Deno.test("chooseMountBackend picks the new mount API on this kernel and says why", () => {
  const c = chooseMountBackend();
  const forced = Deno.env.get("STRATA_MOUNT_BACKEND");
  assertEquals(c.name, forced?.split(":")[0] ?? "fsopen");
  assert(c.reason.length > 20, c.reason);
  // Linux 6.13+ takes layers as file descriptors (this machine runs 6.18).
  if (!forced) assertStringIncludes(c.reason, "O_PATH file descriptor");
});

Deno.test({
  name: "the chosen backend: one mount(2) when the options fit in a page, lowerdir+ beyond, " +
    "each layer's path past 256 bytes",
  ignore: !isRoot || Deno.env.get("STRATA_MOUNT_BACKEND") !== undefined,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const backend = chooseMountBackend().backend;
    const root = longPath(dir, 210);
    for (const [n, api] of [[3, "lowerdir="], [131, "lowerdir+="]] as const) {
      const lowers = await makeChainLowers(join(root, String(n)), n);
      assert(lowers.every((l) => bytes(l) > 256), lowers[0]);
      const [upper, work, merged] = await rwDirs(join(root, `c${n}`));
      const m = new OverlayMount({ mountpoint: merged, lower: lowers, upper, work, backend });
      await m.mount();
      try {
        assertEquals(await Deno.readTextFile(join(merged, "f")), String(n - 1));
        const info = await mountOf(merged);
        assertStringIncludes(info.superOptions, api);
        if (api === "lowerdir=") {
          assert(!info.superOptions.includes("lowerdir+="), info.superOptions);
        } else {
          // By file descriptor: the kernel names each layer by its real path.
          assertStringIncludes(info.superOptions, `lowerdir+=${lowers.at(-1)}`);
        }
        assertStringIncludes(info.superOptions, "userxattr");
      } finally {
        await m.unmount();
      }
    }
    assertEquals(await mountsBelow(dir), []);
  },
});

for (const [name, make] of VARIANTS) {
  Deno.test({
    name: `${name}: 131 chain-keyed layers under a 210-char root (each path > 256 bytes), ` +
      "the last on top",
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const root = longPath(dir, 210);
      const lowers = await makeChainLowers(root, 131);
      assert(lowers.every((l) => bytes(l) > 256 && bytes(l) < 400), lowers[0]);
      await checkRw(root, lowers, make());
      assertEquals(await mountsBelow(dir), []);
    },
  });

  Deno.test({
    name: `${name}: 500 layers under a 210-char root, read-only`,
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const root = longPath(dir, 210);
      const lowers = await makeChainLowers(root, 500);
      const mp = join(root, "view");
      await Deno.mkdir(mp);
      const m = new OverlayMount({
        mountpoint: mp,
        lower: lowers,
        readonly: true,
        backend: make(),
      });
      await m.mount();
      try {
        assertEquals(await Deno.readTextFile(join(mp, "f")), "499");
        assertEquals((await Array.fromAsync(Deno.readDir(mp))).length, 501);
        // runc reads mountinfo with Go's bufio.Scanner, which fails on a line of 64 KiB.
        const line = (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")
          .find((l) => l.split(" ")[4] === mp)!;
        assert(line.length < 60 * 1024, `a mountinfo line of ${line.length} bytes`);
        await assertRejects(() => Deno.writeTextFile(join(mp, "g"), ""));
      } finally {
        await m.unmount();
      }
      assertEquals(await mountsBelow(dir), []);
    },
  });

  Deno.test({
    name: `${name}: a root of 3,700 chars (near PATH_MAX): 131 layers, upper, work, tmpfs; ` +
      "a 4,096-byte path is refused by name",
    ignore: !isRoot,
    async fn() {
      await using tmp = await tempDir();
      const dir = String(tmp);
      const root = longPath(dir, 3700);
      const lowers = await makeChainLowers(root, 131);
      assert(lowers.every((l) => bytes(l) > 3800 && bytes(l) < 4096), String(bytes(lowers[0])));
      await checkRw(root, lowers, make());
      // A tmpfs on a mountpoint of ~3,700 bytes.
      const t = join(root, "t");
      await Deno.mkdir(t);
      const tmpfs = new TmpFSMount({ mountpoint: t, size: "1m", backend: make() });
      await tmpfs.mount();
      try {
        assertEquals((await mountOf(t)).fstype, "tmpfs");
      } finally {
        await tmpfs.unmount();
      }
      // Past PATH_MAX no backend can name it: refused before the kernel is asked.
      const tooLong = join(longPath(root, 4095), "x");
      assertEquals(bytes(tooLong), 4097);
      const e = await assertRejects(
        () => make().mountOverlay(join(root, "t"), { lower: [lowers[0], tooLong] }),
        RangeError,
        "PATH_MAX",
      );
      assertMatch(e.message, /lower directory .* is 4097 bytes long/);
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
      const t = new TmpFSMount({ mountpoint: mp, size: "1m", mode: 0o710, backend: make() });
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
      const root = longPath(dir, 210);
      for (const base of [dir, root]) {
        // A short path, and one past fsconfig's string limit.
        const missing = join(base, "layers", `sha256-${"e".repeat(64)}@${"f".repeat(64)}`, "fs");
        await Deno.mkdir(join(base, "m"), { recursive: true });
        await Deno.mkdir(join(base, "a"));
        const e = await assertRejects(
          () => make().mountOverlay(join(base, "m"), { lower: [join(base, "a"), missing] }),
          MountError,
        );
        assertEquals(e.code, name === "command" ? e.code : "ENOENT");
        assertStringIncludes(e.message, name.startsWith("fsopen") ? missing : join(base, "m"));
      }
      assertEquals(await mountsBelow(dir), []);
    },
  });
}

Deno.test({
  name: "501 layers are refused before the kernel is asked",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const lowers = Array.from({ length: 501 }, (_, i) => join(dir, `l${i}`));
    const mp = join(dir, "m");
    await Deno.mkdir(mp);
    const tooMany = new OverlayMount({ mountpoint: mp, lower: lowers, readonly: true });
    await assertRejects(() => tooMany.mount(), RangeError, "at most 500");
    assertEquals(await mountsBelow(dir), []);
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
