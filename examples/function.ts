/**
 * A function-style container, the seed's own use (crossplane composition
 * functions): the container reads one request on stdin and writes one
 * response on stdout, and strata gives it a fresh root filesystem each time
 * from layers extracted once.
 *
 * The image is the demo image (see `cli/demo_image.ts`: the host's static
 * busybox) plus one layer holding `/fn/function.sh`, a tiny "function" that
 * greets the name it is given. This script is itself a filter: its stdin is
 * the request, its stdout the function's response, pretty-printed.
 *
 * Run: echo '{"input":{"name":"world"}}' | deno run --allow-run --allow-ffi examples/function.ts
 *
 * Permissions: --allow-run (unshare, runc, busybox) and --allow-ffi (libc:
 * mounts, and the cache, a temp dir, the environment and the uid, which
 * strata reaches through libc when --allow-read, --allow-write, --allow-env
 * and --allow-sys are not granted; see the README's "Deno permissions").
 *
 * @module
 */
import { join } from "@std/path";
import { TarWriter } from "../layer/tar_writer.ts";
import { buildDemoImage } from "../cli/demo_image.ts";
import { openImage } from "../image/open.ts";
import { ensureUserNamespace } from "../overlay/userns.ts";
import { CachingBundler } from "../bundle/bundler.ts";
import { runContainer } from "../bundle/run.ts";
import { makeTempDir, remove } from "../sys/files.ts";

const FUNCTION = `#!/bin/sh
# Reads {"input":{"name":"..."}} on stdin, answers on stdout.
req=$(cat)
name=$(printf '%s' "$req" | sed -n 's/.*"name" *: *"\\([^"]*\\)".*/\\1/p')
printf '{"desired":{"greeting":"hello, %s"},"results":[{"severity":"Normal","message":"ran as uid %s in %s"}]}\\n' \\
  "\${name:-nobody}" "$(id -u)" "$(hostname)"
`;

// Mounting needs root or a user namespace: re-executes this script in one
// (stdin and stdout pass through) unless it already runs in one.
await ensureUserNamespace();

const tmp = await makeTempDir({ prefix: "strata-function-" });
try {
  const fnLayer = new TarWriter()
    .directory("fn/", { mode: 0o755 })
    .file("fn/function.sh", FUNCTION, { mode: 0o755 })
    .bytes();
  const built = await buildDemoImage(join(tmp, "layout"), {
    extraLayers: [{ tar: fnLayer, createdBy: "add /fn/function.sh" }],
    config: { Entrypoint: ["/fn/function.sh"], Cmd: [] },
  });
  const cache = join(tmp, "cache");
  const image = await openImage(built.ref, { cacheRoot: cache });
  const bundler = await CachingBundler.create(cache);
  const bundle = await bundler.bundle(image, "function-1");
  // The request flows from our stdin to the container's; the response is captured.
  const { status, stdout } = await runContainer(bundle, { stdin: "inherit", stdout: "piped" });
  if (status !== 0) throw new Error(`the function exited with status ${status}`);
  const response = JSON.parse(new TextDecoder().decode(stdout));
  console.log(JSON.stringify(response, null, 2));
} finally {
  await remove(tmp, { recursive: true });
}
