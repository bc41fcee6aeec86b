/**
 * Hostile tarballs: none may create, change, delete or read anything outside
 * the root. A canary directory sits beside the root (a sibling in the same
 * temp dir); after every hostile layer, in both whiteout modes, its record
 * (content, modes, mtimes, xattrs, listing, link counts) and the temp dir's
 * listing must be unchanged. Names are confined (see layer/path.ts): a tar
 * may write inside the root where it says `..`, or fail, never escape.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { type ApplyOptions, TarApplicator } from "../layer/applicator.ts";
import { treeRecord } from "../layer/record.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { concat, denoPath, isRoot, run, sandboxArgv, tempDir } from "./_helpers.ts";

interface Case {
  name: string;
  /** Earlier layers applied first (trusted set-up or hostile themselves). */
  before?: (canary: string) => TarWriter[];
  tar: (canary: string) => TarWriter | Uint8Array;
  /** Checks on the root after the apply (when it succeeded). */
  check?: (root: string, canary: string) => void;
}

const cases: Case[] = [
  {
    name: "`..` in names",
    tar: () =>
      new TarWriter()
        .file("../canary/secret", "pwned")
        .file("../../../../../../../../../tmp/pwned", "x")
        .file("a/../../canary/new", "x")
        .directory("../canary/", { mode: 0o777 })
        .file("..", "root itself?"), // names the root: refused, not applied outside
    check: (root) => {
      // confined: `../canary/secret` is `<root>/canary/secret`
      assertEquals(Deno.readTextFileSync(join(root, "canary/secret")), "pwned");
    },
  },
  {
    name: "absolute names",
    tar: (canary) =>
      new TarWriter()
        .file(`${canary}/secret`, "pwned")
        .file("/etc/strata-pwned", "x")
        .directory(`${canary}/`, { mode: 0o777, mtime: 1 }),
    check: (root, canary) => {
      assertEquals(Deno.readTextFileSync(join(root, canary, "secret")), "pwned");
    },
  },
  {
    name: "symlink to the canary, then write through it",
    tar: (canary) =>
      new TarWriter()
        .symlink("abs", canary)
        .symlink("rel", "../canary")
        .symlink("up", "../../../../..")
        .file("abs/secret", "pwned")
        .file("rel/secret", "pwned")
        .file("up/canary/secret", "pwned")
        .directory("rel/sub/", { mode: 0o777 })
        .fifo("rel/fifo"),
  },
  {
    name: "symlink to /",
    tar: (canary) =>
      new TarWriter()
        .symlink("slash", "/")
        .file(`slash${canary}/secret`, "pwned")
        .file("slash/../canary/secret", "pwned")
        .hardlink("hl", `slash${canary}/secret`),
  },
  {
    name: "symlink chains and loops",
    tar: (canary) =>
      new TarWriter()
        .symlink("c1", "c2")
        .symlink("c2", "c3")
        .symlink("c3", "../../..")
        .file("c1/canary/secret", "pwned")
        .symlink("chain", "c1/canary")
        .file("chain/x", "x")
        .symlink("loop1", "loop2")
        .symlink("loop2", "loop1")
        .file("loop1/x", "x")
        .symlink("self", "self")
        .file("self/x", "x")
        .symlink("tocanary", canary)
        .symlink("c4", "tocanary"),
  },
  {
    name: "symlink from an earlier layer",
    before: (canary) => [
      new TarWriter()
        .symlink("evil", canary)
        .symlink("evilrel", "../canary")
        .symlink("evilfile", `${canary}/secret`)
        .directory("d/")
        .symlink("d/deep", "../../canary"),
    ],
    tar: () =>
      new TarWriter()
        .file("evil/secret", "pwned")
        .file("evilrel/secret", "pwned")
        .file("d/deep/secret", "pwned")
        .file("evilfile", "replaces the link, not the target") // never writes through
        .directory("evil/", { mode: 0o777 }), // replaces the link
  },
  {
    name: "hardlinks to outside files",
    before: (canary) => [new TarWriter().symlink("lnk", canary)],
    tar: (canary) =>
      new TarWriter()
        .hardlink("h1", `${canary}/secret`)
        .hardlink("h2", "../canary/secret")
        .hardlink("h3", "lnk/secret")
        .hardlink("h4", "/etc/passwd")
        .hardlink("h5", "../../../../etc/passwd"),
  },
  {
    name: "hardlink to a symlink that points outside links the symlink itself",
    tar: (canary) =>
      new TarWriter()
        .symlink("s", `${canary}/secret`)
        .hardlink("h", "s")
        .file("h", "replaces the link"),
    check: (root) => {
      assert(Deno.lstatSync(join(root, "s")).isSymlink);
    },
  },
  {
    name: "whiteouts resolving to `..` or outside",
    tar: (canary) =>
      new TarWriter()
        .file(".wh..", "")
        .file("../.wh.canary", "")
        .file(`${canary}/.wh.secret`, "")
        .file("x/../../.wh.canary", ""),
  },
  {
    name: "whiteouts and opaque markers under a symlink",
    before: (canary) => [
      new TarWriter()
        .symlink("lnk", canary)
        .symlink("rel", "../canary")
        .symlink("slash", "/"),
    ],
    tar: (canary) =>
      new TarWriter()
        .file("lnk/.wh.secret", "")
        .file("rel/.wh.secret", "")
        .file(`slash${canary}/.wh.secret`, "")
        .file("lnk/.wh..wh..opq", "")
        .file("rel/.wh..wh..opq", "")
        .file("slash/.wh..wh..opq", ""),
  },
  {
    name: "replacing a directory never follows into the canary",
    before: (canary) => [
      new TarWriter().directory("dir/").symlink("dir/out", canary).file("dir/f", "1"),
    ],
    tar: () =>
      new TarWriter()
        .file("dir", "file over a dir holding a symlink out") // removes the tree, not the target
        .file(".wh.nothing", ""),
  },
  {
    name: "xattrs and metadata aimed through links",
    tar: (canary) =>
      new TarWriter()
        .symlink("m", `${canary}/secret`)
        .symlink("m", `${canary}/secret`, { mode: 0o777, uid: 5, mtime: 1 })
        .directory("m/", { mode: 0o700, xattrs: { "user.x": "1" } }),
  },
  {
    name: "damaged: bad checksum after a symlink out",
    before: (canary) => [new TarWriter().symlink("l", canary)],
    tar: () =>
      concat(
        new TarWriter().file("ok", "1").bytes({ endOfArchive: false }),
        new TarWriter().file("l/secret", "pwned", { checksum: "bad" }).bytes(),
      ),
  },
  {
    name: "damaged: truncated inside a file that goes through a link",
    tar: () =>
      new TarWriter()
        .symlink("l", "../canary")
        .file("l/secret", "p".repeat(10000))
        .bytes({ truncateAt: 2048 }),
  },
  {
    name: "a NUL byte in a pax path (C would read a shorter, different path)",
    tar: () =>
      new TarWriter()
        .symlink("l", "../canary")
        .file("x", "pwned", { pax: { path: "l/secret\0ignored" } }),
  },
  {
    name: "a deep `..` ladder and a long name",
    tar: () =>
      new TarWriter()
        .file(`${"../".repeat(2000)}canary/secret`, "pwned")
        .file(`${"a/".repeat(200)}${"../".repeat(300)}canary/secret2`, "pwned"),
  },
];

async function snapshot(dir: string, canary: string): Promise<string> {
  const rec = await treeRecord(canary, { lines: true });
  const listing = [...Deno.readDirSync(dir)].map((e) => e.name).sort().join(",");
  const st = Deno.statSync(canary);
  return `${listing}\n${st.mtime?.getTime()} ${st.mode} ${st.nlink}\n${rec.lines!.join("\n")}`;
}

async function makeCanary(canary: string): Promise<void> {
  await Deno.mkdir(join(canary, "sub"), { recursive: true });
  await Deno.writeTextFile(join(canary, "secret"), "do not touch");
  await Deno.writeTextFile(join(canary, "sub/file"), "nor this");
  await Deno.symlink("secret", join(canary, "link"));
  await new Deno.Command("setfattr", { args: ["-n", "user.canary", "-v", "1", canary] }).output();
  await Deno.chmod(join(canary, "secret"), 0o600);
  // Fixed times make any touch visible.
  for (const p of ["secret", "sub/file", "sub", ""]) {
    await Deno.utime(join(canary, p), 1000, 1000);
  }
}

interface Outcome {
  name: string;
  errors: string[];
  /** Set when the canary or the temp dir changed. */
  escaped?: string;
  /** Set when a post-apply check on the root failed. */
  check?: string;
}

/** Runs every case in `mode` under `base` (one sub-dir each) and reports what happened. */
async function runCases(mode: "direct" | "merged", base: string): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (const [i, c] of cases.entries()) {
    const dir = join(base, String(i));
    const root = join(dir, "root"), canary = join(dir, "canary");
    await Deno.mkdir(root, { recursive: true });
    await makeCanary(canary);
    const before = await snapshot(dir, canary);
    const o: ApplyOptions = { whiteouts: mode };
    const r: Outcome = { name: c.name, errors: [] };
    for (const layer of [...(c.before?.(canary) ?? []), c.tar(canary)]) {
      const bytes = layer instanceof TarWriter ? layer.bytes() : layer;
      try {
        await new TarApplicator(o).apply(
          new Blob([bytes as Uint8Array<ArrayBuffer>]).stream(),
          root,
        );
      } catch (e) {
        // Refusing is allowed (with a clear error); escaping is not.
        r.errors.push(`${(e as Error)?.name}: ${(e as Error)?.message}`);
      }
      const after = await snapshot(dir, canary);
      if (after !== before) r.escaped ??= `before:\n${before}\nafter:\n${after}`;
    }
    // The canary's files gained no hardlinks (a link would be a read).
    if (Deno.statSync(join(canary, "secret")).nlink !== 1) r.escaped ??= "secret was hardlinked";
    if (r.errors.length === 0 && c.check) {
      try {
        c.check(root, canary);
      } catch (e) {
        r.check = String(e);
      }
    }
    out.push(r);
  }
  return out;
}

/**
 * Runs the cases in a child process inside a private mount namespace where
 * every mount is read-only and only `base` is writable: should confinement
 * ever break, a hostile tar aimed at `/` (several are) still cannot damage
 * this machine (a broken build once emptied a real `/etc` this way). Without root (no mount namespace), the cases run in-process,
 * where the applier's lack of privilege is the safety net.
 */
async function sandboxed(mode: "direct" | "merged", base: string): Promise<Outcome[]> {
  if (!isRoot) return await runCases(mode, base);
  const [cmd, ...argv] = sandboxArgv(base, [
    denoPath,
    "run",
    "-A",
    "--no-check",
    "--frozen",
    import.meta.filename!,
    "--child",
    mode,
    base,
  ]);
  const out = await run(cmd, argv);
  if (out.code !== 0) throw new Error(`hostile child failed (${out.code}): ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split("\n").pop()!);
}

for (const mode of ["direct", "merged"] as const) {
  Deno.test(`hostile tarballs (${mode}): nothing outside the root changes`, async (t) => {
    await using base_ = await tempDir("strata-hostile-");
    const outcomes = await sandboxed(mode, String(base_));
    assertEquals(outcomes.length, cases.length);
    for (const o of outcomes) {
      await t.step(o.name, () => {
        assertEquals(o.escaped, undefined, `${o.escaped}\nerrors: ${o.errors.join("; ")}`);
        assertEquals(o.check, undefined, o.check);
        for (const e of o.errors) assert(e.includes("cannot apply"), e);
      });
    }
  });
}

if (import.meta.main && Deno.args[0] === "--child") {
  const outcomes = await runCases(Deno.args[1] as "direct" | "merged", Deno.args[2]);
  console.log(JSON.stringify(outcomes));
}

Deno.test("hostile: a hardlink never reads a host file into the root", async () => {
  await using base_ = await tempDir("strata-hostile-");
  const base = String(base_);
  const root = join(base, "root");
  await Deno.mkdir(root);
  const host = join(base, "host-secret");
  await Deno.writeTextFile(host, "host data");
  for (const target of [host, `../host-secret`, `../../../..${host}`]) {
    await new TarApplicator().apply(
      new Blob([new TarWriter().hardlink("got", target).bytes() as Uint8Array<ArrayBuffer>])
        .stream(),
      root,
    ).catch(() => {});
    let content: string | undefined;
    try {
      content = Deno.readTextFileSync(join(root, "got"));
    } catch { /* not there: refused */ }
    assert(content !== "host data", `hardlink to ${target} read the host file`);
  }
  assertEquals(Deno.statSync(host).nlink, 1);
});
