/**
 * Child of tests/sys_routes_test.ts: applies the layer tarball FILE to the
 * new directory ROOT on the layer worker (`threads: "worker"`), so that the
 * worker's module is loaded the way this process' permissions allow (its
 * file, or blob: URLs through sys/worker.ts without --allow-read), and
 * prints the result as JSON.
 *
 * `deno run PERMS tests/_worker_probe.ts FILE ROOT`
 *
 * @module
 */
import { TarApplicator } from "../layer/applicator.ts";
import { mkdirSync, openFile } from "../sys/files.ts";

const [file, root] = Deno.args;
mkdirSync(root, { mode: 0o755 });
const f = await openFile(file);
const r = await new TarApplicator({ threads: "worker" }).apply(f.readable, root);
console.log(JSON.stringify({ entries: r.entries, bytes: r.bytes, warnings: r.warnings }));
