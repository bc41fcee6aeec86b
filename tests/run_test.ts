/**
 * runContainer with real containers (runc) on plain-directory bundles with a
 * busybox rootfs: exit codes, signals, image config and overrides, read-only
 * rootfs, runtime failures, abort and Ctrl-C, runtime choice, rootless.
 */
import { join } from "@std/path";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import {
  defaultStateDir,
  parseSignal,
  runContainer,
  RuntimeError,
  RuntimeNotFoundError,
  selectRuntime,
} from "../bundle/run.ts";
import {
  withArgs,
  withCwd,
  withEnv,
  withHostNetwork,
  withImageConfig,
  withMemoryLimit,
  withMounts,
  withReadonlyRootFS,
  withUser,
} from "../bundle/options.ts";
import { ensureTestUser, isRoot, repoRoot, run, tempDir } from "./_helpers.ts";
import {
  busyboxRootfs,
  plainBundle,
  runcKill,
  runSnippetAsUser,
  snippetConfig,
  stateEntries,
} from "./_bundle_helpers.ts";

const dec = new TextDecoder();
const piped = { stdout: "piped", stderr: "piped", stdin: "null" } as const;
const runtime = "runc";

async function stateDirFor(dir: string) {
  const s = join(dir, "state");
  await Deno.mkdir(s, { recursive: true });
  return s;
}

Deno.test({
  name: "exit codes propagate; a container killed by signal N gives 128+N",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    for (const [cmd, want] of [["exit 0", 0], ["exit 7", 7], ["exit 255", 255]] as const) {
      const b = await plainBundle(join(dir, `b${want}`), [withArgs("sh", "-c", cmd)]);
      const r = await runContainer(b, { runtime, stateDir, ...piped });
      assertEquals(r.status, want, cmd);
      assertEquals(b.cleanups, 1);
    }
    const b = await plainBundle(join(dir, "sig"), [withArgs("sleep", "30")]);
    const id = "strata-test-sig";
    const p = runContainer(b, { runtime, stateDir, id, ...piped });
    await waitFor(async () => (await stateEntries(stateDir)).includes(id));
    // Killed once it runs `sleep`: a kill between runc's create and start
    // (the container made, not yet started; runc run then fails with
    // "container process is already dead") is a failure to run it, not an
    // exit status, and runc takes longer there with a seccomp filter to build.
    await waitFor(async () => {
      const st = await run("runc", ["--root", stateDir, "state", id]);
      if (st.code !== 0) return false;
      const pid = (JSON.parse(st.stdout) as { pid?: number }).pid;
      return (await Deno.readTextFile(`/proc/${pid}/comm`).catch(() => "")) === "sleep\n";
    });
    await waitFor(async () => (await runcKill(stateDir, id, "KILL")).code === 0);
    assertEquals((await p).status, 128 + 9);
    assertEquals(await stateEntries(stateDir), []);
  },
});

Deno.test({
  name: "stdout and stderr are the container's; the image config is honoured; overrides win",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const script = 'id -u; id -g; id -G; pwd; echo "$FOO"; echo "$HOME"; hostname; echo err >&2';
    const config = {
      Cmd: ["sh", "-c", script],
      User: "app:staff",
      WorkingDir: "/srv",
      Env: ["FOO=from-image"],
      Hostname: "imagebox",
    };
    const b = await plainBundle(join(dir, "a"), [withImageConfig(config)]);
    const r = await runContainer(b, { runtime, stateDir, ...piped });
    assertEquals(r.status, 0, dec.decode(r.stderr));
    assertEquals(dec.decode(r.stdout).split("\n"), [
      "1000",
      "50",
      "50",
      "/srv",
      "from-image",
      "/home/app",
      "imagebox",
      "",
    ]);
    assertEquals(dec.decode(r.stderr), "err\n");

    // user alone: primary group from passwd and supplementary groups from group.
    const b2 = await plainBundle(join(dir, "b"), [withImageConfig({ ...config, User: "app" })]);
    const r2 = await runContainer(b2, { runtime, stateDir, ...piped });
    const lines2 = dec.decode(r2.stdout).split("\n");
    assertEquals(lines2.slice(0, 2), ["1000", "1000"]);
    assertEquals(lines2[2].split(" ").map(Number).sort((a, b) => a - b), [10, 50, 1000]);

    // The caller's options come after the image's and win.
    const b3 = await plainBundle(join(dir, "c"), [
      withImageConfig(config),
      withUser("svc"),
      withCwd("/tmp"),
      withEnv({ FOO: "from-caller" }),
    ]);
    const r3 = await runContainer(b3, { runtime, stateDir, ...piped });
    const lines3 = dec.decode(r3.stdout).split("\n");
    assertEquals(lines3.slice(0, 2), ["1001", "2000"]);
    assertEquals(lines3.slice(3, 6), ["/tmp", "from-caller", "/srv"]);
  },
});

Deno.test({
  name: "read-only rootfs: writing fails, /tmp-less image cannot be written",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const ro = await plainBundle(join(dir, "ro"), [
      withArgs("sh", "-c", "touch /srv/x && echo wrote"),
      withReadonlyRootFS(),
    ]);
    const r = await runContainer(ro, { runtime, stateDir, ...piped, cleanup: false });
    assert(r.status !== 0);
    assertStringIncludes(dec.decode(r.stderr), "Read-only file system");
    assert(!(await exists(join(ro.rootfs, "srv/x"))));
    await ro.cleanup();
    const rw = await plainBundle(join(dir, "rw"), [
      withArgs("sh", "-c", "touch /srv/x && echo wrote"),
    ]);
    const r2 = await runContainer(rw, { runtime, stateDir, ...piped, cleanup: false });
    assertEquals([r2.status, dec.decode(r2.stdout)], [0, "wrote\n"]);
    assert(await exists(join(rw.rootfs, "srv/x")));
    await rw.cleanup();
  },
});

Deno.test({
  name: "a runtime failure is a RuntimeError with the runtime's message, and is cleaned up",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const b = await plainBundle(join(dir, "x"), [withArgs("/no/such/binary")]);
    const e = await assertRejects(
      () => runContainer(b, { runtime, stateDir, ...piped }),
      RuntimeError,
      "/no/such/binary",
    );
    assertStringIncludes(e.message, "runc could not run the container");
    assertEquals(b.cleanups, 1);
    assertEquals(await stateEntries(stateDir), []);
    assertEquals([...Deno.readDirSync(stateDir)].map((e) => e.name), []);
    await assertRejects(
      () => runContainer(b, { runtime: "no-such-runtime", stateDir }),
      RuntimeNotFoundError,
      "no-such-runtime",
    );
  },
});

Deno.test({
  name: "abort mid-run stops the container and cleans up everything",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    // PID 1 ignores SIGTERM unless it handles it: sleep does not, so the kill timeout matters.
    const b = await plainBundle(join(dir, "a"), [withArgs("sleep", "30")]);
    const id = "strata-test-abort";
    const ac = new AbortController();
    const t0 = performance.now();
    const p = runContainer(b, {
      runtime,
      stateDir,
      id,
      signal: ac.signal,
      killTimeout: 300,
      ...piped,
    });
    await waitFor(async () => (await stateEntries(stateDir)).includes(id));
    ac.abort();
    await assertRejects(() => p, DOMException);
    assert(performance.now() - t0 < 10_000);
    assertEquals(b.cleanups, 1);
    assertEquals(await stateEntries(stateDir), []);
    assert(!(await exists(b.path)));
    // Already aborted: nothing runs, the bundle is still cleaned up.
    const b2 = await plainBundle(join(dir, "b"), [withArgs("true")]);
    await assertRejects(() => runContainer(b2, { runtime, stateDir, signal: AbortSignal.abort() }));
    assertEquals(b2.cleanups, 1);
  },
});

Deno.test("parseSignal: names with or without SIG, numbers, real-time offsets", () => {
  assertEquals(
    ["SIGQUIT", "quit", "9", "SIGRTMIN+3", "RTMAX-1", "RTMIN", 15].map((s) => parseSignal(s)),
    [3, 3, 9, 37, 63, 34, 15],
  );
  for (const bad of ["SIGNOPE", "", "0", "65", "RTMIN+40", "-1"]) {
    assertEquals(parseSignal(bad), undefined, bad);
  }
});

Deno.test({
  name: "abort sends the bundle's stop signal (the image's StopSignal) first",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const out = join(dir, "out");
    await Deno.mkdir(out);
    const script =
      'trap "echo quit > /out/sig; exit 3" QUIT; trap "echo term > /out/sig; exit 4" TERM; ' +
      "touch /out/up; while true; do sleep 0.05; done";
    for (const [stopSignal, expected] of [["SIGQUIT", "quit"], [undefined, "term"]] as const) {
      await Deno.remove(join(out, "sig")).catch(() => {});
      await Deno.remove(join(out, "up")).catch(() => {});
      const b = await plainBundle(join(dir, `b-${expected}`), [
        withArgs("sh", "-c", script),
        withMounts({ source: out, destination: "/out" }),
      ]);
      const ac = new AbortController();
      const p = runContainer({ ...b, ...(stopSignal ? { stopSignal } : {}) }, {
        runtime,
        stateDir,
        signal: ac.signal,
        killTimeout: 5000,
        ...piped,
      });
      await waitFor(() => exists(join(out, "up")));
      ac.abort();
      await assertRejects(() => p, DOMException);
      assertEquals((await Deno.readTextFile(join(out, "sig"))).trim(), expected);
    }
  },
});

Deno.test({
  name: "Ctrl-C: SIGINT to the running process reaches the container, a second one kills it",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const rootfs = await busyboxRootfs(join(dir, "rootfs"));
    const script = join(dir, "ctrlc.ts");
    await Deno.writeTextFile(
      script,
      `
      import { runContainer } from "file://${repoRoot}/bundle/run.ts";
      import { JSONSpecWriter } from "file://${repoRoot}/bundle/writer.ts";
      import { withArgs, withRootFS } from "file://${repoRoot}/bundle/options.ts";
      const [mode, bdir] = Deno.args;
      await Deno.mkdir(bdir);
      const cmd = mode === "trap"
        ? ["sh", "-c", "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done"]
        : ["sh", "-c", "trap '' INT; echo ready; exec sleep 30"];
      await new JSONSpecWriter().write(bdir + "/config.json", withRootFS(${
        JSON.stringify(rootfs)
      }), withArgs(...cmd));
      const bundle = { path: bdir, cleanup: () => Deno.remove(bdir + "/config.json") };
      const r = await runContainer(bundle, { runtime: "runc", stateDir: ${
        JSON.stringify(stateDir)
      }, stdin: "null" });
      console.log("status=" + r.status);
      `,
    );
    for (const mode of ["trap", "ignore"]) {
      const bdir = join(dir, `b-${mode}`);
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", `--config=${await snippetConfig(dir)}`, script, mode, bdir],
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      while (!out.includes("ready")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
      }
      child.kill("SIGINT");
      if (mode === "ignore") {
        // The container ignores SIGINT (set before "ready": busybox sh, PID 1,
        // would otherwise exit 130 on one that lands before its exec): the
        // second Ctrl-C kills it.
        await new Promise((r) => setTimeout(r, 300));
        child.kill("SIGINT");
      }
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
      }
      const st = await child.status;
      const err = dec.decode((await new Response(child.stderr).arrayBuffer()) as ArrayBuffer);
      assertEquals(st.code, 0, err);
      if (mode === "trap") assertMatch(out, /got-int\s+status=42/);
      else assertStringIncludes(out, "status=137");
      assert(!(await exists(join(bdir, "config.json"))), "bundle cleaned up");
      assertEquals(await stateEntries(stateDir), []);
    }
  },
});

Deno.test({
  name: "runtime choice: crun is probed once and passed over on hybrid cgroups, with the reason",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const cgroupV2Only = (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")
      .some((l) => l.split(" ")[4] === "/sys/fs/cgroup" && l.includes(" - cgroup2 "));
    const rt = await selectRuntime(undefined, (name) => join(stateDir, name));
    if (cgroupV2Only) {
      assertEquals(rt.name, "crun");
      return;
    }
    assertEquals(rt.name, "runc");
    assertStringIncludes(rt.reason ?? "", "crun: ");
    assertStringIncludes(rt.reason ?? "", "hybrid");
    // The probe result is kept for this boot: a second process would not probe again.
    const rec = JSON.parse(await Deno.readTextFile(join(stateDir, "crun", "probe.json")));
    assertEquals(rec.ok, false);
    // The warning is given once.
    const warnings: string[] = [];
    for (const n of ["a", "b"]) {
      const b = await plainBundle(join(dir, n), [withArgs("true")]);
      await runContainer(b, {
        stateDir: join(stateDir, "runc"),
        onWarning: (m) => warnings.push(m),
        ...piped,
      });
    }
    assert(warnings.length <= 1, warnings.join("\n"));
    // Asked for by name, crun runs and its own reason comes back as a RuntimeError.
    const c = await plainBundle(join(dir, "crun"), [withArgs("true")]);
    await assertRejects(
      () => runContainer(c, { runtime: "crun", stateDir: join(stateDir, "crun"), ...piped }),
      RuntimeError,
      "crun could not run the container: cgroups in hybrid mode",
    );
    assertEquals(c.cleanups, 1);
    assertEquals(defaultStateDir("runc"), "/run/strata/runc");
  },
});

Deno.test({
  name: "rootless: as an unprivileged user in a user namespace, with and without subordinate ids",
  ignore: !isRoot,
  async fn() {
    await ensureTestUser();
    await using tmp = await tempDir();
    const dir = String(tmp);
    const rootfs = await busyboxRootfs(join(dir, "rootfs"));
    const code = (user: string) => `
      import { runContainer } from "STRATA/bundle/run.ts";
      import { JSONSpecWriter } from "STRATA/bundle/writer.ts";
      import { withArgs, withImageConfig, withMemoryLimit, withRootFS } from "STRATA/bundle/options.ts";
      const bdir = await Deno.makeTempDir();
      const warnings = [];
      await new JSONSpecWriter({ onWarning: (m) => warnings.push(m) }).write(
        bdir + "/config.json",
        withRootFS(${JSON.stringify(rootfs)}, true),
        withImageConfig({ User: ${
      JSON.stringify(user)
    }, Cmd: ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map | wc -l; exit 3"] }),
        withMemoryLimit("64Mi"),
      );
      const r = await runContainer({ path: bdir, cleanup: () => Deno.remove(bdir, { recursive: true }) }, { runtime: "runc", stdout: "piped", stderr: "piped", stdin: "null" });
      console.log(JSON.stringify({ status: r.status, out: new TextDecoder().decode(r.stdout), err: new TextDecoder().decode(r.stderr), warnings, left: await Deno.stat(bdir).then(() => true, () => false) }));
    `;
    // Only root mapped: the container runs as root, the memory limit is dropped with a warning.
    const r1 = await runSnippetAsUser(code("root"), { dir });
    assertEquals(r1.code, 0, r1.stderr);
    const o1 = JSON.parse(r1.stdout);
    assertEquals(o1.status, 3, o1.err);
    assertEquals(o1.out, "0\n0\n1\n");
    assertStringIncludes(o1.warnings.join(), "memory");
    assertEquals(o1.left, false);
    // With subordinate ids (newuidmap): the image's app user runs as 1000.
    const r2 = await runSnippetAsUser(code("app"), { dir, mapAuto: true });
    assertEquals(r2.code, 0, r2.stderr);
    const o2 = JSON.parse(r2.stdout);
    assertEquals([o2.status, o2.out], [3, "1000\n1000\n2\n"], o2.err);
  },
});

Deno.test({
  name: "cgroup limits apply as root: a memory limit is visible to the container",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const b = await plainBundle(join(dir, "m"), [
      withArgs(
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
      ),
      withMemoryLimit("64Mi"),
    ]);
    const r = await runContainer(b, { runtime, stateDir, ...piped });
    assertEquals(
      [r.status, dec.decode(r.stdout).trim()],
      [0, String(64 * 1024 * 1024)],
      dec.decode(r.stderr),
    );
  },
});

Deno.test({
  name: "network: none by default (only lo), host network shares the host's interfaces",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const hostIfs = [...Deno.readDirSync("/sys/class/net")].map((e) => e.name).sort();
    const cmd = withArgs("ls", "/sys/class/net");
    const none = await plainBundle(join(dir, "none"), [cmd]);
    const r1 = await runContainer(none, { runtime, stateDir, ...piped });
    assertEquals([r1.status, dec.decode(r1.stdout).trim().split(/\s+/)], [0, ["lo"]]);
    const host = await plainBundle(join(dir, "host"), [cmd, withHostNetwork()]);
    const r2 = await runContainer(host, { runtime, stateDir, ...piped });
    assertEquals([r2.status, dec.decode(r2.stdout).trim().split(/\s+/).sort()], [0, hostIfs]);
  },
});

async function exists(p: string) {
  try {
    await Deno.lstat(p);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test({
  name: "input: bytes and streams reach the container's stdin, which then closes",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const stateDir = await stateDirFor(dir);
    const request = new TextEncoder().encode('{"input":{"name":"world"}}\n');
    const b1 = await plainBundle(join(dir, "b1"), [withArgs("sh", "-c", "wc -c; cat")]);
    const r1 = await runContainer(b1, { runtime, stateDir, input: request, stdout: "piped" });
    assertEquals(r1.status, 0);
    assertEquals(dec.decode(r1.stdout).split("\n")[0].trim(), String(request.length));
    // A stream, and a container that exits without reading it all.
    const big = new Uint8Array(4 << 20).fill(120);
    const b2 = await plainBundle(join(dir, "b2"), [withArgs("sh", "-c", "head -c 3; exit 3")]);
    const r2 = await runContainer(b2, {
      runtime,
      stateDir,
      input: new Blob([big]).stream(),
      stdout: "piped",
    });
    assertEquals(r2.status, 3);
    assertEquals(dec.decode(r2.stdout), "xxx");
  },
});
