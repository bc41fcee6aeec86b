/**
 * Fixtures for the bundle, spec and run tests: a busybox root filesystem made
 * from Debian's busybox-static, plain-directory bundles (runc accepts a plain
 * directory as rootfs), test images built in code, and a way to run a Deno
 * snippet as the unprivileged test user inside a user namespace.
 *
 * @module
 */
import { join } from "@std/path";
import type { Bundle } from "../bundle/bootstrap.ts";
import { JSONSpecWriter } from "../bundle/writer.ts";
import { withRootFS } from "../bundle/options.ts";
import type { SpecOption } from "../bundle/spec.ts";
import { digestOf } from "../image/blob.ts";
import { type Image, type ImageConfig, MediaType } from "../image/types.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { type MemoryLayer, memoryLayer } from "./_layers.ts";
import { repoRoot, run, runAsUser, type RunResult } from "./_helpers.ts";

/** The busybox applets the tests use. */
export const APPLETS = [
  "sh",
  "true",
  "false",
  "echo",
  "id",
  "cat",
  "ls",
  "sleep",
  "touch",
  "pwd",
  "env",
  "kill",
  "mkdir",
  "rm",
  "hostname",
  "wc",
  "grep",
  "stat",
];

/** Test passwd: root, app (1000, group app), svc (1001, primary group svcgrp 2000). */
export const PASSWD = [
  "root:x:0:0:root:/root:/bin/sh",
  "app:x:1000:1000:App:/home/app:/bin/sh",
  "svc:x:1001:2000::/srv:/bin/sh",
  "",
].join("\n");

/** Test group: app is also in staff (50) and wheel (10); svc in staff. */
export const GROUP = [
  "root:x:0:",
  "wheel:x:10:app",
  "staff:x:50:app,svc",
  "app:x:1000:",
  "svcgrp:x:2000:",
  "",
].join("\n");

let busybox: Uint8Array | undefined;

/** The bytes of the static busybox binary. */
export function busyboxBytes(): Uint8Array {
  return busybox ??= Deno.readFileSync("/bin/busybox");
}

/**
 * Creates a busybox root filesystem at `dir`: `/bin/busybox` with applet
 * symlinks, `/etc/passwd`, `/etc/group`, empty `/tmp`, `/srv`, `/home/app`.
 */
export async function busyboxRootfs(
  dir: string,
  files: { passwd?: string; group?: string } = {},
): Promise<string> {
  await Deno.mkdir(join(dir, "bin"), { recursive: true });
  await Deno.writeFile(join(dir, "bin/busybox"), busyboxBytes(), { mode: 0o755 });
  for (const a of APPLETS) await Deno.symlink("busybox", join(dir, "bin", a));
  for (const d of ["etc", "tmp", "srv", "home/app", "proc", "sys", "dev"]) {
    await Deno.mkdir(join(dir, d), { recursive: true });
  }
  await Deno.chmod(join(dir, "tmp"), 0o1777);
  await Deno.writeTextFile(join(dir, "etc/passwd"), files.passwd ?? PASSWD);
  await Deno.writeTextFile(join(dir, "etc/group"), files.group ?? GROUP);
  return dir;
}

/** A plain-directory bundle whose cleanup is counted. */
export interface PlainBundle extends Bundle {
  /** Number of times `cleanup()` ran. */
  readonly cleanups: number;
  /** The rootfs directory. */
  readonly rootfs: string;
}

/**
 * Makes a bundle at `dir` with a busybox rootfs (copied once per bundle) and
 * a `config.json` from `options` (rootfs set first, so options may override).
 */
export async function plainBundle(
  dir: string,
  options: SpecOption[],
  writer = new JSONSpecWriter({ onWarning: () => {} }),
): Promise<PlainBundle> {
  await Deno.mkdir(dir, { recursive: true });
  const rootfs = await busyboxRootfs(join(dir, "rootfs"));
  await writer.write(join(dir, "config.json"), withRootFS(rootfs), ...options);
  let cleanups = 0;
  return {
    path: dir,
    rootfs,
    get cleanups() {
      return cleanups;
    },
    async cleanup() {
      cleanups++;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A busybox base layer (tar built in code). */
export function busyboxLayer(): MemoryLayer {
  const t = new TarWriter({ defaultMtime: 1_700_000_000 });
  for (const d of ["bin/", "etc/", "tmp/", "srv/", "home/", "home/app/", "proc/", "sys/", "dev/"]) {
    t.directory(d, { mode: d === "tmp/" ? 0o1777 : 0o755 });
  }
  t.file("bin/busybox", busyboxBytes(), { mode: 0o755 });
  for (const a of APPLETS) t.symlink(`bin/${a}`, "busybox");
  t.file("etc/passwd", PASSWD, { mode: 0o644 });
  t.file("etc/group", GROUP, { mode: 0o644 });
  return memoryLayer(t, "gzip");
}

/** A small layer adding files (`name -> content`) under existing directories. */
export function addLayer(files: Record<string, string>, dirs: string[] = []): MemoryLayer {
  const t = new TarWriter({ defaultMtime: 1_700_000_000 });
  for (const d of dirs) t.directory(d.endsWith("/") ? d : d + "/", { mode: 0o755 });
  for (const [n, c] of Object.entries(files)) t.file(n, c, { mode: 0o644 });
  return memoryLayer(t, "gzip");
}

/** Builds an in-memory {@linkcode Image} from layers and a container config. */
export function testImage(
  layers: MemoryLayer[],
  config: ImageConfig["config"] = {},
  name = "test/busybox:latest",
): Image {
  const cfg: ImageConfig = {
    architecture: "amd64",
    os: "linux",
    config,
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffID) },
  };
  const cfgBytes = new TextEncoder().encode(JSON.stringify(cfg));
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: digestOf(cfgBytes), size: cfgBytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  return {
    digest: digestOf(new TextEncoder().encode(JSON.stringify(manifest))),
    manifest,
    configDigest: digestOf(cfgBytes),
    config: cfg,
    layers,
    name,
  };
}

/**
 * Runs a TypeScript snippet (module code; may import strata by absolute
 * `file://` URL via `STRATA`) as the test user inside
 * `unshare --user --map-root-user --mount` (plus `--map-auto` when asked).
 */
export async function runSnippetAsUser(
  code: string,
  options: { mapAuto?: boolean; dir: string; env?: Record<string, string> },
): Promise<RunResult> {
  const file = join(String(options.dir), `snippet-${crypto.randomUUID().slice(0, 8)}.ts`);
  await Deno.writeTextFile(file, code.replaceAll("STRATA/", `file://${repoRoot}/`));
  await Deno.chmod(file, 0o644);
  const config = await snippetConfig(String(options.dir));
  return await runAsUser([
    "unshare",
    "--user",
    "--map-root-user",
    ...(options.mapAuto ? ["--map-auto"] : []),
    "--mount",
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    "--frozen",
    `--config=${config}`,
    file,
  ], { env: options.env });
}

/**
 * Writes a minimal deno.json (just the `@std/path` mapping strata's modules
 * use) into `dir`: snippets must not make Deno install the repository's npm
 * packages, which the test user cannot fetch.
 */
export async function snippetConfig(dir: string): Promise<string> {
  const path = join(dir, "snippet-deno.json");
  await Deno.writeTextFile(path, JSON.stringify({ imports: { "@std/path": "node:path" } }));
  await Deno.chmod(path, 0o644);
  return path;
}

/** Lists the container ids a runtime state directory holds (runc keeps one dir each). */
export async function stateEntries(stateDir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(stateDir)) if (e.isDirectory) out.push(e.name);
  } catch {
    // no state dir: nothing
  }
  return out.filter((n) => !n.startsWith("probe-"));
}

/** Runs `runc --root state kill id sig`. */
export function runcKill(stateDir: string, id: string, sig: string): Promise<RunResult> {
  return run("runc", ["--root", stateDir, "kill", id, sig]);
}
