import { join } from "@std/path";
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import {
  DEFAULT_HOSTNAME,
  defaultSpec,
  newSpec,
  NoCommandError,
  RlimitError,
  type Spec,
  SpecError,
} from "../bundle/spec.ts";
import {
  parseBytes,
  parseMilliCPU,
  withArgs,
  withCmd,
  withCPULimit,
  withCwd,
  withEntrypoint,
  withEnv,
  withHostname,
  withHostNetwork,
  withImageConfig,
  withMemoryLimit,
  withMounts,
  withNetworkNone,
  withPidsLimit,
  withRlimit,
  withRootFS,
  withTerminal,
  withUser,
  withUserNamespaceMappings,
} from "../bundle/options.ts";
import {
  InvalidUserError,
  parseGroup,
  parsePasswd,
  readFileInRoot,
  resolveUser,
  UnknownGroupError,
  UnknownUserError,
  UserFileFormatError,
} from "../bundle/user.ts";
import { hostRlimits, parseLimits } from "../bundle/host.ts";
import { adaptSpecToHost, JSONSpecWriter } from "../bundle/writer.ts";
import { ensureTestUser, isRoot, tempDir } from "./_helpers.ts";
import { GROUP, PASSWD, runSnippetAsUser, snippetConfig } from "./_bundle_helpers.ts";

const db = { passwd: parsePasswd(PASSWD), group: parseGroup(GROUP) };

Deno.test("defaults: namespaces, no new privileges, masked paths, small capability set", () => {
  const s = defaultSpec();
  assertEquals(
    s.linux!.namespaces!.map((n) => n.type).sort(),
    ["cgroup", "ipc", "mount", "network", "pid", "uts"],
  );
  assertEquals(s.process!.noNewPrivileges, true);
  assertEquals(s.process!.terminal, false);
  for (const p of ["/proc/kcore", "/proc/keys", "/sys/firmware"]) {
    assert(s.linux!.maskedPaths!.includes(p), p);
  }
  assert(s.linux!.readonlyPaths!.includes("/proc/sys"));
  const docker = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
  ];
  const caps = s.process!.capabilities!;
  for (const set of [caps.bounding, caps.effective, caps.permitted]) {
    for (const c of set!) assert(docker.includes(c), `${c} is not in Docker's default set`);
  }
  assert(!caps.bounding!.includes("CAP_SYS_ADMIN"));
  assertEquals(caps.ambient, undefined);
  assertEquals(s.mounts!.map((m) => m.destination), [
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
  ]);
  // devpts must not ask for gid=5: unmapped in a root-only user namespace.
  assert(!s.mounts![2].options!.some((o) => o.startsWith("gid=")));
});

Deno.test("defaults: no rlimit above this host's", () => {
  const host = hostRlimits();
  const s = defaultSpec();
  assert(s.process!.rlimits!.length > 0);
  for (const r of s.process!.rlimits!) {
    assert(r.hard <= host[r.type].hard, `${r.type} hard ${r.hard} > host ${host[r.type].hard}`);
    assert(r.soft <= r.hard);
  }
});

Deno.test("defaults: rlimits follow a lowered host limit (prlimit -n 512)", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  const f = join(dir, "s.ts");
  await Deno.writeTextFile(
    f,
    `import { defaultSpec } from "${new URL("../bundle/spec.ts", import.meta.url)}";\n` +
      `console.log(JSON.stringify(defaultSpec().process.rlimits));`,
  );
  const out = await new Deno.Command("prlimit", {
    args: [
      "--nofile=512:512",
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      "--config",
      await snippetConfig(dir),
      f,
    ],
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  assertEquals(r, [{ type: "RLIMIT_NOFILE", hard: 512, soft: 512 }]);
});

Deno.test("parseLimits reads /proc/self/limits rows", () => {
  const l = parseLimits(
    "Limit                     Soft Limit           Hard Limit           Units\n" +
      "Max open files            1024                 4096                 files\n" +
      "Max core file size        0                    unlimited            bytes\n",
  );
  assertEquals(l.RLIMIT_NOFILE, { soft: 1024, hard: 4096 });
  assertEquals(l.RLIMIT_CORE, { soft: 0, hard: Infinity });
});

Deno.test("user resolution: the six forms of the image spec", () => {
  const table: [string, number, number, number[]][] = [
    // user: primary group from passwd, supplementary from group
    ["app", 1000, 1000, [10, 50]],
    // uid listed in passwd: same as its name
    ["1000", 1000, 1000, [10, 50]],
    // user:group: only that group
    ["app:staff", 1000, 50, []],
    // uid:gid: no lookups
    ["1000:50", 1000, 50, []],
    // uid:group
    ["1000:wheel", 1000, 10, []],
    // user:gid (a gid no file lists)
    ["svc:4242", 1001, 4242, []],
    // svc: primary group 2000 from passwd, staff from group
    ["svc", 1001, 2000, [50]],
    // an unlisted uid runs with gid 0 (containerd, Docker)
    ["4242", 4242, 0, []],
    ["4242:4243", 4242, 4243, []],
    ["root", 0, 0, []],
  ];
  for (const [user, uid, gid, extra] of table) {
    const r = resolveUser(user, db);
    assertEquals(
      [r.uid, r.gid, [...r.additionalGids].sort((a, b) => a - b)],
      [uid, gid, extra],
      user,
    );
  }
});

Deno.test("user resolution: unknown user or group, malformed strings", () => {
  assertThrows(() => resolveUser("nobody", db), UnknownUserError, `"nobody"`);
  assertThrows(() => resolveUser("nobody:staff", db), UnknownUserError, "/etc/passwd");
  assertThrows(() => resolveUser("app:nogroup", db), UnknownGroupError, `"nogroup"`);
  assertThrows(() => resolveUser("1000:nogroup", db), UnknownGroupError, "/etc/group");
  assertThrows(() => resolveUser("a:b:c", db), InvalidUserError, "more than one colon");
  assertThrows(() => resolveUser(":50", db), InvalidUserError, "user part is empty");
  assertThrows(() => resolveUser("app:", db), InvalidUserError, "group part is empty");
  assertThrows(() => resolveUser("", db), InvalidUserError);
});

Deno.test("passwd and group parsing: comments, blanks, CRLF; errors name file and line", () => {
  const p = parsePasswd("# comment\n\nroot:x:0:0:root:/root:/bin/sh\r\n+::::::\n");
  assertEquals(p, [{ name: "root", uid: 0, gid: 0, home: "/root" }]);
  const e1 = assertThrows(
    () => parsePasswd("root:x:0:0:root:/root:/bin/sh\nbroken:x:12\n", "/r/etc/passwd"),
    UserFileFormatError,
  );
  assertEquals([e1.file, e1.line], ["/r/etc/passwd", 2]);
  assertStringIncludes(e1.message, "/r/etc/passwd line 2");
  assertThrows(() => parsePasswd("a:x:one:0::/:/bin/sh\n"), UserFileFormatError, `uid "one"`);
  assertThrows(() => parsePasswd("a:x:1:-1::/:/bin/sh\n"), UserFileFormatError, `gid "-1"`);
  assertThrows(() => parseGroup("a:x:1:\nb:x:zz:\n"), UserFileFormatError, "line 2");
  assertThrows(() => parseGroup("a:x:1\n"), UserFileFormatError, "expected 4");
  assertEquals(parseGroup("g:x:7: a , b,\n")[0].members, ["a", "b"]);
});

Deno.test("withImageConfig: argv, env, workdir, hostname and user from the rootfs", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  await Deno.mkdir(join(dir, "etc"));
  await Deno.writeTextFile(join(dir, "etc/passwd"), PASSWD);
  await Deno.writeTextFile(join(dir, "etc/group"), GROUP);
  const s = await newSpec(withImageConfig({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [] },
    config: {
      Entrypoint: ["/bin/sh", "-c"],
      Cmd: ["echo hi"],
      Env: ["PATH=/opt/bin:/bin", "FOO=bar"],
      WorkingDir: "/srv",
      Hostname: "imagehost",
      User: "app",
    },
  }, dir));
  assertEquals(s.process!.args, ["/bin/sh", "-c", "echo hi"]);
  // The image's PATH replaces the default one instead of being appended after it.
  assertEquals(s.process!.env!.filter((e) => e.startsWith("PATH=")), ["PATH=/opt/bin:/bin"]);
  assert(s.process!.env!.includes("FOO=bar"));
  assert(s.process!.env!.includes("HOME=/home/app"));
  assertEquals(s.process!.cwd, "/srv");
  assertEquals(s.hostname, "imagehost");
  assertEquals(s.process!.user.uid, 1000);
  assertEquals(s.process!.user.gid, 1000);
  assertEquals(s.process!.user.additionalGids!.sort(), [10, 50]);
});

Deno.test("withImageConfig: the root path of the spec is used when no rootfs is given", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  await Deno.mkdir(join(dir, "etc"));
  await Deno.writeTextFile(join(dir, "etc/passwd"), PASSWD);
  await Deno.writeTextFile(join(dir, "etc/group"), GROUP);
  const s = await newSpec(withRootFS(dir), withImageConfig({ Cmd: ["id"], User: "svc" }));
  assertEquals([s.process!.user.uid, s.process!.user.gid], [1001, 2000]);
  await assertRejects(
    () => newSpec(withImageConfig({ Cmd: ["id"], User: "svc" })),
    UnknownUserError,
    "no rootfs",
  );
});

Deno.test("caller options after the image config win", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  await Deno.mkdir(join(dir, "etc"));
  await Deno.writeTextFile(join(dir, "etc/passwd"), PASSWD);
  await Deno.writeTextFile(join(dir, "etc/group"), GROUP);
  const s = await newSpec(
    withRootFS(dir),
    withImageConfig({
      Entrypoint: ["/bin/echo"],
      Cmd: ["default"],
      Env: ["FOO=image"],
      WorkingDir: "/srv",
      User: "app",
    }),
    withCmd("override"),
    withEnv({ FOO: "caller" }),
    withCwd("/tmp"),
    withUser("svc:staff"),
  );
  assertEquals(s.process!.args, ["/bin/echo", "override"]);
  assertEquals(s.process!.env!.filter((e) => e.startsWith("FOO=")), ["FOO=caller"]);
  assertEquals(s.process!.cwd, "/tmp");
  assertEquals(s.process!.user.uid, 1001);
  assertEquals(s.process!.user.gid, 50);
  assertEquals(s.process!.user.additionalGids, undefined);
  assert(s.process!.env!.includes("HOME=/srv"));
  const s2 = await newSpec(
    withImageConfig({ Entrypoint: ["/bin/echo"], Cmd: ["x"] }),
    withArgs("ls"),
  );
  assertEquals(s2.process!.args, ["ls"]);
  // --entrypoint: replaces the Entrypoint and drops the image's Cmd (docker).
  const image = withImageConfig({ Entrypoint: ["/app"], Cmd: ["--serve"] });
  assertEquals((await newSpec(image, withEntrypoint("/bin/sh"))).process!.args, ["/bin/sh"]);
  assertEquals(
    (await newSpec(image, withEntrypoint("/bin/sh"), withCmd("-c", "id"))).process!.args,
    ["/bin/sh", "-c", "id"],
  );
  assertEquals((await newSpec(image, withEntrypoint(), withCmd("ls"))).process!.args, ["ls"]);
  const noCommand = await newSpec(image, withEntrypoint());
  assertThrows(() => adaptSpecToHost(noCommand), NoCommandError);
  // -t: a terminal, and TERM unless the image or the caller set one.
  const tty = await newSpec(withTerminal(), withEnv(["TERM=vt100"]));
  assertEquals([tty.process!.terminal, tty.process!.env!.filter((e) => e.startsWith("TERM="))], [
    true,
    ["TERM=vt100"],
  ]);
  // Hostname: docker's field, kept when sethostname(2) takes it; a bad one named.
  assertEquals((await newSpec(withImageConfig({ Hostname: "web" }))).hostname, "web");
  const long = await newSpec(withImageConfig({ Hostname: "h".repeat(65) }));
  assertEquals(long.hostname, DEFAULT_HOSTNAME);
  await assertRejects(() => newSpec(withHostname("h".repeat(65))), SpecError, "64 bytes");
  await assertRejects(() => newSpec(withHostname("")), SpecError, "hostname");
  const kept = await newSpec(withImageConfig({ Env: ["TERM=linux"] }), withTerminal());
  assertEquals(kept.process!.env!.filter((e) => e.startsWith("TERM=")), ["TERM=linux"]);
});

Deno.test("HOME: from passwd unless the image or the caller sets it", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  await Deno.mkdir(join(dir, "etc"));
  await Deno.writeTextFile(join(dir, "etc/passwd"), PASSWD);
  await Deno.writeTextFile(join(dir, "etc/group"), GROUP);
  const home = (s: Spec) => s.process!.env!.filter((e) => e.startsWith("HOME="));
  assertEquals(home(await newSpec(withRootFS(dir), withImageConfig({ Cmd: ["id"] }))), [
    "HOME=/root",
  ]);
  assertEquals(
    home(await newSpec(withRootFS(dir), withImageConfig({ Cmd: ["id"] }), withUser("app"))),
    ["HOME=/home/app"],
  );
  assertEquals(
    home(await newSpec(withRootFS(dir), withImageConfig({ Cmd: ["id"], User: "4242" }))),
    ["HOME=/"],
  );
  const explicit = withImageConfig({ Cmd: ["id"], Env: ["HOME=/data"], User: "app" });
  assertEquals(home(await newSpec(withRootFS(dir), explicit, withUser("svc"))), ["HOME=/data"]);
  assertEquals(
    home(
      await newSpec(
        withRootFS(dir),
        withImageConfig({ Cmd: ["id"] }),
        withEnv({ HOME: "/x" }),
        withUser("app"),
      ),
    ),
    ["HOME=/x"],
  );
});

Deno.test("user files are read inside the rootfs: symlinks cannot escape it", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  const root = join(dir, "root");
  await Deno.mkdir(join(root, "etc"), { recursive: true });
  await Deno.mkdir(join(root, "real"));
  // A host file outside the rootfs that would resolve "app" to uid 7.
  await Deno.writeTextFile(join(dir, "host-passwd"), "app:x:7:7::/:/bin/sh\n");
  await Deno.symlink("../../host-passwd", join(root, "etc/passwd"));
  await Deno.symlink(join(dir, "host-passwd"), join(root, "etc/group"));
  assertEquals(readFileInRoot(root, "/etc/passwd"), undefined);
  await assertRejects(
    () => newSpec(withRootFS(root), withImageConfig({ Cmd: ["id"], User: "app" })),
    UnknownUserError,
  );
  // An absolute symlink resolves inside the rootfs.
  await Deno.remove(join(root, "etc/passwd"));
  await Deno.writeTextFile(join(root, "real/passwd"), "app:x:1234:99::/:/bin/sh\n");
  await Deno.symlink("/real/passwd", join(root, "etc/passwd"));
  const s = await newSpec(withRootFS(root), withImageConfig({ Cmd: ["id"], User: "app" }));
  assertEquals([s.process!.user.uid, s.process!.user.gid], [1234, 99]);
  // A FIFO does not hang the reader; /dev/zero-like files are refused by size.
  await Deno.remove(join(root, "etc/group"));
  await new Deno.Command("mkfifo", { args: [join(root, "etc/group")] }).output();
  const s2 = await newSpec(withRootFS(root), withImageConfig({ Cmd: ["id"], User: "app" }));
  assertEquals(s2.process!.user.uid, 1234);
});

Deno.test("malformed passwd in the image: the error names the file and line", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  await Deno.mkdir(join(dir, "etc"));
  await Deno.writeTextFile(join(dir, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000\n");
  const e = await assertRejects(
    () => newSpec(withRootFS(dir), withImageConfig({ Cmd: ["id"], User: "app" })),
    UserFileFormatError,
  );
  assertStringIncludes(e.message, `${dir}/etc/passwd line 2`);
  // uid:gid needs no lookup, so a broken file does not matter.
  const s = await newSpec(withRootFS(dir), withImageConfig({ Cmd: ["id"], User: "5:6" }));
  assertEquals([s.process!.user.uid, s.process!.user.gid], [5, 6]);
});

Deno.test("resource options: memory, CPU (millicpu as the seed), pids", async () => {
  assertEquals(parseBytes("512Mi"), 512 * 1024 * 1024);
  assertEquals(parseBytes("64m"), 64 * 1024 * 1024);
  assertEquals(parseBytes("1G"), 1e9);
  assertEquals(parseBytes(4096), 4096);
  assertThrows(() => parseBytes("12q"), Error, "12q");
  assertEquals(parseMilliCPU("500m"), 500);
  assertEquals(parseMilliCPU(1.5), 1500);
  assertEquals(parseMilliCPU("2"), 2000);
  assertThrows(() => parseMilliCPU("lots"), Error, "lots");
  const s = await newSpec(withMemoryLimit("64Mi"), withCPULimit("500m"), withPidsLimit(64));
  const r = s.linux!.resources!;
  assertEquals(r.memory, { limit: 64 * 1024 * 1024 });
  assertEquals(r.cpu, { shares: 512, quota: 50000, period: 100000 });
  assertEquals(r.pids, { limit: 64 });
  assertEquals((await newSpec(withCPULimit("1m"))).linux!.resources!.cpu, {
    shares: 2,
    quota: 1000,
    period: 100000,
  });
  await assertRejects(() => newSpec(withPidsLimit(0)), Error, "pids");
});

Deno.test("network options: host network drops the netns and binds /sys and resolv.conf", async () => {
  const s = await newSpec(withHostNetwork());
  assert(!s.linux!.namespaces!.some((n) => n.type === "network"));
  const sys = s.mounts!.find((m) => m.destination === "/sys")!;
  assertEquals([sys.type, sys.source], ["bind", "/sys"]);
  assert(sys.options!.includes("ro"));
  assert(s.mounts!.some((m) => m.destination === "/etc/resolv.conf"));
  const back = await newSpec(withHostNetwork(), withNetworkNone());
  assertEquals(back.mounts!.find((m) => m.destination === "/sys")!.type, "sysfs");
  assert(!back.mounts!.some((m) => m.destination === "/etc/resolv.conf"));
  assertEquals(back.linux!.namespaces!.filter((n) => n.type === "network").length, 1);
});

Deno.test("bind mounts and user namespace mappings", async () => {
  const s = await newSpec(
    withMounts({ source: "/srv/data", destination: "/data", readonly: true }),
    withUserNamespaceMappings([{ containerID: 0, hostID: 1000, size: 1 }]),
  );
  const m = s.mounts!.at(-1)!;
  assertEquals([m.type, m.source, m.destination], ["bind", "/srv/data", "/data"]);
  assert(m.options!.includes("ro") && m.options!.includes("rbind"));
  assert(s.linux!.namespaces!.some((n) => n.type === "user"));
  assertEquals(s.linux!.gidMappings, [{ containerID: 0, hostID: 1000, size: 1 }]);
  await assertRejects(
    () => newSpec(withMounts({ source: "/a", destination: "rel" })),
    Error,
    "absolute",
  );
});

Deno.test("writer: refuses no command and rlimits above the host's; writes atomically", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  const w = new JSONSpecWriter({ what: "test/empty:latest" });
  const path = join(dir, "config.json");
  const e = await assertRejects(
    () => w.write(path, withImageConfig({ Env: ["A=1"] })),
    NoCommandError,
  );
  assertStringIncludes(e.message, "test/empty:latest");
  const hard = hostRlimits().RLIMIT_NOFILE.hard;
  if (!isRoot || !(await canRaise())) {
    await assertRejects(
      () => w.write(path, withArgs("true"), withRlimit("RLIMIT_NOFILE", hard + 1)),
      RlimitError,
      "CAP_SYS_RESOURCE",
    );
  }
  await w.write(path, withArgs("true"), withRlimit("RLIMIT_NOFILE", 64));
  const spec = JSON.parse(await Deno.readTextFile(path)) as Spec;
  assertEquals(spec.process!.rlimits, [{ type: "RLIMIT_NOFILE", soft: 64, hard: 64 }]);
  assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  assertEquals(names, ["config.json"]);
});

async function canRaise() {
  const { canRaiseRlimits } = await import("../bundle/host.ts");
  return canRaiseRlimits();
}

Deno.test({
  name: "writer in a user namespace: drops cgroup limits, refuses unmapped ids",
  ignore: !isRoot,
  async fn() {
    await ensureTestUser();
    await using tmp = await tempDir();
    const dir = String(tmp);
    const code = `
      import { JSONSpecWriter } from "STRATA/bundle/writer.ts";
      import { withArgs, withMemoryLimit, withUser, withPidsLimit } from "STRATA/bundle/options.ts";
      const warnings = [];
      const w = new JSONSpecWriter({ onWarning: (m) => warnings.push(m) });
      const spec = await w.build(withArgs("true"), withMemoryLimit("64Mi"), withPidsLimit(10));
      let err = "";
      try { await w.build(withArgs("true"), withUser("1000:1000")); } catch (e) { err = e.name + ": " + e.message; }
      console.log(JSON.stringify({ resources: spec.linux.resources, warnings, err }));
    `;
    const r = await runSnippetAsUser(code, { dir });
    assertEquals(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assertEquals(out.resources, { devices: [{ allow: false, access: "rwm" }] });
    assertStringIncludes(out.warnings[0], "memory, pids");
    assertStringIncludes(out.err, "UnmappedIDError");
    assertStringIncludes(out.err, "uid 1000");
    // With subordinate ids mapped, uid 1000 is fine.
    const r2 = await runSnippetAsUser(code, { dir, mapAuto: true });
    assertEquals(r2.code, 0, r2.stderr);
    assertEquals(JSON.parse(r2.stdout).err, "");
  },
});
