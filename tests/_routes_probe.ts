/**
 * Child of tests/sys_routes_test.ts: calls every function of sys/files.ts,
 * sys/env.ts and sys/process.ts on a fixture tree and prints what each
 * returned or threw, as JSON. Run once with the Deno permissions granted
 * (Deno's own API) and once with `--allow-ffi` alone (libc), the two outputs
 * must be equal.
 *
 * `deno run PERMS tests/_routes_probe.ts FIXTURE SCRATCH`: FIXTURE is only
 * read (stat'ed before anything reads it, so times stay put), SCRATCH is
 * written; SCRATCH/ro is a directory of root's, mode 0555, holding a file
 * `keep`.
 *
 * @module
 */
import * as files from "../sys/files.ts";
import { deleteEnv, envObject, getEnv, setEnv } from "../sys/env.ts";
import { cwd, execPath, getGid, getUid, osRelease } from "../sys/process.ts";
import { granted } from "../sys/permissions.ts";

const [fixture, scratch] = Deno.args;
const out: Record<string, unknown> = {};

function norm(v: unknown): unknown {
  if (typeof v === "string") return v.replaceAll(scratch, "$S").replaceAll(fixture, "$F");
  if (v instanceof Uint8Array) return { bytes: Array.from(v) };
  if (v instanceof Date) return { date: v.getTime() };
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  }
  return v;
}

function error(e: unknown) {
  const err = e as Error & { code?: string };
  return {
    threw: err?.constructor?.name,
    name: err?.name,
    code: err?.code,
    message: norm(err?.message),
  };
}

async function probe(label: string, fn: () => unknown): Promise<void> {
  try {
    out[label] = { value: norm(await fn()) };
  } catch (e) {
    out[label] = error(e);
  }
}

/** A FileInfo without what differs between two scratch trees made at different times. */
function shape(st: Deno.FileInfo) {
  const { mtime: _m, atime: _a, birthtime: _b, ctime: _c, ino: _i, ...rest } = st;
  return rest;
}

const F = (p: string) => `${fixture}/${p}`;
const S = (p: string) => `${scratch}/${p}`;

// Metadata of the fixture first: nothing has read it yet.
for (
  const p of [
    "file",
    "dir",
    "link",
    "dangling",
    "fifo",
    "empty",
    "dir/nested",
    "missing",
    "secret",
    "ro",
  ]
) {
  await probe(`statSync ${p}`, () => files.statSync(F(p)));
  await probe(`lstatSync ${p}`, () => files.lstatSync(F(p)));
  await probe(`stat ${p}`, () => files.stat(F(p)));
  await probe(`lstat ${p}`, () => files.lstat(F(p)));
  await probe(`exists ${p}`, () => files.exists(F(p)));
}
await probe("stat loop", () => files.statSync(F("loop")));
await probe("stat through a file", () => files.statSync(F("file/x")));

// Reads.
await probe("readFileSync", () => files.readFileSync(F("file")));
await probe("readFile", () => files.readFile(F("file")));
await probe("readTextFileSync", () => files.readTextFileSync(F("file")));
await probe("readTextFile empty", () => files.readTextFile(F("empty")));
await probe("readFile big", async () => (await files.readFile(F("big"))).length);
await probe("readFile dir", () => files.readFile(F("dir")));
await probe("readFile missing", () => files.readFile(F("missing")));
await probe("readFileSync through a file", () => files.readFileSync(F("file/x")));
await probe("readFile NUL", () => files.readFile(F("fi\0le")));
await probe("readFile secret", () => files.readTextFile(F("secret")));
await probe("openSync secret", () => files.openFileSync(F("secret")));
await probe("readDir ro", () => [...files.readDirSync(F("ro"))]);
const sorted = (it: Iterable<Deno.DirEntry>) =>
  [...it].map((e) => ({ ...e })).sort((a, b) => a.name < b.name ? -1 : 1);
await probe("readDirSync", () => sorted(files.readDirSync(fixture)));
await probe("readDir", async () => {
  const list: Deno.DirEntry[] = [];
  for await (const e of files.readDir(fixture)) list.push(e);
  return sorted(list);
});
await probe("readDir missing", async () => {
  for await (const _ of files.readDir(F("missing"))) { /* nothing */ }
});
await probe("readDirSync file", () => [...files.readDirSync(F("file"))]);
await probe("readLinkSync", () => files.readLinkSync(F("link")));
await probe("readLink dangling", () => files.readLink(F("dangling")));
await probe("readLink file", () => files.readLink(F("file")));
await probe("realPathSync", () => files.realPathSync(`${fixture}/dir/../link`));
await probe("realPath missing", () => files.realPath(F("dangling")));
await probe("open read", async () => {
  const f = await files.openFile(F("file"));
  const buf = new Uint8Array(3);
  const a = await f.read(buf);
  const first = Array.from(buf);
  const pos = await f.seek(1, Deno.SeekMode.Start);
  const b = f.readSync(buf);
  const rest = await f.read(new Uint8Array(100));
  const end = await f.read(new Uint8Array(100));
  const zero = f.readSync(new Uint8Array(0));
  const st = shape(await f.stat());
  f.close();
  let again;
  try {
    f.close();
  } catch (e) {
    again = error(e);
  }
  return { a, first, pos, b, rest, end, zero, st, again };
});
await probe("open readable", async () => {
  const f = await files.openFile(F("big"));
  let n = 0;
  for await (const chunk of f.readable) n += chunk.length;
  return n;
});
await probe("open missing", () => files.openFile(F("missing")));
await probe("openSync create without write", () => files.openFileSync(S("x"), { create: true }));
await probe("open dir for writing", () => files.openFile(F("dir"), { write: true }));

// Writes, each in SCRATCH.
await probe("mkdirSync", () => {
  files.mkdirSync(S("d"), { mode: 0o750 });
  return shape(files.statSync(S("d")));
});
await probe("mkdirSync exists", () => files.mkdirSync(S("d")));
await probe("mkdir recursive", async () => {
  await files.mkdir(S("p/q/r"), { recursive: true, mode: 0o700 });
  await files.mkdir(S("p/q/r"), { recursive: true });
  return [shape(files.statSync(S("p"))), shape(files.statSync(S("p/q/r")))];
});
await probe(
  "mkdir recursive under a file",
  () => files.mkdir(`${fixture}/file/x/y`, { recursive: true }),
);
await probe("mkdir missing parent", () => files.mkdir(S("no/such")));
await probe("writeFileSync", () => {
  files.writeFileSync(S("w1"), new Uint8Array([1, 2, 3]));
  return [Array.from(files.readFileSync(S("w1"))), shape(files.lstatSync(S("w1")))];
});
await probe("writeTextFile mode", async () => {
  await files.writeTextFile(S("w2"), "hello", { mode: 0o640 });
  await files.writeTextFile(S("w2"), "again", { mode: 0o604 });
  return [files.readTextFileSync(S("w2")), shape(files.statSync(S("w2")))];
});
await probe("writeTextFileSync append", () => {
  files.writeTextFileSync(S("w3"), "a");
  files.writeTextFileSync(S("w3"), "b", { append: true });
  return files.readTextFileSync(S("w3"));
});
await probe(
  "writeFile createNew exists",
  () => files.writeFile(S("w3"), new Uint8Array(1), { createNew: true }),
);
await probe(
  "writeFile create false",
  () => files.writeFile(S("nope"), new Uint8Array(1), { create: false }),
);
await probe("writeTextFile missing dir", () => files.writeTextFile(S("no/file"), "x"));
await probe("chmodSync", () => {
  files.chmodSync(S("w1"), 0o4711);
  return files.statSync(S("w1")).mode;
});
await probe("chmod missing", () => files.chmod(S("missing"), 0o600));
await probe("renameSync", () => {
  files.renameSync(S("w1"), S("w1r"));
  return sorted(files.readDirSync(scratch)).map((e) => e.name);
});
await probe("rename missing", () => files.rename(S("missing"), S("x")));
await probe("rename over a non-empty dir", () => files.rename(S("w2"), S("p")));
await probe("symlinkSync", () => {
  files.symlinkSync("w2", S("l1"));
  return [files.readLinkSync(S("l1")), files.lstatSync(S("l1")).isSymlink];
});
await probe("symlink exists", () => files.symlink("x", S("l1")));
await probe("copyFile", async () => {
  await files.copyFile(S("w2"), S("c1"));
  return [files.readTextFileSync(S("c1")), shape(files.statSync(S("c1")))];
});
await probe("copyFile missing", () => files.copyFile(S("missing"), S("c2")));
await probe("open write", async () => {
  const f = await files.openFile(S("o1"), { write: true, createNew: true, mode: 0o600 });
  const n = await f.write(new TextEncoder().encode("abc"));
  f.writeSync(new TextEncoder().encode("def"));
  await f.truncate(4);
  await f.lock(true);
  await f.unlock();
  f.close();
  return [n, files.readTextFileSync(S("o1")), shape(files.statSync(S("o1")))];
});
await probe("lock contention", async () => {
  const a = await files.openFile(S("o1"), { read: true, write: true });
  const b = files.openFileSync(S("o1"), { read: true });
  await a.lock(true);
  const whileHeld = await b.tryLock(true);
  a.unlockSync();
  const afterwards = b.tryLockSync(true);
  a.close();
  b.close();
  return [whileHeld, afterwards];
});
// SCRATCH/ro is root's, 0555, with a file keep: a user may not write there.
await probe("writeFile in a read-only dir", () => files.writeFile(S("ro/x"), new Uint8Array(1)));
await probe("mkdir in a read-only dir", () => files.mkdir(S("ro/d")));
await probe("makeTempDir in a read-only dir", async () => {
  const d = await files.makeTempDir({ dir: S("ro") });
  files.removeSync(d);
  return /^\$S\/ro\/[0-9a-f]{1,16}$/.test(norm(d) as string);
});
await probe("chmod not mine", () => files.chmod(S("ro/keep"), 0o600));
await probe("remove in a read-only dir", () => files.remove(S("ro/keep")));
await probe("open writable", async () => {
  const f = await files.openFile(S("o2"), { write: true, create: true });
  await ReadableStream.from([new Uint8Array([1, 2]), new Uint8Array([3])]).pipeTo(f.writable);
  return Array.from(files.readFileSync(S("o2")));
});
await probe(
  "open createNew exists",
  () => files.openFile(S("o2"), { write: true, createNew: true }),
);
await probe("makeTempDirSync", () => {
  const d = files.makeTempDirSync({ dir: scratch, prefix: "pre-", suffix: "-suf" });
  return [/^\$S\/pre-[0-9a-f]{1,16}-suf$/.test(norm(d) as string), shape(files.statSync(d))];
});
await probe("makeTempDir missing dir", () => files.makeTempDir({ dir: S("missing") }));
await probe("makeTempFile", async () => {
  const f = await files.makeTempFile({ dir: scratch, prefix: "f-" });
  return [/^\$S\/f-[0-9a-f]{1,16}$/.test(norm(f) as string), shape(files.statSync(f))];
});
await probe("makeTempDir default", async () => {
  const d = await files.makeTempDir({ prefix: "strata-routes-" });
  const inTmp = d.startsWith(`${getEnv("TMPDIR") ?? "/tmp"}/strata-routes-`);
  files.removeSync(d);
  return inTmp;
});
await probe("removeSync file", () => files.removeSync(S("c1")));
await probe("removeSync symlink", () => files.removeSync(S("l1")));
await probe("removeSync non-empty dir", () => files.removeSync(S("p")));
await probe("remove recursive", async () => {
  await files.remove(S("p"), { recursive: true });
  return files.exists(S("p"));
});
await probe("remove missing", () => files.remove(S("missing")));
await probe("remove recursive missing", () => files.remove(S("missing"), { recursive: true }));
await probe("removeSync empty dir", () => files.removeSync(S("d")));
await probe(
  "scratch at the end",
  () =>
    sorted(files.readDirSync(scratch)).map((e) => e.name.replace(/-[0-9a-f]{1,16}(?=-|$)/, "-X")),
);

// The environment.
await probe("getEnv", () => getEnv("STRATA_ROUTES_A"));
await probe("getEnv missing", () => getEnv("STRATA_ROUTES_MISSING"));
await probe("getEnv HOME", () => getEnv("HOME"));
await probe("getEnv empty value", () => getEnv("STRATA_ROUTES_EMPTY"));
await probe("getEnv invalid name", () => getEnv("A=B"));
await probe("getEnv empty name", () => getEnv(""));
await probe("getEnv not UTF-8", () => getEnv("STRATA_ROUTES_LATIN1"));
await probe("setEnv", () => {
  setEnv("STRATA_ROUTES_SET", "v=1");
  return [getEnv("STRATA_ROUTES_SET"), envObject()["STRATA_ROUTES_SET"]];
});
await probe("setEnv NUL", () => setEnv("STRATA_ROUTES_SET", "a\0b"));
await probe("deleteEnv", () => {
  deleteEnv("STRATA_ROUTES_SET");
  deleteEnv("STRATA_ROUTES_NEVER");
  return getEnv("STRATA_ROUTES_SET");
});
await probe("deleteEnv invalid", () => deleteEnv("A=B"));
await probe("envObject", () => {
  const o = envObject();
  return Object.fromEntries(Object.entries(o).filter(([k]) => k.startsWith("STRATA_ROUTES_")));
});
await probe("envObject size", () => Object.keys(envObject()).length);

// The process.
await probe("uid", () => getUid());
await probe("gid", () => getGid());
await probe("execPath", () => execPath());
await probe("cwd", () => cwd());
await probe("osRelease", () => osRelease());

console.log(JSON.stringify({
  routes: {
    read: granted("read"),
    write: granted("write"),
    env: granted("env"),
    sys: granted("sys"),
  },
  results: out,
}));
