/**
 * The command line as people run it, `deno run -A cli.ts` (unbundled), beside
 * its peers, on the bench tmpfs, with a 3-layer Debian image (the debootstrap
 * rootfs, 32 MiB of incompressible files, a small layer; ~97 MB of gzip,
 * ~6,900 entries) in an OCI layout:
 *
 * - warm run: `strata run --cache C oci:LAYOUT:bench -- /bin/true` against
 *   `runc run` alone on a bundle of the same image prepared once (the same
 *   spec), each measured by `hyperfine -N -w 3 -r 20` (each command in its
 *   steady state), three rounds alternating the two; the medians of the
 *   rounds' means and their ratio;
 * - rootless: the same warm run as the unprivileged test user (subordinate
 *   ids) against it as root, both started through the same `setpriv` and
 *   `env -i`, hyperfine as above;
 * - cold pull: `strata pull` into an empty cache against GNU `tar -xzf` of
 *   the same three blobs into empty directories, interleaved
 *   (`$STRATA_BENCH_RUNS`, default 5), medians and their ratio.
 *
 * Runnable alone: `deno run -A bench/cli.ts` (as root: it mounts a tmpfs).
 *
 * @module
 */
import { join } from "@std/path";
import { CachingBundler } from "../bundle/bundler.ts";
import { withArgs } from "../bundle/options.ts";
import { openImage } from "../image/open.ts";
import { ensureTestUser } from "../tests/_helpers.ts";
import { bigLayer, debianRootfsLayer, mountTmpfs } from "./fixtures.ts";
import { buildLayout, smallLayer } from "./pull.ts";

const CLI = join(import.meta.dirname!, "..", "cli.ts");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const r2 = (x: number) => Math.round(x * 100) / 100;

async function sh(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** `hyperfine -N -w 3 -r 20` of each command; their means in milliseconds. */
async function hyperfine(dir: string, commands: string[]): Promise<number[]> {
  const file = join(dir, `hyperfine-${crypto.randomUUID().slice(0, 8)}.json`);
  await sh("hyperfine", ["-N", "-w", "3", "-r", "20", "--export-json", file, ...commands]);
  const results = JSON.parse(await Deno.readTextFile(file)).results as { mean: number }[];
  await Deno.remove(file);
  return results.map((r) => r.mean * 1000);
}

/** Rounds of hyperfine, the commands alternating; the median of each one's means. */
async function rounds(dir: string, commands: string[], n = 3): Promise<number[]> {
  const means: number[][] = commands.map(() => []);
  for (let i = 0; i < n; i++) {
    // Each command alone, in turn: hyperfine runs one command's runs in a row.
    const order = i % 2 ? [...commands.keys()].reverse() : [...commands.keys()];
    for (const j of order) means[j].push((await hyperfine(dir, [commands[j]]))[0]);
  }
  return means.map(median);
}

/** The argv prefix that runs a command as uid:gid with a clean environment. */
function as(uid: number, gid: number, home: string): string {
  return `setpriv --reuid=${uid} --regid=${gid} --init-groups -- env -i HOME=${home} ` +
    `PATH=${Deno.env.get("PATH")}`;
}

/**
 * Runs the benchmarks in `ctx.tmpfs`.
 *
 * @example Usage
 * ```ts ignore
 * import { bench } from "./cli.ts";
 * console.log(await bench({ tmpfs: "/mnt/tmpfs", log: console.error }));
 * ```
 */
export async function bench(
  ctx: { tmpfs: string; log: (line: string) => void },
): Promise<Record<string, number | string>> {
  const dir = ctx.tmpfs;
  await Deno.chmod(dir, 0o755);
  const layers = [
    await debianRootfsLayer(),
    await bigLayer(32 << 20),
    await smallLayer(dir, "conf"),
  ];
  const layout = join(dir, "layout");
  await buildLayout(layout, layers);
  await sh("chmod", ["-R", "a+rX", layout]);
  const ref = `oci:${layout}:bench`;
  const gz = layers.reduce((n, l) => n + l.sizeGz, 0);
  ctx.log(
    `3 layers, ${(gz / 1e6).toFixed(0)} MB of gzip, ${
      layers.reduce((n, l) => n + l.entries, 0)
    } entries`,
  );

  // `STRATA_BENCH_ONLY=pull`: the cold pull alone (the warm runs take minutes).
  let out: Record<string, number | string> = {};
  if (Deno.env.get("STRATA_BENCH_ONLY") !== "pull") {
    // Warm run against runc alone on a bundle of the same image, prepared once.
    const cache = join(dir, "cache");
    await sh(Deno.execPath(), ["run", "-A", CLI, "pull", "-q", "--cache", cache, ref]);
    const bundler = await CachingBundler.create(cache, { onWarning: () => {} });
    const prepared = await bundler.bundle(await openImage(ref), "prepared", withArgs("/bin/true"));
    const runc = (await sh("sh", ["-c", "command -v runc"])).trim();
    const root = { uid: 0, gid: 0, home: "/root" };
    const user = await ensureTestUser();
    const userCache = join(dir, "user-cache");
    await Deno.mkdir(userCache);
    await sh("chown", [`${user.uid}:${user.gid}`, userCache]);
    try {
      const strata = `${Deno.execPath()} run -A ${CLI} run --cache ${cache} ${ref} -- /bin/true`;
      const peer = `${runc} run --bundle ${prepared.path} bench-cli-peer`;
      const [warm, alone] = await rounds(dir, [strata, peer]);
      ctx.log(
        `warm run (deno run -A cli.ts, hyperfine -N -w 3 -r 20): ${r2(warm)} ms vs runc alone ` +
          `${r2(alone)} ms: ${r2(warm / alone)}x`,
      );
      // Rootless against root, both through setpriv and env -i.
      const cli = `${Deno.execPath()} run -A ${CLI} run`;
      const [asRoot, asUser] = await rounds(dir, [
        `${as(root.uid, root.gid, root.home)} ${cli} --cache ${cache} ${ref} -- /bin/true`,
        `${as(user.uid, user.gid, user.home)} ${cli} --cache ${userCache} ${ref} -- /bin/true`,
      ]);
      ctx.log(
        `rootless warm run: ${r2(asUser)} ms vs root ${r2(asRoot)} ms: ${r2(asUser / asRoot)}x`,
      );
      out = {
        warm_run_ms: r2(warm),
        runc_alone_ms: r2(alone),
        warm_run_vs_runc: r2(warm / alone),
        rootless_run_ms: r2(asUser),
        root_run_ms: r2(asRoot),
        rootless_vs_root: r2(asUser / asRoot),
      };
    } finally {
      await prepared.cleanup();
    }
  }

  // Cold pull against GNU tar of the same blobs, interleaved, each into empty directories.
  const runs = Number(Deno.env.get("STRATA_BENCH_RUNS") ?? 5);
  const times = { strata: [] as number[], tar: [] as number[] };
  let n = 0;
  const timed = async (f: () => Promise<unknown>) => {
    const t = performance.now();
    await f();
    return performance.now() - t;
  };
  const pull = async () => {
    const c = join(dir, `pull-${n++}`);
    const ms = await timed(() =>
      sh(Deno.execPath(), ["run", "-A", CLI, "pull", "-q", "--cache", c, ref])
    );
    await Deno.remove(c, { recursive: true });
    return ms;
  };
  const tar = async () => {
    const d = join(dir, `tar-${n++}`);
    const ms = await timed(async () => {
      for (const l of layers) {
        const into = join(d, l.digestGz.slice(7));
        await Deno.mkdir(into, { recursive: true });
        await sh("tar", ["-xzf", l.tarGz, "-C", into]);
      }
    });
    await Deno.remove(d, { recursive: true });
    return ms;
  };
  await pull();
  await tar();
  for (let i = 0; i < runs; i++) {
    if (i % 2) {
      times.tar.push(await tar());
      times.strata.push(await pull());
    } else {
      times.strata.push(await pull());
      times.tar.push(await tar());
    }
  }
  const [p, t] = [median(times.strata), median(times.tar)];
  ctx.log(
    `cold pull (deno run -A cli.ts pull): ${p.toFixed(0)} ms vs tar -xzf ${t.toFixed(0)} ms: ${
      r2(p / t)
    }x`,
  );
  return {
    ...out,
    cold_pull_ms: Math.round(p),
    tar_ms: Math.round(t),
    cold_pull_vs_tar: r2(p / t),
  };
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "strata-bench-cli-" });
  const fs = await mountTmpfs(dir, { size: "6g" });
  try {
    const r = await bench({ tmpfs: dir, log: (l) => console.error(`   ${l}`) });
    for (const [k, v] of Object.entries(r)) console.log(`cli.${k}\t${v}`);
  } finally {
    await fs.unmount();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
