/**
 * `strata demo` (`deno task demo`): the whole job on a built-in image with
 * no network. Builds a three-layer OCI image from the host's static busybox
 * (an override, a whiteout and an opaque directory among its layers), pulls
 * it into a cache, runs it twice to show the cold (extracting) and warm
 * (cached) cost, checks that the container saw what the layers say, and
 * removes everything it made.
 *
 * @module
 */
import { join } from "@std/path";
import { CachingBundler } from "../bundle/bundler.ts";
import { withUser } from "../bundle/options.ts";
import { runContainer } from "../bundle/run.ts";
import type { SpecOption } from "../bundle/spec.ts";
import { namespaceInfo, subordinateIds } from "../overlay/userns.ts";
import type { Context } from "./context.ts";
import { CliError } from "./errors.ts";
import { formatMs, shortDigest } from "./output.ts";
import { enterNamespace, onceWarner, pullImage } from "./pipeline.ts";
import { aptInstall, buildDemoImage, DEMO_EXPECTED } from "./demo_image.ts";
import { getEnv } from "../sys/env.ts";
import { makeTempDir, remove, statSync } from "../sys/files.ts";

async function runOnce(
  ctx: Context,
  ref: string,
  options: SpecOption[],
): Promise<{ ms: number; extracted: number; output: string; status: number }> {
  const started = performance.now();
  const { image, extracted } = await pullImage(ctx, ref, "missing");
  const bundler = await CachingBundler.create(ctx.cacheRoot, { onWarning: (m) => ctx.out.warn(m) });
  const id = `strata-demo-${crypto.randomUUID().slice(0, 8)}`;
  const bundle = await bundler.bundle(image, id, ...options, ctx.signal);
  const r = await runContainer(bundle, {
    id,
    stdin: "null",
    stdout: "piped",
    onWarning: await onceWarner(ctx),
  });
  const ms = performance.now() - started;
  return { ms, extracted, output: new TextDecoder().decode(r.stdout), status: r.status };
}

function onPath(cmd: string): boolean {
  for (const dir of (getEnv("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (statSync(join(dir, cmd)).isFile) return true;
    } catch {
      // not there
    }
  }
  return false;
}

/**
 * The demo needs an OCI runtime. As root on Debian a missing runc is
 * installed (the quick start must work on a fresh machine); otherwise the
 * error says what to install.
 */
async function ensureRuntime(ctx: Context): Promise<void> {
  if (typeof ctx.options.runtime === "string" || onPath("runc") || onPath("crun")) return;
  const ns = await namespaceInfo();
  if (ns.mode === "root" && onPath("apt-get")) {
    ctx.out.note("no OCI runtime found: installing Debian's runc with apt-get");
    await aptInstall("runc");
    return;
  }
  throw new CliError(
    "demo",
    "no OCI runtime (runc or crun) on PATH: install one, for example `sudo apt-get install runc`",
  );
}

/**
 * Runs `strata demo`.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "../cli.ts";
 * Deno.exit(await main(["demo"]));
 * ```
 */
export async function demoCommand(ctx: Context): Promise<number> {
  // First, before any work: the namespace re-executes the whole command.
  await enterNamespace(ctx);
  const out = ctx.out;
  const tmp = await makeTempDir({ prefix: "strata-demo-" });
  const ownCache = ctx.options.cache === undefined;
  const cacheRoot = ownCache ? join(tmp, "cache") : ctx.cacheRoot;
  const dctx: Context = { ...ctx, cacheRoot };
  try {
    out.note("strata demo: build a 3-layer image from busybox, pull it, run it cold and warm");
    const t0 = performance.now();
    const built = await buildDemoImage(join(tmp, "layout"), {
      busybox: ctx.options.busybox as string | undefined,
      log: (l) => out.note(l),
    });
    out.note(
      `built ${built.ref} (${built.layers.length} layers, ${shortDigest(built.digest)}) in ${
        formatMs(performance.now() - t0)
      }`,
    );
    out.note(`cache: ${cacheRoot}${ownCache ? " (temporary)" : ""}`);

    await ensureRuntime(ctx);
    const options: SpecOption[] = [];
    const ns = await namespaceInfo();
    if (ns.collapsed) {
      out.note(
        "only root is mapped in this user namespace: running as root instead of the image's " +
          `\`app\` user (${(await subordinateIds()).reason})`,
      );
      options.push(withUser("0:0"));
    }

    const runs: { ms: number; extracted: number }[] = [];
    let output = "";
    for (const label of ["cold", "warm"]) {
      out.note(`\n$ strata run ${built.ref}    # ${label}`);
      const r = await runOnce(dctx, built.ref, options);
      out.resultRaw(r.output);
      if (r.status !== 0) {
        throw new CliError("demo", `the demo container exited with status ${r.status}`);
      }
      runs.push(r);
      output = r.output;
    }
    const [cold, warm] = runs;
    out.note(
      `\ncold run: ${formatMs(cold.ms)} (${cold.extracted} layers extracted, then bundle and run)`,
    );
    out.note(
      `warm run: ${formatMs(warm.ms)} (${warm.extracted} extracted: every layer was cached)`,
    );
    const missing = Object.entries(DEMO_EXPECTED).filter(([, line]) => !output.includes(line));
    if (missing.length) {
      throw new CliError(
        "demo",
        `the container did not see what the layers say (${
          missing.map(([k]) => k).join(", ")
        } wrong): ${output.trim().replaceAll("\n", " | ")}`,
      );
    }
    out.note("override, whiteout and opaque directory: all as the image says");
    return 0;
  } finally {
    await remove(tmp, { recursive: true }).catch((e) => {
      out.warn(`could not remove ${tmp}: ${(e as Error).message}`);
    });
    if (!ownCache) out.note(`the demo image stays cached in ${cacheRoot} (strata rm, prune)`);
  }
}
