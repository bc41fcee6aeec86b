/**
 * The bundled CLI (`deno task build`) is the same program: it pulls (the
 * layer worker included: a layer over 4 MiB is applied on a worker thread,
 * loaded from the worker's own bundle), runs warm as root, passes the
 * container's status and output on, and reports errors in one line; with
 * `-A` and with `--allow-run --allow-ffi` alone (the worker's chunks then
 * load through sys/worker.ts).
 */
import { join } from "@std/path";
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { buildOciLayout } from "../cli/demo_image.ts";
import { addLayer, busyboxLayer } from "./_bundle_helpers.ts";
import { buildCli } from "./_build.ts";
import { denoPath, isRoot, mountsBelow, run, tempDir } from "./_helpers.ts";

Deno.test({
  name: "bundled CLI: pull with the layer worker, warm run, status, output and errors",
  ignore: !isRoot,
  async fn() {
    await using dir = await tempDir();
    const cli = await buildCli(join(String(dir), "dist"));
    const big = "0123456789abcdef\n".repeat(6 << 16); // ~6.7 MB: applied on the worker
    assert(big.length > 5 << 20);
    const layers = [busyboxLayer(), addLayer({ "srv/big.txt": big, "etc/motd": "bundled\n" })];
    const built = await buildOciLayout(join(String(dir), "layout"), {
      layers: layers.map((l) => ({ tar: (l as unknown as { tar: Uint8Array }).tar })),
      config: { Cmd: ["/bin/cat", "/etc/motd"] },
    });
    for (const flags of [["--allow-run", "--allow-ffi"], ["-A"]]) {
      const cache = join(String(dir), `cache${flags.length}`);
      const strata = (...args: string[]) => run(denoPath, ["run", ...flags, cli, ...args]);

      const version = await strata("--version");
      assertEquals(version.code, 0, version.stderr);
      assertStringIncludes(version.stdout, "strata ");

      const pulled = await strata("pull", "--cache", cache, built.ref);
      assertEquals(pulled.code, 0, pulled.stderr);
      assertStringIncludes(pulled.stderr, "2 of 2 layers extracted");

      const warm = await strata("run", "--cache", cache, built.ref);
      assertEquals([warm.code, warm.stdout], [0, "bundled\n"], warm.stderr);
      const sized = await strata(
        "run",
        "--cache",
        cache,
        built.ref,
        "/bin/sh",
        "-c",
        "wc -c < /srv/big.txt; exit 7",
      );
      assertEquals([sized.code, sized.stdout.trim()], [
        7,
        String(new TextEncoder().encode(big).length),
      ]);

      const missing = await strata("run", "--cache", cache, "oci:/nonexistent/strata-layout:v1");
      assertEquals(missing.code, 125);
      assertEquals(missing.stderr.trim().split("\n").length, 1, missing.stderr);
      assertEquals(await mountsBelow(String(dir)), []);
    }
  },
});
