/**
 * A custom spec option. Options are plain functions `(spec) => void` applied
 * in order after the image's own config (as in the seed's `spec.Option`), so
 * writing one needs no adapter class: this one gives the container a
 * hostname, a label in an environment variable, a private tmpfs at /scratch,
 * and a read-only bind of a host file over /etc/motd.
 *
 * Run: deno run --allow-run --allow-ffi examples/custom_spec_option.ts
 *
 * Permissions: --allow-run (unshare, runc, busybox) and --allow-ffi (libc:
 * mounts, and the cache, the temp dir, the environment and the uid, which
 * strata reaches through libc when --allow-read, --allow-write, --allow-env
 * and --allow-sys are not granted; see the README's "Deno permissions").
 *
 * @module
 */
import { join } from "@std/path";
import { buildDemoImage } from "../cli/demo_image.ts";
import { openImage } from "../image/open.ts";
import { ensureUserNamespace } from "../overlay/userns.ts";
import { CachingBundler } from "../bundle/bundler.ts";
import { runContainer } from "../bundle/run.ts";
import { withCmd } from "../bundle/options.ts";
import type { SpecOption } from "../bundle/spec.ts";
import { chmod, makeTempDir, remove, writeTextFile } from "../sys/files.ts";

/** A custom option: hostname, env, a /scratch tmpfs and a motd bound from the host. */
function withWorkshop(motdFile: string): SpecOption {
  return (spec) => {
    spec.hostname = "workshop";
    spec.process!.env = [...(spec.process!.env ?? []), "WORKSHOP=custom-option"];
    spec.mounts = [
      ...(spec.mounts ?? []),
      {
        destination: "/scratch",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "nodev", "mode=1777", "size=16m"],
      },
      { destination: "/etc/motd", type: "bind", source: motdFile, options: ["rbind", "ro"] },
    ];
  };
}

await ensureUserNamespace();

const tmp = await makeTempDir({ prefix: "strata-option-" });
try {
  const built = await buildDemoImage(join(tmp, "layout"));
  const motd = join(tmp, "motd");
  await writeTextFile(motd, "hello from the host, through a custom option\n");
  await chmod(tmp, 0o755); // the container's user must reach the bound file
  const cache = join(tmp, "cache");
  const image = await openImage(built.ref, { cacheRoot: cache });
  const bundler = await CachingBundler.create(cache);
  const bundle = await bundler.bundle(
    image,
    "custom-option",
    withCmd(
      "sh",
      "-c",
      'hostname; echo "$WORKSHOP"; cat /etc/motd; touch /scratch/ok && echo scratch ok',
    ),
    withWorkshop(motd),
  );
  const { status } = await runContainer(bundle);
  if (status !== 0) throw new Error(`the container exited with status ${status}`);
} finally {
  await remove(tmp, { recursive: true });
}
