/**
 * Scale and exotic content (huge sparse files, very large
 * directories, names that are not UTF-8) and the cache on other filesystems.
 * Each case drives the real CLI on layouts written in code.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { buildOciLayout } from "../cli/demo_image.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { isRoot, mountsBelow, runCli, sh, tempDir } from "./_helpers.ts";

const TiB = 2 ** 40;

/** A layer holding `disk.img`: `size` bytes with 4 KiB of data at each end, holes between. */
function sparseLayer(size: number) {
  const head = new Uint8Array(4096).fill(0x41);
  const tail = new Uint8Array(4096).fill(0x5a);
  const tar = new TarWriter()
    .directory("./", { mode: 0o755 })
    .sparseFile("disk.img", size, [{ offset: 0, data: head }, { offset: size - 4096, data: tail }])
    .bytes();
  return { tar, head, tail };
}

/** A temp dir on a small tmpfs: a copy that fills holes runs out of space at once. */
async function smallTmpfs() {
  const tmp = await tempDir();
  await sh("mount", ["-t", "tmpfs", "-o", "size=256m", "tmpfs", String(tmp)]);
  return tmp;
}

Deno.test({
  name: "pull and verify of a 1 TiB sparse file read only its data",
  ignore: !isRoot,
  async fn() {
    await using tmp = await smallTmpfs();
    const built = await buildOciLayout(join(String(tmp), "layout"), {
      layers: [{ tar: sparseLayer(TiB).tar }],
    });
    const cache = join(String(tmp), "cache");
    // Reading a terabyte of holes as zeros takes minutes; the data are 8 KiB.
    const pulled = await runCli(["pull", "-q", "--cache", cache, built.ref], { timeout: 20 });
    assertEquals(pulled.code, 0, pulled.stderr);
    const verified = await runCli(["verify", "--cache", cache], { timeout: 20 });
    assertEquals(verified.code, 0, verified.stderr + verified.stdout);
    // The record still sees the data: change a byte and verify says damaged.
    const [layer] = [...Deno.readDirSync(join(cache, "layers"))];
    const img = join(cache, "layers", layer.name, "fs", "disk.img");
    const f = await Deno.open(img, { write: true });
    await f.seek(TiB - 100, Deno.SeekMode.Start);
    await f.write(new Uint8Array([1]));
    f.close();
    const damaged = await runCli(["verify", "--cache", cache], { timeout: 20 });
    assertEquals(damaged.code, 1, damaged.stderr + damaged.stdout);
  },
});

Deno.test({
  name: "export of a sparse file keeps its holes",
  ignore: !isRoot,
  async fn() {
    await using tmp = await smallTmpfs();
    // 4 GiB: 16 times the tmpfs, which the copy must not fill.
    const size = 4 * 2 ** 30;
    const { tar, head, tail } = sparseLayer(size);
    const built = await buildOciLayout(join(String(tmp), "layout"), { layers: [{ tar }] });
    const cache = join(String(tmp), "cache");
    const out = join(String(tmp), "out");
    const exported = await runCli(["export", "-q", "--cache", cache, built.ref, out], {
      timeout: 20,
    });
    assertEquals(exported.code, 0, exported.stderr);
    const st = await Deno.stat(join(out, "disk.img"));
    assertEquals(st.size, size);
    assert(st.blocks! * 512 < 1 << 20, `export filled the holes: ${st.blocks} blocks`);
    const f = await Deno.open(join(out, "disk.img"));
    try {
      const got = new Uint8Array(4096);
      for (
        const [at, want] of [[0, head], [size - 4096, tail], [
          1 << 30,
          new Uint8Array(4096),
        ]] as const
      ) {
        await f.seek(at, Deno.SeekMode.Start);
        assertEquals((await f.read(got)) ?? 0, 4096, `read at ${at}`);
        assertEquals(got, want);
      }
    } finally {
      f.close();
    }
    assertEquals((await mountsBelow(String(tmp))).length, 1);
  },
});
