/**
 * Confinement with real containers (runc), through the command line as a
 * user meets it, as root and as the unprivileged test user: the default
 * seccomp filter is on (`Seccomp: 2`), `unshare -r` and the keyring calls
 * fail with EPERM, the argument rules hold (clone's namespace flags, clone3's
 * ENOSYS, personality, socket families), `--cap-add` opens the calls its
 * capability gates, `seccomp=unconfined` turns the filter off, a custom
 * profile is honoured, ordinary work (a pipeline, `date`, a dpkg listing,
 * networking on the host network, a multi-threaded program) still runs, a
 * bad profile fails with one line, `--privileged` is what podman makes it,
 * and the built-in profile stands alone on a host without containers-common.
 *
 * Host programs the busybox image lacks (keyctl, perl, dpkg-query, deno) are
 * bind-mounted read-only with their libraries, as `ldd` lists them.
 *
 * @module
 */
import { join } from "@std/path";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { buildOciLayout } from "../cli/demo_image.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import {
  denoPath,
  ensureTestUser,
  isRoot,
  repoRoot,
  run,
  runAsUser,
  type RunResult,
  sh,
  tempDir,
} from "./_helpers.ts";

const CLI = join(repoRoot, "cli.ts");

let image: Promise<{ dir: string; ref: string }> | undefined;

/**
 * A one-layer image: the host's static busybox with every applet, root and
 * app users, /tmp, /mnt. Built once for the file, world-readable.
 */
function testImage(): Promise<{ dir: string; ref: string }> {
  image ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "strata-seccomp-img-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const busybox = await Deno.readFile("/bin/busybox");
    const applets = (await sh("/bin/busybox", ["--list"])).split("\n").filter(Boolean);
    const t = new TarWriter({ defaultMtime: 1_700_000_000 });
    for (
      const d of ["bin/", "etc/", "mnt/", "proc/", "sys/", "dev/", "root/", "home/", "home/app/"]
    ) {
      t.directory(d, { mode: 0o755 });
    }
    t.directory("tmp/", { mode: 0o1777 });
    t.file("bin/busybox", busybox, { mode: 0o755 });
    for (const a of applets) if (a !== "busybox") t.symlink(`bin/${a}`, "busybox");
    t.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
    t.file("etc/group", "root:x:0:\napp:x:1000:\n");
    const built = await buildOciLayout(join(dir, "layout"), {
      layers: [{ tar: t.bytes() }],
      config: { Cmd: ["/bin/sh"], Env: ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"] },
    });
    await sh("chmod", ["-R", "a+rX", dir]);
    return { dir, ref: built.ref };
  })();
  return image;
}

/**
 * `-v` options that bring the host program `path` into the container at the
 * same path, with the libraries and the loader `ldd` names (each file bound
 * read-only where the program looks for it).
 */
async function hostProgram(path: string): Promise<string[]> {
  const out = await sh("ldd", [path]).catch(() => ""); // a static program has none
  const files = new Set([path]);
  for (const line of out.split("\n")) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) files.add(m[1]);
  }
  return [...files].flatMap((f) => ["-v", `${Deno.realPathSync(f)}:${f}:ro`]);
}

/** The `-v` options for several host programs, without duplicates. */
async function hostPrograms(...paths: string[]): Promise<string[]> {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const p of paths) {
    const v = await hostProgram(p);
    for (let i = 0; i < v.length; i += 2) {
      if (seen.has(v[i + 1])) continue;
      seen.add(v[i + 1]);
      out.push(v[i], v[i + 1]);
    }
  }
  return out;
}

/** Runs `strata run` as root with `args` (options, IMAGE, command). */
async function strataRun(cache: string, args: string[]): Promise<RunResult> {
  const env = { ...Deno.env.toObject() };
  delete env.STRATA_CACHE;
  delete env.NODE_EXTRA_CA_CERTS;
  return await run("timeout", [
    "-s",
    "KILL",
    "120",
    denoPath,
    "run",
    "-A",
    CLI,
    "run",
    "--cache",
    cache,
    "-q",
    ...args,
  ], { env, clearEnv: true });
}

/** `key=value` lines of a container's output. */
function values(r: RunResult): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of r.stdout.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/**
 * The shell script every confinement check runs: the filter mode, a user
 * namespace (busybox unshare), the three keyring calls (keyctl from
 * keyutils), no-new-privileges and the effective capabilities.
 */
const PROBE = [
  `echo "seccomp=$(awk '/^Seccomp:/ { print $2 }' /proc/self/status)"`,
  `echo "nnp=$(awk '/^NoNewPrivs:/ { print $2 }' /proc/self/status)"`,
  `echo "capeff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)"`,
  `echo "unshare=$(unshare -r true 2>&1 && echo ok)"`,
  `echo "add_key=$(keyctl add user strata-k v @s 2>&1 >/dev/null && echo ok)"`,
  `echo "request_key=$(keyctl request user strata-no-such-key 2>&1)"`,
  `echo "keyctl=$(keyctl describe @s 2>&1 >/dev/null && echo ok)"`,
].join("\n");

/**
 * The argument rules, made visible with perl's `syscall` (numbers of x86-64
 * and aarch64): kcmp (CAP_SYS_PTRACE), personality values, clone with a
 * namespace flag, clone3, and sockets by family. `ok` or the errno's text.
 */
const PERL_RULES = `
$| = 1;
my %n = (x86_64 => [312, 135, 56, 435, 231], aarch64 => [272, 92, 220, 435, 94]);
my ($kcmp, $pers, $clone, $clone3, $exit_group) = @{$n{$ARGV[0]}};
sub show { my ($k, $r) = @_; print "$k=", ($r == -1 ? "$!" : "ok"), "\\n"; }
my $self = $$ + 0; # a number: syscall passes a string as a pointer
show("kcmp", syscall($kcmp, $self, $self, 0, 0, 0));
show("personality_query", syscall($pers, 0xffffffff));
show("personality_linux32", syscall($pers, 0x0008));
syscall($pers, 0);
show("personality_no_randomize", syscall($pers, 0x0040000));
syscall($pers, 0);
my $pid = syscall($clone, 0x10000000 | 17, 0, 0, 0, 0);
if ($pid == 0) { syscall($exit_group, 0); }
waitpid($pid, 0) if $pid > 0;
show("clone_newuser", $pid);
$pid = syscall($clone, 17, 0, 0, 0, 0);
if ($pid == 0) { syscall($exit_group, 0); }
waitpid($pid, 0) if $pid > 0;
show("clone_plain", $pid);
show("clone3", syscall($clone3, 0, 0));
for my $f ([1, 1, "unix"], [2, 1, "inet"], [16, 3, "netlink"], [38, 5, "alg"], [40, 1, "vsock"]) {
  my $s; show("socket_$f->[2]", socket($s, $f->[0], $f->[1], 0) ? 0 : -1); close($s) if $s;
}
`;

const EPERM = "Operation not permitted";

Deno.test({
  name: "seccomp: the default filter is on; user namespaces and keyrings are refused with EPERM",
  ignore: !isRoot,
  async fn() {
    const img = await testImage();
    await using cache = await tempDir("strata-seccomp-cache-");
    const keyctl = await hostProgram("/usr/bin/keyctl");
    const r = await strataRun(String(cache), [...keyctl, img.ref, "sh", "-c", PROBE]);
    assertEquals(r.code, 0, r.stderr + r.stdout);
    const v = values(r);
    assertEquals(v.seccomp, "2", r.stdout);
    assertEquals(v.nnp, "1");
    assertStringIncludes(v.unshare, EPERM);
    assertStringIncludes(v.add_key, `add_key: ${EPERM}`);
    assertStringIncludes(v.request_key, `request_key: ${EPERM}`);
    assertStringIncludes(v.keyctl, EPERM);

    // seccomp=unconfined: no filter, and the same calls go through (what the
    // kernel itself allows a root process without CAP_SYS_ADMIN).
    const u = await strataRun(String(cache), [
      ...keyctl,
      "--security-opt",
      "seccomp=unconfined",
      img.ref,
      "sh",
      "-c",
      PROBE,
    ]);
    assertEquals(u.code, 0, u.stderr);
    const w = values(u);
    assertEquals([w.seccomp, w.unshare, w.add_key, w.keyctl], ["0", "ok", "ok", "ok"]);
    assertStringIncludes(w.request_key, "Required key not available");
  },
});

Deno.test({
  name: "seccomp: argument rules (clone flags, clone3, personality, socket families) and --cap-add",
  ignore: !isRoot || !["x86_64", "aarch64"].includes(Deno.build.arch),
  async fn() {
    const img = await testImage();
    await using cache = await tempDir("strata-seccomp-cache-");
    const perl = await hostProgram("/usr/bin/perl");
    const rules = async (...opts: string[]) => {
      const r = await strataRun(String(cache), [
        ...perl,
        ...opts,
        img.ref,
        "/usr/bin/perl",
        "-e",
        PERL_RULES,
        Deno.build.arch,
      ]);
      assertEquals(r.code, 0, r.stderr + r.stdout);
      return values(r);
    };
    const d = await rules();
    assertEquals(d.kcmp, EPERM, "kcmp needs CAP_SYS_PTRACE");
    assertEquals([d.personality_query, d.personality_linux32], ["ok", "ok"]);
    assertEquals(d.personality_no_randomize, EPERM);
    assertEquals(d.clone_newuser, EPERM, "a namespace flag needs CAP_SYS_ADMIN");
    assertEquals(d.clone_plain, "ok");
    assertEquals(d.clone3, "Function not implemented", "ENOSYS, so that libc falls back to clone");
    assertEquals([d.socket_unix, d.socket_inet, d.socket_netlink], ["ok", "ok", "ok"]);
    assertEquals([d.socket_alg, d.socket_vsock], [EPERM, EPERM]);

    // CAP_SYS_ADMIN opens clone's namespace flags and clone3 (which then
    // fails on its NULL argument, past the filter).
    const a = await rules("--cap-add", "sys_admin");
    assertEquals(a.clone_newuser, "ok");
    assertEquals(a.clone3, "Invalid argument");
    assertEquals(a.kcmp, EPERM);
    // CAP_SYS_PTRACE opens kcmp.
    const p = await rules("--cap-add", "CAP_SYS_PTRACE");
    assertEquals([p.kcmp, p.clone_newuser], ["ok", EPERM]);
    // Without the filter the kernel alone decides.
    const u = await rules("--security-opt", "seccomp=unconfined");
    assertEquals([u.kcmp, u.personality_no_randomize, u.clone_newuser], ["ok", "ok", "ok"]);
    assert(u.socket_vsock !== EPERM && u.socket_alg !== EPERM, JSON.stringify(u));
  },
});

Deno.test({
  name:
    "seccomp: --cap-add SYS_ADMIN lets unshare and mount through; --cap-drop ALL empties CapEff",
  ignore: !isRoot,
  async fn() {
    const img = await testImage();
    await using cache = await tempDir("strata-seccomp-cache-");
    const r = await strataRun(String(cache), [
      "--cap-add",
      "SYS_ADMIN",
      img.ref,
      "sh",
      "-c",
      `${PROBE.split("\n").slice(0, 4).join("\n")}
      echo "mount=$(mount -t tmpfs strata-t /mnt 2>&1 && grep -c strata-t /proc/mounts)"`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    const v = values(r);
    assertEquals([v.seccomp, v.unshare, v.mount], ["2", "ok", "1"]);
    const none = await strataRun(String(cache), ["--cap-drop", "ALL", img.ref, "sh", "-c", PROBE]);
    const n = values(none);
    assertEquals([n.seccomp, n.capeff], ["2", "0000000000000000"]);
    const nnp = await strataRun(String(cache), [
      "--security-opt",
      "no-new-privileges=false",
      img.ref,
      "sh",
      "-c",
      PROBE,
    ]);
    assertEquals([values(nnp).seccomp, values(nnp).nnp], ["2", "0"], nnp.stderr);
  },
});

Deno.test({
  name: "seccomp: a custom profile that refuses mkdir is honoured; the host's podman profile runs",
  ignore: !isRoot,
  async fn() {
    const img = await testImage();
    await using cache = await tempDir("strata-seccomp-cache-");
    const profile = join(String(cache), "no-mkdir.json");
    await Deno.writeTextFile(
      profile,
      JSON.stringify({
        defaultAction: "SCMP_ACT_ALLOW",
        syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 122 }],
      }),
    );
    const r = await strataRun(String(cache), [
      "--security-opt",
      `seccomp=${profile}`,
      img.ref,
      "sh",
      "-c",
      'grep ^Seccomp: /proc/self/status; mkdir /tmp/x; echo "rc=$?"; touch /tmp/y && echo touched',
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertMatch(r.stdout, /Seccomp:\s+2/);
    assertStringIncludes(r.stderr, "Disk quota exceeded", "errnoRet 122 is EDQUOT");
    assertStringIncludes(r.stdout, "rc=1\ntouched");

    const podman = "/usr/share/containers/seccomp.json";
    const p = await strataRun(String(cache), [
      "--security-opt",
      `seccomp=${podman}`,
      img.ref,
      "sh",
      "-c",
      "grep ^Seccomp: /proc/self/status; echo a b | wc -w",
    ]);
    assertEquals(p.code, 0, p.stderr);
    assertMatch(p.stdout, /Seccomp:\s+2\n2\n/);
  },
});

Deno.test({
  name:
    "seccomp: ordinary work runs under the default filter (pipeline, date, dpkg, host network, threads)",
  ignore: !isRoot,
  async fn() {
    const img = await testImage();
    await using cache = await tempDir("strata-seccomp-cache-");
    const ac = new AbortController();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
      () => new Response("hello from the host\n"),
    );
    try {
      const port = server.addr.port;
      const binds = await hostPrograms("/usr/bin/dpkg-query", denoPath);
      const script = [
        "grep ^Seccomp: /proc/self/status",
        "echo one two three two | tr ' ' '\\n' | sort | uniq -c | sort -rn | head -1 | tr -s ' '",
        "date -u +%Y >/dev/null && echo date-ok",
        "dpkg-query --admindir=/host-dpkg -W -f '${Package}\\n' | grep -c .",
        `wget -q -O - http://127.0.0.1:${port}/`,
        // A multi-threaded program: Deno (V8's and tokio's threads, a Worker).
        `DENO_DIR=/tmp/deno HOME=/tmp ${denoPath} eval --quiet ` +
        `'const w = new Worker("data:text/javascript,postMessage(6 * 7)", { type: "module" });` +
        `w.onmessage = (e) => { const t = Deno.readTextFileSync("/proc/self/status")` +
        `.match(/Threads:\\s+(\\d+)/)[1]; console.log("worker", e.data, "threads", t > 2); w.terminate(); };'`,
      ].join("\n");
      const r = await strataRun(String(cache), [
        ...binds,
        "-v",
        "/var/lib/dpkg:/host-dpkg:ro",
        "--network",
        "host",
        img.ref,
        "sh",
        "-c",
        script,
      ]);
      assertEquals(r.code, 0, r.stderr + r.stdout);
      const lines = r.stdout.trim().split("\n");
      assertMatch(lines[0], /Seccomp:\s+2/);
      assertEquals(lines[1].trim(), "2 two");
      assertEquals(lines[2], "date-ok");
      assert(Number(lines[3]) > 50, `dpkg lists the host's packages: ${lines[3]}`);
      assertEquals(lines[4], "hello from the host");
      assertEquals(lines[5], "worker 42 threads true");
    } finally {
      ac.abort();
      await server.finished;
    }
  },
});

Deno.test({
  name: "seccomp: a bad profile file fails the run with one line naming it (exit 125)",
  ignore: !isRoot,
  async fn() {
    const img = await testImage();
    await using cache = await tempDir("strata-seccomp-cache-");
    const bad = join(String(cache), "bad.json");
    await Deno.writeTextFile(
      bad,
      '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]}]}',
    );
    for (
      const [file, why] of [
        [bad, 'syscalls[0].args[0].op: unknown operator "SCMP_CMP_LIKE"'],
        [join(String(cache), "missing.json"), "cannot read it"],
      ]
    ) {
      const r = await strataRun(String(cache), [
        "--security-opt",
        `seccomp=${file}`,
        img.ref,
        "true",
      ]);
      assertEquals(r.code, 125);
      const lines = r.stderr.trim().split("\n");
      assertEquals(lines.length, 1, r.stderr);
      assertStringIncludes(lines[0], `seccomp profile ${file}: ${why}`);
      assertMatch(lines[0], /^strata: run /);
    }
    // It failed before any work: nothing in the cache but the profile itself.
    assertEquals([...Deno.readDirSync(String(cache))].map((e) => e.name), ["bad.json"]);
    const usage = await strataRun(String(cache), ["--cap-add", "NOPE", img.ref, "true"]);
    assertEquals(usage.code, 2);
    assertStringIncludes(usage.stderr, "unknown capability 'NOPE'");
  },
});

Deno.test({
  name:
    "seccomp: --privileged gives every capability, no filter, the host's devices, no masked paths",
  ignore: !isRoot,
  async fn() {
    const img = await testImage();
    await using cache = await tempDir("strata-seccomp-cache-");
    const host = /^CapBnd:\s*([0-9a-f]+)$/m.exec(await Deno.readTextFile("/proc/self/status"))![1];
    const script = `${PROBE.split("\n").slice(0, 3).join("\n")}
      echo "null=$(ls -l /dev/null | cut -c1)"
      echo "devices=$(ls /dev | wc -l)"
      echo "masked=$(grep -c ' /proc/timer_list ' /proc/mounts)"
      echo "sys=$(grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"`;
    const r = await strataRun(String(cache), ["--privileged", img.ref, "sh", "-c", script]);
    assertEquals(r.code, 0, r.stderr);
    const v = values(r);
    assertEquals([v.seccomp, v.capeff, v.null, v.masked, v.sys], ["0", host, "c", "0", "rw"]);
    const hostDevs = [...Deno.readDirSync("/dev")].length;
    assert(Number(v.devices) >= hostDevs - 10, `${v.devices} devices of the host's ${hostDevs}`);
    const plain = values(await strataRun(String(cache), [img.ref, "sh", "-c", script]));
    assertEquals([plain.masked, plain.sys], ["1", "ro"]);
    assert(Number(plain.devices) < 20);
    // An explicit profile still applies under --privileged, as podman does.
    const both = await strataRun(String(cache), [
      "--privileged",
      "--security-opt",
      `seccomp=${join(repoRoot, "bundle", "seccomp_default.json")}`,
      img.ref,
      "sh",
      "-c",
      PROBE.split("\n")[0],
    ]);
    assertEquals(values(both).seccomp, "2", both.stderr);
  },
});

Deno.test({
  name: "seccomp: the built-in profile stands alone on a host without containers-common",
  ignore: !isRoot,
  async fn() {
    const img = await testImage();
    await using cache = await tempDir("strata-seccomp-cache-");
    await using empty = await tempDir("strata-no-containers-");
    // A private mount namespace where /usr/share/containers and
    // /etc/containers are empty directories: the host's own stay as they are.
    const hide = [
      "set -e",
      "mount --make-rprivate /",
      `mount --bind '${empty}' /usr/share/containers`,
      `mount --bind '${empty}' /etc/containers 2>/dev/null || true`,
      'test -z "$(ls -A /usr/share/containers)"',
      'exec "$@"',
    ].join("\n");
    const r = await run("unshare", [
      "--mount",
      "sh",
      "-c",
      hide,
      "sh",
      denoPath,
      "run",
      "-A",
      CLI,
      "run",
      "--cache",
      String(cache),
      "-q",
      img.ref,
      "sh",
      "-c",
      'grep ^Seccomp: /proc/self/status; unshare -r true || echo "unshare refused"',
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertMatch(r.stdout, /Seccomp:\s+2\nunshare refused\n/);
    assertStringIncludes(r.stderr, EPERM);
    assert(
      (await Deno.stat("/usr/share/containers/seccomp.json")).isFile,
      "the host's is untouched",
    );
  },
});

Deno.test({
  name: "seccomp: supported --why says the kernel and the runtime enforce seccomp here",
  ignore: !isRoot,
  async fn() {
    await using cache = await tempDir("strata-seccomp-cache-");
    const r = await run(denoPath, [
      "run",
      "-A",
      CLI,
      "supported",
      "--why",
      "--cache",
      String(cache),
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertStringIncludes(r.stdout, "seccomp: enforced (");
    assertMatch(r.stdout, /seccomp kernel: filter mode; actions: [a-z_ ]*errno/);
    assertMatch(r.stdout, /seccomp runtime: \S*runc: runc version .*libseccomp \d+\.\d+/);
    assertStringIncludes(r.stdout, "seccomp default: strata's built-in profile");
  },
});

/** Runs `strata run` as the test user in its own cache. */
async function userRun(cache: string, args: string[]): Promise<RunResult> {
  const { home } = await ensureTestUser();
  return await runAsUser([
    "timeout",
    "-s",
    "KILL",
    "120",
    denoPath,
    "run",
    "-A",
    CLI,
    "run",
    "--cache",
    cache,
    "-q",
    ...args,
  ], { env: { DENO_DIR: join(home, ".deno") } });
}

Deno.test({
  name:
    "seccomp rootless: the filter, --cap-add, unconfined, a custom profile, threads, privileged",
  ignore: !isRoot,
  async fn() {
    const { uid, gid } = await ensureTestUser();
    const img = await testImage();
    await using dir = await tempDir("strata-seccomp-user-");
    const cache = join(String(dir), "cache");
    await Deno.mkdir(cache);
    await Deno.chown(cache, uid, gid);
    const keyctl = await hostProgram("/usr/bin/keyctl");

    const d = await userRun(cache, [...keyctl, img.ref, "sh", "-c", PROBE]);
    assertEquals(d.code, 0, d.stderr + d.stdout);
    const v = values(d);
    assertEquals(v.seccomp, "2");
    assertStringIncludes(v.unshare, EPERM);
    assertStringIncludes(v.add_key, `add_key: ${EPERM}`);
    assertStringIncludes(v.request_key, `request_key: ${EPERM}`);

    const a = values(await userRun(cache, ["--cap-add", "SYS_ADMIN", img.ref, "sh", "-c", PROBE]));
    assertEquals([a.seccomp, a.unshare], ["2", "ok"]);
    const u = values(
      await userRun(cache, ["--security-opt", "seccomp=unconfined", img.ref, "sh", "-c", PROBE]),
    );
    assertEquals([u.seccomp, u.unshare], ["0", "ok"]);

    const profile = join(String(dir), "no-mkdir.json");
    await Deno.writeTextFile(
      profile,
      JSON.stringify({
        defaultAction: "SCMP_ACT_ALLOW",
        syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 122 }],
      }),
    );
    await Deno.chmod(profile, 0o644);
    const m = await userRun(cache, [
      "--security-opt",
      `seccomp=${profile}`,
      img.ref,
      "mkdir",
      "/x",
    ]);
    assertEquals(m.code, 1);
    assertStringIncludes(m.stderr, "Disk quota exceeded");

    const threads = await userRun(cache, [
      ...await hostPrograms(denoPath),
      img.ref,
      "sh",
      "-c",
      `echo one two | wc -w; DENO_DIR=/tmp/deno HOME=/tmp ${denoPath} eval --quiet ` +
      `'const w = new Worker("data:text/javascript,postMessage(1)", { type: "module" });` +
      ` w.onmessage = (e) => { console.log("worker", e.data); w.terminate(); };'`,
    ]);
    assertEquals([threads.code, threads.stdout], [0, "2\nworker 1\n"], threads.stderr);

    const p = await userRun(cache, [
      "--privileged",
      img.ref,
      "sh",
      "-c",
      `${PROBE.split("\n")[0]}; echo "null=$(ls -l /dev/null | cut -c1)"; ` +
      `echo "loop=$(ls /dev | grep -c '^loop[0-9]')"`,
    ]);
    assertEquals(p.code, 0, p.stderr);
    const pv = values(p);
    assertEquals([pv.seccomp, pv.null], ["0", "c"]);
    const hostLoops = [...Deno.readDirSync("/dev")].filter((e) => /^loop[0-9]/.test(e.name)).length;
    assertEquals(Number(pv.loop), hostLoops, "the host's devices, bind-mounted");
  },
});
