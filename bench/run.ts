/**
 * Benchmarks of bundle/: a warm `run /bin/true` on a cached image against
 * `runc run` alone on a prepared bundle, interleaved in the same run, medians
 * and their ratio (bar 2.5x, aim 1.5x), twice: in process (bundle +
 * runContainer + cleanup) and as the whole command line (`deno run
 * <permissions> cli.ts run IMAGE /bin/true`, process start-up included, and
 * the same through the bundled CLI of `deno task build`), beside a minimal
 * Deno program doing only the mounts and runc (bench/minimal_run.ts); the
 * same warm run with the default seccomp filter and without one
 * (`withoutSeccomp`, `--security-opt seccomp=unconfined`), interleaved: runc
 * has libseccomp build the filter on every run; and `bundle()` + `cleanup()`
 * of a cached 3-layer image (goal 10 ms median).
 *
 * Run alone: `deno run -A bench/run.ts` (as root).
 *
 * @module
 */
import { join } from "@std/path";
import { CachingBundler } from "../bundle/bundler.ts";
import { withArgs } from "../bundle/options.ts";
import { withoutSeccomp } from "../bundle/security.ts";
import { defaultStateDir, runContainer, selectRuntime } from "../bundle/run.ts";
import type { SpecOption } from "../bundle/spec.ts";
import { addLayer, busyboxLayer, testImage } from "../tests/_bundle_helpers.ts";

/** What the bench driver passes. */
export interface BenchContext {
  /** A tmpfs for this benchmark. */
  tmpfs: string;
  /** Prints one progress line. */
  log: (line: string) => void;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const r2 = (x: number) => Math.round(x * 100) / 100;

/**
 * Runs the benchmarks in `ctx.tmpfs`.
 *
 * @example Usage
 * ```ts ignore
 * import { bench } from "./run.ts";
 * console.log(await bench({ tmpfs: "/mnt/tmpfs", log: console.error }));
 * ```
 */
export async function bench(ctx: BenchContext): Promise<Record<string, number | string>> {
  const root = join(ctx.tmpfs, "cache");
  const image = testImage([
    busyboxLayer(),
    addLayer({ "etc/motd": "middle\n" }),
    addLayer({ "srv/app.txt": "app\n" }),
  ], { Cmd: ["/bin/true"] });
  const bundler = await CachingBundler.create(root, { onWarning: () => {} });
  const rt = await selectRuntime();
  ctx.log(`runtime ${rt.path}${rt.reason ? ` (${rt.reason})` : ""}`);
  const stateDir = defaultStateDir(rt.name);

  // Warm the layer cache and the runtime probe.
  await runContainer(await bundler.bundle(image, "warm"), { stdin: "null", onWarning: () => {} });

  // The peer: runc alone on a bundle prepared once (same image, same spec).
  const prepared = await bundler.bundle(image, "prepared", withArgs("/bin/true"));
  const runcAlone = async (i: number) => {
    const t = performance.now();
    const out = await new Deno.Command(rt.path, {
      args: ["--root", stateDir, "run", "--bundle", prepared.path, `bench-peer-${i}`],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`runc run failed: ${new TextDecoder().decode(out.stderr)}`);
    return performance.now() - t;
  };
  const strata = async (i: number, ...extra: SpecOption[]) => {
    const t = performance.now();
    const b = await bundler.bundle(image, `bench-${i}`, withArgs("/bin/true"), ...extra);
    const tb = performance.now();
    const r = await runContainer(b, { stdin: "null", id: `bench-${i}`, runtime: rt.path });
    if (r.status !== 0) throw new Error(`strata run exited ${r.status}`);
    return { total: performance.now() - t, bundle: tb - t };
  };

  const n = 25;
  const peer: number[] = [];
  const ours: number[] = [];
  const bundlePart: number[] = [];
  for (let i = 0; i < 3; i++) {
    await runcAlone(1000 + i);
    await strata(1000 + i);
  }
  for (let i = 0; i < n; i++) {
    peer.push(await runcAlone(i));
    const s = await strata(i);
    ours.push(s.total);
    bundlePart.push(s.bundle);
  }
  const runcMs = median(peer);
  const runMs = median(ours);
  ctx.log(`run /bin/true: strata ${r2(runMs)} ms vs runc alone ${r2(runcMs)} ms`);

  // With the default seccomp filter (every run's) and without one, interleaved.
  const filtered: number[] = [];
  const unfiltered: number[] = [];
  for (let i = 0; i < n; i++) {
    filtered.push((await strata(3000 + i)).total);
    unfiltered.push((await strata(4000 + i, withoutSeccomp())).total);
  }
  const [withMs, withoutMs] = [median(filtered), median(unfiltered)];
  ctx.log(
    `run /bin/true with the default seccomp filter ${r2(withMs)} ms, without ${r2(withoutMs)} ms ` +
      `(${r2(withMs / withoutMs)}x; runc builds the filter with libseccomp on every run)`,
  );

  // bundle() + cleanup() alone.
  const bc: number[] = [];
  for (let i = 0; i < 5; i++) await (await bundler.bundle(image, `bc-warm-${i}`)).cleanup();
  for (let i = 0; i < 50; i++) {
    const t = performance.now();
    const b = await bundler.bundle(image, `bc-${i}`);
    await b.cleanup();
    bc.push(performance.now() - t);
  }
  const bcMs = median(bc);
  ctx.log(`bundle()+cleanup() of a cached 3-layer image: ${r2(bcMs)} ms median`);
  const cli = await cliRun(ctx, image, rt.path, stateDir, prepared).catch((e) => {
    ctx.log(`cli run not measured: ${(e as Error).message}`);
    return undefined;
  });
  await prepared.cleanup();
  return {
    ...(cli ?? {}),
    run_true_ms: r2(runMs),
    run_true_seccomp_ms: r2(withMs),
    run_true_unconfined_ms: r2(withoutMs),
    run_seccomp_vs_unconfined_ratio: r2(withMs / withoutMs),
    runc_alone_ms: r2(runcMs),
    run_vs_runc_ratio: r2(runMs / runcMs),
    run_bundle_part_ms: r2(median(bundlePart)),
    bundle_cleanup_ms: r2(bcMs),
    bundle_cleanup_p90_ms: r2([...bc].sort((a, b) => a - b)[Math.floor(bc.length * 0.9)]),
    runtime: rt.name,
  };
}

/** The permissions `strata run` needs (README), named rather than `-A`. */
export const RUN_PERMISSIONS: readonly string[] = ["--allow-run", "--allow-ffi"];

/**
 * The whole command line, warm: `deno run <RUN_PERMISSIONS> ENTRY run
 * --cache DIR IMAGE /bin/true` with every layer cached (pulled first), for
 * two entries, `cli.ts` and the bundled CLI (`deno task build`'s `cli.js`,
 * built here), against `runc run` alone on the prepared bundle, interleaved,
 * medians and ratios. This is what a user waits for: Deno's start-up,
 * module loading, opening and verifying the image, the bundle mounts, runc,
 * the cleanup.
 */
async function cliRun(
  ctx: BenchContext,
  image: ReturnType<typeof testImage>,
  runc: string,
  stateDir: string,
  prepared: { path: string; lower: readonly string[] },
): Promise<Record<string, number>> {
  const preparedBundle = prepared.path;
  const { buildOciLayout } = await import("../cli/demo_image.ts");
  const { buildCli } = await import("../tests/_build.ts");
  const layout = join(ctx.tmpfs, "layout");
  const built = await buildOciLayout(layout, {
    layers: image.layers.map((l) => ({ tar: (l as unknown as { tar: Uint8Array }).tar })),
    config: { Cmd: ["/bin/true"] },
  });
  const entries = {
    ts: join(import.meta.dirname!, "..", "cli.ts"),
    bundled: await buildCli(join(ctx.tmpfs, "dist")),
  };
  const cache = join(ctx.tmpfs, "cli-cache");
  const cli = async (entry: string, ...args: string[]) => {
    const t = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...RUN_PERMISSIONS, entry, ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`strata ${args[0]}: ${new TextDecoder().decode(out.stderr).trim()}`);
    }
    return performance.now() - t;
  };
  const strata = (entry: string, ...opts: string[]) =>
    cli(entry, "run", "--cache", cache, ...opts, built.ref, "/bin/true");
  // The minimal Deno program (bench/minimal_run.ts) on the prepared bundle's config and layers.
  const minimalTs = join(import.meta.dirname!, "minimal_run.ts");
  let minimalRuns = 0;
  const minimal = async () => {
    const t = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        minimalTs,
        join(ctx.tmpfs, `minimal-${minimalRuns++}`),
        runc,
        stateDir,
        join(preparedBundle, "config.json"),
        ...prepared.lower,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`minimal run: ${new TextDecoder().decode(out.stderr)}`);
    return performance.now() - t;
  };
  const peer = async (i: number) => {
    const t = performance.now();
    const out = await new Deno.Command(runc, {
      args: ["--root", stateDir, "run", "--bundle", preparedBundle, `bench-cli-peer-${i}`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    if (!out.success) throw new Error("runc run failed");
    return performance.now() - t;
  };
  await cli(entries.ts, "pull", "--cache", cache, built.ref);
  for (let i = 0; i < 3; i++) {
    await peer(100 + i);
    await strata(entries.ts);
    await strata(entries.bundled);
    await minimal();
  }
  // Back to back: each command straight after the other. runc started right
  // after another runc is markedly faster than after a pause (here ~19 vs
  // ~30 ms: the kernel and the CPUs are still warm from the last container),
  // which favours the peer, always measured right after strata's own runc.
  // From the same state: each command after the same 100 ms pause, as when a
  // user types one.
  const pause = () => new Promise((r) => setTimeout(r, 100));
  const times = {
    peer: [] as number[],
    ts: [] as number[],
    bundled: [] as number[],
    minimal: [] as number[],
  };
  const idle = {
    peer: [] as number[],
    ts: [] as number[],
    bundled: [] as number[],
    minimal: [] as number[],
  };
  for (let i = 0; i < 20; i++) {
    times.peer.push(await peer(i));
    times.ts.push(await strata(entries.ts));
    times.peer.push(await peer(50 + i));
    times.bundled.push(await strata(entries.bundled));
    times.minimal.push(await minimal());
  }
  for (let i = 0; i < 20; i++) {
    await pause();
    idle.peer.push(await peer(200 + i));
    await pause();
    idle.ts.push(await strata(entries.ts));
    await pause();
    idle.bundled.push(await strata(entries.bundled));
    await pause();
    idle.minimal.push(await minimal());
  }
  // The bundled CLI with the default filter and with --security-opt
  // seccomp=unconfined (which also loads the confinement options' modules).
  const filtered = { on: [] as number[], off: [] as number[] };
  for (let i = 0; i < 20; i++) {
    await pause();
    filtered.on.push(await strata(entries.bundled));
    await pause();
    filtered.off.push(await strata(entries.bundled, "--security-opt", "seccomp=unconfined"));
  }
  const m = (xs: number[]) => r2(median(xs));
  const [b, bi] = [median(times.peer), median(idle.peer)];
  const out: Record<string, number> = {
    cli_runc_alone_ms: r2(b),
    cli_runc_alone_paused_ms: r2(bi),
    cli_bundled_seccomp_paused_ms: m(filtered.on),
    cli_bundled_unconfined_paused_ms: m(filtered.off),
    cli_bundled_seccomp_vs_unconfined_ratio: r2(median(filtered.on) / median(filtered.off)),
  };
  ctx.log(
    `bundled cli.js, each after a 100 ms pause: default seccomp filter ${m(filtered.on)} ms, ` +
      `--security-opt seccomp=unconfined ${m(filtered.off)} ms ` +
      `(${r2(median(filtered.on) / median(filtered.off))}x)`,
  );
  const labels = [
    ["ts", "cli.ts", "cli"],
    ["bundled", "bundled cli.js", "cli_bundled"],
    ["minimal", "minimal Deno program", "deno_minimal"],
  ] as const;
  ctx.log(
    `warm run /bin/true from the command line (deno run ${RUN_PERMISSIONS.join(" ")} ENTRY):`,
  );
  for (const [key, label, k] of labels) {
    const [a, ai] = [median(times[key]), median(idle[key])];
    ctx.log(
      `${label}: ${r2(a)} ms vs runc alone ${r2(b)} ms (${r2(a / b)}x) back to back; ` +
        `${r2(ai)} vs ${r2(bi)} ms (${r2(ai / bi)}x) each after a 100 ms pause`,
    );
    out[`${k}_run_true_ms`] = m(times[key]);
    out[`${k}_vs_runc_ratio`] = r2(a / b);
    out[`${k}_run_true_paused_ms`] = m(idle[key]);
    out[`${k}_vs_runc_paused_ratio`] = r2(ai / bi);
  }
  return out;
}

if (import.meta.main) {
  const tmpfs = await Deno.makeTempDir({ prefix: "strata-bench-run-" });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=1g,mode=0755", "tmpfs", tmpfs],
  }).output();
  if (!mount.success) {
    console.error("bench/run.ts: run as root (it mounts a tmpfs)");
    Deno.exit(1);
  }
  try {
    const r = await bench({ tmpfs, log: (l) => console.error(`   ${l}`) });
    for (const [k, v] of Object.entries(r)) console.log(`run.${k}\t${v}`);
  } finally {
    await new Deno.Command("umount", { args: ["-l", tmpfs] }).output();
    await Deno.remove(tmpfs, { recursive: true }).catch(() => {});
  }
}
