/**
 * Shared test fixtures: temporary directories that clean up after themselves,
 * an unprivileged user with subordinate ids for the rootless paths, and small
 * process helpers. Tests build every fixture in code or with Debian tools.
 *
 * @module
 */
import { join } from "@std/path";
import { OverlayMount } from "../overlay/mount.ts";

/** The unprivileged user the rootless tests run as. */
export const TEST_USER = "strata-test";
/** First subordinate id given to {@linkcode TEST_USER}. */
export const TEST_SUBID_START = 300000;
/** Number of subordinate ids given to {@linkcode TEST_USER}. */
export const TEST_SUBID_COUNT = 65536;

/** True when the tests run as real root. */
export const isRoot = Deno.uid() === 0;

/** Creates a temp dir; `Symbol.asyncDispose` unmounts anything below it and removes it. */
export async function tempDir(prefix = "strata-test-"): Promise<string & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  // World-traversable so that the unprivileged test user can reach fixtures.
  await Deno.chmod(path, 0o755);
  const s = Object.assign(Object(path), {
    [Symbol.asyncDispose]: () => removeTree(path),
  });
  return s as string & AsyncDisposable;
}

/** Unmounts every mount at or below `path` (deepest first), then removes it. */
export async function removeTree(path: string): Promise<void> {
  await unmountBelow(path);
  await Deno.remove(path, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

/** Lists mountpoints at or below `path`, deepest first. */
export async function mountsBelow(path: string): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const mp = line.split(" ")[4];
    if (!mp) continue;
    const m = mp.replace(/\\(\d{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    if (m === path || m.startsWith(path + "/")) out.push(m);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Lazily unmounts everything at or below `path`. */
export async function unmountBelow(path: string): Promise<void> {
  for (const m of await mountsBelow(path)) {
    await new Deno.Command("umount", { args: ["-l", m], stderr: "null" }).output();
  }
}

/**
 * A directory path of exactly `length` characters below `dir` (components of
 * at most 200 characters: a name is at most 255 bytes), for cache roots long
 * enough to cross the kernel's limits (fsconfig's 256-byte strings, the
 * 4 KiB mount options page, PATH_MAX). Nothing is created.
 */
export function longPath(dir: string, length: number): string {
  let p = dir;
  while (p.length < length) {
    const left = length - p.length;
    // "/" and at least one character each time; never leave a single one over.
    const n = left - 1 <= 200 ? left - 1 : left - 201 === 1 ? 199 : 200;
    p += "/" + "p".repeat(n);
  }
  return p;
}

/** The bytes of `parts`, one after another, in a new array. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Result of {@linkcode run}. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and captures its output. */
export async function run(
  cmd: string,
  args: string[],
  options: Deno.CommandOptions = {},
): Promise<RunResult> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    ...options,
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** Runs a command and throws, with its stderr, unless it exits 0. */
export async function sh(cmd: string, args: string[], options: Deno.CommandOptions = {}) {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Tells whether `cmd` is on PATH. */
export async function have(cmd: string): Promise<boolean> {
  return (await run("sh", ["-c", `command -v ${cmd}`])).code === 0;
}

let userReady: Promise<{ uid: number; gid: number; home: string }> | undefined;

/**
 * Copies this process's npm package metadata (`registry.json` of each
 * package, not the packages) into the test user's Deno cache. The user runs
 * root's checkout, whose `node_modules` it cannot lock: Deno then asks the
 * npm registry for the metadata of every npm package in a program's graph on
 * each start ("Download https://registry.npmjs.org/smol-toml" on stderr)
 * and never keeps the answer, unless the user's own cache already has it.
 */
async function seedUserNpmMetadata(denoDir: string, uid: number, gid: number): Promise<void> {
  const info = await run(denoPath, ["info", "--json"]);
  const npmCache = JSON.parse(info.stdout).npmCache as string;
  const from = join(npmCache, "registry.npmjs.org");
  const to = join(denoDir, "npm", "registry.npmjs.org");
  const packages: string[] = [];
  const names = (dir: string) => {
    try {
      return [...Deno.readDirSync(dir)].filter((e) => e.isDirectory).map((e) => e.name);
    } catch {
      return []; // no npm cache here yet
    }
  };
  for (const name of names(from)) {
    if (name.startsWith("@")) packages.push(...names(join(from, name)).map((s) => `${name}/${s}`));
    else packages.push(name);
  }
  for (const p of packages) {
    const meta = join(from, p, "registry.json");
    try {
      await Deno.mkdir(join(to, p), { recursive: true });
      await Deno.copyFile(meta, join(to, p, "registry.json"));
    } catch {
      // no metadata kept for that one
    }
  }
  await sh("chown", ["-R", `${uid}:${gid}`, denoDir]);
}

/**
 * Makes sure {@linkcode TEST_USER} exists with a subordinate id range in
 * /etc/subuid and /etc/subgid (root only). Idempotent.
 */
export function ensureTestUser(): Promise<{ uid: number; gid: number; home: string }> {
  userReady ??= (async () => {
    if ((await run("id", ["-u", TEST_USER])).code !== 0) {
      await sh("useradd", ["--create-home", "--shell", "/bin/sh", TEST_USER]);
    }
    for (const f of ["/etc/subuid", "/etc/subgid"]) {
      const text = await Deno.readTextFile(f).catch(() => "");
      if (!text.split("\n").some((l) => l.startsWith(`${TEST_USER}:`))) {
        await Deno.writeTextFile(f, `${TEST_USER}:${TEST_SUBID_START}:${TEST_SUBID_COUNT}\n`, {
          append: true,
        });
      }
    }
    const uid = Number((await sh("id", ["-u", TEST_USER])).trim());
    const gid = Number((await sh("id", ["-g", TEST_USER])).trim());
    const home = join("/home", TEST_USER);
    await seedUserNpmMetadata(join(home, ".deno"), uid, gid);
    return { uid, gid, home };
  })();
  return userReady;
}

/**
 * Runs `args` as {@linkcode TEST_USER} (via `setpriv`, no PAM, no TTY), with a
 * clean environment whose HOME is the user's.
 */
export async function runAsUser(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; stdin?: "null" | "piped" } = {},
): Promise<RunResult> {
  const { uid, gid, home } = await ensureTestUser();
  return await run("setpriv", [
    `--reuid=${uid}`,
    `--regid=${gid}`,
    "--init-groups",
    "--",
    "env",
    "-i",
    `HOME=${home}`,
    `PATH=${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
    // the Deno cache ensureTestUser filled, unless a test names its own
    ...Object.entries({ DENO_DIR: join(home, ".deno"), ...TEST_REGISTRIES_ENV, ...options.env })
      .map(([k, v]) => `${k}=${v}`),
    ...args,
  ], { cwd: options.cwd ?? "/" });
}

/** The path of the deno binary running the tests. */
export const denoPath = Deno.execPath();

/** Absolute path of the repository root. */
export const repoRoot = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * The registries.conf environment of every test (see tests/registries.conf):
 * set for this process at once, passed on to the CLI it starts and to
 * {@linkcode runAsUser}'s clean environment.
 */
export const TEST_REGISTRIES_ENV: Record<string, string> = {
  CONTAINERS_REGISTRIES_CONF: `${repoRoot}/tests/registries.conf`,
  CONTAINERS_REGISTRIES_CONF_DIR: `${repoRoot}/tests/registries.conf.d`,
};
for (const [k, v] of Object.entries(TEST_REGISTRIES_ENV)) Deno.env.set(k, v);
Deno.env.delete("REGISTRIES_CONFIG_PATH");

/**
 * Runs the repository's CLI, `deno run -A cli.ts ARGS`, with this process's
 * environment (plus `env`) minus `STRATA_CACHE` (every call names its cache)
 * and `NODE_EXTRA_CA_CERTS` (Deno warns about it here), killed with its
 * process group after `timeout` seconds (the CLI may re-execute itself), so
 * that a case that hangs fails instead of stalling the suite.
 */
export async function runCli(
  args: string[],
  options: {
    env?: Record<string, string>;
    timeout?: number;
    /** Deno flags after `-A`. */
    denoFlags?: string[];
    /** Run in {@linkcode sandboxArgv}'s namespace, where only this directory is writable. */
    sandbox?: string;
  } = {},
): Promise<RunResult> {
  const env = { ...Deno.env.toObject(), ...options.env };
  delete env.STRATA_CACHE;
  delete env.NODE_EXTRA_CA_CERTS;
  let argv = [denoPath, "run", "-A", ...options.denoFlags ?? [], `${repoRoot}/cli.ts`, ...args];
  if (options.sandbox !== undefined) argv = sandboxArgv(options.sandbox, argv);
  const out = await new Deno.Command("timeout", {
    args: ["-s", "KILL", String(options.timeout ?? 60), ...argv],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
    clearEnv: true,
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/**
 * The argv that runs `argv` in a private mount namespace where every mount
 * is read-only and only `base` is writable (root only). Tests that feed
 * hostile input to strata run it this way, so that should confinement ever
 * break, nothing outside `base` can be damaged (a broken build once emptied
 * a real `/etc`).
 */
export function sandboxArgv(base: string, argv: string[]): string[] {
  const script = [
    "set -e",
    "mount --make-rprivate /",
    // every mount read-only (in this namespace only), then base alone writable
    'for m in $(cut -d" " -f5 /proc/self/mountinfo | sort -r); do',
    '  mount -o remount,bind,ro "$m" 2>/dev/null || true',
    "done",
    'mount --bind "$1" "$1"',
    'mount -o remount,bind,rw "$1"',
    "shift",
    'exec "$@"',
  ].join("\n");
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    script,
    "sh",
    base,
    ...argv,
  ];
}

/**
 * Mounts `lowers` (bottom first) as a read-only overlay on a fresh directory
 * below `dir`, runs `fn` on it, then unmounts and removes the directory.
 */
export async function withOverlayView<T>(
  dir: string,
  lowers: string[],
  fn: (view: string) => Promise<T>,
): Promise<T> {
  const view = await Deno.makeTempDir({ dir, prefix: "view-" });
  const m = new OverlayMount({ mountpoint: view, lower: lowers, readonly: true });
  try {
    await m.mount();
    return await fn(view);
  } finally {
    await m.unmount();
    await Deno.remove(view).catch(() => {});
  }
}

/** A user namespace's maps, as `/proc/PID/uid_map` takes them: `inside outside count` lines. */
export interface UsernsMaps {
  uid: string;
  gid: string;
}

/**
 * Runs `argv` as uid 0 and gid 0 of a new user namespace whose maps root
 * writes itself (any maps: newuidmap refuses root the ones it has no
 * /etc/subuid range for), in a private mount namespace of its own, killed
 * after `timeout` seconds. A process holding the user namespace is made
 * first, its maps written, then `argv` is entered into it (nsenter, then
 * `unshare --mount`): a program executed in the namespace before its maps
 * exist would lose its capabilities there. Root only.
 */
export async function runInUserns(
  maps: UsernsMaps,
  argv: string[],
  options: { env?: Record<string, string>; timeout?: number; cwd?: string } = {},
): Promise<RunResult> {
  const holder = new Deno.Command("unshare", {
    args: ["--user", "--", "sleep", "600"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const ours = await Deno.readLink("/proc/self/ns/user");
    for (let i = 0; i < 500; i++) {
      const theirs = await Deno.readLink(`/proc/${holder.pid}/ns/user`).catch(() => ours);
      if (theirs !== ours) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await Deno.writeTextFile(`/proc/${holder.pid}/uid_map`, maps.uid);
    await Deno.writeTextFile(`/proc/${holder.pid}/gid_map`, maps.gid);
    const env = { ...Deno.env.toObject(), ...options.env };
    delete env.STRATA_CACHE;
    delete env.NODE_EXTRA_CA_CERTS;
    return await run("timeout", [
      "-s",
      "KILL",
      String(options.timeout ?? 120),
      "nsenter",
      "--user",
      "--target",
      String(holder.pid),
      "--setuid",
      "0",
      "--setgid",
      "0",
      "--",
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "--",
      ...argv,
    ], { env, clearEnv: true, cwd: options.cwd ?? "/" });
  } finally {
    try {
      holder.kill("SIGKILL");
    } catch {
      // already gone
    }
    await holder.status;
  }
}

/** The first subordinate uid and gid /etc/subuid and /etc/subgid give {@linkcode TEST_USER}, and how many. */
export async function testUserSubids(): Promise<{ start: number; count: number }> {
  await ensureTestUser();
  const line = (await Deno.readTextFile("/etc/subuid")).split("\n")
    .find((l) => l.startsWith(`${TEST_USER}:`))!;
  const gline = (await Deno.readTextFile("/etc/subgid")).split("\n")
    .find((l) => l.startsWith(`${TEST_USER}:`))!;
  const [, start, count] = line.split(":").map(Number);
  const [, gstart, gcount] = gline.split(":").map(Number);
  if (start !== gstart || count !== gcount) {
    throw new Error(`${TEST_USER}'s subordinate uids and gids differ: ${line} / ${gline}`);
  }
  return { start, count };
}
